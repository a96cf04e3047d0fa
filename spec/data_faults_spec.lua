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

local function run(body, input, args, opts)
  local d = H.tmpdir()
  local script = H.script(d, body)
  H.write(d .. "/in", input)
  local r = H.run(string.format("run --script %s --input %s --output %s %s",
    H.q(script), H.q(d .. "/in"), H.q(d .. "/out"), args or ""), opts)
  r.output = H.read(d .. "/out") or ""
  r.dir = d
  return r
end

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
end)
