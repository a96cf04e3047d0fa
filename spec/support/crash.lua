-- spec/support/crash.lua: the crash harness. Runs a pipeline with
-- per-record latencies, retries, watermarks, dead letters and timeouts
-- (records held behind a hanging head); kills it with
-- SIGKILL at random moments and restarts it with the same command until it
-- completes; then compares output and dead letters with an uninterrupted
-- run's. Used by spec/checkpoint_spec.lua and scripts/soak-crash.
local H = require("helpers")
local C = {}

-- Every 100th record from 50 (50, 150, ...) hangs: the records behind it
-- complete and are held for order while its timeout (C.TIMEOUT) runs, and
-- the timeout decides its outcome: on_timeout's record for 100, 300, ...,
-- a dead letter ("timed out, and on_timeout failed") for 50, 150, ...
-- Its budget is the time it ran, carried across the kills.
C.SCRIPT = [[
local time = require "moonwait.time"
return {
  retry = { max_attempts = 3, delay_ms = 15 },
  retry_on_error = function(err) return err == "flaky" end,
  async_invoke = function(r, ctx)
    if r.id % 50 == 0 and r.id % 100 ~= 0 then time.sleep(60) end
    time.sleep((r.id * 7 % 5) / 1000)
    if r.id % 13 == 0 and ctx.attempt == 1 then return nil, "flaky" end
    if r.id % 29 == 0 then return nil, "poison" end  -- dead-lettered
    if r.id % 17 == 0 then return {} end
    if r.id % 19 == 0 then return { { id = r.id, part = 1 }, { id = r.id, part = 2 } } end
    if r.id % 7 == 0 then return { r } end  -- untouched: written as it came
    r.attempt = ctx.attempt                 -- edited: original order, exact values kept
    r.next_big = r.big + 1
    return { r }
  end,
  on_timeout = function(r)
    if r.id % 200 == 150 then error("gave up") end
    return { { id = r.id, timed_out = true } }
  end,
}
]]

-- The record budget: far above what any other record takes (a few ms of
-- work), so the outcomes do not depend on the machine's load. A budget is
-- carried across the kills (the time a record ran in each life adds up),
-- and on a starved machine a 3 ms record can run for tens of ms a life: 120
-- ms was once crossed under four CPU hogs (a normal record timed out).
-- 300 ms, scaled by the load per CPU when it is above 1 (up to 2x), 8x
-- under valgrind; MOONWAIT_CRASH_TIMEOUT sets it (a replay should use the
-- one printed with the seed).
local function load_factor()
  local f = io.open("/proc/loadavg")
  if not f then return 1 end
  local load = tonumber((f:read("*l") or ""):match("^[%d.]+")) or 0
  f:close()
  local p = io.popen("nproc 2>/dev/null")
  local ncpu = tonumber(p:read("*l") or "") or 1
  p:close()
  return math.min(2, math.max(1, load / ncpu))
end
C.TIMEOUT = tonumber(os.getenv("MOONWAIT_CRASH_TIMEOUT") or "") or
  (H.wrapper == "" and math.floor(300 * load_factor()) or 2400)

function C.input(n)
  local t = {}
  for i = 1, n do
    -- unsorted keys, a 64-bit id, empty containers and float spellings:
    -- the restored output must keep them byte for byte
    t[#t + 1] = '{"z":"last","id":' .. i .. ',"t":' .. (i * 10) .. ',"big":9007199254' ..
      string.format("%06d", 740993 + i) .. ',"e":[],"o":{},"f":1.50}'
    if i % 25 == 0 then t[#t + 1] = '{"$watermark":' .. (i * 10) .. '}' end
  end
  return table.concat(t, "\n") .. "\n"
end

local function args(mode, out, dl, cp, interval)
  return string.format("run --script script.lua --input in --output %s --mode %s --capacity 12 --timeout %d " ..
    "--on-error dead-letter --dead-letter %s%s", out, mode, C.TIMEOUT, dl, cp and (" --checkpoint-dir " .. cp ..
    " --checkpoint-interval " .. (interval or 15)) or "")
end
C.args = args

-- Dead letters carry elapsed_ms (wall time): everything else in them is
-- compared byte for byte.
function C.strip_elapsed(s)
  return (s or ""):gsub('"elapsed_ms":%d+', '"elapsed_ms":_')
end

-- Decode output lines into comparable strings.
local function items(s)
  local t = {}
  for _, l in ipairs(H.lines(s)) do
    local o = H.json.decode(l)
    if o["$watermark"] then t[#t + 1] = "w" .. o["$watermark"]
    elseif o.record then t[#t + 1] = "dl" .. o.record.id .. ":" .. o.attempts
    else t[#t + 1] = o.id .. ":" .. (o.attempt or "") .. ":" .. (o.part or "") end
  end
  return t
end

-- Unordered: the same multiset, and each watermark separates exactly the
-- same records as in the reference.
local function segments(list)
  local segs, cur = {}, {}
  for _, v in ipairs(list) do
    if v:sub(1, 1) == "w" then
      table.sort(cur)
      segs[#segs + 1] = table.concat(cur, ",") .. "|" .. v
      cur = {}
    else
      cur[#cur + 1] = v
    end
  end
  table.sort(cur)
  segs[#segs + 1] = table.concat(cur, ",")
  return segs
end

function C.compare(mode, ref, got)
  local a, b = items(ref), items(got)
  if mode == "unordered" then a, b = segments(a), segments(b) end
  if #a ~= #b then return false, ("length %d vs %d"):format(#a, #b) end
  for i = 1, #a do
    if a[i] ~= b[i] then return false, ("item %d: %s vs %s"):format(i, a[i], b[i]) end
  end
  return true
end

-- Prepare a directory with the script and input and the reference run.
function C.setup(mode, n)
  local d = H.tmpdir()
  H.script(d, C.SCRIPT)
  H.write(d .. "/in", C.input(n or 240))
  local code, _, err = H.sh(string.format("cd %s && %s", d, H.cmd(args(mode, "ref.out", "ref.dl"))))
  assert(code == 0, err)
  return d
end

-- One trial: kill at random moments (rng(lo, hi) in ms) until it completes.
function C.trial(d, mode, rng, log)
  os.execute(string.format("cd %s && rm -rf cp out dl", d))
  local kills = 0
  for attempt = 1, 200 do
    -- the random kill moment is the behaviour under test (this sleep stays)
    local ms = rng(5, 70) * (H.wrapper == "" and 1 or 12)
    local cmd = string.format(
      "cd %s && rm -f rc && { %s 2>>log & pid=$!; sleep %.3f; kill -9 $pid 2>/dev/null; wait $pid; echo $? >rc; }",
      d, H.cmd(args(mode, "out", "dl", "cp")), ms / 1000)
    -- After 40 kills, let a run finish (no kill, no sleep): on a slow machine
    -- (valgrind's start-up alone can outlast every kill window) the trial
    -- must still end.
    if attempt > 40 then
      cmd = string.format("cd %s && rm -f rc && { %s 2>>log; echo $? >rc; }", d, H.cmd(args(mode, "out", "dl", "cp")))
    end
    os.execute(cmd)
    local st = H.read(d .. "/rc")
    if not st then
      -- the shell above writes rc synchronously: its absence means the
      -- directory itself was disturbed (say so rather than "exited nil")
      local _, ls = H.sh("ls -la " .. H.q(d) .. " 2>&1")
      return false, ("no exit status written by the run (kill after %d ms); %s:\n%s"):format(ms, d, ls)
    end
    local rc = tonumber(st:match("%d+"))
    if rc == 0 then break end
    if rc ~= 137 then return false, "run exited " .. tostring(rc) .. ": " .. (H.read(d .. "/log") or "") end
    kills = kills + 1
  end
  -- one more run must be a no-op that says so
  local code, _, err = H.sh(string.format("cd %s && %s", d, H.cmd(args(mode, "out", "dl", "cp"))))
  if code ~= 0 or not err:find("already completed", 1, true) then return false, "rerun: " .. err end
  local ok, why = C.compare(mode, H.read(d .. "/ref.out"), H.read(d .. "/out") or "")
  if not ok then return false, "output " .. why, kills end
  -- ordered: byte for byte the uninterrupted run's files
  if mode == "ordered" and H.read(d .. "/ref.out") ~= H.read(d .. "/out") then
    return false, "output differs in bytes", kills
  end
  if mode == "ordered" and C.strip_elapsed(H.read(d .. "/ref.dl")) ~= C.strip_elapsed(H.read(d .. "/dl")) then
    return false, "dead letters differ in bytes", kills
  end
  ok, why = C.compare("unordered", H.read(d .. "/ref.dl"), H.read(d .. "/dl") or "")
  if not ok then return false, "dead letters " .. why, kills end
  if log then log(kills) end
  return true, nil, kills
end

-- The entries of a checkpoint file: { seq, budget, attempt, done } for each
-- record in queue order (watermarks are skipped). Parses the length-prefixed
-- fields, so raw lines with any bytes are fine.
function C.entries(ck)
  local t = {}
  local pos = ck:find("\nentries %d+\n")
  if not pos then return t end
  pos = ck:find("\n", pos + 1) + 1
  local function lenfield()
    local n, colon = ck:match("^(%d+)():", pos)
    if not n then return nil end
    local s = ck:sub(colon + 1, colon + tonumber(n))
    pos = colon + 1 + tonumber(n)
    return s
  end
  while pos <= #ck do
    local c = ck:sub(pos, pos)
    if c == "W" then
      pos = ck:find("\n", pos) + 1
    elseif c == "R" then
      local seq, line, attempt, budget, mal, nxt = ck:match("^R (%d+) (%d+) (%d+) (%d+) (%d+) ()", pos)
      if not seq then break end
      pos = nxt
      lenfield(); pos = pos + 1; lenfield()
      local e = { seq = tonumber(seq), line = tonumber(line), attempt = tonumber(attempt), budget = tonumber(budget) }
      if ck:sub(pos, pos) == " " then
        local done, nxt2 = ck:match("^ (%d+) %d+ ()", pos)
        e.done = done == "1"
        pos = nxt2
        lenfield(); pos = pos + 1; lenfield()
      end
      pos = pos + 1 -- newline
      t[#t + 1] = e
    else
      break
    end
  end
  return t
end

-- A small seeded generator (the same numbers for a seed on every machine).
function C.rng(seed)
  local x = seed % 2147483647
  if x <= 0 then x = x + 2147483646 end
  return function(lo, hi)
    x = x * 16807 % 2147483647
    return lo + x % (hi - lo + 1)
  end
end

return C
