-- --metrics: the Prometheus endpoint (README: "Metrics"). Every scrape is
-- checked with `promtool check metrics` (Debian's prometheus package;
-- scripts/setup installs it): without promtool these specs fail, saying so.
local H = require("helpers")
local T = require("support.rawtcp")

local function promtool_check(text)
  assert(os.execute("command -v promtool >/dev/null 2>&1") == 0 or
         os.execute("command -v promtool >/dev/null 2>&1") == true,
    "promtool not found: install the Debian package 'prometheus' (scripts/setup does)")
  local d = H.tmpdir()
  H.write(d .. "/m.txt", text)
  local code, out, err = H.sh("promtool check metrics < " .. d .. "/m.txt")
  assert(code == 0, "promtool check metrics refused the scrape:\n" .. out .. err .. "\n---\n" .. text)
end

-- Start moonwait in dir with `args`, its input a FIFO fed from dir/in and
-- kept open until end_input(): the run is alive while we scrape. Returns
-- a handle: port, pid, scrape(path), end_input(), wait().
local function start(dir, args, opts)
  opts = opts or {}
  local input = opts.input or "fifo"
  if not opts.input then os.execute("mkfifo " .. dir .. "/fifo") end
  os.execute(string.format(
    "cd %s && { %s run --input %s --output out %s 2>err & echo $! >pid; wait $!; echo $? >rc; } >/dev/null 2>&1 &",
    dir, H.cmd(""), H.q(input), args))
  local pid = H.wait_for(function() return (H.read(dir .. "/pid") or ""):match("%d+") end, 30)
  assert(pid, "moonwait did not start")
  -- (the writer's output away from busted's: it must not hold busted's pipes)
  if not opts.input then
    os.execute(string.format("cd %s && { (cat in; exec sleep 300) >fifo & echo $! >wpid; } </dev/null >/dev/null 2>&1",
      dir))
  end
  local port = H.wait_for(function()
    local e = H.read(dir .. "/err") or ""
    return tonumber(e:match("metrics on http://127%.0%.0%.1:(%d+)/metrics")) or (H.read(dir .. "/rc") and -1)
  end, 30)
  if not port or port < 0 then
    -- moonwait is gone: the writer may still wait for a reader of the FIFO
    os.execute("kill " .. ((H.read(dir .. "/wpid") or ""):match("%d+") or "0") .. " 2>/dev/null")
    error("no metrics port in: " .. (H.read(dir .. "/err") or ""))
  end
  local self = { port = port, pid = pid, dir = dir }
  -- GET path: status, body (raw over TCP, Connection: close).
  function self.get(path, method)
    local r = T.request(port, string.format("%s %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
      method or "GET", path))
    local status = tonumber(r:match("^HTTP/1%.1 (%d+)"))
    return status, r:match("\r\n\r\n(.*)$") or "", r
  end
  -- /metrics, checked by promtool; returns the text and a table of samples
  -- (series text as written -> number).
  function self.scrape()
    local status, body = self.get("/metrics")
    assert(status == 200, "scrape: status " .. tostring(status))
    promtool_check(body)
    local v = {}
    for line in body:gmatch("[^\n]+") do
      if not line:match("^#") then
        local k, n = line:match("^(%S+) (%S+)$")
        v[k] = tonumber(n) or (n == "+Inf" and math.huge) or n
      end
    end
    return v, body
  end
  function self.end_input()
    if opts.input then os.execute("kill -TERM " .. pid) return end
    local w = H.wait_for(function() return (H.read(dir .. "/wpid") or ""):match("%d+") end, 10)
    os.execute("kill " .. w .. " 2>/dev/null")
  end
  function self.wait(secs)
    local rc = H.wait_for(function() return H.read(dir .. "/rc") end, secs or 60)
    return tonumber(rc and rc:match("%d+")), H.read(dir .. "/out") or "", H.read(dir .. "/err") or ""
  end
  -- Poll scrapes until pred(samples) holds.
  function self.until_(pred, secs)
    local last
    local ok = H.wait_for(function()
      last = self.scrape()
      return pred(last)
    end, secs or 20)
    return ok, last
  end
  return self
end

-- A script: each record sleeps r.s seconds (the run stays alive while we
-- look), fails when r.fail is set, and returns itself.
local HOLD = [[
local time = require "moonwait.time"
local M = {}
function M.async_invoke(r, ctx)
  if r.s and r.s > 0 then time.sleep(r.s) end
  if r.fail then error("asked to fail") end
  return { r }
end
return M
]]

-- Send `requests` at once on one connection (the last says Connection:
-- close) and read until moonwait closes it: the status of each response.
local function pipelined(port, requests)
  local fd = assert(T.connect(port))
  T.send(fd, requests)
    local r, closed = T.read_all(fd, 5)
    T.close(fd)
    assert.is_true(closed)
    local statuses = {}
    for s in r:gmatch("HTTP/1%.1 (%d+)") do statuses[#statuses + 1] = tonumber(s) end
  return statuses
end

local function prepare(body, input)
  local d = H.tmpdir()
  H.script(d, body or HOLD)
  H.write(d .. "/in", input)
  return d
end

describe("--metrics", function()
  after_each(H.cleanup)

  it("with --workers: one scrape sums every worker, and shows each worker's attempts", function()
    -- every record sleeps until the input ends: 12 in flight over 3 workers
    local lines = {}
    for i = 1, 12 do lines[i] = { id = i, s = 30 } end
    local d = prepare(nil, H.jsonl(lines))
    local m = start(d, "--script script.lua --metrics 127.0.0.1:0 --timeout 600 --workers 3 --capacity 12")
    local ok, v = m.until_(function(v) return v.moonwait_in_flight == 12 end)
    assert(ok, "records never came in")
    assert.equal(3, v.moonwait_workers)
    local sum, used = 0, 0
    for k = 1, 3 do
      local n = v['moonwait_worker_attempts{worker="' .. k .. '"}']
      assert.truthy(n, "worker " .. k .. " missing")
      sum = sum + n
      if n > 0 then used = used + 1 end
    end
    assert.equal(12, sum)
    assert.is_true(used >= 2, "attempts on one worker only")
    m.end_input()
    os.execute("kill -TERM " .. m.pid .. "; sleep 0.2; kill -TERM " .. m.pid)
    m.wait()
  end)

  it("counts the run: records in and out, outputs, the queue, and histograms at the end", function()
    -- ordered: record 1 sleeps 0.4 s, 2..5 finish at once and wait behind it
    local d = prepare(nil, H.jsonl({ { id = 1, s = 0.4 }, { id = 2 }, { id = 3 }, { id = 4 }, { id = 5 } }))
    local m = start(d, "--script script.lua --metrics 127.0.0.1:0 --timeout 0")
    local ok, v = m.until_(function(v) return v.moonwait_records_in_total == 5 end)
    assert(ok, "records never came in")
    if v.moonwait_records_out_total == 0 then -- (the 0.4 s not yet over)
      assert.equal(5, v.moonwait_in_flight)
      assert.equal(4, v.moonwait_queued)
      assert.equal(0, v.moonwait_hol_blocking_seconds_count)
    end
    ok, v = m.until_(function(v) return v.moonwait_records_out_total == 5 end)
    assert(ok, "records never left")
    assert.equal(5, v.moonwait_outputs_total)
    assert.equal(5, v.moonwait_attempts_total)
    assert.equal(0, v.moonwait_in_flight)
    assert.equal(0, v.moonwait_queued)
    assert.equal(100, v.moonwait_capacity_limit)
    assert.equal(1, v.moonwait_generation)
    assert.equal(1, v.moonwait_generations_live)
    assert.equal(5, v.moonwait_attempt_duration_seconds_count)
    assert.equal(5, v.moonwait_record_duration_seconds_count)
    -- head-of-line: the 4 that waited behind record 1; record 1 left at once
    assert.equal(4, v.moonwait_hol_blocking_seconds_count)
    assert(v.moonwait_hol_blocking_seconds_sum > 4 * 0.3, "hol sum " .. v.moonwait_hol_blocking_seconds_sum)
    assert.equal(4, v['moonwait_hol_blocking_seconds_bucket{le="1"}'] - v['moonwait_hol_blocking_seconds_bucket{le="0.1"}'])
    assert(v.moonwait_record_duration_seconds_sum >= 0.4)
    assert.equal(5, v['moonwait_record_duration_seconds_bucket{le="+Inf"}'])
    m.end_input()
    local code, out = m.wait()
    assert.equal(0, code)
    assert.equal(5, #H.lines(out))
  end)

  it("examples/metrics/alerts.yml: promtool accepts and unit-tests it, and it names only metrics moonwait serves", function()
    local dir = (debug.getinfo(1, "S").source:match("^@(.*)/spec/[^/]*$") or ".") .. "/examples/metrics"
    local code, out, err = H.sh("cd " .. H.q(dir) .. " && promtool check rules alerts.yml && promtool test rules alerts_test.yml")
    assert(code == 0, out .. err)
    -- every moonwait_ metric the rules name is one a run serves (a renamed
    -- metric would leave an alert that never fires); the per-host and the
    -- stream's appear only with requests or a stream, and are in the README
    local d = prepare(nil, H.jsonl({ { id = 1 } }))
    local m = start(d, "--script script.lua --metrics 127.0.0.1:0")
    local _, body = m.scrape()
    local readme = H.read((dir:gsub("/examples/metrics$", "")) .. "/README.md")
    local rules = H.read(dir .. "/alerts.yml")
    local n = 0
    for name in rules:gmatch("moonwait_[%w_]+") do
      n = n + 1
      local family = name:gsub("_bucket$", ""):gsub("_sum$", ""):gsub("_count$", "")
      if family:match("^moonwait_http_client_") or family:match("^moonwait_source_") then
        assert(readme:find("`" .. family .. "{", 1, true), family .. " is not in the README's table")
      else
        assert(body:find("\n# TYPE " .. family .. " ", 1, true), family .. " is not served")
      end
    end
    assert(n >= 10, "too few metrics in alerts.yml")
    m.end_input()
    assert.equal(0, (m.wait()))
  end)

  it("observes no head-of-line blocking when every record leaves at once, and counts watermarks", function()
    local d = prepare(nil, H.jsonl({ { id = 1 }, { id = 2 }, { ["$watermark"] = 5 }, { id = 3 } }))
    local m = start(d, "--script script.lua --metrics 127.0.0.1:0")
    local ok, v = m.until_(function(v) return v.moonwait_records_out_total == 3 end)
    assert(ok)
    assert.equal(0, v.moonwait_hol_blocking_seconds_count)
    assert.equal(3, v.moonwait_record_duration_seconds_count)
    assert.equal(1, v.moonwait_watermarks_total)
    m.end_input()
    assert.equal(0, (m.wait()))
  end)

  it("observes head-of-line blocking in unordered mode behind a watermark, and in keyed mode behind a key", function()
    local d = prepare(nil, H.jsonl({ { id = 1, s = 0.3 }, { ["$watermark"] = 5 }, { id = 2 }, { id = 3 } }))
    local m = start(d, "--script script.lua --metrics 127.0.0.1:0 --mode unordered")
    local ok, v = m.until_(function(v) return v.moonwait_records_out_total == 3 end)
    assert(ok)
    assert.equal(2, v.moonwait_hol_blocking_seconds_count) -- 2 and 3 waited for the watermark
    m.end_input()
    assert.equal(0, (m.wait()))

    d = prepare(nil, H.jsonl({ { id = 1, k = "a", s = 0.3 }, { id = 2, k = "b" }, { id = 3, k = "a" } }))
    m = start(d, "--script script.lua --metrics 127.0.0.1:0 --mode keyed --key k")
    ok, v = m.until_(function(v) return v.moonwait_records_out_total == 3 end)
    assert(ok)
    assert.equal(1, v.moonwait_hol_blocking_seconds_count) -- only 3, behind 1 of its key
    m.end_input()
    assert.equal(0, (m.wait()))
  end)

  it("matches the --stats summary: retries, timeouts, skipped, dead letters, malformed lines", function()
    local d = prepare([[
local time = require "moonwait.time"
local M = {}
M.retry_on_error = function() return true end
function M.async_invoke(r, ctx)
  if r.slow then time.sleep(5) end
  if r.fail then error("no") end
  return { r, r }
end
return M
]], H.jsonl({ { id = 1 }, { id = 2, fail = true }, { id = 3, slow = true }, "not json", { id = 5 } }))
    local m = start(d, "--script script.lua --metrics 127.0.0.1:0 --stats --timeout 300 " ..
      "--retry fixed:3:10 --on-error dead-letter --dead-letter dl")
    local ok, v = m.until_(function(v) return v.moonwait_records_out_total == 5 end)
    assert(ok, "records never left")
    m.end_input()
    local code, _, err = m.wait()
    assert.equal(0, code)
    local sum = {}
    for k, n in err:match("summary: ([^\n]*)"):gmatch("([%w_]+)=([%d.]+)") do sum[k] = tonumber(n) end
    for _, k in ipairs({ "records_in", "records_out", "outputs", "attempts", "retries", "timeouts",
                         "dead_lettered", "malformed", "skipped" }) do
      local name = "moonwait_" .. k .. (k == "in_flight" and "" or "_total")
      assert.equal(sum[k], v[name], k)
    end
    assert.equal(4, v.moonwait_outputs_total) -- 1 and 5, twice each
    assert.equal(1, v.moonwait_timeouts_total)
    assert.equal(2, v.moonwait_retries_total)
    -- an attempt cut by its timeout counts; the attempt histogram counts every attempt that ended
    -- (the operator counts a malformed line as a record in with one attempt: no script ran for it)
    assert.equal(v.moonwait_attempts_total - v.moonwait_malformed_total, v.moonwait_attempt_duration_seconds_count)
    assert.equal(6, v.moonwait_attempt_duration_seconds_count)
  end)

  it("answers /healthz, 404 for other paths, 405 for other methods, HEAD without a body", function()
    local d = prepare(nil, H.jsonl({ { id = 1 } }))
    local m = start(d, "--script script.lua --metrics 127.0.0.1:0")
    local st, body = m.get("/healthz")
    assert.equal(200, st)
    assert.equal("running\n", body)
    st = m.get("/nothing")
    assert.equal(404, st)
    local raw
    st, _, raw = m.get("/metrics", "POST")
    assert.equal(405, st)
    assert.truthy(raw:find("Allow: GET, HEAD", 1, true))
    st, body, raw = m.get("/metrics", "HEAD")
    assert.equal(200, st)
    assert.equal("", body)
    assert.truthy(raw:find("Content-Type: text/plain; version=0.0.4", 1, true))
    assert(tonumber(raw:match("Content%-Length: (%d+)")) > 1000)
    st = m.get("/metrics?x=1")
    assert.equal(200, st)
    m.end_input()
    assert.equal(0, (m.wait()))
  end)

  it("serves keep-alive and pipelined requests in order on one connection", function()
    local d = prepare(nil, H.jsonl({ { id = 1 } }))
    local m = start(d, "--script script.lua --metrics 127.0.0.1:0")
    local statuses = pipelined(m.port, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n\r\n" ..
      "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\nHEAD /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert.same({ 200, 404, 200, 200 }, statuses)
    m.end_input()
    assert.equal(0, (m.wait()))
  end)

  it("reads each request's own path on a kept-alive connection, not the tail of a longer earlier one", function()
    local d = prepare(nil, H.jsonl({ { id = 1 } }))
    local m = start(d, "--script script.lua --metrics 127.0.0.1:0")
    -- /healthz over the buffer that held /metrics/and/more would read "/healthz/and/more"
    local statuses = pipelined(m.port, "GET /metrics/and/more HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" ..
      "GET /healthz?x=1 HTTP/1.1\r\nHost: x\r\n\r\nGET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert.same({ 404, 200, 200, 200 }, statuses)
    m.end_input()
    assert.equal(0, (m.wait()))
  end)

  it("ends the run when the input ends, with a scraper still connected", function()
    local d = prepare(nil, H.jsonl({ { id = 1 } }))
    local m = start(d, "--script script.lua --metrics 127.0.0.1:0")
    local fd = assert(T.connect(m.port))
    T.send(fd, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n") -- keep-alive: the connection stays open
    local r = T.read_all(fd, 2, function(s) return s:find("running\n", 1, true) end)
    assert.truthy(r:find("200 OK", 1, true))
    local half = assert(T.connect(m.port))
    T.send(half, "GET /metr") -- a request cut in the middle
    m.end_input()
    local code = m.wait(20)
    assert.equal(0, code)
    T.close(fd)
    T.close(half)
  end)
end)

describe("--metrics with signals and checkpoints", function()
  after_each(H.cleanup)

  it("answers /healthz 503 draining after SIGTERM while records finish, then the run ends", function()
    local d = prepare(nil, H.jsonl({ { id = 1, s = 1.5 }, { id = 2, s = 1.5 } }))
    local m = start(d, "--script script.lua --metrics 127.0.0.1:0 --timeout 0")
    assert(m.until_(function(v) return v.moonwait_in_flight == 2 end))
    os.execute("kill -TERM " .. m.pid)
    local st, body
    assert(H.wait_for(function()
      st, body = m.get("/healthz")
      return st == 503
    end, 10), "healthz stayed " .. tostring(st))
    assert.equal("draining\n", body)
    local code, out = m.wait()
    assert.equal(1, code) -- interrupted (no checkpoint dir): records already emitted are complete
    assert.equal(2, #H.lines(out))
  end)

  it("reports the checkpoint's age, and a run restored after kill -9 with --metrics completes", function()
    local d = prepare(nil, H.jsonl({ { id = 1 }, { id = 2, s = 30 }, { id = 3 } }))
    local m = start(d, "--script script.lua --metrics 127.0.0.1:0 --timeout 0 --checkpoint-dir ck " ..
      "--checkpoint-interval 200", { input = "in" })
    local ok = m.until_(function(v) return v.moonwait_records_in_total == 3 end)
    assert(ok)
    assert(H.wait_for(function() return m.scrape().moonwait_checkpoint_age_seconds < 0.5 end, 10))
    os.execute("sleep 0.5")
    local v = m.scrape()
    assert(v.moonwait_checkpoint_age_seconds < 1, "age " .. v.moonwait_checkpoint_age_seconds)
    assert(v.moonwait_checkpoint_age_seconds > 0)
    H.kill9(d)
    -- restore: record 2 runs again, this time without sleeping
    H.script(d, (HOLD:gsub("if r%.s and r%.s > 0 then time%.sleep%(r%.s%) end", "")))
    local r = H.run("run --script script.lua --input in --output out --timeout 0 --checkpoint-dir ck " ..
      "--metrics 127.0.0.1:0", { dir = d })
    assert.equal(0, r.code, r.err)
    assert.equal(3, #H.lines(H.read(d .. "/out")))
  end)
end)

describe("--metrics refuses", function()
  after_each(H.cleanup)

  for _, bad in ipairs({ "abc", "127.0.0.1", "127.0.0.1:", "127.0.0.1:70000", "127.0.0.1:-1", "example.com:80",
                         "::1:9090", "[::1]", ":9090", "1.2.3:80" }) do
    it("'" .. bad .. "' at parse time, naming the flag", function()
      local d = prepare(nil, H.jsonl({ { id = 1 } }))
      local r = H.run("run --script script.lua --input in --output out --metrics " .. H.q(bad), { dir = d })
      assert.equal(2, r.code)
      assert.truthy(r.err:find("--metrics", 1, true), r.err)
      assert.truthy(r.err:find("HOST:PORT", 1, true), r.err)
    end)
  end

  it("a pipeline key that is not a string, naming the key", function()
    local d = prepare(nil, H.jsonl({ { id = 1 } }))
    H.write(d .. "/p.lua", "return { script = 'script.lua', input = 'in', output = 'out', metrics = 9090 }")
    local r = H.run("run p.lua", { dir = d })
    assert.equal(2, r.code)
    assert.truthy(r.err:find("metrics", 1, true), r.err)
  end)

  it("a port in use: exit 2 before any input is read, naming --metrics and the address", function()
    local d = prepare(nil, H.jsonl({ { id = 1 } }))
    local m = start(d, "--script script.lua --metrics 127.0.0.1:0")
    local d2 = prepare(nil, H.jsonl({ { id = 1 } }))
    local r = H.run(string.format("run --script script.lua --input in --output out --metrics 127.0.0.1:%d", m.port),
      { dir = d2 })
    assert.equal(2, r.code)
    assert.truthy(r.err:find("--metrics 127.0.0.1:" .. m.port .. ": cannot listen on it: address already in use",
      1, true), r.err)
    assert.is_falsy(H.exists(d2 .. "/out") and #H.read(d2 .. "/out") > 0)
    m.end_input()
    assert.equal(0, (m.wait()))
  end)

  it("an address this machine does not have", function()
    local d = prepare(nil, H.jsonl({ { id = 1 } }))
    local r = H.run("run --script script.lua --input in --output out --metrics 192.0.2.1:9090", { dir = d })
    assert.equal(2, r.code)
    assert.truthy(r.err:find("--metrics 192.0.2.1:9090: cannot listen on it", 1, true), r.err)
  end)

  it("takes the pipeline key, and [::1] with a port", function()
    local d = prepare(nil, H.jsonl({ { id = 1 } }))
    H.write(d .. "/p.lua", "return { script = 'script.lua', input = 'in', output = 'out', metrics = '127.0.0.1:0' }")
    local r = H.run("run p.lua", { dir = d })
    assert.equal(0, r.code)
    assert.truthy(r.err:find("metrics on http://127.0.0.1:%d+/metrics"), r.err)
    r = H.run("run --script script.lua --input in --output out --metrics [::1]:0", { dir = d })
    if r.code == 2 and r.err:find("address not available", 1, true) then
      pending("no IPv6 loopback here")
    else
      assert.equal(0, r.code)
      assert.truthy(r.err:find("metrics on http://%[::1%]:%d+/metrics"), r.err)
    end
  end)
end)

describe("--metrics against a hostile client", function()
  after_each(H.cleanup)

  local function rss_kb(pid)
    return tonumber((H.read("/proc/" .. pid .. "/status") or ""):match("VmRSS:%s+(%d+)")) or 0
  end
  local function nfds(pid)
    local p = io.popen("ls /proc/" .. pid .. "/fd 2>/dev/null | wc -l")
    local n = tonumber(p:read("*a"))
    p:close()
    return n
  end

  it("refuses a huge header, too many headers, an endless header line and garbage bytes, and closes", function()
    local d = prepare(nil, H.jsonl({ { id = 1 } }))
    local m = start(d, "--script script.lua --metrics 127.0.0.1:0")
    local r = T.request(m.port, "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " .. ("a"):rep(10000) .. "\r\n\r\n")
    assert.truthy(r:find("^HTTP/1.1 431"), r)
    local many = { "GET /metrics HTTP/1.1\r\n" }
    for i = 1, 100 do many[#many + 1] = "X-" .. i .. ": y\r\n" end
    r = T.request(m.port, table.concat(many) .. "\r\n")
    assert.truthy(r:find("^HTTP/1.1 431"), r)
    -- a header line that never ends: refused once it passes the cap, without waiting for more
    local fd = assert(T.connect(m.port))
    T.send(fd, "GET /metrics HTTP/1.1\r\nX-Endless: " .. ("b"):rep(9000))
    local closed
    r, closed = T.read_all(fd, 5)
    T.close(fd)
    assert.truthy(r:find("^HTTP/1.1 431"), r)
    assert.is_true(closed)
    r = T.request(m.port, "\0\1\2\3 garbage \255\254\r\n\r\n")
    assert.truthy(r:find("^HTTP/1.1 400"), r)
    r = T.request(m.port, "GET /metrics HTTP/1.1\r\nContent-Length: 100000\r\n\r\n" .. ("z"):rep(9000))
    assert.truthy(r:find("^HTTP/1.1 431"), r) -- a body counts against the request's cap
    assert.equal(200, (m.get("/healthz")))
    m.end_input()
    assert.equal(0, (m.wait()))
  end)

  it("holds at most 32 connections of 1000, and serves again once they go", function()
    local d = prepare(nil, H.jsonl({ { id = 1 } }))
    local m = start(d, "--script script.lua --metrics 127.0.0.1:0")
    assert(H.wait_for(function() return m.get("/healthz") == 200 end, 10))
    local before = nfds(m.pid)
    local fds = {}
    for i = 1, 1000 do fds[i] = T.connect(m.port, { nowait = true }) end
    -- the ones past the cap are closed by moonwait: its descriptors stay bounded
    os.execute("sleep 0.5")
    local during = nfds(m.pid)
    assert(during <= before + 32 + 2, "fds " .. before .. " -> " .. during)
    for _, fd in ipairs(fds) do if fd then T.close(fd) end end
    local ok = H.wait_for(function() return m.get("/healthz") == 200 end, 10)
    assert(ok, "not served after the connections closed")
    m.end_input()
    assert.equal(0, (m.wait()))
  end)

  it("closes a slow client and one that stops reading, with bounded memory, serving others meanwhile", function()
    local d = prepare(nil, H.jsonl({ { id = 1 } }))
    local m = start(d, "--script script.lua --metrics 127.0.0.1:0")
    -- (running: the input is open too, so the descriptors counted are all there)
    assert(H.wait_for(function() return m.get("/healthz") == 200 end, 10))
    local base, base_fds = rss_kb(m.pid), nfds(m.pid)
    -- pipelined scrapes it never reads
    local reader = assert(T.connect(m.port, { rcvbuf = 4096 }))
    local req = ("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"):rep(200)
    local sent = 0
    for _ = 1, 50 do
      local n = T.send(reader, req)
      if n <= 0 then break end
      sent = sent + n
    end
    -- a client that sends one byte at a time, slower than the limit allows
    local slow = assert(T.connect(m.port))
    local t0 = os.time()
    local slow_closed = false
    for i = 1, 40 do
      if T.send(slow, ("GET /metrics HTTP/1.1\r\n"):sub(i, i)) < 0 then slow_closed = true break end
      local _, c = T.read_all(slow, 0, function() return true end)
      if c then slow_closed = true break end
      assert.equal(200, (m.get("/healthz"))) -- others are served
      os.execute("sleep 0.4")
    end
    assert.is_true(slow_closed, "the slow client was not closed")
    assert(os.time() - t0 <= 16, "closed after " .. (os.time() - t0) .. " s")
    assert(rss_kb(m.pid) - base < 20000, "rss grew from " .. base .. " to " .. rss_kb(m.pid) .. " kB")
    -- the non-reader was closed too (no answer written for 10 s: it does not
    -- read); seen on moonwait's side, since reading now would let it go on
    assert(H.wait_for(function() return nfds(m.pid) <= base_fds end, 20),
      "moonwait still holds " .. nfds(m.pid) .. " descriptors (" .. base_fds .. " before)")
    T.close(reader)
    T.close(slow)
    assert(sent > 0)
    m.end_input()
    assert.equal(0, (m.wait()))
  end)
end)

describe("moonwait.metrics", function()
  after_each(H.cleanup)

  it("counts a script's counters, gauges and histograms with labels; errors are nil, err", function()
    local d = prepare([[
local m = require "moonwait.metrics"
local M = {}
local c = assert(m.counter("enrich_hits_total", "Hits by source.", { "source" }))
local g = assert(m.gauge("enrich_depth", "A depth."))
local h = assert(m.histogram("enrich_seconds", "Lookup time.", { "svc" }, { 0.1, 1 }))
local errs = {}
local function note(ok, err) if not ok then errs[#errs + 1] = err end end
note(m.counter("bad-name", "x"))
note(m.gauge("enrich_hits_total", "x", { "source" }))
note(m.counter("enrich_hits_total", "x", { "other" }))
note(m.counter("moonwait_mine_total", "x"))
note(m.histogram("enrich_h2", "x", nil, { 2, 1 }))
note(c:inc(1))
note(c:inc(-1, { "a" }))
note(m.counter("enrich_hits_total", "same again", { "source" }) == c and true)
function M.async_invoke(r)
  assert(c:inc(1, { r.src }))
  assert(g:set(r.id))
  g:inc(0.5)
  g:dec(0.25)
  assert(h:observe(r.t, { "geo" }))
  if r.id == 1 then return { { errs = errs } } end
  return {}
end
return M
]], H.jsonl({ { id = 1, src = "cache", t = 0.05 }, { id = 2, src = "cache", t = 0.5 }, { id = 3, src = 'q"uote', t = 5 } }))
    local m = start(d, "--script script.lua --metrics 127.0.0.1:0")
    local ok, v = m.until_(function(v) return v.moonwait_records_out_total == 3 end)
    assert(ok)
    assert.equal(2, v['enrich_hits_total{source="cache"}'])
    assert.equal(1, v['enrich_hits_total{source="q\\"uote"}'])
    assert.equal(3.25, v.enrich_depth)
    assert.equal(1, v['enrich_seconds_bucket{svc="geo",le="0.1"}'])
    assert.equal(2, v['enrich_seconds_bucket{svc="geo",le="1"}'])
    assert.equal(3, v['enrich_seconds_bucket{svc="geo",le="+Inf"}'])
    assert.equal(3, v['enrich_seconds_count{svc="geo"}'])
    m.end_input()
    local code, out = m.wait()
    assert.equal(0, code)
    local errs = H.json.decode(H.lines(out)[1]).errs
    assert.truthy(errs[1]:find("bad metric name 'bad-name'", 1, true))
    assert.truthy(errs[2]:find("already registered as a counter", 1, true))
    assert.truthy(errs[3]:find("already registered with other labels", 1, true))
    assert.truthy(errs[4]:find("prefix 'moonwait_' is the host's", 1, true))
    assert.truthy(errs[5]:find("increasing order", 1, true))
    assert.truthy(errs[6]:find("has 1 label, got 0 values", 1, true))
    assert.truthy(errs[7]:find("only goes up", 1, true))
    assert.equal(7, #errs) -- the same registration again is the same metric
  end)

  it("refuses a metric named as a histogram's samples: promtool still accepts the scrape", function()
    local d = prepare([[
local m = require "moonwait.metrics"
local M = {}
local h = assert(m.histogram("lat", "Latency."))
local errs = {}
for _, name in ipairs({ "lat_count", "lat_sum", "lat_bucket" }) do
  local g, err = m.gauge(name, "collides")
  errs[#errs + 1] = g and "taken" or err
end
local odd = assert(m.counter("odd_total", "Odd label values.", { "v" }))
function M.async_invoke(r)
  h:observe(0.01)
  odd:inc(1, { "nul\0,quote\",back\\,nl\n,end" }) -- (no space: the spec's parser splits on it)
  return { { errs = errs } }
end
return M
]], H.jsonl({ { id = 1 } }))
    local m = start(d, "--script script.lua --metrics 127.0.0.1:0")
    local ok, v = m.until_(function(v) return v.moonwait_records_out_total == 1 end) -- promtool checks each
    assert(ok)
    assert.equal(1, v.lat_count)
    m.end_input()
    local code, out = m.wait()
    assert.equal(0, code)
    local errs = H.json.decode(H.lines(out)[1]).errs
    for i = 1, 3 do
      assert.truthy(errs[i]:find("collides with the histogram 'lat'", 1, true), errs[i])
    end
    assert.equal(3, #errs)
  end)

  it("caps the metrics a script registers at 1000 (a name made per record is nil, err past them)", function()
    local d = prepare([[
local m = require "moonwait.metrics"
local M = {}
function M.async_invoke(r)
  local first_err
  for i = 1, 1005 do
    local c, err = m.counter("user_" .. i .. "_total", "Per user.")
    if not c and not first_err then first_err = i .. ": " .. err end
  end
  return { { first = first_err, again = m.counter("user_7_total", "Per user.") ~= nil } }
end
return M
]], H.jsonl({ { id = 1 } }))
    local r = H.run("run --script script.lua --input in --output out", { dir = d })
    assert.equal(0, r.code, r.err)
    local o = H.json.decode(H.read(d .. "/out"))
    assert.truthy(o.first:find("^1001: metric 'user_1001_total': the registry has reached its limit of 1000 metrics"),
      o.first)
    assert.is_true(o.again)
  end)

  it("caps a metric's label sets at 1000 (nil, err past it) and raises on misused types", function()
    local d = prepare([[
local m = require "moonwait.metrics"
local M = {}
function M.async_invoke(r)
  local c = assert(m.counter("many_total", "Many.", { "k" }))
  local first_err
  for i = 1, 1005 do
    local ok, err = c:inc(1, { i })
    if not ok and not first_err then first_err = i .. ": " .. err end
  end
  local ok1, e1 = pcall(c.inc, c, "x")
  local ok2, e2 = pcall(c.inc, c, 1, { {} })
  local ok3, e3 = pcall(c.observe, c, 1)
  return { { first = first_err, raised = { ok1, ok2, ok3 }, e = { tostring(e1), tostring(e2), tostring(e3) } } }
end
return M
]], H.jsonl({ { id = 1 } }))
    local r = H.run("run --script script.lua --input in --output out", { dir = d })
    assert.equal(0, r.code, r.err)
    local o = H.json.decode(H.read(d .. "/out"))
    assert.truthy(o.first:find("^1001: metric 'many_total' has reached its limit of 1000 label sets"), o.first)
    assert.same({ false, false, false }, o.raised)
    assert.truthy(o.e[2]:find("label values must be strings or numbers", 1, true), o.e[2])
    assert.truthy(o.e[3]:find("is not a histogram", 1, true), o.e[3])
  end)

  it("keeps a metric across a hot reload (the same one, its value kept); another type is rejected", function()
    local body = [[
local m = require "moonwait.metrics"
local c = assert(m.counter("seen_total", "Seen."))
return { async_invoke = function(r) c:inc(); return { r } end,
         open = function(ctx) io.stderr:write("OPEN ", ctx.generation, "\n") end }
]]
    local d = prepare(body, H.jsonl({ { id = 1 }, { id = 2 } }))
    local m = start(d, "--script script.lua --metrics 127.0.0.1:0")
    assert(m.until_(function(v) return v.seen_total == 2 end))
    os.execute("kill -HUP " .. m.pid)
    assert(H.wait_for(function() return (H.read(d .. "/err") or ""):find("OPEN 2", 1, true) end, 20))
    H.script(d, (body:gsub("m%.counter", "m.gauge")))
    os.execute("kill -HUP " .. m.pid)
    assert(H.wait_for(function() return (H.read(d .. "/err") or ""):find("rejected", 1, true) end, 20))
    local ok, v = m.until_(function(v) return v.moonwait_reloads_rejected_total == 1 end)
    assert(ok)
    assert.equal(1, v.moonwait_reloads_total)
    assert.equal(2, v.moonwait_generation)
    assert.equal(2, v.seen_total)
    m.end_input()
    local code, _, err = m.wait()
    assert.equal(0, code)
    assert.truthy(err:find("already registered as a counter", 1, true), err)
  end)

  it("works without --metrics, and the HTTP client counts nothing then", function()
    local d = prepare([[
local m = require "moonwait.metrics"
local c = assert(m.counter("x_total", "X."))
return { async_invoke = function(r) assert(c:inc()); return { r } end }
]], H.jsonl({ { id = 1 }, { id = 2 } }))
    local r = H.run("run --script script.lua --input in --output out", { dir = d })
    assert.equal(0, r.code, r.err)
    assert.equal(2, #H.lines(H.read(d .. "/out")))
  end)
end)

describe("--metrics with real servers", function()
  local servers = require("support.servers")
  local nginx
  setup(function() nginx = servers.nginx() end)
  teardown(function() if nginx then nginx.stop() end end)
  after_each(H.cleanup)

  it("counts moonwait.http per host and status class, errors included, with a latency histogram", function()
    local d = prepare([[
local http = require "moonwait.http"
local time = require "moonwait.time"
return { async_invoke = function(r)
  local res, err = http.get(r.url, { timeout_ms = r.t or 2000 })
  return { { id = r.id, status = res and res.status, err = err } }
end }
]], H.jsonl({ { id = 1, url = nginx.url("/user/1") }, { id = 2, url = nginx.url("/user/2") },
              { id = 3, url = nginx.url("/status/503") }, { id = 4, url = nginx.url("/status/404") },
              { id = 5, url = nginx.url("/slow"), t = 100 }, { id = 6, url = "http://127.0.0.1:1/" } }))
    local m = start(d, "--script script.lua --metrics 127.0.0.1:0 --mode unordered")
    local ok, v = m.until_(function(v) return v.moonwait_records_out_total == 6 end)
    assert(ok)
    local host = '127.0.0.1:' .. nginx.port
    assert.equal(2, v['moonwait_http_client_requests_total{host="' .. host .. '",code="2xx"}'])
    assert.equal(1, v['moonwait_http_client_requests_total{host="' .. host .. '",code="5xx"}'])
    assert.equal(1, v['moonwait_http_client_requests_total{host="' .. host .. '",code="4xx"}'])
    assert.equal(1, v['moonwait_http_client_requests_total{host="' .. host .. '",code="error"}']) -- the timeout
    assert.equal(1, v['moonwait_http_client_requests_total{host="127.0.0.1:1",code="error"}'])
    assert.equal(5, v['moonwait_http_client_request_duration_seconds_count{host="' .. host .. '"}'])
    assert(v['moonwait_http_client_request_duration_seconds_sum{host="' .. host .. '"}'] >= 0.09)
    m.end_input()
    assert.equal(0, (m.wait()))
  end)

  it("is scraped by a real Prometheus server", function()
    local d = prepare(nil, H.jsonl({ { id = 1 }, { id = 2 }, { id = 3 } }))
    local m = start(d, "--script script.lua --metrics 127.0.0.1:0")
    local prom, why = servers.prometheus("127.0.0.1:" .. m.port)
    if not prom then
      m.end_input()
      m.wait()
      error("a real Prometheus could not run here: " .. why)
    end
    local ans = H.wait_for(function()
      local a = prom.query("moonwait_records_in_total")
      return a:find('"value":%[[%d.]+,"3"%]') and a
    end, 30)
    local up = prom.query("up")
    prom.stop()
    m.end_input()
    assert.equal(0, (m.wait()))
    assert(ans, "Prometheus never had moonwait_records_in_total = 3: " .. prom.query("moonwait_records_in_total") ..
      " up: " .. up)
    assert.truthy(ans:find('"job":"moonwait"', 1, true))
  end)

  it("reports a Redis stream source's lag and pending entries (XINFO GROUPS)", function()
    local redis = servers.redis()
    local ok, err = pcall(function()
      -- 20 entries of 0.3 s, 2 at a time: about 3 s while some wait undelivered
      for i = 1, 20 do redis.cli(string.format("XADD in '*' data '{\"id\":%d,\"s\":0.3}'", i)) end
      local d = prepare(nil, "")
      local m = start(d, "--script script.lua --metrics 127.0.0.1:0 --capacity 2 --timeout 0",
        { input = redis.url("stream=in&group=g") })
      local lag = 'moonwait_source_lag{stream="in",group="g"}'
      local pend = 'moonwait_source_pending{stream="in",group="g"}'
      local seen, v = m.until_(function(v) return v[lag] and v[lag] > 0 and v[pend] and v[pend] > 0 end)
      assert(seen, "no lag while entries wait: " .. tostring(v and v[lag]))
      seen, v = m.until_(function(v) return v.moonwait_records_out_total == 20 and v[lag] == 0 and v[pend] == 0 end)
      assert(seen, "lag and pending never went to 0: " .. tostring(v and v[lag]) .. " " .. tostring(v and v[pend]))
      m.end_input()
      assert.equal(143, (m.wait()))
    end)
    redis.stop()
    assert(ok, err)
  end)
end)
