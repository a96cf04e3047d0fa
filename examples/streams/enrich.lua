-- enrich.lua: GET <LOOKUP_URL><customer> for each order read from the
-- stream, and tag the result with who processed it: the consumer (CONSUMER,
-- set by `run`), the stream entry id and its delivery count. The output and
-- the entry's XACK are committed together, so each order is written to the
-- output stream exactly once whichever consumer takes it.
local http = require "moonwait.http"
local json = require "moonwait.json"

local base = assert(os.getenv("LOOKUP_URL"), "LOOKUP_URL is not set (use examples/streams/run)")
local consumer = os.getenv("CONSUMER") or "?"

local M = {}

function M.async_invoke(order, ctx)
  local res, err = http.get(base .. json.encode(order.customer), { timeout_ms = ctx.remaining_ms() })
  if not res then return nil, "lookup of customer " .. tostring(order.customer) .. " failed: " .. err end
  if res.status == 404 then
    order.customer_error = "unknown customer"
  elseif res.status ~= 200 then
    return nil, "lookup service answered " .. res.status
  else
    local c = json.decode(res.body)
    order.customer_name, order.tier = c.name, c.tier
  end
  order.consumer = consumer
  order.entry = ctx.source_id
  order.deliveries = ctx.deliveries
  return { order }
end

return M
