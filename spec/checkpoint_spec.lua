-- Exactly-once: checkpoints, restore after SIGKILL, refusals.
local H = require("helpers")
local C = require("support.crash")

-- Under valgrind (make valgrind) a run is ~50x slower: a few trials still
-- exercise every restore path for memory errors.
local TRIALS = tonumber(os.getenv("MOONWAIT_CRASH_TRIALS") or (H.wrapper == "" and "30" or "3"))
-- The kill moments come from a seeded generator: MOONWAIT_CRASH_SEED (or
-- MOONWAIT_SEED) replays a run; by default a fresh seed from /dev/urandom
-- (not the clock: two runs in one second differ). Printed at the start and
-- in any failure.
local function fresh_seed()
  local f = io.open("/dev/urandom", "rb")
  if not f then return os.time() end
  local b = f:read(4)
  f:close()
  return ((b:byte(1) * 256 + b:byte(2)) * 256 + b:byte(3)) * 256 + b:byte(4)
end
local SEED_ENV = os.getenv("MOONWAIT_CRASH_SEED") or os.getenv("MOONWAIT_SEED")
local SEED = SEED_ENV and assert(tonumber(SEED_ENV), "MOONWAIT_CRASH_SEED is not a number: " .. SEED_ENV) or fresh_seed()
io.stderr:write(("# checkpoint crash harness: seed %d, record budget %d ms (replay with " ..
  "MOONWAIT_CRASH_SEED=%d MOONWAIT_CRASH_TIMEOUT=%d)\n"):format(SEED, C.TIMEOUT, SEED, C.TIMEOUT))

local kill9 = H.kill9

local function run(d, args)
  local code, out, err = H.sh(string.format("cd %s && %s", d, H.cmd(args)))
  return code, out, err
end

describe("checkpoints", function()
  after_each(H.cleanup)

  for _, mode in ipairs({ "ordered", "unordered" }) do
    it(("survives SIGKILL at random moments: %d trials (%s)"):format(TRIALS, mode), function()
      local d = C.setup(mode)
      local rng = C.rng(SEED + (mode == "ordered" and 0 or 7919))
      local total = 0
      for i = 1, TRIALS do
        local ok, why, kills = C.trial(d, mode, rng)
        assert(ok, ("trial %d of %d failed (replay with MOONWAIT_CRASH_SEED=%d MOONWAIT_CRASH_TIMEOUT=%d): %s"):format(
          i, TRIALS, SEED, C.TIMEOUT, tostring(why)))
        total = total + (kills or 0)
      end
      -- the kills must land (under valgrind, with its slow start, at least some)
      assert.is_true(total >= (H.wrapper == "" and TRIALS or 1), "too few kills landed: " .. total)
    end)
  end

  it("re-invokes each stored record exactly once, and nothing emitted before", function()
    local d = H.tmpdir()
    H.script(d, [[
local time = require "moonwait.time"
return {
  open = function() local f = io.open("calls", "a") f:write("open\n") f:close() end,
  async_invoke = function(r, ctx)
    local f = io.open("calls", "a") f:write(ctx.seq, "\n") f:close()
    time.sleep(0.15)
    return { r }
  end,
}
]])
    local lines = {}
    for i = 1, 60 do lines[i] = '{"id":' .. i .. '}' end
    H.write(d .. "/in", table.concat(lines, "\n") .. "\n")
    local args = "run --script script.lua --input in --output out --capacity 10 --checkpoint-dir cp --checkpoint-interval 50"
    os.execute(string.format("cd %s && { %s 2>log & echo $! >pid; }", d, H.cmd(args)))
    -- wait for a checkpoint that holds records, then kill
    assert.truthy(H.wait_for(function()
      local c = H.read(d .. "/cp/checkpoint") or ""
      return c:find("\nR ", 1, true) and select(2, c:gsub("\nR ", "")) >= 5 and (H.read(d .. "/out") or "") ~= ""
    end, 20))
    kill9(d)
    local ck = H.read(d .. "/cp/checkpoint")
    local stored = {}
    for seq in ck:gmatch("\nR (%d+) ") do stored[tonumber(seq)] = true end
    local next_seq = tonumber(ck:match("\nnext_seq (%d+)"))
    local code, _, err = run(d, args)
    assert.equal(0, code, err)
    -- invocations after the restart
    local calls = H.read(d .. "/calls")
    local after = calls:match(".*open\n(.*)$")
    local count = {}
    for seq in after:gmatch("(%d+)\n") do seq = tonumber(seq); count[seq] = (count[seq] or 0) + 1 end
    for seq in pairs(stored) do assert.equal(1, count[seq], "stored seq " .. seq) end
    for seq = 1, next_seq - 1 do
      if not stored[seq] then assert.is_nil(count[seq], "seq " .. seq .. " was emitted before the checkpoint") end
    end
    for seq = next_seq, 60 do assert.equal(1, count[seq], "seq " .. seq .. " read again") end
    local out = H.decode_lines(H.read(d .. "/out"))
    assert.equal(60, #out)
    for i, o in ipairs(out) do assert.equal(i, o.id) end
  end)

  it("takes a checkpoint while the queue is full, and continues a back-off's attempt count", function()
    local d = H.tmpdir()
    H.script(d, [[
local time = require "moonwait.time"
return {
  retry = { max_attempts = 4, delay_ms = 3000 },
  retry_on_error = function() return true end,
  async_invoke = function(r, ctx)
    -- the attempts this process ran for the record (not carried over)
    ran[r.id] = (ran[r.id] and ran[r.id] .. "," or "") .. ctx.attempt
    if r.id == 1 and ctx.attempt < 3 then return nil, "try later" end
    time.sleep(0.5)
    return { { id = r.id, attempt = ctx.attempt, last = ctx.last_error, ran = ran[r.id] } }
  end,
}
]])
    H.write(d .. "/script.lua", "local ran = {}\n" .. H.read(d .. "/script.lua"))
    local lines = {}
    for i = 1, 12 do lines[i] = '{"id":' .. i .. '}' end
    H.write(d .. "/in", table.concat(lines, "\n") .. "\n")
    local args = "run --script script.lua --input in --output out --capacity 4 --timeout 20000 --checkpoint-dir cp --checkpoint-interval 50"
    os.execute(string.format("cd %s && { %s 2>log & echo $! >pid; }", d, H.cmd(args)))
    -- record 1 failed once and waits 3 s in back-off; the queue is full (4)
    local ck = H.wait_for(function()
      local c = H.read(d .. "/cp/checkpoint") or ""
      return select(2, c:gsub("\nR ", "")) == 4 and c:find("\nR 1 1 2 ", 1, true) and c
    end, 10)
    assert.truthy(ck, "no checkpoint of a full queue with record 1 at attempt 2")
    kill9(d)
    local code, _, err = run(d, args)
    assert.equal(0, code, err)
    local out = H.decode_lines(H.read(d .. "/out"))
    assert.equal(12, #out)
    -- attempt 1 before the crash; after it the count continues: attempts 2
    -- and 3 (a restore that reset the count would run 1, 2, 3 here)
    assert.same({ id = 1, attempt = 3, last = "try later", ran = "2,3" }, out[1])
    for i = 2, 12 do assert.equal(i, out[i].id) end
  end)

  it("uses the previous checkpoint after a crash during the write, and refuses a corrupt one", function()
    local d = C.setup("ordered", 120)
    local args = C.args("ordered", "out", "dl", "cp")
    os.execute(string.format("cd %s && { %s 2>log & echo $! >pid; }", d, H.cmd(args)))
    assert.truthy(H.wait_for(function() return H.read(d .. "/cp/checkpoint") end, 30), H.read(d .. "/log"))
    kill9(d)
    -- a crash in the middle of writing the next one leaves a partial tmp file
    H.write(d .. "/cp/checkpoint.tmp.Ab3dEf9h", "moonwait-checkpoint 2\ninput 5:/x/y")
    local code, _, err = run(d, args)
    assert.equal(0, code, err)
    assert.is_true(C.compare("ordered", H.read(d .. "/ref.out"), H.read(d .. "/out")))
    -- now corrupt the (complete) checkpoint: refused, naming the problem
    local ck = H.read(d .. "/cp/checkpoint")
    H.write(d .. "/cp/checkpoint", ck:sub(1, 30) .. "X" .. ck:sub(32))
    code, _, err = run(d, args)
    assert.equal(2, code)
    assert.matches("checkpoint cp/checkpoint is refused: checksum mismatch", err, 1, true)
    assert.matches("checkpoint.prev", err, 1, true)
    H.write(d .. "/cp/checkpoint", ck:sub(1, #ck - 20))
    code, _, err = run(d, args)
    assert.equal(2, code)
    assert.matches("is refused", err, 1, true)
  end)

  it("refuses another pipeline's checkpoint, stdin and stdout", function()
    local d = C.setup("ordered", 30)
    local args = "run --script script.lua --input in --output out --mode ordered --on-error dead-letter --dead-letter dl --checkpoint-dir cp"
    local code, _, err = run(d, args)
    assert.equal(0, code, err)
    code, _, err = run(d, args:gsub("--output out", "--output other"))
    assert.equal(2, code)
    assert.matches("belongs to another pipeline", err, 1, true)
    code, _, err = run(d, args:gsub("--mode ordered", "--mode unordered"))
    assert.equal(2, code)
    code, _, err = run(d, "run --script script.lua --input - --output out --checkpoint-dir cp2 <in")
    assert.equal(2, code)
    assert.matches("--checkpoint-dir needs a regular input file and an output file", err, 1, true)
    code, _, err = run(d, "run --script script.lua --input in --checkpoint-dir cp3")
    assert.equal(2, code)
  end)

  it("takes its settings from the pipeline file, naming a bad key", function()
    local d = C.setup("ordered", 40)
    H.write(d .. "/p.lua", [[return { script = "script.lua", input = "in", output = "out", capacity = 12,
      timeout_ms = 5000, on_error = "dead-letter", dead_letter = "dl",
      checkpoint = { dir = "cp", interval_ms = 10 } }]])
    local code, _, err = run(d, "run p.lua")
    assert.equal(0, code, err)
    assert.matches("\ncomplete 1\n", H.read(d .. "/cp/checkpoint"), 1, true)
    assert.is_true(C.compare("ordered", H.read(d .. "/ref.out"), H.read(d .. "/out")))
    H.write(d .. "/p2.lua", [[return { script = "script.lua", input = "in", output = "out2",
      checkpoint = { dir = "cp2", every = 10 } }]])
    code, _, err = run(d, "run p2.lua")
    assert.equal(2, code)
    assert.matches("p2.lua: key 'checkpoint': expected { dir = \"DIR\", interval_ms = N }, got key 'every'", err, 1, true)
  end)

  it("restores across a hot reload", function()
    -- generation 1 (v1) answers up to 30 records, then holds the rest until the
    -- file "go" appears (made once generation 2 is loaded, so the run cannot
    -- end first); v2 answers 20 records and then hangs, so the run cannot end
    -- before the kill; the restart loads v3 from disk. The v2 results in the
    -- final output can only come from before the kill (committed output, or
    -- held results in the checkpoint).
    local d = H.tmpdir()
    local v1 = [[
local time = require "moonwait.time"
local n = 0
return { open = function(ctx) if ctx.generation == 1 then io.stderr:write("READY\n") end end,
  async_invoke = function(r)
    n = n + 1
    if n > 30 then while not io.open("go") do time.sleep(0.01) end end
    time.sleep(0.02)
    return { { id = r.id, v = 1 } }
  end }
]]
    local v2 = [[
local time = require "moonwait.time"
local n = 0
return { async_invoke = function(r)
  n = n + 1
  if n > 20 then time.sleep(600) end
  time.sleep(0.02)
  return { { id = r.id, v = 2 } }
end }
]]
    local v3 = [[
return { async_invoke = function(r) return { { id = r.id, v = 3 } } end }
]]
    H.script(d, v1)
    local lines = {}
    for i = 1, 200 do lines[i] = '{"id":' .. i .. '}' end
    H.write(d .. "/in", table.concat(lines, "\n") .. "\n")
    local args = "run --script script.lua --input in --output out --capacity 8 --timeout 600000 " ..
      "--checkpoint-dir cp --checkpoint-interval 20"
    os.execute(string.format("cd %s && { %s 2>log & echo $! >pid; }", d, H.cmd(args)))
    assert.truthy(H.wait_for(function() return (H.read(d .. "/log") or ""):find("READY", 1, true) end, 30),
      H.read(d .. "/log"))
    H.script(d, v2)
    os.execute("kill -HUP $(cat " .. d .. "/pid)")
    assert.truthy(H.wait_for(function() return (H.read(d .. "/log") or ""):find("generation 2 loaded", 1, true) end, 30),
      H.read(d .. "/log"))
    H.write(d .. "/go", "")
    -- a checkpoint that committed output of generation 2
    assert.truthy(H.wait_for(function()
      local n = tonumber((H.read(d .. "/cp/checkpoint") or ""):match("\noutput_len (%d+)"))
      return n and (H.read(d .. "/out") or ""):sub(1, n):find('"v":2', 1, true)
    end, 30), "no checkpoint with v2 output: " .. (H.read(d .. "/log") or ""))
    kill9(d)
    H.script(d, v3)
    local code, _, err = run(d, args)
    assert.equal(0, code, err)
    local out = H.decode_lines(H.read(d .. "/out"))
    assert.equal(200, #out)
    local count = { 0, 0, 0 }
    for i, o in ipairs(out) do
      assert.equal(i, o.id)
      if i > 1 then assert.is_true(o.v >= out[i - 1].v, "v went back at id " .. i) end
      count[o.v] = count[o.v] + 1
    end
    assert.is_true(count[1] > 0 and count[3] > 0, table.concat(count, ","))
    -- v2 is not on disk any more: these survived the kill
    assert.is_true(count[2] >= 1 and count[2] <= 20, "v2 records: " .. count[2])
  end)
end)

-- Issue 10, "Exactly-once": each spec is named after the fault it pins.
describe("exactly-once faults", function()
  after_each(H.cleanup)

  -- Start moonwait in the background in d; its pid in d/pid, its exit
  -- status in d/rc when it ends, its stderr in d/log.
  local function start(d, args)
    os.remove(d .. "/rc")
    os.execute(string.format("cd %s && { ( %s 2>log & echo $! >pid; wait $!; echo $? >rc ) & } >/dev/null 2>&1",
      d, H.cmd(args)))
    assert.truthy(H.wait_for(function() return H.read(d .. "/pid") end, 10))
    return tonumber(H.read(d .. "/pid"))
  end
  local function wait_rc(d, secs)
    local rc = H.wait_for(function() return (H.read(d .. "/rc") or ""):match("%d+") end, secs or 30)
    return tonumber(rc)
  end
  local function calls_by_seq(s)
    local n = {}
    for seq in (s or ""):gmatch("(%d+)\n") do seq = tonumber(seq); n[seq] = (n[seq] or 0) + 1 end
    return n
  end
  -- Dead letters compare byte for byte except elapsed_ms (wall time).
  local strip_elapsed = C.strip_elapsed

  it("a restore changes the output: completed-but-held results are emitted without calling the script again", function()
    local d = H.tmpdir()
    H.script(d, [[
local time = require "moonwait.time"
return {
  async_invoke = function(r, ctx)
    local f = io.open("calls", "a") f:write(ctx.seq, "\n") f:close()
    if r.user == "slow" then time.sleep(60) end
    time.sleep(0.25)
    r.done = true
    return { r }
  end,
}
]])
    -- every 10th record's lookup hangs: it times out after 800 ms while the
    -- 9 behind it are done and held for order (up to ~550 ms each)
    local lines = {}
    for i = 1, 50 do lines[i] = ('{"id":%d,"user":"%s"}'):format(i, i % 10 == 1 and "slow" or "u" .. i) end
    H.write(d .. "/in", table.concat(lines, "\n") .. "\n")
    local base = "run --script script.lua --input in --mode ordered --capacity 10 --timeout 800 --on-error dead-letter "
    local code, _, err = run(d, base .. "--output ref.out --dead-letter ref.dl")
    assert.equal(0, code, err)
    local args = base .. "--output out --dead-letter dl --checkpoint-dir cp --checkpoint-interval 20"
    local ck
    for _ = 1, 3 do
      os.execute(string.format("cd %s && rm -rf cp out dl calls", d))
      start(d, args)
      -- a checkpoint taken when the held records have used most of their
      -- budget waiting (the slow head has run >= 600 of its 800 ms)
      local function ripe(c)
        local e = C.entries(c or "")
        return #e >= 8 and e[1].budget >= 600 and not e[1].done
      end
      H.wait_for(function() return ripe(H.read(d .. "/cp/checkpoint")) end, 15)
      os.execute("kill -9 $(cat " .. d .. "/pid) 2>/dev/null")
      wait_rc(d)
      ck = H.read(d .. "/cp/checkpoint")
      if ripe(ck) then break end
      ck = nil
    end
    assert.truthy(ck, "no checkpoint with held records behind a slow head")
    local stored, before = C.entries(ck), #H.lines(H.read(d .. "/calls"))
    code, _, err = run(d, args)
    assert.equal(0, code, err)
    assert.equal(H.read(d .. "/ref.out"), H.read(d .. "/out"))
    assert.equal(strip_elapsed(H.read(d .. "/ref.dl")), strip_elapsed(H.read(d .. "/dl")))
    -- the script was not called again for what the checkpoint held as done
    local after = calls_by_seq(table.concat(H.lines(H.read(d .. "/calls")), "\n", before + 1) .. "\n")
    local held = 0
    for _, e in ipairs(stored) do
      if e.done then held = held + 1; assert.is_nil(after[e.seq], "held seq " .. e.seq .. " re-invoked") end
    end
    assert.is_true(held >= 5, "held " .. held)
  end)

  it("counts restored held records as what they were, not as dead letters (regression: dead_lettered=3 with none)", function()
    local d = H.tmpdir()
    H.script(d, [[
local time = require "moonwait.time"
return { async_invoke = function(r) if r.s then time.sleep(r.s) end return { r } end }
]])
    H.write(d .. "/in", '{"i":1,"s":3}\n{"i":2}\n{"i":3}\n{"i":4}\n')
    local args = "run --script script.lua --input in --output out --checkpoint-dir cp --checkpoint-interval 20 --stats"
    start(d, args)
    -- a checkpoint with the three fast records done and held behind the slow head
    local function ripe(c)
      local n = 0
      for _, e in ipairs(C.entries(c or "")) do if e.done then n = n + 1 end end
      return n == 3
    end
    assert.truthy(H.wait_for(function() return ripe(H.read(d .. "/cp/checkpoint")) end, 15))
    os.execute("kill -9 $(cat " .. d .. "/pid) 2>/dev/null")
    wait_rc(d)
    local code, _, err = run(d, args)
    assert.equal(0, code, err)
    assert.matches("3 of them completed and held", err, 1, true)
    assert.matches("summary: records_in=4 records_out=4 outputs=4 .* skipped=0 dead_lettered=0 ", err)
    assert.equal(4, #H.lines(H.read(d .. "/out")))
  end)

  for _, sig in ipairs({ { "INT", 130 }, { "TERM", 143 } }) do
    it(("Ctrl-C throws work away: SIG%s checkpoints what is in flight and exits %d"):format(sig[1], sig[2]), function()
      local d = H.tmpdir()
      H.script(d, [[
local time = require "moonwait.time"
return {
  async_invoke = function(r, ctx)
    local f = io.open("calls", "a") f:write(ctx.seq, "\n") f:close()
    time.sleep(0.05)
    return { r }
  end,
}
]])
      local lines = {}
      for i = 1, 300 do lines[i] = '{"id":' .. i .. '}' end
      H.write(d .. "/in", table.concat(lines, "\n") .. "\n")
      -- no periodic checkpoint before the signal: only the signal's one counts
      local args = "run --script script.lua --input in --output out --capacity 10 --checkpoint-dir cp --checkpoint-interval 600000"
      start(d, args)
      assert.truthy(H.wait_for(function() return #H.lines(H.read(d .. "/calls") or "") >= 60 end, 20))
      os.execute("kill -" .. sig[1] .. " $(cat " .. d .. "/pid)")
      assert.equal(sig[2], wait_rc(d))
      local log = H.read(d .. "/log")
      assert.matches("checkpoint", log, 1, true)
      local first = calls_by_seq(H.read(d .. "/calls"))
      local n1 = #H.lines(H.read(d .. "/calls"))
      local code, _, err = run(d, args)
      assert.equal(0, code, err)
      local again = calls_by_seq(table.concat(H.lines(H.read(d .. "/calls")), "\n", n1 + 1) .. "\n")
      local redone = 0
      for seq in pairs(again) do if first[seq] then redone = redone + 1 end end
      assert.is_true(redone <= 10, "records redone after the restart: " .. redone)
      local out = H.decode_lines(H.read(d .. "/out"))
      assert.equal(300, #out)
      for i, o in ipairs(out) do assert.equal(i, o.id) end
    end)
  end

  -- A run killed after a checkpoint that committed some output.
  local function killed_with_output(d, extra)
    H.script(d, [[
local time = require "moonwait.time"
return { async_invoke = function(r) time.sleep(0.02) return { r } end }
]])
    local lines = {}
    for i = 1, 400 do lines[i] = '{"id":' .. i .. '}' end
    H.write(d .. "/in", table.concat(lines, "\n") .. "\n")
    local args = "run --script script.lua --input in --output out --capacity 5 --checkpoint-dir cp --checkpoint-interval 20" ..
      (extra or "")
    start(d, args)
    assert.truthy(H.wait_for(function()
      return tonumber((H.read(d .. "/cp/checkpoint") or ""):match("\noutput_len (%d+)") or 0) > 100
    end, 15))
    os.execute("kill -9 $(cat " .. d .. "/pid) 2>/dev/null")
    wait_rc(d)
    return args
  end

  it("output file gone or shorter than the committed length: refused, never padded", function()
    local d = H.tmpdir()
    local args = killed_with_output(d)
    local committed = tonumber(H.read(d .. "/cp/checkpoint"):match("\noutput_len (%d+)"))
    local keep = H.read(d .. "/out"):sub(1, 50)
    H.write(d .. "/out", keep)
    local code, _, err = run(d, args)
    assert.equal(2, code, err)
    assert.matches("has 50 bytes, shorter than the " .. committed .. " bytes the checkpoint committed", err, 1, true)
    assert.matches("remove cp", err, 1, true)
    assert.equal(keep, H.read(d .. "/out")) -- untouched, not extended
    os.remove(d .. "/out")
    code, _, err = run(d, args)
    assert.equal(2, code, err)
    assert.matches("is gone", err, 1, true)
    assert.is_nil(H.read(d .. "/out"))
  end)

  it("dead-letter file gone on restart: refused", function()
    local d = H.tmpdir()
    H.script(d, [[
local time = require "moonwait.time"
return { async_invoke = function(r) time.sleep(0.02) if r.id % 3 == 0 then return nil, "no" end return { r } end }
]])
    local lines = {}
    for i = 1, 400 do lines[i] = '{"id":' .. i .. '}' end
    H.write(d .. "/in", table.concat(lines, "\n") .. "\n")
    local args = "run --script script.lua --input in --output out --capacity 5 --on-error dead-letter --dead-letter dl " ..
      "--checkpoint-dir cp --checkpoint-interval 20"
    start(d, args)
    assert.truthy(H.wait_for(function()
      return tonumber((H.read(d .. "/cp/checkpoint") or ""):match("\ndead_letter_len (%d+)") or 0) > 0
    end, 15))
    os.execute("kill -9 $(cat " .. d .. "/pid) 2>/dev/null")
    wait_rc(d)
    os.remove(d .. "/dl")
    local code, _, err = run(d, args)
    assert.equal(2, code, err)
    assert.matches("--dead-letter dl is gone", err, 1, true)
  end)

  it("two processes on one checkpoint dir: the second is refused, naming the holder", function()
    local d = H.tmpdir()
    H.script(d, [[
local time = require "moonwait.time"
return { async_invoke = function(r) time.sleep(0.2) return { r } end }
]])
    local lines = {}
    for i = 1, 200 do lines[i] = '{"id":' .. i .. '}' end
    H.write(d .. "/in", table.concat(lines, "\n") .. "\n")
    local args = "run --script script.lua --input in --output out --capacity 5 --checkpoint-dir cp --checkpoint-interval 20"
    local pid = start(d, args)
    assert.truthy(H.wait_for(function() return H.read(d .. "/cp/checkpoint") end, 15))
    local code, _, err = run(d, args:gsub("--output out", "--output out2"))
    os.execute("kill -9 " .. pid)
    assert.equal(2, code, err)
    assert.matches("checkpoint dir cp is in use by another moonwait (pid " .. pid .. ")", err, 1, true)
    assert.is_nil(H.read(d .. "/out2"))
  end)

  it("checkpoint files: a symlink at the old temp name is not followed; files 0600, a new dir 0700", function()
    local d = H.tmpdir()
    H.script(d, [[return { async_invoke = function(r) return { r } end }]])
    local lines = {}
    for i = 1, 50 do lines[i] = '{"id":' .. i .. '}' end
    H.write(d .. "/in", table.concat(lines, "\n") .. "\n")
    H.write(d .. "/victim", "precious\n")
    os.execute(string.format("mkdir %s/cp && chmod 755 %s/cp && ln -s ../victim %s/cp/checkpoint.tmp", d, d, d))
    local code, _, err = run(d, "run --script script.lua --input in --output out --checkpoint-dir cp")
    assert.equal(0, code, err)
    assert.equal("precious\n", H.read(d .. "/victim"))
    local function mode(p) local _, o = H.sh("stat -c %a " .. p) return o:match("%d+") end
    assert.equal("600", mode(d .. "/cp/checkpoint"))
    code, _, err = run(d, "run --script script.lua --input in --output out2 --checkpoint-dir newcp")
    assert.equal(0, code, err)
    assert.equal("700", mode(d .. "/newcp"))
    assert.equal("600", mode(d .. "/newcp/checkpoint"))
    -- no temp files are left behind
    local _, ls = H.sh("ls -A " .. d .. "/newcp " .. d .. "/cp")
    assert.is_nil(ls:find("checkpoint.tmp.", 1, true), ls)
  end)

  it("a checkpoint that cannot be written fails the run, naming the dir", function()
    local d = H.tmpdir()
    H.script(d, [[
local time = require "moonwait.time"
return { async_invoke = function(r) time.sleep(0.02) return { r } end }
]])
    local lines = {}
    for i = 1, 300 do lines[i] = '{"id":' .. i .. '}' end
    H.write(d .. "/in", table.concat(lines, "\n") .. "\n")
    local args = "run --script script.lua --input in --output out --capacity 5 --checkpoint-dir cp --checkpoint-interval 20"
    start(d, args)
    assert.truthy(H.wait_for(function() return H.read(d .. "/cp/checkpoint") end, 15))
    -- as root: an immutable directory refuses new files (EPERM)
    local ok = os.execute("chattr +i " .. d .. "/cp 2>/dev/null")
    if ok ~= 0 and ok ~= true then
      os.execute("kill -9 $(cat " .. d .. "/pid)")
      pending("chattr +i is not available here")
      return
    end
    local rc = wait_rc(d)
    os.execute("chattr -i " .. d .. "/cp")
    assert.equal(1, rc, H.read(d .. "/log"))
    assert.matches("checkpoint in cp not written", H.read(d .. "/log"), 1, true)
  end)

  it("a checkpoint that cannot be written (ENOSPC) fails the run", function()
    local d = H.tmpdir()
    os.execute("mkdir " .. d .. "/cp")
    if not os.execute("mount -t tmpfs -o size=12k tmpfs " .. d .. "/cp 2>/dev/null") then
      pending("cannot mount a tmpfs here")
      return
    end
    H.script(d, [[
local time = require "moonwait.time"
return { async_invoke = function(r) time.sleep(0.05) return { r } end }
]])
    local pad = string.rep("x", 3000)
    local lines = {}
    for i = 1, 200 do lines[i] = '{"id":' .. i .. ',"pad":"' .. pad .. '"}' end
    H.write(d .. "/in", table.concat(lines, "\n") .. "\n")
    local code, _, err = run(d, "run --script script.lua --input in --output out --capacity 20 --checkpoint-dir cp --checkpoint-interval 20")
    os.execute("umount " .. d .. "/cp")
    assert.equal(1, code, err)
    assert.matches("checkpoint in cp not written", err, 1, true)
    assert.matches("No space left on device", err, 1, true)
  end)

  it("an input_offset past the end of the input is refused", function()
    local d = H.tmpdir()
    local args = killed_with_output(d)
    H.write(d .. "/in", '{"id":1}\n')
    local code, _, err = run(d, args)
    assert.equal(2, code, err)
    assert.matches("the input in has 9 bytes, but the checkpoint read it to byte", err, 1, true)
  end)

  it("an old-version checkpoint is refused with a clear message", function()
    local d = H.tmpdir()
    local args = killed_with_output(d)
    -- rewrite it as version 1 with a valid checksum
    local ck = H.read(d .. "/cp/checkpoint")
    local body = ck:match("^(.*\n)crc32 %x+\n$"):gsub("^moonwait%-checkpoint %d+\n", "moonwait-checkpoint 1\n")
    local _, crc = H.sh(string.format("printf '%%s' %s | gzip -c | tail -c8 | od -An -tx4 -N4", H.q(body)))
    H.write(d .. "/cp/checkpoint", body .. "crc32 " .. crc:match("%x+") .. "\n")
    local code, _, err = run(d, args)
    assert.equal(2, code, err)
    assert.matches("format version 1", err, 1, true)
    assert.matches("older moonwait", err, 1, true)
  end)

  it("a checkpoint dir that cannot be opened to fsync it says so (not 'fsync of the directory')", function()
    -- A dir with write and search but no read permission: the temp file is
    -- made and renamed, then open(DIR, O_RDONLY) fails. Root bypasses the
    -- permission, so the run is made as nobody.
    if not os.execute("command -v runuser >/dev/null 2>&1 && runuser -u nobody -- true 2>/dev/null") then
      pending("runuser -u nobody is not available here")
      return
    end
    local d = H.tmpdir()
    H.script(d, "return { async_invoke = function(r) return { r } end }")
    H.write(d .. "/in", '{"id":1}\n')
    os.execute("mkdir " .. d .. "/cp && chmod 300 " .. d .. "/cp && chmod 755 " .. d ..
      " && chown -R nobody " .. d)
    local code, _, err = H.sh(string.format("cd %s && runuser -u nobody -- %s run --script script.lua " ..
      "--input in --output out --checkpoint-dir cp", H.q(d), H.cmd("")))
    assert.equal(1, code, err)
    assert.matches("checkpoint in cp not written: open the directory to fsync it: Permission denied", err, 1, true)
  end)
end)
