-- The script `moonwait test SPEC.lua` loads (src/app/spectest.c): its open
-- hook runs the spec named by MOONWAIT_TEST_SPEC through moonwait.test, in
-- the hook's fiber, and reports on stdout. Not for use in a pipeline.
local M = {}

function M.open(ctx)
  -- This file's directory came first on package.path (it is the script):
  -- drop it, so a user's `require "redis"` does not find moonwait's own.
  local dir = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$")
  if dir then
    local pat = dir .. "/?.lua;" .. dir .. "/?/init.lua;"
    local s, e = package.path:find(pat, 1, true)
    if s == 1 then package.path = package.path:sub(e + 1) end
  end
  io.stdout:setvbuf("line")
  local ok = require("moonwait.test")._run_spec(os.getenv("MOONWAIT_TEST_SPEC"), ctx, io.stdout)
  if not ok then return nil, "" end
  return true
end

function M.async_invoke(record)
  return { record }
end

return M
