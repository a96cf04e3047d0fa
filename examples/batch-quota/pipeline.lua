-- Click events in, click events with the user's name out. `run` starts
-- Redis and passes its port in REDIS_PORT.
return {
  script = "enrich.lua",
  input = "events.jsonl",
  output = "-",
  mode = "keyed", key = "user",   -- one user's events in input order
  capacity = 1000,
  timeout_ms = 2000,
  on_error = "skip",              -- an unknown user is dropped and counted
  stats = true,
}
