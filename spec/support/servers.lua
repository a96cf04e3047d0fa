-- spec/support/servers.lua: real servers for the specs, started on
-- 127.0.0.1 (and ::1) with free ports, in private temp dirs, and stopped
-- by the caller (stop()). Nothing here talks to any other address.
--
--   local nginx = servers.nginx()   -- nginx.port, nginx.tls_port, nginx.dir,
--                                   -- nginx.cert (CA file for the HTTPS server),
--                                   -- nginx.access_log(), nginx.stop()
--   local redis = servers.redis()   -- redis.port, redis.cli(args), redis.stop()
--   local redis = servers.redis{ aof = true, password = "pw" }
--                                   -- + redis.restart() (same port and dir, AOF
--                                   -- reloaded), redis.url(query), redis.pid()
--   local cl    = servers.redis_cluster{ masters = 3 }
--                                   -- cl.ports, cl.url_hosts ("127.0.0.1:P1,..."),
--                                   -- cl.cli(args) (-c), cl.node_cli(port, args),
--                                   -- cl.port_for(key), cl.stop()
--   local peer  = servers.faultpeer(mode) -- peer.port, peer.pid, peer.stop()
--   local port  = servers.free_port()     -- nothing listens there: connects are refused
local H = require("helpers")
local S = {}

local function sh_ok(cmd)
  local r = os.execute(cmd)
  return r == 0 or r == true
end

-- A server outlives a test process that is killed (a timeout, a mutant
-- that hangs, ^C) before its teardown runs: a small watcher stops it once
-- this process is gone.
local ffi = require("ffi")
pcall(ffi.cdef, "int getpid(void);")
-- MOONWAIT_SERVERS_OWNER=PID ties them to another process instead (a script
-- that starts servers for its caller and exits).
local function reap_with_us(pid)
  local owner = tonumber(os.getenv("MOONWAIT_SERVERS_OWNER") or "") or ffi.C.getpid()
  -- (its own session: `timeout` kills its whole process group)
  os.execute(string.format(
    "setsid -f sh -c 'while kill -0 %d; do kill -0 %s || exit 0; sleep 1; done; kill %s' >/dev/null 2>&1 </dev/null",
    owner, pid, pid))
end
S.reap_with_us = reap_with_us

-- A random port in [20000, below) (default 60000).
local function random_port(below)
  local f = io.open("/dev/urandom", "rb")
  local b1, b2 = f:read(2):byte(1, 2)
  f:close()
  return 20000 + (b1 * 256 + b2) % ((below or 60000) - 20000)
end

local NGINX_CONF = [[
daemon on;
master_process off;
worker_processes 1;
pid DIR/nginx.pid;
error_log DIR/error.log warn;
load_module /usr/lib/nginx/modules/ngx_http_echo_module.so;
events { worker_connections 8192; }
http {
  log_format conn '$connection $connection_requests $request_uri $status';
  access_log DIR/access.log conn;
  client_body_temp_path DIR/tmp-body;
  proxy_temp_path DIR/tmp-proxy;
  fastcgi_temp_path DIR/tmp-fcgi;
  uwsgi_temp_path DIR/tmp-uwsgi;
  scgi_temp_path DIR/tmp-scgi;
  keepalive_requests 1000000;
  keepalive_timeout 60s;
  limit_conn_zone $server_port zone=ac:1m; # adaptive capacity: /ac20
  limit_req_zone $server_port zone=aq:1m rate=400r/s; # adaptive capacity: /q400
  # spec/ratelimit_spec.lua: 50 requests/s each (a small burst for the
  # jitter between a start and its request); beyond that, 429.
  limit_req_zone $binary_remote_addr zone=rla:1m rate=50r/s;
  limit_req_zone $binary_remote_addr zone=rlb:1m rate=50r/s;
  limit_req_zone $binary_remote_addr zone=rlc:1m rate=50r/s;
  limit_req_status 429;
  server {
    listen 127.0.0.1:PORT;
    listen [::1]:PORT;
    location ~ ^/user/(\d+)$ {
      default_type application/json;
      return 200 '{"id":$1,"name":"user-$1"}';
    }
    location = /slow { echo_sleep 3; echo '{"slow":true}'; }
    location = /sleep50 { echo_sleep 0.05; echo '{"name":"profile"}'; }
    location = /status/503 { default_type application/json; return 503 '{"error":"unavailable"}'; }
    location = /status/404 { default_type application/json; return 404 '{"error":"not found"}'; }
    location = /large { default_type application/octet-stream; alias DIR/large.bin; }
    location = /chunked { echo -n "part1,"; echo_flush; echo_sleep 0.05; echo -n "part2"; }
    location = /echo { echo_read_request_body; echo_request_body; }
    location = /method { echo -n $request_method; }
    location = /headers {
      add_header X-Multi a;
      add_header X-Multi b;
      add_header X-Custom-Case Yes;
      echo -n "host=$http_host ua=$http_user_agent";
    }
    location = /close { keepalive_timeout 0; return 200 'bye'; }
    # adaptive capacity: 503 past 20 requests in flight (idle keep-alive
    # connections do not count: the count is per request being processed)
    location = /ac20 { limit_conn ac 20; limit_conn_status 503; echo_sleep 0.05; echo '{"ok":true}'; }
    # ... and a service that slows down: 400 requests/s, the rest queued
    # (latency grows with the queue), 503 past 1000 queued
    location = /q400 { limit_req zone=aq burst=1000; limit_req_status 503; echo_sleep 0.02; echo '{"ok":true}'; }
    # (echo, not return: return answers before limit_req runs)
    location = /rl/a { limit_req zone=rla burst=5 nodelay; default_type application/json; echo -n '{"ok":1}'; }
    location = /rl/b { limit_req zone=rlb burst=5 nodelay; default_type application/json; echo -n '{"ok":1}'; }
    location = /rl/c { limit_req zone=rlc burst=5 nodelay; default_type application/json; echo -n '{"ok":1}'; }
  }
  server {
    listen 127.0.0.1:TLSPORT ssl;
    ssl_certificate DIR/cert.pem;
    ssl_certificate_key DIR/key.pem;
    location / { default_type application/json; return 200 '{"tls":true}'; }
  }
}
]]

function S.nginx()
  local dir = H.tmpdir()
  -- a self-signed certificate for localhost and 127.0.0.1
  assert(sh_ok(string.format(
    "cd %s && openssl req -x509 -newkey rsa:2048 -nodes -keyout key.pem -out cert.pem -days 2 " ..
    "-subj /CN=localhost -addext 'subjectAltName=DNS:localhost,IP:127.0.0.1' >/dev/null 2>&1", dir)),
    "openssl could not make a certificate")
  -- 2 MiB body for /large (base64 text: specs put bodies into JSON output,
  -- and strings that are not UTF-8 cannot be encoded)
  assert(sh_ok(string.format("head -c 1572864 /dev/urandom | base64 -w0 >%s/large.bin", dir)))
  for _ = 1, 20 do
    local port, tls_port = random_port(), random_port()
    local conf = NGINX_CONF:gsub("DIR", dir):gsub("TLSPORT", tostring(tls_port)):gsub("PORT", tostring(port))
    H.write(dir .. "/nginx.conf", conf)
    os.execute("rm -f " .. dir .. "/error.log")
    if sh_ok(string.format("nginx -p %s -c %s/nginx.conf >>%s/start.log 2>&1", dir, dir, dir)) then
      local pid = H.wait_for(function() return (H.read(dir .. "/nginx.pid") or ""):match("%d+") end, 5)
      local self = { port = port, tls_port = tls_port, dir = dir, cert = dir .. "/cert.pem", pid = pid }
      if pid then reap_with_us(pid) end
      function self.url(path) return "http://127.0.0.1:" .. port .. path end
      function self.access_log() return H.read(dir .. "/access.log") or "" end
      function self.stop() os.execute("kill " .. pid .. " 2>/dev/null") end
      return self
    end
    local log = (H.read(dir .. "/start.log") or "") .. (H.read(dir .. "/error.log") or "")
    if not log:find("in use", 1, true) then error("nginx did not start:\n" .. log) end
  end
  error("nginx: no free port found")
end

-- The text `redis-cli ARGS` prints (stderr too) against 127.0.0.1:port.
local function redis_cli(port, password, args)
  local auth = password and ("-a " .. H.q(password) .. " --no-auth-warning ") or ""
  local p = io.popen(string.format("redis-cli -h 127.0.0.1 -p %d %s%s 2>&1", port, auth, args))
  local out = p:read("*a")
  p:close()
  return out
end

-- Start a daemonized redis-server on 127.0.0.1:port in dir with extra
-- arguments; "up" once it answers PING with PONG (its data loaded: a server
-- still loading its AOF answers -LOADING), "busy" if the port (or a cluster
-- node's bus port, port + 10000) is taken, nil if neither in time.
local function redis_start(port, dir, password, extra)
  os.execute("rm -f " .. H.q(dir .. "/redis.log"))
  os.execute(string.format(
    "redis-server --port %d --bind 127.0.0.1 --save '' --daemonize yes " ..
    "--dir %s --pidfile %s/redis.pid --logfile %s/redis.log %s%s",
    port, H.q(dir), H.q(dir), H.q(dir), password and ("--requirepass " .. H.q(password) .. " ") or "", extra))
  return H.wait_for(function()
    if redis_cli(port, password, "ping"):match("^PONG") then return "up" end
    local log = H.read(dir .. "/redis.log") or ""
    if log:find("in use", 1, true) or log:find("Could not create server TCP", 1, true) or
       log:find("Failed listening", 1, true) then return "busy" end
  end, 30)
end

local function redis_pid(dir)
  return H.wait_for(function() return (H.read(dir .. "/redis.pid") or ""):match("%d+") end, 5)
end

local function gone(pid)
  return H.wait_for(function() return not sh_ok("kill -0 " .. pid .. " 2>/dev/null") end, 30)
end

-- opts.aof: --appendonly yes --appendfsync always (else no persistence at
-- all); opts.password: --requirepass (cli() and url() use it); opts.extra:
-- more redis-server arguments (e.g. --key-load-delay for a slow load).
function S.redis(opts)
  opts = opts or {}
  local dir = H.tmpdir()
  local extra = (opts.aof and "--appendonly yes --appendfsync always" or "--appendonly no") ..
    (opts.extra and (" " .. opts.extra) or "")
  for _ = 1, 20 do
    local port = random_port()
    if redis_start(port, dir, opts.password, extra) == "up" then
      local self = { port = port, dir = dir, password = opts.password }
      local pid = redis_pid(dir)
      if pid then reap_with_us(pid) end
      function self.pid() return pid end
      function self.cli(args) return redis_cli(port, opts.password, args) end
      -- redis://[:PASSWORD@]127.0.0.1:PORT?QUERY
      function self.url(query)
        return string.format("redis://%s127.0.0.1:%d%s", opts.password and (":" .. opts.password .. "@") or "",
          port, query and ("?" .. query) or "")
      end
      function self.stop() redis_cli(port, opts.password, "shutdown nosave >/dev/null") end
      -- SHUTDOWN (SAVE with AOF: the AOF is fsynced on the way down; without
      -- it the data is gone, as for any server without persistence), wait
      -- until the process is gone, start it again on the same port and dir
      -- and wait until it answers PING with its AOF loaded.
      function self.restart()
        redis_cli(port, opts.password, opts.aof and "shutdown save" or "shutdown nosave")
        assert(gone(pid), "redis-server " .. pid .. " did not shut down")
        local up
        for _ = 1, 50 do  -- a client's TIME_WAIT does not hold the port (SO_REUSEADDR); retry briefly anyway
          up = redis_start(port, dir, opts.password, extra)
          if up == "up" then break end
          os.execute("sleep 0.1")
        end
        assert(up == "up", "redis-server did not restart on port " .. port .. ":\n" .. (H.read(dir .. "/redis.log") or ""))
        assert(H.wait_for(function()
          return self.cli("info persistence"):match("loading:0")
        end, 30), "redis-server did not finish loading")
        pid = redis_pid(dir)
        if pid then reap_with_us(pid) end
      end
      return self
    end
  end
  error("redis-server: no free port found")
end

-- A Redis Cluster of opts.masters (3, the least Redis accepts) masters and
-- no replicas, each redis-server in its own dir with its own
-- nodes.conf. Ports are below 55535, so each node's bus port (port +
-- 10000) is a valid port; a node whose port or bus port is taken is started
-- again on another. Returns once every node says cluster_state:ok and knows
-- all the others.
function S.redis_cluster(opts)
  opts = opts or {}
  local masters = opts.masters or 3
  local nodes, ports, used = {}, {}, {}
  for i = 1, masters do
    for try = 1, 30 do
      local port = random_port(55535)
      if not (used[port] or used[port + 10000] or used[port - 10000]) then
        local dir = H.tmpdir()
        local up = redis_start(port, dir, nil,
          "--appendonly no --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 5000")
        if up == "up" then
          local pid = redis_pid(dir)
          if pid then reap_with_us(pid) end
          nodes[i] = { port = port, dir = dir, pid = pid }
          ports[i] = port
          used[port], used[port + 10000] = true, true
          break
        end
        if up ~= "busy" then
          -- a node that neither came up nor said why: stop it and report
          redis_cli(port, nil, "shutdown nosave >/dev/null")
          error("redis-server (cluster node) did not start:\n" .. (H.read(dir .. "/redis.log") or ""))
        end
      end
      assert(try < 30, "redis cluster: no free port pair found")
    end
  end
  local self = { ports = ports, nodes = nodes }
  local hosts = {}
  for i, p in ipairs(ports) do hosts[i] = "127.0.0.1:" .. p end
  self.url_hosts = table.concat(hosts, ",")
  function self.stop()
    for _, n in ipairs(nodes) do redis_cli(n.port, nil, "shutdown nosave >/dev/null") end
  end
  function self.node_cli(port, args) return redis_cli(port, nil, args) end
  function self.cli(args) return redis_cli(ports[1], nil, "-c " .. args) end
  -- The port of the master that serves key's slot.
  function self.port_for(key)
    local slot = tonumber(redis_cli(ports[1], nil, "cluster keyslot " .. H.q(key)):match("%d+"))
    assert(slot, "cluster keyslot " .. key)
    -- CLUSTER NODES: id ip:port@bus flags master ping pong epoch link slot...
    for line in redis_cli(ports[1], nil, "cluster nodes"):gmatch("[^\n]+") do
      local f = {}
      for w in line:gmatch("%S+") do f[#f + 1] = w end
      local port = (f[2] or ""):match(":(%d+)@")
      if port and (f[3] or ""):find("master", 1, true) then
        for k = 9, #f do
          local lo, hi = f[k]:match("^(%d+)%-(%d+)$")
          lo = tonumber(lo or f[k]:match("^%d+$"))
          hi = tonumber(hi) or lo
          if lo and slot >= lo and slot <= hi then return tonumber(port) end
        end
      end
    end
    error("no master serves slot " .. slot .. " (" .. key .. ")")
  end
  local code, cout, cerr = H.sh(string.format("redis-cli --cluster create %s --cluster-replicas 0 --cluster-yes",
    table.concat(hosts, " ")))
  local ok = H.wait_for(function()
    for _, p in ipairs(ports) do
      local info = redis_cli(p, nil, "cluster info")
      if not info:match("cluster_state:ok") then return false end
      if tonumber(info:match("cluster_known_nodes:(%d+)")) ~= masters then return false end
      if tonumber(info:match("cluster_slots_ok:(%d+)")) ~= 16384 then return false end
    end
    return true
  end, 60)
  if not ok then
    local info = redis_cli(ports[1], nil, "cluster info")
    self.stop()
    error(("redis cluster did not come up (create exited %s):\n%s%s\n%s"):format(tostring(code), cout, cerr, info))
  end
  return self
end

-- A loopback peer for faults no real server produces (spec/c/faultpeer.c).
-- Extra arguments (the once/stream modes' texts) are passed quoted.
function S.faultpeer(mode, ...)
  local dir = H.tmpdir()
  local bin = (os.getenv("CTEST_DIR") or "build") .. "/faultpeer"
  local args = {}
  for i = 1, select("#", ...) do args[i] = H.q(select(i, ...)) end
  os.execute(string.format("%s %s %s >%s/port 2>%s/err & echo $! >%s/pid", bin, mode,
    table.concat(args, " "), dir, dir, dir))
  local port = H.wait_for(function() return (H.read(dir .. "/port") or ""):match("(%d+)\n") end, 5)
  assert(port, "faultpeer did not start: " .. (H.read(dir .. "/err") or ""))
  local pid = H.read(dir .. "/pid"):match("%d+")
  reap_with_us(pid)
  return { port = tonumber(port), pid = pid, stop = function() os.execute("kill " .. pid .. " 2>/dev/null") end }
end

-- A port on 127.0.0.1 that nothing listens on, so a connect to it is
-- refused: one the kernel gave a fault peer, which is gone on return.
function S.free_port()
  local peer = S.faultpeer("silent")
  peer.stop()
  assert(gone(peer.pid), "faultpeer " .. peer.pid .. " did not stop")
  return peer.port
end

-- Run fn(peer) with a fault peer in `mode`, stopping it even if fn fails.
-- S.with_faultpeer(mode, [arg, ...,] fn)
function S.with_faultpeer(mode, ...)
  local n = select("#", ...)
  local fn = select(n, ...)
  local peer = S.faultpeer(mode, unpack({ ... }, 1, n - 1))
  local ok, err = pcall(fn, peer)
  peer.stop()
  if not ok then error(err, 0) end
end

-- A real Prometheus server (Debian's prometheus) on a free 127.0.0.1 port
-- with a private data dir, scraping `target` ("127.0.0.1:PORT") every
-- second; nil, why when it is not installed or does not come up.
function S.prometheus(target)
  if not sh_ok("command -v prometheus >/dev/null 2>&1") then return nil, "prometheus is not installed" end
  local dir = H.tmpdir()
  H.write(dir .. "/prometheus.yml", string.format([[
global: { scrape_interval: 1s, evaluation_interval: 1s }
scrape_configs:
  - job_name: moonwait
    static_configs: [ { targets: ["%s"] } ]
]], target))
  for _ = 1, 10 do
    local port = random_port()
    os.execute(string.format("cd %s && { prometheus --config.file=prometheus.yml --storage.tsdb.path=data " ..
      "--web.listen-address=127.0.0.1:%d >log 2>&1 & echo $! >pid; } </dev/null >/dev/null 2>&1", dir, port))
    local pid = H.wait_for(function() return (H.read(dir .. "/pid") or ""):match("%d+") end, 5)
    reap_with_us(pid)
    local up = H.wait_for(function()
      local log = H.read(dir .. "/log") or ""
      if log:find("Server is ready to receive web requests", 1, true) then return "up" end
      if log:find("address already in use", 1, true) or not sh_ok("kill -0 " .. pid .. " 2>/dev/null") then
        return "busy"
      end
    end, 30)
    if up == "up" then
      local self = { port = port, dir = dir, pid = pid }
      -- The JSON answer of /api/v1/query for `q`.
      function self.query(q)
        local p = io.popen(string.format("curl -s 'http://127.0.0.1:%d/api/v1/query?query=%s'", port, q))
        local out = p:read("*a")
        p:close()
        return out
      end
      function self.stop() os.execute("kill " .. pid .. " 2>/dev/null") end
      return self
    end
    os.execute("kill " .. pid .. " 2>/dev/null")
  end
  return nil, "prometheus did not start"
end

return S
