/*
 * mod_log.c: moonwait.log. Each call writes one line to stderr:
 *   moonwait: [warn] script.lua:12: seq=5: message
 * with the caller's file:line and, inside a record's coroutine, its seq.
 */
#include <lauxlib.h>
#include <stdio.h>

#include "modules.h"
#include "runtime.h"

int mod_log_level = LOG_INFO;

static const char *const level_names[] = { "debug", "info", "warn", "error" };

static int log_at(lua_State *L, int level)
{
    if (level < mod_log_level)
        return 0;
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    int n = lua_gettop(L);
    for (int i = 1; i <= n; i++) {
        lua_getglobal(L, "tostring");
        lua_pushvalue(L, i);
        lua_call(L, 1, 1);
        if (i > 1)
            luaL_addchar(&b, ' ');
        luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    lua_Debug ar;
    char where[256] = "";
    if (lua_getstack(L, 1, &ar) && lua_getinfo(L, "Sl", &ar) && ar.currentline > 0)
        snprintf(where, sizeof where, "%s:%d: ", ar.short_src, ar.currentline);
    rt_fiber *f = rt_current(L);
    char seq[48] = "";
    if (f && f->seq)
        snprintf(seq, sizeof seq, "seq=%llu: ", (unsigned long long)f->seq);
    /* The message by its length: a NUL byte in it must not cut the line. */
    size_t len;
    const char *msg = lua_tolstring(L, -1, &len);
    fprintf(stderr, "moonwait: [%s] %s%s", level_names[level], where, seq);
    fwrite(msg, 1, len, stderr);
    fputc('\n', stderr);
    return 0;
}

static int l_debug(lua_State *L) { return log_at(L, LOG_DEBUG); }
static int l_info(lua_State *L) { return log_at(L, LOG_INFO); }
static int l_warn(lua_State *L) { return log_at(L, LOG_WARN); }
static int l_error(lua_State *L) { return log_at(L, LOG_ERROR); }

int mod_log_open(lua_State *L)
{
    static const luaL_Reg fns[] = {
        { "debug", l_debug }, { "info", l_info }, { "warn", l_warn }, { "error", l_error },
        { NULL, NULL },
    };
    lua_newtable(L);
    luaL_register(L, NULL, fns);
    return 1;
}
