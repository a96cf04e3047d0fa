-- Retries, deadlines and failure routing, through the real binary.
local H = require("helpers")
local servers = require("support.servers")

local function run(body, recs, args, extra)
  local d = H.tmpdir()
  H.script(d, body)
  local input = type(recs) == "string" and recs or H.jsonl(recs)
  local r = H.run("run --script script.lua " .. (args or ""), { dir = d, input = input })
  r.dir = d
  return r
end

-- Run `body` over one record {"id":1} read from a FIFO that stays open
-- until the script (on_timeout, say) or the run's end creates the file
-- "done": the end of input starts waiting back-offs at once, so a test of
-- back-off timing must not let the input end meanwhile (on a slow machine
-- the end of a file is seen only after the first attempt).
local function run_held(body, args)
  local d = H.tmpdir()
  H.script(d, body)
  assert.is_true(os.execute("mkfifo " .. H.q(d .. "/fifo")) == 0)
  os.execute(string.format(
    "(printf '{\"id\":1}\\n'; i=0; while [ ! -e %s ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done) >%s &",
    H.q(d .. "/done"), H.q(d .. "/fifo")))
  local r = H.run("run --script script.lua --input fifo " .. args, { dir = d })
  H.write(d .. "/done", "")
  r.dir = d
  return r
end

-- Fails its first `fail` attempts per id, then returns the record with the
-- attempt number and the last error it saw.
local FLAKY = [[
local retry = require "moonwait.retry"
local M = {}
local seen = {}
M.retry_on_error = retry.any_error
function M.async_invoke(r, ctx)
  seen[r.id] = (seen[r.id] or 0) + 1
  if seen[r.id] <= (r.fail or 0) then error("flaky " .. r.id .. " try " .. ctx.attempt) end
  return { { id = r.id, attempt = ctx.attempt, last_error = ctx.last_error } }
end
return M
]]

describe("retries", function()
  after_each(H.cleanup)

  it("retries a record that fails twice, then succeeds", function()
    local r = run(FLAKY, { { id = 1, fail = 2 } }, "--retry fixed:3:20 --stats")
    assert.equal(0, r.code, r.err)
    local o = H.json.decode(r.lines[1])
    assert.equal(3, o.attempt)
    assert.matches("script.lua:7: flaky 1 try 2$", o.last_error)
    assert.matches("attempts=3 retries=2", r.err, 1, true)
  end)

  it("retries an empty result until it is found (retry_on_result)", function()
    local r = run([[
local retry = require "moonwait.retry"
local calls = 0
return {
  retry = { max_attempts = 5, backoff = "fixed", delay_ms = 10 },
  retry_on_result = retry.empty_result,
  async_invoke = function(r, ctx)
    calls = calls + 1
    if calls < 3 then return {} end      -- the store has not caught up
    return { { found = true, attempt = ctx.attempt } }
  end,
}
]], { { id = 1 } })
    assert.equal(0, r.code, r.err)
    assert.same({ found = true, attempt = 3 }, H.json.decode(r.lines[1]))
  end)

  it("emits the final attempt's outputs only", function()
    local r = run([[
return {
  retry = { max_attempts = 3, delay_ms = 1 },
  retry_on_result = function(out, ctx) return out[1].attempt < 3 end,
  async_invoke = function(r, ctx) return { { attempt = ctx.attempt } } end,
}
]], { { id = 1 } })
    assert.equal(0, r.code, r.err)
    assert.same({ { attempt = 3 } }, H.decode_lines(r.out))
  end)

  it("fails the run when retries are exhausted, saying how many attempts", function()
    local r = run(FLAKY, { { id = 1 }, { id = 2, fail = 9 } }, "--retry fixed:3:5")
    assert.equal(1, r.code)
    assert.matches("input line 2 (record 2) failed after 3 attempts: script.lua:7: flaky 2 try 3", r.err, 1, true)
    assert.equal(1, #r.lines)
  end)

  it("warns when a retry strategy is set but the script has no retry predicate (nothing would be retried)", function()
    local body = 'return { async_invoke = function(r, ctx) error("boom") end }'
    local r = run(body, { { id = 1 } }, "--retry fixed:3:0 --on-error skip --stats")
    assert.equal(0, r.code, r.err)
    assert.matches("warning: script.lua: a retry strategy is set (--retry, the pipeline's retry or M.retry) but the " ..
      "script defines neither retry_on_error(err, ctx) nor retry_on_result(outputs, ctx): no attempt will be retried",
      r.err, 1, true)
    assert.matches("attempts=1 retries=0", r.err, 1, true)
    -- M.retry alone too; none for "none", for no strategy, or with a predicate
    r = run('return { retry = { max_attempts = 2 }, async_invoke = function(r) return { r } end }', { { id = 1 } })
    assert.matches("no attempt will be retried", r.err, 1, true)
    for _, c in ipairs({ { body, "--retry none" }, { body, "" },
                         { 'return { retry_on_error = function() return false end,' ..
                           ' async_invoke = function(r) return { r } end }', "--retry fixed:3:0" } }) do
      r = run(c[1], { { id = 1 } }, c[2] .. " --on-error skip")
      assert.equal(0, r.code, r.err)
      assert.is_nil(r.err:find("warning", 1, true), r.err)
    end
  end)

  it("does not retry errors when only retry_on_result is given, nor empty results with only retry_on_error", function()
    local r = run([[
local retry = require "moonwait.retry"
return {
  retry = { max_attempts = 4, delay_ms = 1 },
  retry_on_result = retry.empty_result,
  async_invoke = function(r, ctx) error("boom on attempt " .. ctx.attempt) end,
}
]], { { id = 1 } }, "--on-error skip --stats")
    assert.equal(0, r.code, r.err)
    assert.matches("attempts=1 retries=0", r.err, 1, true)
    r = run([[
local retry = require "moonwait.retry"
return {
  retry = { max_attempts = 4, delay_ms = 1 },
  retry_on_error = retry.any_error,
  async_invoke = function(r, ctx) return {} end,
}
]], { { id = 1 } }, "--stats")
    assert.equal(0, r.code, r.err)
    assert.matches("attempts=1 retries=0", r.err, 1, true)
  end)

  it("runs predicates as coroutines that may yield", function()
    local r = run([[
local time = require "moonwait.time"
local M = { retry = { max_attempts = 3, delay_ms = 1 } }
function M.retry_on_error(err, ctx)
  time.sleep(0.02)                  -- e.g. ask a health endpoint
  return err:find("transient", 1, true) ~= nil
end
function M.async_invoke(r, ctx)
  if ctx.attempt == 1 then return nil, "transient glitch" end
  return { { attempt = ctx.attempt, last = ctx.last_error } }
end
return M
]], { { id = 1 } })
    assert.equal(0, r.code, r.err)
    assert.same({ attempt = 2, last = "transient glitch" }, H.json.decode(r.lines[1]))
  end)

  it("fails the record when a predicate raises, saying so", function()
    local r = run([[
return {
  retry = { max_attempts = 3, delay_ms = 1 },
  retry_on_error = function(err) error("predicate bug") end,
  async_invoke = function(r) return nil, "nope" end,
}
]], { { id = 1 } })
    assert.equal(1, r.code)
    assert.matches("retry_on_error raised an error: script.lua:3: predicate bug", r.err, 1, true)
  end)

  it("lets the timeout win during a back-off, with and without on_timeout", function()
    -- The input stays open (a FIFO whose writer waits for the test's "done"
    -- file), so nothing cuts the 5 s back-off short: the end of input would
    -- start it at once. The timeout must end the record during the back-off.
    local body = [[
local M = { retry = { max_attempts = 5, delay_ms = 5000 } }
M.retry_on_error = function() return true end
function M.async_invoke(r, ctx)
  io.stderr:write("attempt ", ctx.attempt, "\n")
  return nil, "down"
end
%s
return M
]]
    local function run_open(script) return run_held(script, "--timeout 1000") end
    local t0 = os.time()
    local r = run_open(body:format(""))
    assert.equal(1, r.code)
    assert.matches("timed out after 1000 ms", r.err, 1, true)
    assert.matches("attempt 1", r.err, 1, true)
    assert.is_nil(r.err:find("attempt 2", 1, true))
    -- on_timeout answers, and tells the writer (through the "done" file)
    -- that the input may end now
    r = run_open(body:format([[
function M.on_timeout(r, ctx)
  local f = io.open("done", "w"); f:close()
  return { { id = r.id, gave_up = true, attempt = ctx.attempt } }
end]]))
    assert.equal(0, r.code, r.err)
    assert.same({ id = 1, gave_up = true, attempt = 1 }, H.json.decode(r.lines[1]))
    assert.is_nil(r.err:find("attempt 2", 1, true))
    assert.is_true(os.time() - t0 < 9)   -- not the 5 s back-offs
  end)

  it("spends one budget across attempts: no attempt starts after the deadline", function()
    -- each attempt runs 10 ms; delays 100, 200, 400 (capped), 400...: the
    -- attempts start at 0, 110, 320, 730, 1140; the next would start at 1550,
    -- after the 1350 ms budget. Exactly 5 (margins of ~200 ms either side, so
    -- a loaded machine's late timers do not change the count). The input
    -- stays open until on_timeout (its end would start a back-off at once).
    local r = run_held([[
local time = require "moonwait.time"
local M = { retry = { max_attempts = 50, backoff = "exponential", initial_delay_ms = 100, max_delay_ms = 400, multiplier = 2 } }
M.retry_on_error = function() return true end
local t0
function M.async_invoke(r, ctx)
  t0 = t0 or time.now()
  io.stderr:write(string.format("start %d at %.0f remaining %.0f\n", ctx.attempt, (time.now() - t0) * 1000, ctx.remaining_ms()))
  time.sleep(0.01)
  return nil, "still down"
end
function M.on_timeout(r, ctx)
  local f = io.open("done", "w"); f:close() -- the input may end now
  return { { attempts = ctx.attempt } }
end
return M
]], "--timeout 1350")
    assert.equal(0, r.code, r.err)
    assert.equal(5, H.json.decode(r.lines[1]).attempts, r.err)
    local starts = {}
    for k, at, rem in r.err:gmatch("start (%d+) at (%d+) remaining (%d+)") do
      starts[#starts + 1] = tonumber(at)
      assert.equal(#starts, tonumber(k))
      assert.is_true(tonumber(at) < 1350 and tonumber(rem) > 0, r.err)
    end
    assert.equal(5, #starts, r.err)
    -- each attempt waited at least its delay after the previous one ran
    local delays = { 100, 200, 400, 400 }
    for i = 2, 5 do
      assert.is_true(starts[i] - starts[i - 1] >= 10 + delays[i - 1] - 2, r.err)
    end
  end)

  it("keeps a retried head in place in ordered mode (later records wait)", function()
    local recs = { { id = 1, fail = 2 } }
    for i = 2, 6 do recs[i] = { id = i } end
    local r = run(FLAKY, recs, "--retry fixed:3:50")
    assert.equal(0, r.code, r.err)
    local ids = {}
    for i, o in ipairs(H.decode_lines(r.out)) do ids[i] = o.id end
    assert.same({ 1, 2, 3, 4, 5, 6 }, ids)
  end)

  it("keeps a watermark behind a retried record in unordered mode", function()
    local r = run(FLAKY, { { id = 1, fail = 2 }, { ["$watermark"] = 10 }, { id = 2 } },
      "--retry fixed:3:50 --mode unordered")
    assert.equal(0, r.code, r.err)
    local seq = {}
    for i, o in ipairs(H.decode_lines(r.out)) do seq[i] = o["$watermark"] and "w" or ("r" .. o.id) end
    assert.same({ "r1", "w", "r2" }, seq)
  end)

  it("retries records in back-off at once when the input ends", function()
    -- both records fail their first attempt and wait 60 s; the input ends
    -- right after, which cuts those waits short
    local t0 = os.time()
    local r = run(FLAKY, { { id = 1, fail = 1 }, { id = 2, fail = 1 } }, "--retry fixed:3:60000 --timeout 0")
    assert.equal(0, r.code, r.err)
    assert.same({ { id = 1, attempt = 2, last_error = "script.lua:7: flaky 1 try 1" },
                  { id = 2, attempt = 2, last_error = "script.lua:7: flaky 2 try 1" } }, H.decode_lines(r.out))
    assert.is_true(os.time() - t0 < 10)
  end)

  it("waits the delay for retries scheduled after the input ended", function()
    local r = run([[
local time = require "moonwait.time"
local M = { retry = { max_attempts = 3, delay_ms = 150 } }
M.retry_on_error = function() return true end
local t0
function M.async_invoke(r, ctx)
  t0 = t0 or time.now()
  -- the input ends meanwhile (not observable from the script: one more
  -- read on libuv's thread pool; 300 ms is generous for it)
  if ctx.attempt == 1 then time.sleep(0.3) end
  if ctx.attempt < 3 then return nil, "down" end
  return { { attempt = ctx.attempt, waited = (time.now() - t0) * 1000 } }
end
return M
]], { { id = 1 } })
    assert.equal(0, r.code, r.err)
    local o = H.json.decode(r.lines[1])
    assert.equal(3, o.attempt)
    assert.is_true(o.waited >= 595, "waited " .. o.waited)  -- 300 + 150 + 150
  end)

  it("takes the strategy from the flag over the pipeline over the script", function()
    local d = H.tmpdir()
    H.script(d, [[
local M = { retry = { max_attempts = 2, delay_ms = 1 } }
M.retry_on_error = function() return true end
function M.async_invoke(r, ctx) return nil, "no" end
function M.close() end
return M
]])
    local recs = H.jsonl({ { id = 1 } })
    local r = H.run("run --script script.lua --on-error skip --stats", { dir = d, input = recs })
    assert.matches("attempts=2 ", r.err, 1, true)         -- the script's
    H.write(d .. "/p.lua", 'return { script = "script.lua", on_error = "skip", stats = true, retry = { max_attempts = 3, delay_ms = 1 } }')
    r = H.run("run p.lua", { dir = d, input = recs })
    assert.matches("attempts=3 ", r.err, 1, true)         -- the pipeline's
    r = H.run("run p.lua --retry fixed:4:1", { dir = d, input = recs })
    assert.matches("attempts=4 ", r.err, 1, true)         -- the flag's
    r = H.run("run p.lua --retry none", { dir = d, input = recs })
    assert.matches("attempts=1 ", r.err, 1, true)
  end)

  it("rejects bad retry settings, naming them", function()
    local d = H.tmpdir()
    H.script(d, "return { async_invoke = function(r) return { r } end, retry = { max_attempts = 0 } }")
    local r = H.run("check script.lua", { dir = d })
    assert.equal(2, r.code)
    assert.matches("script.lua: M.retry.max_attempts must be an integer >= 1", r.out, 1, true)
    H.script(d, "return { async_invoke = function(r) return { r } end }")
    r = H.run("run --script script.lua --retry fixed:3", { dir = d })
    assert.equal(2, r.code)
    assert.matches("option '--retry': expected none, fixed:ATTEMPTS:DELAY_MS", r.err, 1, true)
    H.write(d .. "/p.lua", 'return { script = "script.lua", retry = { backof = "fixed" } }')
    r = H.run("run p.lua", { dir = d })
    assert.equal(2, r.code)
    assert.matches("key 'retry': retry: unknown key 'backof'", r.err, 1, true)
  end)
end)

describe("failure routing", function()
  after_each(H.cleanup)

  it("writes failed records to the dead-letter file and continues", function()
    local r = run([[
local M = {}
local function lookup(r) error("no such user " .. r.id) end
function M.async_invoke(r, ctx)
  if r.id % 2 == 0 then lookup(r) end
  return { r }
end
return M
]], { { id = 1 }, { id = 2 }, { id = 3 }, { id = 4, nested = { a = 1 } } },
      "--on-error dead-letter --dead-letter dead.jsonl --retry fixed:2:1 --stats")
    assert.equal(0, r.code, r.err)
    assert.same({ { id = 1 }, { id = 3 } }, H.decode_lines(r.out))
    local dl = H.decode_lines(H.read(r.dir .. "/dead.jsonl"))
    assert.equal(2, #dl)
    assert.same({ id = 2 }, dl[1].record)
    assert.equal(2, dl[1].line)
    assert.equal(1, dl[1].attempts)              -- no retry predicate: one call
    assert.equal(false, dl[1].timed_out)
    assert.is_number(dl[1].elapsed_ms)
    assert.matches("^script.lua:2: no such user 2 %(at script.lua:2: in function 'lookup'%)$", dl[1].error)
    assert.same({ id = 4, nested = { a = 1 } }, dl[2].record)
    assert.matches("dead_lettered=2", r.err, 1, true)
  end)

  it("dead-letters a record whose retries are exhausted", function()
    local r = run(FLAKY, { { id = 1 }, { id = 2, fail = 9 }, { id = 3 } },
      "--retry fixed:3:5 --on-error dead-letter --dead-letter dl.jsonl")
    assert.equal(0, r.code, r.err)
    assert.equal(2, #r.lines)
    local dl = H.json.decode(H.read(r.dir .. "/dl.jsonl"))
    assert.same({ id = 2, fail = 9 }, dl.record)
    assert.equal(3, dl.attempts)
    assert.matches("^script.lua:7: flaky 2 try 3", dl.error)
    assert.is_false(dl.timed_out)
  end)

  it("dead-letters a timed-out record with timed_out = true and the attempts used", function()
    local r = run([[
local time = require "moonwait.time"
return {
  retry = { max_attempts = 3, delay_ms = 10 },
  retry_on_error = function() return true end,
  async_invoke = function(r, ctx)
    if ctx.attempt < 3 then return nil, "try again" end
    time.sleep(10)
    return { r }
  end,
}
]], { { id = 9 } }, "--timeout 300 --on-error dead-letter --dead-letter dl.jsonl")
    assert.equal(0, r.code, r.err)
    local dl = H.json.decode(H.read(r.dir .. "/dl.jsonl"))
    assert.is_true(dl.timed_out)
    assert.equal(3, dl.attempts)
    assert.matches("timed out after 300 ms across its attempts", dl.error, 1, true)
    assert.is_true(dl.elapsed_ms >= 290)
  end)

  it("skips failed records and counts them", function()
    local r = run([[return { async_invoke = function(r) if r.bad then return nil, "bad" end return { r } end }]],
      { { id = 1 }, { id = 2, bad = true }, { id = 3, bad = true }, { id = 4 } }, "--on-error skip --stats")
    assert.equal(0, r.code, r.err)
    assert.same({ { id = 1 }, { id = 4 } }, H.decode_lines(r.out))
    assert.matches("skipped=2", r.err, 1, true)
  end)

  it("routes malformed input lines the same way", function()
    local input = '{"id":1}\n{"id": nope}\n{"id":3}\n'
    local r = run([[return { async_invoke = function(r) return { r } end }]], input,
      "--on-error dead-letter --dead-letter dl.jsonl --stats")
    assert.equal(0, r.code, r.err)
    assert.same({ { id = 1 }, { id = 3 } }, H.decode_lines(r.out))
    local dl = H.json.decode(H.read(r.dir .. "/dl.jsonl"))
    assert.equal('{"id": nope}', dl.raw)
    assert.equal(2, dl.line)
    assert.matches("^malformed JSON", dl.error)
    assert.matches("summary: records_in=3 records_out=3 outputs=2 .*dead_lettered=1 malformed=1", r.err)
    r = run([[return { async_invoke = function(r) return { r } end }]], input, "--on-error skip --stats")
    assert.equal(0, r.code, r.err)
    assert.equal(2, #r.lines)
    -- counted as any skipped record (regression: in skipped, not in records_in or records_out)
    assert.matches("summary: records_in=3 records_out=3 outputs=2 .*skipped=1 dead_lettered=0 malformed=1", r.err)
  end)

  it("requires --dead-letter with --on-error dead-letter", function()
    local r = run([[return { async_invoke = function(r) return { r } end }]], {}, "--on-error dead-letter")
    assert.equal(2, r.code)
    assert.matches("needs '--dead-letter FILE'", r.err, 1, true)
    r = run([[return { async_invoke = function(r) return { r } end }]], {}, "--on-error sometimes")
    assert.equal(2, r.code)
    assert.matches("option '--on-error': expected 'fail', 'skip' or 'dead-letter'", r.err, 1, true)
  end)
end)

describe("retries against real services", function()
  after_each(H.cleanup)

  it("retries HTTP 503 until the service answers 200", function()
    servers.with_faultpeer("fail-twice", function(peer)
      local r = run([[
local http = require "moonwait.http"
return {
  retry = { max_attempts = 4, backoff = "exponential", initial_delay_ms = 10, max_delay_ms = 100, multiplier = 2 },
  retry_on_error = function(err) return err:find("503", 1, true) ~= nil end,
  async_invoke = function(r, ctx)
    local res, err = http.get("http://127.0.0.1:" .. r.port .. "/x")
    if not res then return nil, err end
    if res.status >= 500 then return nil, "service answered " .. res.status end
    return { { status = res.status, attempt = ctx.attempt } }
  end,
}
]], { { port = peer.port } })
      assert.equal(0, r.code, r.err)
      assert.same({ status = 200, attempt = 3 }, H.json.decode(r.lines[1]))
    end)
  end)

  it("finds a Redis key that is set after the first miss", function()
    local redis = servers.redis()
    local ok, err = pcall(function()
      local d = H.tmpdir()
      H.script(d, [[
local redis = require "moonwait.redis"
local mw = require "moonwait"
return {
  retry = { max_attempts = 10, delay_ms = 200 },
  retry_on_result = require("moonwait.retry").empty_result,
  async_invoke = function(r, ctx)
    local c = assert(redis.connect("127.0.0.1", r.port))
    local v = c:get("late:key")
    c:set_keepalive()
    if v == mw.null then io.stderr:write("miss ", ctx.attempt, "\n") return {} end
    return { { value = v, attempt = ctx.attempt } }
  end,
}
]])
      H.write(d .. "/in", H.jsonl({ { port = redis.port } }))
      os.execute(string.format("cd %s && { %s run --script script.lua --input in >out 2>err; echo $? >rc; } &", d, H.cmd("")))
      assert.truthy(H.wait_for(function() return (H.read(d .. "/err") or ""):find("miss 1", 1, true) end, 10))
      redis.cli("SET late:key arrived")
      assert.truthy(H.wait_for(function() return H.read(d .. "/rc") end, 10))
      assert.equal("0", H.read(d .. "/rc"):match("%d+"), H.read(d .. "/err"))
      local o = H.json.decode(H.read(d .. "/out"))
      assert.equal("arrived", o.value)
      assert.is_true(o.attempt >= 2)
    end)
    redis.stop()
    assert(ok, err)
  end)
end)
