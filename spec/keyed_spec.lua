-- Keyed mode (issue 14, part 3): --mode keyed --key FIELD. Records with the
-- same key leave in input order, records with different keys overtake each
-- other, watermarks are barriers both ways; capacity, timeouts, retries,
-- dead letters, checkpoints and hot reload as in the other modes.
local H = require("helpers")
local C = require("support.crash")

local SLEEPER = require("support.scripts").SLEEPER

-- A small seeded generator (the same numbers on every machine).
local function rng(seed)
  local x = seed
  return function(lo, hi)
    x = x * 16807 % 2147483647
    return lo + x % (hi - lo + 1)
  end
end

-- n records with key field u (one of `keys`), random sleeps up to maxd ms,
-- and a watermark after every `wm_every` records (none if nil).
local function keyed_input(n, keys, maxd, wm_every, seed)
  local r, t = rng(seed or 12345), {}
  for i = 1, n do
    t[#t + 1] = ('{"id":%d,"u":"k%d","d":%d}'):format(i, r(1, keys), r(0, maxd))
    if wm_every and i % wm_every == 0 then t[#t + 1] = ('{"$watermark":%d}'):format(i) end
  end
  return table.concat(t, "\n") .. "\n"
end

-- The parsed input: records by id ({id, u}), and for each id the number of
-- watermarks before it (its segment).
local function parse_input(s)
  local recs, seg, w = {}, {}, 0
  for _, l in ipairs(H.lines(s)) do
    local o = H.json.decode(l)
    if o["$watermark"] then w = w + 1 else recs[o.id] = o; seg[o.id] = w end
  end
  return recs, seg
end

-- Checks the output lines against the rules: every record once; per key in
-- input order; no record crosses a watermark either way (the k-th
-- watermark out has exactly the records of segments < k before it).
-- Returns the output ids in output order.
local function check_keyed(input, out, n)
  local recs, seg = parse_input(input)
  local seen, last_of_key, ids, wms = {}, {}, {}, 0
  for _, l in ipairs(H.lines(out)) do
    local o = H.json.decode(l)
    if o["$watermark"] then
      wms = wms + 1
      -- everything of the segments before it is out
      for id = 1, n do
        if seg[id] < wms then assert.is_true(seen[id] ~= nil, ("record %d after watermark %d"):format(id, wms)) end
      end
    else
      assert.is_nil(seen[o.id], "duplicate " .. tostring(o.id))
      seen[o.id] = true
      ids[#ids + 1] = o.id
      -- nothing of a later segment before its watermark
      assert.is_true(seg[o.id] <= wms, ("record %d before watermark %d"):format(o.id, seg[o.id]))
      local k = H.json.encode(recs[o.id].u)
      assert.is_true((last_of_key[k] or 0) < o.id, ("key %s: %d after %d"):format(k, o.id, last_of_key[k] or 0))
      last_of_key[k] = o.id
    end
  end
  for id = 1, n do assert.is_true(seen[id] ~= nil, "lost " .. id) end
  return ids
end

local function overtook(ids)
  for i, id in ipairs(ids) do if id ~= i then return true end end
  return false
end

describe("keyed mode", function()
  after_each(H.cleanup)

  it("keeps input order per key and lets keys overtake, under random latencies", function()
    local input = keyed_input(400, 25, 30)
    local r = H.run_script(SLEEPER, input, "--mode keyed --key u --capacity 60")
    assert.equal(0, r.code, r.err)
    local ids = check_keyed(input, r.output, 400)
    assert.is_true(overtook(ids), "no record overtook another: keyed mode behaved as ordered")
  end)

  it("keeps order per key and watermarks with batch_invoke, adaptive capacity and a rate limit", function()
    -- batches finish in any order (each sleeps its first record's d); one
    -- key's records are spread over several batches
    local input = keyed_input(400, 25, 30, 40, 4242)
    local r = H.run_script([[
local time = require "moonwait.time"
local M = {}
function M.batch_invoke(records, ctxs)
  time.sleep((records[1].d or 0) / 1000)
  local out = {}
  for i, rec in ipairs(records) do rec.seq = ctxs[i].seq; out[i] = { rec } end
  return out
end
return M
]], input, "--mode keyed --key u --capacity 8..60 --batch-size 5 --batch-wait 2 --rate-limit 4000")
    assert.equal(0, r.code, r.err)
    local ids = check_keyed(input, r.output, 400)
    assert.is_true(overtook(ids), "no record overtook another")
  end)

  it("lets a later key overtake a slow one, and holds a slow key's next record", function()
    local input = H.jsonl({ { id = 1, u = "a", d = 300 }, { id = 2, u = "a", d = 0 }, { id = 3, u = "b", d = 0 } })
    local r = H.run_script(SLEEPER, input, "--mode keyed --key u")
    assert.equal(0, r.code, r.err)
    local ids = {}
    for _, o in ipairs(H.decode_lines(r.output)) do ids[#ids + 1] = o.id end
    assert.same({ 3, 1, 2 }, ids)
  end)

  it("never lets a record cross a watermark, either way", function()
    local input = keyed_input(300, 10, 25, 20, 777)
    local r = H.run_script(SLEEPER, input, "--mode keyed --key u --capacity 40")
    assert.equal(0, r.code, r.err)
    check_keyed(input, r.output, 300)
    -- the watermarks themselves pass, in order
    local w = {}
    for _, o in ipairs(H.decode_lines(r.output)) do if o["$watermark"] then w[#w + 1] = o["$watermark"] end end
    assert.equal(15, #w)
    for i = 2, #w do assert.is_true(w[i] > w[i - 1]) end
  end)

  it("holds a slow record's watermark and everything after it", function()
    local input = '{"id":1,"u":"a","d":250}\n{"$watermark":5}\n{"id":2,"u":"b","d":0}\n'
    local r = H.run_script(SLEEPER, input, "--mode keyed --key u")
    assert.equal(0, r.code, r.err)
    assert.same({ '{"id":1,"u":"a","d":250,"seq":1}', '{"$watermark":5}', '{"id":2,"u":"b","d":0,"seq":2}' },
      H.lines(r.output))
  end)

  it("times out a key's record through on_timeout; its key's next records follow it, others do not wait", function()
    local script = [[
local time = require "moonwait.time"
return {
  async_invoke = function(r) if r.hang then time.sleep(60) end return { { id = r.id } } end,
  on_timeout = function(r) return { { id = r.id, timed_out = true } } end,
}
]]
    local input = H.jsonl({ { id = 1, u = "a", hang = true }, { id = 2, u = "a" }, { id = 3, u = "b" },
      { id = 4, u = "a" }, { id = 5, u = "c", hang = true }, { id = 6, u = "c" } })
    local r = H.run_script(script, input, "--mode keyed --key u --timeout 300")
    assert.equal(0, r.code, r.err)
    local out = H.decode_lines(r.output)
    local pos = {}
    for i, o in ipairs(out) do pos[o.id] = i end
    assert.equal(6, #out)
    assert.is_true(out[pos[1]].timed_out and out[pos[5]].timed_out)
    assert.equal(1, pos[3])                       -- b did not wait for a's timeout
    assert.is_true(pos[1] < pos[2] and pos[2] < pos[4] and pos[5] < pos[6])
  end)

  it("dead-letters a timed-out record without on_timeout and keeps its key's order", function()
    local script = [[
local time = require "moonwait.time"
return { async_invoke = function(r) if r.hang then time.sleep(60) end return { { id = r.id } } end }
]]
    local input = H.jsonl({ { id = 1, u = "a", hang = true }, { id = 2, u = "a" }, { id = 3, u = "b" } })
    local r = H.run_script(script, input, "--mode keyed --key u --timeout 200 --on-error dead-letter --dead-letter dl")
    assert.equal(0, r.code, r.err)
    local ids = {}
    for _, o in ipairs(H.decode_lines(r.output)) do ids[#ids + 1] = o.id end
    assert.same({ 3, 2 }, ids)
    local dl = H.decode_lines(H.read(r.dir .. "/dl"))
    assert.equal(1, #dl)
    assert.equal(1, dl[1].record.id)
  end)

  it("keeps per-key order through retries, and a retrying key does not hold the others", function()
    local script = [[
local time = require "moonwait.time"
return {
  retry_on_error = function(err) return err == "flaky" end,
  async_invoke = function(r, ctx)
    time.sleep(r.d / 1000)
    if r.id % 3 == 0 and ctx.attempt < 3 then return nil, "flaky" end
    return { { id = r.id, attempt = ctx.attempt } }
  end,
}
]]
    local input = keyed_input(200, 12, 10, nil, 99)
    local r = H.run_script(script, input, "--mode keyed --key u --capacity 30 --retry fixed:3:20")
    assert.equal(0, r.code, r.err)
    local ids = check_keyed(input, r.output, 200)
    assert.is_true(overtook(ids))
    for _, o in ipairs(H.decode_lines(r.output)) do
      assert.equal(o.id % 3 == 0 and 3 or 1, o.attempt)
    end
  end)

  it("works at capacity 1 (input order) and at a large capacity", function()
    local input = keyed_input(150, 7, 5, 30, 4242)
    local r1 = H.run_script(SLEEPER, input, "--mode keyed --key u --capacity 1")
    assert.equal(0, r1.code, r1.err)
    local ids = check_keyed(input, r1.output, 150)
    assert.is_false(overtook(ids))
    local r2 = H.run_script(SLEEPER, input, "--mode keyed --key u --capacity 100000")
    assert.equal(0, r2.code, r2.err)
    check_keyed(input, r2.output, 150)
  end)

  it("reads a nested key; strings by their text, numbers by value; missing and null share one key", function()
    local lines = {
      '{"id":1,"user":{"id":"a"},"d":300}',
      '{"id":2,"user":{"id":"\\u0061"},"d":0}',  -- "a" again
      '{"id":3,"d":300}',                          -- no user: no key
      '{"id":4,"user":{"id":null},"d":0}',         -- null: no key
      '{"id":5,"user":"flat","d":0}',              -- user not an object: no key
      '{"id":6,"user":{"id":1},"d":300}',
      '{"id":7,"user":{"id":1.0},"d":0}',          -- the number 1 again
      '{"id":8,"user":{"id":"1"},"d":0}',          -- the string "1": another key
      '{"id":9,"user":{"id":true},"d":0}',
    }
    local r = H.run_script(SLEEPER, table.concat(lines, "\n") .. "\n", "--mode keyed --key user.id --capacity 20")
    assert.equal(0, r.code, r.err)
    local pos = {}
    for i, o in ipairs(H.decode_lines(r.output)) do pos[o.id] = i end
    assert.is_true(pos[1] < pos[2], "\\u0061 is a")
    assert.is_true(pos[3] < pos[4] and pos[4] < pos[5], "missing, null and a non-object parent are one key")
    assert.is_true(pos[6] < pos[7], "1.0 is 1")
    assert.is_true(pos[8] < pos[6] and pos[9] < pos[1], "other keys overtake")
  end)

  it("refuses an object or array key like a malformed line, naming the line and the field", function()
    local input = '{"id":1,"k":"a"}\n{"id":2,"k":{"x":1}}\n{"id":3,"k":[1]}\n{"id":4,"k":"b"}\n'
    local r = H.run_script(SLEEPER, input, "--mode keyed --key k")
    assert.equal(1, r.code)
    assert.matches("input line 2: key field 'k' is an object; a key must be a string, a number, a boolean or null",
      r.err, 1, true)
    r = H.run_script(SLEEPER, input, "--mode keyed --key k --on-error dead-letter --dead-letter dl")
    assert.equal(0, r.code, r.err)
    local ids = {}
    for _, o in ipairs(H.decode_lines(r.output)) do ids[#ids + 1] = o.id end
    table.sort(ids)
    assert.same({ 1, 4 }, ids)
    local dl = H.read(r.dir .. "/dl")
    assert.matches("key field 'k' is an array", dl, 1, true)
    r = H.run_script(SLEEPER, input, "--mode keyed --key k --on-error skip")
    assert.equal(0, r.code, r.err)
    assert.equal(2, #H.lines(r.output))
  end)

  it("names bad flags and pipeline keys", function()
    local d = H.tmpdir()
    H.script(d, SLEEPER)
    local cases = {
      { "--mode keyed", "option '--mode keyed' needs '--key FIELD'" },
      { "--key id", "option '--key' is only used with '--mode keyed'" },
      { "--mode unordered --key id", "option '--key' is only used with '--mode keyed'" },
      { "--mode keyed --key ''", "option '--key': expected a non-empty string" },
      { "--mode keyed --key a..b", "option '--key': expected a field name or a dotted path like 'a.b', got 'a..b'" },
      { "--mode keyed --key .a", "option '--key': expected a field name or a dotted path like 'a.b', got '.a'" },
      { "--mode Keyed --key a", "option '--mode': expected 'ordered', 'unordered' or 'keyed', got 'Keyed'" },
    }
    for _, c in ipairs(cases) do
      local r = H.run("run --script script.lua " .. c[1], { dir = d, input = "" })
      assert.equal(2, r.code, c[1])
      assert.matches(c[2], r.err, 1, true)
    end
    H.write(d .. "/p1.lua", 'return { script = "script.lua", mode = "keyed", key = 5 }')
    local r = H.run("run p1.lua", { dir = d, input = "" })
    assert.equal(2, r.code)
    assert.matches("key 'key'", r.err, 1, true)
    H.write(d .. "/p2.lua", 'return { script = "script.lua", mode = "keyed" }')
    r = H.run("run p2.lua", { dir = d, input = "" })
    assert.equal(2, r.code)
    assert.matches("(pipeline keys: mode, key)", r.err, 1, true)
    H.write(d .. "/p3.lua", 'return { script = "script.lua", mode = "keyed", key = "user.id" }')
    r = H.run("run p3.lua", { dir = d,
      input = '{"id":1,"user":{"id":"x"},"d":200}\n{"id":2,"user":{"id":"x"}}\n{"id":3,"user":{"id":"y"}}\n' })
    assert.equal(0, r.code, r.err)
    local ids = {}
    for _, o in ipairs(H.decode_lines(r.out)) do ids[#ids + 1] = o.id end
    assert.same({ 3, 1, 2 }, ids)
  end)

  it("drains in per-key order on SIGTERM", function()
    local d = H.tmpdir()
    H.script(d, SLEEPER)
    H.write(d .. "/in", keyed_input(100000, 30, 20, nil, 31))
    os.execute(string.format("cd %s && { %s run --script script.lua --input in --output out --mode keyed --key u " ..
      "--capacity 50 2>log & echo $! >pid; wait $!; echo $? >rc; } >/dev/null 2>&1 &", d, H.cmd("")))
    assert.truthy(H.wait_for(function() return #(H.read(d .. "/out") or "") > 2000 end, 30))
    os.execute("kill -TERM $(cat " .. d .. "/pid)")
    local rc = H.wait_for(function() return (H.read(d .. "/rc") or ""):match("%d+") end, 30)
    assert.equal("1", rc)
    -- what came out keeps the rules; what did not is a suffix per key
    local recs = parse_input(H.read(d .. "/in"))
    local last, n = {}, 0
    for _, o in ipairs(H.decode_lines(H.read(d .. "/out"))) do
      local k = recs[o.id].u
      assert.is_true((last[k] or 0) < o.id)
      last[k] = o.id
      n = n + 1
    end
    assert.is_true(n > 0 and n < 100000)
  end)
end)

describe("keyed mode with checkpoints", function()
  after_each(H.cleanup)

  -- The crash harness's script (retries, dead letters, timeouts through
  -- on_timeout, fan-out), over records with a key field u.
  local MODE = "keyed --key u"
  local function input(n)
    local t = {}
    for i = 1, n do
      t[#t + 1] = ('{"z":"last","id":%d,"u":%d,"big":9007199254%06d,"e":[],"o":{},"f":1.50}'):format(
        i, i % 7, 740993 + i)
      if i % 25 == 0 then t[#t + 1] = ('{"$watermark":%d}'):format(i * 10) end
    end
    return table.concat(t, "\n") .. "\n"
  end

  -- Items of an output or dead-letter file: per key (u = id % 7) the
  -- sequence, and per watermark segment the multiset.
  local function shape(s)
    local per_key, segs, cur = {}, {}, {}
    for _, l in ipairs(H.lines(s or "")) do
      local o = H.json.decode(l)
      if o["$watermark"] then
        table.sort(cur)
        segs[#segs + 1] = table.concat(cur, ",") .. "|w" .. o["$watermark"]
        cur = {}
      else
        local id = o.record and o.record.id or o.id
        local item = o.record and ("dl" .. id .. ":" .. o.attempts) or (id .. ":" .. (o.attempt or "") .. ":" ..
          (o.part or ""))
        local k = id % 7
        per_key[k] = (per_key[k] or "") .. item .. " "
        cur[#cur + 1] = item
      end
    end
    table.sort(cur)
    segs[#segs + 1] = table.concat(cur, ",")
    return per_key, segs
  end

  it("survives SIGKILL at random moments: the same per-key order, every record exactly once", function()
    local d = H.tmpdir()
    H.script(d, C.SCRIPT)
    H.write(d .. "/in", input(240))
    local code, _, err = H.sh(string.format("cd %s && %s", d, H.cmd(C.args(MODE, "ref.out", "ref.dl"))))
    assert.equal(0, code, err)
    local ref_keys, ref_segs = shape(H.read(d .. "/ref.out"))
    local ref_dl_keys = shape(H.read(d .. "/ref.dl"))
    local seed = os.time() % 100000 + 1
    local r, kills = rng(seed), 0
    local trials = H.wrapper == "" and 8 or 2
    for trial = 1, trials do
      os.execute(string.format("cd %s && rm -rf cp out dl", d))
      for attempt = 1, 200 do
        local ms = r(5, 70) * (H.wrapper == "" and 1 or 12)
        local cmd = string.format(
          "cd %s && rm -f rc && { %s 2>>log & pid=$!; sleep %.3f; kill -9 $pid 2>/dev/null; wait $pid; echo $? >rc; } 2>/dev/null",
          d, H.cmd(C.args(MODE, "out", "dl", "cp")), ms / 1000)
        if attempt > 40 then
          cmd = string.format("cd %s && rm -f rc && { %s 2>>log; echo $? >rc; }", d, H.cmd(C.args(MODE, "out", "dl", "cp")))
        end
        os.execute(cmd)
        local rc = tonumber((H.read(d .. "/rc") or ""):match("%d+"))
        if rc == 0 then break end
        assert.equal(137, rc, "seed " .. seed .. ": " .. (H.read(d .. "/log") or ""))
        kills = kills + 1
      end
      local keys, segs = shape(H.read(d .. "/out"))
      assert.same(ref_segs, segs, "seed " .. seed .. ", trial " .. trial .. ": watermark segments differ")
      assert.same(ref_keys, keys, "seed " .. seed .. ", trial " .. trial .. ": per-key order differs")
      assert.same(ref_dl_keys, (shape(H.read(d .. "/dl"))), "seed " .. seed .. ", trial " .. trial .. ": dead letters differ")
    end
    assert.is_true(kills >= trials, "too few kills landed: " .. kills)
  end)

  it("restores held records in their key's order without calling the script again", function()
    local d = H.tmpdir()
    H.script(d, [[
local time = require "moonwait.time"
return { async_invoke = function(r, ctx)
  local f = io.open("calls", "a") f:write(ctx.seq, "\n") f:close()
  if r.slow then time.sleep(60) end
  return { { id = r.id } }
end }
]])
    -- key a's head hangs: a's later records are done and held; b's leave
    local lines = { '{"id":1,"u":"a","slow":true}' }
    for i = 2, 30 do lines[i] = ('{"id":%d,"u":"%s"}'):format(i, i % 2 == 0 and "a" or "b") end
    H.write(d .. "/in", table.concat(lines, "\n") .. "\n")
    local args = "run --script script.lua --input in --output out --mode keyed --key u --capacity 40 " ..
      "--timeout 0 --checkpoint-dir cp --checkpoint-interval 20"
    os.execute(string.format("cd %s && { %s 2>log & echo $! >pid; }", d, H.cmd(args)))
    assert.truthy(H.wait_for(function()
      local e = C.entries(H.read(d .. "/cp/checkpoint") or "")
      local done = 0
      for _, x in ipairs(e) do if x.done then done = done + 1 end end
      return #e == 16 and done == 15
    end, 20), H.read(d .. "/log"))
    os.execute("kill -9 $(cat " .. d .. "/pid)")
    H.wait_for(function() return not H.read("/proc/" .. H.read(d .. "/pid"):match("%d+") .. "/stat") end, 10)
    -- b's records all left before the kill
    local before = H.decode_lines(H.read(d .. "/out") or "")
    -- the re-invoked head takes a while: its key's restored results must
    -- wait for it (without the wait they could not overtake it anyway)
    H.script(d, [[local time = require "moonwait.time"
return { async_invoke = function(r, ctx)
  local f = io.open("calls", "a") f:write("after ", ctx.seq, "\n") f:close()
  time.sleep(0.2)
  return { { id = r.id, restarted = true } }
end }]])
    local code, _, err = H.sh(string.format("cd %s && %s", d, H.cmd(args)))
    assert.equal(0, code, err)
    local out = H.decode_lines(H.read(d .. "/out"))
    assert.equal(30, #out)
    local a = {}
    for i, o in ipairs(out) do
      if o.id % 2 == 0 or o.id == 1 then a[#a + 1] = o.id end
      if i <= #before then assert.equal(before[i].id, o.id) end
    end
    for i = 2, #a do assert.is_true(a[i] > a[i - 1], "key a out of order") end
    -- only the hanging head ran again
    local again = {}
    for seq in (H.read(d .. "/calls") or ""):gmatch("after (%d+)") do again[#again + 1] = tonumber(seq) end
    assert.same({ 1 }, again)
    assert.is_true(out[1 + #before].restarted and out[1 + #before].id == 1)
  end)

  it("refuses a checkpoint of another mode or key field", function()
    local d = H.tmpdir()
    H.script(d, [[
local time = require "moonwait.time"
return { async_invoke = function(r) time.sleep(3) return { r } end }
]])
    H.write(d .. "/in", '{"id":1,"u":1}\n')
    local base = "run --script script.lua --input in --output out --timeout 0 --checkpoint-dir cp " ..
      "--checkpoint-interval 20 "
    os.execute(string.format("cd %s && { %s 2>log & echo $! >pid; }", d, H.cmd(base .. "--mode keyed --key u")))
    assert.truthy(H.wait_for(function() return (H.read(d .. "/cp/checkpoint") or ""):find("\nR ", 1, true) end, 20))
    os.execute("kill -9 $(cat " .. d .. "/pid)")
    H.wait_for(function() return not H.read("/proc/" .. H.read(d .. "/pid"):match("%d+") .. "/stat") end, 10)
    local code, _, err = H.sh(string.format("cd %s && %s", d, H.cmd(base .. "--mode keyed --key id")))
    assert.equal(2, code)
    assert.matches("mode keyed by u); this one is (", err, 1, true)
    assert.matches("mode keyed by id)", err, 1, true)
    code, _, err = H.sh(string.format("cd %s && %s", d, H.cmd(base .. "--mode unordered")))
    assert.equal(2, code)
    assert.matches("mode unordered)", err, 1, true)
  end)
end)

describe("keyed mode and hot reload", function()
  after_each(H.cleanup)

  local function versioned(v)
    return ([[
local time = require "moonwait.time"
local VERSION = %d
return {
  open = function(ctx) if ctx.generation == 1 then io.stderr:write("READY\n") end end,
  async_invoke = function(r) time.sleep((r.id * 7 %% 11) / 1000) return { { id = r.id, u = r.u, v = VERSION } } end,
}
]]):format(v)
  end

  it("keeps per-key order across generations, losing and duplicating nothing", function()
    local d = H.tmpdir()
    H.script(d, versioned(1))
    os.execute("mkfifo " .. d .. "/fifo")
    local fifo
    os.execute(string.format(
      "cd %s && { %s run --script script.lua --input fifo --mode keyed --key u --capacity 100 --timeout 0 " ..
      "--tag-generation gen >out 2>err & echo $! >pid; wait $!; echo $? >rc; } >/dev/null 2>&1 &", d, H.cmd("")))
    fifo = assert(io.open(d .. "/fifo", "w"))
    assert.truthy(H.wait_for(function() return (H.read(d .. "/err") or ""):find("READY", 1, true) end, 60))
    local all = {}
    local function part(k)
      local t = {}
      for i = (k - 1) * 1500 + 1, k * 1500 do
        t[#t + 1] = ('{"id":%d,"u":%d}\n'):format(i, i % 17)
        all[#all + 1] = t[#t]
      end
      fifo:write(table.concat(t))
      fifo:flush()
    end
    for v = 2, 4 do
      part(v - 1)
      H.script(d, versioned(v))
      os.execute("kill -HUP $(cat " .. d .. "/pid)")
      assert.truthy(H.wait_for(function()
        return (H.read(d .. "/err") or ""):find("generation " .. v .. " loaded", 1, true)
      end, 30), H.read(d .. "/err"))
    end
    part(4)
    fifo:close()
    local rc = H.wait_for(function() return (H.read(d .. "/rc") or ""):match("%d+") end, 60)
    assert.equal("0", rc, H.read(d .. "/err"))
    local ids = check_keyed(table.concat(all), H.read(d .. "/out"), 6000)
    assert.is_true(overtook(ids))
    local version_of, gens = {}, {}
    for _, o in ipairs(H.decode_lines(H.read(d .. "/out"))) do
      assert.equal(version_of[o.gen] or o.v, o.v)
      version_of[o.gen] = o.v
      gens[o.gen] = true
    end
    assert.truthy(gens[4], "the last generation ran nothing")
  end)
end)
