---@meta moonwait.cache

--- A cache shared by the records (and, by name, by every generation), with
--- one load per key at a time (single flight). Values are copied.
---@class moonwait.cache
local M = {}

---@class moonwait.cache.opts
---@field name? string shared by that name in the process; without one, this generation's own
---@field size? integer most entries (default 1000)
---@field max_bytes? integer most bytes (default: no limit)
---@field ttl? number seconds a value lives (default 0: no expiry)
---@field neg_ttl? number seconds a `nil, err` result lives (default 0: not cached)

---@param opts? moonwait.cache.opts
---@return moonwait.cache.cache
function M.new(opts) end

---@class moonwait.cache.stats
---@field hits integer
---@field misses integer
---@field loads integer
---@field load_errors integer
---@field evictions integer
---@field expired integer
---@field waiters integer
---@field waiting integer
---@field handoffs integer
---@field abandoned integer
---@field loading integer
---@field entries integer
---@field bytes integer
---@field size integer
---@field max_bytes integer
---@field ttl number
---@field neg_ttl number
---@field name string?

---@class moonwait.cache.cache
local cache = {}

--- The cached value (or the `nil, err` of a cached negative result); on a
--- miss, `loader(...)`'s result, loaded once for every record asking.
---@param key string|number
---@param loader fun(...): any, string?
---@param ... any
---@return any value
---@return string? err
function cache:get(key, loader, ...) end

---@param key string|number
---@param value any
---@param ttl? number
---@return true|nil ok
---@return string? err
function cache:set(key, value, ttl) end

---@param key string|number
---@return boolean
function cache:delete(key) end

--- The entry without loading, counting or refreshing it.
---@param key string|number
---@return any value
---@return string? err
---@return number? ttl_left
function cache:peek(key) end

function cache:purge() end

---@return moonwait.cache.stats
function cache:stats() end

return M
