---@meta moonwait.socket

--- The cosocket: TCP and TLS with OpenResty's `ngx.socket.tcp` API. Errors
--- end with ` (HOST:PORT)`; match the leading word (`err:find("^timeout")`).
---@class moonwait.socket
local M = {}

--- A new TCP socket object.
---@return moonwait.socket.tcpsock
function M.tcp() end

--- Idle keep-alive connections in the pools.
---@return integer
function M.pool_count() end

---@class moonwait.socket.connect_opts
---@field pool? string the pool's name (default "host:port")
---@field pool_size? integer

---@class moonwait.socket.tcpsock
local tcpsock = {}

---@param host string
---@param port integer
---@param opts? moonwait.socket.connect_opts
---@return 1|nil ok
---@return string? err
function tcpsock:connect(host, port, opts) end

--- TLS on the connected socket; verifies the chain and `server_name` only
--- when `verify` is true (as OpenResty).
---@param reused_session? any not supported: a full handshake is always made
---@param server_name? string
---@param verify? boolean
---@return true|nil ok
---@return string? err
function tcpsock:sslhandshake(reused_session, server_name, verify) end

---@param data string|string[]
---@return integer|nil bytes
---@return string? err
function tcpsock:send(data) end

--- `"*l"` (default: a line without its end), `"*a"` (to the end), or a byte count.
---@param pattern? "*l"|"*a"|integer
---@return string|nil data
---@return string? err
---@return string? partial
function tcpsock:receive(pattern) end

--- An iterator: each call returns the data before the next `pattern`.
---@param pattern string
---@return fun(): string|nil, string?, string?
function tcpsock:receiveuntil(pattern) end

--- One timeout for connect, send and read (ms; 0 or math.huge: none of its own).
---@param ms number
function tcpsock:settimeout(ms) end

---@param connect_ms number
---@param send_ms number
---@param read_ms number
function tcpsock:settimeouts(connect_ms, send_ms, read_ms) end

--- `"ca_file"` (a CA file for verification) or `"max_buffer"` (bytes; default 16 MiB).
---@param name "ca_file"|"max_buffer"
---@param value string|integer
---@return true|nil ok
---@return string? err
function tcpsock:setoption(name, value) end

--- Back to the pool (refused with unread data: `nil, "unread data (HOST:PORT)"`).
---@param idle_ms? integer
---@param pool_size? integer
---@return 1|nil ok
---@return string? err
function tcpsock:setkeepalive(idle_ms, pool_size) end

--- 0 for a fresh connection, else how often it was reused.
---@return integer|nil count
---@return string? err
function tcpsock:getreusedtimes() end

---@return 1|nil ok
---@return string? err
function tcpsock:close() end

return M
