/*
 * mod_test.c: moonwait._test, what `moonwait test` (lua/moonwait/test.lua)
 * needs from the runtime to run a user's functions the way a run does:
 *
 *   attempt(fn, deadline_ms, seq, ...) -> how, overloads, n, ...
 *       runs fn(...) in a fiber of its own, a root like a record's attempt
 *       (so ctx.defer, ctx.overloaded, ctx.remaining_ms and every wait's
 *       bound belong to it, not to the spec's fiber), with the deadline
 *       `deadline_ms` on the loop's clock (0 = none) and `seq` for its log
 *       lines; parks the caller until it ends. `how` is "returned" (n
 *       results follow), "raised" (n = 2: the message, the traceback) or
 *       "timeout" (the deadline passed first: the fiber was discarded as a
 *       record's timeout discards it, its defers ran with "abandoned", its
 *       I/O was cancelled; n = 0). `overloads`: the overload signals its
 *       family gave.
 *   sync(fn, ...) -> true, ... | false, message, traceback
 *       calls fn outside any fiber, as the host calls on_timeout: waiting
 *       raises there, as it does in a run.
 *   now_ms() -> the loop's clock (the one deadlines are on)
 *   wall(ms) -> that moment in time.now() seconds (ctx.deadline)
 *
 * Preloaded only by `moonwait test` (script_testing, vm.c): a run's
 * scripts never see it.
 */
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#include "modules.h"
#include "runtime.h"

int script_testing;

/* One attempt in flight: owned by the caller's park (freed when the
 * timer's handle has closed, after the caller was woken or abandoned). */
typedef struct attempt {
    rt_fiber *caller; /* parked on this attempt */
    rt_fiber *child;  /* the attempt's fiber while it runs, else NULL */
    uv_timer_t timer; /* the deadline */
} attempt;

static void attempt_freed(uv_handle_t *h)
{
    free(h->data);
}

static void attempt_end(attempt *a)
{
    uv_timer_stop(&a->timer);
    uv_close((uv_handle_t *)&a->timer, attempt_freed);
}

static void child_done(void *ud, rt_fiber *f, int status)
{
    attempt *a = ud;
    lua_State *co = a->caller->co;
    a->child = NULL;
    if (status == RT_OK) {
        int n = lua_gettop(f->co);
        lua_checkstack(co, n + 4);
        lua_pushliteral(co, "returned");
        lua_pushinteger(co, (lua_Integer)f->overloads);
        lua_pushinteger(co, n);
        lua_xmove(f->co, co, n);
        rt_fiber_release(f);
        rt_wake(a->caller, 3 + n);
    } else {
        lua_checkstack(co, 6);
        lua_pushliteral(co, "raised");
        lua_pushinteger(co, (lua_Integer)f->overloads);
        lua_pushinteger(co, 2);
        lua_pushstring(co, f->errmsg ? f->errmsg : "?");
        lua_pushstring(co, f->err ? f->err : "?");
        rt_fiber_discard(f);
        rt_wake(a->caller, 5);
    }
    attempt_end(a);
}

/* The child was discarded by someone else (rt_close): forget it. */
static void child_abandoned(void *ud)
{
    ((attempt *)ud)->child = NULL;
}

static void deadline_fired(uv_timer_t *t)
{
    attempt *a = t->data;
    rt_fiber *k = a->child;
    lua_Integer overloads = 0;
    if (k) {
        overloads = (lua_Integer)k->overloads;
        a->child = NULL;
        k->abandoned = NULL;
        rt_fiber_discard(k); /* what a record's timeout does to its attempt */
    }
    lua_State *co = a->caller->co;
    lua_checkstack(co, 4);
    lua_pushliteral(co, "timeout");
    lua_pushinteger(co, overloads);
    lua_pushinteger(co, 0);
    rt_wake(a->caller, 3);
    attempt_end(a);
}

/* The caller was abandoned (the spec's run ends): its attempt goes too. */
static void caller_cancel(rt_fiber *f)
{
    attempt *a = f->wait;
    if (a->child) {
        rt_fiber *k = a->child;
        a->child = NULL;
        k->abandoned = NULL;
        rt_fiber_discard(k);
    }
    attempt_end(a);
}

static int l_attempt(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TFUNCTION);
    double deadline = luaL_checknumber(L, 2);
    lua_Integer seq = luaL_optinteger(L, 3, 0);
    rt_fiber *caller = rt_check_yieldable(L, "moonwait._test.attempt");
    rt *r = rt_of(L);
    rt_fiber *k = rt_fiber_get(r);
    attempt *a = k ? calloc(1, sizeof *a) : NULL;
    if (!a) {
        if (k)
            rt_fiber_release(k);
        return luaL_error(L, "moonwait._test.attempt: out of memory");
    }
    int nargs = lua_gettop(L) - 3;
    if (nargs < 0)
        nargs = 0;
    lua_checkstack(k->co, nargs + 1);
    lua_pushvalue(L, 1);
    lua_xmove(L, k->co, 1);
    for (int i = 0; i < nargs; i++) {
        lua_pushvalue(L, 4 + i);
        lua_xmove(L, k->co, 1);
    }
    k->deadline_ms = deadline > 0 ? (uint64_t)deadline : 0;
    k->seq = seq > 0 ? (uint64_t)seq : 0;
    k->abandoned = child_abandoned;
    a->caller = caller;
    a->child = k;
    uv_timer_init(r->loop, &a->timer);
    a->timer.data = a;
    if (k->deadline_ms) {
        uint64_t now = uv_now(r->loop);
        uv_timer_start(&a->timer, deadline_fired, k->deadline_ms > now ? k->deadline_ms - now : 0, 0);
    }
    rt_park(caller, caller_cancel, a);
    rt_fiber_start_later(k, nargs, child_done, a);
    return rt_yield(L, caller);
}

static int traceback(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    luaL_traceback(L, L, msg ? msg : luaL_typename(L, 1), 1);
    return 1;
}

static int l_sync(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TFUNCTION);
    rt *r = rt_of(L);
    int n = lua_gettop(L) - 1;
    lua_pushcfunction(L, traceback);
    lua_insert(L, 1);
    /* Outside any fiber, as the host calls on_timeout: rt_current() is
     * NULL, so every wait raises, and ctx.defer and ctx.overloaded too. */
    rt_fiber *saved = r->running;
    r->running = NULL;
    int rc = lua_pcall(L, n, LUA_MULTRET, 1);
    r->running = saved;
    if (rc != 0) {
        lua_pushboolean(L, 0);
        lua_pushvalue(L, -2);
        lua_pushvalue(L, -3);
        /* the message alone: the traceback's first line */
        const char *tb = lua_tostring(L, -1);
        const char *nl = tb ? strchr(tb, '\n') : NULL;
        if (nl) {
            lua_pushlstring(L, tb, (size_t)(nl - tb));
            lua_replace(L, -3);
        }
        return 3;
    }
    lua_pushboolean(L, 1);
    lua_replace(L, 1); /* over the traceback handler */
    return lua_gettop(L);
}

static int l_now_ms(lua_State *L)
{
    lua_pushnumber(L, (lua_Number)uv_now(rt_of(L)->loop));
    return 1;
}

static int l_wall(lua_State *L)
{
    double ms = luaL_checknumber(L, 1);
    lua_pushnumber(L, rt_wall_secs(rt_of(L), ms > 0 ? (uint64_t)ms : 0));
    return 1;
}

int mod_test_open(lua_State *L)
{
    static const luaL_Reg fns[] = {
        { "attempt", l_attempt }, { "sync", l_sync }, { "now_ms", l_now_ms }, { "wall", l_wall }, { NULL, NULL },
    };
    lua_newtable(L);
    luaL_register(L, NULL, fns);
    return 1;
}
