-- Logs and progress (issue 15, items 2 and 3): --log-format text|json and
-- MOONWAIT_LOG_FORMAT, MOONWAIT_LOG_LEVEL for the host's messages too, JSON
-- lines for every kind of message (hostile ones included), --stats as JSON,
-- the live progress line on a terminal, and the summary's names and newest
-- generation.
local H = require("helpers")
local cjson = require("cjson")

-- Every line of s decoded as one JSON object; fails naming a line that is
-- not one.
local function json_lines(s)
  local t = {}
  for _, l in ipairs(H.lines(s)) do
    local ok, v = pcall(cjson.decode, l)
    assert(ok and type(v) == "table", "not a JSON object: " .. l:sub(1, 300))
    t[#t + 1] = v
  end
  return t
end

-- The first object whose msg matches the Lua pattern `pat` (or equals it
-- when plain).
local function find(objs, pat, plain)
  for _, o in ipairs(objs) do
    if type(o.msg) == "string" and o.msg:find(pat, 1, plain) then return o end
  end
end

local function all(objs, msg)
  local t = {}
  for _, o in ipairs(objs) do if o.msg == msg then t[#t + 1] = o end end
  return t
end

local RFC3339_MS = "^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$"

local function records(n)
  local t = {}
  for i = 1, n do t[i] = '{"id":' .. i .. '}' end
  return table.concat(t, "\n") .. "\n"
end

local start, wait_err = H.start_run, H.wait_err

describe("logs", function()
  after_each(H.cleanup)

  it("--log-format json: moonwait.log with file, line, seq and generation; a host warning; stats; "
    .. "the summary; the error that ends the run: one JSON object a line", function()
    local body = [[
local log = require "moonwait.log"
local time = require "moonwait.time"
log.info("loaded")
return { async_invoke = function(r, ctx)
  log.warn("record", r.id)
  time.sleep(0.05)
  if r.id == 30 then error("boom at 30") end
  return { r }
end }
]]
    local r = H.run_script(body, records(30), "--capacity 1 --stats --retry fixed:2:10 --log-format json")
    assert.equal(1, r.code, r.err)
    local objs = json_lines(r.err)
    for _, o in ipairs(objs) do
      assert.matches(RFC3339_MS, o.time)
      assert.truthy(({ debug = 1, info = 1, warn = 1, error = 1 })[o.level], o.level)
      assert.is_string(o.msg)
    end
    -- moonwait.log at load time: file and line, the generation, no seq
    local loaded = find(objs, "loaded", true)
    assert.same({ "info", 3, 1 }, { loaded.level, loaded.line, loaded.generation })
    assert.matches("script.lua$", loaded.file)
    assert.is_nil(loaded.seq)
    -- inside a record: its seq
    local rec7 = find(objs, "^record 7$")
    assert.same({ "warn", 5, 7, 1 }, { rec7.level, rec7.line, rec7.seq, rec7.generation })
    -- the host's warning: level warn, the message without "warning: "
    local w = find(objs, "a retry strategy is set", true)
    assert.equal("warn", w.level)
    assert.is_nil(w.msg:find("^warning"))
    -- the error that ended the run names the record: seq and generation too
    local e = find(objs, "boom at 30", true)
    assert.equal("error", e.level)
    assert.matches("^input line 30 %(record 30%) failed", e.msg)
    assert.same({ 30, 1 }, { e.seq, e.generation })
    -- progress and summary: numbers, the same names
    local st, sum = all(objs, "stats"), all(objs, "summary")
    assert.is_true(#st >= 1, r.err)
    assert.equal(1, #sum)
    sum = sum[1]
    assert.equal("info", sum.level)
    for _, k in ipairs({ "records_in", "records_out", "outputs", "watermarks", "attempts", "retries", "timeouts",
      "errors", "skipped", "dead_lettered", "malformed", "reloads", "reloads_rejected", "in_flight", "queued",
      "backoff", "generation", "rate" }) do
      assert.is_number(st[1][k], k)
      assert.is_number(sum[k], k)
    end
    for _, k in ipairs({ "elapsed_s", "cpu_s", "peak_rss_kb" }) do assert.is_number(sum[k], k) end
    assert.same({ 30, 29, 29, 1, 1 }, { sum.records_in, sum.records_out, sum.outputs, sum.errors, sum.generation })
    -- the input is a file: how far, of how much
    assert.equal(#records(30), st[1].input_size)
    assert.is_true(st[1].input_bytes > 0 and st[1].input_bytes <= st[1].input_size)
    assert.is_true(st[1].percent > 0 and st[1].percent <= 100)
    -- nothing else on stderr: every line was one of these objects
    assert.equal(#H.lines(r.err), #objs)
  end)

  it("hostile messages (NUL, invalid UTF-8, newlines, control characters, 2 MB) give valid JSON, one line each",
    function()
    local body = [[
local log = require "moonwait.log"
return { async_invoke = function(r)
  log.info("nul\0in the middle")
  log.info("bad \255\254 utf8 \226\130 cut \192\175 overlong")
  log.info("line1\nline2\r\n\ttab \"quoted\" back\\slash \1\27[31m")
  log.info("ok utf8 \226\130\172 \240\159\152\128 \226\128\168")
  log.warn(string.rep("x", 2 * 1024 * 1024))
  log.error(nil, true, 12.5, {})
  return { r }
end }
]]
    local r = H.run_script(body, '{"a":1}\n', "--log-format json")
    assert.equal(0, r.code, r.err)
    local objs = json_lines(r.err)
    assert.equal(6, #objs)
    assert.equal("nul\0in the middle", objs[1].msg)
    -- bytes that are not UTF-8 read as Latin-1 (U+00FF, U+00FE, ...)
    assert.equal("bad \195\191\195\190 utf8 \195\162\194\130 cut \195\128\194\175 overlong", objs[2].msg)
    assert.equal("line1\nline2\r\n\ttab \"quoted\" back\\slash \1\27[31m", objs[3].msg)
    assert.equal("ok utf8 \226\130\172 \240\159\152\128 \226\128\168", objs[4].msg)
    assert.equal(2 * 1024 * 1024, #objs[5].msg)
    assert.matches("^nil true 12.5 table: ", objs[6].msg)
    for _, o in ipairs(objs) do assert.equal(1, o.seq) end
  end)

  it("keeps the text format's lines as they were", function()
    local body = [[
local log = require "moonwait.log"
return { async_invoke = function(r)
  log.warn("hello", r.a)
  return { r }
end }
]]
    local r = H.run_script(body, '{"a":1}\n', "--retry fixed:2:10")
    assert.equal(0, r.code, r.err)
    assert.matches("\nmoonwait: [warn] " .. r.dir .. "/script.lua:3: seq=1: hello 1\n", "\n" .. r.err, 1, true)
    assert.matches("moonwait: warning: " .. r.dir .. "/script.lua: a retry strategy is set", r.err, 1, true)
    r = H.run_script(body, '{"a":1}\n', "--log-format text", { env = "export MOONWAIT_LOG_FORMAT=json; " })
    assert.matches("moonwait: [warn] ", r.err, 1, true)
  end)

  it("the flag over the pipeline's log_format over MOONWAIT_LOG_FORMAT; empty is unset", function()
    local d = H.tmpdir()
    H.script(d, [[
local log = require "moonwait.log"
return { async_invoke = function(r) log.info("hi") return { r } end }
]])
    H.write(d .. "/in", '{"a":1}\n')
    H.write(d .. "/pj.lua", 'return { script = "script.lua", input = "in", output = "out", log_format = "json" }')
    H.write(d .. "/pt.lua", 'return { script = "script.lua", input = "in", output = "out", log_format = "text" }')
    H.write(d .. "/p.lua", 'return { script = "script.lua", input = "in", output = "out" }')
    local function fmt(args, env)
      local r = H.run(args, { dir = d, env = env and ("export MOONWAIT_LOG_FORMAT='" .. env .. "'; ") or nil })
      assert.equal(0, r.code, r.err)
      if r.err:match("^{") then json_lines(r.err) return "json" end
      assert.matches("^moonwait: %[info%]", r.err)
      return "text"
    end
    assert.equal("text", fmt("run p.lua"))
    assert.equal("json", fmt("run p.lua", "json"))
    assert.equal("text", fmt("run p.lua", "text"))
    assert.equal("text", fmt("run p.lua", ""))
    assert.equal("text", fmt("run p.lua --log-format text", "json"))
    assert.equal("json", fmt("run p.lua --log-format=json", "text"))
    assert.equal("json", fmt("run pj.lua", "text"))
    assert.equal("text", fmt("run pt.lua", "json"))
    assert.equal("text", fmt("run pj.lua --log-format text"))
    assert.equal("json", fmt("run pt.lua --log-format json"))
  end)

  it("refuses bad values, naming the flag, the key or the variable", function()
    local d = H.tmpdir()
    H.script(d, [[return { async_invoke = function(r) return { r } end }]])
    for _, v in ipairs({ "yaml", "JSON", "", "json ", "0" }) do
      local r = H.run("run --script script.lua --log-format " .. H.q(v), { dir = d })
      assert.equal(2, r.code, v)
      assert.matches("option '--log-format': expected 'text' or 'json', got '" .. v .. "'", r.err, 1, true)
    end
    local r = H.run("run --script script.lua --log-format", { dir = d })
    assert.equal(2, r.code)
    assert.matches("--log-format", r.err, 1, true)
    for v, want in pairs({ ["5"] = "key 'log_format'", ['"xml"'] = "key 'log_format': expected 'text' or 'json'",
      ["true"] = "key 'log_format'", ["{}"] = "key 'log_format'" }) do
      H.write(d .. "/p.lua", 'return { script = "script.lua", log_format = ' .. v .. ' }')
      r = H.run("run p.lua", { dir = d })
      assert.equal(2, r.code, v)
      assert.matches(want, r.err, 1, true)
    end
    r = H.run("run --script script.lua", { dir = d, env = "export MOONWAIT_LOG_FORMAT=xml; " })
    assert.equal(2, r.code)
    assert.equal("moonwait: MOONWAIT_LOG_FORMAT: expected 'text' or 'json', got 'xml'\n", r.err)
    r = H.run("check script.lua", { dir = d, env = "export MOONWAIT_LOG_FORMAT=Json; " })
    assert.equal(2, r.code)
    assert.matches("MOONWAIT_LOG_FORMAT", r.err, 1, true)
    r = H.run("run --script script.lua", { dir = d, env = "export MOONWAIT_LOG_LEVEL=bogus; " })
    assert.equal(2, r.code)
    assert.equal("moonwait: MOONWAIT_LOG_LEVEL: expected 'debug', 'info', 'warn' or 'error', got 'bogus'\n", r.err)
    -- the level's error in the format already chosen
    r = H.run("run --script script.lua", { dir = d, env = "export MOONWAIT_LOG_FORMAT=json MOONWAIT_LOG_LEVEL=loud; " })
    assert.equal(2, r.code)
    local o = json_lines(r.err)[1]
    assert.same({ "error", "MOONWAIT_LOG_LEVEL: expected 'debug', 'info', 'warn' or 'error', got 'loud'" },
      { o.level, o.msg })
    -- a usage error after the environment chose JSON is JSON too
    r = H.run("run --script script.lua --capacity 0", { dir = d, env = "export MOONWAIT_LOG_FORMAT=json; " })
    assert.equal(2, r.code)
    assert.matches("--capacity", json_lines(r.err)[1].msg, 1, true)
  end)

  it("MOONWAIT_LOG_LEVEL filters the host's messages too; --stats lines stay", function()
    local body = [[
local log = require "moonwait.log"
return { async_invoke = function(r)
  log.info("I-line") log.warn("W-line")
  if r.a == 2 then error("E-record") end
  return { r }
end }
]]
    local input = '{"a":1}\n{"a":2}\n'
    local r = H.run_script(body, input, "--retry fixed:2:10 --stats", { env = "export MOONWAIT_LOG_LEVEL=error; " })
    assert.equal(1, r.code)
    assert.is_nil(r.err:find("W-line", 1, true))
    assert.is_nil(r.err:find("a retry strategy is set", 1, true)) -- a warning
    assert.truthy(r.err:find("E-record", 1, true)) -- the error that ends the run
    assert.truthy(r.err:find("moonwait: summary: ", 1, true))
    r = H.run_script(body, input, "--retry fixed:2:10", { env = "export MOONWAIT_LOG_LEVEL=warn; " })
    assert.is_nil(r.err:find("I-line", 1, true))
    assert.truthy(r.err:find("W-line", 1, true))
    assert.truthy(r.err:find("a retry strategy is set", 1, true))
  end)

  it("reload messages and the generations as JSON; the summary names the newest generation", function()
    local d = H.tmpdir()
    local function version(v, broken)
      return ([[
local log = require "moonwait.log"
log.info("loading v%d")
local M = {}
function M.async_invoke(r) log.info("v%d") return { { id = r.id, v = %d } } end
function M.open(ctx) if ctx.generation == 1 then io.stderr:write("READY\n") end end
%s
return M
]]):format(v, v, v, broken and "error('broken v" .. v .. "')" or "")
    end
    H.script(d, version(1))
    os.execute("mkfifo " .. d .. "/fifo")
    local pid, wait = start(d, "--script script.lua --input fifo --stats", "MOONWAIT_LOG_FORMAT=json")
    os.execute(string.format("cd %s && { (echo '{\"id\":1}'; exec sleep 300) >fifo & echo $! >wpid; }", d))
    wait_err(d, "READY")
    wait_err(d, '"msg":"v1"')
    for v = 2, 3 do
      H.write(d .. "/script.lua", version(v))
      os.execute("kill -HUP " .. pid)
      wait_err(d, "generation " .. v .. " loaded")
    end
    H.write(d .. "/script.lua", version(4, true))
    os.execute("kill -HUP " .. pid)
    wait_err(d, "reload rejected")
    local w = (H.read(d .. "/wpid") or ""):match("%d+")
    -- one more record for generation 3, then the end of the input
    os.execute("kill " .. w)
    local rc, _, err = wait()
    assert.equal(0, rc, err)
    local objs = {}
    for _, l in ipairs(H.lines(err)) do
      if l ~= "READY" then objs[#objs + 1] = assert(cjson.decode(l), l) end
    end
    local loaded = find(objs, "^reload: generation 3 loaded")
    assert.same({ "info", 3 }, { loaded.level, loaded.generation })
    local loading = find(objs, "as generation 2$")
    assert.equal(2, loading.generation)
    local rej = find(objs, "^reload rejected %(generation 4; generation 3 keeps running%)")
    assert.same({ "warn", 4 }, { rej.level, rej.generation })
    assert.matches("broken v4", rej.msg, 1, true)
    -- from the first line of its main chunk on, a generation's lines say which
    assert.equal(2, find(objs, "loading v2", true).generation)
    assert.equal(3, find(objs, "loading v3", true).generation)
    assert.equal(4, find(objs, "loading v4", true).generation)
    local v1 = find(objs, "^v1$")
    assert.same({ 1, 1 }, { v1.generation, v1.seq })
    local sum = all(objs, "summary")[1]
    assert.same({ 3, 2, 1 }, { sum.generation, sum.reloads, sum.reloads_rejected })
  end)

  it("on a terminal: one live line with percent and ETA, cleared before the summary", function()
    local d = H.tmpdir()
    H.script(d, [[
local time = require "moonwait.time"
local log = require "moonwait.log"
return { async_invoke = function(r)
  time.sleep(0.002)
  if r.id == 450 then log.info("three quarters") end
  return { r }
end }
]])
    H.write(d .. "/in", records(600))
    -- script(1) runs moonwait on a pseudo-terminal; its stdout is the terminal's output
    local cmd = string.format("cd %s && %s run --script script.lua --input in --output out --capacity 1 --stats",
      d, H.cmd(""))
    local code, tty = H.sh("script -qfec " .. H.q(cmd) .. " /dev/null")
    assert.equal(0, code, tty)
    assert.equal(600, #H.lines(H.read(d .. "/out")))
    assert.is_nil(tty:find("moonwait: stats:", 1, true))
    -- rewritten in place: "\r", erase the line, the text
    local live = {}
    for pct, eta, rest in tty:gmatch("\r\27%[Kmoonwait: ([%d.]+)%% ETA ([%d:-]+) ([^\r\n]*)") do
      live[#live + 1] = { tonumber(pct), eta, rest }
    end
    assert.is_true(#live >= 2, tty)
    for i, l in ipairs(live) do
      assert.is_true(l[1] > 0 and l[1] <= 100)
      if i > 1 then assert.is_true(l[1] >= live[i - 1][1]) end
      assert.matches("^rate=%d+/s in_flight=%d+ errors=0 records_out=%d+ generation=1$", l[3])
    end
    assert.matches("^%d+:%d%d$", live[#live][2])
    -- another message while the live line shows: over it, then the live line again
    assert.matches("\r\27%[Kmoonwait: %[info%] [^\n]*script.lua:5: seq=450: three quarters\r?\nmoonwait: [%d.]+%% ETA", tty)
    -- the live line is erased, and the summary is a line of its own
    assert.matches("\r\27%[Kmoonwait: summary: records_in=600 records_out=600 ", tty)
    assert.is_nil(tty:match("moonwait: summary:.*\27%["))
    assert.matches("moonwait: summary: [^\r\n]*\r?\n?$", tty) -- and the last thing on the terminal
  end)

  it("on a terminal, SIGINT: the message over the live line, the summary last, and no live line from a pipe",
    function()
    local d = H.tmpdir()
    H.script(d, [[
local time = require "moonwait.time"
return { async_invoke = function(r) time.sleep(0.01) return { r } end }
]])
    local cmd = string.format("cd %s && (i=0; while [ $i -lt 100000 ]; do echo '{\"a\":1}'; i=$((i+1)); done) | "
      .. "timeout --foreground --preserve-status -s INT 1.5 %s run --script script.lua --output out --capacity 1 --stats; echo rc=$?", d, H.cmd(""))
    local code, tty = H.sh("script -qfec " .. H.q(cmd) .. " /dev/null")
    assert.equal(0, code, tty)
    assert.matches("rc=1\r?\n", tty) -- (the first SIGINT without a checkpoint dir: 1)
    -- from a pipe the size is unknown: the live line has no percent
    assert.matches("\r\27%[Kmoonwait: rate=%d+/s in_flight=%d+ errors=0 records_out=%d+ generation=1", tty)
    assert.is_nil(tty:find("%% ETA"))
    assert.matches("\r\27%[Kmoonwait: interrupted by SIGINT after input line %d+[^\n]*\r?\nmoonwait: rate=", tty)
    assert.matches("\r\27%[Kmoonwait: summary: [^\r\n]*\r?\nrc=1", tty)
  end)

  it("the second signal's message, written from its handler, is a JSON line too", function()
    -- "2026-12-01T03:04:05.678Z" as seconds since the epoch, counted by hand
    -- (the handler converts the other way, without gmtime_r)
    local function epoch(t)
      local y, mo, d, h, mi, s = t:match("^(%d+)%-(%d+)%-(%d+)T(%d+):(%d+):(%d+)")
      y, mo, d = tonumber(y), tonumber(mo), tonumber(d)
      local days = 0
      for yy = 1970, y - 1 do days = days + ((yy % 4 == 0 and yy % 100 ~= 0 or yy % 400 == 0) and 366 or 365) end
      local mdays = { 31, (y % 4 == 0 and y % 100 ~= 0 or y % 400 == 0) and 29 or 28, 31, 30, 31, 30, 31, 31, 30, 31, 30 }
      for m = 1, mo - 1 do days = days + mdays[m] end
      return ((days + d - 1) * 24 + tonumber(h)) * 3600 + tonumber(mi) * 60 + tonumber(s)
    end
    for _, sig in ipairs({ "INT", "TERM" }) do
      local d = H.tmpdir()
      H.script(d, [[
local time = require "moonwait.time"
return { async_invoke = function(r) time.sleep(30) return { r } end }
]])
      H.write(d .. "/in", records(3))
      local pid, wait = start(d, "--script script.lua --input in --output out --log-format json")
      -- the first signal: it waits for the record in flight; the second ends it
      assert.truthy(H.wait_for(function() return H.exists("/proc/" .. pid) end, 5))
      os.execute("sleep 0.3; kill -" .. sig .. " " .. pid)
      wait_err(d, "interrupted by SIG" .. sig)
      os.execute("kill -" .. sig .. " " .. pid)
      local rc, _, err = wait()
      assert.equal(sig == "INT" and 130 or 143, rc, err)
      local objs = json_lines(err)
      local last = objs[#objs]
      assert.same({ "warn", "second SIG" .. sig .. ": exiting at once" }, { last.level, last.msg })
      assert.matches(RFC3339_MS, last.time)
      assert.is_true(math.abs(epoch(last.time) - os.time()) < 120, last.time)
      assert.is_true(math.abs(epoch(last.time) - epoch(objs[1].time)) < 60)
    end
  end)

  it("on a terminal with --log-format json, or on a pipe: lines, never rewritten", function()
    local d = H.tmpdir()
    H.script(d, [[
local time = require "moonwait.time"
return { async_invoke = function(r) time.sleep(0.003) return { r } end }
]])
    H.write(d .. "/in", records(500))
    local cmd = string.format("cd %s && %s run --script script.lua --input in --output out --capacity 1 --stats "
      .. "--log-format json 2>&1 | cat", d, H.cmd(""))
    local code, out = H.sh("script -qfec " .. H.q("cd " .. d .. " && " .. H.cmd("") ..
      " run --script script.lua --input in --output out --capacity 1 --stats --log-format json") .. " /dev/null")
    assert.equal(0, code, out)
    assert.is_nil(out:find("\27[", 1, true))
    local objs = json_lines((out:gsub("\r", "")))
    assert.is_true(#all(objs, "stats") >= 1, out)
    assert.equal(1, #all(objs, "summary"))
    -- a pipe, text: the per-second lines, with how far when the input is a file
    code, out = H.sh(cmd:gsub(" %-%-log%-format json", ""))
    assert.equal(0, code, out)
    assert.is_nil(out:find("\r", 1, true))
    assert.matches("moonwait: stats: records_in=%d+ .* input_bytes=%d+ input_size=" .. #records(500)
      .. " percent=[%d.]+ eta_s=%d+\n", out)
    -- from a pipe the size is not known: no percent
    code, out = H.sh(string.format("cd %s && cat in | %s run --script script.lua --output out --capacity 1 --stats 2>&1",
      d, H.cmd("")))
    assert.equal(0, code, out)
    assert.matches("moonwait: stats: records_in=", out, 1, true)
    assert.is_nil(out:find("percent=", 1, true))
  end)

  it("progress counts records waiting behind an earlier one as queued; the summary agrees with the last line",
    function()
    local body = [[
local time = require "moonwait.time"
return { async_invoke = function(r) if r.id == 1 then time.sleep(1.6) end return { r } end }
]]
    local r = H.run_script(body, records(8), "--stats --capacity 10 --log-format json")
    assert.equal(0, r.code, r.err)
    local objs = json_lines(r.err)
    local st, sum = all(objs, "stats"), all(objs, "summary")[1]
    assert.is_true(#st >= 1, r.err)
    -- record 1 holds up the 7 behind it (ordered mode)
    assert.same({ 8, 7, 0, 0 }, { st[1].in_flight, st[1].queued, st[1].records_out, st[1].backoff })
    for k, v in pairs(st[#st]) do
      if type(v) == "number" and k ~= "rate" and not k:match("^input") and k ~= "percent" and k ~= "eta_s" then
        assert.is_number(sum[k], k)
      end
    end
    assert.same({ 8, 8, 0, 0 }, { sum.records_in, sum.records_out, sum.in_flight, sum.queued })
  end)

  it("after a checkpoint restore: percent from where the input was, ETA from this run's speed", function()
    local d = H.tmpdir()
    H.script(d, [[
local time = require "moonwait.time"
return { async_invoke = function(r)
  if os.getenv("SLOW") then time.sleep(1) elseif r.id == 6 then time.sleep(100) end
  return { r }
end }
]])
    H.write(d .. "/in", records(10))
    local args = "--script script.lua --input in --output out --capacity 1 --checkpoint-dir cp --stats --log-format json"
    local pid, wait = start(d, args)
    assert.truthy(H.wait_for(function() return #H.lines(H.read(d .. "/out") or "") >= 5 end, 30))
    os.execute("kill -INT " .. pid)
    local rc, _, err = wait()
    assert.equal(130, rc, err)
    local code, _, err2 = H.sh(string.format("cd %s && SLOW=1 %s run %s", d, H.cmd(""), args))
    assert.equal(0, code, err2)
    assert.equal(10, #H.lines(H.read(d .. "/out")))
    local st = all(json_lines(err2), "stats")
    assert.is_true(#st >= 1, err2)
    -- it read on from record 6's end: at least 6 of the 10 records' bytes
    local six = #records(6)
    assert.is_true(st[1].input_bytes >= six and st[1].percent >= 100 * six / #records(10), err2)
    -- 4 records at 1 s each remain, about 1 read a second: seconds left
    -- (timed from what this run read; the bytes read before the restart,
    -- counted as this run's, would make it look 7 times as fast)
    local first
    for _, s in ipairs(st) do if s.eta_s and s.percent < 100 then first = first or s end end
    assert.truthy(first, err2)
    assert.is_true(first.eta_s >= 1.2, err2)
  end)

  it("moonwait check: its report on stdout names file:line; nothing but JSON on stderr in json format", function()
    local d = H.tmpdir()
    H.script(d, "local x = \nreturn {", "bad.lua")
    local r = H.run("check bad.lua", { dir = d })
    assert.equal(2, r.code)
    assert.matches("FAIL +it compiles: bad.lua:%d+: ", r.out)
    r = H.run("check bad.lua", { dir = d, env = "export MOONWAIT_LOG_FORMAT=json; " })
    assert.equal(2, r.code)
    assert.matches("FAIL +it compiles: bad.lua:%d+: ", r.out)
    for _, o in ipairs(json_lines(r.err)) do assert.is_string(o.level) end
  end)

  it("no fprintf(stderr, ...) in src/ outside util/log.c: every message goes through mw_log", function()
    local code, out = H.sh("grep -rn --include='*.c' --include='*.h' -E 'fprintf\\(stderr|perror\\(|fputs\\([^;]*stderr' src"
      .. " | grep -v '^src/util/log.c:' | grep -v 'fputs(usage, stderr)'")
    assert.equal(1, code, out) -- grep found nothing
    assert.equal("", out)
  end)
end)
