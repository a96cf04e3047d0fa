-- The quickstart pipeline: enrich click events with a (simulated) user
-- profile lookup, at most 8 lookups in flight, 500 ms budget per record.
-- Run it from the repository root with `make quickstart`, or:
--   build/moonwait run examples/quickstart/pipeline.lua
-- Paths are relative to this file.
return {
  script = "enrich.lua",
  input = "events.jsonl",
  output = "-",
  mode = "ordered",       -- outputs in input order; try "unordered"
  capacity = 8,
  timeout_ms = 500,
  stats = true,
}
