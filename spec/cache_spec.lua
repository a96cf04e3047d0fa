-- moonwait.cache: hits, misses, ttl, neg_ttl, LRU by count and bytes, copies,
-- single flight against a real nginx and redis-server (loads counted at the
-- servers), hand-off when the loading record times out or is cancelled, a
-- named cache across a hot reload, unnamed caches, and leaks.
-- Every request goes to 127.0.0.1.
local H = require("helpers")
local servers = require("support.servers")

local nginx, redis

-- Run `body` over `input` with `args`; the run's result (H.run).
local function run(body, input, args)
  local d = H.tmpdir()
  H.script(d, body)
  local r = H.run("run --script script.lua " .. (args or ""), { dir = d, input = input or '{"id":1}\n' })
  r.dir = d
  return r
end

local function records(n, fn)
  local t = {}
  for i = 1, n do t[i] = H.json.encode(fn and fn(i) or { id = i }) end
  return table.concat(t, "\n") .. "\n"
end

-- The JSON after `tag ` on a line of stderr.
local function tagged(err, tag)
  local s = err:match(tag .. " (%b{})")
  assert(s, "no " .. tag .. " line in:\n" .. err)
  return H.json.decode(s)
end

-- A check that raises with what differed (the record fails, the run says why).
local EQ = [[
local function eq(got, want, what)
  if got ~= want then
    error(("%s: got %s, want %s"):format(what, tostring(got), tostring(want)), 2)
  end
end
]]

describe("moonwait.cache", function()
  setup(function()
    nginx = servers.nginx()
    redis = servers.redis()
  end)
  teardown(function()
    if nginx then nginx.stop() end
    if redis then redis.stop() end
    H.cleanup()
  end)

  it("caches values and negative results, expires them, and keys numbers by their string form", function()
    local r = run(EQ .. [[
local cache = require "moonwait.cache"
local time = require "moonwait.time"
local mw = require "moonwait"
local c = cache.new{ size = 100, ttl = 0.15, neg_ttl = 0.1 }
local loads = 0
local function load(v) loads = loads + 1 return v end
local function none(e) loads = loads + 1 return nil, e end
return { async_invoke = function()
  eq(mw.cache, cache, "require('moonwait').cache")
  eq(c:get("a", load, "A"), "A", "a miss loads")
  eq(c:get("a", load, "other"), "A", "a hit")
  eq(loads, 1, "loads")
  eq(c:get(42, load, "n42"), "n42", "number key")
  eq(c:get("42", load, "s42"), "n42", "'42' is 42")
  eq(c:get(1.5, load, "x"), "x", "1.5")
  eq(c:get("1.5", load, "y"), "x", "'1.5' is 1.5")
  eq(c:get("k\0a", load, 1), 1, "a key with a NUL")
  eq(c:get("k\0b", load, 2), 2, "another after the NUL")
  eq(c:get("k", load, 3), 3, "the prefix is a third key")
  eq(c:get("", load, "empty"), "empty", "the empty key")
  eq(c:get("f", load, false), false, "false is a value")
  eq(c:get("f", load, true), false, "false cached")
  local v, err = c:get("missing", none, "not found")
  eq(v, nil, "negative value") eq(err, "not found", "negative err")
  local before = loads
  v, err = c:get("missing", none, "again")
  eq(err, "not found", "negative cached") eq(loads, before, "no load on a negative hit")
  v, err = c:get("nothing", none)
  eq(v, nil, "nil") eq(err, nil, "no err")
  v, err = c:get("nothing", none, "x")
  eq(err, nil, "nil alone is cached too") eq(loads, before + 1, "no load for it")
  -- ttl 0.15 s, neg_ttl 0.1 s
  time.sleep(0.2)
  eq(c:get("a", load, "A2"), "A2", "expired after ttl")
  v, err = c:get("missing", none, "later")
  eq(err, "later", "negative expired after neg_ttl")
  -- set, peek, delete, purge
  eq(c:set("s", { x = 1 }), true, "set")
  local pv, perr, left = c:peek("s")
  eq(pv.x, 1, "peek value") eq(perr, nil, "peek err")
  assert(left > 0.1 and left <= 0.15, "ttl left " .. left)
  eq(c:set("forever", "f", 0), true, "set with ttl 0")
  eq(select(3, c:peek("forever")), math.huge, "ttl 0 never expires")
  eq(c:set("short", "s", 0.01), true, "set with its own ttl")
  pv, perr, left = c:peek("missing")
  eq(pv, nil, "peek negative") eq(perr, "later", "peek negative err")
  eq(c:peek("nope"), nil, "peek absent")
  eq(c:delete("s"), true, "delete") eq(c:delete("s"), false, "delete again") eq(c:peek("s"), nil, "deleted")
  time.sleep(0.02)
  eq(c:peek("short"), nil, "own ttl expired")
  local st = c:stats()
  c:purge()
  eq(c:stats().entries, 0, "purged")
  eq(c:get("a", load, "A3"), "A3", "loads after purge")
  return { { stats = st } }
end }
]])
    assert.equal(0, r.code, r.err)
    local st = H.json.decode(r.lines[1]).stats
    -- 18 gets: 6 hits (a, '42', '1.5', f, missing, nothing), 12 misses (2 of
    -- them expired entries); peek counts nothing
    assert.same({ hits = 6, misses = 12, loads = 12, load_errors = 0, evictions = 0, expired = 2,
      waiters = 0, waiting = 0, handoffs = 0, abandoned = 0, loading = 0, size = 100, max_bytes = 0,
      ttl = 0.15, neg_ttl = 0.1 },
      { hits = st.hits, misses = st.misses, loads = st.loads, load_errors = st.load_errors,
        evictions = st.evictions, expired = st.expired, waiters = st.waiters, waiting = st.waiting,
        handoffs = st.handoffs, abandoned = st.abandoned, loading = st.loading, size = st.size,
        max_bytes = st.max_bytes, ttl = st.ttl, neg_ttl = st.neg_ttl })
  end)

  it("does not cache nil with neg_ttl = 0, evicts the least recently used by count and by bytes", function()
    local r = run(EQ .. [[
local cache = require "moonwait.cache"
local loads = 0
local function load(v) loads = loads + 1 return v end
return { async_invoke = function()
  local c0 = cache.new{ neg_ttl = 0 }
  c0:get("k", load, nil) c0:get("k", load, nil)
  eq(loads, 2, "nil not cached with neg_ttl = 0")
  eq(c0:stats().size, 1000, "default size")
  local c = cache.new{ name = "lru", size = 3 }
  c:get("a", load, 1) c:get("b", load, 2) c:get("c", load, 3)
  c:get("a", load, 0)              -- a used: b is the least recent
  c:get("d", load, 4)              -- evicts b
  eq(c:peek("b"), nil, "b evicted") eq(c:peek("a"), 1, "a kept") eq(c:peek("c"), 3, "c kept")
  eq(c:stats().evictions, 1, "one eviction")
  -- the same name again with a smaller size: one store, shrunk at once
  local again = cache.new{ name = "lru", size = 1 }
  eq(c:stats().entries, 1, "shrunk") eq(again:peek("d"), 4, "the most recent stays")
  eq(c:stats().size, 1, "the newest options win")
  -- bytes: each entry costs key + value + 64; a 100-byte string is 102 bytes encoded
  local b = cache.new{ size = 1000, max_bytes = 2 * (1 + 102 + 64) }
  local s100 = ("x"):rep(100)
  eq(b:set("1", s100), true, "one") eq(b:set("2", s100), true, "two")
  eq(b:stats().bytes, 2 * 167, "bytes")
  eq(b:set("3", s100), true, "three")
  eq(b:peek("1"), nil, "the oldest went for bytes") eq(b:stats().entries, 2, "two fit")
  eq(b:stats().evictions, 1, "by bytes")
  local ok, err = b:set("big", ("y"):rep(1000))
  eq(ok, nil, "too large") eq(err, "too large", "its error")
  eq(b:get("big2", load, ("z"):rep(1000)), ("z"):rep(1000), "a loaded value too large is returned, not kept")
  eq(b:peek("big2"), nil, "not kept") eq(b:stats().entries, 2, "nothing evicted for it")
  return { { ok = true } }
end }
]])
    assert.equal(0, r.code, r.err)
    assert.matches('moonwait: %[info%] cache "lru": new options from cache.new: size 3 %-> 1; 2 entries evicted ' ..
      'to fit, 1 kept', r.err)
  end)

  it("copies values in and out, exactly, and keeps JSON arrays, null and 64-bit integers", function()
    local r = run(EQ .. [==[
local cache = require "moonwait.cache"
local json = require "moonwait.json"
local mw = require "moonwait"
local ffi = require "ffi"
local c = cache.new{ size = 100 }
local function same(a, b, path, seen)
  if type(a) ~= type(b) then error(path .. ": " .. type(a) .. " ~= " .. type(b), 0) end
  if type(a) == "number" then
    if a ~= a then if b == b then error(path .. ": nan lost", 0) end return end
    if a ~= b or 1 / a ~= 1 / b then error(path .. ": " .. a .. " ~= " .. b, 0) end
    return
  end
  if type(a) == "cdata" then
    if not (ffi.istype("int64_t", a) and ffi.istype("int64_t", b) or ffi.istype("uint64_t", a) and ffi.istype("uint64_t", b))
      or a ~= b then error(path .. ": cdata " .. tostring(a) .. " ~= " .. tostring(b), 0) end
    return
  end
  if type(a) ~= "table" then if a ~= b then error(path .. ": " .. tostring(a) .. " ~= " .. tostring(b), 0) end return end
  if a == b then error(path .. ": the same table, not a copy", 0) end
  if getmetatable(a) ~= getmetatable(b) then error(path .. ": metatable", 0) end
  for k, v in pairs(a) do same(v, b[k], path .. "." .. tostring(k)) end
  for k in pairs(b) do if a[k] == nil then error(path .. ": extra key " .. tostring(k), 0) end end
end
local bytes = {}
for i = 0, 255 do bytes[#bytes + 1] = string.char(i) end
local deep = {}
local t = deep
for i = 1, 999 do t.n = {} t = t.n end
local shared = { s = 1 }
local values = {
  1, -1, 0, -0.0, 0.5, -127, 128, -129, 2^31 - 1, -2^31, 2^31, 2^53, -2^53, 1e308, 5e-324, 1 / 0, -1 / 0, 0 / 0,
  "", "short", ("L"):rep(70), ("M"):rep(20000), table.concat(bytes),
  true, false, mw.null,
  json.decode("[]"), json.decode("{}"), json.decode('[1,[2,[]],{"a":null}]'),
  json.decode('{"big":-9223372036854775808,"ubig":18446744073709551615,"n":12345678901234567}'),
  { 1, 2, nil, 4, x = "y", [true] = false, [1.5] = "f", [-3] = "neg", [0] = "zero" },
  { shared, shared }, deep,
  { [1] = "a", [2] = "b", [4] = "d" },
}
for i, v in ipairs(values) do
  c:set("v" .. i, v)
  local got = c:get("v" .. i, error)
  same(v, got, "value " .. i)
end
eq(#values, 34, "all values tried")
-- the NaN: the same bits
local nanv = c:peek("v18")
eq(nanv ~= nanv, true, "nan")
-- JSON arrays keep their marker: an empty one is still []
eq(json.encode(c:peek("v27")), "[]", "empty array")
eq(json.encode(c:peek("v28")), "{}", "empty object")
eq(json.encode(c:peek("v29")), '[1,[2,[]],{"a":null}]', "nested")
eq(json.encode(c:peek("v30")), '{"big":-9223372036854775808,"n":12345678901234567,"ubig":18446744073709551615}', "64-bit")
local pair = c:peek("v32")
eq(pair[1] ~= pair[2], true, "one table reached twice becomes two copies")
-- a loader's caller gets the loader's value itself; every get after that a fresh copy
local orig = { obj = { a = 1 }, list = json.decode("[1,2]") }
local mine = c:get("k", function() return orig end)
eq(mine, orig, "the loader's own caller gets its value")
orig.obj.a = 99
local copy = c:get("k", error)
eq(copy.obj.a, 1, "the cache kept what was stored")
copy.obj.a = 5
copy.list[3] = 3
eq(c:get("k", error).obj.a, 1, "mutating a returned table changes nothing")
eq(json.encode(c:get("k", error).list), "[1,2]", "nor its array")
eq(c:get("k", error) ~= c:get("k", error), true, "each get a new table")
return { async_invoke = function() return { { ok = true } } end }
]==])
    assert.equal(0, r.code, r.err)
    assert.equal('{"ok":true}', r.lines[1])
  end)

  it("regression: a finalizer that purges the cache while a get or peek copies out a big value (use after free)",
    function()
    -- LuaJIT may run a GC step, and finalizers, at the start of any
    -- allocation; the copy of a value over 512 bytes was allocated before
    -- its bytes were read from the store, so a __gc that purged or set the
    -- key freed them first. With the GC made eager, the finalizer runs at
    -- that very allocation every time.
    local r = run([[
local cache = require "moonwait.cache"
local c = cache.new{ name = "gc", size = 100 }  -- (named: no GC step of its own in set)
local X, Y = ("x"):rep(100000), ("y"):rep(100000)
local ran = 0
local function garbage_with_gc()
  local p = newproxy(true)
  getmetatable(p).__gc = function()
    ran = ran + 1
    c:purge()        -- frees the entry being copied from ...
    c:set("k", Y)    -- ... and another value may take its memory
  end
end
collectgarbage("setpause", 0)
collectgarbage("setstepmul", 100000)
return { async_invoke = function()
  local during, bad = 0, 0
  for i = 1, 50 do
    garbage_with_gc()
    c:set("k", X)
    local before = ran
    local ok, v = pcall(i % 2 == 0 and c.get or c.peek, c, "k", error)
    if ran ~= before then
      during = during + 1
      if not ok or v ~= X then bad = bad + 1 end
    end
  end
  return { { during = during, bad = bad } }
end }
]])
    assert.equal(0, r.code, r.err)
    local o = H.json.decode(r.lines[1])
    assert.is_true(o.during > 0, "no finalizer ran during a get")
    assert.equal(0, o.bad)
  end)

  it("refuses what cannot be copied, naming where, and raises on misuse at the caller's line", function()
    local r = run([[
local cache = require "moonwait.cache"
local c = cache.new{ name = "errs" }
local out = {}
local function try(name, fn, ...)
  local ok, err = pcall(fn, ...)
  out[#out + 1] = name .. "=" .. (ok and "ok" or tostring(err))
end
local cyc = { a = {} }
cyc.a.b = cyc
local deep = {}
local t = deep
for i = 1, 1000 do t.n = {} t = t.n end
try("fn", function() local _ = c:set("k", { a = { b = print } }) end)
try("arr", function() local _ = c:set("k", { 1, 2, { x = coroutine.create(print) } }) end)
try("ud", function() local _ = c:set("k", { f = io.stdout }) end)
try("cyc", function() local _ = c:set("k", cyc) end)
try("mt", function() local _ = c:set("k", { p = setmetatable({}, {}) }) end)
try("key", function() local _ = c:set("k", { [{}] = 1 }) end)
try("odd", function() local _ = c:set("k", { ["a b"] = { [2.5] = { [false] = print } } }) end)
try("deep", function() local _ = c:set("k", deep) end)
try("nil", function() local _ = c:set("k", nil) end)
try("loader", function() local _ = c:get("k", function() return { f = print } end) end)
try("errval", function() local _ = c:get("k2", function() return nil, { f = print } end) end)
try("badkey", function() local _ = c:get({}, print) end)
try("noloader", function() local _ = c:get("k") end)
try("dot", function() local _ = c.get("k", print, print) end)
try("dotset", function() local _ = c.set("k", 1) end)
try("ttl", function() local _ = c:set("k", 1, -1) end)
try("new.frac", cache.new, { size = 1.5 })
for _, o in ipairs({ { size = 0 }, { sise = 1 }, { name = "" }, { ttl = -1 }, { neg_ttl = "x" },
                     { max_bytes = 0 }, { [1] = 2 } }) do
  local k, v = next(o)
  try("new." .. tostring(k), cache.new, o)
end
try("new.str", cache.new, "x")
return { async_invoke = function() return { { out = out, entries = c:stats().entries } } end }
]])
    assert.equal(0, r.code, r.err)
    local o = H.json.decode(r.lines[1])
    local got = {}
    for _, l in ipairs(o.out) do
      local k, v = l:match("^([^=]+)=(.*)$")
      got[k] = v
    end
    assert.equal(0, o.entries)
    assert.equal('script.lua:13: cache "errs": set: value.a.b: a function cannot be cached', got.fn)
    assert.equal('script.lua:14: cache "errs": set: value[3].x: a coroutine cannot be cached', got.arr)
    assert.equal('script.lua:15: cache "errs": set: value.f: a userdata cannot be cached', got.ud)
    assert.equal('script.lua:16: cache "errs": set: value.a.b: a table that contains itself cannot be cached', got.cyc)
    assert.equal('script.lua:17: cache "errs": set: value.p: a table with a metatable (other than a JSON ' ..
      "array's) cannot be cached", got.mt)
    assert.equal('script.lua:18: cache "errs": set: value: a key of type table cannot be cached', got.key)
    assert.equal('script.lua:19: cache "errs": set: value["a b"][2.5][false]: a function cannot be cached', got.odd)
    assert.matches('script.lua:20: cache "errs": set: value.n.n.n.n.*: a table nested more than 1000 levels ' ..
      "deep cannot be cached", got.deep)
    assert.equal('script.lua:21: cache "errs": set: a value expected (to remove a key, use c:delete)', got["nil"])
    assert.equal('script.lua:22: cache "errs": the loader\'s result: value.f: a function cannot be cached', got.loader)
    assert.equal('script.lua:23: cache "errs": the loader\'s result: err.f: a function cannot be cached', got.errval)
    assert.equal('script.lua:24: cache "errs": the key must be a string or a number, got table', got.badkey)
    assert.equal("script.lua:25: cache:get: argument 2 (loader): a function expected, got nil", got.noloader)
    assert.matches("^script.lua:26: .*a moonwait.cache expected %(c:method%(...%), not c.method%(...%)%), got string",
      got.dot)
    assert.matches("^script.lua:27: a moonwait.cache expected", got.dotset)
    assert.matches('^script.lua:28: cache "errs": set: ttl: a number of seconds', got.ttl)
    assert.matches("cache.new: size: a whole number from 1 to 100000000 expected, got 0", got["new.size"], 1, true)
    assert.matches("cache.new: size: a whole number from 1 to 100000000 expected, got 1.5", got["new.frac"], 1, true)
    assert.matches("cache.new: unknown option 'sise' (name, size, max_bytes, ttl, neg_ttl)", got["new.sise"], 1, true)
    assert.matches("cache.new: name: a string of 1 to 200 bytes", got["new.name"], 1, true)
    assert.matches("cache.new: ttl: a number of seconds from 0 to 1e9 expected (0: never expires), got -1",
      got["new.ttl"], 1, true)
    assert.matches("cache.new: neg_ttl: a number of seconds", got["new.neg_ttl"], 1, true)
    assert.matches("cache.new: max_bytes: a whole number from 1 to 9007199254740992 expected", got["new.max_bytes"], 1, true)
    assert.matches("cache.new: unknown option number", got["new.1"], 1, true)
    assert.matches("cache.new: a table of options expected", got["new.str"], 1, true)
  end)

  it("loads once for 50 records missing one key; the loading record times out and the load is handed on", function()
    local d = H.tmpdir()
    redis.cli("del loads")
    H.script(d, (([[
local cache = require "moonwait.cache"
local http = require "moonwait.http"
local redis = require "moonwait.redis"
local json = require "moonwait.json"
local c = cache.new{ name = "users", size = 100, ttl = 60 }
local function load(id, slow)
  local r = assert(redis.connect("127.0.0.1", REDIS_PORT))
  assert(r:incr("loads"))
  r:set_keepalive()
  if slow then
    io.open("loading", "w"):close()  -- the other records may come now
    local res = http.get("NGINX/slow")     -- 3 s: longer than the record's 1 s
    return { never = true }
  end
  local res = assert(http.get("NGINX/user/" .. id))
  return json.decode(res.body)
end
return {
  async_invoke = function(r, ctx)
    local v = c:get("user:7", load, 7, r.id == 1)
    local fresh = v.mine == nil
    v.mine = r.id               -- this record's own copy
    return { { id = r.id, name = v.name, fresh = fresh } }
  end,
  on_timeout = function(r) return { { id = r.id, timeout = true } } end,
  close = function()
    io.stderr:write("STATS ", json.encode(c:stats()), "\n")
    local v = c:peek("user:7")
    io.stderr:write("PEEK ", json.encode(v), "\n")
  end,
}
]]):gsub("REDIS_PORT", tostring(redis.port)):gsub("NGINX", "http://127.0.0.1:" .. nginx.port)))
    H.write(d .. "/in", records(50))
    local before = select(2, nginx.access_log():gsub("/user/7 ", ""))
    -- record 1 first; the other 49 once its load is under way
    local code, out, err = H.sh(string.format(
      "cd %s && (head -1 in; i=0; while [ ! -e loading ] && [ $i -lt 3000 ]; do sleep 0.01; i=$((i+1)); done; " ..
      "sleep 0.3; tail -n +2 in) | " ..
      "timeout 60 %s", H.q(d), H.cmd("run --script script.lua --capacity 50 --timeout 1000 --mode unordered")))
    assert.equal(0, code, err)
    local outs = H.decode_lines(out)
    assert.equal(50, #outs)
    local named = 0
    for _, o in ipairs(outs) do
      if o.id == 1 then
        assert.is_true(o.timeout)
      else
        assert.equal("user-7", o.name)
        assert.is_true(o.fresh)
        named = named + 1
      end
    end
    assert.equal(49, named)
    -- at the servers: two loads began (the slow one and its heir's), one
    -- /user/7 request was made
    assert.equal("2", redis.cli("get loads"):match("%d+"))
    assert.equal(1, select(2, nginx.access_log():gsub("/user/7 ", "")) - before)
    local st = tagged(err, "STATS")
    assert.same({ misses = 50, hits = 0, loads = 2, waiters = 49, waiting = 0, handoffs = 1, abandoned = 1,
      load_errors = 0, loading = 0, entries = 1 },
      { misses = st.misses, hits = st.hits, loads = st.loads, waiters = st.waiters, waiting = st.waiting,
        handoffs = st.handoffs, abandoned = st.abandoned, load_errors = st.load_errors, loading = st.loading,
        entries = st.entries })
    assert.same({ id = 7, name = "user-7" }, tagged(err, "PEEK"))
  end)

  it("gives the waiters nil, err when the loader raises, caches nothing, and hands a cancelled load on", function()
    local r = run(EQ .. [[
local cache = require "moonwait.cache"
local time = require "moonwait.time"
local mw = require "moonwait"
local c = cache.new{ neg_ttl = 10 }
local loads = 0
local function load(id)
  loads = loads + 1
  time.sleep(0.05)
  if id == 1 then error("boom") end
  return "v" .. id
end
local function slow(id)
  loads = loads + 1
  time.sleep(10)
end
return { async_invoke = function(r)
  if r.id <= 4 then
    local ok, v, err = pcall(c.get, c, "k", load, r.id)
    return { { id = r.id, ok = ok, v = v, err = err } }
  end
  if r.id == 5 then  -- after the failed load: nothing was cached
    time.sleep(0.2)
    return { { id = 5, v = c:get("k", load, 5) } }
  end
  if r.id == 6 then  -- its spawned child loads "c" and is killed mid-load
    local t = mw.spawn(function() return c:get("c", slow, 6) end)
    time.sleep(0.05)
    mw.kill(t)
    return { { id = 6 } }
  end
  time.sleep(0.02)   -- 7: waits on the child's load, then is handed it
  local v = c:get("c", load, 7)
  local st = c:stats()
  return { { id = 7, v = v, handoffs = st.handoffs, abandoned = st.abandoned, waiting = st.waiting,
             loading = st.loading, load_errors = st.load_errors, waiters = st.waiters } }
end }
]], records(7), "--capacity 10")
    assert.equal(0, r.code, r.err)
    local outs = H.decode_lines(r.out)
    assert.same({ id = 1, ok = false, v = "script.lua:14: boom" }, outs[1])
    for i = 2, 4 do
      assert.same({ id = i, ok = true, err = "script.lua:14: boom" }, outs[i])
    end
    assert.same({ id = 5, v = "v5" }, outs[5])  -- loaded again: the error was not cached
    assert.same({ id = 7, v = "v7", handoffs = 1, abandoned = 1, waiting = 0, loading = 0, load_errors = 1,
      waiters = 4 }, outs[7])
  end)

  it("dead-letters a loader's raised error at the script's line that called get, not inside cache.lua", function()
    -- a transient failure raised in the loader (so it is not cached) and left
    -- to fail the record: the dead letter's "(at ...)" names the script
    local r = run([[
local cache = require "moonwait.cache"
local http = require "moonwait.http"
local c = cache.new{ neg_ttl = 10 }
local function load(id)
  local res, err = http.get("http://127.0.0.1:1/users/" .. id)
  if not res then error(err, 0) end
  return res.body
end
return { async_invoke = function(r)
  local v = c:get(r.id, load, r.id)
  return { { id = r.id, v = v } }
end }
]], records(1), "--on-error dead-letter --dead-letter dl.jsonl")
    assert.equal(0, r.code, r.err)
    local dl = H.decode_lines(H.read(r.dir .. "/dl.jsonl"))
    assert.equal(1, #dl)
    assert.equal("connection refused (GET http://127.0.0.1:1/users/1) (at script.lua:10: in function <script.lua:9>)",
      dl[1].error)
  end)

  it("passes the load on when the waiter handed the load ends before it runs (killed with the loader)", function()
    -- L loads k and is killed; W1 (first in line) is handed the load and is
    -- killed in the same turn, before it runs: W2 must get the load, not
    -- wait until the record's deadline
    local r = run(EQ .. [[
local cache = require "moonwait.cache"
local time = require "moonwait.time"
local mw = require "moonwait"
local c = cache.new{}
local loads = {}
local function load(who, s)
  loads[#loads + 1] = who
  time.sleep(s)
  return who
end
return { async_invoke = function()
  local L = mw.spawn(function() return c:get("k", load, "L", 10) end)
  time.sleep(0.02)
  local W1 = mw.spawn(function() return c:get("k", load, "W1", 0) end)
  local W2 = mw.spawn(function() return c:get("k", load, "W2", 0) end)
  while c:stats().waiting < 2 do time.sleep(0.01) end
  local t0 = time.now()
  mw.kill(L)   -- hands the load to W1, which is woken ...
  mw.kill(W1)  -- ... and killed before it runs: W2 is next
  local ok, v = mw.wait(W2)
  local st = c:stats()
  return { { ok = ok, v = v, loads = table.concat(loads, ","), handoffs = st.handoffs, abandoned = st.abandoned,
             waiting = st.waiting, loading = st.loading, fast = time.now() - t0 < 1 } }
end }
]], nil, "--timeout 3000")
    assert.equal(0, r.code, r.err)
    assert.same({ ok = true, v = "W2", loads = "L,W2", handoffs = 2, abandoned = 1, waiting = 0, loading = 0,
      fast = true }, H.json.decode(r.lines[1]))
  end)

  it("works outside a coroutine: at load time, in on_timeout (direct loads, peek), in ctx.defer", function()
    local r = run(EQ .. [[
local cache = require "moonwait.cache"
local time = require "moonwait.time"
local c = cache.new{ name = "boot" }
eq(c:get("cfg", function() return { x = 1 } end).x, 1, "a load at load time")
return {
  async_invoke = function(r, ctx)
    ctx.defer(function() c:set("deferred", r.id) end)
    c:set("seen", r.id)
    time.sleep(1)
  end,
  on_timeout = function(r)
    local ok, err = pcall(c.get, c, "w", function() time.sleep(0.01) end)
    return { { peek = c:peek("seen"), cfg = c:get("cfg", error).x, deferred = c:peek("deferred"),
               direct = c:get("d", function() return "direct" end), ok = ok, err = err,
               loads = c:stats().loads } }
  end,
}
]], nil, "--timeout 100")
    assert.equal(0, r.code, r.err)
    local o = H.json.decode(r.lines[1])
    assert.same({ peek = 1, cfg = 1, deferred = 1, direct = "direct", ok = false, loads = 3 },
      { peek = o.peek, cfg = o.cfg, deferred = o.deferred, direct = o.direct, ok = o.ok, loads = o.loads })
    assert.matches("moonwait.time.sleep can only wait inside", o.err, 1, true)
  end)

  it("raises instead of waiting for itself when a loader asks for its own key", function()
    local r = run([[
local cache = require "moonwait.cache"
local mw = require "moonwait"
local c = cache.new{}
return { async_invoke = function()
  local ok, err = pcall(c.get, c, "k", function()
    local v = c:get("k", function() return 1 end)
    return v
  end)
  local ok2, err2 = pcall(c.get, c, "j", function()
    local _, a, b = mw.wait(mw.spawn(function() return pcall(c.get, c, "j", print) end))
    return tostring(a) .. ":" .. tostring(b)
  end)
  return { { ok = ok, err = err, j = err2, st = c:stats().loading } }
end }
]])
    assert.equal(0, r.code, r.err)
    local o = H.json.decode(r.lines[1])
    assert.is_false(o.ok)
    assert.matches("script.lua:6: cache: get%(k%) inside the loader of the same key would wait for itself", o.err)
    assert.matches("^false:.*cache: get%(j%) inside the loader of the same key", o.j)
    assert.equal(0, o.st)
  end)

  it("keeps a named cache across a hot reload: entries, a load in flight, new options; unnamed ones are per VM",
    function()
    local d = H.tmpdir()
    local body = [[
local cache = require "moonwait.cache"
local time = require "moonwait.time"
local json = require "moonwait.json"
local VERSION = %d
local c = cache.new{ name = "shared", size = %d, ttl = %g }
local own = cache.new{ size = 10 }
local function load(k, by, hold)
  io.stderr:write("LOADING ", k, " v=", by, "\n")
  if hold then while c:stats().waiting < hold do time.sleep(0.01) end end
  return { k = k, by = by }
end
return {
  open = function(ctx) if ctx.generation == 1 then io.stderr:write("READY\n") end end,
  async_invoke = function(r)
    local v = c:get(r.k, load, r.k, VERSION, r.hold)
    return { { id = r.id, by = v.by, v = VERSION, own = own:get("x", function() return VERSION end) } }
  end,
  close = function() io.stderr:write("STATS", VERSION, " ", json.encode(c:stats()), "\n") end,
}
]]
    H.script(d, body:format(1, 100, 0))
    os.execute("mkfifo " .. d .. "/fifo")
    local fifo
    os.execute(string.format(
      "cd %s && { %s >out 2>err & echo $! >pid; wait $!; echo $? >rc; } >/dev/null 2>&1 &", d,
      H.cmd("run --script script.lua --input fifo --capacity 20 --timeout 0 --mode unordered")))
    fifo = assert(io.open(d .. "/fifo", "w"))
    local pid = H.wait_for(function() return (H.read(d .. "/pid") or ""):match("%d+") end, 30)
    local function wait_err(text)
      assert(H.wait_for(function() return (H.read(d .. "/err") or ""):find(text, 1, true) end, 30),
        "waited for '" .. text .. "' in:\n" .. (H.read(d .. "/err") or ""))
    end
    local function send(t)
      fifo:write(H.json.encode(t), "\n")
      fifo:flush()
    end
    wait_err("READY")
    send({ id = 1, k = "a" })
    send({ id = 2, k = "b", hold = 3 })  -- generation 1 loads b until 3 records wait for it
    wait_err("LOADING b v=1")
    H.script(d, body:format(2, 50, 30))
    os.execute("kill -HUP " .. pid)
    wait_err("reload: generation 2 loaded")
    for i = 3, 6 do send({ id = i, k = i == 3 and "a" or "b" }) end
    fifo:close()
    local rc = H.wait_for(function() return H.read(d .. "/rc") end, 60)
    local err = H.read(d .. "/err") or ""
    assert.equal(0, tonumber(rc), err)
    local by_id = {}
    for _, o in ipairs(H.decode_lines(H.read(d .. "/out"))) do by_id[o.id] = o end
    assert.same({ id = 1, by = 1, v = 1, own = 1 }, by_id[1])
    assert.same({ id = 2, by = 1, v = 1, own = 1 }, by_id[2])
    assert.same({ id = 3, by = 1, v = 2, own = 2 }, by_id[3])  -- a hit across the reload; own: per generation
    for i = 4, 6 do assert.same({ id = i, by = 1, v = 2, own = 2 }, by_id[i]) end  -- waited on generation 1's load
    assert.equal(2, select(2, err:gsub("LOADING", "")))
    assert.matches('moonwait: %[info%] cache "shared": new options from cache.new: size 100 %-> 50, ttl 0 %-> 30 s ' ..
      "%(a new ttl applies to entries stored from now on%); 0 entries evicted to fit, 1 kept", err)
    local st = tagged(err, "STATS2")
    assert.same({ hits = 1, misses = 5, loads = 2, waiters = 3, waiting = 0, size = 50, ttl = 30, entries = 2 },
      { hits = st.hits, misses = st.misses, loads = st.loads, waiters = st.waiters, waiting = st.waiting,
        size = st.size, ttl = st.ttl, entries = st.entries })
  end)

  it("regression: caches made per record and holding big values are collected (the GC did not see their memory)",
    function()
    -- An unnamed store's bytes are C memory behind a 16-byte handle: 3000
    -- records each making a cache with 1 MB in it peaked at 2.3 GB before
    -- a GC cycle freed them. Counted as stores still alive at the end
    -- (runtime_stats().caches), not as memory: a sanitizer's quarantine
    -- keeps freed memory in the peak too.
    local r = run([[
local cache = require "moonwait.cache"
local mw = require "moonwait"
local big = ("a"):rep(1e6)
local most = 0
return {
  async_invoke = function(r)
    local u = cache.new{ size = 10 }
    u:set("x", big)
    u:get("y", function() return big end)
    most = math.max(most, mw.runtime_stats().caches)
    return {}
  end,
  close = function() io.stderr:write("MOST ", most, "\n") end,
}
]], records(500))
    assert.equal(0, r.code, r.err)
    local most = tonumber(r.err:match("MOST (%d+)"))
    -- each holds 2 MB the GC is told of: it collects them long before 500
    assert.is_true(most < 100, "stores alive at once: " .. tostring(most))
  end)

  it("leaks no fibers, handles, fds or registry refs after many loads and waits time out", function()
    local d = H.tmpdir()
    H.probe(d)
    H.script(d, (([[
local cache = require "moonwait.cache"
local http = require "moonwait.http"
local mw = require "moonwait"
local time = require "moonwait.time"
local json = require "moonwait.json"
local c = cache.new{ name = "leaky", size = 1000 }
local probe = require "probe" -- spec/support/probe.lua
local fds, refs = probe.fds, probe.refs
local base
return {
  open = function()
    assert(http.get("NGINX/user/1", { keepalive = false }))
    collectgarbage()
    local s = mw.runtime_stats()
    base = { fds = fds(), handles = s.handles, refs = refs() }
  end,
  async_invoke = function(r)
    if r.id == 30 then io.open("started", "w"):close() end
    c:get("k" .. r.id % 30, function() http.get("NGINX/slow") return 1 end)
    return { r }
  end,
  on_timeout = function() return {} end,
  close = function()
    local t0 = time.now()
    local s
    repeat
      collectgarbage()
      s = mw.runtime_stats()
      if fds() <= base.fds and s.handles <= base.handles then break end
      time.sleep(0.05)
    until time.now() - t0 > 10
    local st = c:stats()
    io.stderr:write("LEAKCHECK ", json.encode({ fds0 = base.fds, fds = fds(), handles0 = base.handles,
      handles = s.handles, fibers = s.fibers, refs0 = base.refs, refs = refs(), waiting = st.waiting,
      loading = st.loading, handoffs = st.handoffs, abandoned = st.abandoned, loads = st.loads,
      waiters = st.waiters, entries = st.entries, misses = st.misses }), "\n")
  end,
}
]]):gsub("NGINX", "http://127.0.0.1:" .. nginx.port)))
    -- records 1-30 (a loader for each key) first, the others once those
    -- are in: each loader times out before its waiters and hands its load on
    H.write(d .. "/in", records(300))
    local code, out, err = H.sh(string.format(
      "cd %s && (head -30 in; i=0; while [ ! -e started ] && [ $i -lt 3000 ]; do sleep 0.01; i=$((i+1)); done; " ..
      "sleep 0.03; tail -n +31 in) | timeout 60 %s", H.q(d),
      H.cmd("run --script script.lua --timeout 100 --capacity 100 --mode unordered")))
    assert.equal(0, code, err)
    assert.equal("", out)
    local o = tagged(err, "LEAKCHECK")
    assert.is_true(o.fds <= o.fds0, "fds " .. o.fds0 .. " -> " .. o.fds)
    assert.is_true(o.handles <= o.handles0, "handles " .. o.handles0 .. " -> " .. o.handles)
    assert.equal(1, o.fibers) -- close itself
    assert.equal(o.refs0, o.refs)
    -- nobody waits, nothing loads, nothing was stored; every load ended with
    -- its record, and loads were handed on
    assert.same({ waiting = 0, loading = 0, entries = 0, misses = 300 },
      { waiting = o.waiting, loading = o.loading, entries = o.entries, misses = o.misses })
    assert.equal(o.loads, o.abandoned)
    assert.is_true(o.handoffs >= 30, err)
  end)
end)
