-- spec/support/streams.lua: helpers for the Redis Streams specs
-- (spec/streams_spec.lua) and scripts/streams-soak.
--
--   ST.fill(srv, key, n [, opts])      n entries in one `redis-cli --pipe`
--   ST.read(srv, key)                  every entry: { id =, fields = {k = v}, pairs = {k, v, ...} }
--   ST.pending(srv, key, group)        count, { [consumer] = count }  (XPENDING summary)
--   ST.pending_entries(srv, key, group) { { id, consumer, idle_ms, deliveries }, ... }
--   ST.check_once(entries, n [, opts]) which of the ids 1..n are missing or duplicated
--   ST.call(srv, key, cmd, ...)        one command on the node serving key
--   ST.spawn(args [, opts])            a moonwait in the background (kill -9, SIGSTOP, ...)
--   ST.kill_trial(opts)                the kill -9 harness: consumers killed and restarted
--
-- `srv` is a server from spec/support/servers.lua: servers.redis{...} (one
-- node) or servers.redis_cluster{...} (the node serving `key` is asked).
--
-- How replies are read: the specs' own RESP2 client below (LuaJIT's FFI on
-- a plain blocking socket to 127.0.0.1, with a 30 s receive timeout), not
-- redis-cli's text output. Every bulk string is length-prefixed on the wire,
-- so a value with any bytes (newlines, quotes, NUL, invalid UTF-8) comes back
-- exactly; `redis-cli --raw` splits values on newlines, and the quoted
-- `--no-raw`/`--csv` forms need an unescaper that must match redis-cli's
-- escaping rules. Polling (XPENDING every few ms) also costs no process per
-- poll this way. Filling uses `redis-cli --pipe` (generated RESP, replies
-- counted by redis-cli): 100k XADDs take about a second.
local H = require("helpers")
local ffi = require("ffi")
local bit = require("bit")

local ST = {}

---------------------------------------------------------------------------
-- A RESP2 client on a blocking socket.

for _, decl in ipairs({
  "struct mw_st_sockaddr_in { uint16_t family; uint16_t port; uint8_t addr[4]; uint8_t zero[8]; };",
  "struct mw_st_timeval { long sec; long usec; };",
  "int socket(int domain, int type, int protocol);",
  "int connect(int fd, const void *addr, unsigned int len);",
  "long read(int fd, void *buf, unsigned long n);",
  "long write(int fd, const void *buf, unsigned long n);",
  "int close(int fd);",
  "int setsockopt(int fd, int level, int name, const void *val, unsigned int len);",
  "int getpid(void);",
  "int usleep(unsigned int usec);",
}) do pcall(ffi.cdef, decl) end

local AF_INET, SOCK_STREAM, SOL_SOCKET, SO_RCVTIMEO, SO_SNDTIMEO = 2, 1, 1, 20, 21

-- A null bulk or array (a Lua nil would leave holes in arrays).
ST.NULL = setmetatable({}, { __tostring = function() return "(nil)" end })
local ERR = { __tostring = function(e) return "-" .. e.err end }
function ST.is_err(v) return getmetatable(v) == ERR end

local function resp(args)
  local b = { "*", #args, "\r\n" }
  for _, a in ipairs(args) do
    a = tostring(a)
    b[#b + 1] = "$" .. #a .. "\r\n"
    b[#b + 1] = a
    b[#b + 1] = "\r\n"
  end
  return table.concat(b)
end
ST.resp = resp

local Conn = {}
Conn.__index = Conn

local function connect(port, password)
  local fd = ffi.C.socket(AF_INET, SOCK_STREAM, 0)
  assert(fd >= 0, "socket() failed")
  local tv = ffi.new("struct mw_st_timeval", 30, 0)
  ffi.C.setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, tv, ffi.sizeof(tv))
  ffi.C.setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, tv, ffi.sizeof(tv))
  local sa = ffi.new("struct mw_st_sockaddr_in")
  sa.family = AF_INET
  sa.port = bit.bor(bit.lshift(bit.band(port, 0xff), 8), bit.rshift(port, 8))  -- htons
  sa.addr[0], sa.addr[1], sa.addr[2], sa.addr[3] = 127, 0, 0, 1              -- only ever 127.0.0.1
  if ffi.C.connect(fd, sa, ffi.sizeof(sa)) ~= 0 then
    ffi.C.close(fd)
    return nil, "connect to 127.0.0.1:" .. port .. " failed"
  end
  local c = setmetatable({ fd = fd, port = port, buf = "", pos = 1, rbuf = ffi.new("uint8_t[65536]") }, Conn)
  if password then
    local ok, r = pcall(c.call, c, "AUTH", password)
    if not ok or ST.is_err(r) then c:close(); return nil, "AUTH failed: " .. tostring(r) end
  end
  return c
end

function Conn:close()
  if self.fd then ffi.C.close(self.fd) end
  self.fd = nil
end

function Conn:send(s)
  local off = 0
  while off < #s do
    local n = ffi.C.write(self.fd, ffi.cast("const char *", s) + off, #s - off)
    if n <= 0 then error("redis 127.0.0.1:" .. self.port .. ": write failed", 0) end
    off = off + tonumber(n)
  end
end

function Conn:more()
  local n = ffi.C.read(self.fd, self.rbuf, 65536)
  if n <= 0 then error("redis 127.0.0.1:" .. self.port .. ": connection closed or timed out", 0) end
  self.buf = self.buf:sub(self.pos) .. ffi.string(self.rbuf, n)
  self.pos = 1
end

function Conn:line()
  while true do
    local e = self.buf:find("\r\n", self.pos, true)
    if e then
      local l = self.buf:sub(self.pos, e - 1)
      self.pos = e + 2
      return l
    end
    self:more()
  end
end

function Conn:reply()
  local l = self:line()
  local t, rest = l:sub(1, 1), l:sub(2)
  if t == "+" then return rest end
  if t == "-" then return setmetatable({ err = rest }, ERR) end
  if t == ":" then return tonumber(rest) end
  if t == "$" then
    local n = tonumber(rest)
    if n < 0 then return ST.NULL end
    while #self.buf - self.pos + 1 < n + 2 do self:more() end
    local s = self.buf:sub(self.pos, self.pos + n - 1)
    self.pos = self.pos + n + 2
    return s
  end
  if t == "*" then
    local n = tonumber(rest)
    if n < 0 then return ST.NULL end
    local a = {}
    for i = 1, n do a[i] = self:reply() end
    return a
  end
  error("redis 127.0.0.1:" .. self.port .. ": bad reply line " .. l, 0)
end

-- One command; its reply (an error reply is a table ST.is_err() knows).
function Conn:call(...)
  self:send(resp({ ... }))
  return self:reply()
end

-- The port of the node that serves key (srv.port for a single server).
local function port_of(srv, key)
  if srv.port_for then
    srv._st_ports = srv._st_ports or {}
    local p = srv._st_ports[key]
    if not p then p = srv.port_for(key); srv._st_ports[key] = p end
    return p
  end
  return srv.port
end

-- A command on the node that serves `key`, over a connection kept per
-- server and port (reconnected once if the server went away, e.g. a
-- restart). Raises on an error reply unless opts-free variant ST.try is used.
function ST.try(srv, key, ...)
  local port = port_of(srv, key)
  srv._st_conns = srv._st_conns or {}
  local args = { ... }
  for attempt = 1, 2 do
    local c = srv._st_conns[port]
    if not c then
      local err
      c, err = connect(port, srv.password)
      if not c then
        if attempt == 2 then error(err, 0) end
      end
      srv._st_conns[port] = c
    end
    if c then
      local ok, r = pcall(c.call, c, unpack(args))
      if ok then return r end
      c:close()
      srv._st_conns[port] = nil
      if attempt == 2 then error(r, 0) end
    end
  end
end

function ST.call(srv, key, ...)
  local r = ST.try(srv, key, ...)
  if ST.is_err(r) then
    error(("redis %s: %s"):format(table.concat({ ... }, " "):sub(1, 200), r.err), 2)
  end
  return r
end

-- Close the helpers' connections to srv (before stopping it).
function ST.close(srv)
  for _, c in pairs(srv._st_conns or {}) do c:close() end
  srv._st_conns = {}
end

---------------------------------------------------------------------------
-- Filling, reading, pending.

-- The record of entry i by default: {"id":i}.
function ST.record(i) return '{"id":' .. i .. '}' end

-- Add n entries to stream `key` with one `redis-cli --pipe`.
-- opts.field ("data") and opts.record(i) (ST.record) make the entry
-- { field, record(i) }; opts.fields(i) instead returns the whole list
-- { f1, v1, f2, v2, ... }; opts.id(i) gives explicit ids (default "*").
-- opts.first (1): the first i. Returns the number added.
function ST.fill(srv, key, n, opts)
  opts = opts or {}
  local field, record = opts.field or "data", opts.record or ST.record
  local first = opts.first or 1
  local parts = {}
  for i = first, first + n - 1 do
    local args = { "XADD", key, opts.id and opts.id(i) or "*" }
    local fv = opts.fields and opts.fields(i) or { field, record(i) }
    for k = 1, #fv do args[#args + 1] = fv[k] end
    parts[#parts + 1] = resp(args)
  end
  local d = H.tmpdir()
  H.write(d .. "/fill.resp", table.concat(parts))
  local auth = srv.password and ("-a " .. H.q(srv.password) .. " --no-auth-warning ") or ""
  local code, out, err = H.sh(string.format("redis-cli -h 127.0.0.1 -p %d %s--pipe <%s/fill.resp",
    port_of(srv, key), auth, d))
  local errors, replies = (out .. err):match("errors: (%d+), replies: (%d+)")
  assert(code == 0 and tonumber(errors) == 0 and tonumber(replies) == n,
    ("redis-cli --pipe into %s: exit %s\n%s%s"):format(key, tostring(code), out, err))
  os.execute("rm -f " .. H.q(d .. "/fill.resp"))
  return n
end

-- Every entry of stream `key` in order, read in batches of 10,000:
-- { id = "1-0", fields = { data = "..." }, pairs = { "data", "..." } }.
-- A missing key reads as no entries.
function ST.read(srv, key)
  local t, start = {}, "-"
  while true do
    local batch = ST.call(srv, key, "XRANGE", key, start, "+", "COUNT", 10000)
    for _, e in ipairs(batch) do
      local fields = {}
      for k = 1, #e[2], 2 do fields[e[2][k]] = e[2][k + 1] end
      t[#t + 1] = { id = e[1], fields = fields, pairs = e[2] }
    end
    if #batch < 10000 then return t end
    start = "(" .. batch[#batch][1]
  end
end

function ST.xlen(srv, key) return ST.call(srv, key, "XLEN", key) end

-- XPENDING key group (the summary): the group's pending count and the
-- count per consumer ({} when none). A group that does not exist raises.
function ST.pending(srv, key, group)
  local r = ST.call(srv, key, "XPENDING", key, group)
  local per = {}
  if type(r[4]) == "table" then
    for _, c in ipairs(r[4]) do per[c[1]] = tonumber(c[2]) end
  end
  return r[1], per
end

-- XPENDING key group - + count: { id, consumer, idle_ms, deliveries } each.
function ST.pending_entries(srv, key, group, count)
  local r = ST.call(srv, key, "XPENDING", key, group, "-", "+", count or 1000000)
  local t = {}
  for i, e in ipairs(r) do t[i] = { id = e[1], consumer = e[2], idle_ms = e[3], deliveries = e[4] } end
  return t
end

-- The group's consumers: { [name] = { pending =, idle = } } (XINFO CONSUMERS).
function ST.consumers(srv, key, group)
  local t = {}
  for _, c in ipairs(ST.call(srv, key, "XINFO", "CONSUMERS", key, group)) do
    local f = {}
    for k = 1, #c, 2 do f[c[k]] = c[k + 1] end
    t[f.name] = f
  end
  return t
end

-- The groups of a stream by name (XINFO GROUPS); {} for a missing key.
function ST.groups(srv, key)
  local r = ST.try(srv, key, "XINFO", "GROUPS", key)
  local t = {}
  if ST.is_err(r) then return t end
  for _, g in ipairs(r) do
    local f = {}
    for k = 1, #g, 2 do f[g[k]] = g[k + 1] end
    t[f.name] = f
  end
  return t
end

---------------------------------------------------------------------------
-- Exactly once.

-- Given the entries of an output stream and the input ids 1..n (or `n` a
-- list of the expected ids): which ids are missing, which came more than
-- once, which were not expected, which entries have no decodable JSON
-- object with a numeric id. opts.field ("data"), opts.id_of(decoded)
-- (decoded.id). rep.ok, rep.summary (for assertion messages).
function ST.check_once(entries, n, opts)
  opts = opts or {}
  local field, id_of = opts.field or "data", opts.id_of or function(o) return o.id end
  local expected, want = {}, {}
  if type(n) == "table" then
    for _, id in ipairs(n) do expected[#expected + 1] = id; want[id] = true end
  else
    for i = 1, n do expected[i] = i; want[i] = true end
  end
  local seen, rep = {}, { missing = {}, dups = {}, extra = {}, bad = {}, count = #entries }
  for _, e in ipairs(entries) do
    local ok, o = pcall(H.json.decode, e.fields[field] or "")
    local id = ok and type(o) == "table" and tonumber(id_of(o))
    if not id then
      rep.bad[#rep.bad + 1] = e.id
    else
      seen[id] = (seen[id] or 0) + 1
      if seen[id] == 2 then rep.dups[#rep.dups + 1] = id end
      if not want[id] and seen[id] == 1 then rep.extra[#rep.extra + 1] = id end
    end
  end
  for _, id in ipairs(expected) do if not seen[id] then rep.missing[#rep.missing + 1] = id end end
  table.sort(rep.dups)
  rep.ok = #rep.missing == 0 and #rep.dups == 0 and #rep.extra == 0 and #rep.bad == 0
  local function first(list)
    local t = {}
    for i = 1, math.min(10, #list) do t[i] = tostring(list[i]) end
    return table.concat(t, ",") .. (#list > 10 and ",..." or "")
  end
  rep.summary = ("%d entries for %d ids: %d missing [%s], %d duplicated [%s], %d unexpected [%s], %d without an id [%s]")
    :format(#entries, #expected, #rep.missing, first(rep.missing), #rep.dups, first(rep.dups),
      #rep.extra, first(rep.extra), #rep.bad, first(rep.bad))
  return rep
end

-- Output lines (stdout, a file) as entries for check_once.
function ST.line_entries(text, field)
  local t = {}
  for _, l in ipairs(H.lines(text)) do t[#t + 1] = { id = "line " .. (#t + 1), fields = { [field or "data"] = l } } end
  return t
end

---------------------------------------------------------------------------
-- Processes.

local function owner_pid()
  return tonumber(os.getenv("MOONWAIT_SERVERS_OWNER") or "") or ffi.C.getpid()
end

-- Start `moonwait ARGS` in the background (ARGS already quoted, as for
-- H.run). opts.dir: its cwd (default: its own temp dir), opts.env: a table
-- of environment variables, opts.stdin: a file, opts.timeout: seconds
-- after which it is killed (default 300). It is also killed (-9) when the
-- test process goes away. Returns a process:
--   p.pid, p.dir, p.alive(), p.rc() (exit status once it exited: 137 after
--   kill -9), p.wait(secs) (the status, nil if still running then),
--   p.kill(sig) (default KILL; waits until it is gone for KILL),
--   p.out(), p.err()
ST.live = {}
function ST.spawn(args, opts)
  opts = opts or {}
  local d = H.tmpdir()
  local env = {}
  for k, v in pairs(opts.env or {}) do env[#env + 1] = ("export %s=%s\n"):format(k, H.q(v)) end
  table.sort(env)
  H.write(d .. "/run.sh", ("cd %s || exit 97\necho $$ >%s/pid\n%sexec %s <%s >%s/out 2>%s/err\n"):format(
    H.q(opts.dir or d), H.q(d), table.concat(env), H.cmd(args), H.q(opts.stdin or "/dev/null"), H.q(d), H.q(d)))
  os.execute(("(sh %s/run.sh; echo $? >%s/rc.tmp; mv %s/rc.tmp %s/rc) >/dev/null 2>&1 </dev/null &"):format(
    H.q(d), H.q(d), H.q(d), H.q(d)))
  local pid = H.wait_for(function() return tonumber((H.read(d .. "/pid") or ""):match("%d+")) end, 10)
  assert(pid, "moonwait did not start: " .. d)
  -- the watcher: its own session, so `timeout` killing our process group leaves it to act
  os.execute(("setsid -f sh -c 'n=0; while kill -0 %d && [ $n -lt %d ]; do kill -0 %d || exit 0; sleep 1; n=$((n+1)); done; " ..
    "kill -CONT %d; kill -9 %d' >/dev/null 2>&1 </dev/null"):format(owner_pid(), opts.timeout or 300, pid, pid, pid))
  local p = { pid = pid, dir = d }
  ST.live[#ST.live + 1] = p
  function p.rc()
    local s = H.read(d .. "/rc")
    return s and tonumber(s:match("%d+"))
  end
  function p.alive() return p.rc() == nil end
  function p.wait(secs) return H.wait_for(p.rc, secs or 60) end
  function p.kill(sig)
    sig = sig or "KILL"
    os.execute(("kill -%s %d 2>/dev/null"):format(sig, pid))
    if sig == "KILL" then assert(p.wait(30), "pid " .. pid .. " survived kill -9") end
  end
  -- SIGTERM, and SIGKILL if it has not exited 10 s later; its status.
  function p.stop()
    if p.alive() then
      os.execute(("kill -CONT %d 2>/dev/null; kill -TERM %d 2>/dev/null"):format(pid, pid))
      if not p.wait(10) then p.kill("KILL") end
    end
    return p.rc()
  end
  function p.out() return H.read(d .. "/out") or "" end
  function p.err() return H.read(d .. "/err") or "" end
  return p
end

-- Kill (-9) every process ST.spawn started that is still running (an
-- after_each: a failed test leaves none behind).
function ST.kill_all()
  for _, p in ipairs(ST.live) do
    if p.alive() then os.execute(("kill -9 %d 2>/dev/null"):format(p.pid)); p.wait(30) end
  end
  ST.live = {}
end

---------------------------------------------------------------------------
-- The kill -9 harness.

-- A seeded generator (Park-Miller, as spec/support/crash.lua): rng(lo, hi).
function ST.rng(seed)
  local x = seed % 2147483647
  if x <= 0 then x = x + 2147483646 end
  return function(lo, hi)
    x = x * 16807 % 2147483647
    return lo + x % (hi - lo + 1)
  end
end

-- The seed: MOONWAIT_STREAMS_SEED, else fresh from /dev/urandom.
function ST.seed()
  local env = os.getenv("MOONWAIT_STREAMS_SEED")
  if env then return assert(tonumber(env), "MOONWAIT_STREAMS_SEED is not a number: " .. env) end
  local f = assert(io.open("/dev/urandom", "rb"))
  local b = f:read(4)
  f:close()
  return ((b:byte(1) * 256 + b:byte(2)) * 256 + b:byte(3)) * 256 + b:byte(4)
end

-- The consumers' script: a little work per record (they stay busy, so a
-- kill lands with entries in flight), the record returned untouched. With
-- ST.TRIAL_ARGS (10 in flight each) three consumers take at least a third
-- of a second for 2,000 entries: long enough to be killed mid-run.
ST.TRIAL_SCRIPT = [[
local time = require "moonwait.time"
return { async_invoke = function(rec, ctx)
  time.sleep(0.005)
  return { rec }
end }
]]
ST.TRIAL_ARGS = "--capacity 10 --mode unordered"

-- Poll fn every `ms` milliseconds (in-process, no sleep(1) per poll) until
-- it returns a truthy value or secs pass; its last value.
function ST.poll(fn, secs, ms)
  local deadline = os.time() + secs
  repeat
    local v = fn()
    if v then return v end
    ffi.C.usleep((ms or 5) * 1000)
  until os.time() > deadline
  return fn()
end

-- Wait until every pending entry of the group on every stream has been
-- idle for at least ms (so any consumer's claim pass takes them all).
function ST.wait_idle(srv, keys, group, ms, secs)
  return H.wait_for(function()
    for _, k in ipairs(keys) do
      for _, e in ipairs(ST.pending_entries(srv, k, group)) do
        if e.idle_ms < ms then return false end
      end
    end
    return true
  end, secs or 60)
end

-- One trial: fill each input stream with ids 1..n ({"id":i,"src":"KEY"}), start `consumers`
-- moonwait processes in one group (until=empty), and `kills` times, at a
-- random moment (a random share, up to 80%, of the total output written, then 0-5 ms
-- more), kill -9 a random one and restart it (under its own consumer name
-- or a new one, at random). Once all have ended, wait until what is still
-- pending has been idle past claim_idle_ms and run a final consumer with
-- until=empty. Then every output stream must hold each id of its own input
-- exactly once (and nothing from another input), and nothing may be pending.
--
-- o.srv, o.streams = { { input = "in", output = "out" }, ... },
-- o.group, o.n, o.consumers (3), o.kills (1), o.claim_idle_ms, o.rng,
-- o.dir (holding script.lua: ST.TRIAL_SCRIPT), o.input_url(consumer),
-- o.output_url, o.args (extra flags), o.tag (for names and messages).
-- Returns ok, why, landed (kills that hit a running process).
function ST.kill_trial(o)
  local K, kills = o.consumers or 3, o.kills or 1
  -- bounds that only matter when something is wrong (a 100k-entry soak trial gets more)
  local secs = math.max(120, math.floor(o.n * #o.streams / 500))
  local ins, outs = {}, {}
  for i, s in ipairs(o.streams) do
    ins[i], outs[i] = s.input, s.output
    ST.call(o.srv, s.input, "DEL", s.input)
    ST.call(o.srv, s.output, "DEL", s.output)
    -- each record names its input stream: an output partition that got
    -- another partition's records fails the check
    ST.fill(o.srv, s.input, o.n, { record = function(i) return ('{"id":%d,"src":"%s"}'):format(i, s.input) end })
  end
  local total = o.n * #o.streams
  local function progress()
    local sum = 0
    for _, k in ipairs(outs) do sum = sum + ST.xlen(o.srv, k) end
    return sum
  end
  local procs, names, seq, dead = {}, {}, 0, {}
  local function start(i, name)
    names[i] = name
    procs[i] = ST.spawn(("run --script script.lua --input %s --output %s %s"):format(
      H.q(o.input_url(name)), H.q(o.output_url), o.args or ""), { dir = o.dir, timeout = 2 * secs })
  end
  for i = 1, K do start(i, ("%sc%d"):format(o.tag or "", i)) end
  local landed = 0
  for _ = 1, kills do
    -- up to 80%: what is left is more than the consumers hold, so the victim still runs
    local target = math.floor(total * o.rng(0, 80) / 100)
    ST.poll(function()
      if progress() >= target then return true end
      for i = 1, K do if procs[i].alive() then return false end end
      return true
    end, secs, 2)
    -- the random kill moment is the behaviour under test (this sleep stays)
    ffi.C.usleep(o.rng(0, 5000))
    local v = o.rng(1, K)
    local same = o.rng(0, 1) == 0
    if procs[v].alive() then
      procs[v].kill("KILL")
      -- it may have ended by itself (until=empty) just before the signal:
      -- then the kill did not land, and it needs no restart
      if procs[v].rc() == 137 then
        landed = landed + 1
        dead[#dead + 1] = { name = names[v], proc = procs[v] }
        seq = seq + 1
        start(v, same and names[v] or ("%sc%d-r%d"):format(o.tag or "", v, seq))
      end
    end
  end
  local function tails()
    local t = {}
    for i = 1, K do
      t[#t + 1] = ("%s (pid %d, exit %s): %s"):format(names[i], procs[i].pid, tostring(procs[i].rc()),
        procs[i].err():sub(-400))
    end
    for _, d in ipairs(dead) do
      t[#t + 1] = ("%s (pid %d, killed): %s"):format(d.name, d.proc.pid, d.proc.err():sub(-400))
    end
    return table.concat(t, "\n")
  end
  for i = 1, K do
    local rc = procs[i].wait(secs)
    if rc ~= 0 then return false, ("consumer %s exited %s\n%s"):format(names[i], tostring(rc), tails()), landed end
  end
  if not ST.wait_idle(o.srv, ins, o.group, o.claim_idle_ms + 50) then
    return false, "pending entries never went idle", landed
  end
  local final = ST.spawn(("run --script script.lua --input %s --output %s %s"):format(
    H.q(o.input_url((o.tag or "") .. "final")), H.q(o.output_url), o.args or ""), { dir = o.dir, timeout = 2 * secs })
  local rc = final.wait(secs)
  if rc ~= 0 then
    if rc == nil then final.kill("KILL") end
    return false, ("the final consumer exited %s: %s"):format(tostring(rc), final.err():sub(-600)), landed
  end
  for i = 1, #o.streams do
    local src = ins[i]
    local rep = ST.check_once(ST.read(o.srv, outs[i]), o.n, { id_of = function(r) return r.src == src and r.id end })
    if not rep.ok then return false, outs[i] .. ": " .. rep.summary .. "\n" .. tails(), landed end
    local pending = ST.pending(o.srv, ins[i], o.group)
    if pending ~= 0 then return false, ("%s: %d entries still pending"):format(ins[i], pending), landed end
  end
  return true, nil, landed
end

return ST
