---@meta moonwait.log

--- One line on stderr with `file:line`, the arguments passed through
--- `tostring` and joined by single spaces; inside a record the line carries
--- `seq=N`. Also `ctx.log`.
---@class moonwait.log
local M = {}

---@param ... any
function M.debug(...) end

---@param ... any
function M.info(...) end

---@param ... any
function M.warn(...) end

---@param ... any
function M.error(...) end

return M
