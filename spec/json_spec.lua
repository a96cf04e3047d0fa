-- The strict JSON layer, end to end through the real binary: which lines are
-- records (spec/corpus/json/valid.jsonl) and which are malformed
-- (spec/corpus/json/invalid.lua), what comes out byte for byte, what a
-- script sees and writes (shapes, exact 64-bit integers, key order), the
-- dead-letter format for malformed lines, moonwait.json, and determinism.
--
-- Corpus documents are batched: one input file and one process per run.
local H = require("helpers")
local cjson = H.json
local bit = require("bit")

local HERE = (debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$")) or "spec"
local CORPUS = HERE .. "/corpus/json/"

local PASS = [[return { async_invoke = function(r, ctx) return { r } end }]]
local ADD = [[return { async_invoke = function(r, ctx) r.zz = true; return { r } end }]]

-- ---- helpers -------------------------------------------------------------------

local run = H.run_script

-- Split on "\n" (every line must be terminated).
local function lines(s)
  local t = {}
  for l in s:gmatch("([^\n]*)\n") do t[#t + 1] = l end
  return t
end

-- Printable form of bytes for failure messages.
local function show(s)
  return (s:gsub("[%z\1-\31\127-\255]", function(c) return string.format("\\x%02x", c:byte()) end))
end

-- Length of the valid UTF-8 sequence starting at s[i] (a non-ASCII byte), or
-- nil: no overlong forms, no surrogates, nothing above U+10FFFF.
local function utf8_len(s, i)
  local c = s:byte(i)
  local need, lo, hi = nil, 0x80, 0xbf
  if c >= 0xc2 and c <= 0xdf then need = 1
  elseif c >= 0xe0 and c <= 0xef then
    need = 2
    if c == 0xe0 then lo = 0xa0 elseif c == 0xed then hi = 0x9f end
  elseif c >= 0xf0 and c <= 0xf4 then
    need = 3
    if c == 0xf0 then lo = 0x90 elseif c == 0xf4 then hi = 0x8f end
  else return nil end
  if i + need > #s then return nil end
  local c1 = s:byte(i + 1)
  if c1 < lo or c1 > hi then return nil end
  for k = 2, need do
    local ck = s:byte(i + k)
    if ck < 0x80 or ck > 0xbf then return nil end
  end
  return need + 1
end

local function utf8_valid(s)
  local i = 1
  while i <= #s do
    if s:byte(i) < 0x80 then i = i + 1
    else
      local n = utf8_len(s, i)
      if not n then return false end
      i = i + n
    end
  end
  return true
end

-- What "raw" decodes to: UTF-8 text as it is, any other byte as its Latin-1
-- reading (U+0080..U+00FF in UTF-8).
local function latin1_reading(s)
  local out, i = {}, 1
  while i <= #s do
    local c = s:byte(i)
    local n = c >= 0x80 and utf8_len(s, i)
    if c < 0x80 then out[#out + 1] = string.char(c); i = i + 1
    elseif n then out[#out + 1] = s:sub(i, i + n - 1); i = i + n
    else
      out[#out + 1] = c < 0xc0 and string.char(0xc2, c) or string.char(0xc3, c - 0x40)
      i = i + 1
    end
  end
  return table.concat(out)
end

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local function b64decode(s)
  assert(#s % 4 == 0, "base64 length not a multiple of 4")
  local val = {}
  for i = 1, 64 do val[B64:byte(i)] = i - 1 end
  local out = {}
  for i = 1, #s, 4 do
    local a, b, c, d = s:byte(i, i + 3)
    local n = bit.bor(bit.lshift(assert(val[a]), 18), bit.lshift(assert(val[b]), 12),
      bit.lshift(val[c] or 0, 6), val[d] or 0)
    out[#out + 1] = string.char(bit.band(bit.rshift(n, 16), 255))
    if c ~= 61 then out[#out + 1] = string.char(bit.band(bit.rshift(n, 8), 255)) end
    if d ~= 61 then out[#out + 1] = string.char(bit.band(n, 255)) end
  end
  return table.concat(out)
end

-- The valid corpus: one document per line; '#' lines and blank lines are not
-- documents. Plus the deepest documents a record may hold (1000 levels in all).
local function valid_corpus()
  local docs = {}
  for l in assert(H.read(CORPUS .. "valid.jsonl"), "missing valid.jsonl"):gmatch("([^\n]*)\n") do
    if l ~= "" and l:sub(1, 1) ~= "#" then docs[#docs + 1] = l end
  end
  docs[#docs + 1] = ("["):rep(999) .. ("]"):rep(999)
  docs[#docs + 1] = ('{"a":'):rep(998) .. "{}" .. ("}"):rep(998)
  docs[#docs + 1] = ("[{\"k\":"):rep(499) .. "[]" .. ("}]"):rep(499)
  return docs
end

local function invalid_corpus()
  local list = dofile(CORPUS .. "invalid.lua")
  for _, c in ipairs(list) do
    c.error = string.format("malformed JSON at byte %d: %s", c.at, c.what)
  end
  return list
end

-- ---- specs ---------------------------------------------------------------------

describe("strict JSON", function()
  after_each(H.cleanup)

  -- 1. Valid documents --------------------------------------------------------

  it("passes every valid corpus document through byte for byte", function()
    local docs = valid_corpus()
    assert.is_true(#docs >= 120, "corpus too small: " .. #docs)
    local input = {}
    for i, doc in ipairs(docs) do input[i] = '{"v":' .. doc .. "}" end
    local r = run(PASS, table.concat(input, "\n") .. "\n")
    assert.equal(0, r.code, r.err)
    assert.equal("", r.err)
    local out = lines(r.output)
    assert.equal(#docs, #out, "one output line per document")
    for i = 1, #docs do
      assert.equal(input[i], out[i], "document " .. i .. ": " .. show(docs[i]):sub(1, 200))
    end
  end)

  it("keeps every valid corpus document byte for byte when the script edits the record", function()
    local docs = valid_corpus()
    local input = {}
    for i, doc in ipairs(docs) do input[i] = '{"v":' .. doc .. "}" end
    local r = run(ADD, table.concat(input, "\n") .. "\n")
    assert.equal(0, r.code, r.err)
    local out = lines(r.output)
    assert.equal(#docs, #out, "one output line per document")
    for i = 1, #docs do
      assert.equal('{"v":' .. docs[i] .. ',"zz":true}', out[i],
        "document " .. i .. ": " .. show(docs[i]):sub(1, 200))
      -- And another decoder agrees that the output is JSON.
      local ok, err = pcall(cjson.decode, out[i])
      assert.is_true(ok, "cjson rejects output " .. i .. ": " .. tostring(err))
    end
  end)

  it("accepts whitespace between tokens: untouched exact, edited compact and equal in value", function()
    -- { input line, its compact form (spelling kept) }
    local cases = {
      { '{ "v" : 1 }', '{"v":1}' },
      { '{\t"v"\t:\t[\t1\t,\t2\t]\t}', '{"v":[1,2]}' },
      { '{"v":\r[ ]\r,"w": { } }', '{"v":[],"w":{}}' },
      { '{ "v" : [ [ ] , { } , [ { } ] ] , "w" : { "a" : { } } }', '{"v":[[],{},[{}]],"w":{"a":{}}}' },
      { '{"v" :1.50 , "w": 1E2 ,"x":"a b" , "y" : "\\u00e9" }', '{"v":1.50,"w":1E2,"x":"a b","y":"\\u00e9"}' },
      { '{  "v"  :  9223372036854775807  ,  "w"  :  -0  }', '{"v":9223372036854775807,"w":-0}' },
      { '{ "v" : [ true , false , null ] }', '{"v":[true,false,null]}' },
      { '{"v":{ "a" :[ 1 ,{ "b" :[ ]} ] }}', '{"v":{"a":[1,{"b":[]}]}}' },
    }
    local input = {}
    for i, c in ipairs(cases) do input[i] = c[1] end
    local text = table.concat(input, "\n") .. "\n"

    local r = run(PASS, text)
    assert.equal(0, r.code, r.err)
    assert.equal(text, r.output)

    r = run(ADD, text)
    assert.equal(0, r.code, r.err)
    local out = lines(r.output)
    assert.equal(#cases, #out)
    for i, c in ipairs(cases) do
      local want = c[2]:sub(1, -2) .. ',"zz":true}'
      assert.equal(want, out[i], "case " .. i)
      local expect = cjson.decode(c[1])
      expect.zz = true
      assert.same(expect, cjson.decode(out[i]), "case " .. i .. " (value)")
    end
  end)

  it("passes an untouched record through with the whitespace around the object too", function()
    local text = '  {"v":1}\n\t{ "v" : [ ] }\t \n{"v":2}   \n'
    local r = run(PASS, text)
    assert.equal(0, r.code, r.err)
    assert.equal(text, r.output)
  end)

  -- 2. Invalid documents ------------------------------------------------------

  it("dead-letters every invalid corpus line once, naming the class, as valid JSON lines", function()
    local bad = invalid_corpus()
    assert.is_true(#bad >= 100, "corpus too small: " .. #bad)
    local input, ok_lines = {}, {}
    for i, c in ipairs(bad) do
      ok_lines[i] = '{"ok":' .. i .. "}"
      input[#input + 1] = ok_lines[i]   -- line 2i-1
      input[#input + 1] = c.line        -- line 2i
    end
    local d = H.tmpdir()
    local r = run(PASS, table.concat(input, "\n") .. "\n",
      "--on-error dead-letter --dead-letter " .. H.q(d .. "/dl.jsonl"))
    assert.equal(0, r.code, r.err)
    -- Nothing malformed is emitted: the output is exactly the good lines.
    assert.equal(table.concat(ok_lines, "\n") .. "\n", r.output)

    local dl = H.read(d .. "/dl.jsonl")
    assert.is_string(dl, "no dead-letter file")
    assert.equal("\n", dl:sub(-1))
    local seen = {}
    local n = 0
    for l in dl:gmatch("([^\n]*)\n") do
      n = n + 1
      local ok, d = pcall(cjson.decode, l)
      assert.is_true(ok, "dead letter " .. n .. " is not JSON: " .. show(l):sub(1, 300))
      assert.is_number(d.line)
      assert.equal(0, d.line % 2, "dead letter for a good line " .. d.line)
      local i = d.line / 2
      local c = bad[i]
      assert.is_table(c, "dead letter for line " .. d.line)
      assert.is_nil(seen[i], "two dead letters for " .. c.name)
      seen[i] = true
      assert.equal(c.error, d.error, c.name)
      assert.is_nil(d.record, c.name)
      assert.equal(0, d.attempts, c.name)
      assert.equal(false, d.timed_out, c.name)
      assert.is_string(d.raw, c.name)
      if utf8_valid(c.line) then
        assert.is_nil(d.raw_base64, c.name .. ": raw_base64 for a UTF-8 line")
        assert.equal(c.line, d.raw, c.name .. ": raw")
      else
        assert.is_string(d.raw_base64, c.name .. ": no raw_base64 for a non-UTF-8 line")
        assert.equal(c.line, b64decode(d.raw_base64), c.name .. ": raw_base64")
        assert.equal(latin1_reading(c.line), d.raw, c.name .. ": raw (Latin-1 reading)")
      end
    end
    assert.equal(#bad, n, "one dead letter per invalid line")
    for i, c in ipairs(bad) do assert.is_true(seen[i], "no dead letter for " .. c.name) end
  end)

  it("keeps NUL bytes and invalid UTF-8 intact in raw and raw_base64", function()
    local d = H.tmpdir()
    local cases = {
      '{"v":"a\0b"}',
      '\0\0{"v":1}\0',
      '{"v":"\xff\0\xfe"}',
      '{"v":"\xc0\xaf\xed\xa0\x80\xf4\x90\x80\x80"}' .. ("x"):rep(5000) .. "\0tail",
      '{"v":"caf\xc3\xa9 \xe2\x82"}',
    }
    local r = run(PASS, table.concat(cases, "\n") .. "\n",
      "--on-error dead-letter --dead-letter " .. H.q(d .. "/dl"))
    assert.equal(0, r.code, r.err)
    assert.equal("", r.output)
    local got = lines(H.read(d .. "/dl"))
    assert.equal(#cases, #got)
    for i, l in ipairs(got) do
      local x = cjson.decode(l)
      assert.equal(i, x.line)
      local exact = x.raw_base64 and b64decode(x.raw_base64) or x.raw
      assert.equal(#cases[i], #exact, "line " .. i .. ": length")
      assert.equal(cases[i], exact, "line " .. i)
      assert.is_nil(l:find("%z"), "a raw NUL byte in the dead-letter file")
    end
    -- NUL bytes alone do not need base64: "\u0000" is exact.
    assert.is_nil(cjson.decode(got[1]).raw_base64)
    assert.is_nil(cjson.decode(got[2]).raw_base64)
    assert.equal('"\\u0000\\u0000{\\"v\\":1}\\u0000"', got[2]:match('"raw":("[^,]*")'))
  end)

  it("splits a raw newline inside a string into two malformed lines", function()
    local d = H.tmpdir()
    local r = run(PASS, '{"ok":1}\n{"v":"a\nb"}\n{"ok":2}\n',
      "--on-error dead-letter --dead-letter " .. H.q(d .. "/dl"))
    assert.equal(0, r.code, r.err)
    assert.equal('{"ok":1}\n{"ok":2}\n', r.output)
    local got = H.decode_lines(H.read(d .. "/dl"))
    assert.equal(2, #got)
    assert.equal(2, got[1].line)
    assert.equal('{"v":"a', got[1].raw)
    assert.equal("malformed JSON at byte 6: unterminated string", got[1].error)
    assert.equal(3, got[2].line)
    assert.equal('b"}', got[2].raw)
    assert.equal("malformed JSON at byte 1: 'b' where a JSON object was expected", got[2].error)
  end)

  it("fails the run on each invalid corpus line with --on-error fail, naming the input line", function()
    local bad = invalid_corpus()
    local d = H.tmpdir()
    local script = H.script(d, PASS)
    for i, c in ipairs(bad) do
      H.write(d .. "/in." .. i, '{"ok":1}\n{"ok":2}\n' .. c.line .. '\n{"ok":3}\n')
    end
    -- One shell, one moonwait per line (each run stops at its malformed line).
    local code = H.sh(string.format(
      "cd %s && for i in $(seq 1 %d); do timeout 20 %s run --script %s --input in.$i --output out.$i 2>err.$i; echo $? >code.$i; done",
      H.q(d), #bad, H.cmd(""), H.q(script)))
    assert.equal(0, code)
    for i, c in ipairs(bad) do
      assert.equal("1", (H.read(d .. "/code." .. i) or ""):match("%d+"), c.name .. ": exit code")
      local err = H.read(d .. "/err." .. i) or ""
      assert.is_truthy(err:find("input line 3: " .. c.error, 1, true),
        c.name .. ": stderr was " .. show(err):sub(1, 300))
      assert.equal('{"ok":1}\n{"ok":2}\n', H.read(d .. "/out." .. i), c.name .. ": output")
    end
  end)

  it("drops every invalid corpus line with --on-error skip", function()
    local bad = invalid_corpus()
    local input = {}
    for _, c in ipairs(bad) do input[#input + 1] = c.line; input[#input + 1] = '{"ok":true}' end
    local r = run(PASS, table.concat(input, "\n") .. "\n", "--on-error skip --stats")
    assert.equal(0, r.code, r.err)
    assert.equal(('{"ok":true}\n'):rep(#bad), r.output)
    assert.matches("malformed=" .. #bad, r.err)
  end)

  -- 3. What a script sees and writes ------------------------------------------

  it("keeps the input key order after an edit; added keys come after, sorted by bytes", function()
    local script = [=[
local ops = {
  edit = function(r) r.a = 5 end,
  add = function(r) r.y = 1; r.b = 2; r.zz = 3; r.B = 4; r._ = 5; r["é"] = 6; r.aa = 7; r["a\0b"] = 8 end,
  del = function(r) r.a = nil end,
  delall = function(r) for _, k in ipairs({ "op", "z", "a", "m" }) do r[k] = nil end end,
  renil = function(r) r.a = nil; r.a = 9 end,
  esc = function(r) r.b = 3 end,
  many = function(r) for i = 20, 1, -1 do r[string.format("k%02d", i)] = i end; r.m = nil; r.z = "Z" end,
}
return { async_invoke = function(r) ops[r.op](r); return { r } end }
]=]
    local cases = {
      { '{"op":"edit","z":1,"a":2,"m":3}', '{"op":"edit","z":1,"a":5,"m":3}' },
      { '{"op":"add","z":1,"a":2,"m":3}',
        '{"op":"add","z":1,"a":2,"m":3,"B":4,"_":5,"a\\u0000b":8,"aa":7,"b":2,"y":1,"zz":3,"é":6}' },
      { '{"op":"del","z":1,"a":2,"m":3}', '{"op":"del","z":1,"m":3}' },
      { '{"op":"delall","z":1,"a":2,"m":3}', '{}' },
      { '{"op":"renil","z":1,"a":2,"m":3}', '{"op":"renil","z":1,"a":9,"m":3}' },
      { '{"op":"esc","\\u00e9":1,"b":2,"\\u0041":0}', '{"op":"esc","\\u00e9":1,"b":3,"\\u0041":0}' },
    }
    local many = { '{"op":"many","z":"Z"' }
    for i = 1, 20 do many[#many + 1] = string.format(',"k%02d":%d', i, i) end
    cases[#cases + 1] = { '{"op":"many","z":1,"m":3}', table.concat(many) .. "}" }
    local input, want = {}, {}
    for i, c in ipairs(cases) do input[i] = c[1]; want[i] = c[2] end
    local r = run(script, table.concat(input, "\n") .. "\n")
    assert.equal(0, r.code, r.err)
    assert.same(want, lines(r.output))
  end)

  it("writes a duplicated key once, at its first position, with the last value", function()
    local dup40 = {}
    for i = 1, 40 do dup40[i] = string.format('"k%02d":%d', i, i) end
    -- 40 keys take the sorting path; the repeat is spelled with an escape.
    local dup40_in = "{" .. table.concat(dup40, ",") .. ',"\\u006b05":"last"}'
    dup40[5] = '"k05":"last"'
    local dup40_out = "{" .. table.concat(dup40, ",") .. "}"
    local script = [=[
return { async_invoke = function(r)
  if r.edit then r.edit = 2 end
  if r.del then r.a = nil end
  return { r }
end }
]=]
    local cases = {
      { '{"a":1,"b":2,"a":3}', '{"a":3,"b":2}' },
      { '{"a":1,"edit":1,"a":3}', '{"a":3,"edit":2}' },
      { '{"a":1,"\\u0061":2,"c":[]}', '{"a":2,"c":[]}' },
      { '{"a":1,"b":2,"a":3,"del":true}', '{"b":2,"del":true}' },
      { '{"a":{"x":1},"b":0,"a":{"y":[]}}', '{"a":{"y":[]},"b":0}' },
      { '{"n":{"a":[],"a":{},"b":1}}', '{"n":{"a":{},"b":1}}' },
      { '{"a":1,"a":2,"a":3}', '{"a":3}' },
      { dup40_in, dup40_out },
    }
    local input, want = {}, {}
    for i, c in ipairs(cases) do input[i] = c[1]; want[i] = c[2] end
    local r = run(script, table.concat(input, "\n") .. "\n")
    assert.equal(0, r.code, r.err)
    assert.same(want, lines(r.output))
  end)

  it("keeps the spelling of a duplicated key's last value", function()
    local script = [=[return { async_invoke = function(r) r.b = 2; return { r } end }]=]
    local cases = {
      { '{"a":0,"b":1,"a":1.50}', '{"a":1.50,"b":2}' },
      { '{"s":"x","b":1,"s":"caf\\u00e9"}', '{"s":"caf\\u00e9","b":2}' },
      { '{"e":1,"b":1,"e":1e2}', '{"e":1e2,"b":2}' },
    }
    local input, want = {}, {}
    for i, c in ipairs(cases) do input[i] = c[1]; want[i] = c[2] end
    local r = run(script, table.concat(input, "\n") .. "\n")
    assert.equal(0, r.code, r.err)
    assert.same(want, lines(r.output))
  end)

  it("keeps the spelling of array elements that table.insert / table.remove shifted", function()
    local script = [=[
return { async_invoke = function(r)
  if r.ins then table.insert(r.tags, 1, "new") end
  if r.rem then table.remove(r.tags, 1) end
  return { r }
end }
]=]
    local r = run(script, '{"ins":1,"tags":["caf\\u00e9",1.50,1e2,9223372036854775807]}\n'
      .. '{"rem":1,"tags":[0,"caf\\u00e9",1.50,1e2]}\n')
    assert.equal(0, r.code, r.err)
    assert.same({ '{"ins":1,"tags":["new","caf\\u00e9",1.50,1e2,9223372036854775807]}',
      '{"rem":1,"tags":["caf\\u00e9",1.50,1e2]}' }, lines(r.output))
  end)

  it("never writes a key twice when a script sets both 1 and \"1\"", function()
    local script = [=[
local json = require "moonwait.json"
return { async_invoke = function(r)
  if r.enc then
    local s, err = json.encode({ ["1"] = "str", [1] = "num" })
    return { { s = s or json.null, err = err or json.null } }
  end
  r[1] = "num"
  return { r }
end }
]=]
    local function count(s, pat)
      local n = 0
      for _ in s:gmatch(pat) do n = n + 1 end
      return n
    end
    -- An edited record: one "1" key, or the record fails saying why.
    local r = run(script, '{"1":"str"}\n')
    if r.code == 0 then
      assert.equal(1, count(r.output, '"1":'), "output: " .. r.output)
    else
      assert.matches("cannot encode", r.err)
    end
    -- moonwait.json.encode: one "1" key, or nil, err.
    r = run(script, '{"enc":true}\n')
    assert.equal(0, r.code, r.err)
    local x = cjson.decode(r.output)
    if x.s ~= cjson.null then
      assert.equal(1, count(x.s, '"1":'), "encode gave " .. x.s)
    else
      assert.is_string(x.err)
    end
  end)

  it("edits nested values: siblings keep their spelling and shapes at any depth", function()
    local base = '{"a":{"b":{"c":1,"d":1.50,"e":"caf\\u00e9","f":[],"g":{},"h":1e2},"i":-0.0},'
      .. '"z":[1.0,{"k":[],"n":9223372036854775807}],"w":"\\/"}'
    local script = [=[
local json = require "moonwait.json"
local ops = {
  deep = function(r) r.a.b.c = 2 end,
  elem = function(r) r.z[2].k[1] = "new" end,
  insert = function(r) table.insert(r.z, json.array()); r.z[2].o = {} end,
  empty = function(r)
    for i = #r.arr, 1, -1 do r.arr[i] = nil end
    r.obj.x = nil; r.obj.y = nil
  end,
  built = function(r)
    r.p = {}; r.q = json.array(); r.s = { 1, 2 }; r.t = { x = {}, y = json.array({}) }
    r.u = { [1] = "a", [3] = "c" }; r.v = { [1] = "a", k = "v" }
  end,
  nested_ws = function(r) r.c = 2 end,
  subtree = function(r) return { r.a } end,
  move = function(r) r.copy = r.a.b; r.a = nil end,
  deepshape = function(r) r.v[1][1][1].c = json.array(); r.x = 1 end,
}
return { async_invoke = function(r)
  local op = r.op; r.op = nil
  local out = ops[op](r)
  return out or { r }
end }
]=]
    local function rec(op, body) return '{"op":"' .. op .. '",' .. body:sub(2) end
    local cases = {
      { rec("deep", base),
        '{"a":{"b":{"c":2,"d":1.50,"e":"caf\\u00e9","f":[],"g":{},"h":1e2},"i":-0.0},'
          .. '"z":[1.0,{"k":[],"n":9223372036854775807}],"w":"\\/"}' },
      { rec("elem", base),
        '{"a":{"b":{"c":1,"d":1.50,"e":"caf\\u00e9","f":[],"g":{},"h":1e2},"i":-0.0},'
          .. '"z":[1.0,{"k":["new"],"n":9223372036854775807}],"w":"\\/"}' },
      { rec("insert", base),
        '{"a":{"b":{"c":1,"d":1.50,"e":"caf\\u00e9","f":[],"g":{},"h":1e2},"i":-0.0},'
          .. '"z":[1.0,{"k":[],"n":9223372036854775807,"o":{}},[]],"w":"\\/"}' },
      { rec("empty", '{"arr":[1,2,3],"obj":{"x":1,"y":2},"keep":[{}]}'), '{"arr":[],"obj":{},"keep":[{}]}' },
      { rec("built", '{"n":1}'),
        '{"n":1,"p":{},"q":[],"s":[1,2],"t":{"x":{},"y":[]},"u":{"1":"a","3":"c"},"v":{"1":"a","k":"v"}}' },
      { rec("nested_ws", '{"a": [ 1 , { "b" : [ ] , "d" : 1.50 } ], "c" : 1}'), '{"a":[1,{"b":[],"d":1.50}],"c":2}' },
      { rec("subtree", base), '{"b":{"c":1,"d":1.50,"e":"caf\\u00e9","f":[],"g":{},"h":1e2},"i":-0.0}' },
      { rec("move", base),
        '{"z":[1.0,{"k":[],"n":9223372036854775807}],"w":"\\/",'
          .. '"copy":{"c":1,"d":1.50,"e":"caf\\u00e9","f":[],"g":{},"h":1e2}}' },
      { rec("deepshape", '{"v":[[[{"a":[],"b":{}}]],[[]],{}],"x":0}'),
        '{"v":[[[{"a":[],"b":{},"c":[]}]],[[]],{}],"x":1}' },
    }
    local input, want = {}, {}
    for i, c in ipairs(cases) do input[i] = c[1]; want[i] = c[2] end
    local r = run(script, table.concat(input, "\n") .. "\n")
    assert.equal(0, r.code, r.err)
    assert.same(want, lines(r.output))
  end)

  it("gives scripts exact 64-bit integers: arithmetic, comparison and output", function()
    local script = [=[
local json = require "moonwait.json"
return { async_invoke = function(r)
  local o = {}
  o.id1 = r.id + 1
  o.gt = r.id > 5
  o.lt = r.id < 5
  o.eq = r.id == 9007199254740993LL
  o.mul = r.id * 2
  o.small1 = r.small + 1
  o.small1_type = type(r.small + 1)
  o.u1 = r.u + 1
  o.n1 = r.n - 1
  o.big1 = r.big + 1
  o.types = table.concat({ type(r.id), type(r.u), type(r.n), type(r.small), type(r.two53), type(r.neg53) }, ",")
  o.digits = json.encode(r.id)
  o.str = tostring(r.id)
  o.ustr = tostring(r.u)
  o.kept = r.id
  r.out = o
  return { r }
end }
]=]
    local line = '{"id":9007199254740993,"small":5,"u":18446744073709551614,"n":-9223372036854775807,'
      .. '"big":9223372036854775806,"two53":9007199254740992,"neg53":-9007199254740993}'
    local r = run(script, line .. "\n")
    assert.equal(0, r.code, r.err)
    assert.equal(line:sub(1, -2) .. ',"out":{"big1":9223372036854775807,"digits":"9007199254740993",'
      .. '"eq":true,"gt":true,"id1":9007199254740994,"kept":9007199254740993,"lt":false,'
      .. '"mul":18014398509481986,"n1":-9223372036854775808,"small1":6,"small1_type":"number",'
      .. '"str":"9007199254740993LL","types":"cdata,cdata,cdata,number,number,cdata",'
      .. '"u1":18446744073709551615,"ustr":"18446744073709551614ULL"}}\n', r.output)
  end)

  it("gives on_timeout a fresh copy of the record with its shapes and exact integers", function()
    local script = [=[
local time = require "moonwait.time"
local M = {}
function M.async_invoke(r)
  r.arr = nil; r.id = 0; r.obj.x = "changed"; r.e = {}; r.added = true
  time.sleep(30)
  return { r }
end
function M.on_timeout(r, ctx)
  if r.mark then r.timed_out = true; r.id2 = r.id + 1 end
  return { r }
end
return M
]=]
    local l1 = '{ "id" : 9223372036854775806, "arr":[], "obj":{"x":1.50,"e":{}}, "e":[[]] }'
    local l2 = '{"mark":1,"id":9223372036854775806,"arr":[],"obj":{"x":1.50,"e":{}},"e":[[]],"s":"\\u00e9"}'
    local r = run(script, l1 .. "\n" .. l2 .. "\n", "--timeout 100")
    assert.equal(0, r.code, r.err)
    assert.equal(l1 .. "\n" .. l2:sub(1, -2) .. ',"id2":9223372036854775807,"timed_out":true}\n', r.output)
  end)

  it("decodes the line again for each retry attempt", function()
    local script = [=[
local M = {}
M.retry_on_error = require("moonwait.retry").any_error
function M.async_invoke(r, ctx)
  if ctx.attempt == 1 then r.arr = nil; r.x = 2; r.n = {}; return nil, "first attempt fails" end
  return { r }
end
return M
]=]
    local l = '{ "x" : 1.50 , "arr" : [ ], "n" : 9223372036854775807 }'
    local r = run(script, l .. "\n", "--retry fixed:2:1")
    assert.equal(0, r.code, r.err)
    assert.equal(l .. "\n", r.output)
  end)

  it("adds --tag-generation as an added key and keeps [] and {}", function()
    local script = [=[
local json = require "moonwait.json"
return { async_invoke = function(r)
  if r.built then return { { x = json.array(), y = {} } } end
  if r.more then r.zz = 1; r.aa = 1 end
  return { r }
end }
]=]
    local r = run(script, '{"a":[],"b":{},"c":[[{}]],"d":1.50}\n{"built":1}\n{"more":1,"e":[]}\n',
      "--tag-generation gen")
    assert.equal(0, r.code, r.err)
    assert.equal('{"a":[],"b":{},"c":[[{}]],"d":1.50,"gen":1}\n'
      .. '{"gen":1,"x":[],"y":{}}\n'
      .. '{"more":1,"e":[],"aa":1,"gen":1,"zz":1}\n', r.output)
  end)

  it("writes a record kept from another record like a script-built table, shapes intact", function()
    local script = [=[
local kept
return { async_invoke = function(r)
  if not kept then kept = r; return {} end
  return { kept, r }
end }
]=]
    local r = run(script, '{"z":1,"a":[],"m":{"y":[[]],"b":9223372036854775807}}\n{"second":true}\n')
    assert.equal(0, r.code, r.err)
    assert.equal('{"a":[],"m":{"b":9223372036854775807,"y":[[]]},"z":1}\n{"second":true}\n', r.output)
  end)

  it("recognises watermark lines, with or without spaces, and never invokes the script on them", function()
    local script = [=[
return { async_invoke = function(r)
  if r["$watermark"] ~= nil then error("invoked on a watermark") end
  return { r }
end }
]=]
    local r = run(script, '{"a":1}\n{"$watermark": 5}\n{ "$watermark" : 7 }\n{"$watermark":9}\n{"a":2}\n')
    assert.equal(0, r.code, r.err)
    assert.equal('{"a":1}\n{"$watermark":5}\n{"$watermark":7}\n{"$watermark":9}\n{"a":2}\n', r.output)
  end)

  it("moonwait.json: strict decode, exact encode, shapes and errors as nil, err", function()
    local script = [=[
local json = require "moonwait.json"
local res = {}
local function put(k, ...)
  local t = {}
  for i = 1, select("#", ...) do
    local v = select(i, ...)
    t[i] = type(v) == "string" and v or tostring(v)
  end
  res[k] = table.concat(t, " | ")
end
return { async_invoke = function()
  put("arr", json.encode(json.decode("[]")))
  put("obj", json.encode(json.decode("{}")))
  put("nested", json.encode(json.decode('{"b":[{}],"a":[[],{}],"c":{"z":1,"y":[]}}')))
  put("ws", json.encode(json.decode(' { "a" : [ 1 , 2 ] } ')))
  put("i64", json.encode(json.decode("9223372036854775807")), json.encode(json.decode("-9223372036854775808")),
    json.encode(json.decode("18446744073709551615")), json.encode(json.decode("9007199254740993")))
  put("i64type", type(json.decode("9007199254740993")), type(json.decode("9007199254740992")),
    json.decode("9223372036854775807") == 9223372036854775807LL, json.decode("18446744073709551615") == 18446744073709551615ULL)
  put("i64arith", json.encode(json.decode("9007199254740993") + 1), json.encode(json.decode('{"n":18446744073709551614}').n + 1))
  put("nums", json.encode(json.decode("1.50")), json.encode(json.decode("-0")), json.encode(json.decode("1E2")),
    json.encode(json.decode("0.1")), json.encode(json.decode("1e-7")), json.encode(2^53), json.encode(3.0))
  put("str", json.encode(json.decode('"\\u00e9\\ud83d\\ude00\\/\\u0000\\"\\\\\\n"')))
  put("strlen", #json.decode('"a\\u0000b"'))
  put("null", json.decode("null") == json.null, json.encode(json.null), json.encode({ json.null }))
  put("scalars", json.decode("1"), json.decode('"s"'), json.decode("true"), json.decode(" false "))
  put("arrays", getmetatable(json.decode("[1]")) == json.array_mt, getmetatable(json.decode("[]")) == json.array_mt,
    getmetatable(json.decode("{}")) == nil, getmetatable(json.array()) == json.array_mt)
  put("build", json.encode(json.array()), json.encode({}), json.encode({ "a", "b" }), json.encode({ [1] = "a", [3] = "c" }),
    json.encode({ [2] = "b" }), json.encode({ [1] = "a", x = 2 }), json.encode(json.array({ 1, 2 })))
  put("sorted", json.encode({ b = 1, B = 1, _ = 1, ["é"] = 1, aa = 1, a = 1 }))
  local big = {}
  for i = 30, 1, -1 do big[string.format("k%02d", i)] = i end
  put("sorted30", json.encode(big))
  put("deep_ok", json.encode(json.decode(("["):rep(1000) .. ("]"):rep(1000))) == ("["):rep(1000) .. ("]"):rep(1000))
  put("bad_zero", json.decode("01"))
  put("bad_empty", json.decode(""))
  put("bad_comma", json.decode("[1,]"))
  put("bad_nan", json.decode("NaN"))
  put("bad_utf8", json.decode('"\255"'))
  put("bad_bom", json.decode("\239\187\191{}"))
  put("bad_deep", json.decode(("["):rep(1001) .. ("]"):rep(1001)))
  put("bad_surrogate", json.decode('"\\ud800"'))
  put("bad_trailing", json.decode("1 2"))
  put("bad_nul", json.decode("[1]\0"))
  put("enc_nan", json.encode(0/0))
  put("enc_inf", json.encode({ x = 1/0 }))
  put("enc_fn", json.encode({ x = print }))
  local cyc = {}; cyc.self = cyc
  put("enc_cycle", json.encode(cyc))
  local holes = json.array({ 1, 2, 3 }); holes[2] = nil
  put("enc_holes", json.encode(holes))
  put("enc_key", json.encode({ [true] = 1 }))
  return { { res = res } }
end }
]=]
    local r = run(script, '{"x":1}\n')
    assert.equal(0, r.code, r.err)
    local res = cjson.decode(r.output).res
    local want = {
      arr = "[]",
      obj = "{}",
      nested = '{"a":[[],{}],"b":[{}],"c":{"y":[],"z":1}}',
      ws = '{"a":[1,2]}',
      i64 = "9223372036854775807 | -9223372036854775808 | 18446744073709551615 | 9007199254740993",
      i64type = "cdata | number | true | true",
      i64arith = "9007199254740994 | 18446744073709551615",
      nums = "1.5 | -0 | 100 | 0.1 | 1e-07 | 9007199254740992 | 3",
      str = '"é😀/\\u0000\\"\\\\\\n"',
      strlen = "3",
      null = "true | null | [null]",
      scalars = "1 | s | true | false",
      arrays = "true | true | true | true",
      build = '[] | {} | ["a","b"] | {"1":"a","3":"c"} | {"2":"b"} | {"1":"a","x":2} | [1,2]',
      sorted = '{"B":1,"_":1,"a":1,"aa":1,"b":1,"é":1}',
      deep_ok = "true",
      bad_zero = "nil | malformed JSON at byte 1: invalid number: leading zero",
      bad_empty = "nil | malformed JSON at byte 1: the line ends where a JSON value was expected",
      bad_comma = "nil | malformed JSON at byte 4: ']' where a value was expected",
      bad_nan = "nil | malformed JSON at byte 1: invalid literal (JSON has true, false and null; not NaN or Infinity)",
      bad_utf8 = "nil | malformed JSON at byte 2: invalid UTF-8 (byte 0xff) in a string",
      bad_bom = "nil | malformed JSON at byte 1: a byte-order mark (U+FEFF) at the start",
      bad_deep = "nil | malformed JSON at byte 1001: nesting deeper than 1000 levels",
      bad_surrogate = "nil | malformed JSON at byte 2: a high surrogate escape must be followed by a low one (\\uDC00-\\uDFFF)",
      bad_trailing = "nil | malformed JSON at byte 3: '2' where the end of the line (one JSON value per line) was expected",
      bad_nul = "nil | malformed JSON at byte 4: a NUL byte where the end of the line (one JSON value per line) was expected",
      enc_nan = "nil | cannot encode NaN as JSON",
      enc_inf = "nil | cannot encode an infinite number as JSON",
      enc_fn = "nil | cannot encode a function value as JSON",
      enc_cycle = "nil | cannot encode a table nested more than 1000 levels (a cycle?)",
      enc_holes = "nil | cannot encode a JSON array that has holes or keys other than 1..n",
      enc_key = "nil | cannot encode a table with a boolean key as JSON",
    }
    local s30 = {}
    for i = 1, 30 do s30[i] = string.format('"k%02d":%d', i, i) end
    want.sorted30 = "{" .. table.concat(s30, ",") .. "}"
    assert.same(want, res)
  end)

  it("edits a record with 9000 keys (more than the Lua C stack's 8000 slots)", function()
    local keys = {}
    for i = 1, 9000 do keys[i] = string.format('"k%05d":%d', i, i) end
    local line = "{" .. table.concat(keys, ",") .. "}"
    local r = run(ADD, line .. "\n" .. line .. "\n", "--tag-generation gen")
    assert.equal(0, r.code, r.err)
    local want = line:sub(1, -2) .. ',"gen":1,"zz":true}\n'
    assert.equal(want .. want, r.output)
  end)

  it("moonwait.json.encode writes a table with 9000 keys", function()
    local script = [=[
local json = require "moonwait.json"
return { async_invoke = function(r)
  local t = {}
  for i = 1, 9000 do t[string.format("k%05d", i)] = i end
  local s, err = json.encode(t)
  local back = s and json.decode(s)
  r.ok = s ~= nil and back.k09000 == 9000 and json.encode(back) == s
  r.err = err
  return { r }
end }
]=]
    local r = run(script, '{"x":1}\n')
    assert.equal(0, r.code, r.err)
    assert.equal('{"x":1,"ok":true}\n', r.output)
  end)

  -- 4. Determinism ------------------------------------------------------------

  it("gives the same bytes on every run, whatever order the script adds keys in", function()
    local script = [=[
local json = require "moonwait.json"
local names = { "zeta", "alpha", "mid", "Beta", "_u", "k1", "k10", "k2", "é", "a\0b" }
local value = {}
for i, k in ipairs(names) do value[k] = i end
return { async_invoke = function(r, ctx)
  -- A different insertion order for every record.
  local order = {}
  for i = 1, #names do order[i] = names[(i * 7 + ctx.seq * 3) % #names + 1] end
  if ctx.seq % 2 == 0 then
    local rev = {}
    for i = #order, 1, -1 do rev[#rev + 1] = order[i] end
    order = rev
  end
  for _, k in ipairs(order) do r[k] = value[k] end
  local built = {}
  local n = 30
  for i = 1, n do
    local j = (i * 11 + ctx.seq) % n + 1
    built[string.format("key%02d", j)] = j
  end
  built.arr = json.array()
  built.obj = {}
  r.built = built
  r.enc = json.encode(built)
  return { r, { built = built, id = r.id } }
end }
]=]
    local input = {}
    for i = 1, 60 do input[i] = '{"id":9007199254740993,"x":[],"y":{},"f":1.50}' end
    local text = table.concat(input, "\n") .. "\n"
    local r1 = run(script, text)
    assert.equal(0, r1.code, r1.err)
    local r2 = run(script, text)
    assert.equal(0, r2.code, r2.err)
    assert.equal(r1.output, r2.output)

    local built = {}
    for i = 1, 30 do built[i] = string.format('"key%02d":%d', i, i) end
    built = '{"arr":[],' .. table.concat(built, ",") .. ',"obj":{}}'
    local enc = '"' .. built:gsub('"', '\\"') .. '"'
    local want1 = '{"id":9007199254740993,"x":[],"y":{},"f":1.50,"Beta":4,"_u":5,"a\\u0000b":10,"alpha":2,'
      .. '"built":' .. built .. ',"enc":' .. enc .. ',"k1":6,"k10":7,"k2":8,"mid":3,"zeta":1,"é":9}'
    local want2 = '{"built":' .. built .. ',"id":9007199254740993}'
    local out = lines(r1.output)
    assert.equal(120, #out)
    for i = 1, 120, 2 do
      assert.equal(want1, out[i], "record " .. (i + 1) / 2)
      assert.equal(want2, out[i + 1], "record " .. (i + 1) / 2 .. " (built)")
    end
  end)

  it("regression: a string the script made that is not UTF-8 fails the record instead of writing invalid JSON", function()
    local r = run([[
local json = require "moonwait.json"
return { async_invoke = function(r)
  r.enc_nil, r.enc_err = json.encode("\255")
  r.enc_nil = r.enc_nil == nil
  if r.a == 2 then r.bad = "\255\192\128" end
  if r.a == 3 then r["\255"] = 1 end
  return { r }
end }
]], '{"a":1}\n{"a":2}\n{"a":3}\n', "--on-error dead-letter --dead-letter " .. "dl")
    assert.equal(0, r.code, r.err)
    assert.equal('{"a":1,"enc_err":"cannot encode a string that is not valid UTF-8 as JSON","enc_nil":true}\n', r.output)
    local dl = lines(H.read(r.dir .. "/dl") or H.read("dl") or "")
    os.remove("dl")
    assert.equal(2, #dl)
    for _, l in ipairs(dl) do
      assert.matches("that is not valid UTF-8 as JSON", l, 1, true)
    end
  end)

  it("regression: json.array refuses a table that is not an array", function()
    local r = run([[
local json = require "moonwait.json"
return { async_invoke = function(r)
  local ok, err = pcall(json.array, { a = 1 })
  r.ok, r.err = ok, err
  r.fine = json.array({ 1, 2 })
  return { r }
end }
]], '{"a":1}\n')
    assert.equal(0, r.code, r.err)
    assert.matches('"ok":false', r.output, 1, true)
    assert.matches("an array has keys 1..n and nothing else", r.output, 1, true)
    assert.matches('"fine":[1,2]', r.output, 1, true)
  end)
  -- 5. The codec's key cache (issue 16, P2) ----------

  it("keeps records in flight exact across key cache restarts, with keys deleted and a full collection", function()
    -- Two new keys a record, a decode of 3000 keys every 500: the key cache
    -- starts a fresh table many times while 3000 records sleep, and even
    -- records lose a key and run a full collection before they are written.
    local long = string.rep("L", 70)
    local input = {}
    for i = 1, 3000 do
      input[i] = string.format('{"id":%d,"a%d":%d,"b%d":"x","\\u0061\\u0062":1,"%s":2}', i, i, i, i, long)
    end
    local script = [=[
local time = require "moonwait.time"
local json = require "moonwait.json"
local q = {}
for i = 1, 3000 do q[i] = string.format('"q%d":%d', i, i) end
local big = "{" .. table.concat(q, ",") .. "}"
return { async_invoke = function(r)
  time.sleep(0.02)
  if r.id % 500 == 0 then assert(json.decode(big).q3000 == 3000) end
  if r.id % 2 == 0 then
    r["a" .. r.id] = nil
    collectgarbage()
    r.zz = true
  end
  return { r }
end }
]=]
    local r = run(script, table.concat(input, "\n") .. "\n", "--capacity 3000 --mode unordered")
    assert.equal(0, r.code, r.err)
    local want = {}
    for i, l in ipairs(input) do
      if i % 2 == 0 then
        l = l:gsub(string.format(',"a%d":%d', i, i), "", 1):sub(1, -2) .. ',"zz":true}'
      end
      want[l] = true
    end
    local got = lines(r.output)
    assert.equal(3000, #got)
    for _, l in ipairs(got) do
      assert.is_true(want[l] ~= nil, show(l))
      want[l] = nil
    end
  end)

  it("keeps keys the key cache does not take (long, escaped, empty) and shapes that alternate", function()
    -- 64 bytes is the longest cached key; 65 goes the anchored way, as do
    -- escaped ones; records of two shapes alternate so each tape position's
    -- remembered key is wrong every other record.
    local k64, k65 = string.rep("k", 64), string.rep("k", 65)
    local a = string.format('{"%s":1, "%s":2,"":3,"\\u0000":4,"x":[1.50]}', k64, k65)
    local b = '{"x":[2],"":"e","\\u0061":1}'
    local input = {}
    for i = 1, 400 do input[i] = i % 2 == 1 and a or b end
    local r = run([[return { async_invoke = function(r, ctx)
  if ctx.seq % 3 == 0 then r[""] = nil; r.z = 1 end
  return { r }
end }]], table.concat(input, "\n") .. "\n")
    assert.equal(0, r.code, r.err)
    local got = lines(r.output)
    assert.equal(400, #got)
    local a_edit = string.format('{"%s":1,"%s":2,"\\u0000":4,"x":[1.50],"z":1}', k64, k65)
    local b_edit = '{"x":[2],"\\u0061":1,"z":1}'
    for i, l in ipairs(got) do
      local want = i % 3 == 0 and (i % 2 == 1 and a_edit or b_edit) or input[i]
      assert.equal(want, l, "record " .. i)
    end
  end)

  it("writes a changed record of many members with its nested tables' own members (each table's key count is its own)", function()
    -- Over 16 members the untouched check counts the record's keys, and
    -- that count is kept for the encoder: a nested table must not take it.
    local parts = {}
    for i = 1, 20 do parts[#parts + 1] = ('"a%d":%d'):format(i, i) end
    local line = "{" .. table.concat(parts, ",") .. ',"n":{"x":1,"y":[1, 2],"z":{"q":1.50}}}'
    local r = run([[return { async_invoke = function(r, ctx)
  if ctx.seq == 2 then r.added = true end
  if ctx.seq == 3 then r.added = true; r.n.w = 4 end
  return { r }
end }]], line .. "\n" .. line .. "\n" .. line .. "\n")
    assert.equal(0, r.code, r.err)
    local got = lines(r.output)
    local head = "{" .. table.concat(parts, ",")
    assert.equal(line, got[1])
    assert.equal(head .. ',"n":{"x":1,"y":[1,2],"z":{"q":1.50}},"added":true}', got[2])
    assert.equal(head .. ',"n":{"x":1,"y":[1,2],"z":{"q":1.50},"w":4},"added":true}', got[3])
  end)

  it("stays exact when a stream of ever new keys turns the key cache off and on again", function()
    -- 1,800 records of 20 keys never seen again fill key tables with no
    -- hits: the cache steps aside for 32,768 keys (keys built the plain way),
    -- then tries again; then records of one shape. Every third is edited.
    local input, want = {}, {}
    local function add(keys)
      local parts = {}
      for j, k in ipairs(keys) do parts[j] = ('"%s":%d'):format(k, j) end
      local i = #input + 1
      input[i] = "{" .. table.concat(parts, ",") .. "}"
      if i % 3 == 0 then
        table.remove(parts, 1)
        parts[#parts + 1] = '"z":1'
        want[i] = "{" .. table.concat(parts, ",") .. "}"
      else
        want[i] = input[i]
      end
    end
    for i = 1, 1800 do
      local keys = {}
      for j = 1, 20 do keys[j] = ("n%d_%d"):format(i, j) end
      add(keys)
    end
    for _ = 1, 300 do add({ "id", "user", "event", "ts" }) end
    local r = run([[return { async_invoke = function(r, ctx)
  if ctx.seq % 3 == 0 then
    for k in pairs(r) do if k:match("_1$") or k == "id" then r[k] = nil end end
    r.z = 1
  end
  return { r }
end }]], table.concat(input, "\n") .. "\n", "--capacity 500 --mode ordered")
    assert.equal(0, r.code, r.err)
    local got = lines(r.output)
    assert.equal(#input, #got)
    for i = 1, #input do assert.equal(want[i], got[i], "record " .. i) end
  end)
end)
