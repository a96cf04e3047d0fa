-- Regressions found by an adversarial review of the strict JSON layer and
-- the record codec: each `it` is one fault, reproduced end to end through
-- the real binary.
local H = require("helpers")

local PASS = [[return { async_invoke = function(r, ctx) return { r } end }]]

local run = H.run_script

describe("adversarial", function()
  after_each(function() H.cleanup() end)

  it("writes a record whose output is larger than the 4 MiB output high-water mark", function()
    -- One output line above OUTPUT_HIGH_WATER stopped reading with nothing
    -- keeping the loop alive (the output's prepare handle is unref'd):
    -- "internal error: the event loop stopped with 0 records in flight".
    local line = '{"a":"' .. string.rep("x", 5 * 1024 * 1024) .. '"}\n'
    local r = run(PASS, line .. '{"b":1}\n')
    assert.are.equal(0, r.code, r.err)
    assert.are.equal(line .. '{"b":1}\n', r.output)
  end)
  it("never emits a string or key that is not UTF-8 (the next moonwait in a chain refuses it)", function()
    local r = run([[return { async_invoke = function(r) r.s = "\xff\xfe"; return { r } end }]], '{"a":1}\n')
    assert.are.equal(1, r.code)
    assert.matches("not valid UTF%-8", r.err)
    assert.are.equal("", r.output)
    r = run([[return { async_invoke = function(r) r["caf\xe9"] = 1; return { r } end }]], '{"a":1}\n')
    assert.are.equal(1, r.code)
    assert.matches("key that is not valid UTF%-8", r.err)
    -- Valid UTF-8 of every length still passes, and so does an original
    -- string moved elsewhere.
    r = run([[return { async_invoke = function(r) r.t = "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"; r.u = r.s; return { r } end }]],
      '{"s":"\\u00e9"}\n')
    assert.are.equal(0, r.code, r.err)
    assert.are.equal('{"s":"\\u00e9","t":"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80","u":"\xc3\xa9"}\n', r.output)
  end)

  it("emits nothing nested deeper than the 1000 levels it would accept on input", function()
    local body = [[return { async_invoke = function(r)
      local t = {}; local c = t
      for i = 1, r.n - 2 do c[1] = {}; c = c[1] end
      r.z = t
      return { r } end }]]
    local ok = run(body, '{"n":1000}\n')
    assert.are.equal(0, ok.code, ok.err)
    local again = run(PASS, ok.output)
    assert.are.equal(0, again.code, again.err)
    assert.are.equal(ok.output, again.output)
    local deep = run(body, '{"n":1001}\n')
    assert.are.equal(1, deep.code)
    assert.matches("nested more than 1000 levels", deep.err)
  end)

  it("refuses an array with holes even when #t equals its key count", function()
    -- #t may be any border: {1, nil, nil, 4, 5, 6, 7, 8, x = 1, y = 2} has 8
    -- keys and #t == 8, and was written [1,null,null,4,...], x and y dropped.
    local r = run([[return { async_invoke = function(r)
      r.a[2] = nil; r.a[3] = nil; r.a.x = 1; r.a.y = 2
      return { r } end }]], '{"a":[1,2,3,4,5,6,7,8]}\n')
    assert.are.equal(1, r.code, r.output)
    assert.matches("holes or keys other than 1..n", r.err)
    local body = [[
      local json = require("moonwait.json")
      return { async_invoke = function(r)
        local t = json.array({1, 2, 3, 4, 5, 6, 7, 8}); t[2] = nil; t[3] = nil; t.x = 1; t.y = 2
        local s, err = json.encode(t)
        r.res = s or err
        return { r } end }]]
    r = run(body, '{}\n')
    assert.are.equal(0, r.code, r.err)
    assert.matches("holes or keys other than 1..n", r.output)
  end)

  it("lets the metatable reshape a decoded table, as for tables the script builds", function()
    local body = [[
      local json = require("moonwait.json")
      return { async_invoke = function(r)
        if r.k == 1 then json.array(r.o) end                    -- {} -> []
        if r.k == 2 then setmetatable(r.e, nil) end              -- [] -> {}
        if r.k == 3 then setmetatable(r.a, nil); r.a.x = 1 end   -- an object now
        if r.k == 4 then setmetatable(r.a, nil) end              -- keys 1..n: still an array
        return { r } end }]]
    local input = table.concat({
      '{"k":1, "o":{}, "e":[], "a":[1.50,"\\u0041"]}',
      '{"k":2, "o":{}, "e":[], "a":[1.50,"\\u0041"]}',
      '{"k":3, "o":{}, "e":[], "a":[1.50,"\\u0041"]}',
      '{"k":4, "o":{}, "e":[], "a":[1.50,"\\u0041"]}',
      '{"k":5, "o":{}, "e":[], "a":[1.50,"\\u0041"]}',
    }, "\n") .. "\n"
    local r = run(body, input)
    assert.are.equal(0, r.code, r.err)
    assert.are.equal(table.concat({
      '{"k":1,"o":[],"e":[],"a":[1.50,"\\u0041"]}',
      '{"k":2,"o":{},"e":{},"a":[1.50,"\\u0041"]}',
      '{"k":3,"o":{},"e":[],"a":{"1":1.5,"2":"A","x":1}}',
      '{"k":4, "o":{}, "e":[], "a":[1.50,"\\u0041"]}',
      '{"k":5, "o":{}, "e":[], "a":[1.50,"\\u0041"]}',
    }, "\n") .. "\n", r.output)
  end)
  it("survives a script finalizer that raises (ffi.gc, ffi.metatype, newproxy): a warning, no abort", function()
    -- A raising finalizer run by a GC step inside the host's C code was an
    -- unprotected error: LuaJIT printed PANIC and the process died with
    -- every record in flight. Now it is a counted warning.
    local script = [[
      local ffi = require "ffi"
      ffi.cdef "typedef struct { int x; } mw_gc_probe;"
      local T = ffi.metatype("mw_gc_probe", { __gc = function() error("boom metatype") end })
      return { async_invoke = function(r)
        for i = 1, 300 do
          ffi.gc(ffi.new("int[1]"), function() error("boom ffi.gc") end)
          T()
          local u = newproxy(true)
          getmetatable(u).__gc = function() error("boom newproxy") end
        end
        return { r }
      end }]]
    local input = {}
    for i = 1, 300 do input[#input + 1] = '{"i":' .. i .. ',"pad":"' .. string.rep("p", 200) .. '"}\n' end
    local r = run(script, table.concat(input))
    assert.are.equal(0, r.code, r.err)
    assert.are.equal(table.concat(input), r.output)
    assert.matches("a finalizer %(__gc%) failed: [^\n]*boom", r.err)
    assert.not_matches("PANIC", r.err)
    -- Counted, not one line per failure (900 finalizers per record).
    local lines = select(2, r.err:gsub("\n", ""))
    assert.is_true(lines < 12, r.err)
    assert.matches("failures so far", r.err)
  end)
end)
