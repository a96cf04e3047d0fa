-- Specs for mutants of scripts/mutants.list that survived every other spec:
-- each asserts a promise of the README that its mutant breaks.
--   http: a stale pooled connection is retried once for idempotent methods,
--         never for POST/PATCH; keepalive = false never pools
--   socket: receiveuntil returns the data before the delimiter and consumes it
--   restore: every stored record comes back even beyond the new capacity,
--         and intake waits until the queue is under it
local H = require("helpers")
local servers = require("support.servers")

-- Run `body` over the single record `rec`; returns the run and its first output.
local function run_one(body, rec, args)
  local d = H.tmpdir()
  H.script(d, body)
  local r = H.run("run --script script.lua " .. (args or ""), { dir = d, input = H.jsonl({ rec }) })
  return r, r.lines[1] and H.json.decode(r.lines[1])
end

local function start(d, args)
  os.remove(d .. "/rc")
  os.execute(string.format("cd %s && { ( %s 2>log & echo $! >pid; wait $!; echo $? >rc ) & } >/dev/null 2>&1",
    d, H.cmd(args)))
end
local function wait_rc(d, secs)
  return tonumber(H.wait_for(function() return H.read(d .. "/rc") end, secs or 30))
end

describe("mutant kills", function()
  after_each(H.cleanup)

  describe("moonwait.http and a pooled connection the server dropped", function()
    -- faultpeer close-on-reuse answers the first request on a connection with
    -- {"conn":C,"n":1} and keep-alive, and closes the connection, without a
    -- byte of response, at the next request sent on it.
    it("retries an idempotent request once on a fresh connection", function()
      servers.with_faultpeer("close-on-reuse", function(peer)
        local r, o = run_one([[
local http = require "moonwait.http"
local mw = require "moonwait"
return { async_invoke = function(rec)
  local url = "http://127.0.0.1:" .. rec.port .. "/x"
  local a = assert(http.get(url))
  local pooled = mw.runtime_stats().pooled
  local b, berr = http.get(url)
  local c, cerr = http.request(url, { method = "PUT", body = "" })
  local d, derr = http.request(url, { method = "DELETE" })
  return { { a = a.body, pooled = pooled, b = b and b.body or berr, c = c and c.body or cerr,
             d = d and d.body or derr } }
end }
]], { port = peer.port })
        assert.equal(0, r.code, r.err)
        -- each request after the first went out on the pooled connection, was
        -- dropped, and was answered on a new one
        assert.same({ a = '{"conn":1,"n":1}', pooled = 1, b = '{"conn":2,"n":1}', c = '{"conn":3,"n":1}',
                      d = '{"conn":4,"n":1}' }, o)
      end)
    end)

    it("does not send a POST or a PATCH again: the request fails", function()
      servers.with_faultpeer("close-on-reuse", function(peer)
        local r, o = run_one([[
local http = require "moonwait.http"
return { async_invoke = function(rec)
  local url = "http://127.0.0.1:" .. rec.port .. "/x"
  local a = assert(http.get(url))                    -- connection 1, pooled
  local b, berr = http.post(url, "")                 -- on connection 1: dropped
  local c = assert(http.get(url))                    -- connection 2, pooled
  local d, derr = http.request(url, { method = "PATCH", body = "" }) -- on connection 2: dropped
  local e = assert(http.get(url))                    -- connection 3
  return { { a = a.body, post = b and b.body or false, post_err = berr or false, c = c.body,
             patch = d and d.body or false, patch_err = derr or false, e = e.body } }
end }
]], { port = peer.port })
        assert.equal(0, r.code, r.err)
        -- had either been sent again, it would have opened connection 2 (3)
        -- and the following GET would have reused it
        local url = "http://127.0.0.1:" .. peer.port .. "/x"
        assert.same({ a = '{"conn":1,"n":1}', post = false, post_err = "closed (POST " .. url .. ")",
                      c = '{"conn":2,"n":1}', patch = false, patch_err = "closed (PATCH " .. url .. ")",
                      e = '{"conn":3,"n":1}' }, o)
      end)
    end)
  end)

  it("http: keepalive = false never pools, even when the server would keep the connection", function()
    -- faultpeer keepalive-count keeps every connection open and numbers them
    servers.with_faultpeer("keepalive-count", function(peer)
      local r, o = run_one([[
local http = require "moonwait.http"
local mw = require "moonwait"
return { async_invoke = function(rec)
  local url = "http://127.0.0.1:" .. rec.port .. "/x"
  local a = assert(http.get(url, { keepalive = false }))
  local p1 = mw.runtime_stats().pooled
  local b = assert(http.get(url, { keepalive = false }))
  local p2 = mw.runtime_stats().pooled
  local c = assert(http.get(url))
  local p3 = mw.runtime_stats().pooled
  local d = assert(http.get(url))
  return { { a = a.body, b = b.body, c = c.body, d = d.body, p1 = p1, p2 = p2, p3 = p3 } }
end }
]], { port = peer.port })
      assert.equal(0, r.code, r.err)
      assert.same({ a = '{"conn":1,"n":1}', p1 = 0, b = '{"conn":2,"n":1}', p2 = 0,
                    -- the default (keepalive = true) does pool
                    c = '{"conn":3,"n":1}', p3 = 1, d = '{"conn":3,"n":2}' }, o)
    end)
  end)

  it("socket: receiveuntil returns the data before the delimiter and consumes the delimiter", function()
    servers.with_faultpeer("once", "first--second--tail", function(peer)
      local r, o = run_one([[
local socket = require "moonwait.socket"
return { async_invoke = function(rec)
  local s = socket.tcp()
  assert(s:connect("127.0.0.1", rec.port))
  assert(s:send("hi\n"))
  local iter = s:receiveuntil("--")
  local one, e1 = iter()
  local two, e2 = iter()
  local rest, e3 = s:receive(4)
  s:close()
  return { { one = one or e1, two = two or e2, rest = rest or e3 } }
end }
]], { port = peer.port })
      assert.equal(0, r.code, r.err)
      assert.same({ one = "first", two = "second", rest = "tail" }, o)
    end)
  end)

  it("restore: takes back more stored records than the new capacity, emits them all, and reads on only under it",
    function()
      local d = H.tmpdir()
      H.script(d, [[
local time = require "moonwait.time"
return { async_invoke = function(r)
  local p2 = io.open("phase2")
  if p2 then
    p2:close()
    local f = io.open("calls2", "a") f:write("start ", r.id, "\n") f:close()
    time.sleep(0.2)
    f = io.open("calls2", "a") f:write("end ", r.id, "\n") f:close()
    return { { id = r.id } }
  end
  local f = io.open("calls", "a") f:write(r.id, "\n") f:close()
  time.sleep(60)
end }
]])
      local recs = {}
      for i = 1, 9 do recs[i] = { id = i } end
      H.write(d .. "/in", H.jsonl(recs))
      local args = "run --script script.lua --input in --output out --checkpoint-dir cp --checkpoint-interval 600000"
      start(d, args .. " --capacity 5")
      -- five records in flight (the capacity) when the checkpoint is taken
      assert.truthy(H.wait_for(function() return #H.lines(H.read(d .. "/calls") or "") >= 5 end, 20))
      os.execute("kill -INT $(cat " .. d .. "/pid)")
      assert.equal(130, wait_rc(d), H.read(d .. "/log"))
      assert.same({ "1", "2", "3", "4", "5" }, H.lines(H.read(d .. "/calls")))
      H.write(d .. "/phase2", "")
      local code, _, err = H.sh(string.format("cd %s && %s", d, H.cmd(args .. " --capacity 2")))
      assert.equal(0, code, err)
      assert.same(recs, H.decode_lines(H.read(d .. "/out") or ""))
      -- the five stored records are all invoked again before any new one is read;
      -- a record read afterwards starts only when the queue is under the capacity
      -- (at most one other record still running)
      local running, started = {}, {}
      for _, l in ipairs(H.lines(H.read(d .. "/calls2") or "")) do
        local what, id = l:match("^(%a+) (%d+)$")
        id = tonumber(id)
        if what == "start" then
          if id > 5 then
            for i = 1, 5 do assert.truthy(started[i], "record " .. id .. " started before stored record " .. i) end
            local n = 0
            for _ in pairs(running) do n = n + 1 end
            assert.is_true(n <= 1, "record " .. id .. " started with " .. n .. " others running")
          end
          started[id] = true
          running[id] = true
        else
          running[id] = nil
        end
      end
      for i = 1, 9 do assert.truthy(started[i], "record " .. i .. " never started") end
    end)
end)
