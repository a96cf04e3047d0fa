-- The Lua side: fibers, parking, ctx, the host modules, misuse errors.
local H = require("helpers")

local function run_script(body, input, args)
  local d = H.tmpdir()
  H.script(d, body)
  return H.run("run --script script.lua " .. (args or ""), { dir = d, input = input or '{"id":1}\n' })
end

describe("the Lua runtime", function()
  after_each(H.cleanup)

  it("gives ctx seq, line, attempt, deadline, remaining_ms and log", function()
    local r = run_script([[
local time = require "moonwait.time"
return { async_invoke = function(rec, ctx)
  local before = ctx.remaining_ms()
  time.sleep(0.05)
  local after = ctx.remaining_ms()
  ctx.log.info("hello from", rec.id)
  return { { seq = ctx.seq, line = ctx.line, attempt = ctx.attempt,
             has_deadline = type(ctx.deadline) == "number",
             deadline_ahead = ctx.deadline > time.now(),
             before = before, shrank = after <= before - 40 } }
end }
]], '\n{"id":7}\n', "--timeout 2000")
    assert.equal(0, r.code, r.err)
    local o = H.json.decode(r.lines[1])
    assert.equal(1, o.seq)
    assert.equal(2, o.line)
    assert.equal(1, o.attempt)
    assert.is_true(o.has_deadline)
    assert.is_true(o.deadline_ahead)
    assert.is_true(o.before <= 2000 and o.before > 1900)
    assert.is_true(o.shrank)
    assert.matches("moonwait: %[info%] [^\n]*script.lua:6: seq=1: hello from 7", r.err)
  end)

  it("has no deadline and infinite remaining_ms with --timeout 0", function()
    local r = run_script([[
return { async_invoke = function(rec, ctx)
  return { { dl = ctx.deadline == nil, inf = ctx.remaining_ms() == math.huge } }
end }
]], nil, "--timeout 0")
    assert.equal(0, r.code, r.err)
    assert.same({ dl = true, inf = true }, H.json.decode(r.lines[1]))
  end)

  it("raises a clear error when sleep is called inside coroutine.wrap", function()
    local r = run_script([[
local time = require "moonwait.time"
return { async_invoke = function(rec, ctx)
  local f = coroutine.wrap(function() time.sleep(0.01) end)
  f()
  return { rec }
end }
]])
    assert.equal(1, r.code)
    assert.matches("script.lua:3: moonwait.time.sleep cannot wait inside a coroutine of your own", r.err, 1, true)
  end)

  it("raises a clear error when sleep is called at load time", function()
    local d = H.tmpdir()
    H.script(d, [[
local time = require "moonwait.time"
time.sleep(0.01)
return { async_invoke = function(rec) return { rec } end }
]])
    local r = H.run("check script.lua", { dir = d })
    assert.equal(2, r.code)
    assert.matches("script.lua:2: moonwait.time.sleep can only wait inside async_invoke", r.out, 1, true)
  end)

  it("lets a script use its own coroutines that do not wait on the host", function()
    local r = run_script([[
return { async_invoke = function(rec, ctx)
  local gen = coroutine.wrap(function() for i = 1, 3 do coroutine.yield(i) end end)
  return { { a = gen(), b = gen(), c = gen() } }
end }
]])
    assert.equal(0, r.code, r.err)
    assert.same({ a = 1, b = 2, c = 3 }, H.json.decode(r.lines[1]))
  end)

  it("does not hand a record's thread globals (setfenv(0, t)) to the next record on a reused fiber", function()
    -- The pool reuses a record's Lua thread for the next record: the
    -- thread's globals, set by setfenv(0, t), were the next one's too
    -- (its loadstring chunks and getfenv(0) saw the first record's t).
    for _, w in ipairs({ 1, 2 }) do
      local r = run_script([[
return { async_invoke = function(rec, ctx)
  local seen = rawget(getfenv(0), "TAG")
  if rec.id == 1 then setfenv(0, setmetatable({ TAG = "record 1" }, { __index = _G })) end
  return { { id = rec.id, seen = seen, loaded = loadstring("return TAG")() } }
end }
]], '{"id":1}\n{"id":2}\n{"id":3}\n', "--capacity 1 --workers " .. w)
      assert.equal(0, r.code, r.err)
      assert.same({ id = 1, loaded = "record 1" }, H.json.decode(r.lines[1]))
      assert.same({ id = 2 }, H.json.decode(r.lines[2]))
      assert.same({ id = 3 }, H.json.decode(r.lines[3]))
    end
  end)

  it("fails a record whose coroutine yields outside a host call", function()
    local r = run_script([[
return { async_invoke = function(rec, ctx) coroutine.yield(); return { rec } end }
]])
    assert.equal(1, r.code)
    assert.matches("coroutine.yield() called in a host coroutine", r.err, 1, true)
  end)

  it("names an accidental global written while a record runs", function()
    local r = run_script([[
return { async_invoke = function(rec, ctx)
  total = (rawget(_G, "total") or 0) + 1
  return { rec }
end }
]])
    assert.equal(1, r.code)
    assert.matches("script.lua:2: assignment to undeclared global 'total'", r.err, 1, true)
  end)

  it("rejects bad sleep arguments", function()
    local r = run_script([[
local time = require "moonwait.time"
return { async_invoke = function(rec, ctx) time.sleep(-1); return { rec } end }
]])
    assert.equal(1, r.code)
    assert.matches("bad argument #1 to 'sleep'", r.err, 1, true)
  end)

  it("gives scripts the host's strict, exact codec as moonwait.json", function()
    local r = run_script([[
local json = require "moonwait.json"
return { async_invoke = function(rec, ctx)
  local v, err = json.decode('{"id":9007199254740993,"e":[],"o":{},"f":0.1}')
  rec.big_ok = tostring(v.id) == "9007199254740993LL"
  rec.back = json.encode(v)
  rec.bad_nil, rec.bad_err = json.decode('{"x":01}')
  rec.bad_nil = rec.bad_nil == nil
  local n, nerr = json.encode({ x = 0/0 })
  rec.nan_err = n == nil and nerr
  rec.empty = json.array()
  rec.arr_mt = getmetatable(v.e) == json.array_mt
  rec.null_is = json.null == require("moonwait").null
  return { rec }
end }
]])
    assert.equal(0, r.code, r.err)
    local line = r.lines[1]
    assert.matches('"big_ok":true', line, 1, true)
    -- keys sorted for a table without a doc, shapes and the exact integer kept
    assert.matches('"back":"{\\"e\\":[],\\"f\\":0.1,\\"id\\":9007199254740993,\\"o\\":{}}"', line, 1, true)
    assert.matches('"bad_err":"malformed JSON at byte 6: invalid number: leading zero"', line, 1, true)
    assert.matches('"bad_nil":true', line, 1, true)
    assert.matches('"nan_err":"cannot encode NaN as JSON"', line, 1, true)
    assert.matches('"empty":[]', line, 1, true)
    assert.matches('"arr_mt":true', line, 1, true)
    assert.matches('"null_is":true', line, 1, true)
  end)

  it("exposes moonwait.null, version and time.now", function()
    local r = run_script([[
local mw = require "moonwait"
return { async_invoke = function(rec, ctx)
  return { { v = mw.version, n = mw.null, now_ok = math.abs(mw.time.now() - os.time()) < 5 } }
end }
]])
    assert.equal(0, r.code, r.err)
    assert.matches('"n":null', r.lines[1], 1, true)
    local o = H.json.decode(r.lines[1])
    assert.matches("^%d+%.%d+%.%d+$", o.v)
    assert.is_true(o.now_ok)
  end)

  it("does not let sleep(0) loops starve I/O or timers", function()
    -- record 1 spins on sleep(0) until record 2 (a 50 ms sleeper) is done
    local r = run_script([[
local time = require "moonwait.time"
local done2 = false
return { async_invoke = function(rec, ctx)
  if rec.id == 1 then
    local spins = 0
    while not done2 do time.sleep(0); spins = spins + 1 end
    return { { id = 1, spun = spins > 0 } }
  end
  time.sleep(0.05)
  done2 = true
  return { { id = 2 } }
end }
]], '{"id":1}\n{"id":2}\n')
    assert.equal(0, r.code, r.err)
    assert.same({ { id = 1, spun = true }, { id = 2 } }, H.decode_lines(r.out))
  end)

  it("runs 10,000 coroutines in flight at once", function()
    local lines = {}
    for i = 1, 10000 do lines[i] = '{"id":' .. i .. '}' end
    local r = run_script([[
local time = require "moonwait.time"
local inflight, peak = 0, 0
local t0
return {
  async_invoke = function(rec, ctx)
    t0 = t0 or time.now()
    inflight = inflight + 1
    if inflight > peak then peak = inflight end
    -- wait until all 10,000 are in flight together (not a fixed time, which
    -- a loaded machine may spend reading the input); the bound only matters
    -- when broken (the default 10 s record timeout fails the run first)
    while peak < 10000 and time.now() - t0 < 60 do time.sleep(0.05) end
    inflight = inflight - 1
    return { { id = rec.id } }
  end,
  close = function() io.stderr:write("peak ", peak, "\n") end,
}
]], table.concat(lines, "\n") .. "\n", "--capacity 10000 --mode unordered")
    assert.equal(0, r.code, r.err)
    assert.equal(10000, #r.lines)
    assert.matches("peak 10000", r.err, 1, true)
  end)

  it("runs open and close once each, before the first and after the last record", function()
    local r = run_script([[
local time = require "moonwait.time"
local calls = {}
local function log(s) calls[#calls + 1] = s end
return {
  open = function(ctx) time.sleep(0.02); log("open") end,
  async_invoke = function(rec, ctx) log("r" .. rec.id); time.sleep(0.01); return { rec } end,
  close = function(ctx) log("close"); io.stderr:write(table.concat(calls, ","), "\n") end,
}
]], '{"id":1}\n{"id":2}\n')
    assert.equal(0, r.code, r.err)
    assert.matches("open,r1,r2,close\n", r.err, 1, true)
  end)
end)
