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
      assert.equal("bad response: headers too large (" .. url .. ")", o.err)
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
        assert.equal("bad response: headers too large (" .. url .. ")", o.err)
        o = get_from(peer, { max_headers = 151 })
        assert.same({ status = 200, headers = 151, body = "ok" }, { status = o.status, headers = o.headers, body = o.body })
        o = get_from(peer, { max_headers = 151, max_header_bytes = 1000 })
        assert.equal("bad response: headers too large (" .. url .. ")", o.err)
        -- the head is 150 * ~10 + 40 bytes: 4 KiB is plenty
        o = get_from(peer, { max_headers = 1000, max_header_bytes = 4096 })
        assert.equal(200, o.status, o.err)
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
      assert.same({ err = "bad url: " .. nginx.url("/user/1") .. "%00/../admin" }, out[1])
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
end)
