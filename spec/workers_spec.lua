-- --workers N (issue 16): the script runs in N threads, each with its own
-- loop and VM per generation; one reader, one operator, one writer. Every
-- rule holds as with one worker: the same output (ordered: byte for byte;
-- unordered: the same records between the same watermarks; keyed: each
-- key's order), capacity is the total, retries, timeouts and on_timeout
-- per record, reloads reach every worker, kill -9 restores.
local H = require("helpers")
local C = require("support.crash")

local function run_in(d, args)
  local code, out, err = H.sh(string.format("cd %s && %s", d, H.cmd(args)))
  return code, out, err
end

-- Each record says which worker ran it and how many records that worker's
-- module had seen: module-level state is per worker.
local WHO = [[
local time = require "moonwait.time"
local seen = 0
return { async_invoke = function(r, ctx)
  seen = seen + 1
  time.sleep((r.id % 5) / 1000)
  return { { id = r.id, worker = ctx.worker, seen = seen } }
end }
]]

local function ids(n, wm_every)
  local t = {}
  for i = 1, n do
    t[#t + 1] = ('{"id":%d,"u":"k%d"}'):format(i, i % 40)
    if wm_every and i % wm_every == 0 then t[#t + 1] = ('{"$watermark":%d}'):format(i) end
  end
  return table.concat(t, "\n") .. "\n"
end

describe("--workers", function()
  for _, mode in ipairs({ "ordered", "unordered" }) do
    it(mode .. ": 2 and 4 workers give what 1 gives (retries, timeouts, on_timeout, dead letters, 0..N results)",
      function()
        local d = C.setup(mode, 240) -- ref.out, ref.dl: one worker
        for _, n in ipairs({ 2, 4 }) do
          local code, _, err = run_in(d, C.args(mode, "out" .. n, "dl" .. n) .. " --workers " .. n)
          assert.equal(0, code, err)
          local ref, got = H.read(d .. "/ref.out"), H.read(d .. "/out" .. n)
          if mode == "ordered" then
            assert.equal(ref, got, n .. " workers: output differs")
            assert.equal(C.strip_elapsed(H.read(d .. "/ref.dl")), C.strip_elapsed(H.read(d .. "/dl" .. n)))
          else
            assert.truthy(C.compare(mode, ref, got))
            assert.truthy(C.compare(mode, H.read(d .. "/ref.dl"), H.read(d .. "/dl" .. n)))
          end
        end
      end)
  end

  it("keyed: each key's records leave in input order, watermarks are barriers, a key runs on one worker", function()
    local d = H.tmpdir()
    H.script(d, [[
local time = require "moonwait.time"
return { async_invoke = function(r, ctx)
  time.sleep(((r.id * 7919) % 9) / 1000)
  return { { id = r.id, u = r.u, worker = ctx.worker } }
end }
]])
    H.write(d .. "/in", ids(600, 50))
    local args = "run --script script.lua --input in --output out%d --mode keyed --key u --capacity 64 --workers %d"
    for _, n in ipairs({ 1, 2, 4 }) do
      local code, _, err = run_in(d, args:format(n, n))
      assert.equal(0, code, err)
      local per_key, worker_of, seg, segs = {}, {}, {}, {}
      local used = {}
      for _, l in ipairs(H.lines(H.read(d .. "/out" .. n))) do
        local o = H.json.decode(l)
        if o["$watermark"] then
          -- every record before the watermark is out, none after it
          for id in pairs(seg) do assert.is_true(id <= o["$watermark"], "record " .. id .. " crossed a watermark") end
          segs[#segs + 1] = o["$watermark"]
          seg = {}
        else
          assert.is_true(o.id > (segs[#segs] or 0), "record " .. o.id .. " left before its watermark")
          seg[o.id] = true
          local last = per_key[o.u] or 0
          assert.is_true(o.id > last, ("key %s: %d after %d"):format(o.u, o.id, last))
          per_key[o.u] = o.id
          worker_of[o.u] = worker_of[o.u] or o.worker
          assert.equal(worker_of[o.u], o.worker, "key " .. o.u .. " moved between workers")
          used[o.worker] = true
        end
      end
      assert.equal(12, #segs)
      local nused = 0
      for _ in pairs(used) do nused = nused + 1 end
      assert.is_true(nused > 1 or n == 1, n .. " workers, only one used")
    end
  end)

  it("spreads records over every worker, each with its own module state", function()
    local r = H.run_script(WHO, ids(400), "--workers 2 --capacity 32 --mode unordered")
    assert.equal(0, r.code, r.err)
    local out = H.decode_lines(r.output)
    assert.equal(400, #out)
    local count, max_seen = {}, {}
    for _, o in ipairs(out) do
      count[o.worker] = (count[o.worker] or 0) + 1
      max_seen[o.worker] = math.max(max_seen[o.worker] or 0, o.seen)
    end
    assert.truthy(count[1] and count[2], "both workers ran records")
    -- each worker's counter counted its own records only
    assert.equal(count[1], max_seen[1])
    assert.equal(count[2], max_seen[2])
  end)

  it("keeps capacity as the total in flight across workers", function()
    local d = H.tmpdir()
    H.script(d, [[
local time = require "moonwait.time"
return { async_invoke = function(r, ctx)
  local f = io.open("log", "a") f:write("+\n") f:close()
  time.sleep(0.01)
  f = io.open("log", "a") f:write("-\n") f:close()
  return { r }
end }
]])
    H.write(d .. "/in", ids(120))
    local code, _, err = run_in(d, "run --script script.lua --input in --output out --capacity 6 --workers 4")
    assert.equal(0, code, err)
    local cur, most = 0, 0
    for _, l in ipairs(H.lines(H.read(d .. "/log"))) do
      cur = cur + (l == "+" and 1 or -1)
      most = math.max(most, cur)
    end
    assert.equal(0, cur)
    assert.is_true(most <= 6, "in flight at once: " .. most)
    assert.is_true(most >= 2, "never more than one at once")
  end)

  it("times a record out on its worker: on_timeout answers, the hung attempt is abandoned", function()
    local r = H.run_script([[
local time = require "moonwait.time"
return {
  async_invoke = function(r, ctx)
    if r.id % 10 == 0 then time.sleep(60) end
    return { { id = r.id, w = ctx.worker } }
  end,
  on_timeout = function(r) return { { id = r.id, timed_out = true } } end,
}
]], ids(100), "--workers 3 --timeout 200 --capacity 20")
    assert.equal(0, r.code, r.err)
    local out = H.decode_lines(r.output)
    assert.equal(100, #out)
    for i, o in ipairs(out) do
      assert.equal(i, o.id)
      assert.equal(i % 10 == 0, o.timed_out == true)
    end
  end)

  it("drops an attempt that ended after its record timed out (the worker was busy in Lua)", function()
    local r = H.run_script([[
return {
  async_invoke = function(r, ctx)
    if r.id % 5 == 0 then local t = os.clock() while os.clock() - t < 0.3 do end end
    return { { id = r.id } }
  end,
  on_timeout = function(r) return { { id = r.id, timed_out = true } } end,
}
]], ids(30), "--workers 3 --timeout 100 --capacity 20")
    assert.equal(0, r.code, r.err)
    local out = H.decode_lines(r.output)
    assert.equal(30, #out)
    local timed_out = 0
    for i, o in ipairs(out) do
      assert.equal(i, o.id) -- each once: the late outcome was dropped
      if o.timed_out then timed_out = timed_out + 1 end
    end
    -- a spin on another worker does not hold the main loop, whose timer
    -- fires (one on the main thread's own VM completes first, as with one
    -- worker: the loop was busy running it)
    assert.is_true(timed_out >= 1)
  end)

  it("reloads every worker: open runs on each, new records run on the new generation everywhere", function()
    local d = H.tmpdir()
    local function script(v)
      return ([[
local time = require "moonwait.time"
local M = {}
function M.open(ctx)
  local f = io.open("opens", "a")
  f:write("v%d prev=", tostring(ctx.previous and ctx.previous.v), " w=", ctx.worker, "\n")
  f:close()
end
function M.export_state() return { v = %d } end
function M.async_invoke(r, ctx)
  time.sleep(0.002)
  return { { id = r.id, v = %d, w = ctx.worker } }
end
return M
]]):format(v, v, v)
    end
    H.script(d, script(1))
    os.execute("mkfifo " .. d .. "/in")
    local pid, wait = H.start_run(d, "--script script.lua --input in --output res --workers 3 --capacity 8")
    local fifo = assert(io.open(d .. "/in", "w"))
    fifo:setvbuf("no")
    for i = 1, 50 do fifo:write(('{"id":%d}\n'):format(i)) end
    assert.truthy(H.wait_for(function() return #H.lines(H.read(d .. "/res") or "") >= 50 end, 30))
    H.script(d, script(2))
    os.execute("kill -HUP " .. pid)
    H.wait_err(d, "generation 2 loaded")
    for i = 51, 150 do fifo:write(('{"id":%d}\n'):format(i)) end
    fifo:close()
    local code, out, err = wait()
    assert.equal(0, code, err)
    local recs = H.decode_lines(H.read(d .. "/res"))
    assert.equal(150, #recs)
    local v2_workers = {}
    for _, o in ipairs(recs) do
      if o.id > 50 then
        assert.equal(2, o.v, "record " .. o.id .. " ran on the old generation")
        v2_workers[o.w] = true
      end
    end
    assert.truthy(v2_workers[1] and (v2_workers[2] or v2_workers[3]), "the new generation ran on several workers")
    -- open ran once on each worker, each new one with its worker's old state
    local opens = {}
    for _, l in ipairs(H.lines(H.read(d .. "/opens"))) do opens[#opens + 1] = l end
    table.sort(opens)
    assert.same({ "v1 prev=nil w=1", "v1 prev=nil w=2", "v1 prev=nil w=3",
                  "v2 prev=1 w=1", "v2 prev=1 w=2", "v2 prev=1 w=3" }, opens)
    assert.equal("", out)
  end)

  it("rejects a reload whose open fails on the workers too, and keeps running", function()
    local d = H.tmpdir()
    H.script(d, "return { async_invoke = function(r) return { { id = r.id, v = 1 } } end }")
    os.execute("mkfifo " .. d .. "/in")
    local pid, wait = H.start_run(d, "--script script.lua --input in --output out --workers 2")
    local fifo = assert(io.open(d .. "/in", "w"))
    fifo:setvbuf("no")
    fifo:write('{"id":1}\n')
    assert.truthy(H.wait_for(function() return #H.lines(H.read(d .. "/out") or "") >= 1 end, 30))
    H.script(d, [[return { open = function() error("no way") end,
      async_invoke = function(r) return { { id = r.id, v = 2 } } end }]])
    os.execute("kill -HUP " .. pid)
    H.wait_err(d, "reload rejected")
    for i = 2, 40 do fifo:write(('{"id":%d}\n'):format(i)) end
    fifo:close()
    local code, _, err = wait()
    assert.equal(0, code, err)
    local recs = H.decode_lines(H.read(d .. "/out"))
    assert.equal(40, #recs)
    for _, o in ipairs(recs) do assert.equal(1, o.v) end
    assert.truthy(err:find("no way", 1, true), err)
  end)

  it("fails the run when open fails, naming it, without hanging", function()
    local r = H.run_script([[return { open = function(ctx) error("cannot connect") end,
      async_invoke = function(r) return { r } end }]], ids(10), "--workers 3")
    assert.equal(1, r.code)
    assert.truthy(r.err:find("open failed", 1, true), r.err)
    assert.truthy(r.err:find("cannot connect", 1, true), r.err)
  end)

  it("runs no record on a worker before its open() ended there", function()
    local r = H.run_script([[
local time = require "moonwait.time"
local ready = false
return {
  open = function(ctx) time.sleep(0.2 * ctx.worker) ready = true end,
  async_invoke = function(r, ctx)
    if not ready then error("ran before open ended on worker " .. ctx.worker) end
    return { { id = r.id, w = ctx.worker } }
  end,
}]], ids(200), "--workers 3 --capacity 40")
    assert.equal(0, r.code, r.err)
    assert.equal(200, #H.lines(r.output))
  end)

  it("runs close on every worker at the end", function()
    local r = H.run_script([[
return { close = function() local f = io.open("closes", "a") f:write("c\n") f:close() end,
  async_invoke = function(r) return { r } end }]], ids(20), "--workers 4")
    assert.equal(0, r.code, r.err)
    assert.equal("c\nc\nc\nc\n", H.read(r.dir .. "/closes"))
  end)

  it("batch_invoke scripts batch on each worker and keep the order", function()
    local body = [[
return { batch_invoke = function(records, ctxs)
  local out = {}
  for i, r in ipairs(records) do out[i] = { { id = r.id, n = #records > 0 } } end
  return out
end }]]
    local one = H.run_script(body, ids(300), "--batch-size 10")
    local two = H.run_script(body, ids(300), "--batch-size 10 --workers 2")
    assert.equal(0, one.code, one.err)
    assert.equal(0, two.code, two.err)
    assert.equal(one.output, two.output)
  end)

  it("sums the workers in --stats, and its summary says how many", function()
    local r = H.run_script(WHO, ids(200), "--workers 2 --stats")
    assert.equal(0, r.code, r.err)
    assert.truthy(r.err:find("records_in=200", 1, true), r.err)
    assert.truthy(r.err:find("records_out=200", 1, true), r.err)
    assert.truthy(r.err:find("peak_rss_kb=%d+ workers=2"), r.err)
    local one = H.run_script(WHO, ids(20), "--stats")
    assert.equal(0, one.code, one.err)
    assert.falsy(one.err:find("workers=", 1, true), one.err)
  end)

  it("restores from a checkpoint after kill -9 with workers: the same output as one uninterrupted run", function()
    local d = C.setup("ordered", 240)
    local seed = os.time() % 100000 + 1
    local x = seed
    local function rng(lo, hi) x = x * 16807 % 2147483647 return lo + x % (hi - lo + 1) end
    for trial = 1, (H.wrapper == "" and 3 or 1) do
      os.execute(string.format("cd %s && rm -rf cp out dl", d))
      local done = false
      for attempt = 1, 100 do
        local cmd = H.cmd(C.args("ordered", "out", "dl", "cp") .. " --workers 3")
        local ms = rng(20, 120) * (H.wrapper == "" and 1 or 10)
        if attempt > 20 then
          os.execute(string.format("cd %s && rm -f rc && { %s 2>>log; echo $? >rc; }", d, cmd))
        else
          os.execute(string.format(
            "cd %s && rm -f rc && { %s 2>>log & pid=$!; sleep %.3f; kill -9 $pid 2>/dev/null; wait $pid; echo $? >rc; } 2>/dev/null",
            d, cmd, ms / 1000))
        end
        local rc = tonumber((H.read(d .. "/rc") or ""):match("%d+"))
        if rc == 0 then done = true break end
        assert.equal(137, rc, "seed " .. seed .. ": " .. (H.read(d .. "/log") or ""))
      end
      assert.is_true(done)
      assert.equal(H.read(d .. "/ref.out"), H.read(d .. "/out"), "seed " .. seed .. ", trial " .. trial)
      assert.equal(C.strip_elapsed(H.read(d .. "/ref.dl")), C.strip_elapsed(H.read(d .. "/dl")))
    end
  end)

  it("drains on SIGTERM with workers: every record read leaves", function()
    local d = H.tmpdir()
    H.script(d, [[
local time = require "moonwait.time"
return { async_invoke = function(r) time.sleep(0.05) return { r } end }]])
    os.execute("mkfifo " .. d .. "/in")
    local pid, wait = H.start_run(d, "--script script.lua --input in --output res --workers 2 --capacity 50 --stats")
    local fifo = assert(io.open(d .. "/in", "w"))
    fifo:setvbuf("no")
    for i = 1, 30 do fifo:write(('{"id":%d}\n'):format(i)) end
    assert.truthy(H.wait_for(function() return #H.lines(H.read(d .. "/res") or "") >= 1 end, 30))
    os.execute("kill -TERM " .. pid)
    local code, _, err = wait()
    fifo:close()
    assert.equal(1, code, err) -- as with one worker: no checkpoint promises the rest
    assert.truthy(err:find("interrupted by SIGTERM", 1, true), err)
    local n_in = tonumber(err:match("records_in=(%d+)"))
    assert.is_true(n_in > 0)
    assert.equal(n_in, #H.lines(H.read(d .. "/res")), err)
  end)

  it("stops a script spinning on another worker with the CPU budget; the others go on", function()
    local r = H.run_script([[
return { async_invoke = function(r, ctx)
  if r.id % 4 == 0 then while true do end end
  return { { id = r.id } }
end }]], ids(40), "--workers 3 --cpu-budget 200 --timeout 0 --on-error dead-letter --dead-letter dl")
    assert.equal(0, r.code, r.err)
    assert.equal(30, #H.lines(r.output))
    local dl = H.decode_lines(H.read(r.dir .. "/dl"))
    assert.equal(10, #dl)
    for _, o in ipairs(dl) do
      assert.equal(0, o.record.id % 4)
      assert.truthy(o.error:find("exceeded the CPU budget of 200 ms", 1, true), o.error)
    end
  end)

  it("exits at once on a second SIGTERM while scripts spin on every worker (budget off)", function()
    local d = H.tmpdir()
    H.script(d, "return { async_invoke = function(r) while true do end end }")
    H.write(d .. "/in", ids(10))
    local pid, wait = H.start_run(d, "--script script.lua --input in --output res --workers 3 --cpu-budget 0 --timeout 0")
    os.execute("sleep 0.5; kill -TERM " .. pid .. "; sleep 0.2; kill -TERM " .. pid)
    local code, _, err = wait(10)
    assert.equal(143, code, err)
    assert.truthy(err:find("exiting at once", 1, true), err)
  end)

  it("names the worker in moonwait.log's lines (text and JSON); one worker's lines read as before", function()
    local body = [[
local log = require "moonwait.log"
log.info("loaded")
return { open = function(ctx) log.info("open") end,
  async_invoke = function(r, ctx) log.info("rec"); return { r } end }]]
    local two = H.run_script(body, ids(40), "--workers 2")
    assert.equal(0, two.code, two.err)
    -- the main chunk runs once on each worker, and so does open: the
    -- lines tell which is which
    assert.truthy(two.err:find(":2: worker=1: loaded", 1, true), two.err)
    assert.truthy(two.err:find(":2: worker=2: loaded", 1, true), two.err)
    assert.truthy(two.err:find(":3: worker=1: open", 1, true), two.err)
    assert.truthy(two.err:find(":3: worker=2: open", 1, true), two.err)
    -- a record's line: worker before seq
    assert.truthy(two.err:find(":4: worker=[12]: seq=%d+: rec"), two.err)
    local js = H.run_script(body, ids(40), "--workers 2 --log-format json")
    assert.equal(0, js.code, js.err)
    local seen = {}
    for _, o in ipairs(H.decode_lines(js.err)) do
      if o.msg == "open" or o.msg == "rec" then
        assert.truthy(o.worker == 1 or o.worker == 2, js.err)
        seen[o.msg .. o.worker] = true
      end
    end
    assert.truthy(seen.open1 and seen.open2, js.err)
    local one = H.run_script(body, ids(40), "--log-format json")
    assert.equal(0, one.code, one.err)
    assert.falsy(one.err:find('"worker"', 1, true), one.err)
    local txt = H.run_script(body, ids(5))
    assert.falsy(txt.err:find("worker=", 1, true), txt.err)
  end)

  it("refuses a bad --workers with the flag's name", function()
    for _, v in ipairs({ "0", "-1", "65", "two", "1.5", "" }) do
      local r = H.run("run --script x.lua --workers '" .. v .. "'")
      assert.equal(2, r.code, v)
      assert.truthy(r.err:find("--workers", 1, true), r.err)
    end
    local d = H.tmpdir()
    H.write(d .. "/p.lua", "return { script = 'x.lua', workers = 0 }")
    local r = H.run("run " .. d .. "/p.lua")
    assert.equal(2, r.code)
    assert.truthy(r.err:find("workers", 1, true), r.err)
  end)

  it("builds a record on its worker from the main thread's tape: what the script left leaves byte for byte", function()
    -- Keyed, so that about half the records run on worker 2, built there
    -- from the tape the main thread read (not parsed again): every
    -- faithful-JSON case must leave as it does with one worker.
    local d = H.tmpdir()
    H.script(d, [[
return { async_invoke = function(r, ctx)
  if r.touch then r.touched = ctx.worker > 0 end
  return { r }
end }
]])
    local shapes = {
      '{"k":%d,"a":1.50,"b":1e2,"c":-0.0,"s":"caf\\u00e9 \\"q\\"","n":null}',
      '{"k":%d, "dup":1, "dup":2, "x":[1, 2.0, {"y":"\\n"}]}',
      '{"k":%d,"big":12345678901234567890,"neg":-9223372036854775808,"e":[],"o":{}}',
      '{"k":%d,"touch":true,"keep":"\\ud83d\\ude00","f":0.1,"deep":{"a":{"b":[true,false]}}}',
      '{"k":%d,"touch":true,"dup":"a","dup":"b","t":"\\t"}',
    }
    local t = {}
    for i = 1, 400 do t[#t + 1] = shapes[i % #shapes + 1]:format(i) end
    H.write(d .. "/in", table.concat(t, "\n") .. "\n")
    local args = "run --script script.lua --input in --output out%d --mode keyed --key k --capacity 32 --workers %d"
    for _, n in ipairs({ 1, 2, 4 }) do
      local code, _, err = run_in(d, args:format(n, n))
      assert.equal(0, code, err)
    end
    -- (keyed output keeps each key's order only: compare the lines sorted)
    local function sorted(n)
      local l = H.lines(H.read(d .. "/out" .. n))
      table.sort(l)
      return table.concat(l, "\n") .. "\n"
    end
    local ref = sorted(1)
    assert.equal(400, #H.lines(ref))
    assert.equal(ref, sorted(2))
    assert.equal(ref, sorted(4))
  end)
end)

describe("--workers with a service", function()
  local servers = require("support.servers")
  local redis
  setup(function() redis = servers.redis() end)
  teardown(function()
    if redis then redis.stop() end
    H.cleanup()
  end)

  it("exits at the end although another worker holds an idle pooled connection", function()
    -- Each worker pools its connection for 10 minutes: the run must not wait
    -- for that idle timer on any worker (the main thread closed its pool at
    -- the end; the others kept theirs until the idle timeout).
    local body = ([[
local redis = require "moonwait.redis"
return { async_invoke = function(r, ctx)
  local c = assert(redis.connect("127.0.0.1", PORT, { timeout_ms = 2000 }))
  assert(c:call("PING"))
  assert(c:set_keepalive(600000, 8))
  return { { id = r.id, worker = ctx.worker } }
end }]]):gsub("PORT", tostring(redis.port))
    local r = H.run_script(body, ids(200), "--workers 2 --capacity 16 --mode unordered", { timeout = 40 })
    assert.equal(0, r.code, r.err)
    local workers = {}
    for _, o in ipairs(H.decode_lines(r.output)) do workers[o.worker] = true end
    assert.truthy(workers[1] and workers[2], r.output)
  end)
end)
