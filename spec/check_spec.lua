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
end)
