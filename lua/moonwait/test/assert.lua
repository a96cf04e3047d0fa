-- moonwait.test.assert: the assertions of `moonwait test` specs and how
-- they show values. Each raises at the spec's line that called it (level
-- 2 from the caller), so a failure names SPEC.lua:LINE.
local moonwait = require "moonwait"

local M = {}
local null = moonwait.null
local format, concat = string.format, table.concat

-- ---- values shown in messages -------------------------------------------

local function show(v, depth)
  depth = depth or 0
  if type(v) == "string" then return format("%q", v) end
  if v == null then return "null" end
  if type(v) ~= "table" then return tostring(v) end
  if depth > 3 then return "{...}" end
  local parts, n = {}, #v
  for i = 1, n do parts[#parts + 1] = show(v[i], depth + 1) end
  local keys = {}
  for k in pairs(v) do
    if not (type(k) == "number" and k >= 1 and k <= n and k % 1 == 0) then keys[#keys + 1] = k end
  end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  for _, k in ipairs(keys) do
    local ks = type(k) == "string" and k:match("^[%a_][%w_]*$") and k or "[" .. show(k) .. "]"
    parts[#parts + 1] = ks .. " = " .. show(v[k], depth + 1)
  end
  return "{ " .. concat(parts, ", ") .. " }"
end
M.show = show

local function deep_equal(a, b, seen)
  if a == b then return true end
  if type(a) ~= "table" or type(b) ~= "table" then
    -- int64 cdata from the codec against a plain number
    if (type(a) == "cdata" or type(b) == "cdata") and tonumber(a) and tonumber(b) then
      return tonumber(a) == tonumber(b) and tostring(a):gsub("[LLU]+$", "") == tostring(b):gsub("[LLU]+$", "")
    end
    return false
  end
  seen = seen or {}
  if seen[a] == b then return true end
  seen[a] = b
  for k, v in pairs(a) do
    if not deep_equal(v, b[k], seen) then return false end
  end
  for k in pairs(b) do
    if a[k] == nil then return false end
  end
  return true
end
M.deep_equal = deep_equal

-- ---- assertions ----------------------------------------------------------
-- Each raises at the spec's line that called it (level 2), so a failure
-- names SPEC.lua:LINE.

local assert_ = {}
local function fail(msg, extra)
  error(extra and (msg .. ": " .. extra) or msg, 3)
end
function assert_.equal(expected, actual, msg)
  if expected ~= actual then fail(format("expected %s, got %s", show(expected), show(actual)), msg) end
end
function assert_.same(expected, actual, msg)
  if not deep_equal(expected, actual) then
    fail(format("expected the same as %s, got %s", show(expected), show(actual)), msg)
  end
end
function assert_.truthy(v, msg)
  if not v then fail("expected a true value, got " .. show(v), msg) end
end
function assert_.falsy(v, msg)
  if v then fail("expected false or nil, got " .. show(v), msg) end
end
function assert_.is_nil(v, msg)
  if v ~= nil then fail("expected nil, got " .. show(v), msg) end
end
function assert_.matches(pattern, s, msg)
  if type(s) ~= "string" or not s:find(pattern) then
    fail(format("expected a string matching %s, got %s", show(pattern), show(s)), msg)
  end
end
function assert_.has_error(fn, pattern, msg)
  local ok, err = pcall(fn)
  if ok then fail("expected an error, got none", msg) end
  if pattern and not tostring(err):find(pattern) then
    fail(format("expected an error matching %s, got %s", show(pattern), show(tostring(err))), msg)
  end
end
-- A result of invoke that succeeded (optionally with n outputs).
function assert_.ok(res, n, msg)
  if type(res) ~= "table" or res.ok == nil then fail("expected a result of invoke, got " .. show(res), msg) end
  if not res.ok then fail("expected the record to succeed, it failed: " .. tostring(res.err), msg) end
  if n and #res.outputs ~= n then
    fail(format("expected %d output(s), got %d: %s", n, #res.outputs, show(res.outputs)), msg)
  end
end
-- A result of invoke that failed, its error matching pattern (if given).
function assert_.failed(res, pattern, msg)
  if type(res) ~= "table" or res.ok == nil then fail("expected a result of invoke, got " .. show(res), msg) end
  if res.ok then fail("expected the record to fail, it succeeded with " .. show(res.outputs), msg) end
  if pattern and not tostring(res.err):find(pattern) then
    fail(format("expected an error matching %s, got %s", show(pattern), show(res.err)), msg)
  end
end
function assert_.timed_out(res, msg)
  if type(res) ~= "table" or res.ok == nil then fail("expected a result of invoke, got " .. show(res), msg) end
  if not res.timed_out then
    fail("expected the record to time out; it " .. (res.ok and "succeeded" or "failed: " .. tostring(res.err)), msg)
  end
end
setmetatable(assert_, {
  __call = function(_, v, msg, ...)
    if not v then error(msg or "assertion failed!", 2) end
    return v, msg, ...
  end,
  __index = function(_, k) error("assert." .. tostring(k) .. " does not exist (equal, same, truthy, falsy, is_nil, "
      .. "matches, has_error, ok, failed, timed_out)", 2) end,
})
M.assert = assert_


return M
