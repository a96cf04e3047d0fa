-- moonwait.retry: ready-made retry predicates for a script module.
--
--   local retry = require "moonwait.retry"
--   M.retry = { max_attempts = 4, backoff = "exponential", initial_delay_ms = 20 }
--   M.retry_on_result = retry.empty_result   -- not found yet: the store lags
--   M.retry_on_error = retry.any_error       -- every failure is worth another try
--
-- A predicate gets (outputs, ctx) or (err, ctx), runs in the record's
-- coroutine context (it may wait on I/O), and returns true to retry.
local M = {}

-- Retry when the attempt returned no output records.
function M.empty_result(outputs)
  return type(outputs) == "table" and #outputs == 0
end

-- Retry on any failure (a raised error or nil, err).
function M.any_error()
  return true
end

return M
