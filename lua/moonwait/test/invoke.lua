-- moonwait.test.invoke: how `moonwait test` loads a script and runs its
-- records the way a run does: attempts through moonwait._test (mod_test.c)
-- in root fibers with the record's deadline, result.c's and batch_run.c's
-- rules and messages for what the script returns, the retry strategy and
-- predicates, on_timeout outside any fiber.
local moonwait = require "moonwait"
local json = require "moonwait.json"
local time = require "moonwait.time"
local host = require "moonwait.host"
local T_ = require "moonwait._test"

local M = {}
local format = string.format

-- The fakes the script gets (set by moonwait.test).
M.http, M.redis = nil, nil

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
    if not base_loaded[k] and not k:find("^moonwait%.") then package.loaded[k] = nil end
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

local ctx_mt -- the real ctx metatable (remaining_ms, log, defer, overloaded; M.setup)
local seq_next = 0

-- opts.worker: ctx.worker as --workers N gives it (1..N), nil for 1.
local function worker_opt(opts, level)
  local w = opts.worker
  if w ~= nil and (type(w) ~= "number" or w < 1 or w % 1 ~= 0) then
    error("opts.worker must be a whole number from 1 (the worker ctx.worker names)", level + 1)
  end
  return w
end

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
-- timeout_ms (10000; 0 = none), seq, line, source_id, deliveries, retry,
-- worker (ctx.worker: 1 as with one worker; --workers N gives 1..N).
-- Returns { ok, outputs, lines, err, traceback, attempts, timed_out,
-- overloads }: outputs as a reader of the output would decode them, lines
-- as moonwait.json writes them.
function M.invoke(mod, record, opts)
  opts = opts or {}
  if type(mod) ~= "table" or type(mod.async_invoke) ~= "function" then
    error("invoke(M, record, opts): M must be a module with async_invoke (from load_script)", 2)
  end
  local text = record_text(record)
  local worker = worker_opt(opts, 2)
  seq_next = seq_next + 1
  local seq = opts.seq or seq_next
  local timeout = opts.timeout_ms or 10000
  local deadline = timeout > 0 and T_.now_ms() + timeout or 0
  local s = strategy(opts.retry or mod.retry)
  local fields = { seq = seq, line = opts.line or seq, source_id = opts.source_id,
    deliveries = opts.source_id and (opts.deliveries or 1) or nil,
    deadline = deadline > 0 and T_.wall(deadline) or nil, worker = worker }
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
    -- A run answers a timeout on the main thread's VM: worker 1, whichever
    -- worker ran the attempts (README, "Workers").
    f.worker = nil
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
        res.err, res.traceback = which .. " raised an error: " .. tostring(p[4]), p[5]
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
  local worker = worker_opt(opts, 2)
  local recs, ctxs = {}, {}
  for i, rec in ipairs(records) do
    recs[i] = json.decode(record_text(rec))
    seq_next = seq_next + 1
    ctxs[i] = make_ctx({ seq = seq_next, line = seq_next, attempt = 1,
      deadline = deadline > 0 and T_.wall(deadline) or nil, worker = worker })
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
-- with ctx.generation (opts.generation, 1), ctx.previous (opts.previous)
-- and ctx.worker (opts.worker, 1). true, or nil and the error (a missing
-- hook: true).
local function hook(mod, which, opts)
  local fn = mod[which]
  if fn == nil then return true end
  local worker = worker_opt(opts or {}, 3)
  local r = { T_.attempt(fn, 0, 0, make_ctx({ generation = opts and opts.generation or 1,
    previous = which == "open" and opts and opts.previous or nil, worker = worker })) }
  if r[1] == "raised" then return nil, r[4] end
  if r[3] >= 2 and r[4] == nil and r[5] ~= nil then return nil, tostring(r[5]) end
  return true
end
function M.open_script(mod, opts) return hook(mod, "open", opts) end
function M.close_script(mod, opts) return hook(mod, "close", opts) end

-- The spec's directory (scripts' paths are relative to it) and the real
-- ctx metatable (from the runner's open ctx).
function M.setup(dir, mt)
  spec_dir = dir
  ctx_mt = mt
  base_path = dir .. "/?.lua;" .. dir .. "/?/init.lua;" .. base_path
  package.path = base_path
end

return M
