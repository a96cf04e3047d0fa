-- The shipped examples and the install layout keep working.
local H = require("helpers")

describe("examples", function()
  after_each(H.cleanup)

  it("quickstart runs and enriches every event in order", function()
    local r = H.run("run examples/quickstart/pipeline.lua")
    assert.equal(0, r.code, r.err)
    local out = H.decode_lines(r.out)
    local records, watermarks, timed_out, named = 0, 0, 0, 0
    local last_ts = 0
    for _, o in ipairs(out) do
      if o["$watermark"] then
        watermarks = watermarks + 1
        assert.is_true(o["$watermark"] >= last_ts)
      else
        records = records + 1
        assert.is_true(o.ts > last_ts)   -- ordered mode: input order
        last_ts = o.ts
        if o.profile_error == "lookup timed out" then timed_out = timed_out + 1 end
        if o.name then named = named + 1 end
      end
    end
    assert.equal(24, records)
    assert.equal(3, watermarks)
    assert.equal(3, timed_out)            -- user 7's lookups hang
    assert.equal(9, named)                -- users 1-3 have profiles
    assert.matches("moonwait: summary: records_in=24 records_out=24", r.err, 1, true)
  end)

  it("installs a binary that finds its Lua modules", function()
    local d = H.tmpdir()
    local code, _, err = H.sh(string.format("make -s install PREFIX=%s/prefix BUILD=%s >/dev/null",
      d, H.bin:match("^(.*)/moonwait$")))
    assert.equal(0, code, err)
    H.script(d, [[return { async_invoke = function(r) return { r } end }]])
    local c2, out, err2 = H.sh(string.format("cd %s && printf '{\"a\":1}\\n' | %s/prefix/bin/moonwait run --script script.lua", d, d))
    assert.equal(0, c2, err2)
    assert.equal('{"a":1}\n', out)
  end)
end)
