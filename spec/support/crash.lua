-- spec/support/crash.lua: the crash harness. Runs a pipeline with
-- per-record latencies, retries, watermarks and dead letters; kills it with
-- SIGKILL at random moments and restarts it with the same command until it
-- completes; then compares output and dead letters with an uninterrupted
-- run's. Used by spec/checkpoint_spec.lua and scripts/soak-crash.
local H = require("helpers")
local C = {}

C.SCRIPT = [[
local time = require "moonwait.time"
return {
  retry = { max_attempts = 3, delay_ms = 15 },
  retry_on_error = function(err) return err == "flaky" end,
  async_invoke = function(r, ctx)
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
}
]]

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

local function args(mode, out, dl, cp)
  return string.format("run --script script.lua --input in --output %s --mode %s --capacity 12 --timeout 5000 " ..
    "--on-error dead-letter --dead-letter %s%s", out, mode, dl, cp and (" --checkpoint-dir " .. cp ..
    " --checkpoint-interval 15") or "")
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
  for _ = 1, 200 do
    local ms = rng(5, 70) * (H.wrapper == "" and 1 or 12)
    local cmd = string.format(
      "cd %s && { %s 2>>log & pid=$!; sleep %.3f; kill -9 $pid 2>/dev/null; wait $pid; echo $? >rc; }",
      d, H.cmd(args(mode, "out", "dl", "cp")), ms / 1000)
    os.execute(cmd)
    local rc = tonumber((H.read(d .. "/rc") or ""):match("%d+"))
    if rc == 0 then break end
    if rc ~= 137 then return false, "run exited " .. tostring(rc) .. ": " .. (H.read(d .. "/log") or "") end
    kills = kills + 1
  end
  -- one more run must be a no-op that says so
  local code, _, err = H.sh(string.format("cd %s && %s", d, H.cmd(args(mode, "out", "dl", "cp"))))
  if code ~= 0 or not err:find("already completed", 1, true) then return false, "rerun: " .. err end
  local ok, why = C.compare(mode, H.read(d .. "/ref.out"), H.read(d .. "/out") or "")
  if not ok then return false, "output " .. why, kills end
  -- ordered: byte for byte the uninterrupted run's file
  if mode == "ordered" and H.read(d .. "/ref.out") ~= H.read(d .. "/out") then
    return false, "output differs in bytes", kills
  end
  ok, why = C.compare("unordered", H.read(d .. "/ref.dl"), H.read(d .. "/dl") or "")
  if not ok then return false, "dead letters " .. why, kills end
  if log then log(kills) end
  return true, nil, kills
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
