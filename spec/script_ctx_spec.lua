-- The ctx a script's functions get, through the real binary: what the
-- split of src/lua/script.c (vm.c, invoke.c, hooks.c) must carry from an
-- attempt to its retry predicate.
local H = require("helpers")

describe("the script's ctx", function()
  after_each(H.cleanup)

  -- Regression: the predicate's ctx is built from what the attempt kept
  -- (seq, input line, attempt, deadline, last_error), in another fiber.
  it("gives retry predicates the attempt's seq, line, attempt, deadline and last_error", function()
    local d = H.tmpdir()
    H.script(d, [[
local M = {}
M.retry = { max_attempts = 2, backoff = "fixed", delay_ms = 1 }
local function note(kind, ctx)
  local f = assert(io.open("pred", "a"))
  f:write(kind, " seq=", ctx.seq, " line=", ctx.line, " attempt=", ctx.attempt,
          " last_error=", tostring(ctx.last_error), " deadline=", tostring(ctx.deadline ~= nil), "\n")
  f:close()
end
function M.retry_on_error(err, ctx) note("error(" .. err .. ")", ctx) return true end
function M.retry_on_result(out, ctx) note("result(" .. #out .. ")", ctx) return false end
function M.async_invoke(r, ctx)
  if ctx.attempt == 1 then error("first " .. r.id, 0) end
  return { r }
end
return M
]])
    local r = H.run("run --script script.lua --timeout 5000", { dir = d, input = '{"id":1}\n\n{"id":2}\n' })
    assert.equal(0, r.code, r.err)
    assert.same({ '{"id":1}', '{"id":2}' }, r.lines)
    local f = assert(io.open(d .. "/pred"))
    local seen = {}
    for l in f:lines() do seen[#seen + 1] = l end
    f:close()
    table.sort(seen)
    assert.same({
      "error(first 1) seq=1 line=1 attempt=1 last_error=nil deadline=true",
      "error(first 2) seq=2 line=3 attempt=1 last_error=nil deadline=true",
      "result(1) seq=1 line=1 attempt=2 last_error=first 1 deadline=true",
      "result(1) seq=2 line=3 attempt=2 last_error=first 2 deadline=true",
    }, seen)
  end)

  it("keeps its field names out of the script's reach (a write to getmetatable(ctx) ended the process)", function()
    -- The names were interned at [1..] of the ctx metatable, which
    -- getmetatable(ctx) returns: mt[1] = nil made the next record's ctx a
    -- C-API error outside any pcall (PANIC, nothing emitted); mt[2] = "seq"
    -- renamed the next records' fields.
    for _, w in ipairs({ 1, 2 }) do
      local r = H.run_script([[
return { async_invoke = function(r, ctx)
  if r.id == 2 then
    local mt = getmetatable(ctx)
    mt[2] = "seq"
    mt[1] = nil
  end
  return { { id = r.id, seq = ctx.seq, line = ctx.line, attempt = ctx.attempt } }
end }]], '{"id":1}\n{"id":2}\n{"id":3}\n{"id":4}\n', "--capacity 1 --workers " .. w)
      assert.equal(0, r.code, r.err)
      local out = H.decode_lines(r.output)
      assert.equal(4, #out)
      for i, o in ipairs(out) do assert.same({ id = i, seq = i, line = i, attempt = 1 }, o) end
    end
  end)
end)
