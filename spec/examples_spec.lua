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

  it("http-enrich starts its own nginx and enriches every order", function()
    local code, out, err = H.sh("MOONWAIT_BIN=" .. H.bin .. " timeout 60 examples/http-enrich/run")
    assert.equal(0, code, err)
    local out_t = H.decode_lines(out)
    assert.equal(30, #out_t)
    for i, o in ipairs(out_t) do
      assert.equal(1000 + i, o.order)
      assert.is_truthy(o.customer_name or o.customer_error == "unknown customer")
    end
  end)

  it("redis-lookup starts its own redis-server and enriches every view", function()
    local code, out, err = H.sh("MOONWAIT_BIN=" .. H.bin .. " timeout 60 examples/redis-lookup/run")
    assert.equal(0, code, err)
    local got = H.decode_lines(out)
    assert.equal(25, #got)
    local titled = 0
    for _, o in ipairs(got) do if o.title then titled = titled + 1 end end
    assert.equal(20, titled) -- product 5 is not seeded
  end)

  it("batch-quota batches MGETs under its quota and keeps each user's events in order", function()
    local code, out, err = H.sh("MOONWAIT_BIN=" .. H.bin .. " timeout 60 examples/batch-quota/run")
    assert.equal(0, code, err)
    local got = H.decode_lines(out)
    assert.equal(2862, #got)                -- users u41 and u42 are not seeded: skipped
    local last = {}
    for _, o in ipairs(got) do
      assert.equal("User " .. o.user:sub(2), o.name)
      assert.is_true((last[o.user] or 0) < o.click)  -- keyed: each user's events in order
      last[o.user] = o.click
    end
    assert.matches("skipped=138", err, 1, true)
    local calls = tonumber(err:match("MGET calls: (%d+)"))
    assert.is_true(calls >= 30 and calls < 300, err)  -- batches, not one MGET per event
  end)

  it("cache-and-fanout starts nginx and redis-server, loads each profile once, counts clicks", function()
    local code, out, err = H.sh("MOONWAIT_BIN=" .. H.bin .. " timeout 60 examples/cache-and-fanout/run")
    assert.equal(0, code, err)
    local got = H.decode_lines(out)
    assert.equal(40, #got)
    local clicks, named = {}, 0
    for i, o in ipairs(got) do
      assert.equal(i, o.event) -- ordered
      clicks[o.user] = (clicks[o.user] or 0) + 1
      assert.equal(clicks[o.user], o.clicks) -- INCR per user, in input order
      if o.user == 9 then assert.is_nil(o.name) else assert.is_string(o.name); named = named + 1 end
    end
    assert.equal(35, named) -- user 9 has no profile
    -- one load per user (5 profiles and user 9's 404), however many asked at once
    -- (how many found a load under way depends on timing: misses = loads + waits)
    local hits, misses, loads, waited = err:match("profiles cache: (%d+) hits, (%d+) misses, (%d+) loads %((%d+) callers waited")
    assert.equal(6, tonumber(loads), err)
    assert.equal(40, tonumber(hits) + tonumber(misses))
    assert.equal(tonumber(misses), tonumber(loads) + tonumber(waited))
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
