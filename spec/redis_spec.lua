-- moonwait.redis against a real redis-server (127.0.0.1, free port, no
-- persistence), started here and stopped after.
local H = require("helpers")
local servers = require("support.servers")

local redis

local function run(body, recs, args)
  local d = H.tmpdir()
  H.script(d, body)
  return H.run("run --script script.lua " .. (args or ""), { dir = d, input = H.jsonl(recs) })
end

describe("moonwait.redis", function()
  setup(function() redis = servers.redis() end)
  teardown(function() redis.stop(); H.cleanup() end)

  it("runs commands: strings, hashes, integers, nil bulks, errors, arrays", function()
    local r = run([[
local redis = require "moonwait.redis"
local mw = require "moonwait"
return { async_invoke = function(rec)
  local r = assert(redis.connect("127.0.0.1", rec.port))
  local out = {}
  out.set = r:set("greeting", "hello")
  out.get = r:get("greeting")
  out.missing_is_null = r:get("no-such-key") == mw.null
  out.hset = r:hset("user:1", "name", "Ada")
  out.hget = r:hget("user:1", "name")
  out.incr = r:incr("counter")
  out.call = r:call("ECHO", "raw")
  local ok, err = r:hget("greeting", "x")      -- WRONGTYPE
  out.err_is_false = ok == false
  out.err = err
  r:del("list")
  r:rpush("list", "a", "b", 3)
  out.list = r:lrange("list", 0, -1)
  assert(r:set_keepalive())
  return { out }
end }
]], { { port = redis.port } })
    assert.equal(0, r.code, r.err)
    local o = H.json.decode(r.lines[1])
    assert.equal("OK", o.set)
    assert.equal("hello", o.get)
    assert.is_true(o.missing_is_null)
    assert.equal(1, o.hset)
    assert.equal("Ada", o.hget)
    assert.equal(1, o.incr)
    assert.equal("raw", o.call)
    assert.is_true(o.err_is_false)
    -- the server's text, then where: the command's name, never its arguments
    assert.equal("WRONGTYPE Operation against a key holding the wrong kind of value (redis 127.0.0.1:"
      .. redis.port .. " HGET)", o.err)
    assert.same({ "a", "b", "3" }, o.list)
  end)

  it("pipelines commands in one round trip", function()
    local r = run([[
local redis = require "moonwait.redis"
return { async_invoke = function(rec)
  local r = assert(redis.connect("127.0.0.1", rec.port))
  r:init_pipeline()
  r:set("p1", "one")
  r:set("p2", "two")
  r:get("p1")
  r:get("p2")
  r:hget("p1", "x")   -- an error reply inside the pipeline
  local res = assert(r:commit_pipeline())
  r:close()
  return { { res = res } }
end }
]], { { port = redis.port } })
    assert.equal(0, r.code, r.err)
    local res = H.json.decode(r.lines[1]).res
    assert.equal("OK", res[1])
    assert.equal("OK", res[2])
    assert.equal("one", res[3])
    assert.equal("two", res[4])
    assert.equal(false, res[5][1])
    -- each reply of a pipeline is named by its own command
    assert.equal("WRONGTYPE Operation against a key holding the wrong kind of value (redis 127.0.0.1:"
      .. redis.port .. " HGET)", res[5][2])
  end)

  it("enriches many records over one pooled connection", function()
    redis.cli("SET user:7 Grace")
    local d = H.tmpdir()
    H.script(d, [[
local redis = require "moonwait.redis"
return {
  async_invoke = function(rec)
    local r = assert(redis.connect("127.0.0.1", rec.port))
    rec.name = assert(r:get("user:" .. rec.user))
    rec.clients = tonumber(r:info("clients"):match("connected_clients:(%d+)"))
    assert(r:set_keepalive())
    return { rec }
  end,
}
]])
    local recs = {}
    for i = 1, 200 do recs[i] = { port = redis.port, user = 7 } end
    local r = H.run("run --script script.lua --capacity 1", { dir = d, input = H.jsonl(recs) })
    assert.equal(0, r.code, r.err)
    local out = H.decode_lines(r.out)
    assert.equal(200, #out)
    for _, o in ipairs(out) do
      assert.equal("Grace", o.name)
      assert.equal(1, o.clients)   -- CLIENT LIST would show one client: ours
    end
  end)

  it("returns nil, err when the server is down, and raises on bad arguments", function()
    local r = run([[
local redis = require "moonwait.redis"
return { async_invoke = function(rec)
  local r, err = redis.connect("127.0.0.1", 1)
  return { { err = err } }
end }
]], { {} })
    assert.equal(0, r.code, r.err)
    assert.equal("connection refused (127.0.0.1:1)", H.json.decode(r.lines[1]).err)
    r = run([[
local redis = require "moonwait.redis"
return { async_invoke = function(rec)
  local r = assert(redis.connect("127.0.0.1", rec.port))
  r:set("k", {})
  return {}
end }
]], { { port = redis.port } })
    assert.equal(1, r.code)
    assert.matches("redis: argument 3 is a table", r.err, 1, true)
  end)

  -- issue 13: errors carry where, so a record with several lookups tells
  -- which one failed, and its dead letter keeps that text.
  describe("errors name where they happened", function()
    it("a record with two lookups, one refused, ends in a dead letter naming host:port once", function()
      local free = servers.free_port()
      redis.cli("SET user:7 Ada")
      local d = H.tmpdir()
      H.script(d, [[
local redis = require "moonwait.redis"
local function lookup(port, key)
  local r, err = redis.connect("127.0.0.1", port, { timeout_ms = 2000 })
  if not r then return nil, err end
  local v, verr = r:get(key)
  if v == nil then return nil, verr end
  if v == false then return nil, verr end
  assert(r:set_keepalive())
  return v
end
return { async_invoke = function(rec)
  local name, err = lookup(rec.users, "user:" .. rec.id)
  if not name then return nil, err end
  local cart, err2 = lookup(rec.carts, "cart:" .. rec.id)
  if not cart then return nil, err2 end
  return { rec }
end }
]])
      local r = H.run("run --script script.lua --on-error dead-letter --dead-letter dl", { dir = d,
        input = H.jsonl({ { id = 7, users = redis.port, carts = free } }) })
      assert.equal(0, r.code, r.err)
      local dl = H.decode_lines(H.read(d .. "/dl"))
      assert.equal(1, #dl)
      -- the socket's where, passed on as it is: not stripped, not doubled
      assert.equal("connection refused (127.0.0.1:" .. free .. ")", dl[1].error)
    end)

    it("an error reply names host, port and command; a call on the closed connection names host:port", function()
      redis.cli("SET str:secret-key v")
      local r = run([[
local redis = require "moonwait.redis"
return { async_invoke = function(rec)
  local c = assert(redis.connect("127.0.0.1", rec.port))
  local out = {}
  local ok, e1 = c:call("hget", "str:secret-key", "secret-field") -- any case of the name
  out.e1 = e1
  local ok2, e2 = c:call("NOSUCHCMD", "secret-arg")
  out.e2 = e2
  c:init_pipeline()
  local _, e3 = c:set_keepalive()
  out.e3 = e3
  c:cancel_pipeline()
  local _, e4 = c:commit_pipeline()
  out.e4 = e4
  c:close()
  local _, e5 = c:get("k")
  out.e5 = e5
  local _, e6 = c:close()
  out.e6 = e6
  return { out }
end }
]], { { port = redis.port } })
      assert.equal(0, r.code, r.err)
      local o = H.json.decode(r.lines[1])
      local at = "127.0.0.1:" .. redis.port
      assert.same({
        e1 = "WRONGTYPE Operation against a key holding the wrong kind of value (redis " .. at .. " HGET)",
        e3 = "pipeline not committed (redis " .. at .. ")",
        e4 = "no pipeline (redis " .. at .. ")",
        e5 = "closed (" .. at .. ")",
        e6 = "closed (" .. at .. ")",
      }, { e1 = o.e1, e3 = o.e3, e4 = o.e4, e5 = o.e5, e6 = o.e6 })
      -- (the server's own text may quote arguments; what moonwait adds never does)
      assert.matches("^ERR unknown command .* %(redis " .. at:gsub("%.", "%%.") .. " NOSUCHCMD%)$", o.e2)
    end)

    it("a failed AUTH names host, port and AUTH, never the password", function()
      local rs = servers.redis({ password = "right-pw" })
      local ok, err = pcall(function()
        local r = run([[
local redis = require "moonwait.redis"
return { async_invoke = function(rec)
  local c, e1 = redis.connect("127.0.0.1", rec.port, { password = "s3cret-wrong-pw" })
  local c2, e2 = redis.connect("127.0.0.1", rec.port, { user = "s3cret-user", password = "s3cret-wrong-pw" })
  return { { e1 = e1, e2 = e2 } }
end }
]], { { port = rs.port } })
        assert.equal(0, r.code, r.err)
        local o = H.json.decode(r.lines[1])
        local want = "auth failed: WRONGPASS invalid username-password pair or user is disabled. (redis 127.0.0.1:"
          .. rs.port .. " AUTH)"
        assert.same({ e1 = want, e2 = want }, o)
        assert.is_nil(r.lines[1]:find("s3cret", 1, true))
        assert.is_nil(r.err:find("s3cret", 1, true))
      end)
      rs.stop()
      assert(ok, err)
    end)
  end)

  it("keeps integers exact both ways: 64-bit replies, large numbers and int64 record fields as arguments", function()
    redis.cli("DEL big small n id")
    local r = run([[
local redis = require "moonwait.redis"
return { async_invoke = function(rec)
  local r = assert(redis.connect("127.0.0.1", rec.port))
  local out = {}
  assert(r:set("big", "9223372036854775800"))
  out.incrby = assert(r:incrby("big", 7))            -- 2^63 - 1: an int64 cdata
  assert(r:set("small", "9007199254740991"))
  out.incr = assert(r:incr("small"))                  -- 2^53: still a number
  out.incr_type = type(out.incr)
  out.decrby = assert(r:decrby("small", -1))          -- 2^53 + 1: exact
  assert(r:set("n", 1e15))                            -- not "1e+15"
  out.n = assert(r:get("n"))
  assert(r:set("id", rec.id))                         -- the record's int64 field
  out.id = assert(r:get("id"))
  out.id_back = rec.id
  local ok, err = r:incrby("big", 1)
  out.overflow = err
  return { out }
end }
]], { '{"port":' .. redis.port .. ',"id":9007199254740993}' })
    assert.equal(0, r.code, r.err)
    local l = r.lines[1]
    assert.matches('"incrby":9223372036854775807', l, 1, true)
    assert.matches('"incr":9007199254740992', l, 1, true)
    assert.matches('"incr_type":"number"', l, 1, true)
    assert.matches('"decrby":9007199254740993', l, 1, true)
    assert.matches('"n":"1000000000000000"', l, 1, true)
    assert.matches('"id":"9007199254740993"', l, 1, true)
    assert.matches('"id_back":9007199254740993', l, 1, true)
    assert.matches('"overflow":"ERR increment or decrement would overflow (redis 127.0.0.1:' .. redis.port .. ' INCRBY)"',
      l, 1, true)
  end)

  it("handles 1,000 concurrent lookups", function()
    -- A barrier in the real server proves the 1,000 were in flight together:
    -- each record INCRs "arrived", then blocks in BLPOP "go"; the record that
    -- arrives 1,000th pushes 1,000 tokens. Were fewer than 1,000 records (or
    -- connections) in flight at once, the BLPOPs would wait for a record that
    -- cannot start, and time out after 20 s (the socket's timeout is
    -- longer, so the server's BLPOP timeout is what ends them).
    redis.cli("DEL arrived go")
    redis.cli("SET hot value")
    local recs = {}
    for i = 1, 1000 do recs[i] = { port = redis.port, i = i } end
    local r = run([[
local redis = require "moonwait.redis"
local mw = require "moonwait"
return { async_invoke = function(rec)
  local r = assert(redis.connect("127.0.0.1", rec.port, { pool_size = 1000, timeout_ms = 30000 }))
  local n = assert(r:incr("arrived"))
  if n == 1000 then
    for _ = 1, 1000 do assert(r:rpush("go", "t")) end
  end
  local tok = assert(r:blpop("go", 20))
  if tok == mw.null then error("the barrier never opened: " .. n .. " arrived") end
  local v = assert(r:get("hot"))
  assert(r:set_keepalive(10000, 1000))
  return { { i = rec.i, v = v, n = n } }
end }
]], recs, "--capacity 1000 --mode unordered --timeout 60000")
    assert.equal(0, r.code, r.err)
    assert.equal(1000, #r.lines)
    local seen, ns = {}, {}
    for _, l in ipairs(r.lines) do
      local o = H.json.decode(l)
      assert.equal("value", o.v)
      seen[o.i] = true
      ns[o.n] = true
    end
    for i = 1, 1000 do
      assert.is_true(seen[i], "record " .. i)
      assert.is_true(ns[i], "arrival " .. i)
    end
  end)

  -- Issue 16: connect takes the cosocket of an earlier set_keepalive (no
  -- new userdata per connect). The object that gave it up stays closed:
  -- none of its methods may reach the new connection through it.
  it("keeps an object closed after set_keepalive while its socket serves the next connect", function()
    local r = run([[
local redis = require "moonwait.redis"
return { async_invoke = function(rec)
  local a = assert(redis.connect("127.0.0.1", rec.port))
  assert(a:set("spare", "one"))
  assert(a:set_keepalive(10000, 10))
  local b = assert(redis.connect("127.0.0.1", rec.port, { db = 0 }))
  local out = { b_reused = b:get_reused_times() }
  out.a_reused, out.a_reused_err = a:get_reused_times()
  out.a_get, out.a_get_err = a:get("spare")
  out.a_close, out.a_close_err = a:close()
  out.a_keep, out.a_keep_err = a:set_keepalive()
  out.b_get = b:get("spare")
  b:close()
  return { out }
end }
]], { { port = redis.port } })
    assert.equal(0, r.code, r.err)
    local closed = "closed (127.0.0.1:" .. redis.port .. ")"
    assert.same({ b_reused = 1, a_reused_err = closed, a_get_err = closed, a_close_err = closed,
                  a_keep_err = closed, b_get = "one" }, H.json.decode(r.lines[1]))
  end)

  -- Issue 16 (R2): a reply that arrives whole is read by the cosocket's fast
  -- path (src/lua/socket_redis.c); one that arrives in pieces, an error
  -- reply, an int64 and a command with arguments of other kinds are left to
  -- redis.lua, from where the fast path stopped: both give the same values,
  -- and the connection stays in step.
  it("reads replies in pieces, error replies and any argument as before the fast path, in step", function()
    local r = run([[
local redis = require "moonwait.redis"
local mw = require "moonwait"
return { async_invoke = function(rec)
  local r = assert(redis.connect("127.0.0.1", rec.port))
  local out = {}
  assert(r:set("r2big", string.rep("0123456789", 300000))) -- 3 MB: many reads
  local v = r:get("r2big")
  out.big = #v
  out.big_ok = v == string.rep("0123456789", 300000)
  local keys = {}
  for i = 1, 3000 do keys[i] = "r2k" .. i end
  assert(r:mset("r2k1", "a", "r2k2999", "b"))
  local m = r:mget(unpack(keys))
  out.mget = { #m, m[1], m[2] == mw.null, m[2999], m[3000] == mw.null }
  out.nested = r:eval("return {1, {2, {3, 'x'}}, 'y', {}}", 0)
  local ok, arr = pcall(r.eval, r, "return {1, redis.error_reply('ERR boom')}", 0)
  out.err_in_array = { ok, arr[1], arr[2][1], arr[2][2] }
  out.after = r:get("r2k1")
  out.float = r:set("r2f", 1.5) and r:get("r2f")
  out.bool = r:set("r2b", true) and r:get("r2b")
  out.int64 = r:set("r2i", 9007199254740993LL) and tostring(r:incrby("r2i", 0))
  out.wrongtype = select(2, r:hget("r2f", "x"))
  out.status = r:call("PING")
  r:init_pipeline()
  r:get("r2k1"); r:hget("r2f", "x"); r:get("r2big"); r:incr("r2n")
  local p = r:commit_pipeline()
  out.pipeline = { p[1], p[2][1], #p[3], p[4] }
  out.last = r:get("r2k2999")
  assert(r:set_keepalive())
  return { out }
end }
]], { { port = redis.port } })
    assert.equal(0, r.code, r.err)
    local where = " (redis 127.0.0.1:" .. redis.port
    assert.same({
      big = 3000000, big_ok = true,
      mget = { 3000, "a", true, "b", true },
      nested = { 1, { 2, { 3, "x" } }, "y", {} },
      err_in_array = { true, 1, false, "ERR boom" .. where .. " EVAL)" },
      after = "a", float = "1.5", bool = "1", int64 = "9007199254740993LL",
      wrongtype = "WRONGTYPE Operation against a key holding the wrong kind of value" .. where .. " HGET)",
      status = "PONG",
      pipeline = { "a", false, 3000000, 1 },
      last = "b",
    }, H.json.decode(r.lines[1]))
  end)

  -- Issue 16: a recycled cosocket is set again only where this connect
  -- differs from the one before: each connect's timeout and reply limit
  -- still hold.
  it("applies each connect's timeout and reply limit to a recycled cosocket", function()
    redis.cli("SET big1000 " .. string.rep("x", 1000))
    local r = run([[
local redis = require "moonwait.redis"
return { async_invoke = function(rec)
  local a = assert(redis.connect("127.0.0.1", rec.port, { max_reply_bytes = 100, timeout_ms = 10000 }))
  assert(a:get("no-such-key"))
  assert(a:set_keepalive(10000, 10))
  local b = assert(redis.connect("127.0.0.1", rec.port, { timeout_ms = 100 }))
  local out = { reused = b:get_reused_times(), big = #assert(b:get("big1000")) }
  local v, err = b:blpop("issue16-empty-list", 2)   -- the server waits 2 s; our 100 ms end it
  out.err = err and err:match("^%a+")
  return { out }
end }
]], { { port = redis.port } })
    assert.equal(0, r.code, r.err)
    assert.same({ reused = 1, big = 1000, err = "timeout" }, H.json.decode(r.lines[1]))
  end)
end)
