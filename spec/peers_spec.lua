-- Hostile and broken peers (issue 10, items 12-14): responses and replies
-- without end, malformed RESP, and NUL bytes in what C reads as C strings.
-- The fault peer (spec/c/faultpeer.c, modes once/stream) plays the server
-- for what nginx and redis-server never send; all traffic is on 127.0.0.1.
local H = require("helpers")
local servers = require("support.servers")

-- Run body over records; returns the run and its decoded output lines.
local function run(body, recs, args)
  local d = H.tmpdir()
  H.script(d, body)
  local r = H.run("run --script script.lua " .. (args or ""), { dir = d, input = H.jsonl(recs) })
  return r, H.decode_lines(r.out)
end

-- One http.get per record ({ url =, opts = }); reports err or the status
-- and header count, and the process's RSS growth in kB around the call.
local GET = [[
local http = require "moonwait.http"
local function rss_kb()
  return tonumber(io.open("/proc/self/statm"):read("*l"):match("^%d+ (%d+)")) * 4
end
return { async_invoke = function(r)
  local before = rss_kb()
  local res, err = http.get(r.url, r.opts)
  local grew = rss_kb() - before
  if not res then return { { err = err, grew_kb = grew } } end
  local n = 0
  for _ in pairs(res.headers) do n = n + 1 end
  return { { status = res.status, headers = n, body = res.body, grew_kb = grew } }
end }
]]

local function get_from(peer, opts, path)
  local url = "http://127.0.0.1:" .. peer.port .. (path or "/x")
  local r, out = run(GET, { { url = url, opts = opts or { timeout_ms = 10000 } } })
  assert.equal(0, r.code, r.err)
  return out[1], url
end

local function escape_pattern(s) return (s:gsub("%p", "%%%0")) end

describe("hostile peers", function()
  after_each(function() H.cleanup() end)

  describe("http: a response head without end", function()
    local function refused(o, url)
      assert.equal("bad response: headers too large (GET " .. url .. ")", o.err)
      -- bounded: nowhere near the 64 MiB the peer sends (valgrind has its own RSS)
      if H.wrapper == "" then assert.is_true(o.grew_kb < 16 * 1024, "rss grew by " .. o.grew_kb .. " kB") end
    end

    it("endless headers are 'headers too large', not 1.7 GB of RSS", function()
      servers.with_faultpeer("stream", "HTTP/1.1 200 OK\\r\\n", "X-Junk: 0123456789abcdef\\r\\n", function(peer)
        refused(get_from(peer))
      end)
    end)

    it("a status line that never ends is 'headers too large'", function()
      servers.with_faultpeer("stream", "HTTP/1.1 200 ", "x", function(peer)
        refused(get_from(peer))
      end)
    end)

    it("a header line that never ends is 'headers too large'", function()
      servers.with_faultpeer("stream", "HTTP/1.1 200 OK\\r\\nX-Long: ", "a", function(peer)
        refused(get_from(peer))
      end)
    end)

    it("endless trailers after a chunked body are 'headers too large'", function()
      servers.with_faultpeer("stream",
        "HTTP/1.1 200 OK\\r\\nTransfer-Encoding: chunked\\r\\n\\r\\n2\\r\\nok\\r\\n0\\r\\n",
        "X-Trailer: 0123456789abcdef\\r\\n", function(peer)
        refused(get_from(peer))
      end)
    end)

    it("more than max_headers (default 100) or max_header_bytes is refused; opts raise the caps", function()
      local hs = {}
      for i = 1, 150 do hs[i] = "X-H" .. i .. ": v\\r\\n" end
      local resp = "HTTP/1.1 200 OK\\r\\n" .. table.concat(hs) .. "Content-Length: 2\\r\\n\\r\\nok"
      servers.with_faultpeer("once", resp, function(peer)
        local o, url = get_from(peer)
        assert.equal("bad response: headers too large (GET " .. url .. ")", o.err)
        o = get_from(peer, { max_headers = 151 })
        assert.same({ status = 200, headers = 151, body = "ok" }, { status = o.status, headers = o.headers, body = o.body })
        o = get_from(peer, { max_headers = 151, max_header_bytes = 1000 })
        assert.equal("bad response: headers too large (GET " .. url .. ")", o.err)
        -- the head is 150 * ~10 + 40 bytes: 4 KiB is plenty
        o = get_from(peer, { max_headers = 1000, max_header_bytes = 4096 })
        assert.equal(200, o.status, o.err)
      end)
    end)

    it("regression: an interim 1xx response (100 Continue, 103 Early Hints) is skipped, not taken as the answer", function()
      local resp = "HTTP/1.1 100 Continue\\r\\n\\r\\nHTTP/1.1 103 Early Hints\\r\\nLink: </a.css>\\r\\n\\r\\n" ..
        "HTTP/1.1 200 OK\\r\\nX-Final: yes\\r\\nContent-Length: 2\\r\\n\\r\\nok"
      servers.with_faultpeer("once", resp, function(peer)
        local o = get_from(peer)
        assert.same({ status = 200, headers = 2, body = "ok" }, { status = o.status, headers = o.headers, body = o.body })
        -- the interim heads count against max_header_bytes
        local url
        o, url = get_from(peer, { max_header_bytes = 90 })
        assert.equal("bad response: headers too large (GET " .. url .. ")", o.err)
      end)
    end)

    it("raises on a bad max_headers or max_header_bytes", function()
      local r = run([[
local http = require "moonwait.http"
return { async_invoke = function(r)
  local ok1, e1 = pcall(http.get, "http://127.0.0.1:1/", { max_headers = 0 })
  local ok2, e2 = pcall(http.get, "http://127.0.0.1:1/", { max_header_bytes = "big" })
  return { { e1 = not ok1 and e1 or "no error", e2 = not ok2 and e2 or "no error" } }
end }
]], { {} })
      assert.equal(0, r.code, r.err)
      local o = H.json.decode(r.lines[1])
      assert.matches("option 'max_headers' must be >= 1", o.e1, 1, true)
      assert.matches("option 'max_header_bytes' must be a number", o.e2, 1, true)
    end)
  end)

  describe("NUL bytes where C reads a C string", function()
    local nginx
    setup(function() nginx = servers.nginx() end)
    teardown(function() nginx.stop() end)

    it("a NUL in an http URL path is 'bad url', not a silently truncated path", function()
      local r, out = run([[
local http = require "moonwait.http"
return { async_invoke = function(r)
  local res, err = http.get(r.url .. "\0/../admin")
  return { { err = err, status = res and res.status } }
end }
]], { { url = nginx.url("/user/1") } })
      assert.equal(0, r.code, r.err)
      assert.same({ err = "bad url (GET " .. nginx.url("/user/1") .. "%00/../admin)" }, out[1])
    end)

    it("a NUL in an http header name, value or method raises, like CR/LF", function()
      local r, out = run([[
local http = require "moonwait.http"
return { async_invoke = function(r)
  local out = {}
  for i, opts in ipairs({
    { headers = { ["X-A"] = "a\0b" } },
    { headers = { ["X-A\0B"] = "v" } },
    { method = "GET\0X" },
    { ca_file = "/etc/ssl\0/evil.pem" },
  }) do
    local ok, err = pcall(http.request, r.url, opts)
    out[i] = ok and "no error" or err
  end
  return { out }
end }
]], { { url = nginx.url("/user/1") } })
      assert.equal(0, r.code, r.err)
      local o = out[1]
      assert.matches("header 'X-A' contains a line break, a NUL byte", o[1], 1, true)
      assert.matches("header 'X-A' contains a line break, a NUL byte", o[2], 1, true)
      assert.matches("method must be an upper-case token", o[3], 1, true)
      assert.matches("option 'ca_file' contains a NUL byte", o[4], 1, true)
    end)

    it("a NUL in a socket host, pool name, server name or ca_file raises instead of being cut", function()
      local r, out = run([[
local socket = require "moonwait.socket"
return { async_invoke = function(r)
  local out = {}
  local function try(f) local ok, err = pcall(f); out[#out + 1] = ok and "no error" or err end
  try(function() return socket.tcp():connect("127.0.0.1\0.evil.example", r.port) end)
  try(function() return socket.tcp():connect("127.0.0.1", r.port, { pool = "a\0b" }) end)
  try(function() return socket.tcp():setoption("ca_file", "/etc/ssl\0/x.pem") end)
  try(function() return socket.tcp():setoption("max_buffer\0junk", 100) end)
  try(function() return socket.pool_count("a\0b") end)
  local s = socket.tcp()
  assert(s:connect("127.0.0.1", r.tls_port))
  try(function() return s:sslhandshake(nil, "localhost\0.evil.example", true) end)
  try(function() return s:receive("*l\0") end)
  s:close()
  return { out }
end }
]], { { port = nginx.port, tls_port = nginx.tls_port } })
      assert.equal(0, r.code, r.err)
      local o = out[1]
      assert.matches("the host contains a NUL byte", o[1], 1, true)
      assert.matches("the pool name contains a NUL byte", o[2], 1, true)
      assert.matches("the ca_file path contains a NUL byte", o[3], 1, true)
      assert.matches("unknown option", o[4], 1, true)
      assert.matches("the pool name contains a NUL byte", o[5], 1, true)
      assert.matches("the server name contains a NUL byte", o[6], 1, true)
      assert.matches("pattern must be", o[7], 1, true)
    end)
  end)

  describe("redis: malformed and oversized replies", function()
    -- Each case: the peer's answer to the first command; the reply must be
    -- nil, "bad reply: ..." with the connection closed afterwards.
    local cases = {
      { "an array of 999999999 elements with endless elements",
        { "stream", "*999999999\\r\\n", "$1\\r\\nx\\r\\n" },
        "bad reply: an array of 999999999 elements: more than max_elements (1048576) in one reply" },
      { "endless bulks inside an array past max_reply_bytes",
        { "stream", "*1000000\\r\\n", "$1000\\r\\n" .. string.rep("x", 1000) .. "\\r\\n" },
        "bad reply: a bulk of 1000 bytes: more than max_reply_bytes (1048576) in one reply",
        { max_reply_bytes = 1048576 } },
      { "a bulk of 999999999999 bytes",
        { "once", "$999999999999\\r\\n" }, "bad reply: a bulk of 999999999999 bytes (the most is 512 MiB)" },
      { "a bulk over max_reply_bytes",
        { "once", "$2000\\r\\n" }, "bad reply: a bulk of 2000 bytes: more than max_reply_bytes (1000) in one reply",
        { max_reply_bytes = 1000 } },
      { "a bulk length of 1.5", { "once", "$1.5\\r\\n" }, "bad reply: not a bulk length: '$1.5'" },
      { "a bulk length of -2", { "once", "$-2\\r\\n" }, "bad reply: not a bulk length: '$-2'" },
      { "a bulk not followed by CRLF", { "once", "$5\\r\\nhelloXY" }, "bad reply: a bulk of 5 bytes not followed by CRLF" },
      { "an integer reply ':abc'", { "once", ":abc\\r\\n" }, "bad reply: not an integer: ':abc'" },
      { "an integer reply in hex", { "once", ":0x10\\r\\n" }, "bad reply: not an integer: ':0x10'" },
      { "an integer reply beyond 64 bits", { "once", ":9223372036854775808\\r\\n" },
        "bad reply: not an integer: ':9223372036854775808'" },
      { "an array length of 2x", { "once", "*2x\\r\\n" }, "bad reply: not an array length: '*2x'" },
      { "endless nesting of *1", { "stream", "", "*1\\r\\n" }, "bad reply: arrays nested deeper than max_depth (64)" },
      { "an unknown type byte", { "once", "%1\\r\\n\\x01\\r\\n" }, "bad reply: unknown type: '%1'" },
      { "an empty line", { "once", "\\r\\n" }, "bad reply: an empty line" },
      { "a status line longer than max_reply_bytes", { "stream", "+", "OK" },
        "bad reply: a line longer than max_reply_bytes", { max_reply_bytes = 100000 } },
    }
    for _, case in ipairs(cases) do
      it(case[1] .. " is nil, 'bad reply: ...' and closes the connection", function()
        local peer = servers.faultpeer(unpack(case[2]))
        local ok, err = pcall(function()
          local r, out = run([[
local redis = require "moonwait.redis"
local function rss_kb()
  return tonumber(io.open("/proc/self/statm"):read("*l"):match("^%d+ (%d+)")) * 4
end
return { async_invoke = function(rec)
  local before = rss_kb()
  local c = assert(redis.connect("127.0.0.1", rec.port, rec.opts))
  local v, err = c:get("k")
  local grew = rss_kb() - before
  local v2, err2 = c:get("k")
  local ka, kaerr = c:set_keepalive()
  return { { v = v == nil and "nil" or tostring(v), err = err, after = err2, keepalive = kaerr, grew_kb = grew } }
end }
]], { { port = peer.port, opts = case[4] } })
          assert.equal(0, r.code, r.err)
          local o = out[1]
          assert.equal("nil", o.v)
          -- what redis.lua finds names the command; the closed socket, host:port
          assert.equal(case[3] .. " (redis 127.0.0.1:" .. peer.port .. " GET)", o.err)
          assert.equal("closed (127.0.0.1:" .. peer.port .. ")", o.after)
          assert.equal("closed (127.0.0.1:" .. peer.port .. ")", o.keepalive)
          if H.wrapper == "" then assert.is_true(o.grew_kb < 96 * 1024, "rss grew by " .. o.grew_kb .. " kB") end
        end)
        peer.stop()
        if not ok then error(err, 0) end
      end)
    end

    it("raises on a bad limit option", function()
      local r = run([[
local redis = require "moonwait.redis"
return { async_invoke = function(rec)
  local ok, err = pcall(redis.connect, "127.0.0.1", 1, { max_depth = 0 })
  local ok2, err2 = pcall(redis.connect, "127.0.0.1", 1, { max_reply_bytes = 2^40 })
  return { { e1 = err, e2 = err2 } }
end }
]], { {} })
      assert.equal(0, r.code, r.err)
      local o = H.json.decode(r.lines[1])
      assert.matches("max_depth must be an integer from 1 to 1000", o.e1, 1, true)
      assert.matches("max_reply_bytes must be an integer from 1 to", o.e2, 1, true)
    end)
  end)

  describe("redis: the pool key", function()
    local rs
    setup(function()
      rs = servers.redis()
      rs.cli("ACL SETUSER alice on '>alicepw' '~*' '+@all'")
      rs.cli("CONFIG SET requirepass secret")
    end)
    teardown(function()
      -- the server now wants a password (its pid file went with after_each's cleanup)
      rs.cli("-a secret --no-auth-warning shutdown nosave")
    end)

    it("a connection pooled after AUTH never serves a connect with another password, user or db", function()
      local r, out = run([[
local redis = require "moonwait.redis"
local steps = {
  -- 1: authenticated as default, put back
  function(p)
    local c = assert(redis.connect("127.0.0.1", p, { password = "secret" }))
    assert(c:set("k", "v0"))
    assert(c:set_keepalive())
    return { step = 1 }
  end,
  -- 2: a wrong password must not get the authenticated connection
  function(p)
    local c, err = redis.connect("127.0.0.1", p, { password = "wrong" })
    return { step = 2, ok = c ~= nil, err = err }
  end,
  -- 3: no password at all: a fresh, unauthenticated connection
  function(p)
    local c, err = redis.connect("127.0.0.1", p)
    local v, e = c:get("k")
    local reused = c:get_reused_times()
    c:close()
    return { step = 3, v = v, e = e, reused = reused }
  end,
  -- 4: another user
  function(p)
    local c = assert(redis.connect("127.0.0.1", p, { user = "alice", password = "alicepw" }))
    local who = c:acl("whoami")
    local reused = c:get_reused_times()
    assert(c:set_keepalive())
    return { step = 4, who = who, reused = reused }
  end,
  -- 5: the same password, db 1: not the db-0 connection
  function(p)
    local c = assert(redis.connect("127.0.0.1", p, { password = "secret", db = 1 }))
    local v = c:get("k")
    local reused = c:get_reused_times()
    assert(c:set_keepalive())
    return { step = 5, null = v == redis.null, reused = reused }
  end,
  -- 6: the same as 1: reuses it; a script's own SELECT keeps it from the pool
  function(p)
    local c = assert(redis.connect("127.0.0.1", p, { password = "secret" }))
    local reused = c:get_reused_times()
    assert(c:select(2))
    assert(c:set_keepalive())
    local c2 = assert(redis.connect("127.0.0.1", p, { password = "secret" }))
    local v = c2:get("k")
    local reused2 = c2:get_reused_times()
    c2:close()
    return { step = 6, reused = reused, reused_after_select = reused2, v = v }
  end,
}
return { async_invoke = function(rec) return { steps[rec.step](rec.port) } end }
]], { { step = 1, port = rs.port }, { step = 2, port = rs.port }, { step = 3, port = rs.port },
      { step = 4, port = rs.port }, { step = 5, port = rs.port }, { step = 6, port = rs.port } },
        "--capacity 1")
      assert.equal(0, r.code, r.err)
      assert.equal(6, #out)
      assert.is_false(out[2].ok)
      assert.equal("auth failed: WRONGPASS invalid username-password pair or user is disabled. (redis 127.0.0.1:"
        .. rs.port .. " AUTH)", out[2].err)
      assert.equal(false, out[3].v)
      assert.equal("NOAUTH Authentication required. (redis 127.0.0.1:" .. rs.port .. " GET)", out[3].e)
      assert.equal(0, out[3].reused)
      assert.same({ step = 4, who = "alice", reused = 0 }, out[4])
      assert.same({ step = 5, null = true, reused = 0 }, out[5])
      assert.same({ step = 6, reused = 1, reused_after_select = 0, v = "v0" }, out[6])
    end)
  end)
end)
