-- `moonwait test SPEC.lua`: a user's spec of a script runs in the real
-- binary with fake moonwait.http / moonwait.redis; a failing assertion, a
-- script error, a missing fake and a fake timeout are each reported with
-- the spec's file:line, a summary line, and the exit status.
local H = require("helpers")

-- The script under test, written next to its spec.
local SCRIPT = [[
local http = require "moonwait.http"
local redis = require "moonwait.redis"
local time = require "moonwait.time"
local M = { seen = {} }
M.retry = { max_attempts = 3, backoff = "fixed", delay_ms = 5 }
function M.retry_on_error(err, ctx) return err:find("^service answered 5") ~= nil end
function M.async_invoke(r, ctx)
  ctx.defer(function(how) M.seen[#M.seen + 1] = how end)
  if r.mode == "raise" then error("boom") end
  if r.mode == "self" then return r end
  if r.mode == "sleep" then time.sleep(10) end
  if r.mode == "over" then ctx.overloaded(); return {} end
  if r.mode == "rem" then r.rem = ctx.remaining_ms(); return { r } end
  if r.mode == "redis" then
    local c, err = redis.connect("127.0.0.1", 6379)
    if not c then return nil, err end
    local v, e = c:get("user:" .. r.id)
    if not v then return nil, e end
    r.name = v
    c:set_keepalive()
    return { r }
  end
  local res, err = http.get("http://svc/price/" .. r.id, { timeout_ms = 200 })
  if not res then return nil, err end
  if res.status ~= 200 then return nil, "service answered " .. res.status end
  r.price, r.attempt, r.last_error = tonumber(res.body), ctx.attempt, ctx.last_error
  return { r }
end
function M.on_timeout(r, ctx)
  if r.bad then time.sleep(1) end
  r.timed_out = true
  return { r }
end
return M
]]

local function spec_run(files)
  local d = H.tmpdir()
  H.write(d .. "/script.lua", SCRIPT)
  local args = {}
  for name, body in pairs(files) do
    H.write(d .. "/" .. name, body)
    if name:find("_spec%.lua$") then args[#args + 1] = H.q(d .. "/" .. name) end
  end
  table.sort(args)
  local code, out, err = H.sh(H.wrapper .. " " .. H.q(H.bin) .. " test " .. table.concat(args, " "))
  return { code = code, out = out, err = err, dir = d }
end

describe("moonwait test", function()
  after_each(H.cleanup)

  it("passes a spec whose assertions hold: fakes, retries, defer, on_timeout, redis", function()
    local r = spec_run({ ["a_spec.lua"] = [[
local M = load_script("script.lua")
describe("prices", function()
  before_each(function() M.seen = {} end)
  it("retries a 503 and emits the second answer", function()
    http.on("GET", "/price/", { { status = 503 }, { status = 200, body = "42" } })
    local r = invoke(M, { id = 1 })
    assert.ok(r, 1)
    assert.equal(2, r.attempts)
    assert.same({ id = 1, price = 42, attempt = 2, last_error = "service answered 503" }, r.outputs[1])
    assert.equal('{"attempt":2,"id":1,"last_error":"service answered 503","price":42}', r.lines[1])
    assert.same({ "returned", "returned" }, M.seen)
    assert.equal(2, #http.calls)
  end)
  it("fails a raising record with the script's line", function()
    assert.failed(invoke(M, { mode = "raise" }), "script.lua:9: boom")
    assert.same({ "raised" }, M.seen)
  end)
  it("refuses the record itself as the run does", function()
    assert.failed(invoke(M, { mode = "self" }), "did you mean `return { record }`")
  end)
  it("times the record out, abandons the attempt and runs on_timeout", function()
    local r = invoke(M, { mode = "sleep" }, { timeout_ms = 30 })
    assert.timed_out(r)
    assert.ok(r, 1)
    assert.equal(true, r.outputs[1].timed_out)
    assert.same({ "abandoned" }, M.seen)
  end)
  it("refuses a wait in on_timeout", function()
    assert.failed(invoke(M, { mode = "sleep", bad = true }, { timeout_ms = 30 }), "on_timeout failed: .*can only wait")
  end)
  it("counts ctx.overloaded and gives remaining_ms on the record's clock", function()
    assert.equal(1, invoke(M, { mode = "over" }).overloads)
    local rem = invoke(M, { mode = "rem" }, { timeout_ms = 500 }).outputs[1].rem
    assert.truthy(rem <= 500 and rem > 0, rem)
  end)
  it("fakes a timeout and an error of the HTTP client", function()
    http.on("GET", "/price/1$", { timeout = true })
    http.on("GET", "/price/2$", { error = "connection refused" })
    assert.failed(invoke(M, { id = 1 }), "^timeout %(GET http://svc/price/1%)$")
    assert.failed(invoke(M, { id = 2 }), "^connection refused %(GET http://svc/price/2%)$")
  end)
  it("fakes Redis replies, error replies and network errors", function()
    redis.on("GET", "^user:1$", "Ada")
    redis.on("GET", "^user:2$", { reply_error = "WRONGTYPE no" })
    redis.on("GET", "^user:3$", { error = "connection reset" })
    assert.equal("Ada", invoke(M, { mode = "redis", id = 1 }).outputs[1].name)
    assert.failed(invoke(M, { mode = "redis", id = 2 }), "^WRONGTYPE no %(redis 127.0.0.1:6379 GET%)$")
    assert.failed(invoke(M, { mode = "redis", id = 3 }), "^connection reset %(127.0.0.1:6379%)$")
    assert.same({ cmd = "GET", args = { "user:3" } }, redis.calls[3])
  end)
end)
]] })
    assert.equal(0, r.code, r.out .. r.err)
    assert.matches("a_spec.lua: 8 tests, 8 passed, 0 failed", r.out, 1, true)
  end)

  it("fails on a failing assertion, naming the spec's file:line, and sums up", function()
    local r = spec_run({ ["b_spec.lua"] = [[
local M = load_script("script.lua")
it("holds", function() assert.equal(1, 1) end)
it("prices", function()
  http.on("GET", "/price/", { body = "41" })
  assert.equal(42, invoke(M, { id = 1 }).outputs[1].price)
end)
]] })
    assert.equal(1, r.code, r.out .. r.err)
    assert.matches("ok   [^\n]*b_spec.lua:2: holds", r.out)
    assert.matches("FAIL [^\n]*b_spec.lua:3: prices\n%s+[^\n]*b_spec.lua:5: expected 42, got 41", r.out)
    assert.matches("b_spec.lua: 2 tests, 1 passed, 1 failed", r.out, 1, true)
  end)

  it("gives each test its own CPU budget: many quick tests past a second in sum all pass", function()
    local r = spec_run({ ["cpu_spec.lua"] = [[
for i = 1, 15 do
  it("busy " .. i, function()
    local t = os.clock()
    while os.clock() - t < 0.1 do end -- a tenth of the 1 s budget; 1.5 s in all
  end)
end
]] })
    assert.equal(0, r.code, r.out .. r.err)
    assert.matches("cpu_spec.lua: 15 tests, 15 passed, 0 failed", r.out, 1, true)
  end)

  it("fails a test that spins past the CPU budget by itself: the tests after it run", function()
    local r = spec_run({ ["spin_spec.lua"] = [[
it("spins", function() while true do end end)
describe("after", function()
  it("still runs", function() assert.equal(1, 1) end)
end)
describe("a spinning before_each", function()
  before_each(function() while true do end end)
  it("fails", function() end)
end)
it("runs last", function() end)
]] })
    assert.equal(1, r.code, r.out .. r.err)
    assert.matches("FAIL [^\n]*spin_spec.lua:1: spins\n%s+[^\n]*exceeded the CPU budget", r.out)
    assert.matches("ok   [^\n]*spin_spec.lua:3: after still runs", r.out)
    assert.matches("FAIL [^\n]*spin_spec.lua:7: a spinning before_each fails", r.out)
    assert.matches("ok   [^\n]*spin_spec.lua:9: runs last", r.out)
    assert.matches("spin_spec.lua: 4 tests, 2 passed, 2 failed", r.out, 1, true)
  end)

  it("reports a record's script error through the result, and an error in the spec at its line", function()
    local r = spec_run({ ["c_spec.lua"] = [[
local M = load_script("script.lua")
it("expects success", function() assert.ok(invoke(M, { mode = "raise" })) end)
it("indexes nil", function() local x; return x.y end)
]] })
    assert.equal(1, r.code)
    assert.matches("c_spec.lua:2: expected the record to succeed, it failed: [^\n]*script.lua:9: boom", r.out)
    assert.matches("c_spec.lua:3: attempt to index local 'x'", r.out, 1, true)
    assert.matches("2 tests, 0 passed, 2 failed", r.out, 1, true)
  end)

  it("fails a test that made a call without a fake answer, even when the script handled it", function()
    local r = spec_run({ ["d_spec.lua"] = [[
local M = load_script("script.lua")
it("forgot the fake", function()
  local res = invoke(M, { id = 7 })
  assert.failed(res, "no fake HTTP answer for GET http://svc/price/7")
end)
]] })
    assert.equal(1, r.code)
    assert.matches("calls without a fake answer: HTTP GET http://svc/price/7", r.out, 1, true)
  end)

  it("reports a fake delay past the call's timeout as the client's timeout", function()
    local r = spec_run({ ["e_spec.lua"] = [[
local M = load_script("script.lua")
it("slow", function()
  http.on("GET", "/price/", { delay = 5, body = "1" })
  assert.ok(invoke(M, { id = 1 }))
end)
]] })
    assert.equal(1, r.code)
    assert.matches("it failed: timeout %(GET http://svc/price/1%)", r.out)
  end)

  it("reads a call's timeout_ms as the clients do: math.huge (ctx.remaining_ms() without a deadline) and 0 are no limit, redis's default 5000", function()
    local r = spec_run({ ["h_spec.lua"] = [[
local M = load_script("rem.lua")
it("math.huge: the record's deadline cuts a fake timeout (regression: time.sleep raised)", function()
  http.on("GET", "/", { timeout = true })
  assert.timed_out(invoke(M, { url = "http://svc/" }, { timeout_ms = 100 }))
end)
it("math.huge: a slow answer is no timeout of the call's own", function()
  http.on("GET", "/", { delay = 0.05, body = "ok" })
  local res = invoke(M, { url = "http://svc/" }, { timeout_ms = 0 })
  assert.ok(res, 1)
  assert.equal("ok", res.outputs[1].body)
end)
it("0: no limit of the call's own either", function()
  http.on("GET", "/", { delay = 0.05, body = "ok" })
  assert.ok(invoke(M, { url = "http://svc/", ms = 0 }, { timeout_ms = 0 }), 1)
end)
it("redis: 5000 ms by default, as redis.connect", function()
  redis.on("GET", nil, { timeout = true })
  local res = invoke(M, { redis = true }, { timeout_ms = 5300 })
  assert.failed(res, "^timeout")
end)
]], ["rem.lua"] = [[
local http = require "moonwait.http"
local redis = require "moonwait.redis"
local M = {}
function M.async_invoke(r, ctx)
  if r.redis then
    local c = assert(redis.connect("127.0.0.1", 6379))
    local v, err = c:get("k")
    if v == nil then return nil, err end
    return { { v = v } }
  end
  local res, err = http.get(r.url, { timeout_ms = r.ms or ctx.remaining_ms() })
  if not res then return nil, err end
  return { { body = res.body } }
end
function M.on_timeout(r) return { { timed_out = true } } end
return M
]] })
    assert.equal(0, r.code, r.out .. r.err)
    assert.matches("4 tests, 4 passed, 0 failed", r.out, 1, true)
  end)

  it("ends several spec files with one total line naming the files that failed", function()
    local r = spec_run({ ["m1_spec.lua"] = 'it("a", function() end)\n',
                         ["m2_spec.lua"] = 'it("b", function() assert.equal(1, 2) end)\n',
                         ["m3_spec.lua"] = 'it("c", function() end)\n' })
    assert.equal(1, r.code)
    assert.matches("\n3 spec files: 2 passed, 1 failed %(%S*m2_spec%.lua%)\n$", r.out)
    r = spec_run({ ["m1_spec.lua"] = 'it("a", function() end)\n', ["m3_spec.lua"] = 'it("c", function() end)\n' })
    assert.equal(0, r.code)
    assert.matches("\n2 spec files: 2 passed, 0 failed\n$", r.out)
    r = spec_run({ ["m1_spec.lua"] = 'it("a", function() end)\n' })   -- one file: its own line is the total
    assert.is_nil(r.out:find("spec files", 1, true))
  end)

  it("refuses a script that writes a global or breaks the contract, as a run would", function()
    local r = spec_run({ ["f_spec.lua"] = [[
it("global", function() load_script("g.lua") end)
it("contract", function() load_script("nomod.lua") end)
]], ["g.lua"] = "oops = 1\nreturn { async_invoke = function(r) return { r } end }\n",
      ["nomod.lua"] = "local M = {}\nfunction M.async_invoke(r) return { r } end\n" })
    assert.equal(1, r.code)
    assert.matches("g.lua:1: assignment to undeclared global 'oops'", r.out, 1, true)
    assert.matches("the script must return a table", r.out, 1, true)
  end)

  it("stops a spinning script with the CPU budget instead of hanging", function()
    local r = spec_run({ ["g_spec.lua"] = [[
it("spins", function()
  assert.failed(invoke(load_script("spin.lua"), {}), "budget")
end)
]], ["spin.lua"] = "return { async_invoke = function(r) while true do end end }\n" })
    assert.equal(0, r.code, r.out .. r.err)
  end)

  it("reports a predicate's error, an output that cannot be JSON, and a wait in the spec's own coroutine", function()
    local r = spec_run({ ["p_spec.lua"] = [[
local M = load_script("p.lua")
it("predicate", function() assert.failed(invoke(M, { mode = "pred" }), "^retry_on_error raised an error: .*pred boom") end)
it("encode", function() assert.failed(invoke(M, { mode = "fn" }), "cannot encode output record 1 as JSON") end)
it("coroutine", function()
  local ok, err = coroutine.wrap(function() return pcall(invoke, M, {}) end)()
  assert.falsy(ok)
  assert.matches("coroutine of your own", err)
end)
it("json line in, exact integers out", function()
  assert.equal('{"id":12345678901234567890}', invoke(M, '{"id":12345678901234567890}').lines[1])
end)
]], ["p.lua"] = [[
local M = {}
function M.retry_on_error(err) if err == "no" then error("pred boom") end return false end
function M.async_invoke(r)
  if r.mode == "pred" then return nil, "no" end
  if r.mode == "fn" then r.f = print end
  return { r }
end
return M
]] })
    assert.equal(0, r.code, r.out .. r.err)
    assert.matches("4 tests, 4 passed, 0 failed", r.out, 1, true)
  end)

  it("runs batch_invoke with per-record results", function()
    local r = spec_run({ ["h_spec.lua"] = [[
local M = load_script("batch.lua")
it("splits", function()
  local rs = invoke_batch(M, { { n = 1 }, { n = 2 }, { n = 3 } })
  assert.same({ { n = 1, ok = true } }, rs[1].outputs)
  assert.failed(rs[2], "^odd one out$")
  assert.failed(rs[3], "batch_invoke returned no result for records%[3%]")
end)
]], ["batch.lua"] = [[
return { batch_invoke = function(records, ctxs)
  records[1].ok = true
  return { { records[1] } }, { [2] = "odd one out" }
end }
]] })
    assert.equal(0, r.code, r.out .. r.err)
  end)

  it("sets ctx.worker for invoke, invoke_batch and the hooks (1 unless given), and refuses a bad one", function()
    local r = spec_run({ ["w_spec.lua"] = [[
local M = load_script("w.lua")
it("worker", function()
  assert.same({ { w = 1 } }, invoke(M, { n = 1 }).outputs)
  assert.same({ { w = 3 } }, invoke(M, { n = 1 }, { worker = 3 }).outputs)
  assert.same({ { w = 2 } }, invoke_batch(M, { { n = 1 } }, { worker = 2 })[1].outputs)
  assert.equal(true, open_script(M, { worker = 2 }))
  assert.equal(2, M.opened_on)
  assert.equal(true, close_script(M, { worker = 4 }))
  assert.equal(4, M.closed_on)
  assert.equal(true, open_script(M))
  assert.equal(1, M.opened_on)
  -- on_timeout runs on the main thread's VM in a run: worker 1, whatever
  -- worker ran the attempt
  local late = invoke(M, { slow = true }, { worker = 3, timeout_ms = 20 })
  assert.timed_out(late)
  assert.same({ { w = 1, late = true } }, late.outputs)
  for _, bad in ipairs({ 0, -1, 1.5, "2" }) do
    local ok, err = pcall(invoke, M, { n = 1 }, { worker = bad })
    assert.equal(false, ok)
    assert.matches("opts.worker must be a whole number", err)
  end
end)
]], ["w.lua"] = [[
local M = {}
local time = require "moonwait.time"
function M.async_invoke(r, ctx)
  if r.slow then time.sleep(5) end
  return { { w = ctx.worker } }
end
function M.on_timeout(r, ctx) return { { w = ctx.worker, late = true } } end
function M.batch_invoke(rs, ctxs) return { { { w = ctxs[1].worker } } } end
function M.open(ctx) M.opened_on = ctx.worker end
function M.close(ctx) M.closed_on = ctx.worker end
return M
]] })
    assert.equal(0, r.code, r.out .. r.err)
    assert.matches("1 test, 1 passed, 0 failed", r.out, 1, true)
  end)

  it("fails a spec that does not load or has no tests, and refuses bad usage", function()
    local r = spec_run({ ["x_spec.lua"] = "it('a', function() end\n" })
    assert.equal(1, r.code)
    assert.matches("x_spec.lua: the spec did not load: [^\n]*x_spec.lua:%d+:", r.out)
    r = spec_run({ ["y_spec.lua"] = "local x = 1\n" })
    assert.equal(1, r.code)
    assert.matches("no tests", r.out, 1, true)
    local code, _, err = H.sh(H.q(H.bin) .. " test")
    assert.equal(2, code)
    assert.matches("usage: moonwait test SPEC.lua", err, 1, true)
    code, _, err = H.sh(H.q(H.bin) .. " test /nonexistent/a_spec.lua")
    assert.equal(2, code)
    assert.matches("cannot read the spec file", err, 1, true)
  end)

  it("runs the http-enrich example's spec", function()
    local code, out, err = H.sh(H.q(H.bin) .. " test examples/http-enrich/enrich_spec.lua")
    assert.equal(0, code, out .. err)
    assert.matches("6 tests, 6 passed, 0 failed", out, 1, true)
  end)
end)
