-- spec/runaway_spec.lua: scripts that never yield (issue 10, item 11). A
-- per-entry CPU budget raises inside the spinning code, interpreted or
-- JIT-compiled; the record fails like any error and --on-error routes it.
-- A second SIGINT/SIGTERM ends the process even while the loop is blocked.
local H = require("spec.helpers")

local SPINS = [[
local M = {}
local function mark(name) local f = io.open(name, "w"); if f then f:close() end end
function M.async_invoke(r, ctx)
  if r.spin then mark("spinning") end
  if r.spin == "jit" then while true do end
  elseif r.spin == "interpreted" then jit.off(true, true); local x = 0; while true do x = x + 1 end
  elseif r.spin == "repeat" then repeat until false
  elseif r.spin == "cfunction" then while true do os.clock() end
  elseif r.spin == "strings" then while true do local s = string.rep("ab", 1000):gsub("a", "c") end
  elseif r.spin == "pcall" then while true do pcall(function() while true do end end) end
  elseif r.spin == "coroutine" then coroutine.wrap(function() while true do end end)()
  elseif r.spin == "ffi" then
    local ffi = require "ffi"; pcall(ffi.cdef, "int getpid(void);")
    while true do ffi.C.getpid() end
  end
  return { r }
end
return M
]]

local BUDGET_MSG = "exceeded the CPU budget of 200 ms without yielding"

-- Start moonwait in the background reading a FIFO that stays open; returns
-- the dir's pid (string) once the process is up.
local function start_bg(d, args, records)
  os.execute("mkfifo " .. d .. "/fifo")
  os.execute(string.format(
    "cd %s && { %s run %s --input fifo >out 2>err </dev/null & echo $! >pid; wait $!; echo $? >rc; } >/dev/null 2>&1 &",
    d, H.cmd(""), args))
  os.execute(string.format("cd %s && { (printf '%s'; sleep 60) >fifo & echo $! >wpid; }", d, records))
  return H.wait_for(function() return (H.read(d .. "/pid") or ""):match("%d+") end, 10)
end

local function stop_writer(d)
  os.execute("kill $(cat " .. d .. "/wpid) 2>/dev/null")
end

-- Start a run in d reading a FIFO fed from d/feed (appended to while it
-- runs), with a 200 ms budget and dead letters in d/dl. Returns its pid
-- and lines(name): the line count of d/name.
local function fifo_run(d)
  os.execute("mkfifo " .. d .. "/fifo")
  os.execute(string.format(
    "cd %s && { %s run --script script.lua --input fifo --cpu-budget 200 --on-error dead-letter --dead-letter dl >out 2>err </dev/null & echo $! >pid; wait $!; echo $? >rc; } >/dev/null 2>&1 &",
    d, H.cmd("")))
  os.execute(string.format("cd %s && { tail -n +1 -f feed >fifo & echo $! >wpid; }", d))
  local pid = H.wait_for(function() return (H.read(d .. "/pid") or ""):match("%d+") end, 10)
  local function lines(name) return #H.lines(H.read(d .. "/" .. name) or "") end
  return pid, lines
end

describe("runaway scripts", function()
  after_each(H.cleanup)

  it("a spinning record fails with the budget's message and the run goes on (--on-error dead-letter)", function()
    local d = H.tmpdir()
    H.script(d, SPINS)
    local input = H.jsonl({ { a = 1 }, { spin = "jit" }, { a = 2 }, { spin = "interpreted" }, { spin = "repeat" },
      { spin = "cfunction" }, { spin = "strings" }, { spin = "pcall" }, { spin = "coroutine" }, { spin = "ffi" },
      { a = 3 } })
    local r = H.run("run --script script.lua --cpu-budget 200 --on-error dead-letter --dead-letter dl.jsonl",
      { dir = d, input = input })
    assert.equal(0, r.code, r.err)
    assert.same({ { a = 1 }, { a = 2 }, { a = 3 } }, H.decode_lines(r.out))
    local dl = H.decode_lines(H.read(d .. "/dl.jsonl"))
    assert.equal(8, #dl)
    local kinds = {}
    for i, e in ipairs(dl) do
      kinds[i] = e.record.spin
      assert.matches(BUDGET_MSG, e.error, 1, true)
      assert.matches("script.lua:%d+: ", e.error) -- where it was spinning
      assert.is_false(e.timed_out)
    end
    assert.same({ "jit", "interpreted", "repeat", "cfunction", "strings", "pcall", "coroutine", "ffi" }, kinds)
  end)

  it("a spinning record is skipped with --on-error skip; with fail the run stops and names the budget", function()
    local d = H.tmpdir()
    H.script(d, SPINS)
    local input = H.jsonl({ { a = 1 }, { spin = "jit" }, { a = 2 } })
    local r = H.run("run --script script.lua --cpu-budget 200 --on-error skip", { dir = d, input = input })
    assert.equal(0, r.code, r.err)
    assert.same({ { a = 1 }, { a = 2 } }, H.decode_lines(r.out))
    r = H.run("run --script script.lua --cpu-budget 200", { dir = d, input = input })
    assert.equal(1, r.code)
    assert.same({ { a = 1 } }, H.decode_lines(r.out))
    assert.matches("input line 2 (record 2) failed: script.lua:5: " .. BUDGET_MSG, r.err, 1, true)
  end)

  it("is on by default with 1000 ms", function()
    local d = H.tmpdir()
    H.script(d, SPINS)
    local r = H.run("run --script script.lua --on-error skip", { dir = d, input = H.jsonl({ { spin = "jit" }, { a = 1 } }) })
    assert.equal(0, r.code, r.err)
    assert.same({ { a = 1 } }, H.decode_lines(r.out))
    r = H.run("run --script script.lua", { dir = d, input = H.jsonl({ { spin = "jit" } }) })
    assert.equal(1, r.code)
    assert.matches("exceeded the CPU budget of 1000 ms without yielding", r.err, 1, true)
  end)

  it("stops a spinning open, close, retry predicate and on_timeout", function()
    local d = H.tmpdir()
    H.script(d, [[return {
  open = function() while true do end end,
  async_invoke = function(r) return { r } end,
}]], "open.lua")
    local r = H.run("run --script open.lua --cpu-budget 200", { dir = d, input = '{"a":1}\n' })
    assert.equal(1, r.code)
    assert.matches(BUDGET_MSG, r.err, 1, true)
    assert.equal("", r.out)

    H.script(d, [[return {
  async_invoke = function(r) return { r } end,
  close = function() local x = 0; while true do x = x + 1 end end,
}]], "close.lua")
    r = H.run("run --script close.lua --cpu-budget 200", { dir = d, input = '{"a":1}\n' })
    assert.equal(1, r.code)
    assert.matches(BUDGET_MSG, r.err, 1, true)
    assert.same({ { a = 1 } }, H.decode_lines(r.out))

    H.script(d, [[return {
  async_invoke = function(r) return nil, "flaky" end,
  retry_on_error = function(err, ctx) while true do end end,
}]], "pred.lua")
    r = H.run("run --script pred.lua --cpu-budget 200 --retry fixed:3:1 --on-error dead-letter --dead-letter dl.jsonl",
      { dir = d, input = '{"a":1}\n{"a":2}\n' })
    assert.equal(0, r.code, r.err)
    local dl = H.decode_lines(H.read(d .. "/dl.jsonl"))
    assert.equal(2, #dl)
    assert.matches(BUDGET_MSG, dl[1].error, 1, true)

    H.script(d, [[local time = require "moonwait.time"
return {
  async_invoke = function(r) if r.slow then time.sleep(30) end; return { r } end,
  on_timeout = function(r) while true do end end,
}]], "ot.lua")
    r = H.run("run --script ot.lua --cpu-budget 200 --timeout 100 --on-error dead-letter --dead-letter dl2.jsonl",
      { dir = d, input = '{"slow":true}\n{"a":2}\n' })
    assert.equal(0, r.code, r.err)
    assert.same({ { a = 2 } }, H.decode_lines(r.out))
    dl = H.decode_lines(H.read(d .. "/dl2.jsonl"))
    assert.equal(1, #dl)
    assert.matches("on_timeout failed: .*" .. BUDGET_MSG, dl[1].error)
  end)

  it("moonwait check stops a script whose main chunk spins (the default budget)", function()
    local d = H.tmpdir()
    H.script(d, "local M = {}\nfunction M.async_invoke(r) return { r } end\nwhile true do end\nreturn M\n")
    local code, out = H.sh("timeout 20 " .. H.cmd("check " .. H.q(d .. "/script.lua")))
    assert.equal(2, code)
    assert.matches("FAIL  its main chunk returns within the CPU budget: ", out, 1, true)
    assert.matches("script.lua:3: exceeded the CPU budget of 1000 ms without yielding", out, 1, true)
  end)

  it("--cpu-budget 0 (or cpu_budget_ms = 0) turns it off: a long computation completes", function()
    local d = H.tmpdir()
    -- r.cpu seconds of CPU without yielding: 10 s for the budget to stop
    -- (so a slow machine or valgrind still stops it well before the end),
    -- 0.6 s for the computations that must complete
    H.script(d, [[return { async_invoke = function(r)
  local t = os.clock(); while os.clock() - t < (r.cpu or 0.6) do end
  return { r }
end }]])
    local r = H.run("run --script script.lua --cpu-budget 150", { dir = d, input = '{"cpu":10}\n' })
    assert.equal(1, r.code)
    assert.matches("exceeded the CPU budget of 150 ms without yielding", r.err, 1, true)
    r = H.run("run --script script.lua --cpu-budget 0", { dir = d, input = '{"a":1}\n' })
    assert.equal(0, r.code, r.err)
    assert.same({ { a = 1 } }, H.decode_lines(r.out))
    H.write(d .. "/pipeline.lua", 'return { script = "script.lua", cpu_budget_ms = 0 }')
    r = H.run("run pipeline.lua", { dir = d, input = '{"a":1}\n' })
    assert.equal(0, r.code, r.err)
    H.write(d .. "/pipeline.lua", 'return { script = "script.lua", cpu_budget_ms = -1 }')
    r = H.run("run pipeline.lua", { dir = d, input = '{"a":1}\n' })
    assert.equal(2, r.code)
    assert.matches("cpu_budget_ms", r.err, 1, true)
  end)

  it("SIGINT while a record spins: the budget ends it, then the drain proceeds", function()
    local d = H.tmpdir()
    H.script(d, SPINS)
    local pid = start_bg(d, "--script script.lua --cpu-budget 500 --on-error dead-letter --dead-letter dl.jsonl",
      '{"a":1}\\n{"spin":"jit"}\\n')
    assert.truthy(H.wait_for(function() return H.exists(d .. "/spinning") end, 20), "the record never started")
    os.execute("kill -INT " .. pid)
    local rc = H.wait_for(function() return H.read(d .. "/rc") end, 20)
    stop_writer(d)
    assert.truthy(rc, "moonwait did not exit")
    assert.equal("1", rc:match("%d+"))
    local err = H.read(d .. "/err")
    assert.matches("interrupted by SIGINT after input line 2", err, 1, true)
    assert.same({ { a = 1 } }, H.decode_lines(H.read(d .. "/out")))
    local dl = H.decode_lines(H.read(d .. "/dl.jsonl"))
    assert.equal(1, #dl)
    assert.matches("exceeded the CPU budget of 500 ms", dl[1].error, 1, true)
  end)

  it("follows hot reloads: the new generation's compiled loops are stopped, and the old one's after a rejected reload", function()
    local d = H.tmpdir()
    local function version(v)
      return ([[
local M = {}
function M.open() io.stderr:write("READY %d\n") end
function M.async_invoke(r)
  if r.spin then local x = 0; while true do x = x + %d end end
  r.v = %d
  return { r }
end
return M
]]):format(v, v, v)
    end
    H.script(d, version(1))
    H.write(d .. "/feed", '{"a":1}\n')
    local pid, lines = fifo_run(d)
    local function feed(s) local f = assert(io.open(d .. "/feed", "a")); f:write(s); f:close() end
    assert.truthy(H.wait_for(function() return lines("out") == 1 end, 60), "no first output")
    H.script(d, version(2))
    os.execute("kill -HUP " .. pid)
    assert.truthy(H.wait_for(function() return (H.read(d .. "/err") or ""):find("READY 2", 1, true) end, 60))
    feed('{"spin":true}\n{"a":2}\n')
    assert.truthy(H.wait_for(function() return lines("out") == 2 and lines("dl") == 1 end, 60), "generation 2 kept spinning")
    H.script(d, "return { async_invoke = function(r) return { r } end, open = function() return nil, 'no' end }\n")
    os.execute("kill -HUP " .. pid)
    assert.truthy(H.wait_for(function() return (H.read(d .. "/err") or ""):find("reload rejected", 1, true) end, 60))
    feed('{"spin":true}\n{"a":3}\n')
    assert.truthy(H.wait_for(function() return lines("out") == 3 and lines("dl") == 2 end, 60), "generation 2 kept spinning")
    stop_writer(d)
    local rc = H.wait_for(function() return H.read(d .. "/rc") end, 60)
    assert.equal("0", (rc or ""):match("%d+"), H.read(d .. "/err"))
    local outs = H.decode_lines(H.read(d .. "/out"))
    assert.same({ { a = 1, v = 1 }, { a = 2, v = 2 }, { a = 3, v = 2 } }, outs)
    for _, e in ipairs(H.decode_lines(H.read(d .. "/dl"))) do
      assert.matches(BUDGET_MSG, e.error, 1, true)
    end
  end)

  it("ends the run with status 1, naming the budget, when one C call holds a record far past it (it does not hang)", function()
    local d = H.tmpdir()
    -- A pattern that backtracks for hours inside one string.find: no hook
    -- fires inside a C function.
    H.script(d, [[
return { async_invoke = function(r)
  string.find(string.rep("a", 60), ".-.-.-.-.-.-.-.-.-.-.-.-b")
  return { r }
end }
]])
    local r = H.run("run --script script.lua --cpu-budget 100", { dir = d, input = H.jsonl({ { a = 1 } }) })
    assert.equal(1, r.code, r.err)
    assert.matches("a script on the main loop thread exceeded the CPU budget of 100 ms without yielding and "
      .. "could not be stopped after", r.err, 1, true)
  end)

  it("stops a compiled loop in the older generation's VM while it drains after a reload (every VM in line mode)", function()
    local d = H.tmpdir()
    -- Generation 1's record sleeps across the reload, then spins in a compiled
    -- loop in generation 1's VM, no longer the newest one.
    H.script(d, [[
local time = require "moonwait.time"
local M = {}
function M.open() io.stderr:write("READY 1\n") end
function M.async_invoke(r)
  if r.late_spin then
    time.sleep(1.5)
    local x = 0
    while true do x = x + 1 end
  end
  r.v = 1
  return { r }
end
return M
]])
    H.write(d .. "/feed", '{"a":1}\n{"late_spin":true}\n')
    local pid, lines = fifo_run(d)
    assert.truthy(H.wait_for(function() return lines("out") == 1 end, 60), "no first output")
    H.script(d, "return { async_invoke = function(r) r.v = 2; return { r } end, open = function() io.stderr:write('READY 2\\n') end }\n")
    os.execute("kill -HUP " .. pid)
    assert.truthy(H.wait_for(function() return (H.read(d .. "/err") or ""):find("READY 2", 1, true) end, 60))
    local f = assert(io.open(d .. "/feed", "a")); f:write('{"a":2}\n'); f:close()
    assert.truthy(H.wait_for(function() return lines("out") == 2 and lines("dl") == 1 end, 60),
      "generation 1's compiled loop kept spinning: " .. (H.read(d .. "/err") or ""))
    stop_writer(d)
    local rc = H.wait_for(function() return H.read(d .. "/rc") end, 60)
    assert.equal("0", (rc or ""):match("%d+"), H.read(d .. "/err"))
    assert.same({ { a = 1, v = 1 }, { a = 2, v = 2 } }, H.decode_lines(H.read(d .. "/out")))
    assert.matches(BUDGET_MSG, H.decode_lines(H.read(d .. "/dl"))[1].error, 1, true)
  end)

  for _, sig in ipairs({ { "INT", 130 }, { "TERM", 143 } }) do
    it("a second SIG" .. sig[1] .. " exits at once (" .. sig[2] .. ") while a script spins without a budget", function()
      local d = H.tmpdir()
      H.script(d, SPINS)
      local pid = start_bg(d, "--script script.lua --cpu-budget 0", '{"spin":"jit"}\\n')
      assert.truthy(H.wait_for(function() return H.exists(d .. "/spinning") end, 20), "the record never started")
      os.execute("kill -" .. sig[1] .. " " .. pid)
      os.execute("sleep 0.1")
      os.execute("kill -" .. sig[1] .. " " .. pid)
      local rc = H.wait_for(function() return H.read(d .. "/rc") end, 20)
      stop_writer(d)
      if not rc then os.execute("kill -9 " .. pid) end
      assert.truthy(rc, "moonwait did not exit")
      assert.equal(tostring(sig[2]), rc:match("%d+"))
      assert.matches("second SIG" .. sig[1] .. ": exiting at once", H.read(d .. "/err"), 1, true)
    end)
  end

  it("with --checkpoint-dir, a second signal exits 1: 143 would promise a checkpoint that was not written", function()
    local d = H.tmpdir()
    H.script(d, SPINS)
    H.write(d .. "/in", '{"a":1}\n{"spin":"jit"}\n')
    os.execute(string.format(
      "cd %s && { %s run --script script.lua --cpu-budget 0 --input in --output out --checkpoint-dir cp >/dev/null 2>err </dev/null & echo $! >pid; wait $!; echo $? >rc; } >/dev/null 2>&1 &",
      d, H.cmd("")))
    local pid = H.wait_for(function() return (H.read(d .. "/pid") or ""):match("%d+") end, 10)
    assert.truthy(H.wait_for(function() return H.exists(d .. "/spinning") end, 20), "the record never started")
    os.execute("kill -TERM " .. pid)
    os.execute("sleep 0.1")
    os.execute("kill -TERM " .. pid)
    local rc = H.wait_for(function() return H.read(d .. "/rc") end, 20)
    if not rc then os.execute("kill -9 " .. pid) end
    assert.truthy(rc, "moonwait did not exit")
    assert.equal("1", rc:match("%d+"))
    assert.matches("second SIGTERM: exiting at once", H.read(d .. "/err"), 1, true)
  end)
end)
