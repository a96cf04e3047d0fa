---@meta moonwait.time

---@class moonwait.time
local M = {}

--- Parks the calling coroutine for `seconds` (fractional, rounded up to
--- whole ms); `sleep(0)` yields once so I/O can run. Raises where it cannot
--- wait (at load time, in on_timeout, in a ctx.defer function).
---@param seconds number
function M.sleep(seconds) end

--- Seconds since the epoch, ms resolution, cached per loop turn (ngx.now()).
---@return number
function M.now() end

return M
