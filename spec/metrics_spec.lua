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
  os.execute("mkfifo " .. dir .. "/fifo")
  os.execute(string.format(
    "cd %s && { %s run --input fifo --output out %s 2>err & echo $! >pid; wait $!; echo $? >rc; } >/dev/null 2>&1 &",
    dir, H.cmd(""), args))
  local pid = H.wait_for(function() return (H.read(dir .. "/pid") or ""):match("%d+") end, 30)
  assert(pid, "moonwait did not start")
  -- (the writer's output away from busted's: it must not hold busted's pipes)
  os.execute(string.format("cd %s && { (cat in; exec sleep 300) >fifo & echo $! >wpid; } </dev/null >/dev/null 2>&1",
    dir))
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

local function setup(body, input)
  local d = H.tmpdir()
  H.script(d, body or HOLD)
  H.write(d .. "/in", input)
  return d
end

describe("--metrics", function()
  after_each(H.cleanup)

  it("counts the run: records in and out, outputs, the queue, and histograms at the end", function()
    -- ordered: record 1 sleeps 0.4 s, 2..5 finish at once and wait behind it
    local d = setup(nil, H.jsonl({ { id = 1, s = 0.4 }, { id = 2 }, { id = 3 }, { id = 4 }, { id = 5 } }))
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
    assert.equal(4, v['moonwait_hol_blocking_seconds_bucket{le="0.5"}'] - v['moonwait_hol_blocking_seconds_bucket{le="0.1"}'])
    assert(v.moonwait_record_duration_seconds_sum >= 0.4)
    assert.equal(5, v['moonwait_record_duration_seconds_bucket{le="+Inf"}'])
    m.end_input()
    local code, out = m.wait()
    assert.equal(0, code)
    assert.equal(5, #H.lines(out))
  end)

  it("observes no head-of-line blocking when every record leaves at once, and counts watermarks", function()
    local d = setup(nil, H.jsonl({ { id = 1 }, { id = 2 }, { ["$watermark"] = 5 }, { id = 3 } }))
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
    local d = setup(nil, H.jsonl({ { id = 1, s = 0.3 }, { ["$watermark"] = 5 }, { id = 2 }, { id = 3 } }))
    local m = start(d, "--script script.lua --metrics 127.0.0.1:0 --mode unordered")
    local ok, v = m.until_(function(v) return v.moonwait_records_out_total == 3 end)
    assert(ok)
    assert.equal(2, v.moonwait_hol_blocking_seconds_count) -- 2 and 3 waited for the watermark
    m.end_input()
    assert.equal(0, (m.wait()))

    d = setup(nil, H.jsonl({ { id = 1, k = "a", s = 0.3 }, { id = 2, k = "b" }, { id = 3, k = "a" } }))
    m = start(d, "--script script.lua --metrics 127.0.0.1:0 --mode keyed --key k")
    ok, v = m.until_(function(v) return v.moonwait_records_out_total == 3 end)
    assert(ok)
    assert.equal(1, v.moonwait_hol_blocking_seconds_count) -- only 3, behind 1 of its key
    m.end_input()
    assert.equal(0, (m.wait()))
  end)

  it("matches the --stats summary: retries, timeouts, skipped, dead letters, malformed lines", function()
    local d = setup([[
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
    local d = setup(nil, H.jsonl({ { id = 1 } }))
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
    local d = setup(nil, H.jsonl({ { id = 1 } }))
    local m = start(d, "--script script.lua --metrics 127.0.0.1:0")
    local fd = assert(T.connect(m.port))
    T.send(fd, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n\r\n" ..
      "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\nHEAD /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    local r, closed = T.read_all(fd, 5)
    T.close(fd)
    assert.is_true(closed)
    local statuses = {}
    for s in r:gmatch("HTTP/1%.1 (%d+)") do statuses[#statuses + 1] = tonumber(s) end
    assert.same({ 200, 404, 200, 200 }, statuses)
    m.end_input()
    assert.equal(0, (m.wait()))
  end)

  it("ends the run when the input ends, with a scraper still connected", function()
    local d = setup(nil, H.jsonl({ { id = 1 } }))
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

describe("--metrics refuses", function()
  after_each(H.cleanup)

  for _, bad in ipairs({ "abc", "127.0.0.1", "127.0.0.1:", "127.0.0.1:70000", "127.0.0.1:-1", "example.com:80",
                         "::1:9090", "[::1]", ":9090", "1.2.3:80" }) do
    it("'" .. bad .. "' at parse time, naming the flag", function()
      local d = setup(nil, H.jsonl({ { id = 1 } }))
      local r = H.run("run --script script.lua --input in --output out --metrics " .. H.q(bad), { dir = d })
      assert.equal(2, r.code)
      assert.truthy(r.err:find("--metrics", 1, true), r.err)
      assert.truthy(r.err:find("HOST:PORT", 1, true), r.err)
    end)
  end

  it("a pipeline key that is not a string, naming the key", function()
    local d = setup(nil, H.jsonl({ { id = 1 } }))
    H.write(d .. "/p.lua", "return { script = 'script.lua', input = 'in', output = 'out', metrics = 9090 }")
    local r = H.run("run p.lua", { dir = d })
    assert.equal(2, r.code)
    assert.truthy(r.err:find("metrics", 1, true), r.err)
  end)

  it("a port in use: exit 2 before any input is read, naming --metrics and the address", function()
    local d = setup(nil, H.jsonl({ { id = 1 } }))
    local m = start(d, "--script script.lua --metrics 127.0.0.1:0")
    local d2 = setup(nil, H.jsonl({ { id = 1 } }))
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
    local d = setup(nil, H.jsonl({ { id = 1 } }))
    local r = H.run("run --script script.lua --input in --output out --metrics 192.0.2.1:9090", { dir = d })
    assert.equal(2, r.code)
    assert.truthy(r.err:find("--metrics 192.0.2.1:9090: cannot listen on it", 1, true), r.err)
  end)

  it("takes the pipeline key, and [::1] with a port", function()
    local d = setup(nil, H.jsonl({ { id = 1 } }))
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
