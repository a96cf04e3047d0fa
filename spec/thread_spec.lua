-- Concurrency inside one record (moonwait.spawn, wait, kill, all) and
-- ctx.defer, against a real nginx and a real redis-server on 127.0.0.1.
local H = require("helpers")
local servers = require("support.servers")

local nginx, redis

local function run(body, recs, args, env)
  local d = H.tmpdir()
  H.script(d, body)
  H.probe(d)
  local r = H.run("run --script script.lua " .. (args or ""), { dir = d, input = H.jsonl(recs), env = env })
  r.dir = d
  return r
end

-- Lines of a file the script wrote (one event each), in order.
local function events(path)
  local t = {}
  for l in (H.read(path) or ""):gmatch("[^\n]+") do t[#t + 1] = l end
  return t
end

describe("moonwait.spawn, wait, kill, all", function()
  setup(function()
    nginx = servers.nginx()
    redis = servers.redis()
  end)
  teardown(function()
    if nginx then nginx.stop() end
    if redis then redis.stop() end
    H.cleanup()
  end)

  it("runs an HTTP lookup and a Redis lookup of one record at once", function()
    -- The Redis child blocks on BLPOP until the HTTP child pushes what nginx
    -- answered: run one after the other, the record would wait 5 s for the
    -- list and time out after 2 s.
    local r = run([[
local mw = require "moonwait"
local http = require "moonwait.http"
local redis = require "moonwait.redis"
return { async_invoke = function(rec, ctx)
  local key = "handoff:" .. rec.id
  local res, err, i = mw.all(
    function()
      local red = assert(redis.connect("127.0.0.1", rec.port))
      local v = red:blpop(key, 5)
      red:set_keepalive()
      return v[2]
    end,
    function()
      local resp = assert(http.get(rec.url))
      local red = assert(redis.connect("127.0.0.1", rec.port))
      red:rpush(key, resp.body)
      red:set_keepalive()
      return resp.status
    end)
  if not res then return nil, err end
  return { { id = rec.id, popped = res[1], status = res[2], n = res.n } }
end }
]], { { id = 1, port = redis.port, url = nginx.url("/user/7") }, { id = 2, port = redis.port, url = nginx.url("/user/8") } },
      "--timeout 2000")
    assert.equal(0, r.code, r.err)
    local out = H.decode_lines(r.out)
    assert.same({ id = 1, popped = '{"id":7,"name":"user-7"}', status = 200, n = 2 }, out[1])
    assert.same({ id = 2, popped = '{"id":8,"name":"user-8"}', status = 200, n = 2 }, out[2])
  end)

  it("all: results in argument order, nil for a function that found nothing; the first failure cancels the rest", function()
    local r = run([[
local mw = require "moonwait"
local time = require "moonwait.time"
local log = {}
return { async_invoke = function(rec, ctx)
  local res = assert(mw.all(
    function() time.sleep(0.03); return "slow" end,
    function() return nil end,
    function() time.sleep(0.01); return "fast", "ignored" end))
  local bad, err, i = mw.all(
    function() time.sleep(0.05); log[#log + 1] = "not cancelled" end,
    function() time.sleep(0.01); return nil, "not found (GET x)" end,
    function() time.sleep(0.02); error("later") end)
  time.sleep(0.1) -- (the first would have logged by now)
  local boom, err2, i2 = mw.all(function() time.sleep(5) end, function() error({}) end)
  local empty = mw.all()
  return { { r1 = res[1], r2 = res[2] == nil, r3 = res[3], n = res.n,
             bad = bad == nil, err = err, i = i, boom = boom == nil, err2 = err2, i2 = i2,
             empty_n = empty.n, log = #log } }
end }
]], { { id = 1 } })
    assert.equal(0, r.code, r.err)
    assert.same({ r1 = "slow", r2 = true, r3 = "fast", n = 3, bad = true, err = "not found (GET x)", i = 2,
                  boom = true, err2 = "(error object is a table value)", i2 = 2, empty_n = 0, log = 0 },
      H.json.decode(r.lines[1]))
  end)

  it("wait returns the first to end; a child's error is its result; misuse raises or says so", function()
    local r = run([[
local mw = require "moonwait"
local time = require "moonwait.time"
return {
  async_invoke = function(rec, ctx)
    local a = mw.spawn(function(x) time.sleep(0.05); return x end, "a")
    local b = mw.spawn(function(x, y) time.sleep(0.01); return x + y, "two" end, 40, 2)
    local ok, v, s = mw.wait(a, b)
    local st_a = a:status()
    local ok2, e = mw.wait(mw.spawn(function() error("boom") end))
    local again, msg = mw.wait(b)
    local okk = mw.kill(a)
    local st_after = a:status()
    local k2, kmsg = mw.kill(a)
    local grandchild
    local other = mw.spawn(function() grandchild = mw.spawn(time.sleep, 1); time.sleep(1) end)
    time.sleep(0.01)
    local raised, werr = pcall(mw.wait, grandchild)
    mw.kill(other)
    local bad, berr = pcall(mw.wait, "x")
    local wrapped, cerr = coroutine.wrap(function() return pcall(mw.spawn, print) end)()
    return { { ok = ok, v = v, s = s, st_a = st_a, ok2 = ok2, e = e, again = again == nil, msg = msg,
               okk = okk, st_after = st_after, k2 = k2 == nil, kmsg = kmsg, raised = raised, werr = werr,
               bad = bad, berr = berr, wrapped = wrapped, cerr = cerr } }
  end,
  on_timeout = function() end,
}
]], { { id = 1 } })
    assert.equal(0, r.code, r.err)
    local o = H.json.decode(r.lines[1])
    assert.same({ true, 42, "two" }, { o.ok, o.v, o.s })
    assert.equal("running", o.st_a)
    assert.equal(false, o.ok2)
    assert.equal("script.lua:9: boom", o.e)
    assert.is_true(o.again)
    assert.equal("already waited or killed", o.msg)
    assert.equal(true, o.okk)
    assert.equal("gone", o.st_after)
    assert.is_true(o.k2)
    assert.equal("already waited or killed", o.kmsg)
    assert.equal(false, o.raised)
    assert.matches("another coroutine's child", o.werr, 1, true)
    assert.equal(false, o.bad)
    assert.matches("moonwait.thread expected", o.berr, 1, true)
    assert.equal(false, o.wrapped)
    assert.matches("moonwait.spawn cannot be called inside a coroutine of your own", o.cerr, 1, true)
  end)

  it("works in open, close and retry predicates", function()
    local r = run([[
local mw = require "moonwait"
local time = require "moonwait.time"
local opened
return {
  open = function()
    opened = assert(mw.all(function() time.sleep(0.01) return "o1" end, function() return "o2" end))
  end,
  async_invoke = function(rec, ctx)
    if ctx.attempt == 1 then return nil, "first" end
    return { { id = rec.id, attempt = ctx.attempt, open = opened[1] .. opened[2] } }
  end,
  retry_on_error = function(err, ctx)
    local ok, yes = mw.wait(mw.spawn(function() time.sleep(0.01) return err == "first" end))
    return ok and yes
  end,
  close = function()
    local ok, v = mw.wait(mw.spawn(function() return "closed" end))
    io.stderr:write("close: ", v, "\n")
  end,
}
]], { { id = 1 } }, "--retry fixed:3:1")
    assert.equal(0, r.code, r.err)
    assert.same({ id = 1, attempt = 2, open = "o1o2" }, H.json.decode(r.lines[1]))
    assert.matches("close: closed", r.err, 1, true)
  end)

  it("cannot spawn at load time or in on_timeout; logs an error nobody waited for", function()
    local r = run([[
local mw = require "moonwait"
local time = require "moonwait.time"
local at_load = select(2, pcall(mw.spawn, function() end))
return {
  async_invoke = function(rec, ctx)
    mw.spawn(function() error("unseen failure") end)
    time.sleep(0.01)
    if rec.id == 2 then time.sleep(5) end
    return { { id = rec.id, at_load = at_load } }
  end,
  on_timeout = function(rec)
    local ok, err = pcall(mw.spawn, function() end)
    return { { id = rec.id, timeout = true, err = err } }
  end,
}
]], { { id = 1 }, { id = 2 } }, "--timeout 300")
    assert.equal(0, r.code, r.err)
    local out = H.decode_lines(r.out)
    assert.matches("moonwait.spawn can only be called inside async_invoke", out[1].at_load, 1, true)
    assert.matches("moonwait.spawn can only be called inside async_invoke", out[2].err, 1, true)
    assert.is_true(out[2].timeout)
    local _, n = r.err:gsub("%[warn%] seq=%d: a spawned function failed and was never waited on: script.lua:6: unseen failure", "")
    assert.equal(2, n, r.err)
  end)

  it("a socket stays busy until its result reaches the child; killed then, the connection is closed, never pooled half-used", function()
    -- The child's first reply (+PONG) is taken off the connection and waits
    -- for the child in the ready queue; the BLPOP's reply is still to come
    -- (300 ms). The parent, which runs first in that pass, used to find the
    -- socket idle there (receive(0) did not raise), kill the child and pool
    -- the connection: the next borrower's PING then read "*-1", the BLPOP's
    -- reply. Now the socket is busy until the child runs; a child killed
    -- before that has its connection closed.
    local r = run([[
local mw = require "moonwait"
local time = require "moonwait.time"
local socket = require "moonwait.socket"
return { async_invoke = function(rec, ctx)
  local sock = socket.tcp()
  assert(sock:connect("127.0.0.1", rec.port, { pool = "p" }))
  local t = mw.spawn(function()
    assert(sock:send("PING\r\nBLPOP never:x 0.3\r\n"))
    return sock:receive(), sock:receive()
  end)
  time.sleep(0)
  while not pcall(sock.receive, sock, 0) do time.sleep(0) end -- (raises while busy)
  mw.kill(t)
  local ka, kerr = sock:setkeepalive()
  local s2 = socket.tcp()
  assert(s2:connect("127.0.0.1", rec.port, { pool = "p" }))
  assert(s2:send("PING\r\n"))
  local got, err = s2:receive()
  return { { got = got or err, kept = ka == 1 or kerr:match("^closed") ~= nil } }
end }
]], { { port = redis.port } }, "--timeout 3000")
    assert.equal(0, r.code, r.err)
    assert.same({ got = "+PONG", kept = true }, H.json.decode(r.lines[1]))
  end)

  it("a child killed while its socket's result waits for it in the ready queue has its connection closed", function()
    -- Both timers fire in the same loop turn, the parent's first (due
    -- earlier, on the clock that stood still while it spun): the parent
    -- kills the child while the child's read timeout waits for it. The
    -- child never saw that result, and the BLPOP's reply is still to come:
    -- the socket is half used. It was left open: setkeepalive pooled it and
    -- the next PING read "*-1".
    local r = run([[
local mw = require "moonwait"
local time = require "moonwait.time"
local socket = require "moonwait.socket"
return { async_invoke = function(rec, ctx)
  local sock = socket.tcp()
  assert(sock:connect("127.0.0.1", rec.port, { pool = "q" }))
  sock:settimeout(20)
  local t = mw.spawn(function()
    assert(sock:send("BLPOP never:y 0.3\r\n"))
    return sock:receive() -- times out after 20 ms; the reply comes at 300 ms
  end)
  time.sleep(0) -- the child runs first: its read timer is due at T + 20
  local c0 = os.clock()
  while os.clock() - c0 < 0.06 do end -- (the loop's clock stays at T)
  time.sleep(0.01) -- due at T + 10: both fire in the next turn, this one first
  mw.kill(t)
  local ka, kerr = sock:setkeepalive()
  local s2 = socket.tcp()
  assert(s2:connect("127.0.0.1", rec.port, { pool = "q" }))
  assert(s2:send("PING\r\n"))
  local got, err = s2:receive()
  return { { got = got or err, ka = ka or kerr, reused = s2:getreusedtimes() } }
end }
]], { { port = redis.port } }, "--timeout 3000")
    assert.equal(0, r.code, r.err)
    assert.same({ got = "+PONG", ka = "closed (127.0.0.1:" .. redis.port .. ")", reused = 0 },
      H.json.decode(r.lines[1]))
  end)

  it("a wait inside a function called from C (sort comparator, gsub function) raises before it starts anything", function()
    -- There the yield itself fails ("attempt to yield across C-call
    -- boundary"), but only after the primitive had parked the fiber: a
    -- sleep(0) left the running fiber in the ready queue, so its next
    -- sleep returned at once, and once it had gone back to the pool the
    -- queue resumed a finished thread: the process crashed (SIGSEGV in
    -- lua_resume).
    local r = run([[
local mw = require "moonwait"
local time = require "moonwait.time"
local redis = require "moonwait.redis"
return { async_invoke = function(rec, ctx)
  local t = mw.spawn(function() return "kid" end)
  local red = assert(redis.connect("127.0.0.1", rec.port))
  local _, e1 = pcall(table.sort, { 3, 2, 1 }, function(a, b) time.sleep(0); return a < b end)
  local _, e2 = pcall(string.gsub, "x", "x", function() return select(2, mw.wait(t)) end)
  local _, e3 = pcall(string.gsub, "{k}", "{(%w+)}", function(k) return red:get(k) end)
  local t0 = ctx.remaining_ms()
  time.sleep(0.05)
  local slept = t0 - ctx.remaining_ms()
  local ok, v = mw.wait(t)
  local pong = red:ping()
  red:set_keepalive()
  return { { e1 = e1, e2 = e2, e3 = e3, slept = slept >= 50, kid = v, pong = pong } }
end }
]], { { port = redis.port }, { port = redis.port }, { port = redis.port }, { port = redis.port } },
      "--timeout 3000 --capacity 1")
    assert.equal(0, r.code, r.err)
    local out = H.decode_lines(r.out)
    assert.equal(4, #out)
    for _, o in ipairs(out) do
      assert.matches("moonwait.time.sleep cannot wait inside a function called from C", o.e1, 1, true)
      assert.matches("moonwait.wait cannot wait inside a function called from C", o.e2, 1, true)
      assert.matches("send cannot wait inside a function called from C", o.e3, 1, true)
      assert.same({ true, "kid", "PONG" }, { o.slept, o.kid, o.pong })
    end
  end)

  it("a record's timeout cancels every child and its I/O: no fd, timer, coroutine, connection or ref left", function()
    local script = [[
local mw = require "moonwait"
local time = require "moonwait.time"
local http = require "moonwait.http"
local redis = require "moonwait.redis"
local fds = require("probe").fds
local port, base
local function clients()
  local red = assert(redis.connect("127.0.0.1", port, { pool_size = 1 }))
  local list = red:client("LIST")
  red:close()
  local n = 0
  for _ in list:gmatch("cmd=") do n = n + 1 end
  return n
end
return {
  open = function(ctx)
    port = tonumber(os.getenv("REDIS_PORT"))
    -- warm up: libuv opens one reserve fd with its first TCP handle
    assert(http.get(os.getenv("WARM_URL"), { keepalive = false }))
    time.sleep(0.05) -- (its connection's handle closes)
    collectgarbage()
    local s = mw.runtime_stats()
    base = { fds = fds(), handles = s.handles, refs = s.refs, clients = clients() }
  end,
  async_invoke = function(rec, ctx)
    if not rec.slow then time.sleep(10) end -- the control run: no child at all
    mw.spawn(function() return http.get(rec.slow) end)
    mw.spawn(function()
      local red = assert(redis.connect("127.0.0.1", port))
      return red:blpop("never:" .. rec.id, 10)
    end)
    mw.spawn(function() mw.spawn(function() time.sleep(10) end); time.sleep(10) end)
    local t = mw.spawn(function() time.sleep(10) end)
    mw.wait(t)
    return { { never = true } }
  end,
  on_timeout = function(rec) return { { id = rec.id, timeout = true } } end,
  close = function()
    collectgarbage()
    collectgarbage()
    local s = mw.runtime_stats()
    local now = { fds = fds(), handles = s.handles, refs = s.refs, clients = clients() }
    -- the redis client that counted is pooled nowhere (pool_size 1, closed)
    local f = assert(io.open("leaks.json", "w"))
    f:write(require("moonwait.json").encode({ base = base, now = now, fibers = s.fibers }))
    f:close()
  end,
}
]]
    local env = "export REDIS_PORT=" .. redis.port .. " WARM_URL=" .. H.q(nginx.url("/user/1")) .. "; "
    local slow = nginx.url("/slow")
    local function leaks(with_children)
      local r = run(script, { { id = 1, slow = with_children and slow or nil }, { id = 2, slow = with_children and slow or nil },
                              { id = 3, slow = with_children and slow or nil } }, "--timeout 300 --capacity 3", env)
      assert.equal(0, r.code, r.err)
      local out = H.decode_lines(r.out)
      assert.equal(3, #out)
      for i = 1, 3 do assert.same({ id = i, timeout = true }, out[i]) end
      return H.json.decode(H.read(r.dir .. "/leaks.json"))
    end
    local l, control = leaks(true), leaks(false)
    -- fds, refs and Redis clients as before the first record (the handles
    -- differ in open: its own timer runs then)
    assert.same({ l.base.fds, l.base.refs, l.base.clients }, { l.now.fds, l.now.refs, l.now.clients })
    assert.equal(1, l.now.clients) -- the one counting
    -- and everything as after records that spawned nothing
    assert.same(control.now, l.now)
    assert.equal(1, l.fibers) -- close's own
  end)
end)

describe("ctx.defer", function()
  teardown(function() H.cleanup() end)

  -- Each deferred function appends "id:attempt:tag:how" to the file `events`.
  local SCRIPT = [[
local mw = require "moonwait"
local time = require "moonwait.time"
local function note(rec, ctx, tag)
  return function(how)
    local f = assert(io.open("events", "a"))
    f:write(rec.id, ":", ctx.attempt, ":", tag, ":", how, "\n")
    f:close()
  end
end
return {
  async_invoke = function(rec, ctx)
    ctx.defer(note(rec, ctx, "first"))
    ctx.defer(note(rec, ctx, "second"))
    mw.wait(mw.spawn(function() ctx.defer(note(rec, ctx, "child")) end))
    if rec.how == "raise" then error("raised on purpose") end
    if rec.how == "nil_err" then return nil, "nil, err" end
    if rec.how == "retry" and ctx.attempt < 3 then return nil, "again" end
    if rec.how == "sleep" then time.sleep(10) end
    if rec.how == "bad_defer" then
      ctx.defer(function() error("defer broke") end)
      ctx.defer(function() time.sleep(1) end)
    end
    return { { id = rec.id, attempt = ctx.attempt } }
  end,
  retry_on_error = function(err, ctx)
    ctx.defer(function(how)
      local f = assert(io.open("events", "a"))
      f:write("pred:", ctx.attempt, ":", how, "\n")
      f:close()
    end)
    return err == "again"
  end,
  on_timeout = function(rec, ctx)
    local f = assert(io.open("events", "a"))
    f:write(rec.id, ":on_timeout\n")
    f:close()
    return { { id = rec.id, timeout = true, defer = select(2, pcall(ctx.defer, print)) } }
  end,
}
]]

  it("runs newest first however the attempt ends: returned, nil err, raised, retried, timed out", function()
    local d = H.tmpdir()
    H.script(d, SCRIPT)
    local recs = { { id = 1, how = "ok" }, { id = 2, how = "nil_err" }, { id = 3, how = "raise" },
                   { id = 4, how = "retry" }, { id = 5, how = "sleep" } }
    local r = H.run("run --script script.lua --timeout 500 --retry fixed:3:1 --on-error dead-letter --dead-letter dl",
      { dir = d, input = H.jsonl(recs) })
    assert.equal(0, r.code, r.err)
    local ev = events(d .. "/events")
    local by = {}
    for _, e in ipairs(ev) do
      local id = e:match("^(%w+):")
      by[id] = by[id] or {}
      by[id][#by[id] + 1] = e
    end
    -- the child's own defer belongs to the attempt: newest, so first
    assert.same({ "1:1:child:returned", "1:1:second:returned", "1:1:first:returned" }, by["1"])
    assert.same({ "2:1:child:returned", "2:1:second:returned", "2:1:first:returned" }, by["2"])
    assert.same({ "3:1:child:raised", "3:1:second:raised", "3:1:first:raised" }, by["3"])
    assert.same({ "4:1:child:returned", "4:1:second:returned", "4:1:first:returned",
                  "4:2:child:returned", "4:2:second:returned", "4:2:first:returned",
                  "4:3:child:returned", "4:3:second:returned", "4:3:first:returned" }, by["4"])
    -- a timeout: the attempt's defers before on_timeout
    assert.same({ "5:1:child:abandoned", "5:1:second:abandoned", "5:1:first:abandoned", "5:on_timeout" }, by["5"])
    -- the predicate's own ctx.defer ran for each of its runs (record 2's nil, err, record
    -- 3's error, record 4's two failed attempts)
    assert.equal(4, #(by["pred"] or {}))
    for _, e in ipairs(by["pred"]) do assert.matches("^pred:%d:returned$", e) end
    local out = H.decode_lines(r.out)
    assert.equal(3, #out)
    assert.same({ id = 4, attempt = 3 }, out[2])
    assert.is_true(out[3].timeout)
    assert.matches("ctx.defer can only be called while an attempt runs", out[3].defer, 1, true)
  end)

  it("runs when the run fails with the record in flight; an error or a wait in one is logged, not fatal", function()
    local d = H.tmpdir()
    H.script(d, SCRIPT)
    -- record 2 fails the run once record 1 is out; record 3 is in flight then
    local recs = { { id = 1, how = "bad_defer" }, { id = 2, how = "raise" }, { id = 3, how = "sleep" } }
    local r = H.run("run --script script.lua --timeout 5000 --capacity 3", { dir = d, input = H.jsonl(recs) })
    assert.equal(1, r.code, r.err)
    assert.matches("record 2", r.err, 1, true)
    local ev = events(d .. "/events")
    local three = {}
    for _, e in ipairs(ev) do if e:match("^3:") then three[#three + 1] = e end end
    assert.same({ "3:1:child:abandoned", "3:1:second:abandoned", "3:1:first:abandoned" }, three)
    -- record 1: the two broken defers logged, its three others still ran, its output kept
    assert.matches("%[error%] seq=1: a ctx.defer function failed: [^\n]*moonwait.time.sleep can only wait", r.err)
    -- the message names where it was called from: a ctx.defer function
    assert.matches("moonwait.time.sleep can only wait inside async_invoke, batch_invoke, open, close, a retry "
      .. "predicate or a function they spawned (not at script load time, in on_timeout or in a ctx.defer function)",
      r.err, 1, true)
    assert.matches("%[error%] seq=1: a ctx.defer function failed: [^\n]*defer broke", r.err)
    local one = {}
    for _, e in ipairs(ev) do if e:match("^1:") then one[#one + 1] = e end end
    assert.same({ "1:1:child:returned", "1:1:second:returned", "1:1:first:returned" }, one)
    assert.same({ id = 1, attempt = 1 }, H.json.decode(r.lines[1]))
  end)
end)
