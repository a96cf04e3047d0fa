-- lookup.lua: HGETALL product:<id> for each page view, over pooled
-- connections (redis.connect reuses an idle one when there is one).
local redis = require "moonwait.redis"
local mw = require "moonwait"

local port = os.getenv("REDIS_PORT")
assert(port, "REDIS_PORT is not set (use examples/redis-lookup/run)")
port = tonumber(port)

local M = {}

function M.async_invoke(view, ctx)
  local r, err = redis.connect("127.0.0.1", port, { timeout_ms = 500, pool_size = 32 })
  if not r then return nil, "redis: " .. err end
  local fields, ferr = r:hgetall("product:" .. view.product)
  if fields == nil then return nil, "redis: " .. ferr end
  r:set_keepalive(30000, 32)
  if fields == false then return nil, "redis error: " .. ferr end
  if fields == mw.null or #fields == 0 then
    view.product_error = "unknown product"
  else
    for i = 1, #fields, 2 do view[fields[i]] = fields[i + 1] end
  end
  return { view }
end

return M
