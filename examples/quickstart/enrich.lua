-- enrich.lua: adds a user profile to each click event. The "lookup" is a
-- simulated service call: it parks this record's coroutine for 20-120 ms
-- (user 7's lookups hang, to show the timeout handler), while up to 7
-- other records are looked up concurrently.
local time = require "moonwait.time"
local log = require "moonwait.log"

local M = {}

local profiles = {
  [1] = { name = "Ada", tier = "gold" },
  [2] = { name = "Grace", tier = "silver" },
  [3] = { name = "Linus", tier = "bronze" },
}

local lookups = 0

-- A stand-in for an HTTP or Redis call: `value | nil, err`.
local function lookup_profile(user_id)
  lookups = lookups + 1
  if user_id == 7 then
    time.sleep(10)  -- never answers in time: the record's timeout fires
  end
  time.sleep((20 + (user_id * 37) % 100) / 1000)
  local p = profiles[user_id]
  if not p then return nil, "not found" end
  return p
end

function M.open(ctx)
  ctx.log.info("quickstart: enrichment starting")
end

function M.async_invoke(event, ctx)
  local started = time.now()
  local profile, err = lookup_profile(event.user)
  event.lookup_ms = math.floor((time.now() - started) * 1000)
  if profile then
    event.name, event.tier = profile.name, profile.tier
  else
    event.profile_error = err
  end
  return { event }
end

-- Called instead of failing the run when a record's 500 ms budget runs out.
function M.on_timeout(event, ctx)
  event.profile_error = "lookup timed out"
  return { event }
end

function M.close(ctx)
  log.info("quickstart: done after", lookups, "lookups")
end

return M
