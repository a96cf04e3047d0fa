-- moonwait.host: policy the C host applies once per Lua VM (src/lua/vm.c
-- calls it): the guard against accidental globals and the script contract
-- check. Kept in Lua because neither is hot and both are easier to read here.
local M = {}

local type, error, rawset, setmetatable, tostring = type, error, rawset, setmetatable, tostring
local io_open = io.open

-- Writing a global that was not declared raises, naming the variable, so a
-- missing `local` is caught at its line instead of leaking state between
-- records. Reads are left alone: `if some_global then` stays legal.
-- A script that really wants a global uses rawset(_G, name, value).
function M.strict(G)
  setmetatable(G, {
    __newindex = function(_, name, _)
      error("assignment to undeclared global '" .. tostring(name)
        .. "' (declare it local, or use rawset(_G, name, value))", 2)
    end,
  })
end

-- Things a script must not do to the host process. os.exit would end it at
-- once, with completed records still in the output buffer and no close():
-- it raises instead, so the record (or open/close, or the load) fails like
-- any error and --on-error routes it. When moonwait's input is stdin, reading
-- stdin from the script would take lines meant for moonwait (and race its
-- reads): io.read, io.lines() and io.stdin raise; io.open of a file and
-- io.lines(file) still work.
-- A finalizer that raises propagates into whatever allocation ran the GC
-- step. In the host's own C code that is an unprotected error and LuaJIT
-- aborts the whole process ("PANIC: unprotected error"), losing every
-- record in flight. Finalizers a script can set (ffi.gc, ffi.metatype's
-- __gc, newproxy's __gc; a table's __gc never runs in LuaJIT) are wrapped
-- so that an error is logged as a warning and goes no further.
local failed = 0

-- Said at the 1st, 10th, 100th... failure, with the count: a finalizer that
-- always fails must not flood stderr. Outside any record's coroutine and
-- through pcall (a C caller), so the line names neither the record whose
-- allocation happened to run the GC step nor this file.
local function finalizer_failed(err)
  failed = failed + 1
  local n = failed
  while n % 10 == 0 do n = n / 10 end
  if n ~= 1 then return end
  local msg = "a finalizer (__gc) failed: " .. tostring(err)
    .. (failed > 1 and " (" .. failed .. " failures so far)" or "")
  local okl, log = pcall(require, "moonwait.log")
  if not okl then io.stderr:write("moonwait: [warn] ", msg, "\n") return end
  coroutine.wrap(function() pcall(log.warn, msg) end)()
end

local function safe_finalizer(f)
  if type(f) ~= "function" then return f end
  return function(...)
    local ok, err = pcall(f, ...)
    if not ok then finalizer_failed(err) end
  end
end

local function guard_finalizers()
  local ok, ffi = pcall(require, "ffi")
  if ok then
    local gc, metatype = ffi.gc, ffi.metatype
    ffi.gc = function(cd, f) return gc(cd, safe_finalizer(f)) end
    ffi.metatype = function(ct, mt)
      if type(mt) == "table" and mt.__gc ~= nil then rawset(mt, "__gc", safe_finalizer(mt.__gc)) end
      return metatype(ct, mt)
    end
  end
  local np = newproxy
  if np then
    -- A new metatable's __gc is wrapped when it is set.
    local wrap = { __newindex = function(t, k, v)
      if k == "__gc" then v = safe_finalizer(v) end
      rawset(t, k, v)
    end }
    rawset(_G, "newproxy", function(arg)
      local u = np(arg)
      if arg == true then setmetatable(getmetatable(u), wrap) end
      return u
    end)
  end
end

function M.guard(stdin_is_input)
  guard_finalizers()
  os.exit = function()
    error("os.exit is not allowed in a script; return nil, err to fail a record"
      .. " (or raise an error)", 2)
  end
  if not stdin_is_input then return end
  local msg = "moonwait reads stdin (--input -): a script cannot read it"
    .. " (io.read, io.lines(), io.stdin); read a file with io.open instead"
  local stdin, real_input, read, lines = io.stdin, io.input, io.read, io.lines
  local proxy = setmetatable({}, {
    __index = function() error(msg, 2) end,
    __tostring = function() return "file (stdin: taken by moonwait)" end,
  })
  io.stdin = proxy
  io.input = function(f)
    if f == nil then
      local cur = real_input()
      if cur == stdin then return proxy end
      return cur
    end
    if f == proxy or f == stdin then error(msg, 2) end
    return real_input(f)
  end
  io.read = function(...)
    if real_input() == stdin then error(msg, 2) end
    return read(...)
  end
  io.lines = function(name, ...)
    if name == nil and real_input() == stdin then error(msg, 2) end
    return lines(name, ...)
  end
end

-- The line of the last top-level `return` in the file, so that a contract
-- error points at the statement that returned the module.
local function return_line(path)
  local f = io_open(path, "r")
  if not f then return 1 end
  local n, last = 0, nil
  for line in f:lines() do
    n = n + 1
    if line:match("^return[%s{(]") or line == "return" then last = n end
  end
  f:close()
  return last or (n > 0 and n or 1)
end

local optional = { "on_timeout", "open", "close", "retry_on_result", "retry_on_error", "export_state" }

-- check(mod, path): true, or nil and "path:line: message".
function M.check(mod, path)
  local where = path .. ":" .. return_line(path) .. ": "
  if type(mod) ~= "table" then
    return nil, where .. "the script must return a table (a module with async_invoke), got "
      .. type(mod)
  end
  if mod.async_invoke == nil and mod.batch_invoke == nil then
    return nil, where .. "the script's module has no async_invoke(record, ctx) function "
      .. "(nor batch_invoke(records, ctxs))"
  end
  for _, name in ipairs({ "async_invoke", "batch_invoke" }) do
    if mod[name] ~= nil and type(mod[name]) ~= "function" then
      return nil, where .. name .. " must be a function, got " .. type(mod[name])
    end
  end
  if mod.batch ~= nil and type(mod.batch) ~= "table" then
    return nil, where .. "batch must be a table like { max_size = 100, max_wait_ms = 5 }, got " .. type(mod.batch)
  end
  for _, name in ipairs(optional) do
    local v = mod[name]
    if v ~= nil and type(v) ~= "function" then
      return nil, where .. name .. " must be a function, got " .. type(v)
    end
  end
  if mod.retry ~= nil and type(mod.retry) ~= "table" then
    return nil, where .. "retry must be a table like { max_attempts = 3, backoff = \"fixed\", delay_ms = 100 }, got "
      .. type(mod.retry)
  end
  return true
end

return M
