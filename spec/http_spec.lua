-- moonwait.http against a real nginx (and a fault peer for what nginx
-- will not do). Every request goes to 127.0.0.1 or ::1.
local H = require("helpers")
local servers = require("support.servers")

local nginx

local function escape_pattern(s) return (s:gsub("%p", "%%%0")) end

-- Run a script whose async_invoke gets {url=...} records; returns the run.
local function run_urls(body, urls, args)
  local d = H.tmpdir()
  H.script(d, body)
  local recs = {}
  for i, u in ipairs(urls) do recs[i] = { url = u } end
  return H.run("run --script script.lua " .. (args or ""), { dir = d, input = H.jsonl(recs) })
end

local GET = [[
local http = require "moonwait.http"
return { async_invoke = function(r, ctx)
  local res, err = http.get(r.url, r.opts)
  if not res then return { { err = err } } end
  return { { status = res.status, body = res.body, ct = res.headers["Content-Type"],
             ct_lower = res.headers["content-type"], len = #res.body,
             multi = res.headers["x-multi"], custom = res.headers["X-CUSTOM-CASE"] } }
end }
]]

describe("moonwait.http", function()
  setup(function() nginx = servers.nginx() end)
  teardown(function() if nginx then nginx.stop() end H.cleanup() end)

  it("gets JSON by id, with status, headers (any case) and body", function()
    local r = run_urls(GET, { nginx.url("/user/42") })
    assert.equal(0, r.code, r.err)
    local o = H.json.decode(r.lines[1])
    assert.equal(200, o.status)
    assert.same({ id = 42, name = "user-42" }, H.json.decode(o.body))
    assert.equal("application/json", o.ct)
    assert.equal("application/json", o.ct_lower)
  end)

  it("returns non-2xx statuses as responses", function()
    local r = run_urls(GET, { nginx.url("/status/503"), nginx.url("/status/404") })
    assert.equal(0, r.code, r.err)
    local out = H.decode_lines(r.out)
    assert.equal(503, out[1].status)
    assert.equal(404, out[2].status)
  end)

  it("reads Content-Length, chunked and large bodies", function()
    local r = run_urls(GET, { nginx.url("/chunked"), nginx.url("/large") })
    assert.equal(0, r.code, r.err)
    local out = H.decode_lines(r.out)
    assert.equal("part1,part2", out[1].body)
    assert.equal(2097152, out[2].len)
  end)

  it("joins repeated headers and sends Host and User-Agent", function()
    local r = run_urls(GET, { nginx.url("/headers") })
    assert.equal(0, r.code, r.err)
    local o = H.json.decode(r.lines[1])
    assert.equal("a, b", o.multi)
    assert.equal("Yes", o.custom)
    assert.matches("host=127.0.0.1:" .. nginx.port .. " ua=moonwait/", o.body, 1, true)
  end)

  it("posts a body and sends methods and custom headers", function()
    local r = run_urls([[
local http = require "moonwait.http"
return { async_invoke = function(r, ctx)
  local a = assert(http.post(r.url .. "/echo", "hello body", { headers = { ["Content-Type"] = "text/plain" } }))
  local b = assert(http.request(r.url .. "/method", { method = "PUT", body = "x" }))
  local c = assert(http.request(r.url .. "/method", { method = "DELETE" }))
  local h = assert(http.request(r.url .. "/user/1", { method = "HEAD" }))
  return { { echo = a.body, put = b.body, del = c.body, head_status = h.status, head_body = h.body } }
end }
]], { "http://127.0.0.1:" .. nginx.port })
    assert.equal(0, r.code, r.err)
    assert.same({ echo = "hello body", put = "PUT", del = "DELETE", head_status = 200, head_body = "" },
      H.json.decode(r.lines[1]))
  end)

  it("reuses one keep-alive connection for many requests", function()
    local before = #H.lines(nginx.access_log())
    local urls = {}
    for i = 1, 50 do urls[i] = nginx.url("/user/" .. i) end
    local r = run_urls(GET, urls, "--capacity 1")
    assert.equal(0, r.code, r.err)
    local conns = {}
    local lines = H.lines(nginx.access_log())
    for i = before + 1, #lines do conns[lines[i]:match("^(%d+)")] = true end
    local n = 0
    for _ in pairs(conns) do n = n + 1 end
    assert.equal(50, #lines - before)
    assert.equal(1, n)
  end)

  it("does not pool a connection when keepalive = false or the server closes", function()
    local r = run_urls([[
local http = require "moonwait.http"
local mw = require "moonwait"
return { async_invoke = function(r, ctx)
  local before = mw.runtime_stats().pooled
  local a = assert(http.get(r.url .. "/user/1", { keepalive = false }))
  local mid = mw.runtime_stats().pooled
  local b = assert(http.get(r.url .. "/close"))
  local after = mw.runtime_stats().pooled
  local c = assert(http.get(r.url .. "/user/2"))
  return { { before = before, mid = mid, after = after, last = mw.runtime_stats().pooled, s = a.status + b.status + c.status } }
end }
]], { "http://127.0.0.1:" .. nginx.port })
    assert.equal(0, r.code, r.err)
    assert.same({ before = 0, mid = 0, after = 0, last = 1, s = 600 }, H.json.decode(r.lines[1]))
  end)

  it("times out a slow response with the request's timeout_ms", function()
    local r = run_urls([[
local http = require "moonwait.http"
local time = require "moonwait.time"
return { async_invoke = function(r, ctx)
  local t0 = time.now()
  local res, err = http.get(r.url, { timeout_ms = 200 })
  return { { err = err, fast = time.now() - t0 < 1.5 } }
end }
]], { nginx.url("/slow") })
    assert.equal(0, r.code, r.err)
    assert.same({ err = "timeout (GET " .. nginx.url("/slow") .. ")", fast = true }, H.json.decode(r.lines[1]))
  end)

  it("bounds a request by the record's remaining budget", function()
    local r = run_urls([[
local http = require "moonwait.http"
return {
  async_invoke = function(r, ctx)
    local res, err = http.get(r.url, { timeout_ms = 60000 })
    return { { err = err } }
  end,
  on_timeout = function(r, ctx) return { { timed_out = true } } end,
}
]], { nginx.url("/slow") }, "--timeout 300")
    assert.equal(0, r.code, r.err)
    -- the record's own timeout fires first (on_timeout), not the request's
    assert.same({ timed_out = true }, H.json.decode(r.lines[1]))
  end)

  it("takes timeout_ms = ctx.remaining_ms() under --timeout 0 (math.huge: no limit of its own), and so does a socket", function()
    -- regression: "http: option 'timeout_ms' must be >= 0" for the README's own idiom
    local r = run_urls([[
local http = require "moonwait.http"
local socket = require "moonwait.socket"
return { async_invoke = function(r, ctx)
  local res, err = http.get(r.url, { timeout_ms = ctx.remaining_ms() })
  if not res then return nil, err end
  local s = socket.tcp()
  s:settimeout(ctx.remaining_ms())
  s:settimeouts(0, math.huge, 1e300)
  local host, port = r.url:match("^http://([^:/]+):(%d+)")
  assert(s:connect(host, tonumber(port)))
  assert(s:send("GET /sleep50 HTTP/1.0\r\nHost: x\r\n\r\n"))
  local line = assert(s:receive("*l"))
  s:close()
  return { { status = res.status, line = line, huge = ctx.remaining_ms() == math.huge } }
end }
]], { nginx.url("/sleep50") }, "--timeout 0")   -- (50 ms: a wrong bound of a few ms would show)
    assert.equal(0, r.code, r.err)
    local out = H.json.decode(r.lines[1])
    assert.same({ status = 200, huge = true }, { status = out.status, huge = out.huge })
    assert.matches("^HTTP/1%.1 200", out.line)
    -- what is not a timeout still raises
    r = run_urls([[
local http = require "moonwait.http"
return { async_invoke = function(r) http.get(r.url, { timeout_ms = -1 }); return {} end }
]], { nginx.url("/user/1") })
    assert.equal(1, r.code)
    assert.matches("http: option 'timeout_ms' must be >= 0", r.err, 1, true)
    r = run_urls([[
local socket = require "moonwait.socket"
return { async_invoke = function(r) socket.tcp():settimeout(0 / 0); return {} end }
]], { nginx.url("/user/1") })
    assert.equal(1, r.code)
    assert.matches("timeout must be >= 0 ms", r.err, 1, true)
  end)

  it("reports connection refused, a bad url and an unknown host", function()
    local r = run_urls(GET, { "http://127.0.0.1:1/x", "ftp://127.0.0.1/x", "http://no-such-host.invalid/x" })
    assert.equal(0, r.code, r.err)
    local out = H.decode_lines(r.out)
    assert.equal("connection refused (GET http://127.0.0.1:1/x)", out[1].err)
    assert.equal("bad url (GET ftp://127.0.0.1/x)", out[2].err)
    assert.is_truthy(out[3].err == "host not found (GET http://no-such-host.invalid/x)"
      or out[3].err == "no resolver (GET http://no-such-host.invalid/x)", out[3].err)
  end)

  -- issue 13: errors carry where, so a record with several lookups tells
  -- which one failed, and its dead letter keeps that text.
  it("names the failing request (method and URL) in the dead letter of a record with two lookups", function()
    local free = servers.free_port()
    local d = H.tmpdir()
    H.script(d, [[
local http = require "moonwait.http"
return { async_invoke = function(r)
  local user, err = http.get(r.users .. "/user/" .. r.id)
  if not user then return nil, err end
  local price, perr = http.post(r.prices .. "/price/" .. r.id, "{}")
  if not price then return nil, perr end
  return { r }
end }
]])
    local up, down = "http://127.0.0.1:" .. nginx.port, "http://127.0.0.1:" .. free
    local r = H.run("run --script script.lua --on-error dead-letter --dead-letter dl", { dir = d,
      input = H.jsonl({ { id = 7, users = up, prices = down }, { id = 8, users = down, prices = up } }) })
    assert.equal(0, r.code, r.err)
    assert.equal("", r.out)
    local dl = H.decode_lines(H.read(d .. "/dl"))
    assert.equal(2, #dl)
    -- record 7: the user lookup answered, the price lookup was refused
    assert.equal("connection refused (POST " .. down .. "/price/7)", dl[1].error)
    -- record 8: the user lookup was refused (the price lookup never ran)
    assert.equal("connection refused (GET " .. down .. "/user/8)", dl[2].error)
  end)

  it("shows a URL's password as *** in its error, never the password", function()
    local url = "http://ada:s3cret-pw@127.0.0.1:" .. nginx.port .. "/user/1?q=2"
    local r = run_urls(GET, { url })
    assert.equal(0, r.code, r.err)
    -- (userinfo with a password is not supported: a bad url, named)
    local err = H.json.decode(r.lines[1]).err
    assert.equal("bad url (GET http://ada:***@127.0.0.1:" .. nginx.port .. "/user/1?q=2)", err)
    assert.is_nil(err:find("s3cret", 1, true))
    -- a password not percent-encoded, whose '/' (base64) or '?' ended the
    -- authority early, is hidden too (it was shown whole)
    r = run_urls(GET, { "http://ada:Zm9v/YmFy+@127.0.0.1:" .. nginx.port .. "/user/1",
                        "http://ada:s3c?ret@127.0.0.1:" .. nginx.port .. "/user/1" })
    assert.equal(0, r.code, r.err)
    local out = H.decode_lines(r.out)
    assert.equal("bad url (GET http://ada:***@127.0.0.1:" .. nginx.port .. "/user/1)", out[1].err)
    assert.equal("bad url (GET http://ada:***@127.0.0.1:" .. nginx.port .. "/user/1)", out[2].err)
  end)

  it("caps the URL in an error at 256 bytes: a 1 MiB URL makes a short message", function()
    local free = servers.free_port()
    local refused, bad = "http://127.0.0.1:" .. free .. "/", "ftp://127.0.0.1/"
    local r = run_urls([[
local http = require "moonwait.http"
return { async_invoke = function(r)
  local res, err = http.get(r.url .. string.rep("a", 1024 * 1024))
  return { { err = err } }
end }
]], { refused, bad })
    assert.equal(0, r.code, r.err)
    local out = H.decode_lines(r.out)
    assert.equal("connection refused (GET " .. refused .. string.rep("a", 256 - #refused) .. "...)", out[1].err)
    assert.equal("bad url (GET " .. bad .. string.rep("a", 256 - #bad) .. "...)", out[2].err)
  end)

  it("fails on a body over max_body", function()
    local r = run_urls([[
local http = require "moonwait.http"
return { async_invoke = function(r) local res, err = http.get(r.url, { max_body = 1000 }); return { { err = err } } end }
]], { nginx.url("/large") })
    assert.equal(0, r.code, r.err)
    assert.equal("body too large (GET " .. nginx.url("/large") .. ")", H.json.decode(r.lines[1]).err)
  end)

  it("raises on misuse", function()
    local r = run_urls([[
local http = require "moonwait.http"
return { async_invoke = function(r)
  http.get(r.url, { headers = { ["X-Bad"] = "a\r\nInjected: yes" } })
  return {}
end }
]], { nginx.url("/user/1") })
    assert.equal(1, r.code)
    assert.matches("header 'X-Bad' contains a line break", r.err, 1, true)
  end)

  it("speaks HTTPS with verification on by default, and a CA file", function()
    -- the record carries the URL and the CA file
    local d = H.tmpdir()
    H.script(d, [[
local http = require "moonwait.http"
return { async_invoke = function(r)
  local _, err1 = http.get(r.url)
  local ok, e2 = http.get(r.url, { ca_file = r.ca })
  local noverify = http.get(r.url, { ssl_verify = false })
  local byname = http.get((r.url:gsub("127.0.0.1", "localhost")), { ca_file = r.ca })
  return { { err1 = err1, body = ok and ok.body or e2, nv = noverify and noverify.status, byname = byname and byname.status } }
end }
]])
    local url = "https://127.0.0.1:" .. nginx.tls_port .. "/"
    local r = H.run("run --script script.lua", { dir = d, input = H.jsonl({ { url = url, ca = nginx.cert } }) })
    assert.equal(0, r.code, r.err)
    local o = H.json.decode(r.lines[1])
    assert.matches("^certificate verify failed: self%-signed certificate.* %(GET " .. escape_pattern(url) .. "%)$", o.err1)
    assert.equal('{"tls":true}', o.body)
    assert.equal(200, o.nv)
    assert.equal(200, o.byname)
  end)

  it("reaches nginx over IPv6 loopback and through localhost", function()
    local r = run_urls(GET, { "http://[::1]:" .. nginx.port .. "/user/6", "http://localhost:" .. nginx.port .. "/user/7" })
    assert.equal(0, r.code, r.err)
    local out = H.decode_lines(r.out)
    assert.equal(200, out[1].status)
    assert.equal(200, out[2].status)
  end)

  it("keeps 1,000 requests in flight at once", function()
    local urls = {}
    for i = 1, 1000 do urls[i] = nginx.url("/user/" .. i) end
    local r = run_urls(GET, urls, "--capacity 1000 --mode unordered")
    assert.equal(0, r.code, r.err)
    local n = 0
    for _, o in ipairs(H.decode_lines(r.out)) do if o.status == 200 then n = n + 1 end end
    assert.equal(1000, n)
    -- in flight together: the gather peer holds every request until 1,000
    -- are held at once, so any answer at all proves the concurrency (a run
    -- that keeps fewer in flight never gets one: each request gives up
    -- after 60 s, a bound that only matters when this is broken)
    servers.with_faultpeer("gather", "1000", function(peer)
      local gurls = {}
      for i = 1, 1000 do gurls[i] = "http://127.0.0.1:" .. peer.port .. "/g/" .. i end
      local g = run_urls([[
local http = require "moonwait.http"
return { async_invoke = function(r, ctx)
  local res, err = http.get(r.url, { timeout_ms = 60000 })
  if not res then return { { err = err } } end
  return { { status = res.status, body = res.body } }
end }
]], gurls, "--capacity 1000 --mode unordered --timeout 0")
      assert.equal(0, g.code, g.err)
      local out = H.decode_lines(g.out)
      assert.equal(1000, #out)
      for _, o in ipairs(out) do
        assert.equal(200, o.status, o.err)
        local b = H.json.decode(o.body)
        assert.equal(1000, b.held)     -- 1,000 requests held at the same moment
        assert.is_true(b.open >= 1000, "open connections " .. b.open)
      end
    end)
  end)

  describe("against a faulty peer", function()
    -- (WHERE: "(GET URL)", the request that failed)
    for _, case in ipairs({
      { "garbage", "^bad response: .* WHERE$" },
      -- data and RST may reach the socket as data then EOF
      { "reset-mid-body", "^connection reset WHERE$",
        "^bad response: the connection closed before the response was complete WHERE$" },
      { "close-after-headers", "^bad response: the connection closed before the response was complete WHERE$" },
      { "silent", "^timeout WHERE$" },
      -- the kernel reports a close with our request unread as a reset
      { "close-at-once", "^closed WHERE$", "^connection reset WHERE$" },
    }) do
      it("reports " .. case[1], function()
        servers.with_faultpeer(case[1], function(peer)
          local r = run_urls([[
local http = require "moonwait.http"
return { async_invoke = function(r) local res, err = http.get(r.url, { timeout_ms = 300 }); return { { err = err } } end }
]], { "http://127.0.0.1:" .. peer.port .. "/x" })
          assert.equal(0, r.code, r.err)
          local got = H.json.decode(r.lines[1]).err
          local where = escape_pattern("(GET http://127.0.0.1:" .. peer.port .. "/x)")
          local function at(p) return p and (p:gsub("WHERE", function() return where end)) end
          local p2, p3 = at(case[2]), at(case[3])
          assert.is_truthy(got:match(p2) or (p3 and got:match(p3)), got)
        end)
      end)
    end
  end)

  -- issue 10 (found by fuzz_http): llhttp_finish returns the HPE_PAUSED of
  -- on_message_complete, and every close-delimited body was refused.
  it("reads a body delimited by the connection's close", function()
    servers.with_faultpeer("close-delimited", function(peer)
      local r = run_urls([[
local http = require "moonwait.http"
return { async_invoke = function(r)
  local res, err = http.get(r.url, { timeout_ms = 2000 })
  if not res then return { { err = err } } end
  return { { status = res.status, body = res.body } }
end }
]], { "http://127.0.0.1:" .. peer.port .. "/x" })
      assert.equal(0, r.code, r.err)
      assert.same({ status = 200, body = "hello until close" }, H.json.decode(r.lines[1]))
    end)
  end)

  it("cancels requests of timed-out records and leaks nothing", function()
    -- 3,000 records time out mid-request (nginx's /slow answers after 3 s);
    -- fds, live handles and fibers come back to where they began.
    local d = H.tmpdir()
    H.probe(d)
    H.script(d, [[
local http = require "moonwait.http"
local mw = require "moonwait"
local time = require "moonwait.time"
local probe = require "probe" -- spec/support/probe.lua
local fds, fd_list, rss_kb = probe.fds, probe.fd_list, probe.rss_kb
local base
return {
  open = function()
    -- warm up: libuv opens one reserve fd per loop with its first TCP handle
    assert(http.get(WARM, { keepalive = false }))
    local s = mw.runtime_stats()
    base = { fds = fds(), handles = s.handles, rss = rss_kb(), list = fd_list() }
  end,
  async_invoke = function(r) http.get(r.url); return { r } end,
  on_timeout = function(r) return {} end,
  close = function()
    -- count after things settle: a connection being closed gives its fd
    -- back in a later loop turn. A leak stays; 10 s only matter then.
    local t0 = time.now()
    local s
    repeat
      collectgarbage()
      s = mw.runtime_stats()
      if fds() <= base.fds and s.handles <= base.handles and s.pooled == 0 then break end
      time.sleep(0.05)
    until time.now() - t0 > 10
    s = mw.runtime_stats()
    local now = fds()
    if now > base.fds then io.stderr:write("FDS before: " .. base.list .. "\nFDS after: " .. fd_list() .. "\n") end
    io.stderr:write(string.format("LEAKCHECK fds=%d/%d handles=%d/%d fibers=%d pooled=%d rss=%d/%d\n",
      base.fds, now, base.handles, s.handles, s.fibers, s.pooled, base.rss, rss_kb()))
  end,
}
]])
    H.write(d .. "/script.lua", H.read(d .. "/script.lua"):gsub("WARM", '"' .. nginx.url("/user/1") .. '"'))
    local recs = {}
    for i = 1, 3000 do recs[i] = { url = nginx.url("/slow") } end
    local r = H.run("run --script script.lua --timeout 50 --capacity 500 --mode unordered",
      { dir = d, input = H.jsonl(recs) })
    assert.equal(0, r.code, r.err)
    assert.equal("", r.out)
    local f0, f1, h0, h1, fibers, pooled, rss0, rss1 =
      r.err:match("LEAKCHECK fds=(%d+)/(%d+) handles=(%d+)/(%d+) fibers=(%d+) pooled=(%d+) rss=(%d+)/(%d+)")
    assert.is_truthy(f0, r.err)
    assert.is_true(tonumber(f1) <= tonumber(f0), "fds grew from " .. f0 .. " to " .. f1 .. "\n" .. r.err)
    -- active handles: none left behind by the cancelled requests (the two
    -- moments differ only in transient ones, e.g. the input read in flight)
    assert.is_true(tonumber(h1) <= tonumber(h0), "active handles grew from " .. h0 .. " to " .. h1)
    assert.equal("1", fibers)  -- close itself
    assert.equal("0", pooled)
    -- (under valgrind, RSS is valgrind's; it checks leaks itself there)
    if H.wrapper == "" then
      assert.is_true(tonumber(rss1) - tonumber(rss0) < 20000, "rss grew from " .. rss0 .. " to " .. rss1 .. " kB")
    end
  end)
end)
