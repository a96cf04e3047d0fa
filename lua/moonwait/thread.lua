-- moonwait.thread: concurrency inside one record, on the host's child
-- fibers (src/lua/mod_thread.c). Also reachable as moonwait.spawn, wait,
-- kill and all.
--
--   local t = moonwait.spawn(fn, ...)   -- fn(...) runs beside the caller
--   local ok, res = moonwait.wait(t)    -- true, results... | false, err
--   local r, err = moonwait.all(f1, f2) -- { f1's result, f2's result, n = 2 }
--
-- A child inherits its record's deadline; when the function that spawned it
-- ends (returns, raises, times out, is cancelled), every child still
-- running is cancelled and its I/O released.
local core = require "moonwait._thread"

local spawn, wait_index, kill = core.spawn, core.wait_index, core.kill
local select, type, unpack, error = select, type, unpack, error

local M = { spawn = core.spawn, wait = core.wait, kill = core.kill }

-- moonwait.all(fn1, fn2, ...): runs every function at once, each in a child
-- of the caller, and waits for all of them. Returns a table of each
-- function's first result in argument order (with n = the count), or, as
-- soon as one fails (raises, or returns nil, err), nil, its error and its
-- position; the others are cancelled then.
function M.all(...)
  local n = select("#", ...)
  for i = 1, n do
    local fn = select(i, ...)
    if type(fn) ~= "function" then
      error(("moonwait.all: argument %d: function expected, got %s"):format(i, type(fn)), 2)
    end
  end
  local res = { n = n }
  if n == 0 then return res end
  local ts, pos = {}, {}
  for i = 1, n do
    ts[i], pos[i] = spawn((select(i, ...))), i
  end
  local left = n
  while left > 0 do
    local j, ok, v, err = wait_index(unpack(ts, 1, left))
    local i = pos[j]
    if not ok or (v == nil and err ~= nil) then
      for k = 1, left do
        if k ~= j then kill(ts[k]) end
      end
      if ok then return nil, err, i end
      return nil, v, i
    end
    res[i] = v
    ts[j], pos[j] = ts[left], pos[left]
    ts[left], pos[left] = nil, nil
    left = left - 1
  end
  return res
end

return M
