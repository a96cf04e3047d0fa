---@meta moonwait.limit

--- Rate limiters for one service among several (token buckets); a named
--- one is shared by every generation.
---@class moonwait.limit
local M = {}

---@class moonwait.limit.opts
---@field name? string
---@field rps number tokens per second
---@field burst? number most tokens at once

---@param opts moonwait.limit.opts
---@return moonwait.limit.limiter
function M.new(opts) end

---@class moonwait.limit.stats
---@field name string?
---@field rps number
---@field burst number
---@field tokens number
---@field taken integer
---@field waits integer

---@class moonwait.limit.limiter
local limiter = {}

--- `n` tokens (default 1): `true` at once or after waiting; `nil, err` at
--- once when they cannot come before the record's deadline.
---@param n? integer
---@return true|nil ok
---@return string? err
function limiter:take(n) end

---@return moonwait.limit.stats
function limiter:stats() end

return M
