/*
 * test_runtime.c: the fiber scheduler's lifecycle rules (src/lua/runtime.c)
 * on a real libuv loop, with a tiny parking primitive of its own.
 */
#include "../../src/lua/runtime.h"

#include <lauxlib.h>

#include "test.h"

static int cancels, closed_calls, abandoned_calls, done_calls;

static void on_cancel(rt_fiber *f)
{
    cancels++;
    uv_timer_stop(&f->timer);
}

static void never(uv_timer_t *t)
{
    (void)t;
    FAILF("a parked fiber's timer fired after rt_close");
}

/* park(): waits on the fiber's timer (100 s) with a cancel hook. */
static int l_park(lua_State *L)
{
    rt_fiber *f = rt_check_yieldable(L, "park");
    rt_park(f, on_cancel, NULL);
    uv_timer_start(&f->timer, never, 100000, 0);
    return rt_yield(L, f);
}

/* ready(): parks and is woken at once, so it sits in the ready queue. */
static int l_ready(lua_State *L)
{
    rt_fiber *f = rt_check_yieldable(L, "ready");
    rt_park(f, on_cancel, NULL);
    rt_wake(f, 0);
    return lua_yield(L, 0);
}

static void on_closed(rt *r)
{
    (void)r;
    closed_calls++;
}

static void on_abandoned(void *ud)
{
    (void)ud;
    abandoned_calls++;
}

static void on_done(void *ud, rt_fiber *f, int status)
{
    (void)ud;
    (void)status;
    done_calls++;
    rt_fiber_discard(f);
}

static rt_fiber *start(rt *r, const char *code, rt_fiber **slot)
{
    rt_fiber *f = rt_fiber_get(r);
    ASSERT(f != NULL);
    ASSERT_INT_EQ(luaL_loadstring(f->co, code), 0);
    f->slot = slot;
    *slot = f;
    f->abandoned = on_abandoned;
    rt_fiber_start(f, 0, on_done, NULL);
    return f;
}

/* Fibers parked on a timer or waiting in the ready queue when the runtime
 * closes: the parked ones' cancel hooks run, their owners hear of it, their slots are
 * cleared, their timers close, and on_closed comes, leaving no handle. */
static void test_close_abandons_parked_fibers(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    rt r;
    ASSERT_INT_EQ(rt_init(&r, &loop), 0);
    lua_register(r.L, "park", l_park);
    lua_register(r.L, "ready", l_ready);
    rt_fiber *a = NULL, *b = NULL, *c = NULL;
    start(&r, "park()", &a);
    start(&r, "park()", &b);
    start(&r, "ready()", &c);
    ASSERT(a && b && c);
    ASSERT_INT_EQ(a->state, RT_FIBER_PARKED);
    ASSERT_INT_EQ(c->state, RT_FIBER_READY);
    /* one more that finished: back in the pool */
    rt_fiber *d = NULL;
    start(&r, "return 1", &d);
    ASSERT_INT_EQ(done_calls, 1);
    rt_close(&r, on_closed);
    ASSERT(a == NULL && b == NULL && c == NULL);
    ASSERT_INT_EQ(cancels, 2); /* the ready one waits on nothing */
    ASSERT_INT_EQ(abandoned_calls, 3);
    uv_run(&loop, UV_RUN_DEFAULT);
    ASSERT_INT_EQ(closed_calls, 1);
    ASSERT_UINT_EQ(r.live, 0);
    ASSERT_INT_EQ(uv_loop_close(&loop), 0);
}

/* The common case still works: nothing waits, on_closed comes. */
static void test_close_idle_runtime(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    rt r;
    ASSERT_INT_EQ(rt_init(&r, &loop), 0);
    rt_close(&r, on_closed);
    uv_run(&loop, UV_RUN_DEFAULT);
    ASSERT_INT_EQ(closed_calls, 1);
    ASSERT_INT_EQ(uv_loop_close(&loop), 0);
}

TEST_MAIN("runtime", T(test_close_abandons_parked_fibers), T(test_close_idle_runtime))
