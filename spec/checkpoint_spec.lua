-- Exactly-once: checkpoints, restore after SIGKILL, refusals.
local H = require("helpers")
local C = require("support.crash")

-- Under valgrind (make valgrind) a run is ~50x slower: a few trials still
-- exercise every restore path for memory errors.
local TRIALS = tonumber(os.getenv("MOONWAIT_CRASH_TRIALS") or (H.wrapper == "" and "30" or "3"))
local SEED = tonumber(os.getenv("MOONWAIT_CRASH_SEED") or tostring(os.time()))

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
        assert(ok, ("trial %d of %d failed (replay with MOONWAIT_CRASH_SEED=%d): %s"):format(i, TRIALS, SEED, tostring(why)))
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
    os.execute("kill -9 $(cat " .. d .. "/pid)")
    os.execute("sleep 0.1")
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
    if r.id == 1 and ctx.attempt < 3 then return nil, "try later" end
    time.sleep(0.5)
    return { { id = r.id, attempt = ctx.attempt, last = ctx.last_error } }
  end,
}
]])
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
    os.execute("kill -9 $(cat " .. d .. "/pid)")
    local code, _, err = run(d, args)
    assert.equal(0, code, err)
    local out = H.decode_lines(H.read(d .. "/out"))
    assert.equal(12, #out)
    -- attempt 1 before the crash, attempt 2 after it (it continued), then 3
    assert.same({ id = 1, attempt = 3, last = "try later" }, out[1])
  end)

  it("uses the previous checkpoint after a crash during the write, and refuses a corrupt one", function()
    local d = C.setup("ordered", 120)
    local args = "run --script script.lua --input in --output out --mode ordered --capacity 12 --timeout 5000 " ..
      "--on-error dead-letter --dead-letter dl --checkpoint-dir cp --checkpoint-interval 15"
    os.execute(string.format("cd %s && { %s 2>log & echo $! >pid; }", d, H.cmd(args)))
    assert.truthy(H.wait_for(function() return H.read(d .. "/cp/checkpoint") end, 30), H.read(d .. "/log"))
    os.execute("kill -9 $(cat " .. d .. "/pid) 2>/dev/null; sleep 0.1")
    -- a crash in the middle of writing the next one leaves a partial tmp file
    H.write(d .. "/cp/checkpoint.tmp", "moonwait-checkpoint 1\ninput 5:/x/y")
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
    local d = H.tmpdir()
    local body = [[
local time = require "moonwait.time"
local V = %d
return { open = function(ctx) if ctx.generation == 1 then io.stderr:write("READY\n") end end,
  async_invoke = function(r) time.sleep(0.02) return { { id = r.id, v = V } } end }
]]
    H.script(d, body:format(1))
    local lines = {}
    for i = 1, 200 do lines[i] = '{"id":' .. i .. '}' end
    H.write(d .. "/in", table.concat(lines, "\n") .. "\n")
    local args = "run --script script.lua --input in --output out --capacity 8 --checkpoint-dir cp --checkpoint-interval 20"
    os.execute(string.format("cd %s && { %s 2>log & echo $! >pid; }", d, H.cmd(args)))
    H.wait_for(function() return (H.read(d .. "/log") or ""):find("READY", 1, true) end, 20)
    os.execute("sleep 0.1")
    H.script(d, body:format(2))
    os.execute("kill -HUP $(cat " .. d .. "/pid)")
    H.wait_for(function() return (H.read(d .. "/log") or ""):find("generation 2 loaded", 1, true) end, 10)
    os.execute("sleep 0.1; kill -9 $(cat " .. d .. "/pid)")
    local code, _, err = run(d, args)
    assert.equal(0, code, err)
    local out = H.decode_lines(H.read(d .. "/out"))
    assert.equal(200, #out)
    local saw2 = false
    for i, o in ipairs(out) do
      assert.equal(i, o.id)
      saw2 = saw2 or o.v == 2
    end
    assert.is_true(saw2)
  end)
end)
