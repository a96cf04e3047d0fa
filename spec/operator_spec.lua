-- The operator's rules, seen through the real binary: order, watermark
-- barriers, capacity, backpressure, timeouts, results, failures, drain.
local H = require("helpers")

local SLEEPER = require("support.scripts").SLEEPER

local function records(n, delay)
  local t = {}
  for i = 1, n do t[i] = { id = i, d = delay(i) } end
  return t
end

describe("the operator", function()
  after_each(H.cleanup)

  it("keeps input order in ordered mode with mixed latencies", function()
    local d = H.tmpdir()
    H.script(d, SLEEPER)
    local input = records(40, function(i) return (41 - i) % 7 * 5 end)
    local r = H.run("run --script script.lua --capacity 10", { dir = d, input = H.jsonl(input) })
    assert.equal(0, r.code, r.err)
    local out = H.decode_lines(r.out)
    assert.equal(40, #out)
    for i, o in ipairs(out) do assert.equal(i, o.id) end
  end)

  it("emits on completion in unordered mode", function()
    local d = H.tmpdir()
    H.script(d, SLEEPER)
    local input = { { id = 1, d = 300 }, { id = 2, d = 10 }, { id = 3, d = 150 } }
    local r = H.run("run --script script.lua --mode unordered", { dir = d, input = H.jsonl(input) })
    assert.equal(0, r.code, r.err)
    local ids = {}
    for _, o in ipairs(H.decode_lines(r.out)) do ids[#ids + 1] = o.id end
    assert.same({ 2, 3, 1 }, ids)
  end)

  it("treats watermarks as barriers in unordered mode, both ways", function()
    local d = H.tmpdir()
    H.script(d, SLEEPER)
    local input = {
      { id = 1, d = 250 }, { id = 2, d = 0 },
      { ["$watermark"] = 100 },
      { id = 3, d = 0 }, { id = 4, d = 120 },
      { ["$watermark"] = 200 },
      { id = 5, d = 0 },
    }
    local r = H.run("run --script script.lua --mode unordered", { dir = d, input = H.jsonl(input) })
    assert.equal(0, r.code, r.err)
    local seen = {}
    for _, o in ipairs(H.decode_lines(r.out)) do
      seen[#seen + 1] = o["$watermark"] and ("w" .. o["$watermark"]) or ("r" .. o.id)
    end
    -- 2 overtakes 1 within its segment; nothing crosses w100 or w200
    assert.same({ "r2", "r1", "w100", "r3", "r4", "w200", "r5" }, seen)
  end)

  it("puts watermarks exactly between neighbours in ordered mode", function()
    local d = H.tmpdir()
    H.script(d, SLEEPER)
    local input = { { id = 1, d = 100 }, { ["$watermark"] = 7 }, { id = 2, d = 0 } }
    local r = H.run("run --script script.lua", { dir = d, input = H.jsonl(input) })
    assert.equal(0, r.code, r.err)
    assert.same({ { d = 100, id = 1, seq = 1 }, { ["$watermark"] = 7 }, { d = 0, id = 2, seq = 2 } },
      H.decode_lines(r.out))
  end)

  for _, mode in ipairs({ "ordered", "unordered" }) do
    it("never exceeds the capacity (" .. mode .. ")", function()
      local d = H.tmpdir()
      H.script(d, [[
local time = require "moonwait.time"
local M = {}
local inflight, peak = 0, 0
function M.async_invoke(r, ctx)
  inflight = inflight + 1
  if inflight > peak then peak = inflight end
  time.sleep((r.id % 5) / 1000)
  inflight = inflight - 1
  return { { id = r.id, peak = peak } }
end
return M
]])
      local r = H.run("run --script script.lua --capacity 8 --mode " .. mode,
        { dir = d, input = H.jsonl(records(300, function() return nil end)) })
      assert.equal(0, r.code, r.err)
      local out = H.decode_lines(r.out)
      assert.equal(300, #out)
      local peak = 0
      for _, o in ipairs(out) do peak = math.max(peak, o.peak) end
      assert.equal(8, peak)
    end)
  end

  it("counts watermarks against the capacity", function()
    -- capacity 2: record 1 (slow) + watermark fill the queue, so record 2
    -- is not even read until record 1 is emitted.
    local d = H.tmpdir()
    H.script(d, [[
local time = require "moonwait.time"
local M = {}
local started = {}
function M.async_invoke(r, ctx)
  started[#started + 1] = r.id
  if r.id == 1 then time.sleep(0.2) end
  return { { id = r.id, started = table.concat(started, ",") } }
end
return M
]])
    local r = H.run("run --script script.lua --capacity 2 --mode unordered",
      { dir = d, input = H.jsonl({ { id = 1 }, { ["$watermark"] = 5 }, { id = 2 } }) })
    assert.equal(0, r.code, r.err)
    local out = H.decode_lines(r.out)
    assert.equal("1", out[1].started)
    assert.equal(5, out[2]["$watermark"])
    assert.equal("1,2", out[3].started)
  end)

  it("applies backpressure: a full operator stops reading the input", function()
    local d = H.tmpdir()
    H.script(d, [[
local time = require "moonwait.time"
local M = {}
function M.async_invoke(r, ctx)
  io.stderr:write("started ", ctx.seq, "\n")
  time.sleep(30)
  return { r }
end
return M
]])
    -- 100,000 lines of ~100 bytes (10 MB) offered through a FIFO by dd,
    -- 1 KiB per write; /proc/PID/io tells how many bytes dd got in.
    local lines, pad = {}, string.rep("x", 80)
    for i = 1, 100000 do lines[i] = '{"i":' .. i .. ',"pad":"' .. pad .. '"}' end
    H.write(d .. "/big", table.concat(lines, "\n") .. "\n")
    os.execute("mkfifo " .. d .. "/fifo")
    os.execute(string.format(
      "cd %s && { %s run --script script.lua --input fifo --capacity 5 --timeout 0 >out 2>err </dev/null & echo $! >pid; }",
      d, H.cmd("")))
    os.execute(string.format(
      "cd %s && { dd if=big of=fifo bs=1024 status=none >/dev/null 2>&1 </dev/null & echo $! >wpid; }", d))
    local pid, wpid = H.read(d .. "/pid"):match("%d+"), H.read(d .. "/wpid"):match("%d+")
    local ok, err = pcall(function()
      assert.truthy(H.wait_for(function()
        local _, n = (H.read(d .. "/err") or ""):gsub("started", "")
        return n >= 5
      end, 20), "5 records never started")
      -- wait until dd stops making progress
      local last = -1
      local written = H.wait_for(function()
        local io_ = H.read("/proc/" .. wpid .. "/io") or ""
        local w = tonumber(io_:match("wchar: (%d+)")) or 0
        if w == last and w > 0 then return w end
        last = w
        os.execute("sleep 0.3")
      end, 20)
      local _, started = (H.read(d .. "/err") or ""):gsub("started", "")
      assert.equal(5, started)
      -- pipe buffer (64 KiB) + moonwait's read buffer (<= 128 KiB) + a
      -- chunk: far below the 10 MB offered.
      assert.is_true(written < 400 * 1024, "dd got " .. tostring(written) .. " bytes in")
    end)
    os.execute("kill -9 " .. pid .. " " .. wpid .. " 2>/dev/null")
    assert(ok, err)
  end)

  it("fails a record on timeout when there is no on_timeout", function()
    local d = H.tmpdir()
    H.script(d, [[
local time = require "moonwait.time"
local M = {}
function M.async_invoke(r, ctx)
  time.sleep(r.d / 1000)
  io.stderr:write("resumed ", r.id, "\n")
  return { r }
end
return M
]])
    local t0 = os.time()
    local r = H.run("run --script script.lua --timeout 200",
      { dir = d, input = H.jsonl({ { id = 1, d = 0 }, { id = 2, d = 20000 }, { id = 3, d = 0 } }) })
    assert.equal(1, r.code)
    assert.matches("input line 2 %(record 2%) failed: timed out after 200 ms", r.err)
    assert.equal(1, #r.lines)                      -- record 1 came out
    assert.is_nil(r.err:find("resumed 2", 1, true)) -- the abandoned coroutine never resumed
    assert.is_true(os.time() - t0 < 10)
  end)

  it("emits on_timeout's result in place of a timed-out record", function()
    local d = H.tmpdir()
    H.script(d, [[
local time = require "moonwait.time"
local M = {}
function M.async_invoke(r, ctx)
  time.sleep(r.d / 1000)
  io.stderr:write("resumed ", r.id, "\n")
  return { r }
end
function M.on_timeout(r, ctx)
  return { { id = r.id, timed_out = true, seq = ctx.seq } }
end
return M
]])
    local r = H.run("run --script script.lua --timeout 150",
      { dir = d, input = H.jsonl({ { id = 1, d = 5000 }, { id = 2, d = 0 }, { id = 3, d = 5000 } }) })
    assert.equal(0, r.code, r.err)
    local out = H.decode_lines(r.out)
    assert.same({ id = 1, timed_out = true, seq = 1 }, out[1])
    assert.equal(2, out[2].id)
    assert.same({ id = 3, timed_out = true, seq = 3 }, out[3])
    assert.is_nil(r.err:find("resumed 1", 1, true))
  end)

  it("fails the record when on_timeout tries to yield", function()
    local d = H.tmpdir()
    H.script(d, [[
local time = require "moonwait.time"
local M = {}
function M.async_invoke(r, ctx) time.sleep(5); return { r } end
function M.on_timeout(r, ctx) time.sleep(0.01); return {} end
return M
]])
    local r = H.run("run --script script.lua --timeout 50", { dir = d, input = '{"id":1}\n' })
    assert.equal(1, r.code)
    assert.matches("on_timeout failed: .*script.lua:4: moonwait.time.sleep can only wait inside", r.err)
  end)

  it("emits every element of a multi-result and nothing for an empty one", function()
    local d = H.tmpdir()
    H.script(d, [[
local M = {}
function M.async_invoke(r, ctx)
  local out = {}
  for i = 1, r.n do out[i] = { id = r.id, k = i } end
  return out
end
return M
]])
    local r = H.run("run --script script.lua",
      { dir = d, input = H.jsonl({ { id = 1, n = 2 }, { id = 2, n = 0 }, { id = 3, n = 3 } }) })
    assert.equal(0, r.code, r.err)
    local got = {}
    for _, o in ipairs(H.decode_lines(r.out)) do got[#got + 1] = o.id .. ":" .. o.k end
    assert.same({ "1:1", "1:2", "3:1", "3:2", "3:3" }, got)
  end)

  it("fails a record that returns the wrong shape, saying what was expected", function()
    local d = H.tmpdir()
    for _, case in ipairs({
      { "return r", "returned a table that is not an array" },
      { "return", "returned nothing" },
      { "return 'x'", "returned a string" },
      { "return nil", "returned nil without an error message" },
    }) do
      H.script(d, "return { async_invoke = function(r, ctx) " .. case[1] .. " end }\n")
      local r = H.run("run --script script.lua", { dir = d, input = '{"id":1}\n' })
      assert.equal(1, r.code, case[1])
      assert.matches(case[2], r.err, 1, true)
      assert.matches("did you mean `return { record }`?", r.err, 1, true)
    end
  end)

  it("fails the run with the record's line number and traceback on an error", function()
    local d = H.tmpdir()
    H.script(d, [[
local M = {}
local function lookup(r)
  error("lookup failed for " .. r.id)
end
function M.async_invoke(r, ctx)
  if r.id == 3 then lookup(r) end
  return { r }
end
return M
]])
    local r = H.run("run --script script.lua",
      { dir = d, input = '{"id":1}\n\n{"id":2}\n{"id":3}\n{"id":4}\n' })
    assert.equal(1, r.code)
    assert.matches("input line 4 (record 3) failed: ", r.err, 1, true)
    assert.matches("script.lua:3: lookup failed for 3", r.err, 1, true)
    assert.matches("stack traceback:", r.err, 1, true)
    assert.matches("in function 'lookup'", r.err, 1, true)
    assert.equal(2, #r.lines)  -- records 1 and 2, nothing after the failure
  end)

  it("fails a record that returns nil, err with the message", function()
    local d = H.tmpdir()
    H.script(d, "return { async_invoke = function(r) return nil, 'no such user' end }\n")
    local r = H.run("run --script script.lua", { dir = d, input = '{"id":1}\n' })
    assert.equal(1, r.code)
    assert.matches("input line 1 (record 1) failed: no such user", r.err, 1, true)
  end)

  it("fails on a malformed line after emitting everything before it", function()
    local d = H.tmpdir()
    H.script(d, SLEEPER)
    local r = H.run("run --script script.lua --mode unordered",
      { dir = d, input = '{"id":1,"d":200}\n{"id":2,"d":10}\n{"id": oops}\n{"id":4}\n' })
    assert.equal(1, r.code)
    assert.matches("input line 3: malformed JSON", r.err, 1, true)
    assert.equal(2, #r.lines)
  end)

  it("rejects a malformed watermark line", function()
    local d = H.tmpdir()
    H.script(d, SLEEPER)
    local r = H.run("run --script script.lua", { dir = d, input = '{"$watermark": "soon"}\n' })
    assert.equal(1, r.code)
    assert.matches("input line 1: a watermark line must be exactly", r.err, 1, true)
  end)

  it("skips blank lines and counts them in line numbers", function()
    local d = H.tmpdir()
    H.script(d, [[return { async_invoke = function(r, ctx) return { { line = ctx.line, seq = ctx.seq } } end }]])
    local r = H.run("run --script script.lua", { dir = d, input = '\n{"a":1}\n   \n{"a":2}' })
    assert.equal(0, r.code, r.err)
    assert.same({ { line = 2, seq = 1 }, { line = 4, seq = 2 } }, H.decode_lines(r.out))
  end)

  it("chains two runs through a pipe, forwarding watermarks", function()
    local d = H.tmpdir()
    H.script(d, [[return { async_invoke = function(r) r.a = true; return { r } end }]], "a.lua")
    H.script(d, [[return { async_invoke = function(r) r.b = true; return { r } end }]], "b.lua")
    H.write(d .. "/in", H.jsonl({ { id = 1 }, { ["$watermark"] = 10 }, { id = 2 } }))
    local code, out, err = H.sh(string.format("cd %s && %s <in | %s", d,
      H.cmd("run --script a.lua"), H.cmd("run --script b.lua --mode unordered")))
    assert.equal(0, code, err)
    assert.same({ { id = 1, a = true, b = true }, { ["$watermark"] = 10 }, { id = 2, a = true, b = true } },
      H.decode_lines(out))
  end)

  it("drains everything in flight at end of input, then runs close", function()
    local d = H.tmpdir()
    H.script(d, [[
local time = require "moonwait.time"
local M = {}
local done = 0
function M.open(ctx) time.sleep(0.05); io.stderr:write("open\n") end
function M.async_invoke(r, ctx)
  time.sleep(0.2)
  done = done + 1
  return { r }
end
function M.close(ctx) time.sleep(0.01); io.stderr:write("close after ", done, "\n") end
return M
]])
    local r = H.run("run --script script.lua --capacity 50",
      { dir = d, input = H.jsonl(records(30, function() return nil end)) })
    assert.equal(0, r.code, r.err)
    assert.equal(30, #r.lines)
    assert.matches("^open\n", r.err)
    assert.matches("close after 30\n$", r.err)
  end)

  it("fails the run when open fails", function()
    local d = H.tmpdir()
    H.script(d, [[return { open = function() return nil, "no credentials" end,
      async_invoke = function(r) return { r } end }]])
    local r = H.run("run --script script.lua", { dir = d, input = '{"a":1}\n' })
    assert.equal(1, r.code)
    assert.matches("open failed: no credentials", r.err, 1, true)
    assert.equal("", r.out)
  end)

  it("generates watermarks from an event-time field", function()
    local d = H.tmpdir()
    H.script(d, [[return { async_invoke = function(r) return { { id = r.id } } end }]])
    local input = {
      { id = 1, t = { ms = 1000 } }, { id = 2, t = { ms = 1500 } }, { id = 3, t = { ms = 1200 } },
      { ["$watermark"] = 1100 }, -- stale: below the generated 1200
      { id = 4, t = { ms = 2000 } },
    }
    local r = H.run("run --script script.lua --event-time t.ms --max-out-of-orderness 300",
      { dir = d, input = H.jsonl(input) })
    assert.equal(0, r.code, r.err)
    assert.same({
      { id = 1 }, { ["$watermark"] = 700 }, { id = 2 }, { ["$watermark"] = 1200 },
      { id = 3 }, { id = 4 }, { ["$watermark"] = 1700 },
    }, H.decode_lines(r.out))
  end)

  it("fails on a record without the event-time field, naming the line", function()
    local d = H.tmpdir()
    H.script(d, [[return { async_invoke = function(r) return { r } end }]])
    local r = H.run("run --script script.lua --event-time ts",
      { dir = d, input = '{"ts":5}\n{"id":2}\n' })
    assert.equal(1, r.code)
    assert.matches("input line 2: event-time field 'ts' is missing or not a number", r.err, 1, true)
    assert.same({ { ts = 5 }, { ["$watermark"] = 5 } }, H.decode_lines(r.out))
  end)
end)
