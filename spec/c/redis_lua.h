/*
 * spec/c/redis_lua.h: lua/moonwait/redis.lua loaded alone into a bare
 * LuaJIT state, for the tests that compare its reader and its command
 * writer with the host's C ones (test_redis_wire.c, spec/fuzz/fuzz_resp.c).
 * Header-only: each is a program of its own.
 */
#ifndef MW_SPEC_REDIS_LUA_H
#define MW_SPEC_REDIS_LUA_H

#include <lauxlib.h>
#include <lua.h>

/* Push the module redis.lua (at `path`) returns: 0, or -1 with the error
 * on the stack. Its requires are stubbed: moonwait.socket (unused by the
 * reader and the writer) and moonwait.null, the host's null (a NULL light
 * userdata, as redis_wire pushes). */
static inline int redis_lua_load(lua_State *L, const char *path)
{
    if (luaL_dostring(L, "package.preload['moonwait.socket'] = function() return {} end"))
        return -1;
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "loaded");
    lua_newtable(L);
    lua_pushlightuserdata(L, NULL);
    lua_setfield(L, -2, "null");
    lua_setfield(L, -2, "moonwait");
    lua_pop(L, 2);
    if (luaL_loadfile(L, path) || lua_pcall(L, 0, 1, 0))
        return -1;
    return 0;
}

#endif
