---@meta moonwait.thread

--- Concurrency inside one record (ngx.thread's names); also at
--- `moonwait.spawn` etc. Children never outlive the function that spawned them.
---@class moonwait.thread
local M = {}

---@class moonwait.thread.handle
local handle = {}

--- "running", "done" (ended, not yet waited) or "gone".
---@return "running"|"done"|"gone"
function handle:status() end

---@param fn function
---@param ... any
---@return moonwait.thread.handle
function M.spawn(fn, ...) end

---@param ... moonwait.thread.handle
---@return boolean|nil ok
---@return any ...
function M.wait(...) end

---@param t moonwait.thread.handle
---@return true|nil ok
---@return string? err
function M.kill(t) end

---@param ... fun(): any, any
---@return table|nil results
---@return string? err
---@return integer? position
function M.all(...) end

return M
