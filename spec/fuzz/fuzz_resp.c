/*
 * fuzz_resp.c: libFuzzer target for the RESP reader of lua/moonwait/redis.lua
 * (read_value, through its internal export M._read_reply) on a real LuaJIT
 * state, with a fake socket that serves the fuzz bytes as moonwait.socket
 * would: receive("*l") a line without its LF (and one CR before it),
 * receive(n) n bytes, nil, "closed", partial at the end, nil, "buffer too
 * large" when a line does not end within max_buffer (max_reply_bytes + 16,
 * as redis.connect sets it), each read at most what fits the buffer.
 *
 * Input: 4 bytes of parameters, then the bytes the server sends:
 *   [0] seed of the random split
 *   [1] max_reply_bytes = 16 + [1] * 16 (16..4096)
 *   [2] max_elements = 1 + [2] % 64
 *   [3] max_depth = 1 + [3] % 8
 * Replies are read one after another (a pipeline) until one is not a
 * value or an error reply (at most 64), three times: the bytes in one
 * piece, in random pieces, one byte at a time (inputs up to 1 KiB).
 * Checks: the reader never raises; each result is a value, false + a
 * message (an error reply), nil + "bad reply: ..." or nil + "closed" (the
 * bytes ended); a value within the limits (elements in all its arrays,
 * depth, bytes taken from the socket); the same results, as a canonical
 * string, and the same bytes taken, whatever the split.
 * The cosocket's fast path (src/lua/redis_wire.c) too: in one piece,
 * before each reply is read, it is given what the socket would hold (the
 * rest, at most max_buffer); a reply it takes must be the value the
 * reader reads, having taken the same bytes.
 */
#include <lauxlib.h>
#include <luajit.h>
#include <lualib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/lua/redis_wire.h"
#include "../c/redis_lua.h"

#ifndef FUZZ_LUA_DIR
#define FUZZ_LUA_DIR "lua"
#endif

static lua_State *L;

/* Coverage of the Lua code: libFuzzer sees only C edges, and LuaJIT is not
 * instrumented, so a line hook (the JIT off: compiled code calls no hooks)
 * counts (previous line, line) pairs of redis.lua in libFuzzer's extra
 * counters, which guide it like edges. */
#define NCOUNTERS 4096
__attribute__((used, section("__libfuzzer_extra_counters"))) static uint8_t counters[NCOUNTERS];
static int prev_line;
static const char *redis_source; /* the interned chunk name of redis.lua */

static void line_hook(lua_State *l, lua_Debug *ar)
{
    if (!lua_getinfo(l, "Sl", ar) || ar->source != redis_source)
        return;
    unsigned i = ((unsigned)prev_line * 977u + (unsigned)ar->currentline) % NCOUNTERS;
    if (counters[i] < 255)
        counters[i]++;
    prev_line = ar->currentline;
}

static const char DRIVER[] =
    "local redis, null, wire = ...\n"
    "local sub, find, byte, format = string.sub, string.find, string.byte, string.format\n"
    "local function fail(msg) error('fuzz_resp: check failed: ' .. msg, 0) end\n"
    "local ffi = require 'ffi'\n"
    "local function sock(data, mode, seed, max_buffer)\n"
    "  local arrived, off, closed = 0, 0, false\n"
    "  local function rnd() seed = (seed * 1103515245 + 12345) % 2147483648; return math.floor(seed / 65536) end\n"
    "  local function more()\n"
    "    if arrived >= #data then return false end\n"
    "    local piece = mode == 0 and #data or mode == 2 and 1 or 1 + rnd() % ((rnd() % 4 ~= 0) and 16 or 512)\n"
    "    local room = max_buffer - (arrived - off)\n"
    "    if piece > room then piece = room end\n"
    "    if piece > #data - arrived then piece = #data - arrived end\n"
    "    arrived = arrived + piece\n"
    "    return true\n"
    "  end\n"
    "  local s = {}\n"
    "  local function eof(err)\n"
    "    closed = true\n"
    "    local partial = sub(data, off + 1, arrived)\n"
    "    off = arrived\n"
    "    return nil, err, partial\n"
    "  end\n"
    "  function s:receive(p)\n"
    "    if closed then return nil, 'closed', '' end\n"
    "    if p == '*l' then\n"
    "      while true do\n"
    "        local i = find(sub(data, off + 1, arrived), '\\n', 1, true)\n"
    "        if i then\n"
    "          local line = sub(data, off + 1, off + i - 1)\n"
    "          if byte(line, -1) == 13 then line = sub(line, 1, -2) end\n"
    "          off = off + i\n"
    "          return line\n"
    "        end\n"
    "        if arrived - off >= max_buffer then return eof('buffer too large') end\n"
    "        if not more() then return eof('closed') end\n"
    "      end\n"
    "    end\n"
    "    if type(p) ~= 'number' or p < 0 or p ~= math.floor(p) then fail('receive(' .. tostring(p) .. ')') end\n"
    "    if p > max_buffer then fail('receive(' .. p .. ') past max_buffer ' .. max_buffer) end\n"
    "    if p == 0 then return '' end\n"
    "    while arrived - off < p do\n"
    "      if not more() then return eof('closed') end\n"
    "    end\n"
    "    local d = sub(data, off + 1, off + p)\n"
    "    off = off + p\n"
    "    return d\n"
    "  end\n"
    "  return s, function() return off end\n"
    "end\n"
    "local function show(v, lim, depth, count)\n"
    "  if v == null then return 'null' end\n"
    "  local t = type(v)\n"
    "  if t == 'string' then return format('%q', v) end\n"
    "  if t == 'number' then\n"
    "    if v == math.floor(v) and (v > 2^53 or v < -2^53) then fail('an integer beyond 2^53 as a double') end\n"
    "    return format('%.17g', v)\n"
    "  end\n"
    "  if t == 'cdata' and ffi.istype('int64_t', v) then\n"
    "    if v >= -2^53 and v <= 2^53 then fail('an int64 within 2^53: ' .. tostring(v)) end\n"
    "    return (tostring(v):gsub('LL$', ''))\n"
    "  end\n"
    "  if t ~= 'table' then fail('a value of type ' .. t) end\n"
    "  if v[1] == false and type(v[2]) == 'string' and #v == 2 and depth > 0 then return 'err' .. format('%q', v[2]) end\n"
    "  if depth >= lim.max_depth then fail('an array deeper than max_depth ' .. lim.max_depth) end\n"
    "  count[1] = count[1] + #v\n"
    "  if count[1] > lim.max_elements then fail(count[1] .. ' elements, max_elements ' .. lim.max_elements) end\n"
    "  local out = {}\n"
    "  for i = 1, #v do out[i] = show(v[i], lim, depth + 1, count) end\n"
    "  for k in pairs(v) do if type(k) ~= 'number' or k < 1 or k > #v or k ~= math.floor(k) then fail('a non-array key') end end\n"
    "  return '[' .. table.concat(out, ',') .. ']'\n"
    "end\n"
    "return function(data, mode, seed, max_bytes, max_elements, max_depth)\n"
    "  local s, taken = sock(data, mode, seed, max_bytes + 16)\n"
    "  local res = {}\n"
    "  for n = 1, 64 do\n"
    "    local lim = { max_bytes = max_bytes, max_elements = max_elements, max_depth = max_depth }\n"
    "    local before = taken()\n"
    "    local fv, used\n"
    "    if mode == 0 then fv, used = wire(data, before, max_bytes + 16, max_bytes, max_elements, max_depth) end\n"
    "    local ok, v, e = pcall(redis._read_reply, s, lim)\n"
    "    if not ok then fail('the reader raised: ' .. tostring(v)) end\n"
    "    if used then\n"
    "      if v == nil or v == false then fail('the fast path took a reply the reader gives ' .. tostring(v) .. ', ' .. tostring(e)) end\n"
    "      local a, b = show(fv, lim, 0, { 0 }), show(v, lim, 0, { 0 })\n"
    "      if a ~= b or used ~= taken() - before then\n"
    "        fail('the fast path read ' .. a .. '@' .. used .. ', the reader ' .. b .. '@' .. (taken() - before))\n"
    "      end\n"
    "    end\n"
    "    if v == nil then\n"
    "      if not (e == 'closed' or (type(e) == 'string' and find(e, '^bad reply: '))) then fail('nil, ' .. tostring(e)) end\n"
    "      res[#res + 1] = 'nil:' .. e\n"
    "      break\n"
    "    elseif v == false then\n"
    "      if type(e) ~= 'string' then fail('false, ' .. type(e)) end\n"
    "      res[#res + 1] = 'false:' .. format('%q', e)\n"
    "    else\n"
    "      res[#res + 1] = show(v, lim, 0, { 0 })\n"
    "    end\n"
    "    if taken() - before > max_bytes then fail('a reply took ' .. (taken() - before) .. ' bytes, max_reply_bytes ' .. max_bytes) end\n"
    "    res[#res] = res[#res] .. '@' .. taken()\n"
    "  end\n"
    "  return table.concat(res, '\\n')\n"
    "end\n";

static int on_panic(lua_State *l)
{
    fprintf(stderr, "fuzz_resp: Lua panic: %s\n", lua_tostring(l, -1));
    abort();
}

/* wire(data, off, max_buffer, max_bytes, max_elements, max_depth): the
 * fast path on what a socket would hold at off -> value, bytes taken; or
 * nothing (declined). */
static int l_wire(lua_State *l)
{
    size_t n;
    const char *d = luaL_checklstring(l, 1, &n);
    size_t off = (size_t)luaL_checkinteger(l, 2), max_buffer = (size_t)luaL_checkinteger(l, 3);
    redis_wire_limits lim = { (size_t)luaL_checkinteger(l, 4), (size_t)luaL_checkinteger(l, 5),
                              (size_t)luaL_checkinteger(l, 6) };
    size_t avail = off < n ? n - off : 0;
    if (avail > max_buffer)
        avail = max_buffer;
    size_t used = redis_wire_reply(l, d + off, avail, &lim);
    if (!used)
        return 0;
    lua_pushinteger(l, (lua_Integer)used);
    return 2;
}

static void finish(void)
{
    if (L)
        lua_close(L);
    L = NULL;
}

static void die(const char *what)
{
    fprintf(stderr, "fuzz_resp: %s: %s\n", what, lua_tostring(L, -1));
    abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    L = luaL_newstate();
    if (!L)
        abort();
    lua_atpanic(L, on_panic);
    luaL_openlibs(L);
    luaJIT_setmode(L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_OFF);
    if (redis_lua_load(L, FUZZ_LUA_DIR "/moonwait/redis.lua") != 0)
        die("loading " FUZZ_LUA_DIR "/moonwait/redis.lua");
    int redis = lua_gettop(L);
    lua_getfield(L, redis, "_read_reply");
    lua_Debug ar;
    if (!lua_getinfo(L, ">S", &ar))
        die("lua_getinfo");
    redis_source = ar.source; /* the chunk's name string, alive with the chunk */
    if (luaL_loadbuffer(L, DRIVER, sizeof DRIVER - 1, "=fuzz_resp_driver"))
        die("the driver");
    lua_pushvalue(L, redis);
    lua_getfield(L, LUA_GLOBALSINDEX, "package");
    lua_getfield(L, -1, "loaded");
    lua_getfield(L, -1, "moonwait");
    lua_getfield(L, -1, "null");
    lua_replace(L, -4);
    lua_pop(L, 2);
    lua_pushcfunction(L, l_wire);
    if (lua_pcall(L, 3, 1, 0))
        die("the driver");
    lua_setfield(L, LUA_REGISTRYINDEX, "fuzz_resp_run");
    lua_settop(L, 0);
    atexit(finish);
    return 0;
}

static const char *run(const uint8_t *p, size_t n, int mode, int seed, int max_bytes, int max_elements,
                       int max_depth, size_t *len)
{
    lua_getfield(L, LUA_REGISTRYINDEX, "fuzz_resp_run");
    prev_line = 0;
    lua_sethook(L, line_hook, LUA_MASKLINE, 0);
    lua_pushlstring(L, (const char *)p, n);
    lua_pushinteger(L, mode);
    lua_pushinteger(L, seed);
    lua_pushinteger(L, max_bytes);
    lua_pushinteger(L, max_elements);
    lua_pushinteger(L, max_depth);
    int rc = lua_pcall(L, 6, 1, 0);
    lua_sethook(L, NULL, 0, 0);
    if (rc) {
        fprintf(stderr, "fuzz_resp: %s\n", lua_tostring(L, -1));
        abort();
    }
    return lua_tolstring(L, -1, len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4)
        return 0;
    int seed = data[0], max_bytes = 16 + data[1] * 16, max_elements = 1 + data[2] % 64, max_depth = 1 + data[3] % 8;
    const uint8_t *p = data + 4;
    size_t n = size - 4;
    size_t l0, l1;
    const char *r0 = run(p, n, 0, seed, max_bytes, max_elements, max_depth, &l0);
    int modes = n <= 1024 ? 3 : 2;
    for (int m = 1; m < modes; m++) {
        const char *r1 = run(p, n, m, seed, max_bytes, max_elements, max_depth, &l1);
        if (l0 != l1 || memcmp(r0, r1, l0) != 0) {
            fprintf(stderr, "fuzz_resp: check failed: the results differ by split (mode 0 vs %d):\n%s\n---\n%s\n", m,
                    r0, r1);
            abort();
        }
        lua_pop(L, 1);
    }
    lua_settop(L, 0);
    if (lua_gc(L, LUA_GCCOUNT, 0) > 64 * 1024)
        lua_gc(L, LUA_GCCOLLECT, 0);
    return 0;
}
