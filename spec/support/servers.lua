-- spec/support/servers.lua: real servers for the specs, started on
-- 127.0.0.1 (and ::1) with free ports, in private temp dirs, and stopped
-- by the caller (stop()). Nothing here talks to any other address.
--
--   local nginx = servers.nginx()   -- nginx.port, nginx.tls_port, nginx.dir,
--                                   -- nginx.cert (CA file for the HTTPS server),
--                                   -- nginx.access_log(), nginx.stop()
--   local redis = servers.redis()   -- redis.port, redis.cli(args), redis.stop()
--   local peer  = servers.faultpeer(mode) -- peer.port, peer.stop()
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

local function random_port()
  local f = io.open("/dev/urandom", "rb")
  local b1, b2 = f:read(2):byte(1, 2)
  f:close()
  return 20000 + (b1 * 256 + b2) % 40000
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
  server {
    listen 127.0.0.1:PORT;
    listen [::1]:PORT;
    location ~ ^/user/(\d+)$ {
      default_type application/json;
      return 200 '{"id":$1,"name":"user-$1"}';
    }
    location = /slow { echo_sleep 3; echo '{"slow":true}'; }
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

function S.redis()
  local dir = H.tmpdir()
  for _ = 1, 20 do
    local port = random_port()
    os.execute(string.format(
      "redis-server --port %d --bind 127.0.0.1 --save '' --appendonly no --daemonize yes " ..
      "--dir %s --pidfile %s/redis.pid --logfile %s/redis.log", port, dir, dir, dir))
    local up = H.wait_for(function()
      if sh_ok(string.format("redis-cli -h 127.0.0.1 -p %d ping >/dev/null 2>&1", port)) then return "up" end
      local log = H.read(dir .. "/redis.log") or ""
      if log:find("in use", 1, true) or log:find("Could not create server TCP", 1, true) then return "busy" end
    end, 5)
    if up == "up" then
      local self = { port = port, dir = dir }
      local pid = H.wait_for(function() return (H.read(dir .. "/redis.pid") or ""):match("%d+") end, 5)
      if pid then reap_with_us(pid) end
      function self.cli(args)
        local p = io.popen(string.format("redis-cli -h 127.0.0.1 -p %d %s 2>&1", port, args))
        local out = p:read("*a")
        p:close()
        return out
      end
      function self.stop() os.execute(string.format("redis-cli -h 127.0.0.1 -p %d shutdown nosave >/dev/null 2>&1", port)) end
      return self
    end
    os.execute("rm -f " .. dir .. "/redis.log")
  end
  error("redis-server: no free port found")
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
  return { port = tonumber(port), stop = function() os.execute("kill " .. pid .. " 2>/dev/null") end }
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

return S
