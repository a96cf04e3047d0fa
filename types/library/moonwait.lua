---@meta moonwait
-- LuaLS (lua-language-server) definitions of moonwait's Lua API: the module
-- `moonwait` (this file), its submodules (moonwait/*.lua) and the script
-- contract (contract.lua: the module table M and ctx). Definitions only:
-- never loaded by moonwait. Kept in step with the binary by
-- spec/types_spec.lua. README.md, "Editor support".

---@class moonwait
---@field version string moonwait's version, e.g. "0.1.0"
---@field null lightuserdata JSON null: what the codec gives for `null`, and what encodes as `null` (the same value as `moonwait.json.null` and `moonwait.redis.null`)
---@field time moonwait.time
---@field json moonwait.json
---@field log moonwait.log
---@field socket moonwait.socket
---@field http moonwait.http
---@field cache moonwait.cache
---@field limit moonwait.limit
---@field metrics moonwait.metrics
---@field thread moonwait.thread
local M = {}

---@class moonwait.runtime_stats
---@field handles integer active libuv handles (running timers, reading sockets, ...)
---@field fibers integer coroutines running or waiting (not idle in the pool)
---@field pooled integer idle keep-alive connections
---@field vms integer live script VMs (generations)
---@field refs integer registry refs held in the calling VM
---@field caches integer moonwait.cache stores not yet freed

--- Live counts, for leak checks in tests and diagnostics.
---@return moonwait.runtime_stats
function M.runtime_stats() end

--- Starts `fn(...)` in a child coroutine of the caller; it starts at the
--- loop's next turn and never outlives the caller's run (ngx.thread.spawn).
---@param fn function
---@param ... any
---@return moonwait.thread.handle
function M.spawn(fn, ...) end

--- Waits until one of the given children ends: `true` and its results, or
--- `false` and its error; `nil, "already waited or killed"`.
---@param ... moonwait.thread.handle
---@return boolean|nil ok
---@return any ...
function M.wait(...) end

--- Cancels a child (its I/O released as on a timeout).
---@param t moonwait.thread.handle
---@return true|nil ok
---@return string? err
function M.kill(t) end

--- Runs every function at once and waits for all: a table of each one's
--- first result in argument order (`res.n` the count), or, as soon as one
--- fails (raises or returns `nil, err`), `nil`, its error and its position.
---@param ... fun(): any, any
---@return table|nil results
---@return string? err
---@return integer? position
function M.all(...) end

return M
