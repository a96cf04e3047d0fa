---@meta moonwait.json

--- The host's own strict, exact JSON codec (the one that reads and writes
--- records). Integers beyond 2^53 are int64_t cdata; `null` is `moonwait.null`.
---@class moonwait.json
---@field null lightuserdata JSON null (`moonwait.null`)
---@field array_mt table the metatable that marks a table as a JSON array
local M = {}

---@param text string
---@return any|nil value
---@return string? err
function M.decode(text) end

--- Encodes a value (keys of new tables sorted).
---@param value any
---@return string|nil text
---@return string? err
function M.encode(value) end

--- Marks `t` (or a new table) as a JSON array, so an empty one is `[]`.
---@param t? table
---@return table
function M.array(t) end

return M
