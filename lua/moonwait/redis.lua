-- moonwait.redis: a Redis client (RESP2) on moonwait.socket, in the spirit of
-- lua-resty-redis. Every call parks only the calling record's coroutine.
--
--   local redis = require "moonwait.redis"
--   local r, err = redis.connect(host, port, { timeout_ms =, pool =, pool_size =,
--                                              password =, db = })
--   local v, err = r:get("k")        -- one method per command (any name works)
--   r:call("HSET", "h", "f", "v")    -- the generic form
--   r:init_pipeline(); r:get("a"); r:get("b"); local res, err = r:commit_pipeline()
--   r:set_keepalive(idle_ms, pool_size)   -- back to the pool; r is closed
--   r:close()
--
-- Replies: status -> string ("OK"), integer -> number, bulk -> string, nil bulk
-- or nil multi-bulk -> moonwait.null, multi-bulk -> array. An error reply is
-- `false, msg` (inside an array or a pipeline's results: { false, msg }).
-- Network failures are `nil, err` with the socket's error strings; after one,
-- the connection is closed.
local socket = require "moonwait.socket"
local null = require("moonwait").null

local type, tostring, tonumber, select, setmetatable, rawget, rawset, concat =
  type, tostring, tonumber, select, setmetatable, rawget, rawset, table.concat
local sub, byte, upper = string.sub, string.byte, string.upper

local M = { null = null }
local Redis = {}

-- Internal fields are read with rawget: any missing key is a command name.
local function fail(self, err)
  rawget(self, "_sock"):close()
  rawset(self, "_closed", true)
  return nil, err
end

-- "*n\r\n$len\r\narg\r\n..." for one command.
local function serialize(n, ...)
  local out = { "*", n, "\r\n" }
  for i = 1, n do
    local a = select(i, ...)
    local t = type(a)
    if t ~= "string" then
      if t == "number" then
        a = tostring(a)
      elseif t == "boolean" then
        a = a and "1" or "0"
      else
        error("redis: argument " .. i .. " is a " .. t .. " (strings, numbers and booleans only)", 3)
      end
    end
    out[#out + 1] = "$"
    out[#out + 1] = #a
    out[#out + 1] = "\r\n"
    out[#out + 1] = a
    out[#out + 1] = "\r\n"
  end
  return concat(out)
end

-- Read one reply. Returns value; or false, msg for an error reply; or
-- nil, err for a transport failure.
local function read_reply(sock)
  local line, err = sock:receive("*l")
  if not line then return nil, err end
  local kind = byte(line)
  if kind == 43 then -- +
    return sub(line, 2)
  elseif kind == 45 then -- -
    return false, sub(line, 2)
  elseif kind == 58 then -- :
    return tonumber(sub(line, 2))
  elseif kind == 36 then -- $
    local n = tonumber(sub(line, 2))
    if not n then return nil, "bad reply: " .. line end
    if n < 0 then return null end
    local data, rerr = sock:receive(n + 2)
    if not data then return nil, rerr end
    return sub(data, 1, n)
  elseif kind == 42 then -- *
    local n = tonumber(sub(line, 2))
    if not n then return nil, "bad reply: " .. line end
    if n < 0 then return null end
    local arr = {}
    for i = 1, n do
      local v, e = read_reply(sock)
      if v == nil then return nil, e end
      if v == false then v = { false, e } end
      arr[i] = v
    end
    return arr
  end
  return nil, "bad reply: " .. line
end

function Redis:call(...)
  local n = select("#", ...)
  if n == 0 then error("redis: call needs a command name", 2) end
  local req = serialize(n, ...)
  local pipe = rawget(self, "_pipeline")
  if pipe then
    pipe[#pipe + 1] = req
    return "QUEUED"
  end
  if rawget(self, "_closed") then return nil, "closed" end
  local sock = rawget(self, "_sock")
  local ok, err = sock:send(req)
  if not ok then return fail(self, err) end
  local v, e = read_reply(sock)
  if v == nil then return fail(self, e) end
  return v, e
end

function Redis:init_pipeline()
  rawset(self, "_pipeline", {})
end

function Redis:cancel_pipeline()
  rawset(self, "_pipeline", nil)
end

-- Sends every queued command in one write and returns their replies in
-- order (error replies as { false, msg }).
function Redis:commit_pipeline()
  local reqs = rawget(self, "_pipeline")
  if not reqs then return nil, "no pipeline" end
  rawset(self, "_pipeline", nil)
  if #reqs == 0 then return {} end
  if rawget(self, "_closed") then return nil, "closed" end
  local sock = rawget(self, "_sock")
  local ok, err = sock:send(reqs)
  if not ok then return fail(self, err) end
  local results = {}
  for i = 1, #reqs do
    local v, e = read_reply(sock)
    if v == nil then return fail(self, e) end
    if v == false then v = { false, e } end
    results[i] = v
  end
  return results
end

function Redis:set_keepalive(idle_ms, pool_size)
  if rawget(self, "_closed") then return nil, "closed" end
  if rawget(self, "_pipeline") then return nil, "pipeline not committed" end
  rawset(self, "_closed", true)
  return rawget(self, "_sock"):setkeepalive(idle_ms, pool_size)
end

function Redis:close()
  if rawget(self, "_closed") then return nil, "closed" end
  rawset(self, "_closed", true)
  return rawget(self, "_sock"):close()
end

function Redis:get_reused_times()
  return rawget(self, "_sock"):getreusedtimes()
end

-- Any other method name is a command: r:hget(k, f) == r:call("HGET", k, f).
local cache = {}
local mt = {
  __index = function(_, name)
    local f = Redis[name]
    if f then return f end
    if type(name) ~= "string" then return nil end
    f = cache[name]
    if not f then
      local cmd = upper(name)
      f = function(self, ...) return self:call(cmd, ...) end
      cache[name] = f
    end
    return f
  end,
}

function M.connect(host, port, opts)
  opts = opts or {}
  if type(host) ~= "string" then error("redis.connect: host must be a string", 2) end
  if type(port) ~= "number" then error("redis.connect: port must be a number", 2) end
  local sock = socket.tcp()
  sock:settimeout(opts.timeout_ms or 5000)
  local ok, err = sock:connect(host, port, {
    pool = opts.pool or ("redis:" .. host .. ":" .. port .. ":" .. (opts.db or 0)),
    pool_size = opts.pool_size,
  })
  if not ok then return nil, err end
  local self = setmetatable({ _sock = sock }, mt)
  if sock:getreusedtimes() == 0 then
    if opts.password then
      local v, e = self:call("AUTH", opts.password)
      if not v then return nil, "auth failed: " .. tostring(e) end
    end
    if opts.db and opts.db ~= 0 then
      local v, e = self:call("SELECT", opts.db)
      if not v then return nil, "select failed: " .. tostring(e) end
    end
  end
  return self
end

return M
