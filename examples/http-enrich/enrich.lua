-- enrich.lua: GET <LOOKUP_URL><customer>.json for each order. The request
-- parks this record's coroutine only; up to 16 run at once over pooled
-- keep-alive connections.
local http = require "moonwait.http"
local json = require "moonwait.json"

local base = assert(os.getenv("LOOKUP_URL"), "LOOKUP_URL is not set (use examples/http-enrich/run)")

local M = {}

function M.async_invoke(order, ctx)
  local res, err = http.get(base .. order.customer .. ".json", { timeout_ms = 1000 })
  if not res then
    return nil, "lookup of customer " .. tostring(order.customer) .. " failed: " .. err
  end
  if res.status == 404 then
    order.customer_error = "unknown customer"
  elseif res.status ~= 200 then
    return nil, "lookup service answered " .. res.status
  else
    local c = json.decode(res.body)
    order.customer_name, order.country = c.name, c.country
  end
  return { order }
end

return M
