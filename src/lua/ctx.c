/*
 * ctx.c: what a record's ctx computes on access (its metatable's __index,
 * set up by vm.c): remaining_ms, overloaded, defer, log. The plain fields
 * (seq, line, attempt, deadline, ...) are set by invoke.c when the ctx is
 * made.
 */
#include <lauxlib.h>
#include <math.h>
#include <string.h>
#include <uv.h>

#include "modules.h"
#include "runtime.h"
#include "script_int.h"

/* ctx's __index: remaining_ms and log are built on first access, so a
 * record that never reads them pays nothing. */
static int l_remaining_ms(lua_State *L)
{
    /* The record's deadline in loop ms (0 = none), on the loop's whole-ms
     * clock that the record's timer counts: a call given remaining_ms() as
     * its timeout ends exactly at the record's deadline. */
    double deadline_ms = lua_tonumber(L, lua_upvalueindex(1));
    if (deadline_ms <= 0) {
        lua_pushnumber(L, HUGE_VAL);
        return 1;
    }
    double left = deadline_ms - (double)uv_now(rt_of(L)->loop);
    lua_pushnumber(L, left > 0 ? left : 0);
    return 1;
}

void script_push_remaining_ms(lua_State *L, uint64_t deadline_ms)
{
    lua_pushnumber(L, (lua_Number)deadline_ms);
    lua_pushcclosure(L, l_remaining_ms, 1);
}

/* The deadline of the call running now: the fiber's (async_invoke, a
 * retry predicate, a hook: none), or on_timeout's (sc->sync_deadline_ms). */
static uint64_t running_deadline_ms(lua_State *L)
{
    rt_fiber *f = rt_of(L)->running;
    if (f)
        return f->deadline_ms;
    const script *sc = lua_touserdata(L, lua_upvalueindex(1));
    return sc->sync_deadline_ms;
}

/* ctx.overloaded(): the service this record talks to signalled an
 * overload in its own way (a Redis BUSY, a queue-full error): the
 * attempt reports it with its outcome, as an HTTP 429/503 is (adaptive
 * capacity lowers the limit; without it, nothing happens). Pushes
 * nothing; raises outside a running attempt. */
static int l_overloaded(lua_State *L)
{
    rt_fiber *f = rt_of(L)->running;
    if (!f)
        return luaL_error(L, "ctx.overloaded can only be called while an attempt runs (async_invoke, "
                             "batch_invoke, a retry predicate, or a function they spawned)");
    rt_overload(f);
    return 0;
}

int script_ctx_index(lua_State *L)
{
    const char *k = lua_tostring(L, 2);
    if (k && strcmp(k, "remaining_ms") == 0) {
        lua_pushnumber(L, (lua_Number)running_deadline_ms(L));
        lua_pushcclosure(L, l_remaining_ms, 1);
        return 1;
    }
    if (k && strcmp(k, "overloaded") == 0) {
        lua_pushcfunction(L, l_overloaded);
        return 1;
    }
    if (k && strcmp(k, "defer") == 0) {
        lua_pushcfunction(L, defer_ctx);
        return 1;
    }
    if (k && strcmp(k, "worker") == 0) {
        /* --workers: which one runs this VM (script_set_worker), 1 without */
        lua_getfield(L, LUA_REGISTRYINDEX, "moonwait.worker");
        if (lua_isnil(L, -1)) {
            lua_pop(L, 1);
            lua_pushinteger(L, 1);
        }
        return 1;
    }
    if (k && strcmp(k, "log") == 0) {
        lua_getglobal(L, "require");
        lua_pushliteral(L, "moonwait.log");
        lua_call(L, 1, 1);
        return 1;
    }
    return 0;
}

void script_set_worker(script *sc, int worker)
{
    lua_pushinteger(sc->rt.L, worker);
    lua_setfield(sc->rt.L, LUA_REGISTRYINDEX, "moonwait.worker");
    sc->rt.worker = worker;
}
