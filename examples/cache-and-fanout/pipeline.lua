-- Click events in, events with the user's profile and click count out.
-- `run` starts the profile service (nginx) and Redis and passes their
-- addresses in PROFILE_URL and REDIS_PORT.
return {
  script = "enrich.lua",
  input = "events.jsonl",
  output = "-",
  mode = "ordered",
  capacity = 16,
  timeout_ms = 2000,
  stats = true,
}
