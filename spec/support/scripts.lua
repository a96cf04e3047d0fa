-- spec/support/scripts.lua: scripts more than one spec runs.
local S = {}

-- Sleeps r.d ms (if any), then emits the record with its ctx.seq.
S.SLEEPER = [[
local time = require "moonwait.time"
local M = {}
function M.async_invoke(r, ctx)
  if r.d then time.sleep(r.d / 1000) end
  r.seq = ctx.seq
  return { r }
end
return M
]]

-- Fails each record's first attempt, asks for a retry, then emits
-- { id, attempt }.
S.FAIL_ONCE = [[
local M = {}
M.retry_on_error = function() return true end
function M.async_invoke(r, ctx)
  if ctx.attempt == 1 then error("first try fails") end
  return { { id = r.id, attempt = ctx.attempt } }
end
return M
]]

return S
