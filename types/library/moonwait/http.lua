---@meta moonwait.http

--- An HTTP/1.1 client with keep-alive pools and HTTPS. A non-2xx status is a
--- response, not an error. Errors end with ` (METHOD URL)`.
---@class moonwait.http
local M = {}

---@class moonwait.http.request_opts
---@field method? string default "GET"
---@field headers? table<string, string>
---@field body? string
---@field timeout_ms? number the whole request (default 60000), never past the record's deadline; 0 or math.huge (`ctx.remaining_ms()` without a deadline): no limit of its own
---@field keepalive? boolean return the connection to the pool afterwards (default true)
---@field pool_size? integer
---@field max_body? integer bytes (default 16 MiB)
---@field ssl_verify? boolean HTTPS: verify the chain and the host name (default true)
---@field ca_file? string HTTPS: a CA file instead of the system store
---@field max_header_bytes? integer the response's status line and headers (default 64 KiB)
---@field max_headers? integer header lines in the response (default 100)

---@class moonwait.http.response
---@field status integer
---@field headers table<string, string> any case of a name; repeated headers joined by ", "
---@field body string

---@param url string
---@param opts? moonwait.http.request_opts
---@return moonwait.http.response|nil res
---@return string? err
function M.request(url, opts) end

---@param url string
---@param opts? moonwait.http.request_opts
---@return moonwait.http.response|nil res
---@return string? err
function M.get(url, opts) end

---@param url string
---@param body string
---@param opts? moonwait.http.request_opts
---@return moonwait.http.response|nil res
---@return string? err
function M.post(url, body, opts) end

return M
