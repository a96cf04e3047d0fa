-- Orders in, orders with their customer out. `run` starts the lookup
-- service and passes its address in LOOKUP_URL.
return {
  script = "enrich.lua",
  input = "orders.jsonl",
  output = "-",
  mode = "ordered",
  capacity = 16,
  timeout_ms = 2000,
  stats = true,
}
