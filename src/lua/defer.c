/*
 * defer.c: ctx.defer(fn), cleanup that runs when the record's attempt ends
 * however it ends: returned, raised, timed out, cancelled by a reload drain
 * or the run's end. Functions run last-registered first, each with how the
 * attempt ended ("returned", "raised" or "abandoned").
 *
 * They belong to the root of the calling fiber's family (the attempt, a
 * retry predicate, a hook), so a defer registered inside a child spawned
 * with moonwait.spawn still waits for the whole attempt, and runs after
 * every child was cancelled. They run as an end hook of that fiber
 * (runtime.h), outside any coroutine: they cannot wait (every moonwait I/O
 * call raises there), and an error in one is logged with the record's seq
 * and does not change the attempt's outcome or stop the other defers.
 */
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>

#include "../util/log.h"
#include "guard.h"
#include "modules.h"
#include "runtime.h"
#include "script_int.h"

typedef struct defers {
    rt_hook hook;  /* on the root fiber; first member */
    int ref;       /* registry ref of the array of functions */
    int n;
} defers;

static const char *const how_names[] = { "returned", "raised", "abandoned" };

static void run_defers(rt_hook *h, rt_fiber *f, rt_end how)
{
    defers *d = (defers *)h;
    lua_State *L = f->rt->L;
    if (L) {
        int top = lua_gettop(L);
        lua_rawgeti(L, LUA_REGISTRYINDEX, d->ref);
        for (int i = d->n; i >= 1; i--) {
            lua_rawgeti(L, top + 1, i);
            lua_pushstring(L, how_names[how]);
            if (script_pcall(L, 1, 0) != 0) {
                mw_log_ctx at = { .seq = f->seq, .generation = f->rt->generation, .script = 1 };
                mw_logx(MW_LOG_ERROR, &at, "a ctx.defer function failed: %s",
                        lua_tostring(L, -1) ? lua_tostring(L, -1) : "?");
                lua_pop(L, 1);
            }
        }
        lua_settop(L, top);
        luaL_unref(L, LUA_REGISTRYINDEX, d->ref);
    }
    free(d);
}

int defer_ctx(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TFUNCTION);
    rt_fiber *f = rt_of(L)->running;
    if (!f)
        return luaL_error(L, "ctx.defer can only be called while an attempt runs (async_invoke, "
                             "batch_invoke, a retry predicate, open or close, or a function they "
                             "spawned)");
    f = rt_root(f);
    defers *d = NULL;
    for (rt_hook *h = f->hooks; h; h = h->next)
        if (h->fn == run_defers)
            d = (defers *)h;
    if (!d) {
        lua_createtable(L, 2, 0);
        int ref = luaL_ref(L, LUA_REGISTRYINDEX);
        d = calloc(1, sizeof *d);
        if (!d) {
            luaL_unref(L, LUA_REGISTRYINDEX, ref);
            return luaL_error(L, "ctx.defer: out of memory");
        }
        d->ref = ref;
        d->hook.fn = run_defers;
        rt_hook_add(f, &d->hook);
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, d->ref);
    lua_pushvalue(L, 1);
    lua_rawseti(L, -2, ++d->n);
    return 0;
}
