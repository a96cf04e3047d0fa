-- Orders from a Redis stream in, enriched orders to another stream out.
-- `run` starts Redis and the lookup service and gives each consumer its
-- --input (the stream, the group, its consumer name) and --output.
return {
  script = "enrich.lua",
  mode = "unordered",     -- a stream source has no order to keep across consumers
  capacity = 32,          -- at most 32 entries read and not yet acked per consumer
  timeout_ms = 2000,
}
