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
local A = require "moonwait.test.assert"
local fakes = require "moonwait.test.fakes"
local I = require "moonwait.test.invoke"

local M = {}
local null = moonwait.null
local format, concat = string.format, table.concat
local assert_, show = A.assert, A.show

M.assert, M.show, M.deep_equal = A.assert, A.show, A.deep_equal
M.http, M.redis = fakes.new_http(), fakes.new_redis()
I.http, I.redis = M.http, M.redis
M.null, M.json = null, json
M.load_script, M.invoke, M.invoke_batch = I.load_script, I.invoke, I.invoke_batch
M.open_script, M.close_script = I.open_script, I.close_script

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
    where = (info.source:match("^@(.*)") or info.short_src or "?") .. ":" .. (info.currentline or 0) }
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

-- xpcall(f, handler) in a child fiber: a test (or before_each, after_each)
-- that spins past the CPU budget fails by itself, not the runner with
-- every test after it (the budget's error stays raised until the fiber
-- that ran too long ends).
local function protected(f, handler)
  local wok, ok, err = moonwait.wait(moonwait.spawn(function() return xpcall(f, handler) end))
  if wok then return ok, err end
  return false, ok
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
    ok, err = protected(f, handler)
    if not ok then break end
  end
  if ok then ok, err = protected(t.fn, handler) end
  local after = chain(t, "after")
  for i = #after, 1, -1 do
    local aok, aerr = protected(after[i], handler)
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
function M._run_spec(path, ctx, out)
  out = out or io.stdout
  I.setup(path:match("^(.*)/[^/]*$") or ".", getmetatable(ctx))
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
