# scripts/difftest/fixtures.sh: writes the scripts and inputs the differential cases use
# into the current directory (sourced by scripts/difftest/diff.sh).
w() { cat > "$1"; }
w pass.lua <<'EOF'
local M = {}
function M.async_invoke(r, ctx) return { r } end
return M
EOF
w enrich.lua <<'EOF'
local time = require "moonwait.time"
local M = {}
function M.async_invoke(r, ctx)
  if r.d then time.sleep(r.d / 1000) end
  r.seq = ctx.seq; r.line = ctx.line; r.att = ctx.attempt
  return { r }
end
return M
EOF
w fail.lua <<'EOF'
local time = require "moonwait.time"
local M = {}
function M.async_invoke(r, ctx)
  if r.d then time.sleep(r.d / 1000) end
  if r.bad == 1 then error("bad record " .. ctx.seq) end
  if r.bad == 2 then return nil, "soft failure " .. ctx.seq end
  if r.bad == 3 then return r end
  if r.bad == 4 then return "str" end
  if r.bad == 5 then return end
  if r.bad == 6 then r.f = function() end; return { r } end
  if r.bad == 7 then r.n = 0/0; return { r } end
  if r.bad == 8 then coroutine.yield() end
  if r.bad == 9 then os.exit(3) end
  if r.bad == 10 then undeclared_global = 1 end
  if r.bad == 11 then local t = {} t[1] = 1 t[3] = 3 r.h = setmetatable(t, require("moonwait.json").array_mt) return { r } end
  if r.bad == 12 then error({code = 1}) end
  if r.bad == 13 then error() end
  if r.bad == 14 then return { r, "notatable" } end
  return { r }
end
return M
EOF
w timeout.lua <<'EOF'
local time = require "moonwait.time"
local M = {}
function M.async_invoke(r, ctx)
  time.sleep((r.d or 0) / 1000)
  r.rem = ctx.remaining_ms() > 0
  return { r }
end
return M
EOF
w timeout_ot.lua <<'EOF'
local time = require "moonwait.time"
local M = {}
function M.async_invoke(r, ctx)
  time.sleep((r.d or 0) / 1000)
  return { r }
end
function M.on_timeout(r, ctx)
  if r.otbad == 1 then error("on_timeout broke") end
  if r.otbad == 2 then time.sleep(0.01) end
  if r.otbad == 3 then return r end
  r.timed_out = true
  return { r }
end
return M
EOF
w retry.lua <<'EOF'
local time = require "moonwait.time"
local M = {}
M.retry = { max_attempts = 4, backoff = "fixed", delay_ms = 5 }
function M.retry_on_error(err, ctx)
  if err:match("raise") then error("pred raised") end
  if err:match("yield") then time.sleep(0.002) end
  return not err:match("final")
end
function M.retry_on_result(outs, ctx)
  return #outs == 0 and ctx.attempt < 3
end
function M.async_invoke(r, ctx)
  r.att = ctx.attempt; r.le = ctx.last_error
  if r.k == "ok" then return { r } end
  if r.k == "flaky" and ctx.attempt >= 3 then return { r } end
  if r.k == "empty" then return {} end
  return nil, (r.k or "x") .. " err at " .. ctx.attempt
end
return M
EOF
w retry_exp.lua <<'EOF'
local M = {}
M.retry = { max_attempts = 5, backoff = "exponential", initial_delay_ms = 1, max_delay_ms = 8, multiplier = 2, jitter = "full" }
M.retry_on_error = require("moonwait.retry").any_error
function M.async_invoke(r, ctx)
  if ctx.attempt < (r.n or 1) then return nil, "not yet " .. ctx.attempt end
  r.att = ctx.attempt
  return { r }
end
return M
EOF
w retry_badtab.lua <<'EOF'
local M = {}
M.retry = { max_attempts = 4, backoff = "fixed", delay = 5 }
function M.async_invoke(r) return { r } end
return M
EOF
w syntax.lua <<'EOF'
local M = {
function M.async_invoke(r) return { r } end
return M
EOF
w loaderr.lua <<'EOF'
local M = {}
error("load failed here")
return M
EOF
w noinvoke.lua <<'EOF'
return { open = function() end }
EOF
w notable.lua <<'EOF'
return 42
EOF
w openfail.lua <<'EOF'
local M = {}
function M.open(ctx) return nil, "open says no" end
function M.async_invoke(r) return { r } end
function M.close(ctx) io.stderr:write("close ran\n") end
return M
EOF
w openraise.lua <<'EOF'
local M = {}
function M.open(ctx) error("open raised") end
function M.async_invoke(r) return { r } end
return M
EOF
w closefail.lua <<'EOF'
local M = {}
function M.async_invoke(r) return { r } end
function M.close(ctx) return nil, "close says no" end
return M
EOF
w closeraise.lua <<'EOF'
local M = {}
function M.async_invoke(r) return { r } end
function M.close(ctx) error("close raised") end
return M
EOF
w openclose_log.lua <<'EOF'
local log = require "moonwait.log"
local time = require "moonwait.time"
local M = {}
function M.open(ctx) time.sleep(0.001); log.info("open gen", ctx.generation, "prev", ctx.previous) end
function M.async_invoke(r, ctx) ctx.log.warn("rec", ctx.seq) log.debug("dbg") return { r } end
function M.close(ctx) time.sleep(0.001); log.error("closing") end
return M
EOF
w globalload.lua <<'EOF'
x = 1
return { async_invoke = function(r) return { r } end }
EOF
w osexitload.lua <<'EOF'
os.exit(1)
EOF
w spin.lua <<'EOF'
local M = {}
function M.async_invoke(r) if r.spin then while true do end end return { r } end
return M
EOF
w spinload.lua <<'EOF'
while true do end
EOF
w fanout.lua <<'EOF'
local json = require "moonwait.json"
local M = {}
function M.async_invoke(r, ctx)
  local out = {}
  for i = 1, (r.n or 2) do out[i] = { i = i, src = r, big = r.big and r.big + 1 or nil, e = json.array(), o = {} } end
  return out
end
return M
EOF
w modify.lua <<'EOF'
local M = {}
function M.async_invoke(r, ctx)
  r.added_z = 1; r.added_a = "x"; r.b = nil
  if r.big then r.big = r.big + 1 end
  if r.arr then table.remove(r.arr, 1) end
  r.a = r.a
  return { r }
end
return M
EOF
w stdinread.lua <<'EOF'
local M = {}
function M.async_invoke(r) local l = io.read() return { r } end
return M
EOF
w jsonmod.lua <<'EOF'
local json = require "moonwait.json"
local mw = require "moonwait"
local M = {}
function M.async_invoke(r, ctx)
  local v, err = json.decode(r.s or "{}")
  r.dec = v and json.encode(v) or err
  r.enc = json.encode({ b = 1, a = { 1, 2 }, n = mw.null })
  r.v = type(mw.version)
  return { r }
end
return M
EOF
w state.lua <<'EOF'
local M = {}
local count = 0
function M.open(ctx) if ctx.previous then count = ctx.previous.count end end
function M.export_state() return { count = count } end
function M.async_invoke(r, ctx) count = count + 1; r.c = count; return { r } end
return M
EOF
w pipeline.lua <<'EOF'
return { script = "enrich.lua", input = "in.jsonl", output = "pout.jsonl", mode = "ordered", capacity = 3, timeout_ms = 2000 }
EOF
# inputs
printf '{"a":1}\n{"a":2,"d":3}\n{"$watermark": 10}\n{"a":3}\n\n{"a":4, "x" : [1, 2.50, 1e2]}\n{"$watermark":5}\n{"a":5,"big":12345678901234567890}\n{"$watermark":20}\n' > in.jsonl
: > empty.jsonl
printf '{"a":1}\n{"a":2}' > nonl.jsonl
printf '{"a":1}\r\n{"a":2}\r\n\r\n{"a":3}\r\n' > crlf.jsonl
printf '\n\n   \n{"a":1}\n\n' > blanks.jsonl
{
printf '{"a":1}\n'
printf '{"a":01}\n'
printf '{"a":2}\n'
printf '{"a":"x\0y"}\n'
printf '{"a":"\xff\xfe"}\n'
printf '[1,2]\n'
printf '{"a":1,}\n'
printf '\xef\xbb\xbf{"a":1}\n'
printf '{"a":"\\ud800"}\n'
printf '{"a":1e400}\n'
printf '{"a":1} x\n'
printf 'null\n'
printf '{"a":NaN}\n'
printf '{"a":"\xc0\xaf"}\n'
printf '{"$watermark": 1.5}\n'
printf '{"$watermark": "7"}\n'
printf '{"$watermark": 30, "x": 1}\n'
printf '{"a":1, "a":2, "b":3}\n'
printf '{"a":3}\n'
} > malformed.jsonl
python3 - <<'EOF'
open("deep.jsonl","w").write('{"a":' + '['*1001 + ']'*1001 + '}\n' + '{"a":' + '['*999 + ']'*999 + '}\n')
open("huge.jsonl","w").write('{"a":1}\n{"s":"' + 'x'*5000 + '"}\n{"a":3}\n')
open("many.jsonl","w").write(''.join('{"i":%d,"d":%d}\n' % (i, (i*7)%5) for i in range(1,301)))
open("evt.jsonl","w").write('{"t":1000}\n{"t":1500}\n{"t":1200}\n{"$watermark":1300}\n{"t":2000}\n{"t":{"x":1}}\n{"n":{"t":5000}}\n{"t":"3000"}\n{"t":2500.5}\n')
open("evtn.jsonl","w").write('{"n":{"t":1000}}\n{"n":{"t":1500}}\n{"n":{"t":900}}\n{"n":{"t":4000}}\n')
open("fails.jsonl","w").write(''.join('{"i":%d,"bad":%d}\n' % (i, b) for i, b in enumerate([0,1,0,2,3,4,5,6,7,8,9,10,11,12,13,14,0], 1)))
open("to.jsonl","w").write('{"i":1,"d":1}\n{"i":2,"d":500}\n{"i":3,"d":1}\n{"$watermark":100}\n{"i":4,"d":500,"otbad":1}\n{"i":5,"d":500,"otbad":2}\n{"i":6,"d":500,"otbad":3}\n{"i":7}\n')
open("retry.jsonl","w").write('{"k":"ok"}\n{"k":"flaky"}\n{"k":"final"}\n{"k":"always"}\n{"k":"empty"}\n{"k":"raise"}\n{"k":"yield"}\n{"k":"ok"}\n')
open("rexp.jsonl","w").write('{"n":1}\n{"n":3}\n{"n":9}\n{"n":2}\n')
open("spin.jsonl","w").write('{"a":1}\n{"a":2,"spin":true}\n{"a":3}\n')
open("int64.jsonl","w").write('{"big":9007199254740993}\n{"big":18446744073709551615}\n{"big":-9223372036854775808}\n{"big":18446744073709551616}\n{"big":1.0}\n')
open("mod.jsonl","w").write('{"a":1.50,"b":2,"c":"caf\\u00e9","e":[],"o":{},"arr":[1,2,3]}\n{ "a" : 1e2 , "b" : [ ] }\n{"a":1,"a":2}\n')
open("json.jsonl","w").write('{"s":"[1,2,{\\"b\\":1}]"}\n{"s":"{bad"}\n{"s":"9007199254740993"}\n')
EOF
w slow.lua <<'EOF'
local time = require "moonwait.time"
local M = {}
function M.async_invoke(r, ctx)
  time.sleep((r.d or 0) / 1000)
  if r.bad then return nil, "bad " .. ctx.seq end
  r.seq = ctx.seq; r.att = ctx.attempt
  return { r }
end
function M.close(ctx) io.stderr:write("close ran\n") end
return M
EOF
w hang.lua <<'EOF'
local time = require "moonwait.time"
local M = {}
function M.async_invoke(r, ctx)
  if r.hang then time.sleep(1000) end
  r.att = ctx.attempt
  return { r }
end
function M.close(ctx) io.stderr:write("close ran\n") end
return M
EOF
python3 - <<'EOF'
import random
random.seed(7)
open("crash.jsonl","w").write(''.join('{"i":%d,"d":%d%s}\n' % (i, random.randint(0,20), ',"bad":1' if i % 37 == 0 else '') + ('{"$watermark":%d}\n' % i if i % 50 == 0 else '') for i in range(1,1501)))
open("hang.jsonl","w").write('{"i":1}\n{"i":2}\n{"i":3}\n{"i":4,"hang":1}\n{"i":5}\n{"$watermark":9}\n{"i":6}\n{"i":7,"hang":1}\n' + ''.join('{"i":%d}\n' % i for i in range(8, 40)))
EOF
w http.lua <<'EOF'
local http = require "moonwait.http"
local json = require "moonwait.json"
local M = {}
function M.async_invoke(r, ctx)
  local url = r.url:gsub("NGINX", "127.0.0.1:" .. os.getenv("NGINX_PORT")):gsub("TLS", "127.0.0.1:" .. os.getenv("TLS_PORT")):gsub("FP", "127.0.0.1:" .. (os.getenv("FP_PORT") or "1"))
  local opts = r.opts or {}
  if opts.ca_file == "CERT" then opts.ca_file = os.getenv("CERT") end
  local res, err
  if r.post then res, err = http.post(url, r.post, opts) else res, err = http.request(url, opts) end
  if not res then return nil, err end
  r.status = res.status
  r.body = #res.body > 200 and (#res.body .. " bytes") or res.body
  r.ct = res.headers["content-type"]; r.xm = res.headers["X-Multi"]
  r.url = nil
  return { r }
end
return M
EOF
w redis.lua <<'EOF'
local redis = require "moonwait.redis"
local json = require "moonwait.json"
local M = {}
function M.async_invoke(r, ctx)
  local port = tonumber(r.port == "FP" and os.getenv("FP_PORT") or os.getenv("REDIS_PORT"))
  local c, err = redis.connect("127.0.0.1", port, r.opts or { timeout_ms = 500 })
  if not c then return nil, err end
  local out = {}
  if r.pipe then
    c:init_pipeline()
    for _, cmd in ipairs(r.pipe) do c:call(unpack(cmd)) end
    local res, e = c:commit_pipeline()
    out.res = res or e
  else
    local v, e = c:call(unpack(r.cmd))
    out.v = v; out.e = e
  end
  if not r.noka then c:set_keepalive(1000, 4) end
  r.out = json.encode(out)
  return { r }
end
return M
EOF
w sock.lua <<'EOF'
local socket = require "moonwait.socket"
local M = {}
function M.async_invoke(r, ctx)
  local s = socket.tcp()
  s:settimeouts(r.ct or 1000, r.st or 1000, r.rt or 1000)
  local ok, err = s:connect("127.0.0.1", tonumber(os.getenv("FP_PORT")))
  if not ok then return nil, "connect: " .. err end
  if r.mb then s:setoption("max_buffer", r.mb) end
  local n, e = s:send(r.send or "hello\r\n")
  if not n then return nil, "send: " .. e end
  local line, e2, partial = s:receive(r.pat or "*l")
  r.line = line; r.err = e2; r.partial = partial
  if r.until_ then
    local it = s:receiveuntil(r.until_)
    r.u1, r.ue = it()
  end
  r.reused = s:getreusedtimes()
  if r.ka then r.ka = s:setkeepalive(1000, 2) else s:close() end
  return { r }
end
return M
EOF
w socktls.lua <<'EOF'
local socket = require "moonwait.socket"
local M = {}
function M.async_invoke(r, ctx)
  local s = socket.tcp()
  s:settimeouts(1000, 1000, 1000)
  local port = tonumber(r.plain and os.getenv("NGINX_PORT") or os.getenv("TLS_PORT"))
  local ok, err = s:connect("127.0.0.1", port)
  if not ok then return nil, "connect: " .. err end
  if r.ca then s:setoption("ca_file", r.ca == "CERT" and os.getenv("CERT") or r.ca) end
  local sess, e = s:sslhandshake(nil, r.sni or "localhost", r.verify)
  r.hs = sess and "ok" or e
  if sess then
    s:send("GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
    r.line = s:receive()
  end
  s:close()
  return { r }
end
return M
EOF
