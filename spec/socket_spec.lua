-- moonwait.socket (the cosocket) against real servers: redis-server for a
-- line protocol, nginx for HTTP and TLS, the fault peer for the rest.
local H = require("helpers")
local servers = require("support.servers")

local redis, nginx

local function run_one(body, rec, args)
  local d = H.tmpdir()
  H.script(d, body)
  local r = H.run("run --script script.lua " .. (args or ""), { dir = d, input = H.jsonl({ rec }) })
  return r, r.lines[1] and H.json.decode(r.lines[1])
end

describe("moonwait.socket", function()
  setup(function() redis = servers.redis(); nginx = servers.nginx() end)
  teardown(function() redis.stop(); nginx.stop(); H.cleanup() end)

  it("connects, sends and receives lines and byte counts", function()
    local r, o = run_one([[
local socket = require "moonwait.socket"
return { async_invoke = function(rec)
  local s = socket.tcp()
  assert(s:connect("127.0.0.1", rec.port))
  local bytes = assert(s:send({ "SET k ", "hello\r\n" }))
  local l1 = assert(s:receive())              -- "*l" by default
  assert(s:send("GET k\r\n"))
  local hdr = assert(s:receive("*l"))
  local data = assert(s:receive(5))
  local crlf = assert(s:receive(2))
  s:close()
  return { { bytes = bytes, l1 = l1, hdr = hdr, data = data, crlf = #crlf } }
end }
]], { port = redis.port })
    assert.equal(0, r.code, r.err)
    assert.same({ bytes = 13, l1 = "+OK", hdr = "$5", data = "hello", crlf = 2 }, o)
  end)

  it("receives until a delimiter and until close", function()
    local r, o = run_one([[
local socket = require "moonwait.socket"
return { async_invoke = function(rec)
  local s = socket.tcp()
  assert(s:connect("127.0.0.1", rec.port))
  assert(s:send("GET /chunked HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
  local iter = s:receiveuntil("\r\n\r\n")
  local head = assert(iter())
  local rest = assert(s:receive("*a"))
  local again, err = s:receive()
  return { { status = head:match("^HTTP/1.1 (%d+)"), chunked = head:find("chunked", 1, true) ~= nil,
             rest_has = rest:find("part2", 1, true) ~= nil, err = err } }
end }
]], { port = nginx.port })
    assert.equal(0, r.code, r.err)
    assert.same({ status = "200", chunked = true, rest_has = true, err = "closed (127.0.0.1:" .. nginx.port .. ")" }, o)
  end)

  it("returns nil, err, partial when the peer closes mid-line", function()
    servers.with_faultpeer("close-after-headers", function(peer)
      local r, o = run_one([[
local socket = require "moonwait.socket"
return { async_invoke = function(rec)
  local s = socket.tcp()
  assert(s:connect("127.0.0.1", rec.port))
  assert(s:send("GET / HTTP/1.1\r\n\r\n"))
  local all = {}
  while true do
    local line, err, partial = s:receive(200)
    if not line then return { { err = err, partial_len = #partial } } end
  end
end }
]], { port = peer.port })
      assert.equal(0, r.code, r.err)
      assert.equal("closed (127.0.0.1:" .. peer.port .. ")", o.err)
      assert.is_true(o.partial_len > 0)
    end)
  end)

  it("times out a read and stays usable", function()
    servers.with_faultpeer("echo-lines", function(peer)
      local r, o = run_one([[
local socket = require "moonwait.socket"
return { async_invoke = function(rec)
  local s = socket.tcp()
  s:settimeouts(1000, 1000, 100)
  assert(s:connect("127.0.0.1", rec.port))
  assert(s:send("half"))
  local line, err, partial = s:receive()      -- no newline comes
  assert(s:send("ping\n"))
  local again = s:receive()
  return { { err = err, is_timeout = err:find("^timeout") ~= nil, partial = partial, again = again } }
end }
]], { port = peer.port })
      assert.equal(0, r.code, r.err)
      -- the leading word stays matchable; the partial data is the third value
      assert.same({ err = "timeout (127.0.0.1:" .. peer.port .. ")", is_timeout = true, partial = "half",
                    again = "ping" }, o)
    end)
  end)

  it("reports connection refused and host not found", function()
    local r, o = run_one([[
local socket = require "moonwait.socket"
return { async_invoke = function(rec)
  local a, e1 = socket.tcp():connect("127.0.0.1", 1)
  local b, e2 = socket.tcp():connect("no-such-host.invalid", 80)
  local s = socket.tcp()
  local c, e3 = s:send("x")
  return { { e1 = e1, e2 = e2, e3 = e3 } }
end }
]], {})
    assert.equal(0, r.code, r.err)
    assert.equal("connection refused (127.0.0.1:1)", o.e1)
    assert.is_truthy(o.e2 == "host not found (no-such-host.invalid:80)" or o.e2 == "no resolver (no-such-host.invalid:80)", o.e2)
    assert.equal("closed (not connected)", o.e3)  -- a socket never aimed anywhere
  end)

  -- issue 13: errors carry where, so a record with several lookups tells
  -- which one failed, and its dead letter keeps that text.
  -- (the IPv6 form, "[::1]:6379", is spec/c/test_http.c's: traffic here goes
  -- to 127.0.0.1 only)
  it("names host:port in the dead letter of a record with two lookups, one refused", function()
    local free = servers.free_port()
    local d = H.tmpdir()
    H.script(d, [[
local socket = require "moonwait.socket"
local function ping(host, port)
  local s = socket.tcp()
  s:settimeout(2000)
  local ok, err = s:connect(host, port)
  if not ok then return nil, err end
  ok, err = s:send("PING\r\n")
  if not ok then return nil, err end
  local line, rerr = s:receive()
  if not line then return nil, rerr end
  assert(s:setkeepalive())
  return line
end
return { async_invoke = function(r)
  local a, err = ping(r.host, r.first)
  if not a then return nil, err end
  local b, err2 = ping(r.host, r.second)
  if not b then return nil, err2 end
  return { { id = r.id, a = a, b = b } }
end }
]])
    local r = H.run("run --script script.lua --on-error dead-letter --dead-letter dl", { dir = d,
      input = H.jsonl({ { id = 1, host = "127.0.0.1", first = redis.port, second = free },
                        { id = 2, host = "127.0.0.1", first = free, second = redis.port },
                        { id = 3, host = "127.0.0.1", first = redis.port, second = redis.port } }) })
    assert.equal(0, r.code, r.err)
    assert.same({ { id = 3, a = "+PONG", b = "+PONG" } }, H.decode_lines(r.out))
    local dl = H.decode_lines(H.read(d .. "/dl"))
    assert.equal(2, #dl)
    assert.equal("connection refused (127.0.0.1:" .. free .. ")", dl[1].error)
    assert.equal("connection refused (127.0.0.1:" .. free .. ")", dl[2].error)
    assert.same({ 1, 2 }, { dl[1].record.id, dl[2].record.id })
  end)

  it("names host:port in a handshake's timeout, and in the closed socket after it", function()
    servers.with_faultpeer("silent", function(peer)
      local r, o = run_one([[
local socket = require "moonwait.socket"
return { async_invoke = function(rec)
  local s = socket.tcp()
  assert(s:connect("127.0.0.1", rec.port))
  s:settimeout(100)
  local ok, err = s:sslhandshake(nil, "localhost", false)  -- the peer never answers
  local _, after = s:send("x")
  return { { err = err, after = after } }
end }
]], { port = peer.port })
      assert.equal(0, r.code, r.err)
      local at = " (127.0.0.1:" .. peer.port .. ")"
      assert.same({ err = "timeout" .. at, after = "closed" .. at }, o)
    end)
  end)

  it("raises on misuse: bad arguments, a socket shared by two coroutines", function()
    local r = run_one([[
local socket = require "moonwait.socket"
return { async_invoke = function(rec) socket.tcp():connect("127.0.0.1", "x"); return {} end }
]], {})
    assert.equal(1, r.code)
    assert.matches("bad argument #2 to 'connect'", r.err, 1, true)
    local d = H.tmpdir()
    H.script(d, [[
local socket = require "moonwait.socket"
local time = require "moonwait.time"
local shared, waiting
return { async_invoke = function(rec, ctx)
  if ctx.seq == 1 then
    shared = socket.tcp()
    assert(shared:connect("127.0.0.1", rec.port))
    waiting = true
    shared:receive()
    return {}
  end
  -- until record 1 waits on the socket (not a fixed time)
  while not waiting do time.sleep(0.005) end
  shared:receive()
  return {}
end,
on_timeout = function() return {} end }
]])
    r = H.run("run --script script.lua --timeout 2000 --mode unordered",
      { dir = d, input = H.jsonl({ { port = redis.port }, { port = redis.port } }) })
    assert.equal(1, r.code)
    assert.matches("socket busy", r.err, 1, true)
  end)

  it("pools connections with setkeepalive and reuses them", function()
    local r = run_one([[
local socket = require "moonwait.socket"
return { async_invoke = function(rec)
  local reused = {}
  for i = 1, 5 do
    local s = socket.tcp()
    assert(s:connect("127.0.0.1", rec.port))
    reused[i] = s:getreusedtimes()
    assert(s:send("PING\r\n"))
    assert(s:receive())
    assert(s:setkeepalive(10000, 4))
  end
  return { { reused = reused, pooled = socket.pool_count("127.0.0.1:" .. rec.port) } }
end }
]], { port = redis.port })
    assert.equal(0, r.code, r.err)
    local o = H.json.decode(r.lines[1])
    assert.same({ 0, 1, 2, 3, 4 }, o.reused)
    assert.equal(1, o.pooled)
    -- redis sees a single client connection for the five round trips
  end)

  it("refuses to pool a connection with unread data", function()
    -- GET's reply "$5\r\nhello\r\n" is one write from redis (one segment on
    -- loopback): reading its first line leaves "hello\r\n" buffered
    redis.cli("SET unread hello")
    local r, o = run_one([[
local socket = require "moonwait.socket"
return { async_invoke = function(rec)
  local s = socket.tcp()
  assert(s:connect("127.0.0.1", rec.port))
  assert(s:send("GET unread\r\n"))
  local hdr = assert(s:receive())
  local ok, err = s:setkeepalive()
  local _, after = s:send("PING\r\n")      -- the refused connection is closed
  return { { hdr = hdr, ok = ok == nil and "nil" or ok, err = err, after = after,
             pooled = socket.pool_count() } }
end }
]], { port = redis.port })
    assert.equal(0, r.code, r.err)
    local at = " (127.0.0.1:" .. redis.port .. ")"
    assert.same({ hdr = "$5", ok = "nil", err = "unread data" .. at, after = "closed" .. at, pooled = 0 }, o)
  end)

  it("does a TLS handshake with and without verification", function()
    local r, o = run_one([[
local socket = require "moonwait.socket"
return { async_invoke = function(rec)
  local s = socket.tcp()
  assert(s:connect("127.0.0.1", rec.port))
  local ok, err = s:sslhandshake(nil, "localhost", true)   -- self-signed: refused
  local s2 = socket.tcp()
  s2:setoption("ca_file", rec.ca)
  assert(s2:connect("127.0.0.1", rec.port))
  assert(s2:sslhandshake(nil, "localhost", true))
  assert(s2:send("GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"))
  local body = s2:receive("*a")
  return { { err = err, tls = body:find('{"tls":true}', 1, true) ~= nil } }
end }
]], { port = nginx.tls_port, ca = nginx.cert })
    assert.equal(0, r.code, r.err)
    assert.matches("^certificate verify failed: .* %(127%.0%.0%.1:" .. nginx.tls_port .. "%)$", o.err)
    assert.is_true(o.tls)
  end)

  it("bounds a wait by the record's remaining budget and cancels it on timeout", function()
    servers.with_faultpeer("silent", function(peer)
      local d = H.tmpdir()
      H.script(d, [[
local socket = require "moonwait.socket"
local mw = require "moonwait"
return {
  async_invoke = function(rec)
    local s = socket.tcp()
    s:settimeout(60000)
    assert(s:connect("127.0.0.1", rec.port))
    assert(s:send("GET / HTTP/1.1\r\n\r\n"))
    s:receive()
    io.stderr:write("resumed\n")
    return {}
  end,
  on_timeout = function() return { { timed_out = true } } end,
  close = function() io.stderr:write("pooled=", mw.runtime_stats().pooled, "\n") end,
}
]])
      local r = H.run("run --script script.lua --timeout 200", { dir = d, input = H.jsonl({ { port = peer.port } }) })
      assert.equal(0, r.code, r.err)
      assert.same({ timed_out = true }, H.json.decode(r.lines[1]))
      assert.is_nil(r.err:find("resumed", 1, true))
      assert.matches("pooled=0", r.err, 1, true)
    end)
  end)

  it("connects over IPv6 loopback and to localhost", function()
    local r, o = run_one([[
local socket = require "moonwait.socket"
return { async_invoke = function(rec)
  local a = socket.tcp()
  assert(a:connect("::1", rec.port))
  local b = socket.tcp()
  assert(b:connect("localhost", rec.port))
  return { { ok = true } }
end }
]], { port = nginx.port })
    assert.equal(0, r.code, r.err)
    assert.same({ ok = true }, o)
  end)

  -- Issue 16: between receives a plaintext connection keeps reading (no
  -- uv_read_stop/start per reply); once its buffer is full it must stop
  -- and wait, not fail, while nobody is receiving.
  it("holds a peer back while the script is not receiving, past max_buffer", function()
    local r, o = run_one([[
local socket = require "moonwait.socket"
local time = require "moonwait.time"
return { async_invoke = function(rec)
  local s = socket.tcp()
  s:setoption("max_buffer", 65536)
  assert(s:connect("127.0.0.1", rec.port))
  assert(s:send("GET /large HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
  local len
  repeat
    local line = assert(s:receive())
    len = len or tonumber(line:match("^[Cc]ontent%-[Ll]ength: (%d+)"))
  until line == ""
  local got, pieces = 0, 0
  while got < len do
    time.sleep(0.002)                      -- the 1.5 MiB arrive meanwhile
    local piece, err = s:receive(math.min(32768, len - got))
    if not piece then return { { err = err, got = got } } end
    got, pieces = got + #piece, pieces + 1
  end
  s:close()
  return { { got = got, len = len, pieces = pieces } }
end }
]], { port = nginx.port })
    assert.equal(0, r.code, r.err)
    assert.is_nil(o.err)
    assert.equal(o.len, o.got)
    assert.is_true(o.pieces >= 40)
  end)

  -- Issue 16: the pool's idle timer is no longer stopped while a
  -- connection is lent out; pooled again with a shorter idle time, it must
  -- still close at the shorter one.
  it("closes a pooled connection at its latest, shorter idle time", function()
    local r, o = run_one([[
local socket = require "moonwait.socket"
local time = require "moonwait.time"
return { async_invoke = function(rec)
  local key = "127.0.0.1:" .. rec.port
  local s = socket.tcp()
  assert(s:connect("127.0.0.1", rec.port))
  assert(s:setkeepalive(60000))
  s = socket.tcp()
  assert(s:connect("127.0.0.1", rec.port))
  local reused = s:getreusedtimes()
  assert(s:setkeepalive(50))
  local before = socket.pool_count(key)
  time.sleep(0.4)
  return { { reused = reused, before = before, after = socket.pool_count(key) } }
end }
]], { port = redis.port })
    assert.equal(0, r.code, r.err)
    assert.same({ reused = 1, before = 1, after = 0 }, o)
  end)
end)
