-- Promises the README makes that no other spec exercised (issue 17). Each
-- test asserts what the README says, and each was seen to fail on a
-- one-line mutation of the behaviour it names.
local H = require("helpers")
local S = require("support.servers")

-- Start moonwait in the background in d: its pid in d/pid, its exit status
-- in d/rc when it ends, its stderr in d/log.
local function start(d, args, env)
  os.remove(d .. "/rc")
  os.execute(string.format("cd %s && { ( %s %s 2>log & echo $! >pid; wait $!; echo $? >rc ) & } >/dev/null 2>&1",
    H.q(d), env or "", H.cmd(args)))
  assert.truthy(H.wait_for(function() return (H.read(d .. "/pid") or ""):match("%d+") end, 10))
  return tonumber(H.read(d .. "/pid"))
end
local function wait_rc(d, secs)
  return tonumber(H.wait_for(function() return (H.read(d .. "/rc") or ""):match("%d+") end, secs or 30))
end
local function run_in(d, args, env)
  return H.sh(string.format("cd %s && %s timeout 60 %s", H.q(d), env or "", H.cmd(args)))
end
local function count(s, pat)
  return select(2, s:gsub(pat, ""))
end

describe("promises: restore", function()
  after_each(H.cleanup)

  -- One run killed at a moment when a record waits in back-off (attempt 2
  -- or later), another has used part of its budget, the event-time
  -- generator has emitted a watermark, input lines and record numbers
  -- differ (blank lines), and input is left to read after the restart.
  it("continues the attempt count, the used budget, the watermark generator and the line numbers", function()
    local d = H.tmpdir()
    H.script(d, [[
local time = require "moonwait.time"
local M = {}
M.retry = { max_attempts = 4, backoff = "fixed", delay_ms = 600 }
M.retry_on_error = function() return true end
function M.async_invoke(r, ctx)
  local f = io.open("calls", "a")
  f:write(ctx.seq, " ", ctx.attempt, " ", ctx.remaining_ms(), " ", ctx.line, "\n")
  f:close()
  if r.kind == "retry" and ctx.attempt < 4 then return nil, "not yet" end
  if r.kind == "hang" then time.sleep(100) end
  r.line = ctx.line
  r.attempt = ctx.attempt
  return { r }
end
function M.on_timeout(r, ctx)
  r.timed_out = true
  r.line = ctx.line
  return { r }
end
return M
]])
    local input = table.concat({
      '{"id":1,"t":1000}',                -- 1  -> w0
      '',                                 -- 2
      '{"id":2,"t":5000,"kind":"hang"}',  -- 3  -> w4000
      '{"id":3,"t":4500,"kind":"retry"}', -- 4
      '',                                 -- 5
      '{"id":4,"t":4800}',                -- 6  (the queue is full: r2 w r3 r4)
      '',                                 -- 7
      '{"id":5,"t":4600}',                -- 8  no watermark: 3600 < 4000
      '{"id":6,"t":5900}',                -- 9  w4900
      '',                                 -- 10
      '{"id":7,"t":5950}',                -- 11 w4950
    }, "\n") .. "\n"
    local line_of = { 1, 3, 4, 6, 8, 9, 11 }
    H.write(d .. "/in", input)
    local common = "run --script script.lua --input in --capacity 4 --timeout 4000 " ..
      "--event-time t --max-out-of-orderness 1000"
    -- the uninterrupted run
    local code, _, err = run_in(d, common .. " --output ref")
    assert.equal(0, code, err)
    os.remove(d .. "/calls")
    local args = common .. " --output out --checkpoint-dir cp --checkpoint-interval 30"
    start(d, args)
    assert.truthy(H.wait_for(function()
      local c = H.read(d .. "/cp/checkpoint") or ""
      local att = tonumber(c:match("\nR 3 4 (%d+) "))
      local used = tonumber(c:match("\nR 2 3 %d+ (%d+) "))
      return att and att >= 2 and att <= 3 and used and used >= 500
    end, 20), "no checkpoint with record 3 in back-off and record 2 500 ms in")
    os.execute("kill -9 $(cat " .. d .. "/pid)")
    wait_rc(d)
    local ck = H.read(d .. "/cp/checkpoint")
    local att = tonumber(ck:match("\nR 3 4 (%d+) "))
    local used = tonumber(ck:match("\nR 2 3 %d+ (%d+) "))
    assert.equal(6, tonumber(ck:match("\ninput_line (%d+)")))
    local before = #H.lines(H.read(d .. "/calls"))
    code, _, err = run_in(d, args)
    assert.equal(0, code, err)
    -- the calls after the restart
    local after = {}
    for i, l in ipairs(H.lines(H.read(d .. "/calls"))) do
      if i > before then
        local seq, a, rem, line = l:match("^(%d+) (%d+) (%S+) (%d+)$")
        seq = tonumber(seq)
        after[seq] = after[seq] or { attempt = tonumber(a), remaining = tonumber(rem), line = tonumber(line) }
      end
    end
    -- attempt count: record 3 resumes at the stored attempt, not 1
    assert.truthy(after[3], "record 3 not invoked after the restart")
    assert.equal(att, after[3].attempt)
    -- used budget: record 2 resumes with what was left, not a fresh 4000 ms
    assert.truthy(after[2], "record 2 not invoked after the restart")
    assert.is_true(after[2].remaining <= 4000 - used + 20,
      ("record 2 had used %d ms, but got %d ms after the restart"):format(used, after[2].remaining))
    -- line numbers: ctx.line is the input line, before and after the restore
    for seq, c in pairs(after) do assert.equal(line_of[seq], c.line, "ctx.line of seq " .. seq) end
    -- watermarks and everything else: byte for byte the uninterrupted run
    local out = H.read(d .. "/out")
    assert.equal(H.read(d .. "/ref"), out)
    local recs = H.decode_lines(out)
    local wms = {}
    for _, o in ipairs(recs) do
      if o["$watermark"] then wms[#wms + 1] = o["$watermark"] else assert.equal(line_of[o.id], o.line) end
    end
    assert.same({ 0, 4000, 4900, 4950 }, wms)
    assert.is_true(recs[3].timed_out)
  end)
end)

describe("promises: checkpoints", function()
  after_each(H.cleanup)

  it("fsyncs the output and the dead-letter file before every checkpoint is renamed into place", function()
    local d = H.tmpdir()
    H.script(d, [[
local time = require "moonwait.time"
return { async_invoke = function(r)
  time.sleep(0.005)
  if r.id % 3 == 0 then return nil, "bad" end
  return { r }
end }
]])
    local lines = {}
    for i = 1, 300 do lines[i] = '{"id":' .. i .. '}' end
    H.write(d .. "/in", table.concat(lines, "\n") .. "\n")
    local code, _, err = H.sh(string.format(
      "cd %s && ASAN_OPTIONS=detect_leaks=0 strace -f -y -qq -o trace -e trace=fsync,fdatasync,rename,renameat,renameat2 %s",
      H.q(d), H.cmd("run --script script.lua --input in --output out --on-error dead-letter --dead-letter dl " ..
        "--capacity 5 --checkpoint-dir cp --checkpoint-interval 20")))
    assert.equal(0, code, err)
    local trace = H.read(d .. "/trace")
    -- The worker thread fsyncs and then renames, so a rename's fsyncs are
    -- the calls seen before it; with -f, a call another thread interrupts
    -- is logged as "fsync(6</path/dl> <unfinished ...>" and its result on
    -- a later line, so the call is matched without its "= 0" (a failed
    -- fsync fails the run, and the exit code is checked above).
    local synced, renames = {}, 0
    for l in trace:gmatch("[^\n]+") do
      local path = l:match("f%a*sync%(%d+<([^>]*)>")
      if path then synced[path:match("[^/]*$")] = true end
      if l:match("rename%a*%(.-checkpoint%.tmp%.[^\"]*\", .-/checkpoint\"") then
        renames = renames + 1
        assert.is_true(synced.out, "checkpoint " .. renames .. " renamed before the output was fsynced")
        assert.is_true(synced.dl, "checkpoint " .. renames .. " renamed before the dead-letter file was fsynced")
        synced = {}
      end
    end
    assert.is_true(renames >= 3, "only " .. renames .. " checkpoints:\n" .. trace)
  end)
end)

describe("promises: checkpoint refusals (exit 2, before any file is touched)", function()
  after_each(H.cleanup)

  local function setup()
    local d = H.tmpdir()
    H.script(d, 'return { async_invoke = function(r) if r.id == 2 then return nil, "no" end return { r } end }\n')
    H.write(d .. "/in", '{"id":1}\n{"id":2}\n{"id":3}\n')
    H.write(d .. "/in2", '{"id":1}\n{"id":2}\n{"id":3}\n')
    return d
  end

  it("a FIFO as the input, the output or the dead-letter file", function()
    local d = setup()
    os.execute("cd " .. d .. " && mkfifo fifo")
    -- a writer that would unblock an open of the FIFO for reading, bounded in time
    os.execute("cd " .. d .. " && { timeout 5 sh -c 'cat in >fifo' & } 2>/dev/null")
    local code, _, err = run_in(d, "run --script script.lua --input fifo --output out --checkpoint-dir cp")
    assert.equal(2, code, err)
    assert.matches("--checkpoint-dir needs a regular input file", err, 1, true)
    assert.is_false(H.exists(d .. "/out"), "the output was created")
    assert.is_false(H.exists(d .. "/cp"), "the checkpoint dir was created")
    -- an output FIFO cannot be truncated to a committed length either
    os.execute("cd " .. d .. " && { timeout 5 cat fifo >/dev/null & } 2>/dev/null")
    code, _, err = run_in(d, "run --script script.lua --input in --output fifo --checkpoint-dir cp")
    assert.equal(2, code, err)
    assert.matches("pipes and FIFOs cannot be rewound or truncated", err, 1, true)
    code, _, err = run_in(d, "run --script script.lua --input in --output out --on-error dead-letter " ..
      "--dead-letter fifo --checkpoint-dir cp")
    assert.equal(2, code, err)
    assert.matches("pipes and FIFOs cannot be rewound or truncated", err, 1, true)
    assert.is_false(H.exists(d .. "/out"), "the output was created")
  end)

  it("another input or another dead-letter file than the checkpoint's", function()
    local d = setup()
    local args = "run --script script.lua --input in --output out --on-error dead-letter --dead-letter dl --checkpoint-dir cp"
    local code, _, err = run_in(d, args)
    assert.equal(0, code, err)
    local out, dl = H.read(d .. "/out"), H.read(d .. "/dl")
    code, _, err = run_in(d, (args:gsub("--input in", "--input in2")))
    assert.equal(2, code, err)
    assert.matches("belongs to another pipeline", err, 1, true)
    code, _, err = run_in(d, (args:gsub("--dead%-letter dl", "--dead-letter dl2")))
    assert.equal(2, code, err)
    assert.matches("belongs to another pipeline", err, 1, true)
    assert.is_false(H.exists(d .. "/dl2"), "the other dead-letter file was created")
    assert.equal(out, H.read(d .. "/out"))
    assert.equal(dl, H.read(d .. "/dl"))
    -- the same pipeline again: completed, a no-op that says so
    code, _, err = run_in(d, args)
    assert.equal(0, code, err)
    assert.matches("already completed", err, 1, true)
  end)
end)

describe("promises: command line and environment", function()
  after_each(H.cleanup)

  it("--flag=value works like --flag value", function()
    local r = H.run_script([[
local time = require "moonwait.time"
local inflight, most = 0, 0
return { async_invoke = function(rec)
  inflight = inflight + 1
  if inflight > most then most = inflight end
  time.sleep(rec.id == 4 and 1 or 0.01)      -- 4 times out (and never decrements: it comes last)
  inflight = inflight - 1
  rec.most = most
  return { rec }
end }
]], '{"id":1}\n{"id":2}\n{"id":3}\n{"id":4}\n', "--capacity=1 --timeout=300 --on-error=dead-letter --dead-letter=dl --mode=unordered")
    assert.equal(0, r.code, r.err)
    local out = H.decode_lines(r.output)
    assert.equal(3, #out)
    for _, o in ipairs(out) do assert.equal(1, o.most) end
    local dl = H.decode_lines(H.read(r.dir .. "/dl"))
    assert.equal(1, #dl)
    assert.equal(4, dl[1].line)
    assert.is_true(dl[1].timed_out)
  end)

  it("MOONWAIT_LOG_LEVEL filters moonwait.log (default info)", function()
    local body = [[
local log = require "moonwait.log"
return { async_invoke = function(r)
  log.debug("D-line") log.info("I-line") log.warn("W-line") log.error("E-line")
  return { r }
end }
]]
    local r = H.run_script(body, '{"a":1}\n')
    assert.equal(0, r.code, r.err)
    assert.is_nil(r.err:find("D-line", 1, true))
    assert.truthy(r.err:find("I-line", 1, true))
    assert.truthy(r.err:find("E-line", 1, true))
    r = H.run_script(body, '{"a":1}\n', "", { env = "export MOONWAIT_LOG_LEVEL=warn; " })
    assert.equal(0, r.code, r.err)
    assert.is_nil(r.err:find("D-line", 1, true))
    assert.is_nil(r.err:find("I-line", 1, true))
    assert.truthy(r.err:find("W-line", 1, true))
    assert.truthy(r.err:find("E-line", 1, true))
    r = H.run_script(body, '{"a":1}\n', "", { env = "export MOONWAIT_LOG_LEVEL=debug; " })
    assert.truthy(r.err:find("D-line", 1, true))
    r = H.run_script(body, '{"a":1}\n', "", { env = "export MOONWAIT_LOG_LEVEL=error; " })
    assert.is_nil(r.err:find("W-line", 1, true))
    assert.truthy(r.err:find("E-line", 1, true))
  end)

  it("MOONWAIT_LUA_DIR overrides where the shipped Lua modules are", function()
    local lua = H.tmpdir()
    assert.equal(0, (H.sh("cp -r lua/moonwait " .. H.q(lua) .. "/")))
    local retry = H.read(lua .. "/moonwait/retry.lua")
    H.write(lua .. "/moonwait/retry.lua", (retry:gsub("\nreturn M%s*$", '\nM.from_env_dir = true\nreturn M\n')))
    assert.truthy(H.read(lua .. "/moonwait/retry.lua"):find("from_env_dir", 1, true))
    local body = [[
local retry = require "moonwait.retry"
return { async_invoke = function(r) r.marked = retry.from_env_dir == true return { r } end }
]]
    local r = H.run_script(body, '{"a":1}\n', "", { env = "export MOONWAIT_LUA_DIR=" .. H.q(lua) .. "; " })
    assert.equal(0, r.code, r.err)
    assert.equal('{"a":1,"marked":true}\n', r.output)
    r = H.run_script(body, '{"a":1}\n')
    assert.equal(0, r.code, r.err)
    assert.equal('{"a":1,"marked":false}\n', r.output)
  end)

  for _, mode in ipairs({ "skip", "dead-letter --dead-letter dl" }) do
    it("a line over --max-line-bytes fails the run under --on-error " .. mode, function()
      local long = '{"pad":"' .. string.rep("x", 200) .. '"}'
      local r = H.run_script('return { async_invoke = function(r) return { r } end }\n',
        '{"id":1}\n' .. long .. '\n{"id":3}\n', "--max-line-bytes 100 --on-error " .. mode)
      assert.equal(1, r.code, r.err)
      assert.matches("input line 2: longer than the limit of 100 bytes", r.err, 1, true)
      assert.equal('{"id":1}\n', r.output)
      if mode ~= "skip" then assert.equal("", H.read(r.dir .. "/dl") or "") end
    end)
  end
end)

describe("promises: retries", function()
  after_each(H.cleanup)

  it("ctx.last_error is the previous attempt's error, and nil after a retry on a result", function()
    local r = H.run_script([[
local seen = {}
return {
  retry = { max_attempts = 4, backoff = "fixed", delay_ms = 1 },
  retry_on_error = function() return true end,
  retry_on_result = function(out) return #out == 0 end,
  async_invoke = function(r, ctx)
    seen[ctx.attempt] = ctx.last_error or "nil"
    if ctx.attempt == 1 then return nil, "boom" end
    if ctx.attempt == 2 then return {} end
    r.seen = seen
    return { r }
  end,
}
]], '{"id":1}\n')
    assert.equal(0, r.code, r.err)
    assert.same({ id = 1, seen = { "nil", "boom", "nil" } }, H.decode_lines(r.output)[1])
  end)

  it("full jitter: delays are uniform in [0, cap], end to end", function()
    local r = H.run_script([[
local time = require "moonwait.time"
local retry = require "moonwait.retry"
local last = {}
return {
  retry_on_error = retry.any_error,
  async_invoke = function(r, ctx)
    local now = time.now()
    local f = io.open("delays", "a")
    if last[r.id] then f:write(string.format("%d\n", math.floor((now - last[r.id]) * 1000 + 0.5))) end
    f:close()
    last[r.id] = now
    if ctx.attempt < 5 then return nil, "again" end
    return { r }
  end,
}
]], H.jsonl((function() local t = {} for i = 1, 15 do t[i] = { id = i } end return t end)()),
      "--capacity 15 --timeout 20000 --retry exponential:5:200:200:1:full")
    assert.equal(0, r.code, r.err)
    local delays = {}
    for v in H.read(r.dir .. "/delays"):gmatch("(%d+)\n") do delays[#delays + 1] = tonumber(v) end
    assert.equal(60, #delays)
    local low, distinct, seen = 0, 0, {}
    for _, v in ipairs(delays) do
      assert.is_true(v >= 0 and v <= 200 + 60, "delay " .. v .. " outside [0, 200]")
      if v < 100 then low = low + 1 end
      if not seen[v] then seen[v] = true; distinct = distinct + 1 end
    end
    -- uniform: about half below 100 ms (P(fewer than 12 of 60) < 1e-6)
    assert.is_true(low >= 12, low .. " of 60 delays below 100 ms: " .. table.concat(delays, " "))
    assert.is_true(distinct >= 20, distinct .. " distinct delays")
  end)
end)

describe("promises: on_timeout", function()
  after_each(H.cleanup)

  it("gets a fresh copy of the record as it was read", function()
    local line = '{"id":7, "v":1.50, "tags":["a"], "o":{}}'
    local r = H.run_script([[
local time = require "moonwait.time"
return {
  async_invoke = function(r)
    r.id = nil
    r.v = 2
    r.tags[1] = "changed"
    r.added = true
    time.sleep(10)
    return { r }
  end,
  on_timeout = function(r) return { r } end,
}
]], line .. "\n", "--timeout 200")
    assert.equal(0, r.code, r.err)
    assert.equal(line .. "\n", r.output)
  end)
end)

describe("promises: hot reload", function()
  after_each(H.cleanup)

  -- moonwait reading from a producer that writes `first`, waits for the
  -- file `go` in d, then writes `second`.
  local function start_fed(d, first, second, args)
    H.write(d .. "/first", first)
    H.write(d .. "/second", second)
    os.remove(d .. "/rc")
    os.execute(string.format("cd %s && { ( { cat first; i=0; while [ ! -e go ] && [ $i -lt 600 ]; do sleep 0.05; " ..
      "i=$((i+1)); done; cat second; } | %s 2>log & echo $! >pid; wait $!; echo $? >rc ) & } >/dev/null 2>&1",
      H.q(d), H.cmd(args)))
    assert.truthy(H.wait_for(function() return (H.read(d .. "/pid") or ""):match("%d+") end, 10))
  end
  local function reload(d, body)
    H.script(d, body)
    os.execute("kill -HUP $(cat " .. d .. "/pid)")
    assert.truthy(H.wait_for(function() return (H.read(d .. "/log") or ""):find("generation 2 loaded", 1, true) end, 10),
      H.read(d .. "/log"))
  end

  it("on_timeout and the retry predicates run on the record's own generation", function()
    local d = H.tmpdir()
    local v = [[
local time = require "moonwait.time"
local GEN = "%s"
local function mark(what) local f = io.open(what, "a") f:write(GEN, "\n") f:close() end
return {
  retry = { max_attempts = 3, backoff = "fixed", delay_ms = 10 },
  retry_on_error = function() mark("pred") return GEN == "v1" end,
  async_invoke = function(r, ctx)
    mark("started" .. r.id)
    if r.id == 1 then time.sleep(100) end
    while not io.open("go") do time.sleep(0.02) end
    if ctx.attempt == 1 then return nil, "once" end
    r.gen = GEN
    r.attempt = ctx.attempt
    return { r }
  end,
  on_timeout = function(r) mark("timeout") r.gen = GEN r.timed_out = true return { r } end,
}
]]
    H.script(d, v:format("v1"))
    start_fed(d, '{"id":1}\n{"id":2}\n', '{"id":3}\n',
      "run --script script.lua --output out --timeout 4000 --on-error dead-letter --dead-letter dl")
    assert.truthy(H.wait_for(function() return H.exists(d .. "/started1") and H.exists(d .. "/started2") end, 10))
    reload(d, v:format("v2"))
    assert.is_false(H.exists(d .. "/timeout"), "record 1 timed out before the reload: too slow a machine")
    H.write(d .. "/go", "")
    assert.equal(0, wait_rc(d), H.read(d .. "/log"))
    local out = H.decode_lines(H.read(d .. "/out"))
    assert.same({
      { id = 1, gen = "v1", timed_out = true },
      { id = 2, gen = "v1", attempt = 2 },
    }, out)
    -- record 3 started on v2, whose predicate says no
    local dl = H.decode_lines(H.read(d .. "/dl"))
    assert.equal(1, #dl)
    assert.same({ id = 3 }, dl[1].record)
    assert.equal(1, dl[1].attempts)
    -- one predicate call each, on its own generation (in either order)
    local pred = H.lines(H.read(d .. "/pred"))
    table.sort(pred)
    assert.same({ "v1", "v2" }, pred)
  end)

  it("a failing export_state does not block the reload: ctx.previous is nil", function()
    local d = H.tmpdir()
    H.script(d, [[
return {
  export_state = function() error("cannot export") end,
  async_invoke = function(r) r.gen = 1 return { r } end,
}
]])
    start_fed(d, '{"id":1}\n', '{"id":2}\n', "run --script script.lua --output out")
    assert.truthy(H.wait_for(function() return H.read(d .. "/out") ~= "" and H.read(d .. "/out") end, 10))
    reload(d, [[
local prev = "unset"
return {
  open = function(ctx) prev = ctx.previous == nil and "nil" or "set" end,
  async_invoke = function(r) r.gen = 2 r.prev = prev return { r } end,
}
]])
    H.write(d .. "/go", "")
    assert.equal(0, wait_rc(d), H.read(d .. "/log"))
    assert.equal('{"id":1,"gen":1}\n{"id":2,"gen":2,"prev":"nil"}\n', H.read(d .. "/out"))
    assert.matches("cannot export", H.read(d .. "/log"), 1, true)
    assert.is_nil(H.read(d .. "/log"):find("rejected", 1, true))
  end)

  it("--retry still overrides M.retry after a reload", function()
    local d = H.tmpdir()
    local v = [[
return {
  retry = { max_attempts = %d, backoff = "fixed", delay_ms = 1 },
  retry_on_error = function() return true end,
  async_invoke = function(r, ctx) return nil, "gen %d attempt " .. ctx.attempt end,
}
]]
    H.script(d, v:format(7, 1))
    start_fed(d, '{"id":1}\n', '{"id":2}\n',
      "run --script script.lua --output out --retry fixed:2:1 --on-error dead-letter --dead-letter dl")
    assert.truthy(H.wait_for(function() return (H.read(d .. "/dl") or "") ~= "" end, 10))
    reload(d, v:format(5, 2))
    H.write(d .. "/go", "")
    assert.equal(0, wait_rc(d), H.read(d .. "/log"))
    local dl = H.decode_lines(H.read(d .. "/dl"))
    assert.equal(2, #dl)
    assert.equal(2, dl[1].attempts)
    assert.equal(2, dl[2].attempts)
    assert.matches("^gen 2 attempt 2", dl[2].error)
  end)
end)

describe("promises: HTTP and cosockets", function()
  after_each(H.cleanup)

  -- A stale pooled connection (retried once for GET, never for POST):
  -- spec/mutant_kills_spec.lua, with faultpeer's close-on-reuse mode.
  it("setkeepalive refuses a connection with unread data; max_buffer bounds a line", function()
    S.with_faultpeer("once", "first\\nsecond\\n0123456789abcdef0123\\n", function(peer)
      local r = H.run_script(([[
local socket = require "moonwait.socket"
local time = require "moonwait.time"
return { async_invoke = function(rec)
  local s = socket.tcp()
  assert(s:connect("127.0.0.1", %d))
  s:send("hi\n")
  rec.line = s:receive()
  time.sleep(0.1)                                  -- the rest has arrived
  local ok, err = s:setkeepalive(10000, 4)
  rec.ok = ok == nil and "nil" or tostring(ok)
  rec.err = err
  rec.pooled = require("moonwait").runtime_stats().pooled
  local _, after = s:receive()                      -- "every other error closes it"
  rec.after = after
  local s2 = socket.tcp()
  s2:setoption("max_buffer", 16)
  assert(s2:connect("127.0.0.1", %d))
  s2:send("hi\n")
  assert(s2:receive() == "first" and s2:receive() == "second")
  local l, e2 = s2:receive()
  rec.long = l or e2
  return { rec }
end }
]]):format(peer.port, peer.port), '{"id":1}\n')
      assert.equal(0, r.code, r.err)
      local at = " (127.0.0.1:" .. peer.port .. ")"
      assert.same({ id = 1, line = "first", ok = "nil", err = "unread data" .. at, pooled = 0, after = "closed" .. at,
        long = "buffer too large" .. at }, H.decode_lines(r.output)[1])
    end)
  end)

  it("an idle pooled connection is closed when the peer sends data, closes, or its idle time ends", function()
    S.with_faultpeer("drip", function(drip)
    S.with_faultpeer("echo-lines", function(echo)
      local d = H.tmpdir()
      H.write(d .. "/in", '{"id":1}\n')
      H.script(d, ([[
local socket = require "moonwait.socket"
local time = require "moonwait.time"
local mw = require "moonwait"
local function pooled() return mw.runtime_stats().pooled end
local function wait_pooled(n) for _ = 1, 100 do if pooled() == n then return n end time.sleep(0.02) end return pooled() end
return { async_invoke = function(rec)
  local res = {}
  -- peer data: the drip peer sends a body byte 100 ms after its headers
  local s = socket.tcp()
  assert(s:connect("127.0.0.1", %d))
  s:send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
  local head = s:receiveuntil("\r\n\r\n")
  assert(head())
  assert(s:setkeepalive(60000, 4))
  res[#res + 1] = pooled()
  res[#res + 1] = wait_pooled(0)
  -- idle time: 150 ms
  s = socket.tcp()
  assert(s:connect("127.0.0.1", %d))
  s:send("x\n") assert(s:receive())
  assert(s:setkeepalive(150, 4))
  res[#res + 1] = pooled()
  time.sleep(0.05)
  res[#res + 1] = pooled()
  res[#res + 1] = wait_pooled(0)
  -- peer close: the echo peer is stopped by the test
  s = socket.tcp()
  assert(s:connect("127.0.0.1", %d))
  s:send("x\n") assert(s:receive())
  assert(s:setkeepalive(60000, 4))
  res[#res + 1] = pooled()
  local f = io.open("stop-echo", "w") f:close()
  res[#res + 1] = wait_pooled(0)
  rec.pooled = res
  return { rec }
end }
]]):format(drip.port, echo.port, echo.port))
      start(d, "run --script script.lua --input in --output out")
      assert.truthy(H.wait_for(function() return H.exists(d .. "/stop-echo") end, 20), H.read(d .. "/log"))
      echo.stop()
      assert.equal(0, wait_rc(d), H.read(d .. "/log"))
      assert.same({ 1, 0, 1, 1, 0, 1, 0 }, H.decode_lines(H.read(d .. "/out"))[1].pooled)
    end)
    end)
  end)
end)

describe("promises: signals without --checkpoint-dir", function()
  after_each(H.cleanup)

  it("the first SIGINT drains what is in flight and exits 1 naming the line; a second exits at once", function()
    local d = H.tmpdir()
    H.script(d, [[
local time = require "moonwait.time"
return { async_invoke = function(r)
  local f = io.open("calls", "a") f:write(r.id, "\n") f:close()
  time.sleep(r.slow and 30 or 0.3)
  return { r }
end }
]])
    local lines = {}
    for i = 1, 100 do lines[i] = '{"id":' .. i .. '}' end
    H.write(d .. "/in", table.concat(lines, "\n") .. "\n")
    start(d, "run --script script.lua --input in --output out --capacity 5")
    assert.truthy(H.wait_for(function() return #H.lines(H.read(d .. "/calls") or "") >= 5 end, 10))
    os.execute("kill -INT $(cat " .. d .. "/pid)")
    assert.equal(1, wait_rc(d))
    local called = #H.lines(H.read(d .. "/calls"))
    local out = H.decode_lines(H.read(d .. "/out"))
    assert.is_true(called < 100)
    assert.equal(called, #out, "records in flight were not all emitted")
    for i, o in ipairs(out) do assert.equal(i, o.id) end
    assert.matches("line " .. called, H.read(d .. "/log"), 1, true)
    -- a second signal: records that would take 30 s are not waited for
    H.write(d .. "/in", '{"id":1,"slow":true}\n{"id":2,"slow":true}\n')
    os.remove(d .. "/calls")
    start(d, "run --script script.lua --input in --output out --capacity 5")
    assert.truthy(H.wait_for(function() return #H.lines(H.read(d .. "/calls") or "") >= 2 end, 10))
    os.execute("kill -INT $(cat " .. d .. "/pid)")
    os.execute("sleep 0.2")
    assert.is_nil((H.read(d .. "/rc") or ""):match("%d+"), "the first SIGINT did not wait for the records")
    os.execute("kill -INT $(cat " .. d .. "/pid)")
    assert.equal(130, wait_rc(d, 5)) -- 128 + SIGINT (README: exit status)
  end)
end)

describe("promises: TLS", function()
  after_each(function() H.cleanup() end)

  it("a TLS handshake with a peer that does not speak TLS is nil, 'ssl handshake failed: ...'", function()
    S.with_faultpeer("once", "HTTP/1.1 400 Bad Request\\r\\nContent-Length: 0\\r\\n\\r\\n", function(peer)
      local r = H.run_script([[
local socket = require "moonwait.socket"
return { async_invoke = function(rec)
  local s = socket.tcp()
  s:settimeouts(5000, 5000, 5000)
  assert(s:connect("127.0.0.1", rec.port))
  local ok, err = s:sslhandshake(nil, "example.test", false)
  return { { ok = ok == nil, err = err } }
end }
]], '{"port":' .. peer.port .. '}\n')
      assert.equal(0, r.code, r.err)
      local o = H.json.decode(r.output)
      assert.is_true(o.ok)
      assert.matches("^ssl handshake failed: .+ %(127%.0%.0%.1:" .. peer.port .. "%)$", o.err)
    end)
  end)
end)

describe("promises: DNS", function()
  after_each(function() H.cleanup() end)

  it("a name is resolved once and cached: 20 connects to localhost read /etc/hosts once", function()
    if os.execute("command -v strace >/dev/null 2>&1") ~= 0 then pending("strace not installed") return end
    S.with_faultpeer("once", "hello\\n", function(peer)
      local d = H.tmpdir()
      H.script(d, [[
local socket = require "moonwait.socket"
return { async_invoke = function(rec)
  local s = socket.tcp()
  local ok, err = s:connect("localhost", rec.port)
  s:close()
  return { { ok = ok == 1, err = err } }
end }
]])
      local lines = {}
      for i = 1, 20 do lines[i] = '{"port":' .. peer.port .. '}' end
      H.write(d .. "/in", table.concat(lines, "\n") .. "\n")
      local code, _, err = H.sh(string.format(
        "cd %s && ASAN_OPTIONS=detect_leaks=0 strace -f -e trace=openat -o trace %s run --script script.lua --input in --output out --capacity 1",
        H.q(d), H.bin))
      assert.equal(0, code, err)
      local out = H.read(d .. "/out")
      assert.equal(20, select(2, out:gsub('"ok":true', "")), out)
      local hosts = select(2, H.read(d .. "/trace"):gsub('openat%([^\n]*"/etc/hosts"', ""))
      assert.is_true(hosts >= 1 and hosts <= 2, "/etc/hosts read " .. hosts .. " times for 20 connects")
    end)
  end)
end)
