-- Adaptive capacity (issue 14, part 4): the in-flight limit follows a real
-- nginx that answers 503 past 20 requests in flight, overload signals
-- from the script (ctx.overloaded(), in a child too), record timeouts;
-- min and max hold; bad settings are named; checkpoints and hot reload.
-- Behaviour only (counts of 503s, the limit --stats reports), no speed.
local H = require("helpers")
local servers = require("support.servers")

-- Every `capacity_limit=N` --stats printed (progress lines and the summary), in order.
local function limits(err)
  local t = {}
  for n in err:gmatch(" capacity_limit=(%d+)") do t[#t + 1] = tonumber(n) end
  return t
end
local function summary_limit(err)
  return tonumber(err:match("summary:.* capacity_limit=(%d+)"))
end

local function records(n, extra)
  local b = {}
  for i = 1, n do b[i] = ('{"id":%d%s}'):format(i, extra and extra(i) or "") end
  return table.concat(b, "\n") .. "\n"
end

-- One GET per record; the output says what the service answered.
local HTTP_SCRIPT = [[
local http = require "moonwait.http"
local M = {}
function M.async_invoke(r, ctx)
  local res, err = http.get(URL)
  if not res then error(err) end
  return { { id = r.id, status = res.status } }
end
return M
]]

describe("adaptive capacity", function()
  local nginx
  setup(function() nginx = servers.nginx() end)
  teardown(function() if nginx then nginx.stop() end H.cleanup() end)

  local function run_http(args, n)
    local body = HTTP_SCRIPT:gsub("URL", ("%q"):format(nginx.url("/ac20")))
    local r = H.run_script(body, records(n), "--mode unordered --stats " .. args, { timeout = 120 })
    assert.equal(0, r.code, r.err)
    local st = {}
    for _, o in ipairs(H.decode_lines(r.output)) do st[o.status] = (st[o.status] or 0) + 1 end
    r.ok, r.busy = st[200] or 0, st[503] or 0
    assert.equal(n, r.ok + r.busy, "every record has one output")
    return r
  end

  it("converges near a service that answers 503 past 20 in flight, with few 503s next to a fixed 500", function()
    local n = 2000
    local a = run_http("--capacity 1..500", n)
    local lim = summary_limit(a.err)
    assert.truthy(lim, a.err)
    assert.is_true(lim >= 5 and lim <= 60, "final limit " .. lim .. " not within 5..60 (around 20)")
    local f = run_http("--capacity 500", n)
    assert.is_nil(summary_limit(f.err)) -- a fixed capacity shows no limit
    -- the fixed capacity answers most records with 503; the adaptive one few
    assert.is_true(f.busy > n / 2, "fixed 500: only " .. f.busy .. " 503s")
    assert.is_true(a.busy * 5 < f.busy, ("adaptive %d 503s vs fixed %d"):format(a.busy, f.busy))
    assert.is_true(a.busy < n / 10, "adaptive: " .. a.busy .. " 503s of " .. n)
  end)

  -- 1,500 records with a watermark line after every 100th; each record's
  -- GET may be answered 503 (the limit moves all along).
  local function with_watermarks()
    local b = {}
    for i = 1, 1500 do
      b[#b + 1] = ('{"id":%d,"ts":%d}'):format(i, i)
      if i % 100 == 0 then b[#b + 1] = ('{"$watermark":%d}'):format(i) end
    end
    return table.concat(b, "\n") .. "\n"
  end
  local WM_SCRIPT = [[
local http = require "moonwait.http"
return { async_invoke = function(r)
  local res, err = http.get(URL)
  if not res then error(err) end
  return { { id = r.id } }
end }
]]

  it("keeps order and watermarks in both modes while the limit moves", function()
    local body = WM_SCRIPT:gsub("URL", ("%q"):format(nginx.url("/ac20")))
    local input = with_watermarks()
    local a = H.run_script(body, input, "--mode ordered --stats --capacity 1..500", { timeout = 120 })
    assert.equal(0, a.code, a.err)
    local f = H.run_script(body, input, "--mode ordered --capacity 20", { timeout = 120 })
    assert.equal(0, f.code, f.err)
    assert.equal(f.output, a.output) -- ordered: the same lines in the same order
    local u = H.run_script(body, input, "--mode unordered --stats --capacity 1..500", { timeout = 120 })
    assert.equal(0, u.code, u.err)
    local wms, n = 0, 0
    for _, o in ipairs(H.decode_lines(u.output)) do
      if o["$watermark"] then
        wms = wms + 1
        assert.equal(wms * 100, o["$watermark"])
      else
        n = n + 1
        assert.equal(math.floor((o.id - 1) / 100), wms, "record " .. o.id .. " crossed a watermark")
      end
    end
    assert.equal(1500, n)
    assert.equal(15, wms)
  end)

  it("retries of 503 answers (a retry predicate) lower it too", function()
    local body = ([[
local http = require "moonwait.http"
local M = {}
M.retry_on_result = function(out) return out[1].status == 503 end
function M.async_invoke(r, ctx)
  local res, err = http.get(%q)
  if not res then error(err) end
  return { { id = r.id, status = res.status, attempt = ctx.attempt } }
end
return M
]]):format(nginx.url("/ac20"))
    local r = H.run_script(body, records(1500), "--mode unordered --stats --capacity 1..500 --retry fixed:5:20",
      { timeout = 120 })
    assert.equal(0, r.code, r.err)
    local lim = summary_limit(r.err)
    assert.is_true(lim >= 5 and lim <= 60, "final limit " .. lim)
    local busy = select(2, r.output:gsub('"status":503', ""))
    assert.is_true(busy < 50, busy .. " records still 503 after 5 attempts")
  end)

  it("never goes below min (the pipeline file's table form)", function()
    local body = HTTP_SCRIPT:gsub("URL", ("%q"):format(nginx.url("/ac20")))
    local d = H.tmpdir()
    H.script(d, body)
    H.write(d .. "/in", records(1500))
    H.write(d .. "/p.lua", [[return { script = "script.lua", input = "in", output = "out", mode = "unordered",
      stats = true, capacity = { min = 30, max = 200, adaptive = true } }]])
    local r = H.run("run p.lua", { dir = d, timeout = 120 })
    assert.equal(0, r.code, r.err)
    local ls = limits(r.err)
    assert.is_true(#ls >= 1, r.err)
    for _, l in ipairs(ls) do assert.is_true(l >= 30 and l <= 200, "limit " .. l) end
    assert.matches("capacity_min=30 capacity_max=200", r.err, 1, true)
    -- past 20, the service rejects: at 30 and up there are 503s, and the
    -- limit sits at its min (stays within 1.5x of it)
    assert.is_true(summary_limit(r.err) <= 45, r.err)
  end)

  -- Records sleep 10 ms; from record `from` on each says ctx.overloaded()
  -- (in a child with `child`): the limit falls from max to min.
  local function signal_script(child)
    return ([[
local time = require "moonwait.time"
local moonwait = require "moonwait"
local M = {}
function M.async_invoke(r, ctx)
  time.sleep(0.01)
  if r.busy then
    if %s then
      local k = moonwait.spawn(function() time.sleep(0.001); ctx.overloaded() end)
      moonwait.wait(k)
    else
      ctx.overloaded()
    end
  end
  return { r }
end
return M
]]):format(child and "true" or "false")
  end

  for _, child in ipairs({ false, true }) do
    it("ctx.overloaded() lowers it" .. (child and " (called in a spawned child)" or ""), function()
      local input = records(3000, function(i) return i > 2000 and ',"busy":true' or "" end)
      local r = H.run_script(signal_script(child), input, "--mode unordered --stats --capacity 2..64")
      assert.equal(0, r.code, r.err)
      assert.equal(3000, #H.lines(r.output))
      assert.equal(2, summary_limit(r.err), r.err)
      -- and without the signals it stays at max
      r = H.run_script(signal_script(child), records(3000), "--mode unordered --stats --capacity 2..64")
      assert.equal(64, summary_limit(r.err), r.err)
    end)
  end

  it("ctx.overloaded() in batch_invoke lowers it (the batch's records count it)", function()
    local script = [[
local time = require "moonwait.time"
local M = {}
function M.batch_invoke(records, ctxs)
  time.sleep(0.01)
  local out = {}
  for i, r in ipairs(records) do
    if r.busy then ctxs[i].overloaded() end
    out[i] = { r }
  end
  return out
end
return M
]]
    local input = records(3000, function(i) return i > 2000 and ',"busy":true' or "" end)
    local r = H.run_script(script, input, "--mode unordered --stats --capacity 2..64 --batch-size 4")
    assert.equal(0, r.code, r.err)
    assert.equal(3000, #H.lines(r.output))
    assert.equal(2, summary_limit(r.err), r.err)
    r = H.run_script(script, records(3000), "--mode unordered --stats --capacity 2..64 --batch-size 4")
    assert.equal(64, summary_limit(r.err), r.err)
  end)

  it("ctx.overloaded() outside an attempt raises, naming it", function()
    local r = H.run_script([[
local M = {}
function M.async_invoke(r, ctx) return { r } end
function M.on_timeout(r, ctx) ctx.overloaded() end
return M
]], records(1), "--capacity 1..4")
    assert.equal(0, r.code, r.err)
    r = H.run_script([[
local time = require "moonwait.time"
local M = {}
function M.async_invoke(r, ctx) time.sleep(1) return { r } end
function M.on_timeout(r, ctx) ctx.overloaded() return { r } end
return M
]], records(1), "--capacity 1..4 --timeout 50")
    assert.equal(1, r.code)
    assert.matches("ctx.overloaded can only be called while an attempt runs", r.err, 1, true)
  end)

  it("record timeouts lower it", function()
    -- 1000 quick records grow the limit to max; then every record hangs
    -- past its 100 ms timeout (on_timeout keeps it)
    local input = records(1300, function(i) return i > 1000 and ',"hang":true' or "" end)
    local r = H.run_script([[
local time = require "moonwait.time"
local M = {}
function M.async_invoke(r, ctx) time.sleep(r.hang and 5 or 0.005) return { r } end
function M.on_timeout(r, ctx) r.timed_out = true return { r } end
return M
]], input, "--mode unordered --stats --capacity 3..64 --timeout 100")
    assert.equal(0, r.code, r.err)
    assert.equal(1300, #H.lines(r.output))
    assert.matches("timeouts=300", r.err, 1, true)
    assert.equal(3, summary_limit(r.err), r.err)
  end)

  it("an idle pipeline does not grow the limit", function()
    -- one record at a time (a slow producer): the limit is never used
    local d = H.tmpdir()
    H.script(d, "return { async_invoke = function(r) return { r } end }")
    local r = H.run("run --script script.lua --stats --capacity 4..500", {
      dir = d, input = records(1) })
    assert.equal(0, r.code, r.err)
    assert.equal(4, summary_limit(r.err))
  end)

  it("refuses bad settings, naming the flag or key", function()
    local d = H.tmpdir()
    H.script(d, "return { async_invoke = function(r) return { r } end }")
    local cases = {
      { "--capacity 0..10", "option '--capacity': adaptive capacity's min must be at least 1, got '0..10'" },
      { "--capacity 50..10", "option '--capacity': adaptive capacity's min (50) is above its max (10)" },
      { "--capacity 8..", "option '--capacity': expected MIN..MAX with integers from 1 to 10000000" },
      { "--capacity 8..99999999", "option '--capacity': expected MIN..MAX with integers from 1 to 10000000" },
      { "--capacity -1..5", "option '--capacity': expected MIN..MAX" },
    }
    for _, c in ipairs(cases) do
      local r = H.run("run --script script.lua " .. c[1], { dir = d })
      assert.equal(2, r.code, c[1])
      assert.matches(c[2], r.err, 1, true)
    end
    local files = {
      { "{ min = 8, adaptive = true }", "key 'capacity': adaptive capacity needs max" },
      { "{ min = 9, max = 3, adaptive = true }", "key 'capacity': adaptive capacity's min (9) is above its max (3)" },
      { "{ min = 8, max = 30 }", "key 'capacity': a table is for adaptive capacity: say adaptive = true" },
      { "{ min = 8, max = 30, adaptive = true, start = 9 }", "got key 'start' (a number)" },
      { "'8..30'", "key 'capacity': expected an integer or a table { min =, max =, adaptive = true }, got string" },
    }
    for _, f in ipairs(files) do
      H.write(d .. "/p.lua", "return { script = 'script.lua', capacity = " .. f[1] .. " }")
      local r = H.run("run p.lua", { dir = d })
      assert.equal(2, r.code, f[1])
      assert.matches(f[2], r.err, 1, true)
    end
  end)

  it("restores from a checkpoint after kill -9, every record once", function()
    local d = H.tmpdir()
    H.script(d, [[
local time = require "moonwait.time"
return { async_invoke = function(r) time.sleep(0.05) return { r } end }
]])
    H.write(d .. "/in", records(3000))
    local args = "run --script script.lua --input in --output out --mode unordered --capacity 2..64 " ..
      "--checkpoint-dir cp --checkpoint-interval 50 --stats"
    os.execute(string.format("cd %s && { ( %s 2>log & echo $! >pid; wait $!; echo $? >rc ) & } >/dev/null 2>&1",
      d, H.cmd(args)))
    assert.truthy(H.wait_for(function() return (H.read(d .. "/pid") or ""):match("%d+") end, 10))
    assert.truthy(H.wait_for(function() return #H.lines(H.read(d .. "/out") or "") >= 800 end, 60))
    os.execute("kill -9 $(cat " .. d .. "/pid) 2>/dev/null")
    assert.truthy(H.wait_for(function() return H.read(d .. "/rc") end, 30))
    local r = H.run(args, { dir = d, timeout = 120 })
    assert.equal(0, r.code, r.err)
    local seen, n = {}, 0
    for _, o in ipairs(H.decode_lines(H.read(d .. "/out"))) do
      assert.is_nil(seen[o.id], "record " .. o.id .. " twice")
      seen[o.id] = true
      n = n + 1
    end
    assert.equal(3000, n)
    assert.is_true(summary_limit(r.err) >= 2 and summary_limit(r.err) <= 64)
  end)

  it("keeps its limit across a hot reload (SIGHUP)", function()
    -- records take 300 ms: slow start from 1 to 64 takes ~7 windows (2 s),
    -- so a limit started afresh by the reload would show far below 64
    local d = H.tmpdir()
    H.script(d, [[
local time = require "moonwait.time"
return { async_invoke = function(r) time.sleep(0.3) return { r } end }
]])
    H.write(d .. "/in", records(1500))
    os.execute(string.format("cd %s && { ( %s 2>log & echo $! >pid; wait $!; echo $? >rc ) & } >/dev/null 2>&1",
      d, H.cmd("run --script script.lua --input in --output out --mode unordered --stats --capacity 1..64")))
    assert.truthy(H.wait_for(function() return (H.read(d .. "/pid") or ""):match("%d+") end, 10))
    assert.truthy(H.wait_for(function() return (H.read(d .. "/log") or ""):find("limit=64 ", 1, true) end, 30),
      H.read(d .. "/log"))
    H.script(d, [[
local time = require "moonwait.time"
return { async_invoke = function(r) time.sleep(0.3) r.gen2 = true return { r } end }
]])
    os.execute("kill -HUP $(cat " .. d .. "/pid)")
    local line
    assert.truthy(H.wait_for(function()
      line = (H.read(d .. "/log") or ""):match("stats:[^\n]*generation=2[^\n]*\n")
      return line
    end, 30), H.read(d .. "/log"))
    assert.matches(" capacity_limit=64 ", line, 1, true)
    assert.truthy(H.wait_for(function() return H.read(d .. "/rc") end, 60))
    assert.equal("0", H.read(d .. "/rc"):match("%d+"), H.read(d .. "/log"))
    assert.equal(1500, #H.lines(H.read(d .. "/out")))
  end)
end)
