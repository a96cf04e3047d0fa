---@meta moonwait.retry

--- Built-in retry predicates, for `M.retry_on_result` / `M.retry_on_error`.
---@class moonwait.retry
local M = {}

--- True when the attempt emitted nothing.
---@param outputs table[]
---@param ctx? moonwait.ctx
---@return boolean
function M.empty_result(outputs, ctx) end

--- Always true: retry every error.
---@param err? string
---@param ctx? moonwait.ctx
---@return boolean
function M.any_error(err, ctx) end

return M
