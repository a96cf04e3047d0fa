-- Input and output edges: line endings, limits, broken pipes, signals.
local H = require("helpers")

local PASS = [[return { async_invoke = function(r, ctx) return { r } end }]]

describe("input and output", function()
  after_each(H.cleanup)

  it("accepts CRLF line endings and a last line without a newline", function()
    local d = H.tmpdir()
    H.script(d, PASS)
    local r = H.run("run --script script.lua", { dir = d, input = '{"a":1}\r\n{"a":2}\r\n{"a":3}' })
    assert.equal(0, r.code, r.err)
    assert.same({ { a = 1 }, { a = 2 }, { a = 3 } }, H.decode_lines(r.out))
  end)

  it("writes objects with sorted keys, exact integers and shortest round-trip numbers", function()
    local d = H.tmpdir()
    H.script(d, [[
local mw = require "moonwait"
return { async_invoke = function(r)
  if r.bad then return { { x = 0/0 } } end
  return { { zeta = 1, alpha = { 3, 2, 1 }, mid = { b = mw.null, a = "x/y\n" }, f = 0.1, big = 1700000000123, e = {} } }
end }
]])
    local r = H.run("run --script script.lua", { dir = d, input = '{"id":1}\n' })
    assert.equal(0, r.code, r.err)
    assert.equal('{"alpha":[3,2,1],"big":1700000000123,"e":{},"f":0.1,"mid":{"a":"x/y\\n","b":null},"zeta":1}\n', r.out)
    r = H.run("run --script script.lua", { dir = d, input = '{"bad":true}\n' })
    assert.equal(1, r.code)
    assert.matches("cannot encode output record 1 as JSON: cannot encode NaN as JSON", r.err, 1, true)
  end)

  it("reads and writes files, including large ones across read chunks", function()
    local d = H.tmpdir()
    H.script(d, PASS)
    local lines = {}
    for i = 1, 20000 do lines[i] = '{"i":' .. i .. ',"pad":"' .. string.rep("p", 50) .. '"}' end
    H.write(d .. "/in", table.concat(lines, "\n") .. "\n")
    local r = H.run("run --script script.lua --input in --output out --mode unordered", { dir = d })
    assert.equal(0, r.code, r.err)
    local out = H.decode_lines(H.read(d .. "/out"))
    assert.equal(20000, #out)
    local seen = {}
    for _, o in ipairs(out) do seen[o.i] = true end
    for i = 1, 20000 do assert.is_true(seen[i]) end
  end)

  it("fails on a line over --max-line-bytes, naming the line", function()
    local d = H.tmpdir()
    H.script(d, PASS)
    local r = H.run("run --script script.lua --max-line-bytes 100",
      { dir = d, input = '{"a":1}\n{"a":"' .. string.rep("x", 300000) .. '"}\n{"a":3}\n' })
    assert.equal(1, r.code)
    assert.matches("input line 2: longer than the limit of 100 bytes", r.err, 1, true)
    assert.same({ { a = 1 } }, H.decode_lines(r.out))
  end)

  it("regression: a slow consumer no longer stalls the run past the output high-water mark", function()
    -- 100,000 records of ~110 bytes (11 MB) into a reader that waits 1 s
    -- before reading: reading pauses at 4 MiB of backlog and must resume.
    local d = H.tmpdir()
    H.script(d, PASS)
    local lines = {}
    for i = 1, 100000 do lines[i] = '{"i":' .. i .. ',"pad":"' .. string.rep("x", 100) .. '"}' end
    H.write(d .. "/in", table.concat(lines, "\n") .. "\n")
    local code, out, err = H.sh(string.format("cd %s && { %s --input in 2>err; echo $? >rc; } | (sleep 1; wc -l)",
      d, H.cmd("run --script script.lua")))
    assert.equal(0, code, err)
    assert.equal("100000", out:match("%d+"))
    assert.equal("0", H.read(d .. "/rc"):match("%d+"), H.read(d .. "/err"))
  end)

  it("stops quietly with status 141 when the output pipe's reader goes away", function()
    local d = H.tmpdir()
    H.script(d, PASS)
    local lines = {}
    for i = 1, 200000 do lines[i] = '{"i":' .. i .. '}' end
    H.write(d .. "/in", table.concat(lines, "\n") .. "\n")
    H.sh(string.format("cd %s && { %s --input in 2>err; echo $? >rc; } | head -c 10 >/dev/null",
      d, H.cmd("run --script script.lua")))
    -- as a Unix filter killed by SIGPIPE (README: "Exit status")
    assert.equal("141", H.read(d .. "/rc"):match("%d+"))
    assert.equal("", H.read(d .. "/err"))
  end)

  it("on SIGTERM stops reading, finishes what is in flight, and exits 1", function()
    local d = H.tmpdir()
    -- each record says it started, then holds until the test says "go"
    -- (after moonwait has taken the signal): three are in flight at the
    -- signal whatever the machine's load
    H.script(d, [[
local time = require "moonwait.time"
local function exists(p) local f = io.open(p) if f then f:close() return true end return false end
return {
  async_invoke = function(r, ctx)
    local f = io.open("started", "a") f:write(r.i, "\n") f:close()
    while not exists("go") do time.sleep(0.01) end
    return { r }
  end,
  close = function() io.stderr:write("closed\n") end,
}
]])
    os.execute("mkfifo " .. d .. "/fifo")
    os.execute(string.format(
      "cd %s && { %s run --script script.lua --input fifo --capacity 3 --timeout 600000 >out 2>err </dev/null & echo $! >pid; wait $!; echo $? >rc; } >/dev/null 2>&1 &",
      d, H.cmd("")))
    -- keep the FIFO open with 4 records written and no end of input
    os.execute(string.format("cd %s && { (printf '{\"i\":1}\\n{\"i\":2}\\n{\"i\":3}\\n{\"i\":4}\\n'; exec sleep 120) >fifo & echo $! >wpid; }", d))
    local pid = H.wait_for(function() return (H.read(d .. "/pid") or ""):match("%d+") end, 30)
    assert.truthy(pid)
    -- wait until the three records are in flight
    assert.truthy(H.wait_for(function() return #H.lines(H.read(d .. "/started") or "") == 3 end, 30),
      H.read(d .. "/err"))
    os.execute("kill -TERM " .. pid)
    assert.truthy(H.wait_for(function()
      return (H.read(d .. "/err") or ""):find("interrupted by SIGTERM", 1, true)
    end, 30), H.read(d .. "/err"))
    H.write(d .. "/go", "")
    local rc = H.wait_for(function() return H.read(d .. "/rc") end, 30)
    os.execute("kill $(cat " .. d .. "/wpid) 2>/dev/null")
    assert.truthy(rc, "moonwait did not exit")
    assert.equal("1", rc:match("%d+"))
    local err = H.read(d .. "/err")
    assert.matches("interrupted by SIGTERM after input line 3", err, 1, true)
    assert.matches("closed", err, 1, true)
    -- the three records in flight were finished and emitted; the fourth,
    -- already in the FIFO, was never started
    assert.same({ { i = 1 }, { i = 2 }, { i = 3 } }, H.decode_lines(H.read(d .. "/out")))
    assert.equal("1\n2\n3\n", H.read(d .. "/started"))
  end)


  it("writes a record's output while the input stays open (coalesced writes still go out)", function()
    -- Output waits at most a millisecond for more (64 KiB or 1 ms): a
    -- trickle of records is written as it comes, not at the end.
    local d = H.tmpdir()
    H.script(d, "return { async_invoke = function(r) return { r } end }")
    os.execute("mkfifo " .. d .. "/fifo")
    local pid = H.start_run(d, "--script script.lua --input fifo")
    os.execute(string.format("cd %s && { (printf '{\"i\":1}\\n'; exec sleep 120) >fifo & echo $! >wpid; }", d))
    local out = H.wait_for(function()
      local s = H.read(d .. "/out") or ""
      return s ~= "" and s
    end, 30)
    os.execute("kill $(cat " .. d .. "/wpid) 2>/dev/null; kill -TERM " .. pid .. " 2>/dev/null")
    assert.equal('{"i":1}\n', out)
  end)

  it("runs close after a failed record", function()
    local d = H.tmpdir()
    H.script(d, [[return {
  async_invoke = function(r) error("bad record") end,
  close = function() io.stderr:write("close ran\n") end,
}]])
    local r = H.run("run --script script.lua", { dir = d, input = '{"a":1}\n' })
    assert.equal(1, r.code)
    assert.matches("close ran", r.err, 1, true)
  end)
end)
