-- Page views in, page views with product data out. `run` starts Redis and
-- passes its port in REDIS_PORT.
return {
  script = "lookup.lua",
  input = "views.jsonl",
  output = "-",
  mode = "unordered",     -- emit as soon as each lookup answers
  capacity = 32,
  timeout_ms = 1000,
  stats = true,
}
