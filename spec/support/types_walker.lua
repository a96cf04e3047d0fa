-- The walker of spec/types_spec.lua, run by the real binary
-- (`moonwait run --script types_walker.lua`, one input record): it lists
-- every module a script can require (MODULES: names from the spec, which
-- reads package.preload's list here and lua/moonwait/*.lua), the methods of
-- the objects they make, a record's ctx (a second attempt, so last_error
-- is there), open's ctx, the ctx names its metatable answers (PROBES), and
-- the module fields the host reads from a script's module (through an
-- __index that notes each), and the Redis commands the client's __index
-- makes methods of (REDIS_COMMANDS). One output record: { api = { NAME = keys } }.
local moonwait = require "moonwait"

local api, read = {}, {}

local function keys(t)
  local out = {}
  for k in pairs(t) do
    if type(k) == "string" and k:sub(1, 1) ~= "_" then out[#out + 1] = k end
  end
  table.sort(out)
  return out
end

local function probe(ctx, into)
  for name in (os.getenv("PROBES") or ""):gmatch("[%w_]+") do
    if rawget(ctx, name) == nil and ctx[name] ~= nil then into[#into + 1] = name end
  end
  return into
end

-- Modules: the C ones from package.preload, the Lua ones named by the spec.
local names = {}
for name in pairs(package.preload) do names[#names + 1] = name end
for name in (os.getenv("MODULES") or ""):gmatch("[%w_.]+") do names[#names + 1] = name end
local seen = {}
for _, name in ipairs(names) do
  if not seen[name] and name:find("^moonwait") and not name:find("%._") then
    seen[name] = true
    local ok, mod = pcall(require, name)
    if ok and type(mod) == "table" then api[name] = keys(mod) end
  end
end

-- Objects the modules make.
local socket = require "moonwait.socket"
api["moonwait.socket.tcpsock"] = keys(debug.getmetatable(socket.tcp()).__index)
api["moonwait.limit.limiter"] = keys(debug.getmetatable(require("moonwait.limit").new { rps = 1 }).__index)
api["moonwait.cache.cache"] = keys(debug.getmetatable(require("moonwait.cache").new {}).__index)
api["moonwait.metrics.metric"] = keys(debug.getmetatable(assert(require("moonwait.metrics").counter("types_walker_total", "The walker's probe."))).__index)
local function upvalue(fn, name)
  for i = 1, 200 do
    local n, v = debug.getupvalue(fn, i)
    if n == nil then return nil end
    if n == name then return v end
  end
end
local redis = require "moonwait.redis"
-- A client's metatable's __index is the method table (Redis), whose own
-- __index makes any other name a command.
local Redis = upvalue(redis.connect, "mt").__index
api["moonwait.redis.client"] = keys(Redis)
-- The commands: any name the client's lookup makes a method of.
local cmds = {}
for name in (os.getenv("REDIS_COMMANDS") or ""):gmatch("[%w_]+") do
  if type(Redis[name]) == "function" and name:lower() == name then cmds[#cmds + 1] = name end
end
api["moonwait.redis.commands"] = cmds

local M = setmetatable({}, { __index = function(_, k)
  read[#read + 1] = k
  return nil
end })

function M.open(ctx)
  api["moonwait.hook_ctx"] = probe(ctx, keys(ctx))
  local h = moonwait.spawn(function() end)
  api["moonwait.thread.handle"] = keys(debug.getmetatable(h).__index)
  moonwait.wait(h)
  return true
end

function M.retry_on_error() return true end

function M.async_invoke(record, ctx)
  if ctx.attempt == 1 then return nil, "again" end
  api["moonwait.ctx"] = probe(ctx, keys(ctx))
  local host_read = { async_invoke = true, open = true, retry_on_error = true }
  for _, k in ipairs(read) do host_read[k] = true end
  api["moonwait.module"] = keys(host_read)
  record.api = api
  return { record }
end

return M
