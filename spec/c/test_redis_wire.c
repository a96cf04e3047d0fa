/*
 * test_redis_wire.c: moonwait.redis's fast path on the wire
 * (src/lua/redis_wire.c) against redis.lua's own code on a real LuaJIT
 * state: a reply the fast path takes must be the value read_value reads
 * from the same bytes (through M._read_reply and a socket that serves them
 * as moonwait.socket would), having taken the same bytes; a command it
 * writes must be serialize()'s bytes (M._serialize). Named cases first,
 * then generated ones (a fixed seed): well-formed replies, and the same
 * with a byte cut, changed or added, under small limits.
 */
#include <lauxlib.h>
#include <lualib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/lua/redis_wire.h"
#include "redis_lua.h"
#include "test.h"

#ifndef MW_TEST_LUA_DIR
#define MW_TEST_LUA_DIR "lua"
#endif

/* The Lua side: read(data, max_bytes, max_elements, max_depth) reads one
 * reply in one piece and gives "VALUE@TAKEN" for a value and "no:WHY" for
 * anything else; show(v) is the canonical text of a value; serialize(...)
 * is redis.lua's. */
static const char DRIVER[] =
    "local redis, null = ...\n"
    "local sub, find, byte, format = string.sub, string.find, string.byte, string.format\n"
    "local ffi = require 'ffi'\n"
    "local function sock(data, max_buffer)\n"
    "  local off = 0\n"
    "  local s = {}\n"
    "  function s:receive(p)\n"
    "    local avail = math.min(#data, off + max_buffer)\n"
    "    if p == '*l' then\n"
    "      local i = find(sub(data, off + 1, avail), '\\n', 1, true)\n"
    "      if not i then\n"
    "        local err = avail - off >= max_buffer and 'buffer too large' or 'closed'\n"
    "        off = avail\n"
    "        return nil, err, ''\n"
    "      end\n"
    "      local line = sub(data, off + 1, off + i - 1)\n"
    "      if byte(line, -1) == 13 then line = sub(line, 1, -2) end\n"
    "      off = off + i\n"
    "      return line\n"
    "    end\n"
    "    if off + p > #data then off = #data return nil, 'closed', '' end\n"
    "    local d = sub(data, off + 1, off + p)\n"
    "    off = off + p\n"
    "    return d\n"
    "  end\n"
    "  return s, function() return off end\n"
    "end\n"
    "local function show(v)\n"
    "  if v == null then return 'null' end\n"
    "  local t = type(v)\n"
    "  if t == 'string' then return format('%q', v) end\n"
    "  if t == 'number' then return format('%.17g', v) end\n"
    "  if t == 'cdata' then return 'int64:' .. tostring(v) end\n"
    "  if t == 'table' then\n"
    "    if v[1] == false then return 'err' .. format('%q', tostring(v[2])) end\n"
    "    local out = {}\n"
    "    for i = 1, #v do out[i] = show(v[i]) end\n"
    "    local n = 0\n"
    "    for _ in pairs(v) do n = n + 1 end\n"
    "    if n ~= #v then return 'a table with ' .. n .. ' keys, #' .. #v end\n"
    "    return '[' .. table.concat(out, ',') .. ']'\n"
    "  end\n"
    "  return t .. ':' .. tostring(v)\n"
    "end\n"
    "local function read(data, max_bytes, max_elements, max_depth)\n"
    "  local s, taken = sock(data, max_bytes + 16)\n"
    "  local lim = { max_bytes = max_bytes, max_elements = max_elements, max_depth = max_depth }\n"
    "  local v, e = redis._read_reply(s, lim)\n"
    "  if v == nil or v == false then return 'no:' .. tostring(v) .. ':' .. tostring(e) end\n"
    "  return show(v) .. '@' .. taken()\n"
    "end\n"
    "return read, show, redis._serialize\n";

static lua_State *L;
static int read_ref, show_ref, serialize_ref;

static void die(const char *what)
{
    FAILF("%s: %s", what, lua_tostring(L, -1));
}

static void setup(void)
{
    L = luaL_newstate();
    luaL_openlibs(L);
    if (redis_lua_load(L, MW_TEST_LUA_DIR "/moonwait/redis.lua") != 0)
        die("loading redis.lua");
    if (luaL_loadbuffer(L, DRIVER, sizeof DRIVER - 1, "=driver"))
        die("the driver");
    lua_insert(L, -2);
    lua_pushlightuserdata(L, NULL);
    if (lua_pcall(L, 2, 3, 0))
        die("the driver");
    serialize_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    show_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    read_ref = luaL_ref(L, LUA_REGISTRYINDEX);
}

/* What the fast path makes of d[0..n) (at most max_buffer of it
 * buffered): "VALUE@TAKEN", or NULL when it declines. Into out. */
static const char *fast(const char *d, size_t n, const redis_wire_limits *lim, char *out, size_t cap)
{
    size_t buffered = n < lim->max_bytes + 16 ? n : lim->max_bytes + 16;
    int top = lua_gettop(L);
    size_t used = redis_wire_reply(L, d, buffered, lim);
    if (!used) {
        ASSERT_INT_EQ(lua_gettop(L), top);
        return NULL;
    }
    ASSERT_INT_EQ(lua_gettop(L), top + 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, show_ref);
    lua_insert(L, -2);
    if (lua_pcall(L, 1, 1, 0))
        die("show");
    snprintf(out, cap, "%s@%zu", lua_tostring(L, -1), used);
    lua_settop(L, top);
    return out;
}

/* What read_value makes of it, into out. */
static const char *slow(const char *d, size_t n, const redis_wire_limits *lim, char *out, size_t cap)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, read_ref);
    lua_pushlstring(L, d, n);
    lua_pushnumber(L, (lua_Number)lim->max_bytes);
    lua_pushnumber(L, (lua_Number)lim->max_elements);
    lua_pushnumber(L, (lua_Number)lim->max_depth);
    if (lua_pcall(L, 4, 1, 0))
        die("read");
    snprintf(out, cap, "%s", lua_tostring(L, -1));
    lua_pop(L, 1);
    return out;
}

/* The fast path agrees with read_value on d[0..n): 1 if it took the
 * reply, 0 if it declined. */
static int agree(const char *d, size_t n, const redis_wire_limits *lim)
{
    static char a[1 << 16], b[1 << 16];
    const char *f = fast(d, n, lim, a, sizeof a);
    if (!f)
        return 0;
    slow(d, n, lim, b, sizeof b);
    if (strcmp(a, b) != 0)
        FAILF("the fast path read %s where read_value read %s, from %zu bytes: '%.*s' (limits %zu, %zu, %zu)", a, b,
              n, (int)n, d, lim->max_bytes, lim->max_elements, lim->max_depth);
    return 1;
}

static const redis_wire_limits DEFAULTS = { 64u * 1024 * 1024, 1u << 20, 64 };

static int takes(const char *s)
{
    return agree(s, strlen(s), &DEFAULTS);
}

static void test_plain_replies_are_taken_as_read_value_reads_them(void)
{
    setup();
    ASSERT(takes("$2\r\nv5\r\n"));
    ASSERT(takes("$0\r\n\r\n"));
    ASSERT(takes("$-1\r\n"));
    ASSERT(takes("+OK\r\n"));
    ASSERT(takes("+\r\n"));
    ASSERT(takes(":0\r\n"));
    ASSERT(takes(":-0\r\n")); /* -0, as tonumber reads it */
    ASSERT(takes(":-42\r\n"));
    ASSERT(takes(":999999999999999\r\n"));
    ASSERT(takes(":000000000000001\r\n"));
    ASSERT(takes("*0\r\n"));
    ASSERT(takes("*-1\r\n"));
    ASSERT(takes("*-01\r\n"));
    ASSERT(takes("$-0\r\n\r\n"));
    ASSERT(takes("$002\r\nab\r\n"));
    ASSERT(takes("*3\r\n$1\r\na\r\n$-1\r\n:7\r\n"));
    ASSERT(takes("*2\r\n*1\r\n+x\r\n*0\r\n"));
    ASSERT(takes("$5\r\na\r\nb\n\r\n"));        /* CR and LF inside a bulk */
    ASSERT(takes("+a\rb\r\n"));                  /* a CR inside a status */
    ASSERT(takes("+OK\n"));                      /* a bare LF ends a line too */
    ASSERT(takes("$2\r\nv5\r\n+next\r\n"));      /* the next reply stays */
    char nul[] = "$3\r\na\0b\r\n";
    ASSERT(agree(nul, sizeof nul - 1, &DEFAULTS));
}

static void test_everything_else_is_left_to_read_value(void)
{
    setup();
    static const char *const left[] = {
        "",                               /* nothing yet */
        "$2\r\nv",                        /* a bulk not all here */
        "$2\r\n",
        "$2",                             /* no line yet */
        "*2\r\n$1\r\na\r\n",              /* an array not all here */
        "*3\r\n",                         /* more elements than bytes */
        "-ERR wrong\r\n",                 /* an error reply: its text names the command */
        "*1\r\n-ERR x\r\n",
        ":1234567890123456\r\n",          /* 16 digits: maybe an int64 cdata */
        ":9223372036854775807\r\n",
        ":0000000000000001\r\n",          /* 16 digits, leading zeros counted */
        ":abc\r\n",
        ":\r\n",
        ":-\r\n",
        ":1.5\r\n",
        "$-2\r\n",
        "*-2\r\n",
        "$1.5\r\n",
        "$ 1\r\n",
        "$2\r\nabXY",                     /* a bulk not followed by CRLF */
        "$999999999999\r\n",
        "\r\n",                           /* an empty line */
        "%1\r\n",                         /* an unknown type */
        "_\r\n",                          /* RESP3 */
    };
    for (size_t i = 0; i < sizeof left / sizeof *left; i++)
        if (takes(left[i]))
            FAILF("the fast path took '%s'", left[i]);
}

static void test_limits_count_as_read_value_counts_them(void)
{
    setup();
    /* max_bytes: "$2\r\nv5\r\n" is 8 bytes; a bare LF line counts one more */
    redis_wire_limits lim = { 8, 10, 4 };
    ASSERT(agree("$2\r\nv5\r\n", 8, &lim));
    lim.max_bytes = 7;
    ASSERT(!agree("$2\r\nv5\r\n", 8, &lim));
    lim.max_bytes = 6;
    ASSERT(agree("+OK\n", 4, &lim)); /* counted as 3 + 2 */
    lim.max_bytes = 4;
    ASSERT(!agree("+OK\n", 4, &lim));
    /* max_elements: in all arrays together */
    lim = (redis_wire_limits){ 1000, 3, 4 };
    ASSERT(agree("*2\r\n*1\r\n:1\r\n:2\r\n", 16, &lim));
    ASSERT(!agree("*2\r\n*2\r\n:1\r\n:3\r\n:2\r\n", 20, &lim));
    /* max_depth: arrays inside arrays */
    lim = (redis_wire_limits){ 1000, 100, 2 };
    ASSERT(agree("*1\r\n*0\r\n", 8, &lim));
    ASSERT(!agree("*1\r\n*1\r\n*0\r\n", 12, &lim));
    /* none set (a socket redis.connect did not set up): nothing is taken */
    lim = (redis_wire_limits){ 0, 0, 0 };
    ASSERT(!agree("+OK\r\n", 5, &lim));
}

/* ---- generated replies ------------------------------------------------------- */

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static unsigned rnd(unsigned n)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (unsigned)(rng % n);
}

typedef struct out {
    char b[4096];
    size_t n;
} out;

static void put(out *o, const char *s, size_t n)
{
    if (o->n + n > sizeof o->b)
        n = sizeof o->b - o->n;
    memcpy(o->b + o->n, s, n);
    o->n += n;
}

static void put_s(out *o, const char *s)
{
    put(o, s, strlen(s));
}

static void eol(out *o)
{
    unsigned r = rnd(20);
    put_s(o, r == 0 ? "\n" : r == 1 ? "\r\r\n" : "\r\n");
}

static void digits(out *o)
{
    static const char *const nums[] = { "0", "-0", "1", "-1", "2", "-2", "007", "-01", "15", "999999999999999",
                                        "1000000000000000", "9007199254740993", "-9223372036854775808",
                                        "9223372036854775808", "12345678901234567890", "1e3", "", "-", "+1", " 1" };
    if (rnd(3) == 0) {
        char b[24];
        snprintf(b, sizeof b, "%s%u", rnd(4) == 0 ? "-" : "", rnd(40));
        put_s(o, b);
        return;
    }
    put_s(o, nums[rnd(sizeof nums / sizeof *nums)]);
}

static void gen(out *o, int depth)
{
    char b[32];
    switch (rnd(depth > 4 ? 6 : 8)) {
    case 0:
        put_s(o, "+");
        for (unsigned i = rnd(6); i; i--)
            put(o, "ab \r\x01\xff" + rnd(6), 1);
        eol(o);
        break;
    case 1:
        put_s(o, rnd(4) ? ":" : "-");
        digits(o);
        eol(o);
        break;
    case 2:
    case 3: {
        unsigned n = rnd(12);
        snprintf(b, sizeof b, "$%u", n);
        put_s(o, rnd(10) ? b : "$-1");
        eol(o);
        if (b[1] != '-') {
            for (unsigned i = 0; i < n; i++)
                put(o, "xy\r\n\0z" + rnd(6), 1);
            put_s(o, rnd(15) ? "\r\n" : "\n\r");
        }
        break;
    }
    case 4:
        put_s(o, "$");
        digits(o);
        eol(o);
        put_s(o, "ab\r\n");
        break;
    case 5:
        put_s(o, rnd(2) ? "*-1" : "*0");
        eol(o);
        break;
    default: {
        unsigned n = rnd(4);
        snprintf(b, sizeof b, "*%u", n);
        put_s(o, b);
        eol(o);
        for (unsigned i = 0; i < n; i++)
            gen(o, depth + 1);
    }
    }
}

static void test_generated_replies_agree(void)
{
    setup();
    unsigned taken = 0;
    for (int i = 0; i < 60000; i++) {
        out o = { .n = 0 };
        gen(&o, 0);
        if (rnd(3) == 0)
            gen(&o, 0); /* a second reply after it */
        /* a fault: a byte cut off the end, changed or added */
        unsigned f = rnd(6);
        if (f == 0 && o.n)
            o.n -= 1 + rnd((unsigned)o.n);
        else if (f == 1 && o.n)
            o.b[rnd((unsigned)o.n)] = "\r\n$*:-+0"[rnd(8)];
        else if (f == 2 && o.n < sizeof o.b) {
            size_t at = rnd((unsigned)o.n + 1);
            memmove(o.b + at + 1, o.b + at, o.n - at);
            o.b[at] = "\r\n1"[rnd(3)];
            o.n++;
        }
        redis_wire_limits lim = { 1 + rnd(80), 1 + rnd(10), 1 + rnd(5) };
        if (rnd(4) == 0)
            lim = DEFAULTS;
        taken += (unsigned)agree(o.b, o.n, &lim);
        lua_settop(L, 0);
        if (i % 1000 == 0)
            lua_gc(L, LUA_GCCOLLECT, 0);
    }
    /* (the generator reaches the fast path often, not only its refusals) */
    ASSERT(taken > 10000);
}

/* ---- commands ------------------------------------------------------------------- */

/* The command of the values pushed since `base`: the fast path's bytes
 * equal serialize's, or it declined (0). */
static size_t same_command(int base)
{
    int top = lua_gettop(L);
    char buf[1024];
    size_t n = redis_wire_command(L, base + 1, top, buf, sizeof buf);
    lua_rawgeti(L, LUA_REGISTRYINDEX, serialize_ref);
    for (int i = base + 1; i <= top; i++)
        lua_pushvalue(L, i);
    int ok = lua_pcall(L, top - base, 1, 0) == 0;
    if (n) {
        if (!ok)
            FAILF("the fast path wrote a command serialize refuses: %s", lua_tostring(L, -1));
        size_t sl;
        const char *s = lua_tolstring(L, -1, &sl);
        if (sl != n || memcmp(s, buf, n) != 0)
            FAILF("the fast path wrote '%.*s', serialize '%.*s'", (int)n, buf, (int)sl, s);
    }
    lua_settop(L, base);
    return n;
}

static void test_commands_are_serialize_s_bytes(void)
{
    setup();
    lua_pushstring(L, "GET");
    lua_pushstring(L, "user:5");
    ASSERT(same_command(0) > 0);
    lua_pushstring(L, "SET");
    lua_pushlstring(L, "k\0\r\n", 4);
    lua_pushnumber(L, 42);
    ASSERT(same_command(0) > 0);
    static const double taken[] = { 0, -0.0, 1, -1, 123456789, 9007199254740992.0, -9007199254740992.0, 1e15 };
    for (size_t i = 0; i < sizeof taken / sizeof *taken; i++) {
        lua_pushstring(L, "EXPIRE");
        lua_pushnumber(L, taken[i]);
        ASSERT(same_command(0) > 0);
    }
    /* not integral, past 2^53, not a number: serialize writes those */
    static const double declined[] = { 1.5, -0.25, 9007199254740994.0, 1e300, 1.0 / 0.0, -1.0 / 0.0 };
    for (size_t i = 0; i < sizeof declined / sizeof *declined; i++) {
        lua_pushstring(L, "SET");
        lua_pushnumber(L, declined[i]);
        ASSERT(same_command(0) == 0);
    }
    lua_pushstring(L, "SET");
    lua_pushnumber(L, 0.0 / 0.0);
    ASSERT(same_command(0) == 0);
    lua_pushstring(L, "SET");
    lua_pushboolean(L, 1);
    ASSERT(same_command(0) == 0);
    lua_pushstring(L, "SET");
    lua_newtable(L);
    ASSERT(same_command(0) == 0);
    /* many arguments; one that does not fit the buffer */
    lua_pushstring(L, "MSET");
    for (int i = 0; i < 40; i++)
        lua_pushnumber(L, i * 37);
    ASSERT(same_command(0) > 0);
    char big[2000];
    memset(big, 'x', sizeof big);
    lua_pushstring(L, "SET");
    lua_pushlstring(L, big, sizeof big);
    ASSERT(same_command(0) == 0);
    for (int i = 0; i < 5000; i++) {
        int n = 1 + (int)rnd(6);
        for (int k = 0; k < n; k++) {
            unsigned t = rnd(4);
            if (t == 0) {
                char s[40];
                size_t l = rnd(sizeof s);
                for (size_t j = 0; j < l; j++)
                    s[j] = (char)rnd(256);
                lua_pushlstring(L, s, l);
            } else if (t == 1) {
                lua_pushnumber(L, (double)((int)rnd(2000000) - 1000000));
            } else if (t == 2) {
                lua_pushnumber(L, ((double)rnd(1u << 30) * (double)(1u << 30) + rnd(1u << 30)) * (rnd(2) ? 1 : -1));
            } else {
                lua_pushnumber(L, (double)rnd(1000) / 8);
            }
        }
        same_command(0);
    }
}

TEST_MAIN("redis_wire",
          T(test_plain_replies_are_taken_as_read_value_reads_them), T(test_everything_else_is_left_to_read_value),
          T(test_limits_count_as_read_value_counts_them), T(test_generated_replies_agree),
          T(test_commands_are_serialize_s_bytes))
