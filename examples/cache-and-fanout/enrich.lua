-- enrich.lua: two lookups per event, at once (moonwait.all):
--   * the user's profile, GET <PROFILE_URL><user>.json, through a shared
--     single-flight cache: one request per user however many events ask
--     at the same time; kept 60 s, an unknown user remembered 5 s;
--   * the user's click count, INCR clicks:<user> in Redis.
local moonwait = require "moonwait"
local cache = require "moonwait.cache"
local http = require "moonwait.http"
local json = require "moonwait.json"
local log = require "moonwait.log"
local redis = require "moonwait.redis"

local base = assert(os.getenv("PROFILE_URL"), "PROFILE_URL is not set (use examples/cache-and-fanout/run)")
local port = tonumber((assert(os.getenv("REDIS_PORT"), "REDIS_PORT is not set (use examples/cache-and-fanout/run)")))

-- Named, so a hot reload of this script keeps what was loaded.
local profiles = cache.new { name = "profiles", size = 10000, ttl = 60, neg_ttl = 5 }

local function load_profile(user)
  local res, err = http.get(base .. user .. ".json", { timeout_ms = 1000 })
  if not res then return nil, err end
  if res.status == 404 then return nil, "unknown user " .. user end
  if res.status ~= 200 then return nil, "profile service answered " .. res.status end
  return json.decode(res.body)
end

local function profile(user)
  local p, err = profiles:get(user, load_profile, user)
  if p == nil and err and err:find("^unknown user") then
    return { unknown = true } -- not a failure: the event goes out without a name
  end
  return p, err
end

local function clicks(user)
  local red, err = redis.connect("127.0.0.1", port)
  if not red then return nil, err end
  local n, e = red:incr("clicks:" .. user)
  red:set_keepalive()
  if not n then return nil, e end
  return n
end

local M = {}

function M.async_invoke(event, ctx)
  local res, err = moonwait.all(
    function() return profile(event.user) end,
    function() return clicks(event.user) end)
  if not res then return nil, err end -- the first failure, which names its URL or host:port
  local p = res[1]
  event.name, event.country, event.clicks = p.name, p.country, res[2]
  return { event }
end

function M.close()
  local s = profiles:stats()
  log.info(("profiles cache: %d hits, %d misses, %d loads (%d callers waited for another's load)")
    :format(s.hits, s.misses, s.loads, s.waiters))
end

return M
