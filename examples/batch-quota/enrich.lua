-- enrich.lua: user names from Redis, one MGET per batch, at most 200 MGETs
-- a second (the quota counts requests, so the limiter is taken once per
-- call; --rate-limit would count records).
local redis = require "moonwait.redis"
local limit = require "moonwait.limit"
local log = require "moonwait.log"
local null = require("moonwait").null

local port = os.getenv("REDIS_PORT")
assert(port, "REDIS_PORT is not set (use examples/batch-quota/run)")
port = tonumber(port)

local quota = limit.new{ name = "redis", rps = 200 }

local M = { batch = { max_size = 100, max_wait_ms = 5 } }

function M.batch_invoke(records, ctxs)
  local ok, err = quota:take()              -- one token per MGET
  if not ok then return nil, err end
  local r, cerr = redis.connect("127.0.0.1", port, { timeout_ms = 500 })
  if not r then return nil, "redis: " .. cerr end
  local keys = {}
  for i, rec in ipairs(records) do keys[i] = "user:" .. rec.user end
  local names, merr = r:call("MGET", unpack(keys))
  if not names then return nil, "redis: " .. merr end
  r:set_keepalive()
  local results, errs = {}, {}
  for i, rec in ipairs(records) do
    if names[i] == null then
      errs[i] = "no such user " .. rec.user   -- this record alone fails
    else
      rec.name = names[i]
      results[i] = { rec }
    end
  end
  return results, errs
end

function M.close()
  local s = quota:stats()
  log.info("MGET calls:", s.taken, "of which waited for a token:", s.waits)
end

return M
