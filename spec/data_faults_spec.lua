-- Regressions for faults found by trying moonwait as a new user and as an
-- adversary would (issue 10, "Data path" and "Runaway scripts"): each `it`
-- is one fault, reproduced end to end through the real binary.
local H = require("helpers")

local PASS = [[return { async_invoke = function(r, ctx) return { r } end }]]

-- One input record {"n": N, "pad": S} becomes N output records.
local FANOUT = [[return { async_invoke = function(r, ctx)
  local out = {}
  for i = 1, r.n do out[i] = { i = i, pad = r.pad } end
  return out
end }]]

local run = H.run_script

-- The peak RSS the --stats summary reports, in KiB.
local function peak_rss_kb(err)
  return tonumber(err:match("peak_rss_kb=(%d+)"))
end

describe("data path faults", function()
  after_each(function() H.cleanup() end)

  describe("a fan-out larger than the 4 MiB output high-water mark", function()
    it("writes a 50,000-record fan-out from one input (5.6 MB) to a file", function()
      local pad = string.rep("x", 100)
      local r = run(FANOUT, H.jsonl({ { n = 50000, pad = pad } }))
      assert.are.equal(0, r.code, r.err)
      local lines = H.lines(r.output)
      assert.are.equal(50000, #lines)
      assert.are.equal('{"i":1,"pad":"' .. pad .. '"}', lines[1])
      assert.are.equal('{"i":50000,"pad":"' .. pad .. '"}', lines[50000])
    end)

    it("writes several 50,000-record fan-outs in a row, in order, through a pipe", function()
      local d = H.tmpdir()
      local script = H.script(d, FANOUT)
      local input = {}
      for k = 1, 5 do input[k] = { n = 50000, pad = "p" .. k } end
      H.write(d .. "/in", H.jsonl(input))
      local code, out, err = H.sh(string.format("%s run --script %s --input %s | cat",
        H.cmd(""), H.q(script), H.q(d .. "/in")))
      assert.are.equal(0, code, err)
      assert.are.equal("", err)
      local lines = H.lines(out)
      assert.are.equal(250000, #lines)
      assert.are.equal('{"i":1,"pad":"p1"}', lines[1])
      assert.are.equal('{"i":50000,"pad":"p3"}', lines[150000])
      assert.are.equal('{"i":50000,"pad":"p5"}', lines[250000])
    end)

    it("writes a 100 MB fan-out with memory bounded by about one copy of it", function()
      local pad = string.rep("y", 480)
      local r = run(FANOUT, H.jsonl({ { n = 200000, pad = pad }, { n = 3, pad = "z" } }), "--stats")
      assert.are.equal(0, r.code, r.err)
      local want = #'{"i":1,"pad":"z"}\n{"i":2,"pad":"z"}\n{"i":3,"pad":"z"}\n'
      for i = 1, 200000 do want = want + #('{"i":,"pad":""}\n') + #tostring(i) + #pad end
      assert.are.equal(want, #r.output)
      assert.truthy(r.output:find('{"i":200000,"pad":"' .. pad .. '"}\n{"i":1,"pad":"z"}\n', 1, true))
      -- The encoded output (100 MB) exists once: the output adopts it
      -- instead of copying it (and the Lua tables of the fan-out are
      -- about 20 MB more). Before, two copies were alive at once.
      -- (Under valgrind or ASan the RSS is theirs.)
      local rss = peak_rss_kb(r.err)
      assert.is_not_nil(rss, r.err)
      if H.wrapper == "" and not H.bin:match("asan") then
        assert.is_true(rss < 180 * 1024, "peak RSS " .. rss .. " KiB")
      end
    end)
  end)

  describe("--input, --output and --dead-letter naming the same file", function()
    local function attempt(d, args)
      local script = H.script(d, PASS)
      return H.run("run --script " .. H.q(script) .. " " .. args, { dir = d })
    end
    local INPUT = '{"a":1}\n{"a":2}\n'

    it("refuses --input and --output naming one file (exit 2), leaving the input intact", function()
      local d = H.tmpdir()
      H.write(d .. "/in.jsonl", INPUT)
      local r = attempt(d, "--input in.jsonl --output ./in.jsonl")
      assert.are.equal(2, r.code, r.err)
      assert.matches("%-%-input in%.jsonl and %-%-output %./in%.jsonl are the same file", r.err)
      assert.are.equal(INPUT, H.read(d .. "/in.jsonl"))
    end)

    it("sees the same file through a symlink and a hard link", function()
      local d = H.tmpdir()
      H.write(d .. "/in.jsonl", INPUT)
      os.execute(string.format("ln -s in.jsonl %s/sym && ln %s/in.jsonl %s/hard", H.q(d), H.q(d), H.q(d)))
      local r = attempt(d, "--input sym --output in.jsonl")
      assert.are.equal(2, r.code, r.err)
      assert.matches("%-%-input sym and %-%-output in%.jsonl", r.err)
      r = attempt(d, "--input in.jsonl --output hard")
      assert.are.equal(2, r.code, r.err)
      assert.matches("%-%-input in%.jsonl and %-%-output hard", r.err)
      assert.are.equal(INPUT, H.read(d .. "/in.jsonl"))
    end)

    it("refuses --input and --dead-letter, and --output and --dead-letter, naming one file", function()
      local d = H.tmpdir()
      H.write(d .. "/in.jsonl", INPUT)
      local r = attempt(d, "--input in.jsonl --output out --on-error dead-letter --dead-letter in.jsonl")
      assert.are.equal(2, r.code, r.err)
      assert.matches("%-%-input in%.jsonl and %-%-dead%-letter in%.jsonl are the same file", r.err)
      assert.are.equal(INPUT, H.read(d .. "/in.jsonl"))
      -- Two outputs clash even before the file exists.
      r = attempt(d, "--input in.jsonl --output new --on-error dead-letter --dead-letter ./new")
      assert.are.equal(2, r.code, r.err)
      assert.matches("%-%-output new and %-%-dead%-letter %./new are the same file", r.err)
      assert.is_false(H.exists(d .. "/new"))
      H.write(d .. "/old", "x\n")
      r = attempt(d, "--input in.jsonl --output old --on-error dead-letter --dead-letter old")
      assert.are.equal(2, r.code, r.err)
      assert.are.equal("x\n", H.read(d .. "/old"))
    end)

    it("refuses --input FILE with stdout redirected to that file, and stdin and stdout one file", function()
      local d = H.tmpdir()
      local script = H.script(d, PASS)
      H.write(d .. "/in.jsonl", INPUT)
      local code, _, err = H.sh(string.format("cd %s && %s run --script %s --input in.jsonl >>in.jsonl",
        H.q(d), H.cmd(""), H.q(script)))
      assert.are.equal(2, code, err)
      assert.matches("%-%-input in%.jsonl and %-%-output %- %(stdout%) are the same file", err)
      code, _, err = H.sh(string.format("cd %s && %s run --script %s <in.jsonl >>in.jsonl",
        H.q(d), H.cmd(""), H.q(script)))
      assert.are.equal(2, code, err)
      assert.are.equal(INPUT, H.read(d .. "/in.jsonl"))
    end)

    it("still runs with an output that does not exist yet, or /dev/null twice", function()
      local d = H.tmpdir()
      H.write(d .. "/in.jsonl", INPUT)
      local r = attempt(d, "--input in.jsonl --output out.jsonl")
      assert.are.equal(0, r.code, r.err)
      assert.are.equal(INPUT, H.read(d .. "/out.jsonl"))
      r = attempt(d, "--input in.jsonl --output /dev/null --on-error dead-letter --dead-letter /dev/null")
      assert.are.equal(0, r.code, r.err)
    end)
  end)

  describe("a reader that goes away (EPIPE)", function()
    -- 100,000 records: far more output than a pipe buffer holds, so writes
    -- go on after the reader has left.
    local function many(d)
      local b = {}
      for i = 1, 100000 do b[i] = '{"a":' .. i .. '}' end
      return H.write(d .. "/in", table.concat(b, "\n") .. "\n")
    end

    it("stops quietly with status 141 when stdout's reader exits (`| head -1`)", function()
      local d = H.tmpdir()
      local script = H.script(d, PASS)
      many(d)
      local code, out, err = H.sh(string.format("(%s run --script %s --input %s; echo $? >%s/status) | head -1",
        H.cmd(""), H.q(script), H.q(d .. "/in"), H.q(d)))
      assert.are.equal(0, code)
      assert.are.equal('{"a":1}\n', out)
      assert.are.equal("", err)
      assert.are.equal("141\n", H.read(d .. "/status"))
    end)

    it("stops quietly with status 141 when an --output FIFO's reader exits", function()
      local d = H.tmpdir()
      local script = H.script(d, PASS)
      many(d)
      assert.is_true(os.execute("mkfifo " .. H.q(d .. "/fifo")) == 0)
      local code, out, err = H.sh(string.format("head -1 %s >%s/head & %s run --script %s --input %s --output %s; echo $? >%s/status; wait",
        H.q(d .. "/fifo"), H.q(d), H.cmd(""), H.q(script), H.q(d .. "/in"), H.q(d .. "/fifo"), H.q(d)))
      assert.are.equal(0, code, err)
      assert.are.equal("", out)
      assert.are.equal("", err)
      assert.are.equal('{"a":1}\n', H.read(d .. "/head"))
      assert.are.equal("141\n", H.read(d .. "/status"))
    end)

    it("still fails on a real write error (exit 1, named)", function()
      local d = H.tmpdir()
      local script = H.script(d, PASS)
      many(d)
      local r = H.run(string.format("run --script %s --input %s --output /dev/full", H.q(script), H.q(d .. "/in")))
      assert.are.equal(1, r.code, r.err)
      assert.matches("%-%-output /dev/full: write error: no space left on device", r.err)
    end)
  end)

  describe("a call that times out with the record's budget", function()
    -- Each record's call may last exactly its remaining budget, then fails
    -- with "timeout" (as an HTTP call with timeout_ms = ctx.remaining_ms()
    -- does). The record's deadline decides: every record times out
    -- through on_timeout, none fails with the call's "timeout".
    it("times out the record (timed_out, on_timeout) when the call's timeout equals its remaining budget", function()
      local body = [[
        local time = require "moonwait.time"
        return {
          async_invoke = function(r, ctx)
            time.sleep(ctx.remaining_ms() / 1000)
            return nil, "timeout"
          end,
          on_timeout = function(r, ctx) r.on_timeout = true; return { r } end,
        }]]
      local input = {}
      for i = 1, 2000 do input[i] = { i = i } end
      local r = run(body, H.jsonl(input), "--timeout 30 --capacity 200 --on-error dead-letter --dead-letter dl")
      assert.are.equal(0, r.code, r.err)
      assert.are.equal("", H.read(r.dir .. "/dl"))
      local lines = H.lines(r.output)
      assert.are.equal(2000, #lines)
      for i, l in ipairs(lines) do assert.are.equal('{"i":' .. i .. ',"on_timeout":true}', l) end
    end)

    it("reports a full remaining budget: ctx.remaining_ms() is the record's timeout at the start", function()
      local r = run([[return { async_invoke = function(r, ctx) r.left = ctx.remaining_ms(); return { r } end }]],
        H.jsonl({ { a = 1 }, { a = 2 } }), "--timeout 300")
      assert.are.equal(0, r.code, r.err)
      assert.are.equal('{"a":1,"left":300}\n{"a":2,"left":300}\n', r.output)
    end)

    it("times out a record whose call ended before its deadline but whose outcome came after it", function()
      -- The victims' sleeps end 25 ms before their deadline, in the same
      -- timer phase as the first record's second attempt (its back-off
      -- ends then too), which holds the loop for 300 ms of CPU. So each
      -- victim's "timeout" outcome is taken after its deadline has
      -- passed, before the record's own timer has run. The deadline
      -- decides: on_timeout, not the call's error. (The input stays open
      -- until the first output is written, so the back-off is not cut
      -- short by the end of input.)
      local d = H.tmpdir()
      local script = H.script(d, [[
        local time = require "moonwait.time"
        local t0
        return {
          retry_on_error = function(err, ctx) return err == "again" end,
          async_invoke = function(r, ctx)
            if r.burner then
              if ctx.attempt == 1 then t0 = time.now(); return nil, "again" end
              local c = os.clock()
              while os.clock() - c < 0.3 do end
              return { r }
            end
            time.sleep(math.max(0, math.floor((t0 + 0.125 - time.now()) * 1000 + 0.5)) / 1000)
            return nil, "timeout"
          end,
          on_timeout = function(r, ctx) r.on_timeout = true; return { r } end,
        }]])
      local input = { { burner = true } }
      for i = 1, 50 do input[#input + 1] = { i = i } end
      H.write(d .. "/in", H.jsonl(input))
      local code, _, err = H.sh(string.format(
        "cd %s && (cat in; for i in $(seq 3000); do grep -q burner out 2>/dev/null && break; sleep 0.01; done) | " ..
        "%s run --script script.lua --output out --timeout 150 --retry fixed:2:125 --capacity 100 " ..
        "--on-error dead-letter --dead-letter dl", H.q(d), H.cmd("")))
      assert.are.equal(0, code, err)
      assert.are.equal("", H.read(d .. "/dl"))
      local lines = H.lines(H.read(d .. "/out"))
      assert.are.equal(51, #lines)
      for i = 1, 50 do assert.are.equal('{"i":' .. i .. ',"on_timeout":true}', lines[i + 1]) end
    end)
  end)

  describe("a script that reaches for the process", function()
    it("fails the record when the script calls os.exit, flushing everything before it", function()
      local body = [[return { async_invoke = function(r, ctx)
        if r.a == 3 then os.exit(0) end
        return { r } end }]]
      local r = run(body, '{"a":1}\n{"a":2}\n{"a":3}\n{"a":4}\n')
      assert.are.equal(1, r.code, r.err)
      assert.matches("input line 3 %(record 3%) failed: .*script%.lua:2: os%.exit is not allowed in a script; " ..
        "return nil, err to fail a record", r.err)
      assert.are.equal('{"a":1}\n{"a":2}\n', r.output)
      -- routed like any error
      r = run(body, '{"a":1}\n{"a":2}\n{"a":3}\n{"a":4}\n', "--on-error skip")
      assert.are.equal(0, r.code, r.err)
      assert.are.equal('{"a":1}\n{"a":2}\n{"a":4}\n', r.output)
      -- at load time the script does not load (exit 2); in open the run fails
      r = run("os.exit(3)\nreturn { async_invoke = function(r) return { r } end }", '{"a":1}\n')
      assert.are.equal(2, r.code, r.err)
      assert.matches("os%.exit is not allowed", r.err)
      r = run("return { open = function() os.exit(0) end, async_invoke = function(r) return { r } end }", '{"a":1}\n')
      assert.are.equal(1, r.code, r.err)
      assert.matches("open failed: .*os%.exit is not allowed", r.err)
    end)

    it("refuses io.read, io.lines() and io.stdin in a script when the input is stdin", function()
      local function piped(body, args)
        local d = H.tmpdir()
        local script = H.script(d, body)
        H.write(d .. "/in", '{"a":1}\n{"a":2}\n')
        local r = H.run(string.format("run --script %s %s", H.q(script), args or ""),
          { input = '{"a":1}\n{"a":2}\n' })
        return r, d
      end
      local r = piped([[return { async_invoke = function(r) r.stolen = io.read("*l"); return { r } end }]])
      assert.are.equal(1, r.code, r.err)
      assert.matches("input line 1 %(record 1%) failed: .*script%.lua:1: moonwait reads stdin %(%-%-input %-%): " ..
        "a script cannot read it", r.err)
      r = piped([[for l in io.lines() do end
        return { async_invoke = function(r) return { r } end }]])
      assert.are.equal(2, r.code, r.err)
      assert.matches("script%.lua:1: moonwait reads stdin", r.err)
      r = piped([[local l = io.stdin:read("*l")
        return { async_invoke = function(r) return { r } end }]])
      assert.are.equal(2, r.code, r.err)
      assert.matches("script%.lua:1: moonwait reads stdin", r.err)
      r = piped([[local l = io.input():read("*l")
        return { async_invoke = function(r) return { r } end }]])
      assert.are.equal(2, r.code, r.err)
      -- every line reached moonwait; other files still work
      r = piped([[local f = assert(io.open(debug.getinfo(1, "S").source:sub(2)))
        local first = f:read("*l"); f:close()
        return { async_invoke = function(r) r.ok = #first > 0; return { r } end }]])
      assert.are.equal(0, r.code, r.err)
      assert.are.equal('{"a":1,"ok":true}\n{"a":2,"ok":true}\n', r.out)
      -- with a file input, stdin is the script's to read
      local d = H.tmpdir()
      local script = H.script(d, [[return { async_invoke = function(r) r.s = io.read("*l"); return { r } end }]])
      H.write(d .. "/in", '{"a":1}\n')
      r = H.run(string.format("run --script %s --input %s", H.q(script), H.q(d .. "/in")), { input = "hello\n" })
      assert.are.equal(0, r.code, r.err)
      assert.are.equal('{"a":1,"s":"hello"}\n', r.out)
    end)
  end)

  describe("script code the host calls without a pcall", function()
    -- Each of these aborted the process with "PANIC: unprotected error in
    -- call to Lua API".
    it("fails the load when the module's __index raises (contract check)", function()
      local r = run([[return setmetatable({}, { __index = function(t, k) error("no field " .. k) end })]], '{"a":1}\n')
      assert.are.equal(2, r.code, r.err)
      assert.matches("script%.lua:1: no field async_invoke", r.err)
      assert.is_nil(r.err:find("PANIC", 1, true))
    end)

    it("fails the load when M.retry's __index raises", function()
      local r = run([[return { async_invoke = function(r) return { r } end,
        retry = setmetatable({}, { __index = function(t, k) error("no retry field " .. k) end }) }]], '{"a":1}\n')
      assert.are.equal(2, r.code, r.err)
      assert.matches("no retry field", r.err)
      assert.is_nil(r.err:find("PANIC", 1, true))
    end)

    it("fails the load when the module's __index raises only when the host takes its hooks", function()
      local r = run([[local n = 0
        return setmetatable({ async_invoke = function(r) return { r } end },
          { __index = function(t, k) n = n + 1; if n > 7 then error("late " .. k) end end })]], '{"a":1}\n')
      assert.are.equal(2, r.code, r.err)
      assert.matches("script%.lua:3: late", r.err)
      assert.is_nil(r.err:find("PANIC", 1, true))
    end)

    it("runs open and close when the script replaced require (their ctx is built without calling it)", function()
      local r = run([[rawset(_G, "require", nil)
        return { open = function(ctx) io.stderr:write("OPEN ", ctx.generation, "\n") end,
                 close = function(ctx) io.stderr:write("CLOSE\n") end,
                 async_invoke = function(r) return { r } end }]], '{"a":1}\n')
      assert.are.equal(0, r.code, r.err)
      assert.are.equal('{"a":1}\n', r.output)
      assert.matches("OPEN 1\n.*CLOSE", r.err)
      -- ctx.log in a hook still works when require does
      r = run([[return { open = function(ctx) ctx.log.info("hello from open") end,
                 async_invoke = function(r) return { r } end }]], '{"a":1}\n')
      assert.are.equal(0, r.code, r.err)
      assert.matches("hello from open", r.err)
    end)

    it("watches files when the script replaced package", function()
      local r = run([[rawset(_G, "package", 1)
        return { async_invoke = function(r) return { r } end }]], '{"a":1}\n', "--watch")
      assert.are.equal(0, r.code, r.err)
      assert.are.equal('{"a":1}\n', r.output)
    end)

    it("reloads when the module's __index raises for export_state", function()
      local d = H.tmpdir()
      H.script(d, [[
        local M = {}
        function M.open(ctx)
          setmetatable(M, { __index = function(t, k) error("no " .. k) end })
          io.stderr:write("READY gen=", ctx.generation, "\n")
        end
        function M.async_invoke(r) return { r } end
        return M]])
      H.write(d .. "/in", '{"a":1}\n')
      os.execute("mkfifo " .. H.q(d .. "/fifo"))
      os.execute(string.format("cd %s && { (cat in; while [ ! -e done ]; do sleep 0.05; done) >fifo & } " ..
        "&& { %s run --script script.lua --input fifo >out 2>err & echo $! >pid; wait $!; echo $? >rc; } " ..
        ">/dev/null 2>&1 &", H.q(d), H.cmd("")))
      local pid = H.wait_for(function() return (H.read(d .. "/pid") or ""):match("%d+") end, 10)
      assert.truthy(H.wait_for(function() return (H.read(d .. "/err") or ""):find("READY gen=1", 1, true) end, 60))
      os.execute("kill -HUP " .. pid)
      local ok = H.wait_for(function()
        local e = H.read(d .. "/err") or ""
        return e:find("READY gen=2", 1, true) or H.read(d .. "/rc")
      end, 60)
      H.write(d .. "/done", "")
      local rc = H.wait_for(function() return H.read(d .. "/rc") end, 60)
      local err = H.read(d .. "/err") or ""
      assert.truthy(ok, err)
      assert.are.equal("0", (rc or ""):match("%d+"), err)
      assert.matches("generation 1: export_state failed: .*no export_state.*ctx%.previous will be nil", err)
      assert.are.equal('{"a":1}\n', H.read(d .. "/out"))
    end)
  end)

  describe("a NUL byte in a string the host reads from a script", function()
    it("a NUL in a log message no longer cuts the line short", function()
      local r = run([[local log = require "moonwait.log"
return { async_invoke = function(r) log.warn("before\0after") return { r } end }]], '{"a":1}\n')
      assert.are.equal(0, r.code, r.err)
      assert.truthy(r.err:find("before\0after", 1, true), r.err)
    end)

    it("a NUL in M.retry's backoff, jitter or key names is refused, not read up to the NUL", function()
      for _, retry in ipairs({ '{ backoff = "fixed\\0x" }', '{ backoff = "exponential", jitter = "full\\0" }',
                               '{ ["max_attempts\\0x"] = 3 }' }) do
        local r = run("return { retry = " .. retry .. ", async_invoke = function(r) return { r } end }", '{"a":1}\n')
        assert.are.equal(2, r.code, retry .. ": " .. r.err)
        assert.matches("retry", r.err)
      end
    end)
  end)

  describe("a standard descriptor the caller closed", function()
    -- libuv refuses to close fds 0-2 and aborted (exit 134) when a file
    -- or socket took one of their numbers
    local PASS = "return { async_invoke = function(r) return { r } end }\n"
    local FAIL = "return { async_invoke = function(r) error('boom') end }\n"
    -- (with stderr closed the binary runs without MOONWAIT_WRAPPER: valgrind
    -- itself crashes when its stderr is closed)
    local function sh(d, redir)
      local args = "run --script script.lua " .. redir.args
      local cmd = redir.fds:find("2>&-", 1, true) and (H.q(H.bin) .. " " .. args) or H.cmd(args)
      return H.sh(string.format("cd %s && timeout 30 %s %s", H.q(d), cmd, redir.fds))
    end

    it("stdin or stdout closed while the run reads or writes it: exit 2 naming it", function()
      local d = H.tmpdir()
      H.script(d, PASS)
      H.write(d .. "/in", '{"a":1}\n')
      local code, _, err = sh(d, { args = "--output out", fds = "<&-" })
      assert.equal(2, code)
      assert.matches("moonwait: --input -: stdin is closed", err, 1, true)
      code, _, err = sh(d, { args = "--input in", fds = ">&-" })
      assert.equal(2, code)
      assert.matches("moonwait: --output -: stdout is closed", err, 1, true)
    end)

    it("all three closed, files named: the run works; stderr closed: a failure is exit 1, not an abort", function()
      local d = H.tmpdir()
      H.script(d, PASS)
      H.write(d .. "/in", '{"a":1}\n{"b":2}\n')
      local code = sh(d, { args = "--input in --output out --checkpoint-dir cp", fds = "<&- >&- 2>&-" })
      assert.equal(0, code)
      assert.equal('{"a":1}\n{"b":2}\n', H.read(d .. "/out"))
      H.script(d, FAIL)
      code = sh(d, { args = "--input in --output out2", fds = "2>&-" })
      assert.equal(1, code)
    end)
  end)
end)
