/*
 * runtime.c: the Lua VM and its fiber scheduler (contract in runtime.h).
 */
#include "runtime.h"

#include "../util/list.h"
#include "guard.h"
#include "runtime_int.h"

#include <lauxlib.h>
#include <lualib.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char RT_KEY = 'r'; /* registry key (its address) for the rt */

/* Idle fibers the pool may keep even when fewer are in use. */
#define RT_POOL_SPARE 256

/* The rt whose fiber this thread is resuming (NULL outside resume): lets
 * rt_current skip rt_of's registry lookup (~230 instructions) on every
 * wait. Per thread, as each thread runs its own VMs; saved and restored
 * around lua_resume, so a resume inside another leaves it right. */
static _Thread_local rt *resuming;

rt *rt_of(lua_State *L)
{
    lua_pushlightuserdata(L, (void *)&RT_KEY);
    lua_rawget(L, LUA_REGISTRYINDEX);
    rt *r = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return r;
}

double rt_wall_secs(const rt *r, uint64_t loop_ms)
{
    return r->epoch0 + (double)loop_ms / 1000.0;
}

double rt_now(const rt *r)
{
    return rt_wall_secs(r, uv_now(r->loop));
}

/* ---- ready queue ---------------------------------------------------------- */

static void resume(rt_fiber *f, int nargs);
static void ready_remove(rt *r, rt_fiber *f);

static void on_check(uv_check_t *h)
{
    rt *r = h->data;
    /* Run only the fibers queued before this pass; fibers woken while it
     * runs wait for the next pass, after poll has seen I/O again. Pop one
     * at a time so that a fiber discarded meanwhile (ready_remove) is never
     * resumed. */
    uint64_t pass = ++r->pass;
    while (r->ready_head && r->ready_head->ready_pass < pass) {
        rt_fiber *f = r->ready_head;
        ready_remove(r, f);
        resume(f, f->nresume);
    }
    if (!r->ready_head)
        uv_idle_stop(&r->idle);
}

static void on_idle(uv_idle_t *h)
{
    (void)h; /* only its being active matters: poll does not block */
}

void rt_wake(rt_fiber *f, int nres)
{
    rt *r = f->rt;
    f->state = RT_FIBER_READY;
    f->nresume = nres;
    f->cancel = NULL;
    f->wait = NULL;
    f->ready_pass = r->pass;
    MW_QUEUE_APPEND(r->ready_head, r->ready_tail, f, ready_prev, ready_next);
    uv_idle_start(&r->idle, on_idle);
}

static void ready_remove(rt *r, rt_fiber *f)
{
    MW_QUEUE_UNLINK(r->ready_head, r->ready_tail, f, ready_prev, ready_next);
}

void rt_wake_held(rt_fiber *f, int nres, void (*held)(rt_fiber *f, int resumed), void *wait)
{
    rt_wake(f, nres);
    f->held = held;
    f->wait = wait;
}

/* A ready fiber leaves the queue: to run (resumed = 1), or discarded
 * (0). Ends a held wait, once. */
static void end_held(rt_fiber *f, int resumed)
{
    void (*fn)(rt_fiber *, int) = f->held;
    if (!fn)
        return;
    f->held = NULL;
    fn(f, resumed);
    f->wait = NULL;
}

/* ---- fibers ---------------------------------------------------------------- */

rt_fiber *rt_fiber_get(rt *r)
{
    if (r->pool_len)
        return r->pool[--r->pool_len];
    rt_fiber *f = calloc(1, sizeof *f);
    if (!f || rt_timers_reserve(&r->timers, r->live + 1) != 0) {
        free(f);
        return NULL;
    }
    f->rt = r;
    f->co = lua_newthread(r->L);
    f->co_ref = luaL_ref(r->L, LUA_REGISTRYINDEX); /* pops the thread */
    rt_timer_init(&r->timers, &f->timer, f);
    MW_LIST_PUSH(r->all, f, all_prev, all_next);
    r->live++;
    return f;
}

static void timers_closed(uv_handle_t *h);

static void fiber_free_cb(rt_timer *t)
{
    rt_fiber *f = t->data;
    rt *r = f->rt;
    MW_LIST_UNLINK(r->all, f, all_prev, all_next);
    free(f->err);
    free(f->errmsg);
    free(f);
    r->live--;
    r->dying--;
    /* The timers' driver closes last: it frees the fibers destroyed after
     * rt_close. */
    if (r->closing && r->live == 0)
        rt_timers_close(&r->timers, timers_closed);
}

/* The run's attachment goes with it. After rt_close the owner frees
 * attachments itself (the VM they refer to is gone). */
static void drop_attach(rt_fiber *f)
{
    void (*fn)(rt_fiber *) = f->attach_free;
    f->attach_free = NULL;
    if (fn && f->attach && !f->rt->closing)
        fn(f);
    f->attach = NULL;
}

/* Drop the thread and free the struct, a loop iteration later (on its
 * timer: whoever discarded it, e.g. rt_close's walk of r->all or a parent
 * cancelling its children, may still hold the pointer until then). */
static void fiber_destroy(rt_fiber *f)
{
    rt *r = f->rt;
    drop_attach(f);
    if (f->co_ref != LUA_NOREF && r->L) {
        luaL_unref(r->L, LUA_REGISTRYINDEX, f->co_ref);
        f->co_ref = LUA_NOREF;
    }
    f->co = NULL;
    r->dying++;
    rt_timer_start(&f->timer, fiber_free_cb, 0);
}

void rt_overload(rt_fiber *f)
{
    rt_root(f)->overloads++;
}

void rt_fiber_release(rt_fiber *f)
{
    rt *r = f->rt;
    drop_attach(f);
    lua_settop(f->co, 0);
    /* The thread's globals back to the VM's: a record's setfenv(0, t) set
     * them for the Lua thread, which the pool hands to the next record
     * (its loadstring/load chunks and getfenv(0) saw the first one's t). */
    lua_pushvalue(r->L, LUA_GLOBALSINDEX);
    lua_xmove(r->L, f->co, 1);
    lua_replace(f->co, LUA_GLOBALSINDEX);
    f->state = RT_FIBER_IDLE;
    f->task = NULL;
    f->seq = 0;
    f->deadline_ms = 0;
    f->done = NULL;
    f->abandoned = NULL;
    f->slot = NULL;
    rt_kid_unlink(f);
    f->status = 0;
    f->ended = 0;
    f->overloads = 0;
    free(f->err);
    free(f->errmsg);
    f->err = f->errmsg = NULL;
    if (r->closing) {
        fiber_destroy(f);
        return;
    }
    /* The pool keeps at most twice as many idle fibers as are in use (f
     * counted), or RT_POOL_SPARE. (Twice: a timer pass ending half of
     * 10,000 sleeping records at once, refilled right after, made and
     * dropped a Lua thread, a registry ref and a struct for one record in
     * four with "as many as are in use".) Children made the number of fibers a script's to
     * choose: one record that spawned 100,000 children pinned 100,000 Lua
     * threads, registry refs and timers (100 MB) in the pool for the life
     * of the VM. Trimmed as fibers come back, the pool follows the load
     * down again. */
    size_t busy = r->live - r->pool_len - r->dying;
    size_t keep = 2 * busy > RT_POOL_SPARE ? 2 * busy : RT_POOL_SPARE;
    while (r->pool_len && r->pool_len >= keep)
        fiber_destroy(r->pool[--r->pool_len]);
    if (r->pool_len == r->pool_cap) {
        size_t cap = r->pool_cap ? r->pool_cap * 2 : 64;
        rt_fiber **p = realloc(r->pool, cap * sizeof *p);
        if (!p) {
            fiber_destroy(f);
            return;
        }
        r->pool = p;
        r->pool_cap = cap;
    }
    r->pool[r->pool_len++] = f;
}

void rt_fiber_discard(rt_fiber *f)
{
    /* Discarded before its run ended: the owner hears of it once. */
    if (f->done && f->abandoned)
        f->abandoned(f->done_ud);
    if (f->state == RT_FIBER_PARKED && f->cancel)
        f->cancel(f);
    if (f->state == RT_FIBER_READY) {
        ready_remove(f->rt, f);
        end_held(f, 0); /* its results never reach the script */
    }
    rt_timer_stop(&f->timer);
    f->cancel = NULL;
    f->wait = NULL;
    f->done = NULL;
    f->state = RT_FIBER_DONE;
    rt_end_run(f, RT_END_ABANDONED); /* (a no-op when the run had ended) */
    rt_kid_unlink(f);
    fiber_destroy(f);
}

void rt_fiber_start(rt_fiber *f, int nargs, rt_done_fn done, void *ud)
{
    f->done = done;
    f->done_ud = ud;
    resume(f, nargs);
}

int rt_untraced(lua_State *L, const char *msg)
{
    lua_getfield(L, LUA_REGISTRYINDEX, "moonwait.untraced");
    const char *mark = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    int same = mark && msg && strcmp(mark, msg) == 0;
    lua_pop(L, 1);
    return same;
}

void rt_push_traceback(lua_State *L, lua_State *co, const char *msg)
{
    if (rt_untraced(L, msg))
        lua_pushstring(L, msg);
    else
        luaL_traceback(L, co, msg, 0);
}

char *rt_strdup_value(lua_State *L, int idx)
{
    const char *s;
    char buf[96];
    switch (lua_type(L, idx)) {
    case LUA_TSTRING:
    case LUA_TNUMBER:
        s = lua_tostring(L, idx);
        break;
    case LUA_TNIL:
        s = "nil";
        break;
    case LUA_TBOOLEAN:
        s = lua_toboolean(L, idx) ? "true" : "false";
        break;
    default:
        snprintf(buf, sizeof buf, "(error object is a %s value)", luaL_typename(L, idx));
        s = buf;
    }
    return strdup(s ? s : "?");
}

static void resume(rt_fiber *f, int nargs)
{
    rt *r = f->rt;
    end_held(f, 1);
    rt_fiber *outer = r->running;
    rt *outer_rt = resuming;
    r->running = f;
    resuming = r;
    f->state = RT_FIBER_RUNNING;
    guard_mark gm;
    guard_enter(r->L, &gm);
    int st = lua_resume(f->co, nargs);
    resuming = outer_rt;
    int over_budget = guard_leave(&gm);
    if (over_budget)
        uv_update_time(r->loop); /* the loop's clock stood still meanwhile */
    r->running = outer;
    if (st == LUA_YIELD && f->state == RT_FIBER_PARKED)
        return; /* waiting on a request; rt_wake brings it back */
    if (st == LUA_YIELD && f->state == RT_FIBER_READY)
        return; /* parked and woken before yielding (e.g. sleep(0)) */
    int status;
    if (st == 0) {
        status = RT_OK;
    } else if (st == LUA_YIELD) {
        status = RT_ROGUE_YIELD;
        f->errmsg = strdup("coroutine.yield() called in a host coroutine");
        f->err = strdup("coroutine.yield() called in a host coroutine: use the moonwait "
                        "I/O functions (moonwait.time.sleep, ...) to wait, or wrap "
                        "your own coroutines with coroutine.wrap/resume");
    } else {
        status = RT_ERROR;
        /* Out of budget: the error is the budget's, whatever the script
         * caught and raised instead; the traceback shows where it ran. */
        char *msg = rt_strdup_value(f->co, -1);
        if (over_budget && !strstr(msg, guard_message())) {
            free(msg);
            msg = strdup(guard_message());
        }
        if (st == LUA_ERRMEM) {
            f->err = strdup(msg);
        } else {
            rt_push_traceback(r->L, f->co, msg);
            f->err = strdup(lua_tostring(r->L, -1));
            lua_pop(r->L, 1);
        }
        f->errmsg = msg;
    }
    f->state = RT_FIBER_DONE;
    f->status = status;
    rt_end_run(f, status == RT_OK ? RT_END_RETURNED : RT_END_RAISED);
    rt_done_fn done = f->done;
    f->done = NULL;
    f->abandoned = NULL;
    if (done)
        done(f->done_ud, f, status);
    else if (status != RT_OK)
        rt_fiber_discard(f);
    else
        rt_fiber_release(f);
    /* (f may be freed or pooled from here on) */
}

/* ---- parking --------------------------------------------------------------- */

rt_fiber *rt_current(lua_State *L)
{
    /* L is a coroutine of one VM: if it is the running fiber of the rt
     * being resumed, that rt is L's. */
    rt *r = resuming;
    if (r && r->running && r->running->co == L)
        return r->running;
    r = rt_of(L);
    if (r && r->running && r->running->co == L)
        return r->running;
    return NULL;
}

rt_fiber *rt_check_yieldable(lua_State *L, const char *what)
{
    rt_fiber *f = rt_current(L);
    if (!f) {
        rt *r = rt_of(L);
        if (r && r->running)
            luaL_error(L, "%s cannot wait inside a coroutine of your own (coroutine.wrap/"
                          "create): call it directly from async_invoke's coroutine", what);
        else
            luaL_error(L, "%s can only wait inside async_invoke, batch_invoke, open, close, a "
                          "retry predicate or a function they spawned (not at script load time, "
                          "in on_timeout or in a ctx.defer function)", what);
    }
    /* The fiber's own coroutine, but called back from a C function (a
     * table.sort comparator, a string.gsub function, require's chunk): its
     * lua_yield would raise "attempt to yield across C-call boundary" after
     * the primitive parked the fiber and started its request, leaving a
     * running fiber queued or awaited by a callback; resumed when it had
     * parked elsewhere or gone back to the pool, it crashed the process
     * (lua_resume on a finished thread). Refuse before anything starts. */
    if (!lua_isyieldable(L))
        luaL_error(L, "%s cannot wait inside a function called from C (a table.sort comparator, a "
                      "string.gsub function, require): wait before or after that call", what);
    return f;
}

int rt_yield(lua_State *L, rt_fiber *f)
{
    if (f->state == RT_FIBER_READY) {
        /* Woken before yielding: its results are on top of L (== f->co). */
        ready_remove(f->rt, f);
        f->state = RT_FIBER_RUNNING;
        end_held(f, 1);
        return f->nresume;
    }
    return lua_yield(L, 0);
}

void rt_unpark(rt_fiber *f)
{
    f->state = RT_FIBER_RUNNING;
    f->cancel = NULL;
    f->wait = NULL;
}

uint64_t rt_wait_ms(const rt_fiber *f, uint64_t timeout_ms)
{
    if (!f->deadline_ms)
        return timeout_ms;
    uint64_t now = uv_now(f->rt->loop);
    uint64_t left = f->deadline_ms > now ? f->deadline_ms - now : 0;
    if (timeout_ms && timeout_ms <= left)
        return timeout_ms;
    return left + 1;
}

int rt_lua_ms(lua_State *L, int idx, uint64_t *ms)
{
    lua_Number n = lua_tonumber(L, idx);
    if (!(n >= 0)) /* NaN too */
        return -1;
    *ms = n >= 9007199254740992.0 ? 0 : (uint64_t)n;
    return 0;
}

void rt_park(rt_fiber *f, rt_cancel_fn cancel, void *wait)
{
    f->state = RT_FIBER_PARKED;
    f->cancel = cancel;
    f->wait = wait;
}

/* ---- lifecycle ------------------------------------------------------------- */

int rt_init(rt *r, uv_loop_t *loop)
{
    memset(r, 0, sizeof *r);
    r->loop = loop;
    r->L = luaL_newstate();
    if (!r->L)
        return -12; /* ENOMEM */
    luaL_openlibs(r->L);
    lua_pushlightuserdata(r->L, (void *)&RT_KEY);
    lua_pushlightuserdata(r->L, r);
    lua_rawset(r->L, LUA_REGISTRYINDEX);
    uv_timeval64_t tv;
    uv_gettimeofday(&tv);
    r->epoch0 = (double)tv.tv_sec + (double)tv.tv_usec / 1e6 - (double)uv_now(loop) / 1000.0;
    uv_check_init(loop, &r->check);
    rt_timers_init(&r->timers, loop);
    uv_idle_init(loop, &r->idle);
    r->check.data = r->idle.data = r;
    guard_vm_add(r->L);
    uv_check_start(&r->check, on_check);
    /* The check handle must not keep the loop alive on its own. */
    uv_unref((uv_handle_t *)&r->check);
    r->handles_open = 3; /* check, idle, timers */
    return 0;
}

static void rt_handle_closed(rt *r)
{
    r->handles_open--;
    if (r->live == 0 && r->handles_open == 0) {
        rt_timers_free(&r->timers);
        if (r->on_closed)
            r->on_closed(r->closed_ud);
    }
}

static void handle_closed(uv_handle_t *h)
{
    rt_handle_closed(h->data);
}

static void timers_closed(uv_handle_t *h)
{
    rt_timers *ts = h->data;
    rt_handle_closed((rt *)((char *)ts - offsetof(rt, timers)));
}

void rt_close(rt *r, void (*on_closed)(void *ud), void *ud)
{
    /* Abandon whatever still waits, while the VM is open (a cancel hook may
     * drop Lua refs): nothing may be resumed after close, and each wait's
     * timer and requests must go, or on_closed would never come. */
    /* One pass: a discarded fiber stays on the list until its timer frees
     * it (a loop iteration later), so `next` stays valid whatever the
     * owners do. */
    for (rt_fiber *f = r->all, *next; f; f = next) {
        next = f->all_next;
        if (!f->co || (f->state != RT_FIBER_PARKED && f->state != RT_FIBER_READY))
            continue;
        if (f->slot && *f->slot == f)
            *f->slot = NULL;
        f->slot = NULL;
        rt_fiber_discard(f); /* (its owner hears of it through `abandoned`) */
    }
    r->closing = 1;
    r->on_closed = on_closed;
    r->closed_ud = ud;
    for (size_t i = 0; i < r->pool_len; i++)
        fiber_destroy(r->pool[i]);
    free(r->pool);
    r->pool = NULL;
    r->pool_len = r->pool_cap = 0;
    uv_close((uv_handle_t *)&r->check, handle_closed);
    uv_close((uv_handle_t *)&r->idle, handle_closed);
    if (r->live == 0) /* (else the last fiber freed closes it) */
        rt_timers_close(&r->timers, timers_closed);
    /* Fibers still running or done (their owner holds them) own their
     * threads through refs; closing the VM frees every Lua object at once,
     * so refs need not be dropped one by one after this point. */
    guard_vm_remove(r->L);
    lua_close(r->L);
    r->L = NULL;
}
