-- Regressions found by an adversarial review of the strict JSON layer and
-- the record codec: each `it` is one fault, reproduced end to end through
-- the real binary.
local H = require("helpers")

local PASS = [[return { async_invoke = function(r, ctx) return { r } end }]]

local function run(body, input, args)
  local d = H.tmpdir()
  local script = H.script(d, body)
  H.write(d .. "/in", input)
  local r = H.run(string.format("run --script %s --input %s --output %s %s",
    H.q(script), H.q(d .. "/in"), H.q(d .. "/out"), args or ""))
  r.output = H.read(d .. "/out") or ""
  r.dir = d
  return r
end

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
end)
