-- spec/helpers.lua: drive the real moonwait binary from busted, as Neovim's
-- functional tests do: a fresh process per run, real files and pipes, and
-- polling (never fixed sleeps) for asynchronous effects.
local H = {}

H.bin = os.getenv("MOONWAIT_BIN") or "build/moonwait"
-- MOONWAIT_WRAPPER runs every moonwait under e.g. valgrind (make valgrind).
H.wrapper = os.getenv("MOONWAIT_WRAPPER") or ""
H.luajit = "luajit"

local function sh_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
H.q = sh_quote

function H.read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

function H.write(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
  return path
end

function H.exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end

-- A private temporary directory for one test; removed by H.cleanup().
local dirs = {}
function H.tmpdir()
  local p = io.popen("mktemp -d /tmp/moonwait-spec.XXXXXX")
  local d = p:read("*l")
  p:close()
  dirs[#dirs + 1] = d
  return d
end

function H.cleanup()
  for _, d in ipairs(dirs) do os.execute("rm -rf " .. sh_quote(d)) end
  dirs = {}
end

-- Run a shell command; returns exit code, stdout, stderr.
function H.sh(cmd)
  local d = H.tmpdir()
  local full = string.format("(%s) >%s/out 2>%s/err; echo $? >%s/code",
    cmd, d, d, d)
  os.execute(full)
  local code = tonumber(H.read(d .. "/code"))
  return code, H.read(d .. "/out") or "", H.read(d .. "/err") or ""
end

-- The command line for moonwait with `args` (a string, already quoted).
function H.cmd(args)
  return string.format("%s %s %s", H.wrapper, sh_quote(H.bin), args)
end

-- Run moonwait. opts.input: a string fed on stdin; opts.dir: cwd.
-- Returns a result table {code, out, err, lines}.
function H.run(args, opts)
  opts = opts or {}
  local d = H.tmpdir()
  local stdin = "/dev/null"
  if opts.input then stdin = H.write(d .. "/stdin", opts.input) end
  local cmd = string.format("%scd %s && timeout %d %s <%s",
    opts.env or "", sh_quote(opts.dir or "."), opts.timeout or 60, H.cmd(args), stdin)
  local code, out, err = H.sh(cmd)
  return { code = code, out = out, err = err, lines = H.lines(out) }
end

function H.lines(s)
  local t = {}
  for l in s:gmatch("([^\n]*)\n") do t[#t + 1] = l end
  return t
end

-- Decode output lines with a plain cjson.
local cjson = require("cjson")
function H.decode_lines(s)
  local t = {}
  for _, l in ipairs(H.lines(s)) do t[#t + 1] = cjson.decode(l) end
  return t
end
H.json = cjson

-- Write a script file into dir; returns its path.
function H.script(dir, body, name)
  return H.write(dir .. "/" .. (name or "script.lua"), body)
end

-- Copy spec/support/probe.lua (fds, fd_list, rss_kb, refs: a script's leak
-- counters) into dir, where the script finds it as `require "probe"`.
function H.probe(dir)
  local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
  return H.write(dir .. "/probe.lua", assert(H.read(here .. "support/probe.lua")))
end

-- Run `body` as the script over `input` (a string) with extra flags `args`,
-- in a fresh temp dir (opts as for H.run; opts.dir is set). The result of
-- H.run plus `output` (the --output file's bytes) and `dir`.
function H.run_script(body, input, args, opts)
  local d = H.tmpdir()
  opts = opts or {}
  opts.dir = d
  local script = H.script(d, body)
  H.write(d .. "/in", input)
  local r = H.run(string.format("run --script %s --input %s --output %s %s",
    sh_quote(script), sh_quote(d .. "/in"), sh_quote(d .. "/out"), args or ""), opts)
  r.output = H.read(d .. "/out") or ""
  r.dir = d
  return r
end

-- JSON lines from a list of tables.
function H.jsonl(list)
  local b = {}
  for _, v in ipairs(list) do b[#b + 1] = type(v) == "string" and v or cjson.encode(v) end
  return table.concat(b, "\n") .. "\n"
end

-- SIGKILL the moonwait whose pid is in dir/pid and wait until it is gone
-- (its lock released, its files no longer written), not a fixed time.
-- Returns the pid.
function H.kill9(dir)
  local pid = (H.read(dir .. "/pid") or ""):match("%d+")
  assert(pid, "no pid in " .. dir)
  os.execute("kill -9 " .. pid .. " 2>/dev/null")
  assert(H.wait_for(function()
    local st = H.read("/proc/" .. pid .. "/stat")
    return not st or st:match("^%d+ %b() (%a)") == "Z"
  end, 30), "pid " .. pid .. " survived SIGKILL")
  return pid
end

-- Poll `fn` until it returns a truthy value or `secs` pass.
function H.wait_for(fn, secs)
  local deadline = os.time() + (secs or 10)
  repeat
    local v = fn()
    if v then return v end
    os.execute("sleep 0.05")
  until os.time() > deadline
  return fn()
end

-- Start `moonwait run ARGS` in the background in dir (stdout to dir/out,
-- stderr to dir/err, its pid in dir/pid, its exit status in dir/rc once it
-- ends), with `env` (shell assignments) before it. Returns the pid and a
-- wait(secs) that gives the exit status, the output and stderr.
function H.start_run(dir, args, env)
  os.execute(string.format(
    "cd %s && { %s %s run %s >out 2>err & echo $! >pid; wait $!; echo $? >rc; } >/dev/null 2>&1 &",
    dir, env or "", H.cmd(""), args))
  local pid = H.wait_for(function() return (H.read(dir .. "/pid") or ""):match("%d+") end, 30)
  assert(pid, "moonwait did not start")
  local function wait(secs)
    local rc = H.wait_for(function() return H.read(dir .. "/rc") end, secs or 60)
    return tonumber(rc and rc:match("%d+")), H.read(dir .. "/out") or "", H.read(dir .. "/err") or ""
  end
  return pid, wait
end

-- Wait (up to a generous bound that only matters when something is wrong)
-- until moonwait's stderr in dir/err has `text`; fails naming it otherwise.
function H.wait_err(dir, text, secs)
  local ok = H.wait_for(function() return (H.read(dir .. "/err") or ""):find(text, 1, true) end, secs or 30)
  assert(ok, "waited for '" .. text .. "' in:\n" .. (H.read(dir .. "/err") or ""))
end

return H
