-- moonwait.cache: a cache shared by the records (and, by name, by every
-- generation), with one load per key however many records ask at once.
-- The store and the single-flight bookkeeping are in C (src/lua/mod_cache.c,
-- the binding, on cache_store.c, cache_flight.c, cache_value.c);
-- this file is c:get. Also reachable as require("moonwait").cache.
--
--   local cache = require "moonwait.cache"
--   local c = cache.new{ name = "profiles", size = 10000, ttl = 60, neg_ttl = 5 }
--   local v, err = c:get(key, loader, ...)   -- cached, or loader(...) once per key
--   c:set(key, value [, ttl]); c:delete(key); c:peek(key); c:purge(); c:stats()
--
-- Values are copied in and out (a get returns a fresh copy; the loader's own
-- caller gets the loader's value itself). README: "moonwait.cache".
local core = require "moonwait._cache"

local cget, take, store, fail = core.get, core.take, core.store, core.fail
local WAITED = core.WAITED
local type, pcall, error = type, pcall, error

local M = { new = core.new }

-- c:get(key, loader, ...): the cached value of key, or (a miss) the result
-- of loader(...), run once per key for every record asking meanwhile: the
-- first one to miss runs it in its own coroutine (with its own deadline);
-- the others wait for it and get a copy of its result. A result of nil or
-- nil, err is cached for neg_ttl. If the loading record ends first (timed
-- out, cancelled), the first waiter loads instead. If the loader raises,
-- the caller raises with its error and the waiters get nil, err.
function core.methods.get(self, key, loader, ...)
  if type(loader) ~= "function" then
    error("cache:get: argument 2 (loader): a function expected, got " .. type(loader), 2)
  end
  local hit, v, err = cget(self, key)
  if hit then return v, err end
  if v == WAITED then
    hit, v, err = take(self)
    if hit then return v, err end
  end
  -- LOAD, or DIRECT: nowhere to wait (script load time, on_timeout, a
  -- coroutine of the script's own), so the loader runs here, on its own.
  local ok, val, e = pcall(loader, ...)
  if not ok then
    fail(self, key, val)
    error(val, 0)
  end
  store(self, key, val, e)
  return val, e
end

return M
