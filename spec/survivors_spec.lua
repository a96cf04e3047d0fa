-- Specs for the mutants of issue 17 that no other spec killed (see
-- scripts/mutants.list): each asserts a promise of the README that a
-- mutant breaks. Restores use a real checkpoint taken by SIGINT.
local H = require("helpers")
local servers = require("support.servers")

local function start(d, args, env)
  os.remove(d .. "/rc")
  os.execute(string.format("cd %s && { ( %s %s 2>log & echo $! >pid; wait $!; echo $? >rc ) & } >/dev/null 2>&1",
    d, env or "", H.cmd(args)))
end
local function wait_rc(d, secs)
  return tonumber(H.wait_for(function() return H.read(d .. "/rc") end, secs or 30))
end
local function count_lines(s) return #H.lines(s or "") end

-- Scenario A: three records in flight at SIGINT, taken with capacity 3 and a
-- 20 s timeout after ~1.5 s: id 1 and 3 running (budget used), id 2 failing
-- on every attempt (a back-off at the signal). Restarted with capacity 2
-- and a script that answers at once with what ctx says.
local A
local function scenario_a()
  if A then return A end
  local d = H.tmpdir()
  H.script(d, [[
local time = require "moonwait.time"
local retry = require "moonwait.retry"
local M = {}
M.retry_on_error = retry.any_error
function M.async_invoke(r, ctx)
  local p2 = io.open("phase2")
  if p2 then
    p2:close()
    return { { id = r.id, attempt = ctx.attempt, line = ctx.line, remaining = ctx.remaining_ms() } }
  end
  local f = io.open("calls", "a") f:write(r.id, " ", ctx.attempt, "\n") f:close()
  if r.id == 2 then error("flaky") end
  time.sleep(60)
end
return M
]])
  -- a blank first line: line numbers are not record numbers
  local lines = { "" }
  for i = 1, 8 do lines[#lines + 1] = '{"id":' .. i .. '}' end
  H.write(d .. "/in", table.concat(lines, "\n") .. "\n")
  local args = "run --script script.lua --input in --output out --timeout 20000 --retry fixed:100000:150 " ..
    "--checkpoint-dir cp --checkpoint-interval 600000"
  start(d, args .. " --capacity 3")
  -- id 2 has failed at least 3 times, and 1.5 s of budget are used
  assert.truthy(H.wait_for(function() return (H.read(d .. "/calls") or ""):find("\n2 3\n", 1, true) end, 20))
  -- the budget used is what is measured here: let 2 s of it pass
  os.execute("sleep 2")
  os.execute("kill -INT $(cat " .. d .. "/pid)")
  assert.equal(130, wait_rc(d))
  local last2 = 0
  for a in (H.read(d .. "/calls") or ""):gmatch("2 (%d+)\n") do last2 = math.max(last2, tonumber(a)) end
  H.write(d .. "/phase2", "")
  local code, _, err = H.sh(string.format("cd %s && %s", d, H.cmd(args .. " --capacity 2")))
  local out = {}
  for _, o in ipairs(H.decode_lines(H.read(d .. "/out") or "")) do out[o.id] = o end
  A = { code = code, err = err, out = out, last2 = last2, ckpt = H.read(d .. "/cp/checkpoint") }
  return A
end

describe("issue 17 survivors", function()
  -- no after_each cleanup: scenario A is shared by several tests
  teardown(H.cleanup)

  describe("a restore from a checkpoint", function()
    it("continues the attempt count: a record in back-off resumes at its next attempt", function()
      local a = scenario_a()
      assert.equal(0, a.code, a.err)
      assert.is_true(a.last2 >= 3)
      assert.equal(a.last2 + 1, a.out[2].attempt)
      assert.equal(1, a.out[1].attempt)
    end)

    it("keeps the used timeout budget: a record restored after 2 s has at most 18 s left", function()
      local a = scenario_a()
      assert.equal(0, a.code, a.err)
      for _, id in ipairs({ 1, 3 }) do
        assert.is_true(a.out[id].remaining <= 18500, "id " .. id .. " remaining " .. a.out[id].remaining)
        assert.is_true(a.out[id].remaining > 10000, "id " .. id .. " remaining " .. a.out[id].remaining)
      end
    end)

    it("keeps line numbers: records read after the restore carry their input line", function()
      local a = scenario_a()
      assert.equal(0, a.code, a.err)
      for id = 1, 8 do assert.equal(id + 1, a.out[id].line, "id " .. id) end
    end)

    it("takes back every stored record even beyond the capacity it restarts with", function()
      local a = scenario_a()
      assert.equal(0, a.code, a.err)
      for id = 1, 8 do assert.truthy(a.out[id], "id " .. id) end
    end)

    it("restores the event-time watermark generator: no watermark goes backwards", function()
      local d = H.tmpdir()
      H.script(d, [[
local time = require "moonwait.time"
return { async_invoke = function(r)
  local p2 = io.open("phase2")
  if p2 then p2:close() return { { id = r.id } } end
  local f = io.open("calls", "a") f:write(r.id, "\n") f:close()
  time.sleep(60)
end }
]])
      -- an explicit watermark lifts the generator's current above max_ts - bound
      H.write(d .. "/in", H.jsonl({ { id = 1, t = 1000 }, { id = 2, t = 5000 }, { ["$watermark"] = 9000 } }))
      local args = "run --script script.lua --input in --output out --event-time t --max-out-of-orderness 300 " ..
        "--capacity 10 --checkpoint-dir cp --checkpoint-interval 600000"
      start(d, args)
      assert.truthy(H.wait_for(function() return count_lines(H.read(d .. "/calls")) >= 2 end, 20))
      os.execute("kill -INT $(cat " .. d .. "/pid)")
      assert.equal(130, wait_rc(d))
      -- the input grows: a late record (below the highest timestamp), then a new one
      local f = io.open(d .. "/in", "ab")
      f:write(H.jsonl({ { id = 3, t = 3000 }, { id = 4, t = 9100 }, { id = 5, t = 9600 } }))
      f:close()
      H.write(d .. "/phase2", "")
      local code, _, err = H.sh(string.format("cd %s && %s", d, H.cmd(args)))
      assert.equal(0, code, err)
      assert.same({
        { id = 1 }, { ["$watermark"] = 700 }, { id = 2 }, { ["$watermark"] = 4700 }, { ["$watermark"] = 9000 },
        { id = 3 }, { id = 4 }, { id = 5 }, { ["$watermark"] = 9300 },
      }, H.decode_lines(H.read(d .. "/out")))
    end)
  end)

  it("runs on_timeout on the record's own generation after a reload", function()
    local d = H.tmpdir()
    local body = [[
local time = require "moonwait.time"
return {
  open = function(ctx) io.stderr:write("OPEN ", ctx.generation, "\n") end,
  async_invoke = function(r) time.sleep(60) end,
  on_timeout = function(r) return { { id = r.id, gen = GEN } } end,
}
]]
    H.script(d, (body:gsub("GEN", "1")))
    H.write(d .. "/in", H.jsonl({ { id = 1 } }))
    start(d, "run --script script.lua --input in --output out --timeout 4000")
    assert.truthy(H.wait_for(function() return (H.read(d .. "/log") or ""):find("OPEN 1", 1, true) end, 10))
    H.script(d, (body:gsub("GEN", "2")))
    os.execute("kill -HUP $(cat " .. d .. "/pid)")
    assert.truthy(H.wait_for(function() return (H.read(d .. "/log") or ""):find("OPEN 2", 1, true) end, 10),
      H.read(d .. "/log"))
    assert.equal(0, wait_rc(d), H.read(d .. "/log"))
    assert.same({ { id = 1, gen = 1 } }, H.decode_lines(H.read(d .. "/out")))
  end)

  it("setkeepalive with unread data returns nil, \"unread data\" and pools nothing", function()
    local redis = servers.redis()
    local d = H.tmpdir()
    H.script(d, [[
local socket = require "moonwait.socket"
return { async_invoke = function(rec)
  local s = socket.tcp()
  assert(s:connect("127.0.0.1", rec.port))
  assert(s:send("PING\r\nPING\r\n"))
  -- both replies are in the buffer once 14 bytes came; take back only the first line
  local both = assert(s:receive(14))
  assert(both == "+PONG\r\n+PONG\r\n")
  local s2 = socket.tcp()
  assert(s2:connect("127.0.0.1", rec.port))
  assert(s2:send("PING\r\nPING\r\n"))
  assert(s2:receive())                 -- "+PONG"
  assert(s2:receive(1))                -- the next reply has started: unread data is there
  local ok, err = s2:setkeepalive()
  s:close()
  return { { ok = ok == nil and "nil" or ok, err = err, pooled = socket.pool_count() } }
end }
]])
    local r = H.run("run --script script.lua", { dir = d, input = H.jsonl({ { port = redis.port } }) })
    redis.stop()
    assert.equal(0, r.code, r.err)
    assert.same({ ok = "nil", err = "unread data (127.0.0.1:" .. redis.port .. ")", pooled = 0 }, H.json.decode(r.lines[1]))
  end)

  it("pauses reading at the 4 MiB output high-water mark while the output does not drain", function()
    local d = H.tmpdir()
    -- each record writes 1 MiB of output; nobody reads the output FIFO yet
    H.script(d, [[
local big = string.rep("x", 1024 * 1024)
return { async_invoke = function(r)
  local f = io.open("calls", "a") f:write(r.id, "\n") f:close()
  return { { id = r.id, pad = big } }
end }
]])
    local recs = {}
    for i = 1, 40 do recs[i] = { id = i } end
    H.write(d .. "/in", H.jsonl(recs))
    os.execute("mkfifo " .. d .. "/fifo")
    start(d, "run --script script.lua --input in --output fifo --capacity 100")
    -- the writer opens the FIFO once a reader does: open it, read nothing
    os.execute(string.format("cd %s && { sleep 30 <fifo & echo $! >holder; } ", d))
    assert.truthy(H.wait_for(function() return count_lines(H.read(d .. "/calls")) >= 4 end, 20))
    -- the pause is an absence: give a run without it time to read all 40
    local n1
    H.wait_for(function()
      local n = count_lines(H.read(d .. "/calls"))
      local stable = n == n1
      n1 = n
      os.execute("sleep 0.3")
      return stable
    end, 5)
    local invoked = count_lines(H.read(d .. "/calls"))
    -- drain: every record arrives, in order
    os.execute(string.format("cd %s && cat fifo >out.txt", d))
    os.execute("kill $(cat " .. d .. "/holder) 2>/dev/null")
    assert.equal(0, wait_rc(d), H.read(d .. "/log"))
    assert.is_true(invoked <= 8, "records invoked while the output was stalled: " .. invoked)
    local ids = {}
    for id in (H.read(d .. "/out.txt") or ""):gmatch('"id":(%d+)') do ids[#ids + 1] = tonumber(id) end
    assert.equal(40, #ids)
  end)

  it("fsyncs the output and the dead-letter file before a checkpoint commits", function()
    local d = H.tmpdir()
    H.script(d, [[
return { async_invoke = function(r)
  if r.id % 2 == 0 then error("even") end
  return { r }
end }
]])
    local recs = {}
    for i = 1, 20 do recs[i] = { id = i } end
    H.write(d .. "/in", H.jsonl(recs))
    local code, _, err = H.sh(string.format(
      "cd %s && ASAN_OPTIONS=detect_leaks=0 strace -f -qq -e trace=openat,fsync,fdatasync,rename,renameat,renameat2 -o trace %s", d,
      H.cmd("run --script script.lua --input in --output out --on-error dead-letter --dead-letter dl " ..
        "--checkpoint-dir cp --checkpoint-interval 600000")))
    assert.equal(0, code, err)
    local trace = H.read(d .. "/trace")
    local fd_out = trace:match('openat%([^\n]-"out", [^\n]-= (%d+)\n')
    local fd_dl = trace:match('openat%([^\n]-"dl", [^\n]-= (%d+)\n')
    assert.truthy(fd_out and fd_dl, trace)
    -- the last checkpoint's commit: the rename onto cp/checkpoint
    local last_rename
    for pos in trace:gmatch('()rename[a-z0-9]*%([^\n]-checkpoint"') do last_rename = pos end
    assert.truthy(last_rename, trace)
    local before = trace:sub(1, last_rename)
    assert.truthy(before:find("fsync%(" .. fd_out .. "%)"), "no fsync of the output before the commit")
    assert.truthy(before:find("fsync%(" .. fd_dl .. "%)"), "no fsync of the dead letters before the commit")
  end)

  it("keys pooled HTTPS connections by TLS settings: an unverified connection never serves a verified request", function()
    local nginx = servers.nginx()
    local d = H.tmpdir()
    H.script(d, [[
local http = require "moonwait.http"
return { async_invoke = function(r)
  local a, aerr = http.get(r.url, { ssl_verify = false })
  local b, berr = http.get(r.url)   -- verification on (the default), no CA for the self-signed cert
  return { { a = a and a.status or aerr, b = b and b.status or berr } }
end }
]])
    local r = H.run("run --script script.lua", { dir = d,
      input = H.jsonl({ { url = "https://127.0.0.1:" .. nginx.tls_port .. "/user/1" } }) })
    nginx.stop()
    assert.equal(0, r.code, r.err)
    local o = H.json.decode(r.lines[1])
    assert.equal(200, o.a)
    assert.equal("string", type(o.b))
    assert.matches("^certificate verify failed: .* %(GET https://127%.0%.0%.1:" .. nginx.tls_port .. "/user/1%)$", o.b)
  end)
end)
