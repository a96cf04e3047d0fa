-- moonwait.redis: a Redis client (RESP2) on moonwait.socket, in the spirit of
-- lua-resty-redis. Every call parks only the calling record's coroutine.
--
--   local redis = require "moonwait.redis"
--   local r, err = redis.connect(host, port, { timeout_ms =, pool =, pool_size =,
--                                              user =, password =, db =,
--                                              max_reply_bytes =, max_elements =,
--                                              max_depth = })
--   local v, err = r:get("k")        -- one method per command (any name works)
--   r:call("HSET", "h", "f", "v")    -- the generic form
--   r:init_pipeline(); r:get("a"); r:get("b"); local res, err = r:commit_pipeline()
--   r:set_keepalive(idle_ms, pool_size)   -- back to the pool; r is closed
--   r:close()
--
-- Replies: status -> string ("OK"), integer -> number, bulk -> string, nil bulk
-- or nil multi-bulk -> moonwait.null, multi-bulk -> array. An error reply is
-- `false, msg` (inside an array or a pipeline's results: { false, msg }), msg
-- being the server's text followed by " (redis HOST:PORT CMD)": the command's
-- name only, never its arguments (user data, passwords).
-- Network failures are `nil, err` with the socket's error strings, which
-- already end with " (HOST:PORT)" (passed on as they are); after one, the
-- connection is closed, and a later call is `nil, "closed (HOST:PORT)"` too.
--
-- A malformed or oversized reply is `nil, "bad reply: WHY (redis HOST:PORT CMD)"`
-- and closes the connection, with memory bounded by the limits (per reply):
-- max_reply_bytes (its bytes on the wire, default 64 MiB; one bulk is also at
-- most 512 MiB, Redis's proto-max-bulk-len), max_elements (values in all its
-- arrays, default 1,048,576) and max_depth (arrays nested in arrays, default 64).
--
-- Pooled connections are keyed by host and port (or opts.pool), db, user and
-- password, so a connection AUTHenticated or SELECTed for one connect never
-- serves another with different ones. A connection on which the script sent
-- SELECT, AUTH, HELLO or RESET itself is closed by set_keepalive, not pooled.
local socket = require "moonwait.socket"
local null = require("moonwait").null

local type, tostring, tonumber, select, setmetatable, rawget, rawset, concat =
  type, tostring, tonumber, select, setmetatable, rawget, rawset, table.concat
local sub, byte, upper, find, format, gsub = string.sub, string.byte, string.upper, string.find,
  string.format, string.gsub
local floor = math.floor
local ffi = require "ffi"
local istype = ffi.istype

local TWO53 = 2 ^ 53
local I53_MIN, I53_MAX = -9007199254740992LL, 9007199254740992LL

local MAX_BULK = 512 * 1024 * 1024          -- Redis's proto-max-bulk-len
local DEFAULT_MAX_REPLY_BYTES = 64 * 1024 * 1024
local DEFAULT_MAX_ELEMENTS = 1024 * 1024
local DEFAULT_MAX_DEPTH = 64

local M = { null = null }
local Redis = {}

-- A connection object is an array (one allocation, made whole by its
-- constructor), read with rawget: any missing string key is a command name.
local SOCK = 1      -- the cosocket
local CONF = 2      -- { max_bytes, max_elements, max_depth, peer }, shared by connects alike
local CLOSED = 3    -- true once closed or given back
local STATE = 4     -- true once the script sent SELECT, AUTH, HELLO or RESET
local PIPE = 5      -- the queued commands, or false
local NAMES = 6     -- their names, for their errors
local TIMEOUT = 7   -- the connect's timeout_ms (what the cosocket was set to)

local function fail(self, err)
  rawget(self, SOCK):close()
  rawset(self, CLOSED, true)
  return nil, err
end

-- One argument as the bytes Redis gets (i: its position, for the error;
-- raised at the caller of call: arg < serialize < call < the script).
local function arg(a, i)
  local t = type(a)
  if t == "string" then return a end
  if t == "number" then
    -- tostring(1e15) is "1e+15", which Redis takes for a string, not
    -- the integer; and tostring keeps 14 digits of a double
    if a == floor(a) and a >= -TWO53 and a <= TWO53 then
      return format("%d", a)
    end
    local s = tostring(a)
    return tonumber(s) == a and s or format("%.17g", a)
  elseif t == "boolean" then
    return a and "1" or "0"
  elseif t == "cdata" and (istype("int64_t", a) or istype("uint64_t", a)) then
    return (gsub(tostring(a), "U?LL$", "")) -- a record's exact 64-bit integer
  end
  error("redis: argument " .. i .. " is a " .. t .. " (strings, numbers, booleans and 64-bit integers only)", 4)
end

-- "*n\r\n$len\r\narg\r\n..." for one command. One to three arguments
-- (GET k, SET k v, ...: most calls) are one concatenation, without the
-- table and table.concat of the general case.
local function serialize(n, ...)
  if n <= 3 then
    local a, b, c = ...
    if type(a) ~= "string" then a = arg(a, 1) end
    if n == 1 then return "*1\r\n$" .. #a .. "\r\n" .. a .. "\r\n" end
    if type(b) ~= "string" then b = arg(b, 2) end
    if n == 2 then return "*2\r\n$" .. #a .. "\r\n" .. a .. "\r\n$" .. #b .. "\r\n" .. b .. "\r\n" end
    if type(c) ~= "string" then c = arg(c, 3) end
    return "*3\r\n$" .. #a .. "\r\n" .. a .. "\r\n$" .. #b .. "\r\n" .. b .. "\r\n$" .. #c .. "\r\n" .. c .. "\r\n"
  end
  local out = { "*", n, "\r\n" }
  for i = 1, n do
    local a = select(i, ...)
    if type(a) ~= "string" then a = arg(a, i) end
    out[#out + 1] = "$"
    out[#out + 1] = #a
    out[#out + 1] = "\r\n"
    out[#out + 1] = a
    out[#out + 1] = "\r\n"
  end
  return concat(out)
end

-- At most 40 bytes of a bad line, control bytes escaped, for a message.
local function shown(line)
  local s = gsub(sub(line, 1, 40), "[%z\1-\31\127-\255]", function(c) return format("\\x%02x", byte(c)) end)
  if #line > 40 then s = s .. "..." end
  return "'" .. s .. "'"
end

-- Where a reply came from, for its error texts: " (redis HOST:PORT CMD)",
-- from what call and commit_pipeline note in the reply's limits table st
-- (peer, cmd), built only when there is an error. "" for a reader without
-- them (M._read_reply).
local function where(st)
  local peer = st.peer
  if not peer then return "" end
  local cmd = st.cmd
  cmd = type(cmd) == "string" and upper(sub(cmd, 1, 32)) .. (#cmd > 32 and "..." or "") or tostring(cmd)
  cmd = gsub(cmd, "[%z\1-\32\127-\255]", function(c) return format("%%%02X", byte(c)) end)
  return " (redis " .. peer .. " " .. cmd .. ")"
end

local function bad(st, why)
  return nil, "bad reply: " .. why .. where(st)
end

-- An integer reply's digits ("-?%d+"): a Lua number within 2^53, else
-- an exact int64_t cdata, as the record codec gives JSON integers (a
-- double would round 2^53 + 1). nil beyond the 64-bit signed range.
local function integer(s)
  local neg = byte(s) == 45
  local digits = #s - (neg and 1 or 0)
  if digits <= 15 then return tonumber(s) end
  if digits > 19 or (digits == 19 and sub(s, neg and 2 or 1) > (neg and "9223372036854775808" or "9223372036854775807")) then
    return nil
  end
  local v = 0LL -- accumulated negative, so -2^63 fits
  for i = neg and 2 or 1, #s do v = v * 10 - (byte(s, i) - 48) end
  if not neg then v = -v end
  if v >= I53_MIN and v <= I53_MAX then return tonumber(v) end
  return v
end

-- Read one value of a reply. st holds what is left of the reply's limits
-- (bytes, elements) and its max_depth; depth counts the enclosing arrays.
-- Returns value; or false, msg for an error reply; or nil, err for a
-- transport failure or a bad reply (the caller then closes the connection).
local function read_value(sock, st, depth)
  local line, err = sock:receive("*l")
  if not line then
    -- (the socket's message goes on with " (HOST:PORT)")
    if find(err, "^buffer too large") then return bad(st, "a line longer than max_reply_bytes") end
    return nil, err
  end
  local left = st.bytes - #line - 2
  if left < 0 then return bad(st, format("more than max_reply_bytes (%d) in one reply", st.max_bytes)) end
  st.bytes = left
  local kind = byte(line)
  if kind == 43 then -- +
    return sub(line, 2)
  elseif kind == 45 then -- -
    return false, sub(line, 2) .. where(st)
  elseif kind == 58 then -- :
    local v = find(line, "^:%-?%d+$") and integer(sub(line, 2))
    if not v then return bad(st, "not an integer: " .. shown(line)) end
    return v
  elseif kind == 36 then -- $
    if not find(line, "^%$%-?%d+$") then return bad(st, "not a bulk length: " .. shown(line)) end
    local n = tonumber(sub(line, 2))
    if n < 0 then
      if n == -1 then return null end
      return bad(st, "not a bulk length: " .. shown(line))
    end
    if n > MAX_BULK then return bad(st, format("a bulk of %.0f bytes (the most is 512 MiB)", n)) end
    if n + 2 > st.bytes then
      return bad(st, format("a bulk of %d bytes: more than max_reply_bytes (%d) in one reply", n, st.max_bytes))
    end
    st.bytes = st.bytes - n - 2
    local data, rerr = sock:receive(n + 2)
    if not data then return nil, rerr end
    if byte(data, n + 1) ~= 13 or byte(data, n + 2) ~= 10 then
      return bad(st, "a bulk of " .. n .. " bytes not followed by CRLF")
    end
    return sub(data, 1, n)
  elseif kind == 42 then -- *
    if not find(line, "^%*%-?%d+$") then return bad(st, "not an array length: " .. shown(line)) end
    local n = tonumber(sub(line, 2))
    if n < 0 then
      if n == -1 then return null end
      return bad(st, "not an array length: " .. shown(line))
    end
    if n > st.elements then
      return bad(st, format("an array of %.0f elements: more than max_elements (%d) in one reply", n, st.max_elements))
    end
    if depth >= st.max_depth then
      return bad(st, format("arrays nested deeper than max_depth (%d)", st.max_depth))
    end
    st.elements = st.elements - n
    local arr = {}
    for i = 1, n do
      local v, e = read_value(sock, st, depth + 1)
      if v == nil then return nil, e end
      if v == false then v = { false, e } end
      arr[i] = v
    end
    return arr
  elseif not kind then
    return bad(st, "an empty line")
  end
  return bad(st, "unknown type: " .. shown(line))
end

-- Read one reply (to the command named cmd) within the limits of conf,
-- in a table of its own (read_value counts down what is left).
local function read_conf(conf, sock, cmd)
  local st = { max_bytes = conf.max_bytes, max_elements = conf.max_elements, max_depth = conf.max_depth,
               peer = conf.peer, bytes = conf.max_bytes, elements = conf.max_elements, cmd = cmd }
  return read_value(sock, st, 0)
end

local function read_reply(self, sock, cmd)
  return read_conf(rawget(self, CONF), sock, cmd)
end

-- The same, through the cosocket's fast path (src/lua/socket_redis.c) when
-- it takes the reply: a whole plain reply, read as read_value would read
-- it; anything else it leaves unread for read_value. nil, err: the wait
-- for the reply failed (a timeout).
local function next_reply(self, sock, cmd)
  local v, e = sock:_redis_reply()
  if v == nil and not e then return read_reply(self, sock, cmd) end
  return v, e
end

-- nil, "WHAT (HOST:PORT)": as the socket says "closed", for what redis.lua
-- finds itself.
local function closed(self)
  return nil, "closed (" .. rawget(self, CONF).peer .. ")"
end

-- nil, "WHAT (redis HOST:PORT)": a call the connection's state refuses.
local function refused(self, what)
  return nil, what .. " (redis " .. rawget(self, CONF).peer .. ")"
end

-- Internal, not an API (for spec/fuzz/fuzz_resp.c): read one reply from any
-- object with receive("*l") and receive(n), within limits { max_bytes =,
-- max_elements =, max_depth = }, as a connection reads it.
function M._read_reply(sock, limits)
  return read_conf(limits, sock)
end

-- Internal, not an API (for spec/c/test_redis_wire.c): a command's bytes.
function M._serialize(...)
  return serialize(select("#", ...), ...)
end

-- Commands that change what a connection is authenticated as or which db
-- it uses: after one, the connection is not pooled.
local STATEFUL = { SELECT = true, AUTH = true, HELLO = true, RESET = true }

local function stateful(name)
  if type(name) ~= "string" then return false end
  local len = #name
  return len >= 4 and len <= 6 and STATEFUL[upper(name)]
end

function Redis:call(...)
  local n = select("#", ...)
  if n == 0 then error("redis: call needs a command name", 2) end
  local name = ...
  if not (rawget(self, PIPE) or rawget(self, CLOSED) or stateful(name)) then
    -- The fast path: the command and its reply in one call when its
    -- arguments are strings and integers and the reply comes whole.
    local sock = rawget(self, SOCK)
    local v, e = sock:_redis(...)
    if v ~= false then
      if v == true then v, e = sock:_redis_reply() end -- (sent, not read)
      if v == nil then
        if not e then v, e = read_reply(self, sock, name) end
        if v == nil then return fail(self, e) end
      end
      return v, e
    end
    -- (false: an argument of another kind; nothing was sent)
  end
  local req = serialize(n, ...)
  if stateful(name) then rawset(self, STATE, true) end
  local pipe = rawget(self, PIPE)
  if pipe then
    pipe[#pipe + 1] = req
    local names = rawget(self, NAMES)
    names[#names + 1] = name
    return "QUEUED"
  end
  if rawget(self, CLOSED) then return closed(self) end
  local sock = rawget(self, SOCK)
  local ok, err = sock:send(req)
  if not ok then return fail(self, err) end
  local v, e = next_reply(self, sock, name)
  if v == nil then return fail(self, e) end
  return v, e
end

function Redis:init_pipeline()
  rawset(self, PIPE, {})
  rawset(self, NAMES, {}) -- each command's name, for its errors
end

function Redis:cancel_pipeline()
  rawset(self, PIPE, false)
  rawset(self, NAMES, false)
end

-- Sends every queued command in one write and returns their replies in
-- order (error replies as { false, msg }).
function Redis:commit_pipeline()
  local reqs, names = rawget(self, PIPE), rawget(self, NAMES)
  if not reqs then return refused(self, "no pipeline") end
  self:cancel_pipeline()
  if #reqs == 0 then return {} end
  if rawget(self, CLOSED) then return closed(self) end
  local sock = rawget(self, SOCK)
  local ok, err = sock:send(reqs)
  if not ok then return fail(self, err) end
  local results = {}
  for i = 1, #reqs do
    local v, e = next_reply(self, sock, names[i])
    if v == nil then return fail(self, e) end
    if v == false then v = { false, e } end
    results[i] = v
  end
  return results
end

-- Cosockets whose connection went back to the pool, for the next connect
-- to aim again (a new one per connect -- a userdata with a finalizer --
-- was ~10% of a pooled GET). The object that gave it up is closed: its
-- methods look at CLOSED before they touch SOCK.
local spare, nspare = {}, 0
local spare_timeout, spare_conf = {}, {} -- what each was last set to
local MAX_SPARE = 64

function Redis:set_keepalive(idle_ms, pool_size)
  if rawget(self, CLOSED) then return closed(self) end
  if rawget(self, PIPE) then return refused(self, "pipeline not committed") end
  rawset(self, CLOSED, true)
  local sock = rawget(self, SOCK)
  if rawget(self, STATE) then
    -- SELECT/AUTH/HELLO/RESET by the script: its pool key no longer says
    -- what this connection is; close it rather than pool it.
    return sock:close()
  end
  local ok, err = sock:setkeepalive(idle_ms, pool_size)
  if ok and nspare < MAX_SPARE then
    nspare = nspare + 1
    spare[nspare], spare_timeout[nspare], spare_conf[nspare] = sock, rawget(self, TIMEOUT), rawget(self, CONF)
  end
  return ok, err
end

function Redis:close()
  if rawget(self, CLOSED) then return closed(self) end
  rawset(self, CLOSED, true)
  return rawget(self, SOCK):close()
end

function Redis:get_reused_times()
  if rawget(self, CLOSED) then return closed(self) end
  return rawget(self, SOCK):getreusedtimes()
end

-- Any other method name is a command: r:hget(k, f) == r:call("HGET", k, f).
-- (The closure is made in a function of its own: a closure created inside
-- __index made LuaJIT abort every trace through it -- "NYI: bytecode 50",
-- UCLO -- so each r:get(), r:call() and r:set_keepalive() ran interpreted.)
-- Methods and commands are found through tables (a connection, then
-- Redis, then the commands made so far): plain lookups that compiled code
-- folds, where an __index function was a call per method.
local function command(name)
  local cmd = upper(name)
  return function(self, ...) return self:call(cmd, ...) end
end
local commands = setmetatable({}, {
  __index = function(cache, name)
    if type(name) ~= "string" then return nil end
    local f = command(name)
    rawset(cache, name, f)
    return f
  end,
})
setmetatable(Redis, { __index = commands })
local mt = { __index = Redis }

local function hex(s)
  return (gsub(s, ".", function(c) return format("%02x", byte(c)) end))
end

local function limit(opts, name, default, most)
  local v = opts[name]
  if v == nil then return default end
  if type(v) ~= "number" or v < 1 or v ~= floor(v) or (most and v > most) then
    error("redis.connect: " .. name .. " must be an integer from 1" .. (most and (" to " .. most) or ""), 3)
  end
  return v
end

-- host:port as moonwait.socket names it in its errors, for ours.
local function peer_of(host, port)
  return (find(host, ":", 1, true) and "[" .. host .. "]" or host) .. ":" .. format("%d", port)
end

-- The pool key says everything a pooled connection was set up with: a
-- connection authenticated or SELECTed for one connect never serves
-- another with other credentials or another db.
local function pool_key(pool, host, port, db, user, password)
  return format("%s|db=%d|user=%s|password=%s", pool or ("redis:" .. host .. ":" .. port), db,
    user and hex(user) or "-", password and hex(password) or "-")
end

-- { pool key, peer, conf with the default limits } for a connect without
-- credentials or a pool name, made once per host, port and db (at most 256
-- of them, then afresh): the two strings cost more than the rest of a
-- pooled connect.
local names_cache, names_count = {}, 0
local function plain_names(host, port, db)
  local by_port = names_cache[host]
  local by_db = by_port and by_port[port]
  local names = by_db and by_db[db]
  if names then return names end
  if names_count >= 256 then names_cache, names_count = {}, 0 end
  by_port = names_cache[host] or {}
  names_cache[host] = by_port
  by_db = by_port[port] or {}
  by_port[port] = by_db
  local peer = peer_of(host, port)
  names = { pool_key(nil, host, port, db), peer, { max_bytes = DEFAULT_MAX_REPLY_BYTES,
            max_elements = DEFAULT_MAX_ELEMENTS, max_depth = DEFAULT_MAX_DEPTH, peer = peer } }
  by_db[db] = names
  names_count = names_count + 1
  return names
end

local connect_opts = {}
local SOCKET_POOL_SIZE = 30 -- moonwait.socket's default pool_size

function M.connect(host, port, opts)
  opts = opts or {}
  if type(host) ~= "string" then error("redis.connect: host must be a string", 2) end
  if type(port) ~= "number" then error("redis.connect: port must be a number", 2) end
  local user, password, db = opts.user, opts.password, opts.db or 0
  if user ~= nil and type(user) ~= "string" then error("redis.connect: user must be a string", 2) end
  if password ~= nil and type(password) ~= "string" then error("redis.connect: password must be a string", 2) end
  if user and not password then error("redis.connect: user needs a password", 2) end
  if type(db) ~= "number" or db < 0 or db ~= floor(db) then
    error("redis.connect: db must be a non-negative integer", 2)
  end
  local pool_name = opts.pool
  local names = not (user or password or pool_name) and port == port and plain_names(host, port, db)
  local timeout = opts.timeout_ms or 5000
  -- The reply limits and where, shared by every connect that has the same
  -- (read only: a reply's count goes in a table of its own).
  local conf
  if names and opts.max_reply_bytes == nil and opts.max_elements == nil and opts.max_depth == nil then
    conf = names[3]
  else
    conf = {
      max_bytes = limit(opts, "max_reply_bytes", DEFAULT_MAX_REPLY_BYTES, MAX_BULK + 1024),
      max_elements = limit(opts, "max_elements", DEFAULT_MAX_ELEMENTS),
      max_depth = limit(opts, "max_depth", DEFAULT_MAX_DEPTH, 1000),
      peer = names and names[2] or peer_of(host, port),
    }
  end
  local sock, was_timeout, was
  if nspare > 0 then
    sock, was_timeout, was = spare[nspare], spare_timeout[nspare], spare_conf[nspare]
    spare[nspare], spare_conf[nspare] = nil, nil
    nspare = nspare - 1
  else
    sock = socket.tcp()
  end
  -- (a spare one set as this connect wants needs neither call)
  if timeout ~= was_timeout then sock:settimeout(timeout) end
  local pool = names and names[1] or pool_key(pool_name, host, port, db, user, password)
  local pool_size = opts.pool_size or SOCKET_POOL_SIZE -- (a spare one keeps its last)
  -- (an idle pooled connection without an options table; else connect,
  -- which reads its options before it returns or yields, so one table
  -- serves every call)
  if not sock:_redis_connect(host, port, pool, pool_size) then
    connect_opts.pool, connect_opts.pool_size = pool, pool_size
    local ok, err = sock:connect(host, port, connect_opts)
    if not ok then return nil, err end
  end
  -- The reply limits of the socket's fast path, and its buffer: one bulk
  -- must fit (a longer line is a bad reply); set on the connection, fresh
  -- or pooled.
  if conf ~= was and (not was or conf.max_bytes ~= was.max_bytes or conf.max_elements ~= was.max_elements
      or conf.max_depth ~= was.max_depth) then
    sock:_redis_limits(conf.max_bytes, conf.max_elements, conf.max_depth)
  end
  local self = setmetatable({ sock, conf, false, false, false, false, timeout }, mt) -- (SOCK .. TIMEOUT)
  -- (a fresh connection needs AUTH or SELECT only with a password or a db)
  if (password or db ~= 0) and sock:getreusedtimes() == 0 then
    if password then
      local v, e
      if user then v, e = self:call("AUTH", user, password) else v, e = self:call("AUTH", password) end
      if not v then
        if not rawget(self, CLOSED) then self:close() end
        return nil, "auth failed: " .. tostring(e)
      end
    end
    if db ~= 0 then
      local v, e = self:call("SELECT", db)
      if not v then
        if not rawget(self, CLOSED) then self:close() end
        return nil, "select failed: " .. tostring(e)
      end
    end
    -- set up by connect itself: still what the pool key says
    rawset(self, STATE, false)
  end
  return self
end

return M
