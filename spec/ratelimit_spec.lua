-- Rate limits (README: "Rate limits"): the pipeline's rate_limit /
-- --rate-limit, which pauses intake, and moonwait.limit in a script,
-- against a real nginx whose limit_req answers 429 beyond 50 requests/s
-- (spec/support/servers.lua: /rl/a, /rl/b, /rl/c, a zone each).
local H = require("helpers")
local FAIL_ONCE = require("support.scripts").FAIL_ONCE
local servers = require("support.servers")

local function recs(n, extra)
  local t = {}
  for i = 1, n do
    local r = { id = i }
    for k, v in pairs(extra or {}) do r[k] = v end
    t[i] = r
  end
  return H.jsonl(t)
end

local function summary(err)
  local s = {}
  local line = err:match("moonwait: summary: ([^\n]*)") or ""
  for k, v in line:gmatch("([%w_]+)=([%d%.]+)") do s[k] = tonumber(v) end
  return s
end

-- One GET per record; the status (and an error) go to the output.
local GET = [[
local http = require "moonwait.http"
return { async_invoke = function(r, ctx)
  local res, err = http.get(r.url)
  if not res then return nil, err end
  return { { id = r.id, status = res.status } }
end }
]]

local function statuses(out)
  local n = {}
  for _, o in ipairs(H.decode_lines(out)) do n[o.status] = (n[o.status] or 0) + 1 end
  return n
end

describe("rate limits", function()
  local nginx
  setup(function() nginx = servers.nginx() end)
  teardown(function() if nginx then nginx.stop() end end)
  after_each(H.cleanup)

  it("--rate-limit keeps nginx's limit_req from answering 429, and no record times out waiting for its token", function()
    -- 100 records at 45/s take over 2 s, far beyond the 1 s budget: the
    -- wait for a token is not charged, since a record is not read until
    -- its token is there
    local r = H.run_script(GET, recs(100, { url = nginx.url("/rl/a") }),
      "--rate-limit 45 --capacity 50 --timeout 1000 --stats")
    assert.equal(0, r.code, r.err)
    local n = statuses(r.output)
    assert.equal(100, n[200], r.output)
    assert.is_nil(n[429])
    local s = summary(r.err)
    assert.equal(0, s.timeouts)
    assert.equal(100, s.rate_tokens)
    -- 100 starts at 45/s with a burst of 1 take at least 99/45 s
    assert.is_true(s.elapsed_s >= 99 / 45 - 0.05, r.err)
  end)

  it("without a limit the same run gets 429s (the test above can fail)", function()
    if H.wrapper ~= "" then
      pending("under " .. H.wrapper .. " moonwait may be too slow to outrun nginx's 50 requests/s")
      return
    end
    local r = H.run_script(GET, recs(100, { url = nginx.url("/rl/b") }), "--capacity 50 --timeout 1000")
    assert.equal(0, r.code, r.err)
    local n = statuses(r.output)
    assert.is_true((n[429] or 0) > 0, r.output)
  end)

  it("moonwait.limit in a script keeps to nginx's limit; the wait is the record's", function()
    local r = H.run_script([[
local http = require "moonwait.http"
local lim = require("moonwait").limit.new{ name = "rl", rps = 45 }
return { async_invoke = function(r, ctx)
  local ok, err = lim:take()
  if not ok then return nil, err end
  local res, e = http.get(r.url)
  if not res then return nil, e end
  return { { id = r.id, status = res.status } }
end }
]], recs(100, { url = nginx.url("/rl/c") }), "--capacity 200 --timeout 10000 --stats")
    assert.equal(0, r.code, r.err)
    local n = statuses(r.output)
    assert.equal(100, n[200], r.output)
    assert.is_nil(n[429])
    assert.equal(0, summary(r.err).timeouts)
    assert.is_true(summary(r.err).elapsed_s >= 99 / 45 - 0.05, r.err)
  end)

  it("lim:take() says at once when no token can come before the record's deadline", function()
    local r = H.run_script([[
local lim = require("moonwait.limit").new{ name = "geo", rps = 10 }
return { async_invoke = function(r, ctx)
  local ok, err = lim:take()
  if not ok then return nil, err end
  return { r }
end }
]], recs(20), "--capacity 20 --timeout 450 --on-error dead-letter --dead-letter dl --stats")
    assert.equal(0, r.code, r.err)
    local s = summary(r.err)
    assert.equal(0, s.timeouts, r.err)
    local dl = H.decode_lines(H.read(r.dir .. "/dl") or "")
    -- about 5 pass (1 at once, then one per 100 ms before 450 ms); the rest
    -- are told at once, on their first and only attempt, not timed out
    assert.is_true(#dl >= 1 and #dl < 20, #dl .. " dead letters")
    assert.equal(20 - #dl, #H.lines(r.output))
    for _, d in ipairs(dl) do
      assert.matches("rate limit 'geo': no token before the record's deadline", d.error, 1, true)
      assert.equal(1, d.attempts)
      assert.is_false(d.timed_out)
      assert.is_true(d.elapsed_ms < 450, d.elapsed_ms)
    end
  end)

  it("retries take tokens too (the pipeline's limit counts attempts)", function()
    local r = H.run_script(FAIL_ONCE, recs(15), "--rate-limit 20 --retry fixed:2:0 --capacity 15 --timeout 20000 --stats")
    assert.equal(0, r.code, r.err)
    assert.equal(15, #H.lines(r.output))
    local s = summary(r.err)
    assert.equal(30, s.attempts)
    assert.equal(30, s.rate_tokens)
    assert.is_true(s.rate_gated > 0, r.err) -- retries waited for their tokens
    assert.is_true(s.elapsed_s >= 29 / 20 - 0.05, r.err)
  end)

  it("a retry whose back-off ended gets the next token before a new record (no retry starves)", function()
    -- 40 records whose first attempt fails, at 20 tokens/s: had new records
    -- taken every token while input lasted (2 s), the retries, waiting on
    -- their 1.5 s budgets, would time out
    local r = H.run_script(FAIL_ONCE, recs(40), "--rate-limit 20 --retry fixed:2:0 --capacity 40 --timeout 1500 --on-error skip --stats")
    assert.equal(0, r.code, r.err)
    local s = summary(r.err)
    assert.equal(0, s.timeouts, r.err)
    assert.equal(40, #H.lines(r.output))
    assert.equal(80, s.rate_tokens)
  end)

  it("watermarks, blank and malformed lines take no token (pipeline key form)", function()
    local d = H.tmpdir()
    H.script(d, "return { async_invoke = function(r) return { r } end }")
    H.write(d .. "/p.lua", "return { script = 'script.lua', rate_limit = { rps = 10, burst = 1 }, on_error = 'skip', stats = true }")
    local lines = {}
    for i = 1, 8 do
      lines[#lines + 1] = '{"id":' .. i .. '}'
      lines[#lines + 1] = '{"$watermark":' .. i .. '}'
      lines[#lines + 1] = ''
      if i % 2 == 0 then lines[#lines + 1] = '{"bad": ' end
    end
    local r = H.run("run p.lua", { dir = d, input = table.concat(lines, "\n") .. "\n" })
    assert.equal(0, r.code, r.err)
    assert.equal(16, #r.lines) -- 8 records, 8 watermarks
    local s = summary(r.err)
    assert.equal(8, s.rate_tokens)
    assert.equal(4, s.malformed)
    -- 8 starts at 10/s: at least 0.7 s; had the 20 other lines taken
    -- tokens it would be 2.7 s (not asserted: speed is not a property)
    assert.is_true(s.elapsed_s >= 0.65, r.err)
  end)

  it("refuses bad values for the flag and the key, naming them", function()
    local d = H.tmpdir()
    H.script(d, "return { async_invoke = function(r) return { r } end }")
    for _, v in ipairs({ "0", "-1", "abc", "5:0", "1e12", "nan", "5:1.5" }) do
      local r = H.run("run --script script.lua --rate-limit " .. H.q(v), { dir = d, input = "" })
      assert.equal(2, r.code, v)
      assert.matches("option '--rate-limit': expected RPS[:BURST]", r.err, 1, true)
      assert.matches("got '" .. v .. "'", r.err, 1, true)
    end
    for _, v in ipairs({ "{ rps = 0 }", "{ rps = 5, burst = 0 }", "{ burst = 5 }", "'x'", "{ rps = 1e300 }", "true" }) do
      H.write(d .. "/p.lua", "return { script = 'script.lua', rate_limit = " .. v .. " }")
      local r = H.run("run p.lua", { dir = d, input = "" })
      assert.equal(2, r.code, v)
      assert.matches("key 'rate_limit': expected", r.err, 1, true)
    end
  end)

  it("moonwait.limit.new refuses bad options, naming them", function()
    for opts, want in pairs({
      ["{ rps = 0 }"] = "'rps' must be a number above 0",
      ["{ rps = -3 }"] = "'rps' must be a number above 0",
      ["{ rps = 'x' }"] = "'rps' must be a number above 0",
      ["{ }"] = "'rps' is required",
      ["{ rps = 5, burst = 0 }"] = "'burst' must be an integer from 1",
      ["{ rps = 5, burst = 2.5 }"] = "'burst' must be an integer from 1",
      ["{ rps = 1e12 }"] = "'rps' must be a number above 0 and at most 10000000",
      ["{ rps = 5, rate = 3 }"] = "unknown option 'rate'",
      ["{ rps = 5, name = 7 }"] = "'name' must be a non-empty string",
    }) do
      local r = H.run_script("local l = require('moonwait.limit').new" .. opts ..
        "\nreturn { async_invoke = function(r) return { r } end }", "", "")
      assert.equal(2, r.code, opts)
      assert.matches(want, r.err, 1, true)
    end
    local r = H.run_script([[
local l = require('moonwait.limit').new{ rps = 5, burst = 2 }
return { async_invoke = function(r)
  local ok, err = pcall(l.take, l, 3)
  return { { ok = ok, err = err } }
end }
]], "{}\n", "")
    assert.equal(0, r.code, r.err)
    assert.matches("n: expected an integer from 1 to the burst, 2, got 3", r.output, 1, true)
  end)

  it("a child killed while it waits in lim:take() gives its reservation back", function()
    local r = H.run_script([[
local moonwait = require "moonwait"
local lim = moonwait.limit.new{ rps = 1, burst = 1 }
return { async_invoke = function(r)
  assert(lim:take())                       -- the one token
  local kids = {}
  for i = 1, 3 do kids[i] = moonwait.spawn(function() return lim:take() end) end
  moonwait.time.sleep(0.05)
  local before = lim:stats().tokens        -- three waiters in debt
  for i = 1, 3 do moonwait.kill(kids[i]) end
  local after = lim:stats().tokens
  return { { before = before, after = after, waits = lim:stats().waits } }
end }
]], "{}\n", "--timeout 5000")
    assert.equal(0, r.code, r.err)
    local o = H.json.decode(r.lines[1] or r.output)
    -- three tokens owed, then given back (what arrived meanwhile aside)
    assert.is_true(o.before < -2, r.output)
    assert.is_true(o.after - o.before > 2.9 and o.after - o.before < 3.5, r.output)
    assert.equal(3, o.waits)
  end)

  it("an unnamed limiter collected while a take waits on it is freed by that take, not before", function()
    -- `return lim:take()` is a tail call: while it waits, only the yielded
    -- C frame holds the handle, and the collector may take it. The killed
    -- waiter then gives its tokens back to its limiter: freed, that wrote
    -- into whatever reused the memory (here, with glibc's malloc, the next
    -- limiter's 63-byte name; ASan names the use after free)
    local r = H.run_script([[
local moonwait = require "moonwait"
local NAME = string.rep("n", 63)
return { async_invoke = function(r)
  local kid = moonwait.spawn(function()
    local lim = moonwait.limit.new{ rps = 2, burst = 1 }
    lim:take()
    return lim:take()
  end)
  moonwait.time.sleep(0.05)
  collectgarbage("collect"); collectgarbage("collect")
  local b = moonwait.limit.new{ name = NAME, rps = 1 }
  moonwait.kill(kid)
  return { { same = b:stats().name == NAME } }
end }
]], "{}\n", "--timeout 5000")
    assert.equal(0, r.code, r.err)
    assert.same({ { same = true } }, H.decode_lines(r.output))
  end)

  it("ends when the input ends, without waiting for a token to read the end", function()
    -- two records at one token per 4 s: the second starts at 4 s, and the
    -- end of the file needs no token (it took 8 s; at 0.001/s, 1000 s)
    local r = H.run_script("return { async_invoke = function(r) return { r } end }", recs(2),
      "--rate-limit 0.25 --stats", { timeout = 30 })
    assert.equal(0, r.code, r.err)
    assert.same({ { id = 1 }, { id = 2 } }, H.decode_lines(r.output))
    local s = summary(r.err)
    assert.is_true(s.elapsed_s >= 3.9 and s.elapsed_s < 6, r.err)
    r = H.run_script("return { async_invoke = function(r) return { r } end }", recs(1),
      "--rate-limit 0.001", { timeout = 10 })
    assert.equal(0, r.code, r.err)
    assert.same({ { id = 1 } }, H.decode_lines(r.output))
    -- the same through a pipe (stdin): the end is seen by a read the pump starts
    r = H.run("run --script " .. r.dir .. "/script.lua --rate-limit 0.001", { input = recs(1), timeout = 10 })
    assert.equal(0, r.code, r.err)
    assert.same({ { id = 1 } }, H.decode_lines(r.out))
  end)

  it("SIGTERM while intake is paused for a token ends the run cleanly", function()
    local d = H.tmpdir()
    H.script(d, "return { async_invoke = function(r) return { r } end }")
    H.write(d .. "/in", recs(10))
    os.execute(string.format("cd %s && { ( %s 2>err >out & echo $! >pid; wait $!; echo $? >rc ) & } >/dev/null 2>&1",
      d, H.cmd("run --script script.lua --input in --rate-limit 0.5")))
    assert.truthy(H.wait_for(function() return (H.read(d .. "/out") or "") ~= "" end, 20))
    os.execute("kill -TERM " .. H.read(d .. "/pid"))
    local rc = H.wait_for(function() return (H.read(d .. "/rc") or ""):match("%d+") end, 20)
    assert.equal("1", rc)
    assert.matches("interrupted by SIGTERM after input line 1", H.read(d .. "/err"), 1, true)
    assert.same({ { id = 1 } }, H.decode_lines(H.read(d .. "/out")))
  end)

  it("a restore from a checkpoint after kill -9 gates the restored records too", function()
    local d = H.tmpdir()
    H.script(d, [[
local time = require "moonwait.time"
return { async_invoke = function(r) time.sleep(0.4) return { r } end }
]])
    H.write(d .. "/in", recs(30))
    local args = "run --script script.lua --input in --output out --capacity 6 --timeout 20000 " ..
      "--rate-limit 20:1 --checkpoint-dir cp --checkpoint-interval 50 --stats"
    os.execute(string.format("cd %s && { %s 2>log & echo $! >pid; }", d, H.cmd(args)))
    assert.truthy(H.wait_for(function()
      local c = H.read(d .. "/cp/checkpoint") or ""
      return select(2, c:gsub("\nR ", "")) >= 4 and (H.read(d .. "/out") or "") ~= ""
    end, 30))
    H.kill9(d)
    local code, _, err = H.sh(string.format("cd %s && %s", d, H.cmd(args)))
    assert.equal(0, code, err)
    local out = H.decode_lines(H.read(d .. "/out"))
    assert.equal(30, #out)
    for i, o in ipairs(out) do assert.equal(i, o.id) end
    -- the stored records did not all start at once: the limit put some off
    assert.is_true(summary(err).rate_gated > 0, err)
  end)

  it("a hot reload keeps a named limiter's state, and its newest options win", function()
    local d = H.tmpdir()
    local V = [[
local lim = require("moonwait.limit").new{ name = "geo", rps = RPS, burst = 1 }
return { async_invoke = function(r)
  assert(lim:take())
  local s = lim:stats()
  return { { id = r.id, v = VER, taken = s.taken, rps = s.rps } }
end }
]]
    H.script(d, (V:gsub("RPS", "5"):gsub("VER", "1")))
    assert.is_true(os.execute("mkfifo " .. H.q(d .. "/fifo")) == 0)
    os.execute(string.format(
      "cd %s && { ( %s 2>err >out <fifo & echo $! >pid; wait $!; echo $? >rc ) & } >/dev/null 2>&1",
      d, H.cmd("run --script script.lua --input - --capacity 1")))
    local fifo = io.open(d .. "/fifo", "w")
    fifo:setvbuf("no")
    for i = 1, 3 do fifo:write('{"id":' .. i .. '}\n') end
    assert.truthy(H.wait_for(function() return #H.lines(H.read(d .. "/out") or "") == 3 end, 20))
    H.script(d, (V:gsub("RPS", "200"):gsub("VER", "2")))
    os.execute("kill -HUP " .. H.read(d .. "/pid"))
    assert.truthy(H.wait_for(function() return (H.read(d .. "/err") or ""):find("generation 2 loaded", 1, true) end, 20))
    for i = 4, 6 do fifo:write('{"id":' .. i .. '}\n') end
    fifo:close()
    assert.truthy(H.wait_for(function() return H.read(d .. "/rc") end, 20))
    local out = H.decode_lines(H.read(d .. "/out"))
    assert.equal(6, #out)
    for i, o in ipairs(out) do
      assert.equal(i, o.taken) -- one count across both generations
      assert.equal(i <= 3 and 1 or 2, o.v)
      assert.equal(i <= 3 and 5 or 200, o.rps)
    end
  end)

  describe("with a Redis Streams input", function()
    local redis
    local ST = require("support.streams")
    setup(function() redis = servers.redis() end)
    teardown(function()
      ST.close(redis)
      redis.stop()
    end)

    it("fetches no further ahead than the tokens there, and processes every entry once", function()
      ST.fill(redis, "in", 30)
      -- each record asks Redis how many entries the group has handed out
      -- and not acked: with a broker that fetched up to the capacity, the
      -- first record would see all 30
      local body = ([[
local redis = require "moonwait.redis"
return { async_invoke = function(r)
  local red = assert(redis.connect("127.0.0.1", PORT))
  local p = assert(red:xpending("in", "g"))
  red:set_keepalive()
  return { { id = r.id, pending = tonumber(p[1]) } }
end }
]]):gsub("PORT", tostring(redis.port))
      local r = H.run_script(body, "", "--rate-limit 10 --capacity 100 --input " ..
        H.q(redis.url("stream=in&group=g&until=empty")))
      assert.equal(0, r.code, r.err)
      local out = H.decode_lines(r.output)
      assert.equal(30, #out)
      local seen, most = {}, 0
      for _, o in ipairs(out) do
        assert.is_nil(seen[o.id]); seen[o.id] = true
        most = math.max(most, o.pending)
      end
      assert.is_true(most <= 4, "up to " .. most .. " entries fetched ahead")
      assert.equal(0, (ST.pending(redis, "in", "g")))
    end)
  end)
end)
