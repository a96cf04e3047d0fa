---@meta moonwait.redis

--- A RESP2 client on moonwait.socket (lua-resty-redis's spirit). Replies:
--- status as a string, integers as numbers (beyond 2^53 int64_t cdata),
--- bulks as strings, nil bulks as `moonwait.null`, multi-bulks as arrays.
--- An error reply is `false, msg`; a network failure is `nil, err` and
--- closes the connection.
---@class moonwait.redis
---@field null lightuserdata a nil bulk reply (`moonwait.null`)
local M = {}

---@class moonwait.redis.connect_opts
---@field timeout_ms? number connect, send and read (ms; default 5000; 0 or math.huge: no limit of its own)
---@field pool? string the pool's name (default host:port)
---@field pool_size? integer
---@field user? string Redis 6 ACL user (with password)
---@field password? string AUTH on a fresh connection
---@field db? integer SELECT on a fresh connection (default 0)
---@field max_reply_bytes? integer per reply (default 64 MiB)
---@field max_elements? integer values in all of a reply's arrays (default 1048576)
---@field max_depth? integer arrays nested in arrays (default 64)

--- A connection (from the pool when there is one).
---@param host string
---@param port integer
---@param opts? moonwait.redis.connect_opts
---@return moonwait.redis.client|nil client
---@return string? err
function M.connect(host, port, opts) end

--- A connection. Besides these methods, every Redis command is a method of
--- its lower-case name (`r:get(k)`, `r:hset(k, f, v)`, `r:mget(...)`): see
--- moonwait.redis.commands.
---@class moonwait.redis.client: moonwait.redis.commands
local client = {}

--- The generic form: `r:call("HSET", "user:7", "name", "Ada")`.
---@param cmd string
---@param ... string|number|boolean|ffi.cdata*
---@return any|false|nil reply
---@return string? err
function client:call(cmd, ...) end

--- Commands from now on are queued (each returns "QUEUED") until commit_pipeline.
function client:init_pipeline() end

function client:cancel_pipeline() end

--- Sends the queued commands in one write: their replies in order (an error
--- reply as `{ false, msg }`), or `nil, err`.
---@return any[]|nil replies
---@return string? err
function client:commit_pipeline() end

---@param idle_ms? integer
---@param pool_size? integer
---@return 1|nil ok
---@return string? err
function client:set_keepalive(idle_ms, pool_size) end

---@return 1|nil ok
---@return string? err
function client:close() end

---@return integer|nil count
---@return string? err
function client:get_reused_times() end

--- Every command is a method (made on first use); a few common ones, for
--- completion. Each returns the reply, `false, msg` for an error reply, or
--- `nil, err`.
---@class moonwait.redis.commands
---@field get fun(self: moonwait.redis.client, key: string): string|lightuserdata|false|nil, string?
---@field set fun(self: moonwait.redis.client, key: string, value: string|number, ...: any): string|false|nil, string?
---@field mget fun(self: moonwait.redis.client, ...: string): any[]|false|nil, string?
---@field hget fun(self: moonwait.redis.client, key: string, field: string): string|lightuserdata|false|nil, string?
---@field hset fun(self: moonwait.redis.client, key: string, ...: string|number): integer|false|nil, string?
---@field hgetall fun(self: moonwait.redis.client, key: string): string[]|false|nil, string?
---@field incr fun(self: moonwait.redis.client, key: string): integer|false|nil, string?
---@field incrby fun(self: moonwait.redis.client, key: string, n: integer): integer|false|nil, string?
---@field del fun(self: moonwait.redis.client, ...: string): integer|false|nil, string?
---@field exists fun(self: moonwait.redis.client, ...: string): integer|false|nil, string?
---@field expire fun(self: moonwait.redis.client, key: string, seconds: integer): integer|false|nil, string?
---@field sadd fun(self: moonwait.redis.client, key: string, ...: string): integer|false|nil, string?
---@field sismember fun(self: moonwait.redis.client, key: string, member: string): integer|false|nil, string?
---@field xadd fun(self: moonwait.redis.client, key: string, ...: string): string|false|nil, string?
---@field ping fun(self: moonwait.redis.client): string|false|nil, string?

return M
