-- enrich_spec.lua: unit tests of enrich.lua without the lookup service.
--   moonwait test examples/http-enrich/enrich_spec.lua
local M = load_script("enrich.lua", { env = { LOOKUP_URL = "http://lookup.test/customers/" } })

describe("enrich.lua", function()
  it("adds the customer's name and country", function()
    http.on("GET", "/customers/c7%.json$", { status = 200, body = { name = "Ada", country = "UK" } })
    local r = invoke(M, { order = 1, customer = "c7" })
    assert.ok(r, 1)
    assert.same({ order = 1, customer = "c7", customer_name = "Ada", country = "UK" }, r.outputs[1])
    assert.equal("http://lookup.test/customers/c7.json", http.calls[1].url)
  end)

  it("marks an unknown customer instead of failing", function()
    http.on("GET", "/customers/", { status = 404 })
    local r = invoke(M, { order = 2, customer = "nobody" })
    assert.ok(r, 1)
    assert.equal("unknown customer", r.outputs[1].customer_error)
  end)

  it("fails the record when the service answers 503", function()
    http.on("GET", "/customers/", { status = 503 })
    assert.failed(invoke(M, { order = 3, customer = "c7" }), "^lookup service answered 503$")
  end)

  it("fails the record with the lookup's error when the service is down", function()
    http.on("GET", "/customers/", { error = "connection refused" })
    assert.failed(invoke(M, { order = 4, customer = "c7" }),
      "^lookup of customer c7 failed: connection refused %(GET http://lookup.test/customers/c7.json%)$")
  end)

  it("gives up after its own 1 s timeout on a slow service", function()
    http.on("GET", "/customers/", { delay = 5 })
    local r = invoke(M, { order = 5, customer = "c7" })
    assert.failed(r, "failed: timeout %(GET ")
  end)

  it("times out with the record when the record's budget is shorter", function()
    http.on("GET", "/customers/", { delay = 5 })
    assert.timed_out(invoke(M, { order = 6, customer = "c7" }, { timeout_ms = 50 }))
  end)
end)
