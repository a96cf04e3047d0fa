-- spec/support/probe.lua: what a script under test counts about its own
-- process, for the leak checks (H.probe copies it next to the script, which
-- then does `local probe = require "probe"`). Counted in-process: an `ls`
-- run by io.popen could see its pipe's other end before popen closed it.
local ffi = require "ffi"
pcall(ffi.cdef, "typedef struct DIR DIR; DIR *opendir(const char *); int closedir(DIR *); void *readdir(DIR *);")

local P = {}

local function first_line(path)
  local f = assert(io.open(path)) -- closed at once: a handle waiting for the GC is an fd too
  local l = f:read("*l")
  f:close()
  return l
end

-- open fds ("." and ".." and the directory's own fd not counted)
function P.fds()
  local dir = ffi.C.opendir("/proc/self/fd")
  local n = 0
  while ffi.C.readdir(dir) ~= nil do n = n + 1 end
  ffi.C.closedir(dir)
  return n - 3
end

-- what each fd is (said when they grew, to tell what leaked)
function P.fd_list()
  local p = io.popen("ls -l /proc/" .. first_line("/proc/self/stat"):match("^%d+") ..
    "/fd | sed 's/.* \\([0-9]* -> .*\\)/\\1/' | tr '\\n' ' '")
  local s = p:read("*a")
  p:close()
  return s
end

function P.rss_kb()
  return tonumber(first_line("/proc/self/statm"):match("^%d+ (%d+)")) * 4
end

-- registry refs (luaL_ref's slots that hold a value; free ones hold numbers),
-- apart from fibers' threads, which the pool keeps
function P.refs()
  local n = 0
  for k, v in pairs(debug.getregistry()) do
    if type(k) == "number" and type(v) ~= "number" and type(v) ~= "thread" then n = n + 1 end
  end
  return n
end

return P
