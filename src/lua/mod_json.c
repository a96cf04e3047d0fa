/*
 * mod_json.c: moonwait.json, the host's strict, exact JSON codec for
 * scripts (the same one that reads and writes records; codec.h).
 *
 *   json.decode(text)  -> value | nil, err   strict RFC 8259; any value
 *   json.encode(value) -> text  | nil, err   keys sorted (deterministic)
 *   json.array([t])    -> t with the array metatable (encodes as [...],
 *                         also when empty)
 *   json.array_mt      the array metatable (decoded arrays carry it)
 *   json.null          JSON null (moonwait.null; the same as cjson.null)
 *
 * Misuse (a non-string to decode, a non-table to array) raises; data that
 * is not JSON, or a value JSON cannot hold, is `nil, err`.
 */
#include <lauxlib.h>
#include <stdlib.h>

#include "codec.h"
#include "modules.h"

/* The VM's codec, the functions' upvalue: found once at open (codec_of,
 * a registry lookup, cost ~230 instructions per call). The codec lives as
 * long as the VM, so as long as these closures. */
#define CODEC(L) ((codec *)lua_touserdata((L), lua_upvalueindex(1)))

static int l_decode(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    char err[256];
    if (codec_decode(CODEC(L), L, s, n, err, sizeof err) != 0) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    return 1;
}

static int l_encode(lua_State *L)
{
    luaL_checkany(L, 1);
    mw_buf b = { NULL, 0, 0 };
    char err[256];
    if (codec_encode(CODEC(L), L, 1, NULL, &b, err, sizeof err) != 0) {
        free(b.p);
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    lua_pushlstring(L, b.p, b.len);
    free(b.p);
    return 1;
}

static int l_array(lua_State *L)
{
    if (lua_isnoneornil(L, 1)) {
        lua_settop(L, 0);
        lua_newtable(L);
    } else {
        luaL_checktype(L, 1, LUA_TTABLE);
        lua_settop(L, 1);
        size_t n = lua_objlen(L, 1), count = 0;
        lua_pushnil(L);
        while (lua_next(L, 1)) {
            lua_pop(L, 1);
            count++;
        }
        if (count != n)
            return luaL_argerror(L, 1, "an array has keys 1..n and nothing else");
    }
    codec_push_array_mt(CODEC(L), L);
    lua_setmetatable(L, 1);
    return 1;
}

int mod_json_open(lua_State *L)
{
    static const luaL_Reg fns[] = {
        { "decode", l_decode },
        { "encode", l_encode },
        { "array", l_array },
        { NULL, NULL },
    };
    codec *c = codec_of(L);
    lua_newtable(L);
    for (const luaL_Reg *f = fns; f->name; f++) {
        lua_pushlightuserdata(L, c);
        lua_pushcclosure(L, f->func, 1);
        lua_setfield(L, -2, f->name);
    }
    codec_push_array_mt(c, L);
    lua_setfield(L, -2, "array_mt");
    lua_pushlightuserdata(L, NULL);
    lua_setfield(L, -2, "null");
    return 1;
}
