-- moonwait.test.fakes: the fake moonwait.http and moonwait.redis of
-- `moonwait test` specs: canned answers by method and URL pattern or by
-- command and arguments, delays, errors, timeouts, and the calls made.
-- Their results and error texts are the real clients' (README.md,
-- "Talking to services"); their waits are real waits on the loop.
local moonwait = require "moonwait"
local json = require "moonwait.json"
local time = require "moonwait.time"

local M = {}
local null = moonwait.null
local format, concat = string.format, table.concat

-- ---- the fakes -----------------------------------------------------------

-- Finds the route for a call among routes, newest first.
local function find_route(routes, pred)
  for i = #routes, 1, -1 do
    local r = routes[i]
    if pred(r) then return r end
  end
end

-- A route's next answer: a sequence (an array of answers) is used in turn,
-- its last answer repeating.
local function next_answer(route)
  local a = route.answer
  if type(a) == "table" and a[1] ~= nil and type(a[1]) == "table" and route.sequence then
    route.used = (route.used or 0) + 1
    return a[math.min(route.used, #a)]
  end
  return a
end

-- A call's own limit in ms, read as the real clients read it: nil their
-- default (moonwait.http 60000, moonwait.redis 5000); 0, or math.huge (what
-- ctx.remaining_ms() gives without a record deadline), no limit of its own.
local function limit_ms(opts_timeout, default)
  if opts_timeout == nil then return default end
  if opts_timeout == 0 or opts_timeout >= 2 ^ 53 then return math.huge end
  return opts_timeout
end

-- Wait out a limit; an endless one until the record's deadline cuts it.
local function sleep_ms(limit)
  time.sleep(limit == math.huge and 1e9 or limit / 1000)
end

-- moonwait.http's fake: http.on(method, url_pattern, answer), http.calls.
local function new_http()
  local F = { calls = {}, unmatched = {}, _routes = {} }
  local hdr_mt = { __index = function(t, k)
    if type(k) ~= "string" then return nil end
    local low = k:lower()
    for kk, v in pairs(t) do if kk:lower() == low then return v end end
  end }

  -- answer: { status =, headers =, body = (a string, or a table sent as
  -- JSON), delay = seconds, error = "connection refused", timeout = true },
  -- an array of those (used in turn, the last repeating), or
  -- function(req) -> answer | nil, err.
  function F.on(method, pattern, answer)
    if type(pattern) ~= "string" then error("http.on(method, url_pattern, answer): url_pattern must be a string", 2) end
    F._routes[#F._routes + 1] = { method = method and method:upper() or "*", pattern = pattern, answer = answer,
      sequence = type(answer) == "table" and type(answer[1]) == "table" }
  end
  function F.reset()
    F.calls, F.unmatched, F._routes = {}, {}, {}
  end

  function F.request(url, opts)
    if type(url) ~= "string" then error("bad argument #1 to 'request' (string expected, got " .. type(url) .. ")", 2) end
    opts = opts or {}
    local method = (opts.method or "GET"):upper()
    local req = { method = method, url = url, headers = opts.headers or {}, body = opts.body, opts = opts }
    F.calls[#F.calls + 1] = req
    local where = " (" .. method .. " " .. url .. ")"
    local route = find_route(F._routes, function(r)
      return (r.method == "*" or r.method == method) and url:find(r.pattern) ~= nil
    end)
    if not route then
      F.unmatched[#F.unmatched + 1] = method .. " " .. url
      error("moonwait test: no fake HTTP answer for " .. method .. " " .. url
        .. " (add http.on(\"" .. method .. "\", pattern, answer) to the spec)", 2)
    end
    local a = next_answer(route)
    if type(a) == "function" then
      local r, err = a(req)
      if r == nil then return nil, err end
      a = r
    end
    local limit = limit_ms(opts.timeout_ms, 60000)
    if a.timeout then
      sleep_ms(limit)
      return nil, "timeout" .. where
    end
    if a.delay then
      if a.delay * 1000 >= limit then
        sleep_ms(limit)
        return nil, "timeout" .. where
      end
      time.sleep(a.delay)
    end
    if a.error then return nil, a.error .. where end
    local body = a.body
    if type(body) == "table" then body = assert(json.encode(body)) end
    local headers = setmetatable({}, hdr_mt)
    for k, v in pairs(a.headers or {}) do headers[k] = v end
    return { status = a.status or 200, headers = headers, body = body or "" }
  end
  function F.get(url, opts)
    local o = {}
    for k, v in pairs(opts or {}) do o[k] = v end
    o.method = "GET"
    return F.request(url, o)
  end
  function F.post(url, body, opts)
    if type(body) ~= "string" then error("bad argument #2 to 'post' (string expected, got " .. type(body) .. ")", 2) end
    local o = {}
    for k, v in pairs(opts or {}) do o[k] = v end
    o.method, o.body = "POST", body
    return F.request(url, o)
  end
  return F
end

-- A Redis argument as the real client sends it.
local function redis_arg(v)
  if type(v) == "number" and v % 1 == 0 and math.abs(v) < 2 ^ 63 then return format("%.0f", v) end
  if type(v) == "boolean" then return v and "1" or "0" end
  return tostring(v)
end

local control = { value = true, error = true, reply_error = true, delay = true, timeout = true }
local function is_spec(a)
  if type(a) ~= "table" then return false end
  for k in pairs(a) do if control[k] then return true end end
  return false
end

-- moonwait.redis's fake: redis.on(cmd, args_pattern, answer), redis.calls.
local function new_redis()
  local F = { calls = {}, unmatched = {}, connects = {}, _routes = {}, null = null }

  -- answer: a reply (a string, a number, an array, redis.null), or
  -- { value =, delay = seconds, reply_error = "WRONGTYPE ..." (false, msg),
  -- error = "connection refused" (nil, err: the connection closes),
  -- timeout = true }, or function(...) -> the reply values.
  function F.on(cmd, pattern, answer)
    if type(cmd) ~= "string" then error("redis.on(cmd, args_pattern, answer): cmd must be a string", 2) end
    F._routes[#F._routes + 1] = { cmd = cmd:upper(), pattern = pattern, answer = answer }
  end
  -- The next connects fail with err ("connection refused", "timeout", ...).
  function F.fail_connect(err)
    F._connect_error = err
  end
  function F.reset()
    F.calls, F.unmatched, F.connects, F._routes, F._connect_error = {}, {}, {}, {}, nil
  end

  local Conn = {}
  local conn_mt = { __index = function(self, k)
    local f = Conn[k]
    if f then return f end
    if type(k) ~= "string" or k:sub(1, 1) == "_" then return nil end -- (its own fields)
    return function(me, ...) return me:call(k:upper(), ...) end
  end }

  local function answer(self, cmd, args)
    local peer = self._peer
    local flat = {}
    for i = 1, args.n do flat[i] = redis_arg(args[i]) end
    F.calls[#F.calls + 1] = { cmd = cmd, args = flat }
    local joined = concat(flat, " ")
    local route = find_route(F._routes, function(r)
      return (r.cmd == cmd or r.cmd == "*") and (r.pattern == nil or joined:find(r.pattern) ~= nil)
    end)
    if not route then
      F.unmatched[#F.unmatched + 1] = cmd .. " " .. joined
      error("moonwait test: no fake Redis answer for " .. cmd .. " " .. joined
        .. " (add redis.on(\"" .. cmd .. "\", args_pattern, answer) to the spec)", 3)
    end
    local a = route.answer
    if type(a) == "function" then return a(unpack(flat, 1, args.n)) end
    if not is_spec(a) then return a end
    local limit = limit_ms(self._timeout_ms, 5000)
    if a.timeout or (a.delay and a.delay * 1000 >= limit) then
      sleep_ms(limit)
      self._closed = true
      return nil, "timeout (" .. peer .. ")"
    end
    if a.delay then time.sleep(a.delay) end
    if a.error then
      self._closed = true
      return nil, a.error .. " (" .. peer .. ")"
    end
    if a.reply_error then return false, a.reply_error .. " (redis " .. peer .. " " .. cmd .. ")" end
    return a.value
  end

  function Conn:call(cmd, ...)
    if type(cmd) ~= "string" then error("bad argument #1 to 'call' (string expected)", 2) end
    cmd = cmd:upper()
    if self._closed then return nil, "closed (" .. self._peer .. ")" end
    if self._pipeline then
      self._pipeline[#self._pipeline + 1] = { cmd, { n = select("#", ...), ... } }
      return "QUEUED"
    end
    return answer(self, cmd, { n = select("#", ...), ... })
  end
  function Conn:init_pipeline() self._pipeline = {} end
  function Conn:cancel_pipeline() self._pipeline = nil end
  function Conn:commit_pipeline()
    local reqs = self._pipeline
    self._pipeline = nil
    if not reqs then return nil, "no pipeline (redis " .. self._peer .. ")" end
    if self._closed then return nil, "closed (" .. self._peer .. ")" end
    local out = {}
    for i, r in ipairs(reqs) do
      local v, e = answer(self, r[1], r[2])
      if v == nil and e then return nil, e end
      out[i] = v == false and { false, e } or v
    end
    return out
  end
  function Conn:set_keepalive()
    if self._closed then return nil, "closed (" .. self._peer .. ")" end
    self._closed = true
    return 1
  end
  function Conn:close()
    if self._closed then return nil, "closed (" .. self._peer .. ")" end
    self._closed = true
    return 1
  end
  function Conn:get_reused_times() return 0 end

  function F.connect(host_, port, opts)
    if type(host_) ~= "string" then error("redis.connect: host must be a string", 2) end
    if type(port) ~= "number" then error("redis.connect: port must be a number", 2) end
    local peer = (host_:find(":") and "[" .. host_ .. "]" or host_) .. ":" .. format("%d", port)
    F.connects[#F.connects + 1] = { host = host_, port = port, opts = opts }
    if F._connect_error then return nil, F._connect_error .. " (" .. peer .. ")" end
    return setmetatable({ _peer = peer, _timeout_ms = opts and opts.timeout_ms }, conn_mt)
  end
  return F
end

M.new_http, M.new_redis = new_http, new_redis

return M
