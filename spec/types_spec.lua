-- The LuaLS annotation files (types/) in step with the binary: every
-- module a script can require, the objects they make, ctx and the script
-- module's fields, as the real binary lists them (spec/support/
-- types_walker.lua under `moonwait run`, moonwait.test's under `moonwait
-- test`), against the classes the annotation files declare: anything
-- exported but not annotated, or annotated but not there, fails.
-- lua-language-server itself is not available here (not a Debian bookworm
-- package, not on the npm registry), so the files are checked as Lua and
-- by this parser of their ---@class / ---@field / function lines.
local H = require("helpers")

local ROOT = "types/library"
local CWD = io.popen("pwd"):read("*l")

local function ls(dir, pat)
  local p = io.popen("find " .. H.q(dir) .. " -name " .. H.q(pat) .. " -type f | sort")
  local out = {}
  for l in p:lines() do out[#out + 1] = l end
  p:close()
  return out
end

-- { [class] = { members = { name = true }, parent = name, file = path } },
-- and { [module] = path } from ---@meta NAME.
local function parse_annotations()
  local classes, metas = {}, {}
  for _, path in ipairs(ls(ROOT, "*.lua")) do
    local vars, cur = {}, nil
    local n = 0
    for line in io.lines(path) do
      n = n + 1
      local meta = line:match("^%-%-%-@meta%s+([%w_.]+)")
      if meta then metas[meta] = path end
      local cname, parent = line:match("^%-%-%-@class%s+([%w_.]+)%s*:?%s*([%w_.]*)")
      if cname then
        assert(not classes[cname], path .. ":" .. n .. ": class " .. cname .. " declared twice")
        classes[cname] = { members = {}, parent = parent ~= "" and parent or nil, file = path }
        cur = cname
      elseif cur and line:match("^%-%-%-@field%s") then
        classes[cur].members[line:match("^%-%-%-@field%s+([%w_]+)")] = true
      elseif line:match("^%-%-%-") then
        -- a comment or another annotation inside the block
      else
        local var = line:match("^local%s+([%w_]+)%s*=%s*{}")
        if var and cur then vars[var] = cur end
        cur = nil
        local v, name = line:match("^function%s+([%w_]+)[.:]([%w_]+)%s*%(")
        if not v then v, name = line:match("^([%w_]+)%.([%w_]+)%s*=") end
        if v and vars[v] then classes[vars[v]].members[name] = true end
      end
    end
  end
  return classes, metas
end

local function members(classes, name)
  local out, c = {}, classes[name]
  while c do
    for k in pairs(c.members) do out[k] = true end
    c = c.parent and classes[c.parent]
  end
  return out
end

-- Lua modules shipped in lua/moonwait/ that are not for scripts.
local INTERNAL = {
  ["moonwait.host"] = "the host's policy (strict globals, the contract check)",
  ["moonwait.test_main"] = "the script `moonwait test` runs its specs from",
  ["moonwait.test"] = "only in `moonwait test` (checked below, in that mode)",
}

local function lua_modules()
  local out = {}
  for _, path in ipairs(ls("lua/moonwait", "*.lua")) do
    local rel = path:match("^lua/(.*)%.lua$"):gsub("/", ".")
    if not rel:find("^moonwait%.test%.") then out[#out + 1] = rel end
  end
  return out
end

-- Names ctx's metatable answers, from ctx.c's script_ctx_index (probed at runtime),
-- and fields set on a ctx only in some runs (a stream's entry, a reload).
local function ctx_sources()
  local probes = {}
  for name in H.read("src/lua/ctx.c"):match("int script_ctx_index.-\n}\n"):gmatch('strcmp%(k, "([%w_]+)"%)') do
    probes[#probes + 1] = name
  end
  local sometimes = {}
  for _, f in ipairs({ "src/lua/invoke.c", "src/lua/hooks.c" }) do
    for name in H.read(f):gmatch('lua_setfield%([%w_>-]+, %-2, "([%w_]+)"%)') do sometimes[name] = true end
  end
  -- a record's ctx fields: names interned once (invoke.c's script_ctx_keys)
  local keys = H.read("src/lua/invoke.c"):match("script_ctx_keys%[%] = (%b{})") or ""
  for name in keys:gmatch('"([%w_]+)"') do sometimes[name] = true end
  return probes, sometimes
end

-- moonwait.redis.client's commands (its parent class) are made on demand:
-- compared on their own, as the walker probes them.
local OWN_ONLY = { ["moonwait.redis.client"] = true }

local function compare(api, classes, name, also, errors)
  local have = OWN_ONLY[name] and (classes[name] or {}).members or members(classes, name)
  if not classes[name] then
    errors[#errors + 1] = name .. ": exported (" .. table.concat(api, ", ") .. ") but no ---@class " .. name
    return
  end
  local there = {}
  for _, k in ipairs(api) do
    there[k] = true
    if not have[k] then errors[#errors + 1] = name .. "." .. k .. ": exported but not annotated" end
  end
  for k in pairs(also or {}) do there[k] = true end
  for k in pairs(have) do
    if not there[k] then errors[#errors + 1] = name .. "." .. k .. ": annotated but not in the binary" end
  end
end

local function walk_run()
  local d = H.tmpdir()
  local probes = ctx_sources()
  local mods = {}
  for _, m in ipairs(lua_modules()) do
    if not INTERNAL[m] then mods[#mods + 1] = m end
  end
  local cmds = {}
  for k in pairs(parse_annotations()["moonwait.redis.commands"].members) do cmds[#cmds + 1] = k end
  local code, out, err = H.sh("cd " .. H.q(d) .. " && echo '{}' | PROBES=" .. H.q(table.concat(probes, " "))
    .. " REDIS_COMMANDS=" .. H.q(table.concat(cmds, " "))
    .. " MODULES=" .. H.q(table.concat(mods, " ")) .. " " .. H.q(H.bin)
    .. " run --script " .. H.q(CWD .. "/spec/support/types_walker.lua") .. " --retry fixed:2:1 --timeout 5000")
  assert(code == 0, out .. err)
  local json = require("cjson")
  return json.decode(out).api
end

describe("the LuaLS annotation files", function()
  after_each(H.cleanup)

  it("parse as Lua", function()
    local files = ls("types", "*.lua")
    assert.truthy(#files >= 12, #files)
    for _, path in ipairs(files) do
      local fn, err = loadfile(path)
      assert.truthy(fn, err)
    end
    local code, out, err = H.sh("for f in $(find types -name '*.lua'); do luajit -bl \"$f\" >/dev/null || exit 1; done")
    assert.equal(0, code, out .. err)
  end)

  it("annotate every module, object, ctx field and module field the binary has, and nothing else", function()
    local api = walk_run()
    local classes, metas = parse_annotations()
    local probes, sometimes = ctx_sources()
    assert.truthy(sometimes.source_id and sometimes.deliveries and sometimes.previous and #probes >= 4)
    -- Fields a ctx gets only in some runs (a stream's entry, a reload's
    -- state): set in invoke.c / hooks.c, so they exist too.
    local also = {
      ["moonwait.ctx"] = { source_id = true, deliveries = true },
      ["moonwait.hook_ctx"] = { previous = true },
    }
    local errors = {}
    for name, keys in pairs(api) do
      if name:find("^moonwait") then
        compare(keys, classes, name, also[name], errors)
        -- a module (not an object, ctx or M) has its own annotation file
        if not name:find("^moonwait%.%a+%.") and not name:find("ctx$") and name ~= "moonwait.module"
            and not metas[name] then
          errors[#errors + 1] = name .. ": no annotation file with ---@meta " .. name
        end
      end
    end
    for name, path in pairs(metas) do
      if not api[name] and name ~= "moonwait.test" then
        errors[#errors + 1] = path .. ": ---@meta " .. name .. ", a module the binary does not have"
      end
    end
    table.sort(errors)
    assert.same({}, errors)
  end)

  it("annotate moonwait.test and its fakes as `moonwait test` has them", function()
    local d = H.tmpdir()
    H.write(d .. "/walk_spec.lua", [[
local T = require "moonwait.test"
local json = require "moonwait.json"
local function keys(t)
  local out = {}
  for k in pairs(t) do if type(k) == "string" and k:sub(1, 1) ~= "_" then out[#out + 1] = k end end
  table.sort(out)
  return out
end
it("walks", function()
  io.stdout:write("API ", json.encode({ ["moonwait.test"] = keys(T), ["moonwait.test.assert"] = keys(T.assert),
    ["moonwait.test.http_fake"] = keys(T.http), ["moonwait.test.redis_fake"] = keys(T.redis) }), "\n")
end)
]])
    local code, out, err = H.sh(H.q(H.bin) .. " test " .. H.q(d .. "/walk_spec.lua"))
    assert.equal(0, code, out .. err)
    local api = require("cjson").decode(out:match("API ([^\n]+)"))
    local classes = parse_annotations()
    local errors = {}
    for name, keys in pairs(api) do compare(keys, classes, name, nil, errors) end
    table.sort(errors)
    assert.same({}, errors)
  end)

  it("catch a function the binary exports without an annotation, and an annotation of nothing", function()
    -- the checker itself: a class missing a member, and one with an extra
    local classes = { x = { members = { a = true, gone = true } } }
    local errors = {}
    compare({ "a", "b" }, classes, "x", nil, errors)
    table.sort(errors)
    assert.same({ "x.b: exported but not annotated", "x.gone: annotated but not in the binary" }, errors)
  end)

  it("are installed by make install with a luarc.json", function()
    local d = H.tmpdir()
    -- (-o: never rebuild the binary from here, whatever the tree's state)
    local build = os.getenv("CTEST_DIR") or "build"
    local code, out, err = H.sh("make -s BUILD=" .. H.q(build) .. " -o " .. H.q(build .. "/moonwait")
      .. " install PREFIX=" .. H.q(d))
    assert.equal(0, code, out .. err)
    assert.truthy(H.exists(d .. "/share/moonwait/types/library/moonwait.lua"))
    assert.truthy(H.exists(d .. "/share/moonwait/types/library/contract.lua"))
    assert.truthy(H.exists(d .. "/share/moonwait/types/library/moonwait/http.lua"))
    assert.truthy(H.exists(d .. "/share/moonwait/types/spec-env/moonwait_test.lua"))
    local rc = require("cjson").decode(H.read(d .. "/share/moonwait/types/luarc.json"))
    assert.equal("LuaJIT", rc["runtime.version"])
    assert.truthy(H.exists(d .. "/share/moonwait/lua/moonwait/test/fakes.lua"))
  end)
end)
