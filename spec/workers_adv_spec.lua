-- Adversarial cases of --workers (issue 16) and of the signals around a run
-- with workers: what a hostile peer or a careless supervisor does.
local H = require("helpers")

local function sighup_loop(pid, dir)
  -- Until the run has ended (its exit status written): a supervisor, or a
  -- config-management tool, asking for reloads in a loop.
  os.execute(string.format(
    "while [ ! -e %s/rc ] && kill -HUP %s 2>/dev/null; do sleep 0.01; done", dir, pid))
end

describe("--workers, signals", function()
  it("a SIGHUP while the first generation loads does not end the run", function()
    -- The main chunk's first load (the main thread's VM, before the reload
    -- handler is in) takes a while; a SIGHUP then killed the process (129).
    local d = H.tmpdir()
    H.script(d, [[
local f = io.open("loading", "r")
if not f then
  f = io.open("loading", "w") f:write("x") f:close()
  local t = os.clock() while os.clock() - t < 1.5 do end
else
  f:close()
end
return { async_invoke = function(r, ctx) return { { id = r.id, w = ctx.worker } } end }
]])
    H.write(d .. "/in", '{"id":1}\n{"id":2}\n')
    local pid, wait = H.start_run(d, "--script script.lua --input in --output res --workers 2 --cpu-budget 0")
    assert.truthy(H.wait_for(function() return H.read(d .. "/loading") end, 30))
    os.execute("kill -HUP " .. pid)
    local code, _, err = wait()
    assert.equal(0, code, err)
    assert.equal(2, #H.lines(H.read(d .. "/res") or ""))
  end)

  it("SIGHUPs in a loop while the run ends (a worker still busy, joined at the end) leave its exit status 0", function()
    -- The record on worker 2 spins past its timeout: on_timeout answers,
    -- the input ends and the run ends, but that worker takes its messages
    -- (discard, close, stop) only when the spin ends, and the main thread
    -- joins it after the reload handler is gone. A SIGHUP then ended the
    -- run with 129 after every record had been written.
    local d = H.tmpdir()
    H.script(d, [[
return {
  async_invoke = function(r, ctx)
    if ctx.worker ~= 1 then local t = os.clock() while os.clock() - t < 1.5 do end end
    return { { id = r.id } }
  end,
  on_timeout = function(r) return { { id = r.id, timed_out = true } } end,
}
]])
    H.write(d .. "/in", '{"id":1}\n')
    local pid, wait = H.start_run(d, "--script script.lua --input in --output res --workers 2 --cpu-budget 0 --timeout 200")
    assert.truthy(H.wait_for(function() return #H.lines(H.read(d .. "/res") or "") >= 1 end, 60))
    sighup_loop(pid, d)
    local code, _, err = wait()
    assert.equal(0, code, err)
    assert.same({ { id = 1, timed_out = true } }, H.decode_lines(H.read(d .. "/res")))
  end)
end)

describe("--workers, the per-record paths", function()
  it("time.sleep of a huge number of seconds sleeps until the record's deadline, on every worker", function()
    -- 1e308 s is past 2^64 ms: the conversion gave 0 and sleep returned at
    -- once; 2^53 s and the like still slept.
    local body = [[
local time = require "moonwait.time"
return {
  async_invoke = function(r, ctx)
    time.sleep(({ 1e308, 1e17, 2^64 / 1000, 2^53 })[r.id % 4 + 1])
    return { { id = r.id, woke = true } }
  end,
  on_timeout = function(r) return { { id = r.id, timed_out = true } } end,
}]]
    local input = {}
    for i = 1, 16 do input[#input + 1] = ('{"id":%d}'):format(i) end
    for _, n in ipairs({ 1, 3 }) do
      local r = H.run_script(body, table.concat(input, "\n") .. "\n", "--timeout 200 --capacity 16 --workers " .. n)
      assert.equal(0, r.code, r.err)
      local out = H.decode_lines(r.output)
      assert.equal(16, #out)
      for i, o in ipairs(out) do assert.same({ id = i, timed_out = true }, o) end
    end
  end)

  it("refuses M.retry delays past 2^40 ms, naming the field (a delay of 1e308 ms retried at once)", function()
    for _, f in ipairs({ "delay_ms = 1e308", "initial_delay_ms = 2^64", "max_delay_ms = math.huge",
                         "delay_ms = 2^40 + 1" }) do
      local backoff = f:find("^delay") and "fixed" or "exponential"
      local r = H.run_script(([[
return { retry = { max_attempts = 2, backoff = "%s", %s },
  retry_on_error = function() return true end,
  async_invoke = function(r, ctx) if ctx.attempt == 1 then return nil, "again" end return { r } end }]]):format(
        backoff, f), '{"id":1}\n', "--timeout 300 --workers 2")
      assert.equal(2, r.code, f .. ": " .. r.err)
      local name = f:match("^(%w+_?%w*_?%w*)")
      assert.truthy(r.err:find("retry." .. name .. " must be a number of ms from 0 to 1099511627776", 1, true), r.err)
    end
    -- 2^40 is accepted (--retry's bound): with the input still open, the
    -- retry waits its delay and the timeout answers (1e308 was 0: at once).
    local d = H.tmpdir()
    H.script(d, [[
return { retry = { max_attempts = 2, delay_ms = 2^40 }, retry_on_error = function() return true end,
  async_invoke = function(r, ctx) if ctx.attempt == 1 then return nil, "again" end return { r } end,
  on_timeout = function(r) return { { id = r.id, timed_out = true } } end }]])
    local code, out, err = H.sh(string.format("cd %s && (echo '{\"id\":1}'; sleep 1) | %s", d,
      H.cmd("run --script script.lua --input - --output - --timeout 200 --workers 2")))
    assert.equal(0, code, err)
    assert.equal('{"id":1,"timed_out":true}\n', out)
  end)
end)

describe("--workers, pooled connections at the end of a run", function()
  local servers = require("support.servers")
  local nginx
  setup(function() nginx = servers.nginx() end)
  teardown(function() if nginx then nginx.stop() end H.cleanup() end)

  it("idle keep-alive connections on a worker do not hold the run's end", function()
    -- A worker's pooled connections read and keep their idle timer (60 s
    -- for moonwait.http; none for a cosocket given back with 0): they kept
    -- the worker's loop, and so the run, alive that long (or for ever)
    -- after the last record. With --workers 1 the run ended at once.
    local body = ([[
local http = require "moonwait.http"
local socket = require "moonwait.socket"
return { async_invoke = function(r, ctx)
  local res, err = http.get("%s")
  if not res then return nil, err end
  local s = socket.tcp()
  assert(s:connect("127.0.0.1", %d))
  assert(s:setkeepalive(0))
  return { { id = r.id, status = res.status } }
end }]]):format(nginx.url("/user/1"), nginx.port)
    local input = {}
    for i = 1, 8 do input[#input + 1] = ('{"id":%d}'):format(i) end
    for _, n in ipairs({ 2, 4 }) do
      -- (a bound far below 60 s and far above the run: only a run held
      -- open by its pool reaches it)
      local r = H.run_script(body, table.concat(input, "\n") .. "\n",
        "--workers " .. n .. " --capacity 8 --cpu-budget 0", { timeout = 30 })
      assert.equal(0, r.code, "workers " .. n .. ": " .. r.err)
      local out = H.decode_lines(r.output)
      assert.equal(8, #out)
      for i, o in ipairs(out) do assert.same({ id = i, status = 200 }, o) end
    end
  end)
end)
