-- moonwait.test: unit tests of a script, run by `moonwait test SPEC.lua`
-- in the real binary's VM (the host modules, the codec, the fibers, the
-- CPU budget), with fake moonwait.http and moonwait.redis answers.
--
-- A spec file is plain Lua with describe/it/before_each/after_each,
-- assert.*, http and redis (the fakes), load_script, invoke,
-- invoke_batch, open_script, close_script in its environment (the same
-- functions as this module's fields). README.md, "Testing a script".
--
-- Attempts run through moonwait._test (mod_test.c): each in a root fiber
-- of its own with the record's deadline, so ctx.remaining_ms(), ctx.defer,
-- ctx.overloaded() and every wait behave as in a run, and a record that
-- outlives its deadline is abandoned as a run abandons it.
local moonwait = require "moonwait"
local json = require "moonwait.json"
local time = require "moonwait.time"
local host = require "moonwait.host"
local T_ = require "moonwait._test"

local M = {}
local null = moonwait.null
local format, concat = string.format, table.concat

-- ---- values shown in messages -------------------------------------------

local function show(v, depth)
  depth = depth or 0
  if type(v) == "string" then return format("%q", v) end
  if v == null then return "null" end
  if type(v) ~= "table" then return tostring(v) end
  if depth > 3 then return "{...}" end
  local parts, n = {}, #v
  for i = 1, n do parts[#parts + 1] = show(v[i], depth + 1) end
  local keys = {}
  for k in pairs(v) do
    if not (type(k) == "number" and k >= 1 and k <= n and k % 1 == 0) then keys[#keys + 1] = k end
  end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  for _, k in ipairs(keys) do
    local ks = type(k) == "string" and k:match("^[%a_][%w_]*$") and k or "[" .. show(k) .. "]"
    parts[#parts + 1] = ks .. " = " .. show(v[k], depth + 1)
  end
  return "{ " .. concat(parts, ", ") .. " }"
end
M.show = show

local function deep_equal(a, b, seen)
  if a == b then return true end
  if type(a) ~= "table" or type(b) ~= "table" then
    -- int64 cdata from the codec against a plain number
    if (type(a) == "cdata" or type(b) == "cdata") and tonumber(a) and tonumber(b) then
      return tonumber(a) == tonumber(b) and tostring(a):gsub("[LLU]+$", "") == tostring(b):gsub("[LLU]+$", "")
    end
    return false
  end
  seen = seen or {}
  if seen[a] == b then return true end
  seen[a] = b
  for k, v in pairs(a) do
    if not deep_equal(v, b[k], seen) then return false end
  end
  for k in pairs(b) do
    if a[k] == nil then return false end
  end
  return true
end
M.deep_equal = deep_equal

-- ---- assertions ----------------------------------------------------------
-- Each raises at the spec's line that called it (level 2), so a failure
-- names SPEC.lua:LINE.

local assert_ = {}
local function fail(msg, extra)
  error(extra and (msg .. ": " .. extra) or msg, 3)
end
function assert_.equal(expected, actual, msg)
  if expected ~= actual then fail(format("expected %s, got %s", show(expected), show(actual)), msg) end
end
function assert_.same(expected, actual, msg)
  if not deep_equal(expected, actual) then
    fail(format("expected the same as %s, got %s", show(expected), show(actual)), msg)
  end
end
function assert_.truthy(v, msg)
  if not v then fail("expected a true value, got " .. show(v), msg) end
end
function assert_.falsy(v, msg)
  if v then fail("expected false or nil, got " .. show(v), msg) end
end
function assert_.is_nil(v, msg)
  if v ~= nil then fail("expected nil, got " .. show(v), msg) end
end
function assert_.matches(pattern, s, msg)
  if type(s) ~= "string" or not s:find(pattern) then
    fail(format("expected a string matching %s, got %s", show(pattern), show(s)), msg)
  end
end
function assert_.has_error(fn, pattern, msg)
  local ok, err = pcall(fn)
  if ok then fail("expected an error, got none", msg) end
  if pattern and not tostring(err):find(pattern) then
    fail(format("expected an error matching %s, got %s", show(pattern), show(tostring(err))), msg)
  end
end
-- A result of invoke that succeeded (optionally with n outputs).
function assert_.ok(res, n, msg)
  if type(res) ~= "table" or res.ok == nil then fail("expected a result of invoke, got " .. show(res), msg) end
  if not res.ok then fail("expected the record to succeed, it failed: " .. tostring(res.err), msg) end
  if n and #res.outputs ~= n then
    fail(format("expected %d output(s), got %d: %s", n, #res.outputs, show(res.outputs)), msg)
  end
end
-- A result of invoke that failed, its error matching pattern (if given).
function assert_.failed(res, pattern, msg)
  if type(res) ~= "table" or res.ok == nil then fail("expected a result of invoke, got " .. show(res), msg) end
  if res.ok then fail("expected the record to fail, it succeeded with " .. show(res.outputs), msg) end
  if pattern and not tostring(res.err):find(pattern) then
    fail(format("expected an error matching %s, got %s", show(pattern), show(res.err)), msg)
  end
end
function assert_.timed_out(res, msg)
  if type(res) ~= "table" or res.ok == nil then fail("expected a result of invoke, got " .. show(res), msg) end
  if not res.timed_out then
    fail("expected the record to time out; it " .. (res.ok and "succeeded" or "failed: " .. tostring(res.err)), msg)
  end
end
setmetatable(assert_, {
  __call = function(_, v, msg, ...)
    if not v then error(msg or "assertion failed!", 2) end
    return v, msg, ...
  end,
  __index = function(_, k) error("assert." .. tostring(k) .. " does not exist (equal, same, truthy, falsy, is_nil, "
      .. "matches, has_error, ok, failed, timed_out)", 2) end,
})
M.assert = assert_

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

local function limit_ms(opts_timeout)
  return opts_timeout or 60000
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
    local limit = limit_ms(opts.timeout_ms)
    if a.timeout then
      time.sleep(limit / 1000)
      return nil, "timeout" .. where
    end
    if a.delay then
      if a.delay * 1000 >= limit then
        time.sleep(limit / 1000)
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
    local limit = self._timeout_ms or 60000
    if a.timeout or (a.delay and a.delay * 1000 >= limit) then
      time.sleep(limit / 1000)
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
    if type(host_) ~= "string" then error("bad argument #1 to 'connect' (string expected)", 2) end
    local peer = (host_:find(":") and "[" .. host_ .. "]" or host_) .. ":" .. tostring(port or 6379)
    F.connects[#F.connects + 1] = { host = host_, port = port or 6379, opts = opts }
    if F._connect_error then return nil, F._connect_error .. " (" .. peer .. ")" end
    return setmetatable({ _peer = peer, _timeout_ms = opts and opts.timeout_ms }, conn_mt)
  end
  return F
end

M.http = new_http()
M.redis = new_redis()
M.null = null
M.json = json

-- ---- loading a script ----------------------------------------------------

local base_path = package.path
local base_loaded = {}
for k in pairs(package.loaded) do base_loaded[k] = true end
local spec_dir = "."

local function dir_of(path)
  return path:match("^(.*)/[^/]*$") or "."
end

local function resolve(path)
  if path:sub(1, 1) == "/" then return path end
  return spec_dir .. "/" .. path
end

-- load_script(path): the script's module, loaded fresh (its own modules
-- too) with the fakes in place of moonwait.http and moonwait.redis, and
-- checked as a run checks it. Raises what a run would refuse it for.
-- opts.env: values os.getenv gives the script (until the next load_script),
-- over the process's environment.
local real_getenv = os.getenv
function M.load_script(path, opts)
  path = resolve(path)
  local env = opts and opts.env
  os.getenv = env and function(k)
    local v = env[k]
    if v ~= nil then return tostring(v) end
    return real_getenv(k)
  end or real_getenv
  for k in pairs(package.loaded) do
    if not base_loaded[k] then package.loaded[k] = nil end
  end
  package.loaded["moonwait.http"] = M.http
  package.loaded["moonwait.redis"] = M.redis
  rawset(moonwait, "http", M.http)
  local d = dir_of(path)
  package.path = d .. "/?.lua;" .. d .. "/?/init.lua;" .. base_path
  local chunk, err = loadfile(path)
  if not chunk then error(err, 2) end
  local mod = chunk()
  local ok, cerr = host.check(mod, path)
  if not ok then error(cerr, 2) end
  return mod
end

-- ---- running a record ----------------------------------------------------

local ctx_mt -- the real ctx metatable (remaining_ms, log, defer, overloaded)
local seq_next = 0

local function make_ctx(f)
  local ctx = {}
  for k, v in pairs(f) do ctx[k] = v end
  return setmetatable(ctx, ctx_mt)
end

local WRONG = "expected an array of output records (did you mean `return { record }`?)"
local WRONG_B = "expected an array of output records (did you mean `results[i] = { records[i] }`?)"

-- What the run makes of what `what` returned (n values in r): outputs and
-- their JSON lines, or nil and the error (result.c's rules and messages).
local function take(what, r, n)
  local hint = what:find("^batch_invoke") and WRONG_B or WRONG
  if n <= 0 then return nil, what .. " returned nothing; " .. hint end
  local out = r[1]
  if out == nil then
    if n >= 2 and r[2] ~= nil then return nil, tostring(r[2]) end
    return nil, what .. " returned nil without an error message; " .. hint
  end
  if type(out) ~= "table" then return nil, what .. " returned a " .. type(out) .. "; " .. hint end
  local count, keys = #out, 0
  for _ in pairs(out) do keys = keys + 1 end
  if keys ~= count then return nil, what .. " returned a table that is not an array; " .. hint end
  local outputs, lines = {}, {}
  for i = 1, count do
    local line, err = json.encode(out[i])
    if not line then return nil, format("%s: cannot encode output record %d as JSON: %s", what, i, tostring(err)) end
    lines[i] = line
    outputs[i] = json.decode(line)
  end
  return outputs, lines
end

local function strategy(s)
  if s == nil or s == "none" then return { max_attempts = 1 } end
  if type(s) ~= "table" then error("retry must be a table like { max_attempts = 3, backoff = \"fixed\", delay_ms = 100 }", 3) end
  return s
end

local function backoff_ms(s, attempt)
  local d
  if s.backoff == "exponential" then
    d = math.min((s.initial_delay_ms or 0) * (s.multiplier or 2) ^ (attempt - 1), s.max_delay_ms or math.huge)
  else
    d = s.delay_ms or 0
  end
  if s.jitter == "full" then d = math.random() * d end
  return d
end

local function record_text(record)
  if type(record) == "string" then
    local v, err = json.decode(record)
    if v == nil and err then error("the record is not JSON: " .. err, 3) end
    return record
  end
  local text, err = json.encode(record)
  if not text then error("the record cannot be a JSON line: " .. tostring(err), 3) end
  return text
end

-- invoke(M, record, opts): one record's whole life as a run gives it:
-- attempts of async_invoke within one deadline, the retry predicates and
-- the strategy (opts.retry, else M.retry), back-offs, on_timeout. opts:
-- timeout_ms (10000; 0 = none), seq, line, source_id, deliveries, retry.
-- Returns { ok, outputs, lines, err, traceback, attempts, timed_out,
-- overloads }: outputs as a reader of the output would decode them, lines
-- as moonwait.json writes them.
function M.invoke(mod, record, opts)
  opts = opts or {}
  if type(mod) ~= "table" or type(mod.async_invoke) ~= "function" then
    error("invoke(M, record, opts): M must be a module with async_invoke (from load_script)", 2)
  end
  local text = record_text(record)
  seq_next = seq_next + 1
  local seq = opts.seq or seq_next
  local timeout = opts.timeout_ms or 10000
  local deadline = timeout > 0 and T_.now_ms() + timeout or 0
  local s = strategy(opts.retry or mod.retry)
  local fields = { seq = seq, line = opts.line or seq, source_id = opts.source_id,
    deliveries = opts.source_id and (opts.deliveries or 1) or nil,
    deadline = deadline > 0 and T_.wall(deadline) or nil }
  local res = { ok = false, attempts = 0, timed_out = false, overloads = 0 }
  local last_error
  local function timed_out()
    res.timed_out = true
    res.outputs, res.lines = nil, nil
    if mod.on_timeout == nil then
      res.ok = false
      res.err = format("timed out after %d ms%s (the script has no on_timeout)", timeout,
        res.attempts > 1 and " across its attempts" or "")
      return res
    end
    local f = {}
    for k, v in pairs(fields) do f[k] = v end
    f.attempt = res.attempts
    local ctx = make_ctx(f)
    rawset(ctx, "remaining_ms", function() return 0 end)
    local r = { T_.sync(mod.on_timeout, json.decode(text), ctx) }
    if not r[1] then
      res.ok, res.err, res.traceback = false, "timed out, and on_timeout failed: " .. tostring(r[2]), r[3]
      return res
    end
    local outputs, lines = take("on_timeout", { unpack(r, 2, table.maxn(r)) }, table.maxn(r) - 1)
    if not outputs then
      res.ok, res.err = false, "timed out, and on_timeout failed: " .. lines
      return res
    end
    res.ok, res.outputs, res.lines, res.err = true, outputs, lines, nil
    return res
  end
  for attempt = 1, math.huge do
    if deadline > 0 and T_.now_ms() >= deadline then return timed_out() end
    res.attempts = attempt
    fields.attempt, fields.last_error = attempt, last_error
    local r = { T_.attempt(mod.async_invoke, deadline, seq, json.decode(text), make_ctx(fields)) }
    res.overloads = res.overloads + r[2]
    if r[1] == "timeout" then return timed_out() end
    local raw
    if r[1] == "returned" then
      raw = { unpack(r, 4, 3 + r[3]) }
      local outputs, lines = take("async_invoke", raw, r[3])
      res.ok, res.outputs, res.lines = outputs ~= nil, outputs, outputs and lines or nil
      res.err, res.traceback = not outputs and lines or nil, nil
    else
      res.ok, res.outputs, res.lines, res.err, res.traceback = false, nil, nil, r[4], r[5]
    end
    local pred = res.ok and mod.retry_on_result or (not res.ok and mod.retry_on_error)
    local again = false
    if pred then
      local which = res.ok and "retry_on_result" or "retry_on_error"
      local p = { T_.attempt(pred, deadline, seq, res.ok and raw[1] or res.err, make_ctx(fields)) }
      if p[1] == "timeout" then return timed_out() end
      if p[1] == "raised" then
        res.ok, res.outputs, res.lines = false, nil, nil
        res.err, res.traceback = which .. " raised: " .. tostring(p[4]), p[5]
        return res
      end
      again = p[3] >= 1 and p[4] and true or false
    end
    if not again or attempt >= (s.max_attempts or 1) then return res end
    last_error = not res.ok and res.err or nil
    local d = backoff_ms(s, attempt)
    if deadline > 0 and T_.now_ms() + d >= deadline then
      time.sleep(math.max(0, deadline - T_.now_ms()) / 1000)
      return timed_out()
    end
    if d > 0 then time.sleep(d / 1000) end
  end
end

-- invoke_batch(M, records, opts): one call of batch_invoke(records, ctxs)
-- as a run makes it (opts: timeout_ms, as invoke's). Returns an array of
-- results, one per record ({ ok, outputs, lines, err }), and the batch's
-- own error when the whole batch failed. No retries.
function M.invoke_batch(mod, records, opts)
  opts = opts or {}
  if type(mod) ~= "table" or type(mod.batch_invoke) ~= "function" then
    error("invoke_batch(M, records, opts): M must be a module with batch_invoke (from load_script)", 2)
  end
  local timeout = opts.timeout_ms or 10000
  local deadline = timeout > 0 and T_.now_ms() + timeout or 0
  local recs, ctxs = {}, {}
  for i, rec in ipairs(records) do
    recs[i] = json.decode(record_text(rec))
    seq_next = seq_next + 1
    ctxs[i] = make_ctx({ seq = seq_next, line = seq_next, attempt = 1,
      deadline = deadline > 0 and T_.wall(deadline) or nil })
  end
  local n = #recs
  local results = {}
  local function all_fail(err, timed)
    for i = 1, n do results[i] = { ok = false, err = err, timed_out = timed or false } end
    return results, err
  end
  local r = { T_.attempt(mod.batch_invoke, deadline, 0, recs, ctxs) }
  if r[1] == "timeout" then return all_fail("timed out after " .. timeout .. " ms (in batch_invoke)", true) end
  if r[1] == "raised" then return all_fail(r[4]) end
  local nres = r[3]
  local res, errs = r[4], type(r[5]) == "table" and nres >= 2 and r[5] or nil
  if nres == 0 or res == nil then
    return all_fail(nres >= 2 and r[5] ~= nil and tostring(r[5]) or "batch_invoke returned nil without an error "
      .. "message; expected an array with one output array per record (results[i] for records[i])")
  end
  if type(res) ~= "table" then
    return all_fail("batch_invoke returned a " .. type(res) .. "; expected an array with one output array per "
      .. "record (results[i] for records[i])")
  end
  if #res > n then
    return all_fail(format("batch_invoke returned %d results for %d records; expected one per record (results[i] "
      .. "for records[i])", #res, n))
  end
  for i = 1, n do
    local v = res[i]
    if type(v) == "table" then
      local outputs, lines = take(format("batch_invoke (results[%d])", i), { v }, 1)
      results[i] = outputs and { ok = true, outputs = outputs, lines = lines } or { ok = false, err = lines }
    elseif v ~= nil then
      results[i] = { ok = false, err = format("batch_invoke: results[%d] is a %s; expected an array of output "
        .. "records ({} for none)", i, type(v)) }
    elseif errs and errs[i] ~= nil then
      results[i] = { ok = false, err = tostring(errs[i]) }
    else
      results[i] = { ok = false, err = format("batch_invoke returned no result for records[%d] (results[%d] is "
        .. "nil and errs[%d] is not set)", i, i, i) }
    end
  end
  return results
end

-- open_script(M, opts) / close_script(M): the hook in a fiber of its own,
-- with ctx.generation (opts.generation, 1) and ctx.previous
-- (opts.previous). true, or nil and the error (a missing hook: true).
local function hook(mod, which, opts)
  local fn = mod[which]
  if fn == nil then return true end
  local r = { T_.attempt(fn, 0, 0, make_ctx({ generation = opts and opts.generation or 1,
    previous = which == "open" and opts and opts.previous or nil })) }
  if r[1] == "raised" then return nil, r[4] end
  if r[3] >= 2 and r[4] == nil and r[5] ~= nil then return nil, tostring(r[5]) end
  return true
end
function M.open_script(mod, opts) return hook(mod, "open", opts) end
function M.close_script(mod) return hook(mod, "close") end

-- ---- describe / it -------------------------------------------------------

local root = { name = nil, before = {}, after = {}, items = {} }
local current = root

function M.describe(name, fn)
  local d = { name = tostring(name), parent = current, before = {}, after = {}, items = {} }
  current.items[#current.items + 1] = d
  local saved = current
  current = d
  local ok, err = pcall(fn)
  current = saved
  if not ok then error(err, 0) end
end
function M.it(name, fn)
  local info = debug.getinfo(2, "Sl")
  current.items[#current.items + 1] = { name = tostring(name), fn = fn, parent = current,
    where = (info.short_src or "?") .. ":" .. (info.currentline or 0) }
end
function M.before_each(fn) current.before[#current.before + 1] = fn end
function M.after_each(fn) current.after[#current.after + 1] = fn end

local function full_name(t)
  local parts, d = { t.name }, t.parent
  while d and d.name do
    table.insert(parts, 1, d.name)
    d = d.parent
  end
  return concat(parts, " ")
end

local function chain(t, field)
  local list, d = {}, t.parent
  while d do
    table.insert(list, 1, d)
    d = d.parent
  end
  local fns = {}
  for _, dd in ipairs(list) do
    for _, f in ipairs(dd[field]) do fns[#fns + 1] = f end
  end
  return fns
end

-- The message of an error raised in a test, with the spec's line when the
-- message does not start with it.
local function explain(spec, err, tb)
  local msg = tostring(err)
  if msg:sub(1, #spec) == spec or not tb then return msg end
  for line in tb:gmatch("[^\n]+") do
    local at = line:match("^%s*(" .. spec:gsub("%p", "%%%0") .. ":%d+):")
    if at then return msg .. " (at " .. at .. ")" end
  end
  return msg
end

local function run_test(spec, t, out)
  M.http.reset()
  M.redis.reset()
  local tb
  local function handler(e)
    tb = debug.traceback(tostring(e), 2)
    return e
  end
  local ok, err = true, nil
  for _, f in ipairs(chain(t, "before")) do
    ok, err = xpcall(f, handler)
    if not ok then break end
  end
  if ok then ok, err = xpcall(t.fn, handler) end
  local after = chain(t, "after")
  for i = #after, 1, -1 do
    local aok, aerr = xpcall(after[i], handler)
    if ok and not aok then ok, err = false, aerr end
  end
  if ok and (#M.http.unmatched > 0 or #M.redis.unmatched > 0) then
    local calls = {}
    for _, c in ipairs(M.http.unmatched) do calls[#calls + 1] = "HTTP " .. c end
    for _, c in ipairs(M.redis.unmatched) do calls[#calls + 1] = "Redis " .. c end
    ok, err, tb = false, "calls without a fake answer: " .. concat(calls, ", "), nil
  end
  if ok then
    out:write("ok   ", t.where, ": ", full_name(t), "\n")
    return true
  end
  out:write("FAIL ", t.where, ": ", full_name(t), "\n     ", (explain(spec, err, tb):gsub("\n", "\n     ")), "\n")
  return false
end

local function collect(d, list)
  for _, it in ipairs(d.items) do
    if it.fn then list[#list + 1] = it else collect(it, list) end
  end
  return list
end

-- Runs the spec file at `path`: true when every test passed, else false
-- (everything reported on `out`).
function M.run_spec(path, ctx, out)
  out = out or io.stdout
  ctx_mt = getmetatable(ctx)
  spec_dir = dir_of(path)
  base_path = spec_dir .. "/?.lua;" .. spec_dir .. "/?/init.lua;" .. base_path
  package.path = base_path
  local started = time.now()
  local env = setmetatable({
    describe = M.describe, it = M.it, before_each = M.before_each, after_each = M.after_each,
    assert = assert_, http = M.http, redis = M.redis, load_script = M.load_script, invoke = M.invoke,
    invoke_batch = M.invoke_batch, open_script = M.open_script, close_script = M.close_script,
    null = null, json = json, show = show,
  }, { __index = _G })
  local chunk, err = loadfile(path)
  if chunk then
    setfenv(chunk, env)
    local tb
    local ok, e = xpcall(chunk, function(x) tb = debug.traceback(tostring(x), 2) return x end)
    if not ok then chunk, err = nil, explain(path, e, tb) end
  end
  if not chunk then
    out:write("FAIL ", path, ": the spec did not load: ", tostring(err), "\n")
    out:write(path, ": 0 tests, the spec did not load\n")
    return false
  end
  local tests = collect(root, {})
  local passed = 0
  for _, t in ipairs(tests) do
    if run_test(path, t, out) then passed = passed + 1 end
  end
  local failed = #tests - passed
  out:write(format("%s: %d test%s, %d passed, %d failed (%.2f s)\n", path, #tests, #tests == 1 and "" or "s",
    passed, failed, time.now() - started))
  if #tests == 0 then
    out:write(path, ": no tests (call it(name, fn) inside the spec)\n")
    return false
  end
  return failed == 0
end

return M
