/*
 * mod_thread.c: moonwait._thread, the core of concurrency inside one
 * record (lua/moonwait/thread.lua builds moonwait.spawn, wait, kill and all
 * on it). OpenResty's ngx.thread is the model for names and results.
 *
 *   spawn(fn, ...)       a child fiber of the running one; returns its handle
 *   wait(t1, ...)        parks until one of the children ends: true, results...
 *                        or false, err; the others keep running
 *   wait_index(t1, ...)  the same, with the 1-based position of the one that
 *                        ended first (for moonwait.all)
 *   kill(t)              cancels a child: true, or nil, err
 *
 * The runtime owns the family (runtime.c, structured concurrency): a child
 * inherits its parent's deadline, and when the parent's run ends however it
 * ends, every child still alive is cancelled, and every one that finished
 * unwaited is dropped. A child that finished waits here, its results on its
 * own thread's stack, until its parent waits on it (they move straight onto
 * the parent's stack) or the parent's run ends.
 *
 * A handle is a userdata holding the child's fiber pointer; the fiber's
 * `slot` points back at it, so the runtime clears it when it drops the
 * child. A collected handle only unhooks itself: the child still ends with
 * its parent's run (nothing is freed from a finalizer).
 */
#include <lauxlib.h>

#include "modules.h"
#include "runtime.h"

#define THREAD_MT "moonwait.thread"

typedef struct thr {
    rt_fiber *f; /* the child, or NULL once it was waited, killed or dropped */
} thr;

/* Sentinels for the waiting parent's f->wait: which results to push. */
static const char WAIT_PLAIN = 'p', WAIT_INDEX = 'i';

static rt_fiber *caller(lua_State *L, const char *what)
{
    rt_fiber *f = rt_current(L);
    if (!f) {
        rt *r = rt_of(L);
        if (r && r->running)
            luaL_error(L, "%s cannot be called inside a coroutine of your own (coroutine.wrap/"
                          "create): call it directly from the record's coroutine", what);
        luaL_error(L, "%s can only be called inside async_invoke, a retry predicate, open or close "
                      "(not at script load time, in on_timeout or in a ctx.defer function)", what);
    }
    return f;
}

/* The live child behind the handle at idx, or NULL when it is gone
 * (waited, killed, or dropped with its parent's run). Raises if the value
 * is not a handle, or the child is not the caller's. */
static rt_fiber *child_at(lua_State *L, int idx, rt_fiber *parent, const char *what)
{
    thr *t = luaL_checkudata(L, idx, THREAD_MT);
    if (t->f && t->f->parent != parent)
        luaL_error(L, "%s: argument %d is another coroutine's child (only the one that spawned a "
                      "function may wait on or kill it)", what, idx);
    return t->f;
}

/* Move child k's outcome onto L, after its position when idx > 0: true and
 * its results, or false and its error; then k goes back to the pool (or is
 * dropped after an error). Returns how many values were pushed. */
static int push_outcome(lua_State *L, rt_fiber *k, int idx)
{
    rt_kid_unlink(k);
    if (k->slot && *k->slot == k)
        *k->slot = NULL;
    k->slot = NULL;
    int n = 0;
    int m = k->status == RT_OK ? lua_gettop(k->co) : 0;
    if (!lua_checkstack(L, m + 3)) {
        lua_settop(k->co, 0);
        m = -1;
    }
    if (idx) {
        lua_pushinteger(L, idx);
        n++;
    }
    if (m < 0) {
        lua_pushboolean(L, 0);
        lua_pushliteral(L, "too many results");
        rt_fiber_release(k);
        return n + 2;
    }
    if (k->status == RT_OK) {
        lua_pushboolean(L, 1);
        lua_xmove(k->co, L, m);
        rt_fiber_release(k);
        return n + 1 + m;
    }
    lua_pushboolean(L, 0);
    lua_pushstring(L, k->errmsg ? k->errmsg : (k->err ? k->err : "failed"));
    rt_fiber_discard(k);
    return n + 2;
}

/* The parent's wait is over (one child ended) or abandoned: no child is
 * waited on any more. O(1): the marks of this wait go stale together (it
 * cleared each child's mark, a walk of every child at each wake: 20,000
 * children waited on one by one took 3.4 s of CPU, all in here). */
static void unmark(rt_fiber *parent)
{
    parent->wait_serial++;
}

/* k's position in its parent's current wait, or 0. */
static int waited_at(const rt_fiber *k)
{
    return k->kid_waited && k->kid_wait_serial == k->parent->wait_serial ? k->kid_waited : 0;
}

static void wait_cancel(rt_fiber *parent)
{
    unmark(parent);
}

/* A child's run ended (runtime's done callback; its own children and end
 * hooks are gone already). If its parent waits on it, hand over. */
static void kid_done(void *ud, rt_fiber *k, int status)
{
    (void)ud;
    (void)status; /* (in k->status) */
    rt_fiber *p = k->parent;
    int at = p ? waited_at(k) : 0;
    if (!at || p->state != RT_FIBER_PARKED || p->cancel != wait_cancel)
        return; /* it waits, done, for a wait, a kill or its parent's end */
    int idx = p->wait == &WAIT_INDEX ? at : 0;
    unmark(p);
    int n = push_outcome(p->co, k, idx);
    rt_wake(p, n);
}

/* moonwait.spawn(fn, ...): the child starts at the loop's next pass. */
static int l_spawn(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TFUNCTION);
    rt_fiber *p = caller(L, "moonwait.spawn");
    int nargs = lua_gettop(L) - 1;
    thr *t = lua_newuserdata(L, sizeof *t);
    t->f = NULL;
    luaL_getmetatable(L, THREAD_MT);
    lua_setmetatable(L, -2);
    rt_fiber *k = rt_fiber_spawn(p);
    if (!k)
        return luaL_error(L, "moonwait.spawn: out of memory");
    if (!lua_checkstack(k->co, nargs + 1)) {
        rt_kid_unlink(k);
        rt_fiber_release(k);
        return luaL_error(L, "moonwait.spawn: too many arguments");
    }
    for (int i = 1; i <= nargs + 1; i++)
        lua_pushvalue(L, i);
    lua_xmove(L, k->co, nargs + 1);
    t->f = k;
    k->slot = &t->f;
    rt_fiber_start_later(k, nargs, kid_done, NULL);
    return 1;
}

static int do_wait(lua_State *L, const char *what, const void *mode)
{
    int n = lua_gettop(L);
    if (n == 0)
        return luaL_error(L, "%s: at least one spawned thread expected", what);
    rt_fiber *p = caller(L, what);
    rt_check_yieldable(L, what); /* (raises inside a table.sort comparator...) */
    /* One already done: its outcome now, the first in argument order. */
    int live = 0;
    for (int i = 1; i <= n; i++) {
        rt_fiber *k = child_at(L, i, p, what);
        if (k && k->state == RT_FIBER_DONE)
            return push_outcome(L, k, mode == &WAIT_INDEX ? i : 0);
        live += k != NULL;
    }
    if (!live) {
        lua_pushnil(L);
        lua_pushliteral(L, "already waited or killed");
        return 2;
    }
    unmark(p); /* (a new wait: no mark of an earlier one counts) */
    for (int i = n; i >= 1; i--) { /* (the first position wins a duplicate) */
        rt_fiber *k = child_at(L, i, p, what);
        if (k) {
            k->kid_waited = i;
            k->kid_wait_serial = p->wait_serial;
        }
    }
    lua_settop(L, 0);
    rt_park(p, wait_cancel, (void *)mode);
    return rt_yield(L, p);
}

static int l_wait(lua_State *L)
{
    return do_wait(L, "moonwait.wait", &WAIT_PLAIN);
}

static int l_wait_index(lua_State *L)
{
    return do_wait(L, "moonwait.all", &WAIT_INDEX);
}

/* moonwait.kill(t): true, or nil, err. A child that already finished is
 * dropped with its results unread. */
static int l_kill(lua_State *L)
{
    rt_fiber *p = caller(L, "moonwait.kill");
    rt_fiber *k = child_at(L, 1, p, "moonwait.kill");
    if (!k) {
        lua_pushnil(L);
        lua_pushliteral(L, "already waited or killed");
        return 2;
    }
    *k->slot = NULL;
    k->slot = NULL;
    if (k->state == RT_FIBER_DONE && k->status == RT_OK) {
        rt_kid_unlink(k);
        rt_fiber_release(k);
    } else {
        rt_fiber_discard(k); /* (unlinks it; cancels its wait and its children) */
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int l_gc(lua_State *L)
{
    thr *t = lua_touserdata(L, 1);
    if (t->f) {
        t->f->slot = NULL; /* the child ends with its parent's run */
        t->f = NULL;
    }
    return 0;
}

static int l_tostring(lua_State *L)
{
    thr *t = luaL_checkudata(L, 1, THREAD_MT);
    const char *st = !t->f ? "gone" : t->f->state == RT_FIBER_DONE ? "done" : "running";
    lua_pushfstring(L, "moonwait.thread (%s): %p", st, (void *)t);
    return 1;
}

/* t:status(): "running", "done" (finished, not yet waited) or "gone". */
static int l_status(lua_State *L)
{
    thr *t = luaL_checkudata(L, 1, THREAD_MT);
    lua_pushstring(L, !t->f ? "gone" : t->f->state == RT_FIBER_DONE ? "done" : "running");
    return 1;
}

int mod_thread_open(lua_State *L)
{
    if (luaL_newmetatable(L, THREAD_MT)) {
        lua_pushcfunction(L, l_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, l_tostring);
        lua_setfield(L, -2, "__tostring");
        lua_newtable(L);
        lua_pushcfunction(L, l_status);
        lua_setfield(L, -2, "status");
        lua_setfield(L, -2, "__index");
        lua_pushliteral(L, "moonwait.thread");
        lua_setfield(L, -2, "__metatable");
    }
    lua_pop(L, 1);
    static const luaL_Reg fns[] = {
        { "spawn", l_spawn }, { "wait", l_wait }, { "wait_index", l_wait_index }, { "kill", l_kill },
        { NULL, NULL },
    };
    lua_newtable(L);
    luaL_register(L, NULL, fns);
    return 1;
}
