-- scripts/difftest/start-servers.lua: starts nginx and redis-server (spec/support/servers.lua)
-- on free 127.0.0.1 ports and prints shell assignments for scripts/difftest/diff.sh.
package.path = "spec/?.lua;spec/support/?.lua;" .. package.path
local S = require("servers")
local ng = S.nginx()
local rd = S.redis()
rd.cli("set user:1 Ada")
rd.cli("set user:2 Bob")
rd.cli("hset h:1 name Ada age 36")
print(string.format("NGINX_PORT=%d TLS_PORT=%d CERT=%s NGINX_PID=%s REDIS_PORT=%d REDIS_DIR=%s",
  ng.port, ng.tls_port, ng.cert, ng.pid, rd.port, rd.dir))
