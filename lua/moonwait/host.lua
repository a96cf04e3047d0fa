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

-- Edit distance with a swap of neighbours as one edit (as the C side's
-- mw_str_distance), for "did you mean".
local function distance(a, b)
  local d = {}
  for i = 0, #a do d[i] = { [0] = i } end
  for j = 0, #b do d[0][j] = j end
  for i = 1, #a do
    for j = 1, #b do
      local cost = a:byte(i) == b:byte(j) and 0 or 1
      local v = math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
      if i > 1 and j > 1 and a:byte(i) == b:byte(j - 1) and a:byte(i - 1) == b:byte(j) then
        v = math.min(v, d[i - 2][j - 2] + 1)
      end
      d[i][j] = v
    end
  end
  return d[#a][#b]
end

-- The nearest of `names` to `name` (at most a third of its length away, at
-- least 1), or nil.
local function nearest(name, names)
  local best, hit = math.max(1, math.floor(#name / 3)), nil
  for _, cand in ipairs(names) do
    local d = distance(name, cand)
    if d > 0 and d <= best and (not hit or d < best) then best, hit = d, cand end
  end
  return hit
end
M.nearest = nearest

-- The moonwait modules written in Lua (lua/moonwait/*.lua); the C ones are
-- found in package.preload. For "did you mean" on a mistyped require.
local lua_modules = { "moonwait.redis", "moonwait.retry", "moonwait.thread", "moonwait.cache" }

-- require, with a short error for a module that is not found: the module's
-- name, the script's file:line of the require, the first two places
-- searched (LuaJIT lists every one: 19 lines), and the nearest moonwait
-- module's name. The search is done first, the way LuaJIT's loaders do,
-- so a module that exists is loaded by the real require (its own errors
-- keep their traceback). With package.loaders changed, the real require
-- answers alone. The message is marked in the registry so the host adds
-- no traceback to it (src/lua/runtime.c, rt_untraced).
function M.short_require()
  local real, registry = require, debug.getregistry()
  local loaders, searchpath = package.loaders, package.searchpath
  local pkg = package
  local function findable(name)
    if type(pkg.loaded) ~= "table" or type(pkg.preload) ~= "table" or type(pkg.path) ~= "string"
      or type(pkg.cpath) ~= "string" then
      return true -- replaced by the script: the real require says what it says
    end
    if pkg.loaded[name] ~= nil or pkg.preload[name] ~= nil then return true end
    if searchpath(name, pkg.path) or searchpath(name, pkg.cpath) then return true end
    local root = name:match("^([^.]+)%.")
    return root ~= nil and searchpath(root, pkg.cpath) ~= nil
  end
  local function places(name)
    local out, total, rel = {}, 0, name:gsub("%.", "/")
    for tmpl in (pkg.path .. ";" .. pkg.cpath):gmatch("[^;]+") do
      total = total + 1
      if #out < 2 then out[#out + 1] = (tmpl:gsub("%?", function() return rel end)) end
    end
    return out, total
  end
  local function known()
    local names = {}
    for n in pairs(pkg.preload) do
      if type(n) == "string" and not n:find("._", 1, true) then names[#names + 1] = n end
    end
    for _, n in ipairs(lua_modules) do names[#names + 1] = n end
    table.sort(names)
    return names
  end
  rawset(_G, "require", function(name)
    if type(name) ~= "string" or pkg.loaders ~= loaders or #loaders ~= 4 or findable(name) then
      return real(name)
    end
    local p, total = places(name)
    local near = nearest(name, known())
    local info = debug.getinfo(2, "Sl")
    local where = info and (info.currentline or 0) > 0 and (info.short_src .. ":" .. info.currentline .. ": ") or ""
    local msg = where .. "module '" .. name .. "' not found" .. (near and " (did you mean '" .. near .. "'?)" or "")
      .. ": searched " .. table.concat(p, ", ") .. (total > #p and " and " .. (total - #p) .. " more" or "")
    registry["moonwait.untraced"] = msg
    error(msg, 0)
  end)
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
local entry_points = { "async_invoke", "batch_invoke" }


-- contract(mod, path): the contract's checks one by one, as a list of
-- { check = "what was checked", ok = true | false | "warn", detail = text }.
-- A failing check ends the list (what follows depends on it), except the
-- hooks' names, which only warn. `moonwait check` prints them all; a load
-- (M.check) stops at the first failure.
function M.contract(mod, path)
  local where = path .. ":" .. return_line(path) .. ": "
  local out = {}
  local function add(ok, check, detail)
    out[#out + 1] = { ok = ok, check = check, detail = detail and where .. detail or nil }
    return ok
  end
  if type(mod) ~= "table" then
    local hint = mod == nil and " (did you forget `return M` at the end?)" or ""
    add(false, "returns a module table", "the script must return a table (a module with async_invoke), got "
      .. type(mod) .. hint)
    return out
  end
  if not add(true, "returns a module table") then return out end
  if mod.async_invoke == nil and mod.batch_invoke == nil then
    local hint = ""
    if type(mod.script) == "string" then
      hint = " (this looks like a pipeline file: moonwait check SCRIPT.lua PIPELINE.lua)"
    else
      local fns = false
      for _, v in pairs(mod) do if type(v) == "function" then fns = true; break end end
      if not fns and next(mod) ~= nil then
        hint = " (it returned a table of data, not functions: a record? a script returns its module M)"
      end
    end
    add(false, "has async_invoke or batch_invoke", "the script's module has no async_invoke(record, ctx) function "
      .. "(nor batch_invoke(records, ctxs))" .. hint)
    return out
  end
  for _, name in ipairs(entry_points) do
    if mod[name] ~= nil then
      if type(mod[name]) ~= "function" then
        add(false, name .. " is a function", name .. " must be a function, got " .. type(mod[name]))
        return out
      end
      add(true, name .. " is a function")
    end
  end
  if mod.batch ~= nil and type(mod.batch) ~= "table" then
    add(false, "M.batch is a table", "batch must be a table like { max_size = 100, max_wait_ms = 5 }, got "
      .. type(mod.batch))
    return out
  end
  local hooks = {}
  for _, name in ipairs(optional) do
    local v = mod[name]
    if v ~= nil and type(v) ~= "function" then
      add(false, "its hooks are functions", name .. " must be a function, got " .. type(v))
      return out
    end
    if v ~= nil then hooks[#hooks + 1] = name end
  end
  add(true, "its hooks are functions" .. (#hooks > 0 and " (" .. table.concat(hooks, ", ") .. ")" or " (none defined)"))
  if mod.retry ~= nil and type(mod.retry) ~= "table" then
    add(false, "M.retry is a table", "retry must be a table like { max_attempts = 3, backoff = \"fixed\", "
      .. "delay_ms = 100 }, got " .. type(mod.retry))
    return out
  end
  -- A function under a name near a hook's is a hook moonwait never calls.
  local known = {}
  for _, n in ipairs(optional) do known[#known + 1] = n end
  for _, n in ipairs(entry_points) do known[#known + 1] = n end
  for name, v in pairs(mod) do
    if type(name) == "string" and type(v) == "function" then
      local near = nearest(name, known)
      if near and mod[near] == nil then
        add("warn", "M." .. name .. " is not a hook moonwait calls", "M." .. name .. " is never called by moonwait "
          .. "(did you mean " .. near .. "?)")
      end
    end
  end
  return out
end

-- check(mod, path): true, or nil and "path:line: message" (the first
-- failing check of contract).
function M.check(mod, path)
  for _, r in ipairs(M.contract(mod, path)) do
    if r.ok == false then return nil, r.detail end
  end
  return true
end

-- global_writes(chunk): the globals any function of the compiled chunk
-- (the main chunk included) assigns that do not exist now, as a list of
-- { name =, line = }. Read from LuaJIT's bytecode (GSET), so it finds the
-- assignment inside a function that only runs with the first record,
-- which the strict guard would raise at only then. Called after the main
-- chunk ran: what it declared (rawset) is not reported. Second, the same
-- list for globals read (GGET) that do not exist and are not assigned
-- anywhere in the chunk: a misspelt local or a module used without its
-- require (`moonwait.time.now()`) reads nil, which the guard lets pass.
function M.global_writes(chunk)
  local ok, jutil = pcall(require, "jit.util")
  if not ok then return {} end
  local vmdef_ok, vmdef = pcall(require, "jit.vmdef")
  if not vmdef_ok then return {} end
  local names, found, seen = vmdef.bcnames, {}, {}
  local reads, written = {}, {}
  local op = {}
  for i = 0, #names / 6 - 1 do op[names:sub(i * 6 + 1, i * 6 + 6):match("^%S+")] = i end
  local gset, gget = op.GSET, op.GGET
  if not gset or not gget then return {} end
  -- A file that reads setfenv or module changes where its "globals" go
  -- (a module table): what it assigns cannot be told from here.
  local own_env = false
  local function scan(fn)
    local info = jutil.funcinfo(fn)
    for pc = 1, info.bytecodes or 0 do
      local ins = jutil.funcbc(fn, pc)
      if not ins then break end
      local o = bit.band(ins, 0xff)
      if o == gset or o == gget then
        local name = jutil.funck(fn, -bit.rshift(ins, 16) - 1)
        local line = jutil.funcinfo(fn, pc).currentline
        if o == gget then
          if name == "setfenv" or name == "module" then own_env = true end
          if type(name) == "string" and rawget(_G, name) == nil and not seen["r:" .. name .. ":" .. tostring(line)] then
            seen["r:" .. name .. ":" .. tostring(line)] = true
            reads[#reads + 1] = { name = name, line = line }
          end
        elseif type(name) == "string" and rawget(_G, name) == nil and not seen[name .. ":" .. tostring(line)] then
          seen[name .. ":" .. tostring(line)] = true
          found[#found + 1] = { name = name, line = line }
        end
        if o == gset and type(name) == "string" then written[name] = true end
      end
    end
    for k = -1, -1000000, -1 do
      local c = jutil.funck(fn, k)
      if c == nil then break end
      if type(c) == "proto" then scan(c) end
    end
  end
  scan(chunk)
  if own_env then return {}, {} end
  local by_line = function(a, b) return (a.line or 0) < (b.line or 0) end
  table.sort(found, by_line)
  local unset = {}
  for _, r in ipairs(reads) do
    if not written[r.name] then unset[#unset + 1] = r end
  end
  table.sort(unset, by_line)
  return found, unset
end

return M
