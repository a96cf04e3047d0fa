-- Hot reload: generations, triggers, rejection, draining, no leaks.
local H = require("helpers")

-- Start moonwait in the background in dir; returns pid and a wait().
local function start(dir, args, before_ready)
  local pid, wait = H.start_run(dir, args)
  if before_ready then before_ready(pid) end -- e.g. the writer of a FIFO input
  -- ready: the first generation's open ran (its handlers are installed;
  -- under valgrind start-up takes a while)
  assert(H.wait_for(function() return (H.read(dir .. "/err") or ""):find("READY", 1, true) end, 60),
    "no READY: " .. (H.read(dir .. "/err") or ""))
  return pid, wait
end

local wait_err = H.wait_err

-- The input as a FIFO fed from dir/in and then kept open (no end of input,
-- so the run cannot end early) until the returned end_input() is called.
-- `feed` goes to start() as its before_ready.
local function held_input(dir)
  os.execute("mkfifo " .. dir .. "/fifo")
  local function feed()
    os.execute(string.format("cd %s && { (cat in; exec sleep 300) >fifo & echo $! >wpid; }", dir))
  end
  local function end_input()
    local w = H.wait_for(function() return (H.read(dir .. "/wpid") or ""):match("%d+") end, 10)
    os.execute("kill " .. w .. " 2>/dev/null")
  end
  return feed, end_input
end

-- A script whose VERSION is substituted; it counts its records and reports
-- in close() how many it processed.
local function versioned(v, extra)
  return ([[
local time = require "moonwait.time"
local M = {}
local VERSION = %d
local count = 0
function M.async_invoke(r, ctx)
  time.sleep((r.id %% 5 + 1) * 0.005)
  count = count + 1
  return { { id = r.id, v = VERSION } }
end
function M.open(ctx) if ctx.generation == 1 then io.stderr:write("READY\n") end end
function M.close(ctx) io.stderr:write("close gen=", ctx.generation, " v=", VERSION, " count=", count, "\n") end
%s
return M
]]):format(v, extra or "")
end

local function save(path, body)
  -- write then rename, as many editors do
  H.write(path .. ".tmp", body)
  os.rename(path .. ".tmp", path)
end

local function records(n)
  local t = {}
  for i = 1, n do t[i] = '{"id":' .. i .. '}' end
  return table.concat(t, "\n") .. "\n"
end

describe("hot reload", function()
  after_each(H.cleanup)

  for _, mode in ipairs({ "ordered", "unordered" }) do
    it("loses, duplicates and mixes nothing under load (" .. mode .. ")", function()
      -- the input comes in five parts through a FIFO; after each of the first
      -- four, a new version is saved (its records still in flight) and the
      -- next part is written once that version is loaded
      local d = H.tmpdir()
      H.script(d, versioned(1))
      os.execute("mkfifo " .. d .. "/fifo")
      local fifo
      local pid, wait = start(d, "--script script.lua --input fifo --capacity 200 --timeout 0 --watch " ..
        "--tag-generation gen --mode " .. mode, function() fifo = assert(io.open(d .. "/fifo", "w")) end)
      local function part(k)
        local t = {}
        for i = (k - 1) * 4000 + 1, k * 4000 do t[#t + 1] = '{"id":' .. i .. '}\n' end
        fifo:write(table.concat(t))
        fifo:flush()
      end
      for v = 2, 5 do
        part(v - 1)
        save(d .. "/script.lua", versioned(v))
        wait_err(d, "reload: generation " .. v .. " loaded")
      end
      part(5)
      fifo:close()
      local rc, out, err = wait()
      assert.equal(0, rc, err)
      local seen, by_gen, version_of, last_gen, last_id = {}, {}, {}, 0, 0
      for _, o in ipairs(H.decode_lines(out)) do
        assert.is_nil(seen[o.id], "duplicate " .. o.id)
        seen[o.id] = o.gen
        by_gen[o.gen] = (by_gen[o.gen] or 0) + 1
        -- one version per generation: nothing runs half old, half new
        assert.equal(version_of[o.gen] or o.v, o.v)
        version_of[o.gen] = o.v
        if mode == "ordered" then
          assert.equal(last_id + 1, o.id)
          last_id = o.id
        end
      end
      for i = 1, 20000 do assert.is_number(seen[i], "lost " .. i) end
      -- the generation current at acceptance: never goes back in input order
      for i = 1, 20000 do
        assert.is_true(seen[i] >= last_gen)
        last_gen = seen[i]
      end
      assert.equal(5, last_gen, "generations")
      -- close ran once per generation, after its last record
      local closes = {}
      for g, n in err:gmatch("close gen=(%d+) v=%d+ count=(%d+)") do
        g = tonumber(g)
        assert.is_nil(closes[g], "close ran twice for generation " .. g)
        closes[g] = tonumber(n)
      end
      for g, n in pairs(by_gen) do assert.equal(n, closes[g]) end
      local _ = pid
    end)
  end

  it("rejects a broken version and keeps the running one, with file:line", function()
    local d = H.tmpdir()
    H.write(d .. "/in", records(400))
    H.script(d, versioned(1))
    local feed, end_input = held_input(d)
    local pid, wait = start(d, "--script script.lua --input fifo --capacity 4 --timeout 0 --tag-generation gen " ..
      "--reload-open-timeout 300", feed)
    H.script(d, "local M = {}\nfunction M.async_invoke(r)\n  return { r \nend\nreturn M\n")  -- syntax error
    os.execute("kill -HUP " .. pid); wait_err(d, "rejected (generation 2;")
    H.script(d, "local M = {}\nerror('config missing')\nreturn M\n")                       -- raises at load
    os.execute("kill -HUP " .. pid); wait_err(d, "rejected (generation 3;")
    H.script(d, "return { async_invoke = function(r) return { r } end,\n open = function() return nil, 'no db' end }\n")
    os.execute("kill -HUP " .. pid); wait_err(d, "rejected (generation 4;")
    H.script(d, "local time = require 'moonwait.time'\nreturn { async_invoke = function(r) return { r } end,\n" ..
      " open = function() time.sleep(60) end }\n")                                            -- open hangs
    os.execute("kill -HUP " .. pid); wait_err(d, "rejected (generation 5;")
    H.script(d, "return {}\n")                                                                -- no async_invoke
    os.execute("kill -HUP " .. pid); wait_err(d, "rejected (generation 6;")
    end_input()
    local rc, out, err = wait()
    assert.equal(0, rc, err)
    assert.matches("reload rejected %(generation 2; generation 1 keeps running%): script.lua:4: '}' expected", err)
    assert.matches("reload rejected %(generation 3; generation 1 keeps running%): script.lua:2: config missing", err)
    assert.matches("reload rejected %(generation 4; generation 1 keeps running%): script.lua: open failed: no db", err)
    assert.matches("reload rejected %(generation 5; generation 1 keeps running%): script.lua: open did not finish within 300 ms", err)
    assert.matches("no async_invoke", err, 1, true)
    local outs = H.decode_lines(out)
    assert.equal(400, #outs)
    for _, o in ipairs(outs) do assert.equal(1, o.gen) end
  end)

  it("makes one reload of a burst of saves", function()
    local d = H.tmpdir()
    H.write(d .. "/in", records(300))
    H.script(d, versioned(1))
    -- (watch = true in the pipeline file, the same as --watch)
    H.write(d .. "/p.lua", 'return { script = "script.lua", input = "in", capacity = 2, timeout_ms = 0, watch = true }')
    local _, wait = start(d, "p.lua")  -- READY: the watch is set (it starts before open)
    for v = 2, 6 do
      H.script(d, versioned(v)) -- truncate and rewrite, five times in a row
    end
    local rc, _, err = wait()
    assert.equal(0, rc, err)
    local _, n = err:gsub("reload %(file change%): loading", "")
    assert.equal(1, n)
  end)

  it("follows a file deleted and recreated, a changed module, and SIGHUP without --watch", function()
    local d = H.tmpdir()
    H.write(d .. "/in", records(600))
    H.write(d .. "/lib.lua", "return { tag = 'lib1' }\n")
    local body = [[
local time = require "moonwait.time"
local lib = require "lib"
return { open = function(ctx) if ctx.generation == 1 then io.stderr:write("READY\n") end end,
  async_invoke = function(r) time.sleep(0.01) return { { id = r.id, tag = lib.tag } } end }
]]
    H.script(d, body)
    local feed, end_input = held_input(d)
    local pid, wait = start(d, "--script script.lua --input fifo --capacity 2 --timeout 0 --watch --tag-generation gen",
      feed)
    H.wait_for(function() return #H.lines(H.read(d .. "/out") or "") >= 10 end, 30)  -- lib1 records out
    H.write(d .. "/lib.lua", "return { tag = 'lib2' }\n")      -- a module under the script's directory
    wait_err(d, "reload: generation 2 loaded")
    os.remove(d .. "/script.lua")
    wait_err(d, "script.lua is gone; reloading when it reappears")
    H.script(d, body)                                          -- recreated
    wait_err(d, "reload: generation 3 loaded")
    end_input()
    local rc, out, err = wait()
    assert.equal(0, rc, err)
    local tags, gens = {}, {}
    for _, o in ipairs(H.decode_lines(out)) do tags[o.tag] = true; gens[o.gen] = true end
    assert.is_true(tags.lib1 and tags.lib2)
    assert.matches("script.lua is gone; reloading when it reappears", err, 1, true)
    assert.is_true(gens[3] ~= nil, err)                        -- the recreated file
    assert.is_nil(err:find("rejected", 1, true))
    local _ = pid
    -- SIGHUP without --watch
    local d2 = H.tmpdir()
    H.write(d2 .. "/in", records(300))
    H.script(d2, versioned(1))
    local feed2, end_input2 = held_input(d2)
    local pid2, wait2 = start(d2, "--script script.lua --input fifo --capacity 2 --timeout 0 --tag-generation gen",
      feed2)
    H.script(d2, versioned(2))
    -- no reload: nothing watches. (The only fixed wait left here: the time
    -- given a wrong reload to show up, i.e. the absence under test.)
    os.execute("sleep 0.3")
    assert.is_nil((H.read(d2 .. "/err") or ""):find("reload", 1, true), H.read(d2 .. "/err"))
    os.execute("kill -HUP " .. pid2)
    wait_err(d2, "reload: generation 2 loaded")
    end_input2()
    rc, out, err = wait2()
    assert.equal(0, rc, err)
    local v2 = 0
    for _, o in ipairs(H.decode_lines(out)) do if o.v == 2 then v2 = v2 + 1; assert.equal(2, o.gen) end end
    assert.is_true(v2 > 0)
    assert.matches("reload (SIGHUP)", err, 1, true)
  end)

  it("carries state across with export_state and ctx.previous", function()
    local d = H.tmpdir()
    H.write(d .. "/in", records(300))
    local body = [[
local time = require "moonwait.time"
local M = {}
local seen = 0
function M.open(ctx)
  if ctx.generation == 1 then io.stderr:write("READY\n") end
  local p = ctx.previous
  if p then io.stderr:write("previous seen=", p.seen, " name=", p.name, " ok=", tostring(p.ok), "\n") end
  seen = p and p.seen or 0
end
function M.export_state() return { seen = seen, name = "counter", ok = true } end
function M.async_invoke(r) time.sleep(0.005) seen = seen + 1 return { { id = r.id, seen = seen } } end
return M
]]
    H.script(d, body)
    local feed, end_input = held_input(d)
    local pid, wait = start(d, "--script script.lua --input fifo --capacity 1 --timeout 0", feed)
    -- some records counted before the reload (then the input ends only
    -- after it, so generation 2 has records to count too)
    assert.truthy(H.wait_for(function() return #H.lines(H.read(d .. "/out") or "") >= 20 end, 30))
    os.execute("kill -HUP " .. pid)
    wait_err(d, "reload: generation 2 loaded")
    end_input()
    local rc, out, err = wait()
    assert.equal(0, rc, err)
    local outs = H.decode_lines(out)
    local n = tonumber(err:match("previous seen=(%d+) name=counter ok=true"))
    assert.is_true(n and n > 0, err)
    -- the count carries on (the one record still in flight on the old
    -- generation when it exported is counted there)
    assert.equal(300, #outs)
    assert.is_true(n >= 20, err)
    assert.is_true(outs[300].seen >= 299, "seen " .. outs[300].seen)
  end)

  it("finishes records in retry back-off on their own generation", function()
    local d = H.tmpdir()
    H.write(d .. "/in", records(20))
    local body = [[
local M = { retry = { max_attempts = 3, delay_ms = 600000 } }
local VERSION = %d
M.retry_on_error = function() return true end
function M.open(ctx) if ctx.generation == 1 then io.stderr:write("READY\n") end end
function M.async_invoke(r, ctx)
  if ctx.attempt == 1 and VERSION == 1 then io.stderr:write("FAILED ", r.id, "\n") return nil, "not yet" end
  return { { id = r.id, v = VERSION, attempt = ctx.attempt } }
end
return M
]]
    H.script(d, body:format(1))
    -- input from a FIFO kept open, so the input does not end (the end of
    -- input would retry the back-offs at once); the back-offs are long, so
    -- all 20 records are in back-off when the reload lands; ending the input
    -- then starts their retries
    local feed, end_input = held_input(d)
    local pid, wait = start(d, "--script script.lua --input fifo --capacity 50 --timeout 0 --tag-generation gen", feed)
    assert.truthy(H.wait_for(function() return select(2, (H.read(d .. "/err") or ""):gsub("FAILED", "")) == 20 end, 30))
    H.script(d, body:format(2))
    os.execute("kill -HUP " .. pid)
    wait_err(d, "reload: generation 2 loaded")
    end_input()
    local rc, out, err = wait()
    assert.equal(0, rc, err)
    local outs = H.decode_lines(out)
    assert.equal(20, #outs)
    for _, o in ipairs(outs) do
      assert.same({ v = 1, gen = 1, attempt = 2 }, { v = o.v, gen = o.gen, attempt = o.attempt })
    end
    -- the reload came while all 20 waited in back-off on generation 1
    assert.matches("generation 2 loaded in [%d.]+ ms; 20 records still draining", err)
  end)

  it("keeps at most 4 generations: a further reload waits for one to drain", function()
    local d = H.tmpdir()
    -- one held record per generation keeps each old generation draining
    -- (held until the file "release" appears)
    H.script(d, [[
local time = require "moonwait.time"
local function exists(p) local f = io.open(p) if f then f:close() return true end return false end
return { open = function(ctx) if ctx.generation == 1 then io.stderr:write("READY\n") end end,
  async_invoke = function(r, ctx)
    io.stderr:write("STARTED ", r.id, "\n")
    if r.hold then while not exists("release") do time.sleep(0.01) end end
    return { r }
  end }
]])
    os.execute("mkfifo " .. d .. "/fifo")
    local fifo
    local pid, wait = start(d, "--script script.lua --input fifo --capacity 10 --timeout 0 --tag-generation gen",
      function() fifo = assert(io.open(d .. "/fifo", "w")) end)
    local function send(id, hold)
      fifo:write(H.json.encode({ id = id, hold = hold }), "\n")
      fifo:flush()
      wait_err(d, "STARTED " .. id .. "\n")
    end
    send(1, true)
    for g = 2, 4 do
      os.execute("kill -HUP " .. pid)
      wait_err(d, "reload: generation " .. g .. " loaded")
      send(g, true)
    end
    -- generations 1-4 are live, each holding a record: the fifth waits
    os.execute("kill -HUP " .. pid)
    wait_err(d, "reload (SIGHUP) waits: 4 generations are live (at most 4)")
    assert.is_nil((H.read(d .. "/err") or ""):find("generation 5 loaded", 1, true))
    H.write(d .. "/release", "")
    wait_err(d, "reload: generation 5 loaded")
    send(5, false)
    fifo:close()
    local rc, out, err = wait()
    assert.equal(0, rc, err)
    local gens = {}
    for _, o in ipairs(H.decode_lines(out)) do gens[o.id] = o.gen end
    assert.same({ 1, 2, 3, 4, 5 }, gens)
  end)

  it("leaks nothing over 100 reloads under load", function()
    local d = H.tmpdir()
    H.probe(d)
    H.write(d .. "/in", records(4000))
    H.script(d, [[
local time = require "moonwait.time"
local mw = require "moonwait"
local probe = require "probe" -- spec/support/probe.lua
local fds, rss_kb = probe.fds, probe.rss_kb
local M = {}
function M.open(ctx)
  if ctx.generation == 1 then io.stderr:write("READY\n") end
  collectgarbage()
  local s = mw.runtime_stats()
  io.stderr:write(string.format("OPEN gen=%d vms=%d fds=%d rss=%d\n", ctx.generation, s.vms, fds(), rss_kb()))
end
function M.async_invoke(r) time.sleep(0.002) return { r } end
return M
]])
    -- the input stays open (and records keep flowing) until 100 reloads are done
    local feed, end_input = held_input(d)
    local pid, wait = start(d, "--script script.lua --input fifo --capacity 20 --timeout 0", feed)
    assert.truthy(H.wait_for(function() return (H.read(d .. "/err") or ""):find("OPEN gen=1", 1, true) end, 10))
    for g = 2, 101 do
      os.execute("kill -HUP " .. pid)
      assert.truthy(H.wait_for(function()
        return (H.read(d .. "/err") or ""):find("generation " .. g .. " loaded", 1, true)
      end, 10), "reload " .. g)
    end
    end_input()
    local rc, out, err = wait()
    assert.equal(0, rc, err)
    assert.equal(4000, #H.lines(out))
    local first, last
    for g, vms, f, rss in err:gmatch("OPEN gen=(%d+) vms=(%d+) fds=(%d+) rss=(%d+)") do
      local row = { g = tonumber(g), vms = tonumber(vms), fds = tonumber(f), rss = tonumber(rss) }
      first = first or row
      last = row
    end
    assert.equal(101, last.g)
    -- at a reload: the new VM, the current one, and at most a few draining
    assert.is_true(last.vms <= 4, "live VMs: " .. last.vms)
    assert.is_true(last.fds <= first.fds + 1, "fds " .. first.fds .. " -> " .. last.fds)
    if H.wrapper == "" then
      assert.is_true(last.rss - first.rss < 30000, "rss " .. first.rss .. " -> " .. last.rss .. " kB")
    end
  end)

  it("reports in the --stats summary the generation that was current at the end", function()
    -- the summary is printed after the generations closed: it still names
    -- the last one (it said generation=0 there)
    local d = H.tmpdir()
    H.script(d, versioned(1))
    H.write(d .. "/in", records(10))
    local feed, end_input = held_input(d)
    local pid, wait = start(d, "--script script.lua --input fifo --stats", feed)
    save(d .. "/script.lua", versioned(2))
    os.execute("kill -HUP " .. pid)
    wait_err(d, "reload: generation 2 loaded")
    end_input()
    local rc, _, err = wait()
    assert.equal(0, rc, err)
    assert.matches("moonwait: summary: .* reloads=1 reloads_rejected=0 .* generation=2 ", err)
  end)
end)
