-- moonwait check and script loading: each check printed on stdout with its
-- result ("ok", "FAIL", "warn"), every problem as file:line: message, exit
-- status 2 when a check failed.
local H = require("helpers")

describe("moonwait check", function()
  after_each(H.cleanup)

  it("accepts a valid script", function()
    local d = H.tmpdir()
    local p = H.script(d, [[
local M = {}
function M.async_invoke(r, ctx) return { r } end
function M.on_timeout(r, ctx) return {} end
return M
]])
    local r = H.run("check " .. H.q(p))
    assert.equal(0, r.code, r.err)
    assert.matches(": ok", r.out)
  end)

  it("reports a syntax error with file:line", function()
    local d = H.tmpdir()
    local p = H.script(d, "local M = {}\nfunction M.async_invoke(r)\n  return { r \nend\nreturn M\n")
    local r = H.run("check " .. H.q(p))
    assert.equal(2, r.code)
    assert.matches("FAIL  it compiles: ", r.out, 1, true)
    assert.matches("script.lua:4: '}' expected", r.out, 1, true)
  end)

  it("reports a missing async_invoke at the module's return", function()
    local d = H.tmpdir()
    local p = H.script(d, "local M = {}\nfunction M.invoke(r) return { r } end\nreturn M\n")
    local r = H.run("check " .. H.q(p))
    assert.equal(2, r.code)
    assert.matches("script.lua:3: the script's module has no async_invoke", r.out, 1, true)
  end)

  it("reports a hook of the wrong type", function()
    local d = H.tmpdir()
    local p = H.script(d, "return { async_invoke = function() end, on_timeout = 5 }\n")
    local r = H.run("check " .. H.q(p))
    assert.equal(2, r.code)
    assert.matches("FAIL  its hooks are functions: ", r.out, 1, true)
    assert.matches("script.lua:1: on_timeout must be a function, got number", r.out, 1, true)
  end)

  it("reports a script that does not return a table", function()
    local d = H.tmpdir()
    local p = H.script(d, "local x = 1\n")
    local r = H.run("check " .. H.q(p))
    assert.equal(2, r.code)
    assert.matches("must return a table", r.out, 1, true)
  end)

  it("reports an error raised at load time with its line", function()
    local d = H.tmpdir()
    local p = H.script(d, "local M = {}\nerror('no config')\nreturn M\n")
    local r = H.run("check " .. H.q(p))
    assert.equal(2, r.code)
    assert.matches("FAIL  its main chunk runs: ", r.out, 1, true)
    assert.matches("script.lua:2: no config", r.out, 1, true)
  end)

  it("names an accidental global and its line", function()
    local d = H.tmpdir()
    local p = H.script(d, "local M = {}\ncounter = 0\nM.async_invoke = function(r) return {r} end\nreturn M\n")
    local r = H.run("check " .. H.q(p))
    assert.equal(2, r.code)
    assert.matches("FAIL  its main chunk writes no global: ", r.out, 1, true)
    assert.matches("script.lua:2: assignment to undeclared global 'counter'", r.out, 1, true)
  end)

  it("reports a missing file", function()
    local r = H.run("check /nonexistent/x.lua")
    assert.equal(2, r.code)
    assert.matches("FAIL  the file can be read: cannot open /nonexistent/x.lua: No such file or directory", r.out, 1, true)
    assert.matches("/nonexistent/x.lua: FAILED: 1 of 1 checks failed", r.out, 1, true)
    local d = H.tmpdir()
    r = H.run("check " .. H.q(d))   -- a directory
    assert.equal(2, r.code)
    assert.matches("FAIL  the file can be read: cannot open " .. d .. ": it is a directory", r.out, 1, true)
  end)

  it("finds user modules next to the script", function()
    local d = H.tmpdir()
    H.write(d .. "/mylib.lua", "return { tag = 'lib' }\n")
    local p = H.script(d, [[
local lib = require "mylib"
return { async_invoke = function(r) r.tag = lib.tag; return { r } end }
]])
    local r = H.run("check " .. H.q(p))
    assert.equal(0, r.code, r.err)
    r = H.run("run --script " .. H.q(p), { input = '{"a":1}\n' })
    assert.equal(0, r.code, r.err)
    assert.equal("lib", H.json.decode(r.lines[1]).tag)
  end)

  it("exits 2 from run when the script does not load", function()
    local d = H.tmpdir()
    H.script(d, "return {\n")
    local r = H.run("run --script script.lua", { dir = d, input = '{"a":1}\n' })
    assert.equal(2, r.code)
    assert.matches("script.lua:2:", r.err, 1, true)
    assert.equal("", r.out)
  end)

  it("prints each check and its result, and a summary line", function()
    local d = H.tmpdir()
    local p = H.script(d, [[
local M = {}
function M.async_invoke(r, ctx) return { r } end
function M.on_timeout(r, ctx) return {} end
function M.retry_on_error(err, ctx) return true end
M.retry = { max_attempts = 3, backoff = "fixed", delay_ms = 10 }
M.batch = nil
return M
]])
    local r = H.run("check " .. H.q(p))
    assert.equal(0, r.code, r.out)
    for _, check in ipairs({ "the file can be read", "it compiles", "its main chunk runs",
      "its main chunk returns within the CPU budget", "its main chunk writes no global",
      "its functions write no undeclared global", "returns a module table", "async_invoke is a function",
      "its hooks are functions (on_timeout, retry_on_error)", "M.retry is valid",
      "its retry strategy has a retry predicate" }) do
      assert.matches("\n  ok    " .. check .. "\n", r.out, 1, true)
    end
    assert.equal("script.lua: ok (11 checks passed)\n", r.out:sub(-#"script.lua: ok (11 checks passed)\n"))
    assert.equal("", r.err)
  end)

  it("says a script forgot `return M`, or returned a record instead of its module", function()
    local d = H.tmpdir()
    local p = H.script(d, "local M = {}\nfunction M.async_invoke(r) return { r } end\n")
    local r = H.run("check " .. H.q(p))
    assert.equal(2, r.code)
    assert.matches("FAIL  returns a module table: ", r.out, 1, true)
    assert.matches("got nil (did you forget `return M` at the end?)", r.out, 1, true)
    p = H.script(d, 'return { id = 1, name = "x" }\n')
    r = H.run("check " .. H.q(p))
    assert.equal(2, r.code)
    assert.matches("FAIL  has async_invoke or batch_invoke: ", r.out, 1, true)
    assert.matches("(it returned a table of data, not functions: a record? a script returns its module M)", r.out, 1, true)
    p = H.script(d, "return { async_invoke = 'yes' }\n")
    r = H.run("check " .. H.q(p))
    assert.equal(2, r.code)
    assert.matches("FAIL  async_invoke is a function: ", r.out, 1, true)
  end)

  it("names a global written inside a function, which only raises when it runs, with its file:line", function()
    local d = H.tmpdir()
    local p = H.script(d, [[
local M = {}
rawset(_G, "declared", 0)
function M.async_invoke(r)
  declared = declared + 1
  if r.x then
    seen_count = (seen_count or 0) + 1
  end
  return { r }
end
return M
]])
    local r = H.run("check " .. H.q(p))
    assert.equal(2, r.code)
    assert.matches("FAIL  its functions write no undeclared global: ", r.out, 1, true)
    assert.matches("script.lua:6: 'seen_count' (assigned in a function, it raises when that runs", r.out, 1, true)
    assert.is_nil(r.out:find("'declared'", 1, true))   -- declared at load with rawset: fine
    -- the run would indeed fail at that line, with the first record that gets there
    r = H.run("run --script " .. H.q(p), { input = '{"a":1}\n{"x":1}\n' })
    assert.equal(1, r.code)
    assert.matches("script.lua:6: assignment to undeclared global 'seen_count'", r.err, 1, true)
    -- in a module next to the script, too
    H.write(d .. "/mylib.lua", "local L = {}\nfunction L.bump()\n  hits = (hits or 0) + 1\nend\nreturn L\n")
    H.script(d, 'local lib = require "mylib"\nreturn { async_invoke = function(r) lib.bump(); return { r } end }\n')
    r = H.run("check script.lua", { dir = d })
    assert.equal(2, r.code)
    assert.matches("FAIL  its functions write no undeclared global: ", r.out, 1, true)
    assert.matches("mylib.lua:3: 'hits'", r.out, 1, true)
    -- a module that sets its own environment (setfenv, module) is not judged: its
    -- "globals" go to its table
    H.write(d .. "/mylib.lua", "local L = {}\nsetfenv(1, L)\nfunction bump() hits = 1 end\nreturn L\n")
    r = H.run("check script.lua", { dir = d })
    assert.equal(0, r.code, r.out)
  end)

  it("warns about a global read in a function that nothing declares (regression: moonwait.time without require passed)", function()
    local d = H.tmpdir()
    local p = H.script(d, [[
local M = {}
rawset(_G, "declared", 1)
local count = 0
function M.async_invoke(r)
  r.t = moonwait.time.now()
  r.n = declared + count + (typo_count or 0)
  r.s = tostring(r.n)
  return { r }
end
return M
]])
    local r = H.run("check script.lua", { dir = d })
    assert.equal(0, r.code, r.out)   -- a warning: reading nil is not always a mistake
    assert.matches("warn  its functions read no undeclared global: script.lua:5: 'moonwait'; script.lua:6: 'typo_count' (",
      r.out, 1, true)
    assert.is_nil(r.out:find("'declared'", 1, true))
    assert.is_nil(r.out:find("'tostring'", 1, true))
    assert.matches("script.lua: ok (9 checks passed, 1 warning)", r.out, 1, true)
    -- the run indeed fails there
    r = H.run("run --script " .. H.q(p), { input = '{"a":1}\n' })
    assert.equal(1, r.code)
    assert.matches("attempt to index global 'moonwait'", r.err, 1, true)
    -- a global the script assigns (an error of its own) is not also said as read
    p = H.script(d, "local M = {}\nfunction M.async_invoke(r) n = (n or 0) + 1; return { r } end\nreturn M\n")
    r = H.run("check " .. H.q(p))
    assert.equal(2, r.code)
    assert.is_nil(r.out:find("read no undeclared", 1, true))
  end)

  it("warns about a function under a near-miss hook name, which moonwait never calls", function()
    local d = H.tmpdir()
    local p = H.script(d, [[
local M = {}
function M.async_invoke(r) return { r } end
function M.ontimeout(r) return {} end
function M.helper() end
return M
]])
    local r = H.run("check " .. H.q(p))
    assert.equal(0, r.code, r.out)
    assert.matches("warn  M.ontimeout is not a hook moonwait calls: ", r.out, 1, true)
    assert.matches("M.ontimeout is never called by moonwait (did you mean on_timeout?)", r.out, 1, true)
    assert.is_nil(r.out:find("M.helper", 1, true))
    assert.matches("script.lua: ok (9 checks passed, 1 warning)", r.out, 1, true)
  end)

  it("checks M.retry and M.batch", function()
    local d = H.tmpdir()
    local p = H.script(d, "return { async_invoke = function(r) return { r } end, retry = { max_attempts = 0 } }\n")
    local r = H.run("check " .. H.q(p))
    assert.equal(2, r.code)
    assert.matches("FAIL  M.retry is valid: ", r.out, 1, true)
    assert.matches("M.retry.max_attempts must be an integer >= 1", r.out, 1, true)
    p = H.script(d, "return { batch_invoke = function(rs) return {} end, batch = { max_size = 0 } }\n")
    r = H.run("check " .. H.q(p))
    assert.equal(2, r.code)
    assert.matches("FAIL  M.batch is valid: ", r.out, 1, true)
    p = H.script(d, "return { batch_invoke = function(rs) return {} end, batch = { max_size = 10 } }\n")
    r = H.run("check " .. H.q(p))
    assert.equal(0, r.code, r.out)
    assert.matches("ok    M.batch is valid", r.out, 1, true)
    assert.matches("ok    batch_invoke is a function", r.out, 1, true)
  end)

  it("warns when a retry strategy is set but the script has no retry predicate", function()
    local d = H.tmpdir()
    local p = H.script(d, [[
return { async_invoke = function(r) return { r } end, retry = { max_attempts = 3, delay_ms = 1 } }
]])
    local r = H.run("check " .. H.q(p))
    assert.equal(0, r.code, r.out)
    assert.matches("warn  its retry strategy has a retry predicate: a retry strategy is set", r.out, 1, true)
    assert.matches("no attempt will be retried", r.out, 1, true)
    -- the pipeline's strategy, over a script without M.retry
    H.script(d, "return { async_invoke = function(r) return { r } end }\n")
    H.write(d .. "/p.lua", 'return { script = "script.lua", retry = "fixed:3:10" }')
    r = H.run("check script.lua p.lua", { dir = d })
    assert.equal(0, r.code, r.out)
    assert.matches("ok    p.lua: its keys and values are valid", r.out, 1, true)
    assert.matches("warn  its retry strategy has a retry predicate", r.out, 1, true)
    -- "none" retries nothing: nothing to say
    H.write(d .. "/p.lua", 'return { retry = "none" }')
    r = H.run("check script.lua p.lua", { dir = d })
    assert.equal(0, r.code, r.out)
    assert.is_nil(r.out:find("retry predicate", 1, true))
  end)

  it("checks the pipeline file's keys and values, with 'did you mean'", function()
    local d = H.tmpdir()
    H.script(d, "return { async_invoke = function(r) return { r } end }\n")
    H.write(d .. "/p.lua", 'return { script = "script.lua", capcity = 3 }')
    local r = H.run("check script.lua p.lua", { dir = d })
    assert.equal(2, r.code)
    assert.matches("FAIL  p.lua: its keys and values are valid: p.lua: unknown key 'capcity' (did you mean 'capacity'?", r.out, 1, true)
    assert.matches("ok    async_invoke is a function", r.out, 1, true)  -- the script is still checked
    H.write(d .. "/p.lua", 'return { mode = "random" }')
    r = H.run("check script.lua p.lua", { dir = d })
    assert.equal(2, r.code)
    assert.matches("p.lua: key 'mode': expected 'ordered', 'unordered' or 'keyed'", r.out, 1, true)
    H.write(d .. "/p.lua", 'return { batch = { max_size = 10 } }')
    r = H.run("check script.lua p.lua", { dir = d })
    assert.equal(2, r.code)
    assert.matches("FAIL  batch settings apply to it: batch settings", r.out, 1, true)
    r = H.run("check script.lua missing.lua", { dir = d })
    assert.equal(2, r.code)
    assert.matches("FAIL  missing.lua: its keys and values are valid: ", r.out, 1, true)
    -- a pipeline file given as the script: said so
    H.write(d .. "/p.lua", 'return { script = "script.lua" }')
    r = H.run("check p.lua", { dir = d })
    assert.equal(2, r.code)
    assert.matches("(this looks like a pipeline file: moonwait check SCRIPT.lua PIPELINE.lua)", r.out, 1, true)
  end)

  it("stops a main chunk that spins, under the pipeline's CPU budget", function()
    local d = H.tmpdir()
    H.script(d, "local M = {}\nwhile true do end\nreturn M\n")
    H.write(d .. "/p.lua", "return { cpu_budget_ms = 200 }")
    local code, out = H.sh("cd " .. H.q(d) .. " && timeout 20 " .. H.cmd("check script.lua p.lua"))
    assert.equal(2, code)
    assert.matches("FAIL  its main chunk returns within the CPU budget: script.lua:2: exceeded the CPU budget of 200 ms", out, 1, true)
  end)

  it("refuses bad usage", function()
    local r = H.run("check")
    assert.equal(2, r.code)
    assert.matches("usage: moonwait check SCRIPT.lua [PIPELINE.lua]", r.err, 1, true)
    r = H.run("check a.lua b.lua c.lua")
    assert.equal(2, r.code)
    r = H.run("check --frob")
    assert.equal(2, r.code)
  end)

  it("names a missing module in one line: its name, the require's file:line, two places searched", function()
    local d = H.tmpdir()
    H.script(d, 'local M = {}\nlocal http = require "moonwait.htp"\nM.async_invoke = function(r) return { r } end\nreturn M\n')
    local r = H.run("check script.lua", { dir = d })
    assert.equal(2, r.code)
    local line = r.out:match("FAIL  the modules it requires are found: ([^\n]*)\n")
    assert.is_truthy(line, r.out)
    assert.equal("script.lua:2: module 'moonwait.htp' not found (did you mean 'moonwait.http'?): searched "
      .. "./moonwait/htp.lua, ./moonwait/htp/init.lua and 12 more", line)
    assert.is_nil(r.out:find("stack traceback", 1, true))
    -- the same at a run's load: one line on stderr
    r = H.run("run --script script.lua", { dir = d, input = '{"a":1}\n' })
    assert.equal(2, r.code)
    assert.equal("moonwait: script.lua:2: module 'moonwait.htp' not found (did you mean 'moonwait.http'?): searched "
      .. "./moonwait/htp.lua, ./moonwait/htp/init.lua and 12 more\n", r.err)
    -- inside async_invoke: the record fails with the same short message; no near name, no hint
    H.script(d, 'return { async_invoke = function(r)\n  local lib = require "mylib"\n  return { r }\nend }\n')
    r = H.run("run --script script.lua --on-error dead-letter --dead-letter dl.jsonl", { dir = d, input = '{"a":1}\n' })
    assert.equal(0, r.code, r.err)
    local dl = H.decode_lines(H.read(d .. "/dl.jsonl"))
    assert.equal("script.lua:2: module 'mylib' not found: searched ./mylib.lua, ./mylib/init.lua and 12 more", dl[1].error)
    r = H.run("run --script script.lua", { dir = d, input = '{"a":1}\n' })
    assert.equal(1, r.code)
    assert.equal("moonwait: input line 1 (record 1) failed: script.lua:2: module 'mylib' not found: searched "
      .. "./mylib.lua, ./mylib/init.lua and 12 more\n", r.err)
    -- a module that exists but fails keeps its own message and traceback
    H.write(d .. "/mylib.lua", "error('mylib is broken')\n")
    r = H.run("run --script script.lua --on-error dead-letter --dead-letter dl.jsonl", { dir = d, input = '{"a":1}\n' })
    dl = H.decode_lines(H.read(d .. "/dl.jsonl"))
    assert.matches("mylib.lua:1: mylib is broken", dl[1].error, 1, true)
    assert.matches("(at script.lua:2: ", dl[1].error, 1, true) -- where it was required from
    -- pcall(require, name) still sees a string error (optional dependencies)
    H.script(d, [[
local ok, err = pcall(require, "not_there")
assert(not ok and type(err) == "string" and err:find("module 'not_there' not found", 1, true), err)
return { async_invoke = function(r) return { r } end }
]])
    r = H.run("check script.lua", { dir = d })
    assert.equal(0, r.code, r.out)
  end)
end)
