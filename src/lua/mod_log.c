/*
 * mod_log.c: moonwait.log. Each call writes one line to stderr through
 * util/log.c, so it follows --log-format and MOONWAIT_LOG_LEVEL:
 *   text: moonwait: [warn] script.lua:12: seq=5: message
 *   json: {"time":"...","level":"warn","msg":"message","file":"script.lua",
 *          "line":12,"seq":5,"generation":1}
 * with the caller's file:line, inside a record's coroutine its seq, and
 * the generation of the VM it runs in; with --workers N > 1 also the
 * worker (text "worker=2: " before seq=, json "worker":2).
 */
#include <lauxlib.h>

#include "../util/log.h"
#include "modules.h"
#include "runtime.h"

static int log_at(lua_State *L, mw_log_level level)
{
    if (!mw_log_enabled(level))
        return 0; /* not even tostring'd */
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
    mw_log_ctx at = { .script = 1 };
    lua_Debug ar;
    if (lua_getstack(L, 1, &ar) && lua_getinfo(L, "Sl", &ar) && ar.currentline > 0) {
        at.file = ar.short_src;
        at.line = ar.currentline;
    }
    rt_fiber *f = rt_current(L);
    if (f)
        at.seq = f->seq;
    rt *r = rt_of(L);
    if (r) {
        at.generation = r->generation;
        at.worker = r->worker;
    }
    /* The message by its length: a NUL byte in it must not cut the line. */
    size_t len;
    const char *msg = lua_tolstring(L, -1, &len);
    mw_log_bytes(level, &at, msg, len);
    return 0;
}

static int l_debug(lua_State *L) { return log_at(L, MW_LOG_DEBUG); }
static int l_info(lua_State *L) { return log_at(L, MW_LOG_INFO); }
static int l_warn(lua_State *L) { return log_at(L, MW_LOG_WARN); }
static int l_error(lua_State *L) { return log_at(L, MW_LOG_ERROR); }

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
