-- The command line and the pipeline file: settings, overrides, and errors
-- that name the flag or key.
local H = require("helpers")

-- The option table's rows, read from the source (not from --help): flag,
-- pipeline key (or nil), value name (or nil for a bare flag).
local ROOT = debug.getinfo(1, "S").source:match("^@(.*)/spec/[^/]*$") or "."
local function table_rows()
  local src = H.read(ROOT .. "/src/app/options.c")
  local body = src:match("static const option settings%[%] = {(.-)\n};")
  local rows = {}
  for flag, key, arg in body:gmatch('{%s*"([%w%-]+)",%s*([%w_"]+),%s*OPTION_[%w_]+,%s*[%w_]+,%s*([^,]+),') do
    rows[#rows + 1] = { flag = flag, key = key ~= "NULL" and key:gsub('"', "") or nil,
                        arg = arg ~= "NULL" and arg:gsub('"', "") or nil }
  end
  local _, n = body:gsub('\n%s*{%s*"', "")
  assert(n == #rows, "read " .. #rows .. " of the table's " .. n .. " rows from options.c")
  return rows
end

local PASS = [[
local M = {}
function M.async_invoke(r, ctx) return { r } end
return M
]]

describe("moonwait CLI", function()
  after_each(H.cleanup)

  it("prints help and version", function()
    local r = H.run("--help")
    assert.equal(0, r.code)
    assert.matches("moonwait run %[PIPELINE.lua%]", r.out)
    r = H.run("--version")
    assert.equal(0, r.code)
    assert.matches("^moonwait %d+%.%d+%.%d+", r.out)
  end)

  it("--help lists every flag of the option table with its value name and pipeline key", function()
    local rows = table_rows()
    assert.is_true(#rows >= 24, "rows read from options.c: " .. #rows)
    local r = H.run("--help")
    assert.equal(0, r.code)
    for _, row in ipairs(rows) do
      local form = "\n  --" .. row.flag .. (row.arg and " " .. row.arg or "")
      local at = r.out:find(form, 1, true)
      assert.is_truthy(at, "--help lacks " .. form)
      local line = r.out:match("[^\n]*", at + 1)
      if row.key then assert.equal(" " .. row.key, line:sub(-#row.key - 1), line) end
      -- and a help text under it
      assert.matches("^\n      %S", r.out:sub(at + 1 + #line))
    end
    for _, part in ipairs({ "moonwait check SCRIPT.lua [PIPELINE.lua]", "exit status:", "environment:",
                            "MOONWAIT_LUA_DIR", "130, 143" }) do
      assert.matches(part, r.out, 1, true)
    end
    -- the same text for `help` alone and `run --help`; on stderr with exit 2 for no arguments
    assert.equal(r.out, H.run("help").out)
    assert.equal(r.out, H.run("run --help").out)
    local none = H.run("")
    assert.equal(2, none.code)
    assert.equal(r.out, none.err)
  end)

  it("help FLAG explains one setting: flag, value, pipeline key, default, help", function()
    local r = H.run("help capacity")
    assert.equal(0, r.code, r.err)
    assert.equal([[
--capacity N|MIN..MAX
  pipeline key: capacity (an integer or a table { min =, max =, adaptive = true })
  default: 100
]], r.out:match("^.-\n.-\n.-\n"))
    assert.matches("Most records in flight at once", r.out, 1, true)
    assert.matches('README "Adaptive capacity"', r.out, 1, true)
    assert.equal(r.out, H.run("help --capacity").out)
    r = H.run("help timeout_ms")   -- by its pipeline key
    assert.equal(0, r.code)
    assert.matches("^%-%-timeout MS\n  pipeline key: timeout_ms %(an integer%)\n  default: 10000\n", r.out)
    r = H.run("help stats")        -- a bare flag
    assert.matches("^%-%-stats\n", r.out)
    r = H.run("help batch-wait")   -- no key of its own
    assert.matches("pipeline key: none of its own", r.out, 1, true)
    assert.matches("batch.max_wait_ms", r.out, 1, true)
    -- a field of a table key, as the README's table writes it (regression: unknown setting)
    for field, flag in pairs({ ["batch.max_wait_ms"] = "batch-wait", ["batch.key"] = "batch-key",
                               ["batch.max_size"] = "batch-size", ["checkpoint.interval_ms"] = "checkpoint-interval",
                               ["checkpoint.dir"] = "checkpoint-dir", ["rate_limit.rps"] = "rate-limit",
                               ["capacity.min"] = "capacity" }) do
      r = H.run("help " .. field)
      assert.equal(0, r.code, field .. ": " .. r.err)
      assert.matches("^%-%-" .. flag:gsub("%-", "%%-") .. " ", r.out)
    end
    assert.equal(2, H.run("help mode.x").code)   -- mode is not a table
    -- an environment variable --help lists (regression: unknown setting)
    for _, var in ipairs({ "MOONWAIT_LOG_FORMAT", "MOONWAIT_LOG_LEVEL", "MOONWAIT_LUA_DIR" }) do
      r = H.run("help " .. var)
      assert.equal(0, r.code, var)
      assert.matches("^" .. var .. " %(environment%)\n  %S", r.out)
    end
    r = H.run("help check")        -- a command
    assert.matches("^moonwait check SCRIPT.lua %[PIPELINE.lua%]\n", r.out)
    for _, row in ipairs(table_rows()) do
      r = H.run("help " .. row.flag)
      assert.equal(0, r.code, row.flag)
      assert.matches("--" .. row.flag, r.out, 1, true)
    end
  end)

  it("help with an unknown name says so, suggests the nearest setting, exits 2", function()
    local r = H.run("help --capcity")
    assert.equal(2, r.code)
    assert.equal("", r.out)
    assert.equal("moonwait: unknown setting '--capcity' (did you mean '--capacity'? see moonwait --help)\n", r.err)
    r = H.run("help timeout-ms")
    assert.equal(2, r.code)
    assert.matches("did you mean '--timeout'?", r.err, 1, true)
    r = H.run("help frobnicate")
    assert.equal(2, r.code)
    assert.equal("moonwait: unknown setting 'frobnicate' (see moonwait --help)\n", r.err)
    r = H.run("help ''")
    assert.equal(2, r.code)
    r = H.run("help capacity timeout")
    assert.equal(2, r.code)
    assert.matches("usage: moonwait help", r.err, 1, true)
  end)

  it("the man page renders without warnings and lists every flag", function()
    local d = H.tmpdir()
    local code = H.sh(H.cmd("help --man") .. " >" .. H.q(d .. "/moonwait.1"))
    assert.equal(0, code)
    local roff = H.read(d .. "/moonwait.1")
    assert.matches("^%.TH MOONWAIT 1 ", roff)
    local c, _, warn = H.sh("groff -man -Tutf8 -ww -z " .. H.q(d .. "/moonwait.1"))
    assert.equal(0, c)
    assert.equal("", warn)
    local c2, page, err2 = H.sh("MANWIDTH=100 man --warnings -l " .. H.q(d .. "/moonwait.1"))
    assert.equal(0, c2, err2)
    assert.equal("", err2)
    for _, row in ipairs(table_rows()) do
      assert.matches("--" .. row.flag .. (row.arg and " " .. row.arg or ""), page, 1, true)
      if row.key then assert.matches("Pipeline key: " .. row.key, page, 1, true) end
    end
    for _, part in ipairs({ "SYNOPSIS", "COMMANDS", "OPTIONS", "EXIT STATUS", "ENVIRONMENT" }) do
      assert.matches(part, page, 1, true)
    end
    -- the build's copy is the same page
    local built = os.getenv("CTEST_DIR") and H.read(os.getenv("CTEST_DIR") .. "/moonwait.1")
    if built then assert.equal(roff, built) end
  end)

  it("make install puts the man page where man finds it", function()
    local d = H.tmpdir()
    local c, out, err = H.sh("make -s -C " .. H.q(ROOT) .. " BUILD=" .. H.q(os.getenv("CTEST_DIR") or "build")
      .. " install PREFIX=" .. H.q(d) .. " 2>&1")
    assert.equal(0, c, out .. err)
    local c2, where = H.sh("MANPATH=" .. H.q(d .. "/share/man") .. " man -w moonwait")
    assert.equal(0, c2)
    assert.equal(d .. "/share/man/man1/moonwait.1\n", where)
  end)

  it("an unknown command suggests the nearest", function()
    local r = H.run("chekc x.lua")
    assert.equal(2, r.code)
    assert.equal("moonwait: unknown command 'chekc' (did you mean 'check'? see moonwait --help)\n", r.err)
  end)

  it("exits 2 on an unknown command or option, naming it", function()
    local r = H.run("frobnicate")
    assert.equal(2, r.code)
    assert.matches("unknown command 'frobnicate'", r.err)
    local d = H.tmpdir()
    H.script(d, PASS)
    r = H.run("run --script script.lua --capacityy 3", { dir = d })
    assert.equal(2, r.code)
    assert.matches("unknown option '--capacityy' (did you mean '--capacity'? see moonwait --help)", r.err, 1, true)
    r = H.run("run --script script.lua --timeout_ms 3", { dir = d }) -- the pipeline key's spelling
    assert.equal(2, r.code)
    assert.matches("did you mean '--timeout'?", r.err, 1, true)
    r = H.run("run --script script.lua --frobnicate 3", { dir = d })
    assert.equal(2, r.code)
    assert.matches("unknown option '--frobnicate' (see moonwait --help)", r.err, 1, true)
  end)

  it("exits 2 on a bad flag value, naming the flag", function()
    local d = H.tmpdir()
    H.script(d, PASS)
    for _, case in ipairs({
      { "--capacity 0", "option '%-%-capacity'" },
      { "--capacity abc", "option '%-%-capacity'" },
      { "--timeout -5", "option '%-%-timeout'" },
      { "--mode sideways", "option '%-%-mode': expected 'ordered', 'unordered' or 'keyed'" },
      { "--capacity", "option '%-%-capacity' needs a value" },
      { "--max-out-of-orderness 10", "needs '%-%-event%-time FIELD'" },
    }) do
      local r = H.run("run --script script.lua " .. case[1], { dir = d })
      assert.equal(2, r.code, case[1])
      assert.matches(case[2], r.err, 1, false)
    end
  end)

  it("requires a script", function()
    local r = H.run("run")
    assert.equal(2, r.code)
    assert.matches("no script", r.err)
  end)

  it("reads a pipeline file with paths relative to it, and flags override it", function()
    -- the file's mode, capacity and timeout each shown to take effect: record
    -- 1 hangs until its timeout (1500 ms, not the default 10 s) and, in
    -- unordered mode, leaves last; the others wait (a barrier) until `cap`
    -- records are in flight together, and report the peak, which is the
    -- capacity (a larger one would let all 10 start at once)
    local d = H.tmpdir()
    os.execute("mkdir -p " .. d .. "/p")
    H.script(d .. "/p", [[
local time = require "moonwait.time"
local M = {}
local inflight, peak = 0, 0
function M.async_invoke(r, ctx)
  inflight = inflight + 1
  if inflight > peak then peak = inflight end
  r.budget = ctx.remaining_ms()
  if r.hang then time.sleep(60) end
  local t0 = time.now()
  while peak < r.cap and time.now() - t0 < 30 do time.sleep(0.01) end
  inflight = inflight - 1
  r.peak = peak
  r.seen = "yes"
  return { r }
end
function M.on_timeout(r, ctx) return { { id = r.id, timed_out = true } } end
return M
]], "enrich.lua")
    local recs = { { id = 1, cap = 7, hang = true } }
    for i = 2, 10 do recs[i] = { id = i, cap = 7 } end
    H.write(d .. "/p/in.jsonl", H.jsonl(recs))
    H.write(d .. "/p/pipeline.lua", [[
return { script = "enrich.lua", input = "in.jsonl", output = "out.jsonl",
         mode = "unordered", capacity = 7, timeout_ms = 1500 }
]])
    local r = H.run("run p/pipeline.lua", { dir = d })
    assert.equal(0, r.code, r.err)
    local out = H.decode_lines(H.read(d .. "/p/out.jsonl"))
    assert.equal(10, #out)
    -- unordered: the hung record 1 leaves last, after its timeout
    assert.same({ id = 1, timed_out = true }, out[10])
    for i = 1, 9 do
      local o = out[i]
      assert.equal("yes", o.seen)
      assert.equal(7, o.peak)                 -- capacity 7: never more in flight
      assert.is_true(o.budget <= 1500 and o.budget > 0, "budget " .. o.budget)
    end
    -- flags override the file: output, capacity, timeout and mode
    for i = 1, 10 do recs[i] = { id = i, cap = 3 } end
    H.write(d .. "/p/in.jsonl", H.jsonl(recs))
    r = H.run("run p/pipeline.lua --output - --capacity 3 --timeout 20000 --mode ordered", { dir = d })
    assert.equal(0, r.code, r.err)
    out = H.decode_lines(r.out)
    assert.equal(10, #out)
    for i, o in ipairs(out) do
      assert.equal(i, o.id)                   -- ordered
      assert.equal(3, o.peak)
      assert.is_true(o.budget > 1500 and o.budget <= 20000, "budget " .. o.budget)
    end
  end)

  it("rejects unknown pipeline keys and bad values, naming the key", function()
    local d = H.tmpdir()
    H.script(d, PASS)
    H.write(d .. "/p1.lua", 'return { script = "script.lua", capcity = 3 }')
    local r = H.run("run p1.lua", { dir = d })
    assert.equal(2, r.code)
    assert.matches("p1.lua: unknown key 'capcity' (did you mean 'capacity'? known keys: script,", r.err, 1, true)
    H.write(d .. "/p2.lua", 'return { script = "script.lua", capacity = "lots" }')
    r = H.run("run p2.lua", { dir = d })
    assert.equal(2, r.code)
    assert.matches("p2.lua: key 'capacity': expected an integer or a table { min =, max =, adaptive = true }, got string", r.err, 1, true)
    H.write(d .. "/p3.lua", 'return { script = "script.lua", mode = "random" }')
    r = H.run("run p3.lua", { dir = d })
    assert.equal(2, r.code)
    assert.matches("p3.lua: key 'mode': expected 'ordered', 'unordered' or 'keyed'", r.err, 1, true)
    H.write(d .. "/p4.lua", 'return { script = "script.lua", timeout_ms = 1.5 }')
    r = H.run("run p4.lua", { dir = d })
    assert.equal(2, r.code)
    assert.matches("key 'timeout_ms'", r.err, 1, true)
    H.write(d .. "/p5.lua", 'return { script = "script.lua" ')
    r = H.run("run p5.lua", { dir = d })
    assert.equal(2, r.code)
    assert.matches("p5.lua:1:", r.err, 1, true)
  end)

  it("names the file when input or output cannot be opened", function()
    local d = H.tmpdir()
    H.script(d, PASS)
    local r = H.run("run --script script.lua --input nope.jsonl", { dir = d })
    assert.equal(2, r.code)
    assert.matches("--input nope.jsonl: No such file", r.err, 1, true)
    r = H.run("run --script script.lua --output /nonexistent/dir/out", { dir = d })
    assert.equal(2, r.code)
    assert.matches("--output /nonexistent/dir/out:", r.err, 1, true)
    -- and the script, from the flag or the pipeline key (regression: "cannot open nope.lua" alone)
    r = H.run("run --script nope.lua", { dir = d, input = "" })
    assert.equal(2, r.code)
    assert.equal("moonwait: --script: cannot open nope.lua: No such file or directory\n", r.err)
    H.write(d .. "/p.lua", 'return { script = "nope.lua" }')
    r = H.run("run p.lua", { dir = d, input = "" })
    assert.equal(2, r.code)
    assert.matches("^moonwait: %-%-script: cannot open %S*nope%.lua: No such file", r.err)
  end)

  it("prints progress and a summary with --stats", function()
    local d = H.tmpdir()
    H.script(d, [[
local time = require "moonwait.time"
local M = {}
function M.async_invoke(r, ctx) time.sleep(0.3); return { r } end
return M
]])
    local r = H.run("run --script script.lua --stats --capacity 2",
      { dir = d, input = H.jsonl({ { a = 1 }, { a = 2 }, { a = 3 }, { a = 4 }, { a = 5 }, { a = 6 }, { a = 7 }, { a = 8 } }) })
    assert.equal(0, r.code, r.err)
    assert.matches("moonwait: stats: records_in=%d+ records_out=%d+ outputs=%d+ watermarks=0 attempts=%d+ retries=0 "
      .. "timeouts=0 errors=0 skipped=0 dead_lettered=0 malformed=0 reloads=0 reloads_rejected=0 in_flight=%d+ "
      .. "queued=%d+ backoff=0 generation=1 rate=%d+/s", r.err)
    assert.matches("moonwait: summary: records_in=8 records_out=8 outputs=8", r.err)
    assert.matches("moonwait: summary: .* reloads=0 reloads_rejected=0 in_flight=0 queued=0 backoff=0 generation=1 ", r.err)
  end)
end)
