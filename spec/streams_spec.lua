-- The Redis Streams source and sink (consumer groups), against real
-- redis-servers on 127.0.0.1 (spec/support/servers.lua) started here and
-- stopped after; stream contents are read with spec/support/streams.lua's
-- own RESP client (any bytes come back exactly).
--
-- What "until=empty" is taken to mean here: the input ends when the group
-- has nothing new, nothing is pending for this consumer, and a claim pass
-- (entries pending on any consumer longer than claim_idle_ms) found nothing
-- to take. So a consumer started after others died ends only once their
-- idle entries are processed (the kill harness's final consumer relies on
-- it; "claims idle entries of other consumers before it ends" pins it).
--
-- The kill -9 harness (several processes, one killed at a random moment and
-- restarted) is seeded: MOONWAIT_STREAMS_SEED replays it,
-- MOONWAIT_STREAMS_TRIALS (30), MOONWAIT_STREAMS_ENTRIES (2000 per trial)
-- and MOONWAIT_STREAMS_KILLS (1 per trial) size it; scripts/streams-soak
-- runs it long (100k entries a trial).
--
-- spec/support/streams_mock (a serial stand-in consumer with switches for
-- known faults: no fencing, no claims, reading past capacity, a duplicate)
-- checks this harness itself: its header says how.
local H = require("helpers")
local servers = require("support.servers")
local ST = require("support.streams")

local SEED = ST.seed()
local TRIALS = tonumber(os.getenv("MOONWAIT_STREAMS_TRIALS") or (H.wrapper == "" and "30" or "2"))
local ENTRIES = tonumber(os.getenv("MOONWAIT_STREAMS_ENTRIES") or "2000")
local KILLS = tonumber(os.getenv("MOONWAIT_STREAMS_KILLS") or "1")
local CLAIM_MS = 500
io.stderr:write(("# streams kill harness: seed %d, %d trials of %d entries (replay with MOONWAIT_STREAMS_SEED=%d)\n")
  :format(SEED, TRIALS, ENTRIES, SEED))

-- Run moonwait over a script in a fresh dir; the result of H.run plus dir.
local function run(body, input, output, extra, opts)
  local d = H.tmpdir()
  H.script(d, body)
  opts = opts or {}
  opts.dir = d
  local r = H.run(("run --script script.lua --input %s --output %s %s"):format(H.q(input), H.q(output), extra or ""), opts)
  r.dir = d
  return r
end

local PASS = [[return { async_invoke = function(rec) return { rec } end }]]

-- A record with spellings a re-encoder would change: whitespace, key
-- order, 1.50, 1e2, a 64-bit integer, escapes, empty containers, UTF-8.
local function fancy(i)
  if i % 3 == 0 then return ('{ "id" : %d, "z" : "last" , "f": 1.50 }'):format(i) end
  if i % 3 == 1 then
    return ('{"z":"caf\\u00e9 \\"q\\" / \\\\","id":%d,"big":9007199254740993,"e":[],"o":{},"x":1e2}'):format(i)
  end
  return ('{"id":%d,"n":null,"t":true,"a":[1,{"b":[]}],"u":"\230\151\165\230\156\172"}'):format(i)
end

-- The input stream's entries by record id: { [id] = entry }.
local function by_record_id(entries, field)
  local t = {}
  for _, e in ipairs(entries) do t[H.json.decode(e.fields[field or "data"]).id] = e end
  return t
end

-- Decoded outputs: { [id] = decoded record }, asserting one per id.
local function outputs_by_id(entries)
  local t = {}
  for _, e in ipairs(entries) do
    local o = H.json.decode(e.fields.data)
    assert.is_nil(t[o.id], "id " .. tostring(o.id) .. " twice")
    t[o.id] = o
  end
  return t
end

-- Make entries pending on consumer `who` (never acked: a dead consumer)
-- with delivery count `deliveries` and idle far past any claim_idle_ms.
-- Returns their entry ids. The group must exist.
local function strand(srv, key, group, who, count, deliveries)
  local got = ST.call(srv, key, "XREADGROUP", "GROUP", group, who, "COUNT", count, "STREAMS", key, ">")
  local ids = {}
  for _, e in ipairs(got[1][2]) do
    ids[#ids + 1] = e[1]
    ST.call(srv, key, "XCLAIM", key, group, who, 0, e[1], "RETRYCOUNT", deliveries, "IDLE", 100000)
  end
  return ids
end

local function hostname()
  local p = io.popen("hostname")
  local h = p:read("*l")
  p:close()
  return h
end

local function escape(s) return (s:gsub("%p", "%%%0")) end

describe("redis streams", function()
  local redis

  setup(function() redis = servers.redis() end)
  teardown(function()
    ST.kill_all()
    ST.close(redis)
    redis.stop()
    H.cleanup()
  end)
  before_each(function() ST.call(redis, "x", "FLUSHALL") end)
  after_each(function()
    ST.kill_all()
    H.cleanup()
  end)

  it("passes 1,000 entries stream to stream exactly once, byte for byte, and acks them all", function()
    ST.fill(redis, "in", 1000, { record = fancy })
    local r = run(PASS, redis.url("stream=in&group=g&until=empty"), redis.url("stream=out"),
      "--capacity 100 --mode unordered")
    assert.equal(0, r.code, r.err)
    local out = ST.read(redis, "out")
    local rep = ST.check_once(out, 1000)
    assert.is_true(rep.ok, rep.summary)
    for _, e in ipairs(out) do
      assert.equal(2, #e.pairs, "one field per output entry")
      local id = H.json.decode(e.fields.data).id
      assert.equal(fancy(id), e.fields.data)   -- records leave exactly as they came
    end
    assert.equal(0, (ST.pending(redis, "in", "g")))
    assert.equal(1000, ST.xlen(redis, "in"))  -- the source acks, never deletes
    -- the group was created; the consumer is named HOSTNAME-PID by default
    local consumers = ST.consumers(redis, "in", "g")
    local names = {}
    for name in pairs(consumers) do names[#names + 1] = name end
    assert.equal(1, #names)
    assert.matches("^" .. escape(hostname()) .. "%-%d+$", names[1])
  end)

  it("gives the script ctx.source_id and ctx.deliveries (1 on first delivery)", function()
    ST.fill(redis, "in", 50)
    local r = run([[
return { async_invoke = function(rec, ctx)
  return { { id = rec.id, sid = ctx.source_id, sid_type = type(ctx.source_id), del = ctx.deliveries } }
end }
]], redis.url("stream=in&group=g&until=empty"), redis.url("stream=out"), "--mode unordered")
    assert.equal(0, r.code, r.err)
    local ins = by_record_id(ST.read(redis, "in"))
    local out = ST.read(redis, "out")
    assert.is_true(ST.check_once(out, 50).ok, ST.check_once(out, 50).summary)
    for _, e in ipairs(out) do
      local o = H.json.decode(e.fields.data)
      assert.equal(ins[o.id].id, o.sid)
      assert.equal("string", o.sid_type)
      assert.matches('"del":1[,}]', e.fields.data)   -- an integer, not 1.0
    end
  end)

  it("turns an entry without the data field into a record of its field/value pairs, as strings", function()
    ST.fill(redis, "in", 4, { fields = function(i)
      if i == 1 then return { "name", "Ada", "n", "42" } end
      if i == 2 then return { "data", '{"id":2,"n":42}' } end
      if i == 3 then return { "payload", '{"x":1}', "empty", "" } end
      return { "multi", "line\nbreak \"quoted\" caf\195\169" }
    end })
    local r = run(PASS, redis.url("stream=in&group=g&until=empty"), redis.url("stream=out"), "--mode ordered")
    assert.equal(0, r.code, r.err)
    local out = ST.read(redis, "out")
    assert.equal(4, #out)
    assert.same({ name = "Ada", n = "42" }, H.json.decode(out[1].fields.data))
    assert.equal('{"id":2,"n":42}', out[2].fields.data)
    assert.same({ payload = '{"x":1}', empty = "" }, H.json.decode(out[3].fields.data))
    assert.same({ multi = "line\nbreak \"quoted\" caf\195\169" }, H.json.decode(out[4].fields.data))
    assert.equal(0, (ST.pending(redis, "in", "g")))
  end)

  it("reads and writes the JSON in the field named by field=", function()
    ST.fill(redis, "in", 3, { fields = function(i)
      if i == 3 then return { "data", '{"id":3}' } end    -- no payload: a record of its pairs
      return { "payload", ('{"id":%d, "k":"v"}'):format(i), "other", "x" }
    end })
    local r = run(PASS, redis.url("stream=in&group=g&field=payload&until=empty"),
      redis.url("stream=out&field=body"), "--mode ordered")
    assert.equal(0, r.code, r.err)
    local out = ST.read(redis, "out")
    assert.equal(3, #out)
    assert.same({ "body", '{"id":1, "k":"v"}' }, out[1].pairs)
    assert.same({ "body", '{"id":2, "k":"v"}' }, out[2].pairs)
    assert.equal("body", out[3].pairs[1])
    assert.same({ data = '{"id":3}' }, H.json.decode(out[3].fields.body))
  end)

  it("starts a new group at start=$ and reuses an existing group from where it stands", function()
    ST.fill(redis, "in", 10)
    local r = run(PASS, redis.url("stream=in&group=g&start=$&until=empty"), redis.url("stream=out"))
    assert.equal(0, r.code, r.err)
    assert.equal(0, ST.xlen(redis, "out"))
    local entries = ST.read(redis, "in")
    assert.equal(entries[10].id, ST.groups(redis, "in").g["last-delivered-id"])
    ST.fill(redis, "in", 5, { first = 11 })
    r = run(PASS, redis.url("stream=in&group=g&until=empty"), redis.url("stream=out"))
    assert.equal(0, r.code, r.err)
    local rep = ST.check_once(ST.read(redis, "out"), { 11, 12, 13, 14, 15 })
    assert.is_true(rep.ok, rep.summary)
  end)

  it("writes a stream source to stdout, at least once: every record, all acked", function()
    ST.fill(redis, "in", 500)
    local r = run(PASS, redis.url("stream=in&group=g&until=empty"), "-", "--mode unordered --capacity 50")
    assert.equal(0, r.code, r.err)
    local rep = ST.check_once(ST.line_entries(r.out), 500)
    assert.is_true(rep.ok, rep.summary)   -- at least once; with no failure, once
    assert.equal(0, (ST.pending(redis, "in", "g")))
  end)

  it("sinks a file into a stream: one XADD per output record, in order", function()
    local lines = {}
    for i = 1, 500 do lines[i] = fancy(i) end
    local d = H.tmpdir()
    H.write(d .. "/in.jsonl", table.concat(lines, "\n") .. "\n")
    local r = run(PASS, d .. "/in.jsonl", redis.url("stream=sink"), "--mode ordered")
    assert.equal(0, r.code, r.err)
    local out = ST.read(redis, "sink")
    assert.equal(500, #out)
    for i, e in ipairs(out) do
      assert.same({ "data", lines[i] }, e.pairs)
    end
  end)

  it("sinks into a stream capped near maxlen", function()
    local lines = {}
    for i = 1, 2000 do lines[i] = ('{"id":%d}'):format(i) end
    local d = H.tmpdir()
    H.write(d .. "/in.jsonl", table.concat(lines, "\n") .. "\n")
    local r = run(PASS, d .. "/in.jsonl", redis.url("stream=sink&maxlen=100"), "--mode ordered")
    assert.equal(0, r.code, r.err)
    local out = ST.read(redis, "sink")
    -- approximate trimming (MAXLEN ~) removes whole nodes: at least 100, not far above
    assert.is_true(#out >= 100 and #out <= 300, "XLEN " .. #out)
    -- what is left is the newest records, in order, ending with the last
    for k = 1, #out do
      assert.equal(('{"id":%d}'):format(2000 - #out + k), out[k].fields.data)
    end
    local info = ST.call(redis, "sink", "XINFO", "STREAM", "sink")
    local added
    for k = 1, #info, 2 do if info[k] == "entries-added" then added = info[k + 1] end end
    assert.equal(2000, added)
  end)

  it("dead-letters failed records into a stream with their entry id and delivery count", function()
    ST.fill(redis, "in", 100)
    local r = run([[
return { async_invoke = function(rec, ctx)
  if rec.id % 10 == 0 then error("poison " .. rec.id, 0) end
  return { rec }
end }
]], redis.url("stream=in&group=g&until=empty"), redis.url("stream=out"),
      "--mode unordered --on-error dead-letter --dead-letter " .. H.q(redis.url("stream=dlq")))
    assert.equal(0, r.code, r.err)
    local good, bad = {}, {}
    for i = 1, 100 do
      if i % 10 == 0 then bad[#bad + 1] = i else good[#good + 1] = i end
    end
    local rep = ST.check_once(ST.read(redis, "out"), good)
    assert.is_true(rep.ok, "out: " .. rep.summary)
    local ins = by_record_id(ST.read(redis, "in"))
    local dlq = ST.read(redis, "dlq")
    rep = ST.check_once(dlq, bad, { id_of = function(o) return o.record and o.record.id end })
    assert.is_true(rep.ok, "dlq: " .. rep.summary)
    for _, e in ipairs(dlq) do
      assert.equal(2, #e.pairs)
      local o = H.json.decode(e.fields.data)
      local id = o.record.id
      assert.same({ id = id }, o.record)
      assert.matches("^poison " .. id .. " %(at script%.lua:2:", o.error)   -- as in the file dead letters
      assert.equal(1, o.attempts)
      assert.is_false(o.timed_out)
      assert.equal(ins[id].id, o.source_id)
      assert.equal(1, o.deliveries)
      assert.equal("number", type(o.elapsed_ms))
      assert.is_true(type(o.line) == "number" and o.line >= 1)
    end
    assert.equal(0, (ST.pending(redis, "in", "g")))   -- dead-lettered entries are acked too
  end)

  it("claims entries of a dead consumer: over max_deliveries to the dead letters uninvoked, the rest invoked", function()
    ST.fill(redis, "in", 30)
    ST.call(redis, "in", "XGROUP", "CREATE", "in", "g", "0")
    local poison = strand(redis, "in", "g", "dead", 5, 7)   -- ids 1-5: delivered 7 times
    local retried = strand(redis, "in", "g", "dead", 2, 2)  -- ids 6-7: twice
    assert.equal(5, #poison)
    assert.equal(2, #retried)
    local d = H.tmpdir()
    H.script(d, [[
return { async_invoke = function(rec, ctx)
  local f = assert(io.open("invoked", "a"))
  f:write(rec.id, "\n")
  f:close()
  return { { id = rec.id, del = ctx.deliveries } }
end }
]])
    local p = ST.spawn(("run --script script.lua --input %s --output %s --mode unordered --on-error dead-letter --dead-letter %s")
      :format(H.q(redis.url("stream=in&group=g&consumer=live&claim_idle_ms=200&max_deliveries=3")),
        H.q(redis.url("stream=out")), H.q(redis.url("stream=dlq"))), { dir = d })
    assert.is_truthy(H.wait_for(function()
      if not p.alive() then return "ended" end
      return ST.xlen(redis, "out") >= 25 and ST.xlen(redis, "dlq") >= 5 and ST.pending(redis, "in", "g") == 0
    end, 30) == true, "out " .. ST.xlen(redis, "out") .. ", dlq " .. ST.xlen(redis, "dlq") .. "\n" .. p.err())
    assert.is_true(p.alive(), "the consumer ended (exit " .. tostring(p.rc()) .. "): " .. p.err())
    p.stop()
    local expect = {}
    for i = 6, 30 do expect[#expect + 1] = i end
    local out = ST.read(redis, "out")
    local rep = ST.check_once(out, expect)
    assert.is_true(rep.ok, "out: " .. rep.summary)
    local outs = outputs_by_id(out)
    assert.equal(3, outs[6].del)    -- a third delivery is not more than max_deliveries=3
    assert.equal(3, outs[7].del)
    for i = 8, 30 do assert.equal(1, outs[i].del) end
    local dlq = ST.read(redis, "dlq")
    rep = ST.check_once(dlq, { 1, 2, 3, 4, 5 }, { id_of = function(o) return o.record and o.record.id end })
    assert.is_true(rep.ok, "dlq: " .. rep.summary)
    local ins = by_record_id(ST.read(redis, "in"))
    for _, e in ipairs(dlq) do
      local o = H.json.decode(e.fields.data)
      assert.same({ id = o.record.id }, o.record)
      assert.equal(ins[o.record.id].id, o.source_id)
      assert.is_true(o.deliveries > 3 and o.deliveries >= 7, "deliveries " .. tostring(o.deliveries))
      assert.matches("deliver", o.error:lower())
    end
    -- never invoked
    local invoked = {}
    for _, l in ipairs(H.lines(H.read(d .. "/invoked") or "")) do invoked[tonumber(l)] = true end
    for i = 1, 5 do assert.is_nil(invoked[i], "entry " .. i .. " was invoked") end
    for i = 6, 30 do assert.is_true(invoked[i], "entry " .. i .. " was not invoked") end
  end)

  it("with until=empty claims idle entries of other consumers before it ends", function()
    ST.fill(redis, "in", 50)
    ST.call(redis, "in", "XGROUP", "CREATE", "in", "g", "0")
    strand(redis, "in", "g", "dead", 10, 1)
    local r = run([[
return { async_invoke = function(rec, ctx) return { { id = rec.id, del = ctx.deliveries } } end }
]], redis.url("stream=in&group=g&until=empty&claim_idle_ms=1000"), redis.url("stream=out"), "--mode unordered")
    assert.equal(0, r.code, r.err)
    local out = ST.read(redis, "out")
    local rep = ST.check_once(out, 50)
    assert.is_true(rep.ok, rep.summary)
    local outs = outputs_by_id(out)
    for i = 1, 10 do assert.equal(2, outs[i].del) end
    for i = 11, 50 do assert.equal(1, outs[i].del) end
    assert.equal(0, (ST.pending(redis, "in", "g")))
  end)

  it("with until=empty runs a claim round after its last read (entries that went idle meanwhile)", function()
    ST.fill(redis, "fin", 60)
    ST.call(redis, "fin", "XGROUP", "CREATE", "fin", "g", "0")
    -- 5 entries pending on a dead consumer, idle 1 s of claim_idle_ms=2000:
    -- not claimable when the consumer starts
    local got = ST.call(redis, "fin", "XREADGROUP", "GROUP", "g", "dead", "COUNT", 5, "STREAMS", "fin", ">")
    for _, e in ipairs(got[1][2]) do
      ST.call(redis, "fin", "XCLAIM", "fin", "g", "dead", 0, e[1], "IDLE", 1000, "JUSTID")
    end
    -- The 55 others take at least 55 x 25 ms at capacity 1, so the dead
    -- entries pass 2 s idle before the last read finds nothing; the claim
    -- round that follows it takes them. (On a slow machine the periodic
    -- round, 2 s after the start, may take them first: the test still holds.)
    local r = run([[
local time = require "moonwait.time"
return { async_invoke = function(rec) time.sleep(0.025); return { rec } end }
]], redis.url("stream=fin&group=g&until=empty&claim_idle_ms=2000"), redis.url("stream=fout"), "--capacity 1")
    assert.equal(0, r.code, r.err)
    local rep = ST.check_once(ST.read(redis, "fout"), 60)
    assert.is_true(rep.ok, rep.summary)
    assert.equal(0, (ST.pending(redis, "fin", "g")))
  end)

  it("does not run an entry twice when its own claim round takes it back (records longer than claim_idle_ms)", function()
    ST.fill(redis, "long", 6)
    -- each record runs 1.5 s; a claim round (due every 100 ms, sent once
    -- the blocking read of up to 1 s is answered) takes back the entries
    -- idle that long, this consumer's own included. (No until=empty: it
    -- could end the input before a round came, leaving nothing to test.)
    local d = H.tmpdir()
    H.script(d, [[
local time = require "moonwait.time"
local log = require "moonwait.log"
return { async_invoke = function(rec) log.info("run " .. rec.id); time.sleep(1.5); return { rec } end }
]])
    local p = ST.spawn(("run --script script.lua --capacity 20 --input %s --output %s"):format(
      H.q(redis.url("stream=long&group=g&claim_idle_ms=100")), H.q(redis.url("stream=lout"))), { dir = d })
    assert.is_truthy(H.wait_for(function() return ST.xlen(redis, "lout") >= 6 end, 30), p.err())
    p.kill("TERM")
    assert.equal(143, p.wait(30), p.err())
    local runs = {}
    for id in p.err():gmatch("run (%d+)") do runs[tonumber(id)] = (runs[tonumber(id)] or 0) + 1 end
    for i = 1, 6 do assert.equal(1, runs[i], p.err()) end
    local rep = ST.check_once(ST.read(redis, "lout"), 6)
    assert.is_true(rep.ok, rep.summary)
  end)

  it("never holds more than --capacity entries, with a second consumer in the group", function()
    ST.fill(redis, "in", 80)
    local d = H.tmpdir()
    H.script(d, [[
local time = require "moonwait.time"
local who = os.getenv("WHO")
return { async_invoke = function(rec, ctx)
  time.sleep(0.2)
  rec.by = who
  return { rec }
end }
]])
    local function consumer(name, count)
      return ST.spawn(("run --script script.lua --input %s --output %s --capacity 5 --mode unordered"):format(
        H.q(redis.url("stream=in&group=g&until=empty&consumer=" .. name .. (count and ("&count=" .. count) or ""))),
        H.q(redis.url("stream=out"))), { dir = d, env = { WHO = name } })
    end
    local c1 = consumer("c1", 100)   -- count above capacity: capacity still bounds it
    local c2 = consumer("c2")
    local most = { c1 = 0, c2 = 0 }
    local polls = 0
    H.wait_for(function()
      local ok, count, per = pcall(ST.pending, redis, "in", "g")
      if ok then
        polls = polls + 1
        for name, n in pairs(per) do most[name] = math.max(most[name] or 0, n) end
      end
      return not c1.alive() and not c2.alive()
    end, 60)
    assert.equal(0, c1.rc(), c1.err())
    assert.equal(0, c2.rc(), c2.err())
    assert.is_true(polls > 10, "polled " .. polls .. " times")
    assert.is_true(most.c1 <= 5, "c1 held " .. most.c1)
    assert.is_true(most.c2 <= 5, "c2 held " .. most.c2)
    assert.equal(5, most.c1)   -- it was kept full
    local out = ST.read(redis, "out")
    local rep = ST.check_once(out, 80)
    assert.is_true(rep.ok, rep.summary)
    local by = { c1 = 0, c2 = 0 }
    for _, e in ipairs(out) do
      local o = H.json.decode(e.fields.data)
      by[o.by] = by[o.by] + 1
    end
    assert.is_true(by.c1 > 0 and by.c2 > 0, ("c1 %d, c2 %d"):format(by.c1, by.c2))
  end)

  it("never holds more than --capacity 1 entry while it claims a dead consumer's idle entries", function()
    -- A claim (or read) started from a callback once used the room as it
    -- was before the last record was taken: one entry more than capacity
    -- was claimed while a record ran, and sat fetched for its whole run.
    ST.fill(redis, "in", 10)
    ST.call(redis, "in", "XGROUP", "CREATE", "in", "g", "0")
    strand(redis, "in", "g", "dead", 5, 1)
    local d = H.tmpdir()
    H.script(d, [[
local time = require "moonwait.time"
return { async_invoke = function(rec) time.sleep(0.4) return { rec } end }
]])
    local p = ST.spawn(("run --script script.lua --input %s --output %s --capacity 1"):format(
      H.q(redis.url("stream=in&group=g&until=empty&consumer=me&claim_idle_ms=150&max_deliveries=1000")),
      H.q(redis.url("stream=out"))), { dir = d })
    local polls, over = 0, 0
    H.wait_for(function()
      local ok, _, per = pcall(ST.pending, redis, "in", "g")
      if ok then
        polls = polls + 1
        if (per.me or 0) > 1 then over = over + 1 end
      end
      return not p.alive()
    end, 60)
    assert.equal(0, p.rc(), p.err())
    assert.is_true(polls > 20, "polled " .. polls .. " times")
    -- (an entry committing while the next is read can be seen for a
    -- moment; one held beyond capacity for a record's run is not that)
    assert.is_true(over * 5 <= polls, ("more than 1 entry pending on me in %d of %d polls"):format(over, polls))
    local rep = ST.check_once(ST.read(redis, "out"), 10)
    assert.is_true(rep.ok, rep.summary)
  end)

  it("asks for fewer entries at a time when a read or claim is over the reply limit; one entry over it fails", function()
    -- (MOONWAIT_REDIS_MAX_REPLY lowers the 256 MiB limit, so that 40
    -- entries of 10 kB stand for a few hundred entries of megabytes)
    local pad = ("x"):rep(10000)
    ST.fill(redis, "in", 40, { record = function(i) return ('{"id":%d,"pad":"%s"}'):format(i, pad) end })
    ST.call(redis, "in", "XGROUP", "CREATE", "in", "g", "0")
    strand(redis, "in", "g", "dead", 20, 1)
    local env = { MOONWAIT_REDIS_MAX_REPLY = "65536" }
    local d = H.tmpdir()
    H.script(d, PASS)
    local p = ST.spawn(("run --script script.lua --input %s --output %s --capacity 100"):format(
      H.q(redis.url("stream=in&group=g&until=empty&claim_idle_ms=100")), H.q(redis.url("stream=out"))),
      { dir = d, env = env })
    assert.is_truthy(H.wait_for(function() return not p.alive() end, 60), "still running: " .. p.err())
    assert.equal(0, p.rc(), p.err())
    assert.matches("XREADGROUP of %d+ entries was over the reply limit; asking for %d+ at a time", p.err())
    assert.matches("XAUTOCLAIM of %d+ entries was over the reply limit; asking for %d+ at a time", p.err())
    local rep = ST.check_once(ST.read(redis, "out"), 40)
    assert.is_true(rep.ok, rep.summary)
    assert.equal(0, (ST.pending(redis, "in", "g")))
    -- one entry alone over the limit: the run fails saying so (it no
    -- longer reconnects and reads it again for ever)
    ST.fill(redis, "in", 1, { first = 41, record = function(i) return ('{"id":%d,"pad":"%s"}'):format(i, pad:rep(8)) end })
    p = ST.spawn(("run --script script.lua --input %s --output %s"):format(
      H.q(redis.url("stream=in&group=g&until=empty")), H.q(redis.url("stream=out"))), { dir = d, env = env })
    assert.is_truthy(H.wait_for(function() return not p.alive() end, 60), "still running: " .. p.err())
    assert.equal(1, p.rc(), p.err())
    assert.matches("XREADGROUP of one entry of in: bad reply: a bulk of %d+ bytes: more than max_reply_bytes", p.err())
  end)

  it("fails at once (exit 1, naming it) when a commit fails: the output key turned into a string mid-run", function()
    -- (it once waited out the 5 s closing grace for commits that could
    -- no longer be sent)
    ST.fill(redis, "in", 200)
    local d = H.tmpdir()
    H.script(d, [[
local time = require "moonwait.time"
return { async_invoke = function(rec) time.sleep(0.1) return { rec } end }
]])
    local p = ST.spawn(("run --script script.lua --input %s --output %s --capacity 10"):format(
      H.q(redis.url("stream=in&group=g&until=empty")), H.q(redis.url("stream=out"))), { dir = d })
    assert.is_truthy(H.wait_for(function() return ST.xlen(redis, "out") > 0 end, 30), p.err())
    ST.call(redis, "out", "DEL", "out")
    ST.call(redis, "out", "SET", "out", "x")
    assert.is_truthy(H.wait_for(function() return not p.alive() end, 2), "still running 2 s later: " .. p.err())
    assert.equal(1, p.rc(), p.err())
    assert.matches("commit to out: WRONGTYPE", p.err())
    assert.is_true(ST.pending(redis, "in", "g") > 0)   -- what was not committed stays pending
  end)

  it("rides out a Redis at maxclients (new connections refused with an error): back-off, then exactly once", function()
    -- It once took the server's "ERR max number of clients reached" for
    -- the answer to its first command and failed the run; and a commit
    -- whose write failed at once (the server had reset the connection)
    -- was never sent again, so the run hung for ever in its drain.
    ST.fill(redis, "in", 300)
    local d = H.tmpdir()
    H.script(d, [[
local time = require "moonwait.time"
return { async_invoke = function(rec) time.sleep(0.05) return { rec } end }
]])
    local p = ST.spawn(("run --script script.lua --input %s --output %s --capacity 20"):format(
      H.q(redis.url("stream=in&group=g&until=empty&consumer=c")), H.q(redis.url("stream=out"))), { dir = d })
    assert.is_truthy(H.wait_for(function() return ST.xlen(redis, "out") >= 20 end, 30), p.err())
    -- (this helper's own connection stays; every other one is dropped)
    ST.call(redis, "x", "CONFIG", "SET", "maxclients", "1")
    finally(function() ST.call(redis, "x", "CONFIG", "SET", "maxclients", "10000") end)
    ST.call(redis, "x", "CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
    os.execute("sleep 4")
    assert.is_true(p.alive(), "it ended while the server refused connections: " .. p.err())
    ST.call(redis, "x", "CONFIG", "SET", "maxclients", "10000")
    assert.is_truthy(H.wait_for(function() return not p.alive() end, 30), "still running: " .. p.err())
    assert.equal(0, p.rc(), p.err())
    local rep = ST.check_once(ST.read(redis, "out"), 300)
    assert.is_true(rep.ok, rep.summary)
    assert.equal(0, (ST.pending(redis, "in", "g")))
    -- dialled with back-off, not 10 times a second per connection
    local _, lost = p.err():gsub("connection lost", "")
    assert.is_true(lost <= 20, lost .. " connection losses in 4 s:\n" .. p.err())
  end)

  describe("refuses bad configuration with exit 2, naming the problem", function()
    -- The message must name it outside an echo of the URL itself.
    local function refused(input, output, extra, pattern)
      ST.fill(redis, "in", 5)
      local r = run(PASS, input, output, extra)
      assert.equal(2, r.code, r.err)
      local msg = r.err:gsub(escape(input), ""):gsub(escape(output), "")
      assert.matches(pattern, msg:lower())
      -- nothing was read or written
      assert.same({}, ST.groups(redis, "in"))
      assert.equal(0, ST.xlen(redis, "out"))
      return r
    end

    it("an unknown parameter", function()
      refused(redis.url("strem=in&group=g&until=empty"), redis.url("stream=out"), "", "strem")
      refused(redis.url("stream=in&group=g&until=empty"), redis.url("stream=out&maxlenn=5"), "", "maxlenn")
    end)

    it("no group", function()
      refused(redis.url("stream=in&until=empty"), redis.url("stream=out"), "", "group")
    end)

    it("a password whose ? or @ is not %-escaped, without showing any of it", function()
      for _, url in ipairs({
        ("redis://:s3?cr3t@127.0.0.1:%d?stream=in&group=g&until=empty"):format(redis.port),
        ("redis://:s3@cr3t/x?y@127.0.0.1:%d?stream=in&group=g&until=empty"):format(redis.port),
      }) do
        local r = run(PASS, url, redis.url("stream=out"))
        assert.equal(2, r.code, r.err)
        assert.is_nil(r.err:find("cr3t", 1, true), r.err)
        assert.is_nil(r.err:find("s3", 1, true), r.err)
        assert.matches("%%%-escape", r.err)
      end
    end)

    it("an output or dead-letter stream that is the input's own stream", function()
      -- (it once ran, reading back its own outputs: the stream grew for
      -- ever and until=empty never came)
      refused(redis.url("stream=in&group=g&until=empty"), redis.url("stream=in"), "", "same stream")
      refused(redis.url("stream=in&group=g&until=empty"), redis.url("stream=out"),
        "--on-error dead-letter --dead-letter " .. H.q(redis.url("stream=in")), "same stream")
      assert.equal(5 * 2, ST.xlen(redis, "in"))   -- (refused() added 5 each time; nothing else)
    end)

    it("--checkpoint-dir with a redis source", function()
      local d = H.tmpdir()
      refused(redis.url("stream=in&group=g&until=empty"), redis.url("stream=out"),
        "--checkpoint-dir " .. H.q(d .. "/cp"), "checkpoint")
      assert.is_false(H.exists(d .. "/cp"))   -- refused before anything was made
    end)

    it("a wrong password (and the right one works)", function()
      local locked = servers.redis{ password = "s3cret" }
      finally(function() ST.close(locked); locked.stop() end)
      ST.fill(locked, "in", 5)
      local bad = ("redis://:wrong@127.0.0.1:%d?stream=in&group=g&until=empty"):format(locked.port)
      local r = run(PASS, bad, locked.url("stream=out"))
      assert.equal(2, r.code, r.err)
      assert.matches("password", r.err:gsub(escape(bad), ""):lower())
      assert.same({}, ST.groups(locked, "in"))
      -- no password at all: refused too
      local none = ("redis://127.0.0.1:%d?stream=in&group=g&until=empty"):format(locked.port)
      r = run(PASS, none, locked.url("stream=out"))
      assert.equal(2, r.code, r.err)
      local msg = r.err:gsub(escape(none), ""):lower()
      assert.is_truthy(msg:find("auth", 1, true) or msg:find("password", 1, true), r.err)
      r = run(PASS, locked.url("stream=in&group=g&until=empty"), locked.url("stream=out"))
      assert.equal(0, r.code, r.err)
      assert.is_true(ST.check_once(ST.read(locked, "out"), 5).ok)
    end)
  end)

  it(("loses and duplicates nothing when consumers are killed (-9) at random moments: %d trials"):format(TRIALS), function()
    local d = H.tmpdir()
    H.script(d, ST.TRIAL_SCRIPT)
    local rng = ST.rng(SEED)
    local landed = 0
    for t = 1, TRIALS do
      local ok, why, l = ST.kill_trial({
        srv = redis, group = "g", n = ENTRIES, consumers = 3, kills = KILLS, claim_idle_ms = CLAIM_MS, rng = rng,
        streams = { { input = "in", output = "out" } }, dir = d, tag = "t" .. t,
        input_url = function(name)
          return redis.url(("stream=in&group=g&consumer=%s&claim_idle_ms=%d&until=empty"):format(name, CLAIM_MS))
        end,
        output_url = redis.url("stream=out"),
        args = ST.TRIAL_ARGS,
      })
      assert(ok, ("trial %d of %d failed (replay with MOONWAIT_STREAMS_SEED=%d): %s"):format(t, TRIALS, SEED, tostring(why)))
      landed = landed + l
    end
    io.stderr:write(("# streams kill harness: %d of %d kills landed\n"):format(landed, TRIALS * KILLS))
    -- most kills must hit a running consumer (one may have ended already)
    assert.is_true(landed >= math.ceil(TRIALS * KILLS / 2), ("only %d of %d kills landed"):format(landed, TRIALS * KILLS))
  end)

  it("fences a paused consumer whose entries were claimed (no duplicate when it wakes)", function()
    ST.fill(redis, "in", 100)
    local d = H.tmpdir()
    -- A's records wait for the file `release`, so A holds its entries
    H.script(d, [[
local time = require "moonwait.time"
return { async_invoke = function(rec, ctx)
  while true do
    local f = io.open("release")
    if f then f:close() break end
    time.sleep(0.02)
  end
  local f = assert(io.open("a-done", "a"))
  f:write(rec.id, "\n")
  f:close()
  rec.by = "A"
  return { rec }
end }
]], "a.lua")
    H.script(d, [[return { async_invoke = function(rec) rec.by = "B"; return { rec } end }]], "b.lua")
    local a = ST.spawn(("run --script a.lua --timeout 0 --capacity 5 --input %s --output %s"):format(
      H.q(redis.url("stream=in&group=g&consumer=A&claim_idle_ms=300&until=empty")), H.q(redis.url("stream=out"))),
      { dir = d })
    assert.is_true(H.wait_for(function()
      if not a.alive() then return "ended" end
      local ok, _, per = pcall(ST.pending, redis, "in", "g")
      return ok and per.A == 5
    end, 30) == true, "A never held 5 (exit " .. tostring(a.rc()) .. "): " .. a.err())
    a.kill("STOP")
    local held = {}
    local ins = {}
    for _, e in ipairs(ST.read(redis, "in")) do ins[e.id] = H.json.decode(e.fields.data).id end
    for _, e in ipairs(ST.pending_entries(redis, "in", "g")) do
      assert.equal("A", e.consumer)
      held[#held + 1] = ins[e.id]
    end
    assert.equal(5, #held)
    local b = ST.spawn(("run --script b.lua --capacity 10 --input %s --output %s"):format(
      H.q(redis.url("stream=in&group=g&consumer=B&claim_idle_ms=300")), H.q(redis.url("stream=out"))), { dir = d })
    assert.is_true(H.wait_for(function()
      if not b.alive() then return "ended" end
      return ST.xlen(redis, "out") >= 100 and ST.pending(redis, "in", "g") == 0
    end, 30) == true, "B did not take over: out " .. ST.xlen(redis, "out") .. ", exit " .. tostring(b.rc()) .. "\n" .. b.err())
    b.stop()
    -- wake A: its five records complete and try to commit entries it no longer owns
    H.write(d .. "/release", "")
    a.kill("CONT")
    assert.is_truthy(H.wait_for(function() return #H.lines(H.read(d .. "/a-done") or "") == 5 end, 30),
      "A's records did not complete (exit " .. tostring(a.rc()) .. "): " .. a.err())
    assert.is_truthy(a.wait(30), "A did not end: " .. a.err())
    local out = ST.read(redis, "out")
    local rep = ST.check_once(out, 100)
    assert.is_true(rep.ok, rep.summary .. "\nA (exit " .. tostring(a.rc()) .. "): " .. a.err())
    local outs = outputs_by_id(out)
    for _, id in ipairs(held) do assert.equal("B", outs[id].by, "entry " .. id) end
    assert.equal(0, (ST.pending(redis, "in", "g")))
  end)
end)

describe("redis streams across a redis restart (AOF, appendfsync always)", function()
  local redis
  setup(function() redis = servers.redis{ aof = true } end)
  teardown(function()
    ST.kill_all()
    ST.close(redis)
    redis.stop()
    H.cleanup()
  end)

  it("reconnects and ends exactly once", function()
    ST.fill(redis, "in", 3000)
    local d = H.tmpdir()
    H.script(d, [[
local time = require "moonwait.time"
return { async_invoke = function(rec) time.sleep(0.01) return { rec } end }
]])
    local p = ST.spawn(("run --script script.lua --capacity 10 --mode unordered --input %s --output %s"):format(
      H.q(redis.url("stream=in&group=g&until=empty")), H.q(redis.url("stream=out"))), { dir = d })
    assert.is_true(H.wait_for(function()
      if not p.alive() then return "ended" end
      return ST.xlen(redis, "out") >= 300
    end, 30) == true, "exit " .. tostring(p.rc()) .. ": " .. p.err())
    redis.restart()
    local after = ST.xlen(redis, "out")
    assert.is_true(after < 3000, "the run ended before the restart: " .. after)
    assert.is_true(p.alive(), "the consumer did not outlive the restart: " .. p.err())
    assert.equal(0, p.wait(120), p.err())
    local rep = ST.check_once(ST.read(redis, "out"), 3000)
    assert.is_true(rep.ok, rep.summary)
    assert.equal(0, (ST.pending(redis, "in", "g")))
  end)

  it("a SIGTERM while Redis is away ends after the 5 s wait for commits, not when Redis is back", function()
    -- (its end waited for the commits of what it had completed for as
    -- long as Redis was away: minutes, deaf to the first signal)
    ST.fill(redis, "in2", 500)
    local d = H.tmpdir()
    H.script(d, [[
local time = require "moonwait.time"
return { async_invoke = function(rec) time.sleep(0.05) return { rec } end }
]])
    local cmd = "run --script script.lua --capacity 10 --mode unordered --input %s --output %s"
    local p = ST.spawn(cmd:format(H.q(redis.url("stream=in2&group=g&consumer=c")), H.q(redis.url("stream=out2"))),
      { dir = d })
    assert.is_truthy(H.wait_for(function() return ST.xlen(redis, "out2") >= 20 end, 30), p.err())
    ST.close(redis)
    redis.stop()
    os.execute("sleep 0.5")
    p.kill("TERM")
    assert.is_truthy(p.wait(15), "still running 15 s after SIGTERM: " .. p.err())
    assert.equal(1, p.rc(), p.err())
    assert.matches("no answer to a commit for 5000 ms at the end %(the connection is down%)", p.err())
    redis.restart()
    -- nothing lost: the same consumer takes up what was left pending
    p = ST.spawn(cmd:format(H.q(redis.url("stream=in2&group=g&consumer=c&until=empty")), H.q(redis.url("stream=out2"))),
      { dir = d })
    assert.equal(0, p.wait(120), p.err())
    local rep = ST.check_once(ST.read(redis, "out2"), 500)
    assert.is_true(rep.ok, rep.summary)
    assert.equal(0, (ST.pending(redis, "in2", "g")))
  end)
end)

describe("redis streams: what a new user ran into", function()
  local redis

  setup(function() redis = servers.redis() end)
  teardown(function()
    ST.kill_all()
    ST.close(redis)
    redis.stop()
    H.cleanup()
  end)

  it("refuses an output or dead-letter stream that is the input stream (it would read its outputs for ever)", function()
    ST.fill(redis, "loop", 3)
    local r = run(PASS, redis.url("stream=loop&group=g&until=empty"), redis.url("stream=loop"))
    assert.equal(2, r.code, r.err)
    assert.matches("--input and --output name the same stream", r.err, 1, true)
    -- the same server under another name is the same server
    local other = redis.url("stream=loop&group=g&until=empty"):gsub("127%.0%.0%.1", "localhost")
    r = run(PASS, redis.url("stream=in2&group=g&until=empty"), redis.url("stream=o2"),
      "--on-error dead-letter --dead-letter " .. H.q(other:gsub("group=g&until=empty", "")))
    assert.equal(0, r.code, r.err)
    r = run(PASS, other, redis.url("stream=loop"))
    assert.equal(2, r.code, r.err)
    assert.matches("--output loop: the stream --input reads", r.err, 1, true)
    assert.equal(3, ST.xlen(redis, "loop"))
  end)

  it("commits exactly once when the output names the input's server differently (localhost, 127.0.0.1)", function()
    ST.fill(redis, "lh", 5)
    local out = redis.url("stream=lhout"):gsub("127%.0%.0%.1", "localhost")
    local r = run(PASS, redis.url("stream=lh&group=g&until=empty"), out)
    assert.equal(0, r.code, r.err)
    assert.matches("exactly once", r.err, 1, true)
    assert.is_true(ST.check_once(ST.read(redis, "lhout"), 5).ok)
  end)

  it("says at start that a file dead-letter route makes it at least once", function()
    ST.fill(redis, "alo", 3)
    local r = run(PASS, redis.url("stream=alo&group=g&until=empty"), redis.url("stream=aloout"),
      "--on-error dead-letter --dead-letter dl.jsonl")
    assert.equal(0, r.code, r.err)
    assert.matches("at least once (--dead-letter is not a Redis stream", r.err, 1, true)
  end)

  it("appends to a file output across restarts (its earlier lines were acked)", function()
    ST.fill(redis, "app", 4)
    local d = H.tmpdir()
    local r1 = run(PASS, redis.url("stream=app&group=g&until=empty"), d .. "/out.jsonl")
    assert.equal(0, r1.code, r1.err)
    ST.fill(redis, "app", 2, { first = 5 })
    local r2 = run(PASS, redis.url("stream=app&group=g&until=empty"), d .. "/out.jsonl")
    assert.equal(0, r2.code, r2.err)
    assert.equal(6, #H.lines(H.read(d .. "/out.jsonl")))
  end)

  it("fails, naming the group, when the group is destroyed mid-run (never reads the stream again from start)", function()
    ST.fill(redis, "gone", 200)
    local d = H.tmpdir()
    H.script(d, [[
local time = require "moonwait.time"
return { async_invoke = function(rec) time.sleep(0.01); return { rec } end }
]])
    local p = ST.spawn(("run --script script.lua --capacity 5 --input %s --output %s"):format(
      H.q(redis.url("stream=gone&group=g")), H.q(redis.url("stream=goneout"))), { dir = d })
    assert.is_truthy(H.wait_for(function() return ST.xlen(redis, "goneout") >= 5 end, 20))
    ST.call(redis, "gone", "XGROUP", "DESTROY", "gone", "g")
    assert.equal(1, p.wait(30), p.err())
    assert.matches('the group "g" of stream "gone" is gone', p.err(), 1, true)
    assert.is_true(ST.xlen(redis, "goneout") < 200)
  end)

  it("on SIGTERM finishes and commits the records in flight, then exits 143", function()
    ST.fill(redis, "term", 100)
    local d = H.tmpdir()
    H.script(d, [[
local time = require "moonwait.time"
return { async_invoke = function(rec) time.sleep(0.2); return { rec } end }
]])
    local p = ST.spawn(("run --script script.lua --capacity 10 --input %s --output %s"):format(
      H.q(redis.url("stream=term&group=g")), H.q(redis.url("stream=termout"))), { dir = d })
    -- (pcall: until moonwait has created the group, XPENDING answers NOGROUP;
    -- a slow start, under ASan, met that)
    assert.is_truthy(H.wait_for(function()
      local ok, n = pcall(ST.pending, redis, "term", "g")
      return ok and n == 10
    end, 20))
    p.kill("TERM")
    assert.equal(143, p.wait(30), p.err())
    assert.matches("finishing and committing the 10 records in flight", p.err(), 1, true)
    -- what it started is committed; nothing is left pending on it
    assert.equal(0, (ST.pending(redis, "term", "g")))
    assert.is_true(ST.check_once(ST.read(redis, "termout"), ST.xlen(redis, "termout")).ok)
  end)

  it("counts a claimed entry's delivery once (its own pending entries are re-read before the claim)", function()
    ST.fill(redis, "cnt", 3)
    ST.call(redis, "cnt", "XGROUP", "CREATE", "cnt", "g", "0")
    strand(redis, "cnt", "g", "dead", 3, 1)
    local r = run([[
return { async_invoke = function(rec, ctx) return { { id = rec.id, del = ctx.deliveries } } end }
]], redis.url("stream=cnt&group=g&until=empty&claim_idle_ms=50"), redis.url("stream=cntout"))
    assert.equal(0, r.code, r.err)
    for _, e in ipairs(ST.read(redis, "cntout")) do
      assert.equal(2, H.json.decode(e.fields.data).del)
    end
  end)

  it("names the parameter or the fix in the server's refusals", function()
    ST.call(redis, "str", "SET", "str", "x")
    local r = run(PASS, redis.url("stream=str&group=g"), redis.url("stream=o"))
    assert.equal(2, r.code)
    assert.matches('key "str" holds a string, not a stream', r.err, 1, true)
    r = run(PASS, redis.url("stream=s&group=g&start=latest"), redis.url("stream=o"))
    assert.equal(2, r.code)
    assert.matches('parameter "start" must be 0, $ or an entry id', r.err, 1, true)
    r = run(PASS, (redis.url("stream=s&group=g"):gsub("^redis://", "rediss://")), redis.url("stream=o"))
    assert.equal(2, r.code)
    assert.matches("rediss://", r.err, 1, true)
    local secured = servers.redis{ password = "p@ss" }
    local ok, err = pcall(function()
      local u = "redis://127.0.0.1:" .. secured.port .. "?stream=s&group=g&until=empty"
      r = run(PASS, u, "-")
      assert.equal(2, r.code)
      assert.matches("NOAUTH.*:PASSWORD@", r.err)
      -- a raw '@' in the password: the last one ends it, and the message hides it all
      r = run(PASS, "redis://:p@ss@127.0.0.1:" .. secured.port .. "?stream=s&group=g&until=empty", "-")
      assert.equal(0, r.code, r.err)
      assert.is_falsy(r.err:find("ss@", 1, true), r.err)
    end)
    secured.stop()
    assert(ok, err)
  end)
end)

describe("redis streams with the output on another server (at least once)", function()
  local redis, other
  setup(function()
    redis = servers.redis()
    -- a restart it takes a while to load: clients see -LOADING meanwhile
    other = servers.redis{ aof = true, extra = "--key-load-delay 200 --loading-process-events-interval-bytes 1024" }
  end)
  teardown(function()
    ST.kill_all()
    ST.close(redis)
    ST.close(other)
    redis.stop()
    other.stop()
    H.cleanup()
  end)

  it("rides out the output server's restart while it loads (-LOADING), every entry written, all acked", function()
    -- (an XADD answered -LOADING failed the run: "write error: XADD:
    -- LOADING Redis is loading the dataset in memory")
    ST.fill(other, "ballast", 20000)   -- what it loads, slowly
    ST.fill(redis, "in", 2000)
    local d = H.tmpdir()
    H.script(d, [[
local time = require "moonwait.time"
return { async_invoke = function(rec) time.sleep(0.02) return { rec } end }
]])
    local p = ST.spawn(("run --script script.lua --capacity 20 --mode unordered --input %s --output %s"):format(
      H.q(redis.url("stream=in&group=g&until=empty&consumer=c")), H.q(other.url("stream=out"))), { dir = d })
    assert.is_truthy(H.wait_for(function() return ST.xlen(other, "out") >= 100 end, 30), p.err())
    ST.close(other)
    other.restart()
    assert.equal(0, p.wait(120), p.err())
    assert.matches("LOADING", p.err())   -- (it did meet the loading server)
    local seen = {}
    for _, e in ipairs(ST.read(other, "out")) do seen[H.json.decode(e.fields.data).id] = true end
    for i = 1, 2000 do assert.is_true(seen[i], "entry " .. i .. " is not in the output") end
    assert.equal(0, (ST.pending(redis, "in", "g")))
  end)
end)

describe("redis streams on a cluster (3 masters, 4 partitions)", function()
  local cluster
  local P, N = 4, 500
  setup(function() cluster = servers.redis_cluster{ masters = 3 } end)
  teardown(function()
    ST.kill_all()
    if cluster then ST.close(cluster); cluster.stop() end
    H.cleanup()
  end)

  it("maps in{i} to out{i} exactly once with 2 processes, one killed (-9) and restarted", function()
    local d = H.tmpdir()
    H.script(d, ST.TRIAL_SCRIPT)
    local streams = {}
    for i = 0, P - 1 do streams[#streams + 1] = { input = ("in{%d}"):format(i), output = ("out{%d}"):format(i) } end
    -- the partitions are spread over the masters (so this is a cluster run)
    local nodes = {}
    for _, s in ipairs(streams) do nodes[cluster.port_for(s.input)] = true end
    assert.is_true(next(nodes, next(nodes)) ~= nil, "all partitions on one node")
    local rng = ST.rng(SEED + 7919)
    local total = 0
    for t = 1, 3 do
      local ok, why, landed = ST.kill_trial({
        srv = cluster, group = "g", n = N, consumers = 2, kills = 1, claim_idle_ms = CLAIM_MS, rng = rng,
        streams = streams, dir = d, tag = "t" .. t,
        input_url = function(name)
          return ("redis+cluster://%s?stream=in&partitions=%d&group=g&consumer=%s&claim_idle_ms=%d&until=empty")
            :format(cluster.url_hosts, P, name, CLAIM_MS)
        end,
        output_url = ("redis+cluster://%s?stream=out&partitions=%d"):format(cluster.url_hosts, P),
        args = ST.TRIAL_ARGS,
      })
      -- (each output partition must hold exactly its own input's records)
      assert(ok, ("cluster trial %d failed (replay with MOONWAIT_STREAMS_SEED=%d): %s"):format(t, SEED, tostring(why)))
      total = total + landed
    end
    assert.is_true(total >= 2, ("only %d of 3 kills landed"):format(total))
  end)
end)

describe("redis streams on a cluster: a partition's slot migrated mid-run", function()
  local cluster
  local P, N = 4, 600
  setup(function() cluster = servers.redis_cluster{ masters = 3 } end)
  teardown(function()
    ST.kill_all()
    if cluster then ST.close(cluster); cluster.stop() end
    H.cleanup()
  end)

  -- The slot of in{0} (and out{0}: the same hash tag) moves to another
  -- master while one consumer runs, by hand as `redis-cli --cluster
  -- reshard` does it: IMPORTING on the target, MIGRATING on the source,
  -- MIGRATE of both keys (the group and its pending entries go with
  -- in{0}), SETSLOT NODE on every master (the target first). A command the
  -- consumer sends between MIGRATE and SETSLOT NODE gets ASK (moonwait
  -- goes to the target and prefixes its commands with ASKING, silently);
  -- one sent after gets MOVED (said on stderr); which one comes first is a
  -- race, usually ASK. So a second migration, target to the third master,
  -- is done with the consumer stopped (SIGSTOP) until every master has the
  -- new owner: its connections still point at the second master, so its
  -- next command for partition 0 gets MOVED, certainly.
  it("follows in{0}'s slot to another master, by ASK or MOVED, then certainly by MOVED, and ends exactly once", function()
    -- one handle per node (ST.call sends to srv.port when srv has no port_for)
    local node, id = {}, {}
    for _, port in ipairs(cluster.ports) do node[port] = { port = port } end
    finally(function() for _, n in pairs(node) do ST.close(n) end end)
    local function on(port, ...) return ST.call(node[port], "x", ...) end
    for _, port in ipairs(cluster.ports) do id[port] = on(port, "CLUSTER", "MYID") end
    local slot = on(cluster.ports[1], "CLUSTER", "KEYSLOT", "in{0}")
    assert.equal(slot, on(cluster.ports[1], "CLUSTER", "KEYSLOT", "out{0}"))
    local first = cluster.port_for("in{0}")
    local second, third
    for _, port in ipairs(cluster.ports) do
      if port ~= first then
        if second then third = port else second = port end
      end
    end
    -- ASKING on a node: only a consumer that followed an ASK sends it
    local function asking_calls(port)
      return tonumber(on(port, "INFO", "commandstats"):match("cmdstat_asking:calls=(%d+)") or 0)
    end

    for i = 0, P - 1 do
      local key = ("in{%d}"):format(i)
      ST.fill(cluster, key, N, { record = function(k) return ('{"id":%d,"src":"%s"}'):format(k, key) end })
    end
    local d = H.tmpdir()
    H.script(d, ST.TRIAL_SCRIPT)   -- 5 ms a record
    local p = ST.spawn(("run --script script.lua --capacity 20 --mode unordered --input %s --output %s"):format(
      H.q(("redis+cluster://%s?stream=in&partitions=%d&group=g&consumer=c1&claim_idle_ms=2000&until=empty")
        :format(cluster.url_hosts, P)),
      H.q(("redis+cluster://%s?stream=out&partitions=%d"):format(cluster.url_hosts, P))), { dir = d, timeout = 120 })
    local function why() return ("(consumer exit %s)\n%s"):format(tostring(p.rc()), p.err()) end

    -- Move the slot from `from` to `to`; the output partition 0 had when
    -- the keys left `from` (checked to be short of N: work was left).
    local function migrate(from, to)
      assert.equal("OK", on(to, "CLUSTER", "SETSLOT", slot, "IMPORTING", id[from]))
      assert.equal("OK", on(from, "CLUSTER", "SETSLOT", slot, "MIGRATING", id[to]))
      local done = on(from, "XLEN", "out{0}")
      assert.is_true(p.alive(), "the consumer ended before the migration " .. why())
      assert.is_true(done < N, ("partition 0 was done before the migration (%d) %s"):format(done, why()))
      assert.equal("OK", on(from, "MIGRATE", "127.0.0.1", to, "", 0, 5000, "KEYS", "in{0}", "out{0}"))
      assert.same({}, on(from, "CLUSTER", "GETKEYSINSLOT", slot, 10))
      assert.equal("OK", on(to, "CLUSTER", "SETSLOT", slot, "NODE", id[to]))
      assert.equal("OK", on(from, "CLUSTER", "SETSLOT", slot, "NODE", id[to]))
      for _, port in ipairs(cluster.ports) do
        if port ~= to and port ~= from then assert.equal("OK", on(port, "CLUSTER", "SETSLOT", slot, "NODE", id[to])) end
      end
      -- the helpers' own map of keys to nodes
      cluster._st_ports["in{0}"], cluster._st_ports["out{0}"] = nil, nil
      assert.equal(to, cluster.port_for("in{0}"))
      return done
    end

    -- 1. with the consumer running
    assert.is_true(ST.poll(function()
      if not p.alive() then return "ended" end
      return ST.xlen(cluster, "out{0}") >= 30
    end, 30, 2) == true, "no output on out{0} " .. why())
    local asked = asking_calls(second)
    local done1 = migrate(first, second)
    -- redirected: MOVED (on stderr) or ASK (ASKING sent to the new master)
    assert.is_true(ST.poll(function()
      if not p.alive() then return "ended" end
      return p.err():find("in{0} moved to 127.0.0.1:" .. second .. " (MOVED)", 1, true) or asking_calls(second) > asked
    end, 30, 2) and p.alive(), "the consumer did not follow the slot to " .. second .. " " .. why())
    local path1 = p.err():find("(MOVED)", 1, true) and "MOVED" or "ASK"

    -- 2. with the consumer stopped: a MOVED for certain when it goes on
    p.kill("STOP")
    assert.is_truthy(ST.poll(function()
      return ((H.read("/proc/" .. p.pid .. "/stat") or ""):match("^%d+ %b() (%a)")) == "T"
    end, 10, 2), "the consumer did not stop " .. why())
    local done2 = migrate(second, third)
    p.kill("CONT")

    assert.equal(0, p.wait(60), why())
    local err = p.err()
    io.stderr:write(("# slot migration: out{0} had %d and %d of %d at the two migrations; the first followed by %s\n")
      :format(done1, done2, N, path1))
    assert.is_truthy(err:find("in{0} moved to 127.0.0.1:" .. third .. " (MOVED)", 1, true), err)
    -- a lone consumer never runs an entry twice: a re-read of its own
    -- pending entries that raced one of its commits is dropped
    assert.is_falsy(err:find("claimed by another consumer", 1, true), err)
    for i = 0, P - 1 do
      local src, out = ("in{%d}"):format(i), ("out{%d}"):format(i)
      local rep = ST.check_once(ST.read(cluster, out), N, { id_of = function(r) return r.src == src and r.id end })
      assert.is_true(rep.ok, out .. ": " .. rep.summary .. "\n" .. err)
      assert.equal(0, (ST.pending(cluster, src, "g")), src .. " still pending\n" .. err)
    end
    -- nothing of partition 0 was left on (or made again at) its earlier masters
    assert.same({}, on(first, "CLUSTER", "GETKEYSINSLOT", slot, 10))
    assert.same({}, on(second, "CLUSTER", "GETKEYSINSLOT", slot, 10))
  end)
end)

describe("examples/streams", function()
  after_each(H.cleanup)

  it("runs 3 consumers over 3,000 entries with an HTTP lookup each, exactly once", function()
    local code, out, err = H.sh("MOONWAIT_BIN=" .. H.bin .. " timeout 120 examples/streams/run")
    assert.equal(0, code, err)
    local total = 0
    local consumers = 0
    for name, n in out:gmatch("consumer (%S+): (%d+) records") do
      consumers = consumers + 1
      total = total + tonumber(n)
    end
    assert.equal(3, consumers, out)
    assert.equal(3000, total, out)
    assert.matches("exactly once: 3000 in, 3000 out, 0 missing, 0 duplicated, 0 pending", out, 1, true)
  end)
end)
