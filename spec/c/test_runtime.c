/*
 * test_runtime.c: the fiber scheduler's lifecycle rules (src/lua/runtime.c)
 * on a real libuv loop, with tiny parking primitives of its own: every
 * fiber ends exactly once (done, or abandoned), its registry ref is
 * released when it is dropped, a woken fiber gets its results and a
 * discarded one is never resumed, finished fibers are pooled and reused,
 * and rt_close leaves no handle behind.
 */
#include "../../src/lua/runtime.h"
#include "../../src/lua/modules.h"

#include <lauxlib.h>
#include <pthread.h>
#include <stdint.h>
#include <time.h>

#include "test.h"

static int cancels, closed_calls, abandoned_calls, done_calls;

static void on_cancel(rt_fiber *f)
{
    cancels++;
    rt_timer_stop(&f->timer);
}

static void never(rt_timer *t)
{
    (void)t;
    FAILF("a parked fiber's timer fired after rt_close");
}

/* park(): waits on the fiber's timer (100 s) with a cancel hook. */
static int l_park(lua_State *L)
{
    rt_fiber *f = rt_check_yieldable(L, "park");
    rt_park(f, on_cancel, NULL);
    rt_timer_start(&f->timer, never, 100000);
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

static void on_closed(void *ud)
{
    (void)ud;
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
    rt_close(&r, on_closed, &r);
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
    rt_close(&r, on_closed, &r);
    uv_run(&loop, UV_RUN_DEFAULT);
    ASSERT_INT_EQ(closed_calls, 1);
    ASSERT_INT_EQ(uv_loop_close(&loop), 0);
}

/* ---- one owner per run: what it hears ---------------------------------------- */

typedef struct owner {
    int done, abandoned, attach_freed, status;
    lua_Integer result;     /* the first result of an RT_OK run */
    rt_fiber *slot;
} owner;

static void own_abandoned(void *ud)
{
    ((owner *)ud)->abandoned++;
}

static void own_done(void *ud, rt_fiber *f, int status)
{
    owner *o = ud;
    o->done++;
    o->status = status;
    if (status == RT_OK) {
        o->result = lua_tointeger(f->co, 1);
        rt_fiber_release(f);
    } else {
        rt_fiber_discard(f);
    }
}

static void own_attach_free(rt_fiber *f)
{
    ((owner *)f->attach)->attach_freed++;
}

/* Start `code` in a fiber owned by o (o is also its attachment). */
static rt_fiber *run(rt *r, const char *code, owner *o)
{
    rt_fiber *f = rt_fiber_get(r);
    ASSERT(f != NULL);
    ASSERT_INT_EQ(luaL_loadstring(f->co, code), 0);
    f->slot = &o->slot;
    o->slot = f;
    f->abandoned = own_abandoned;
    f->attach = o;
    f->attach_free = own_attach_free;
    rt_fiber_start(f, 0, own_done, o);
    return f;
}

/* sleep_ms(ms, v) -> v: waits on the fiber's timer, woken by its callback. */
static void sleep_cb(rt_timer *t)
{
    rt_fiber *f = t->data;
    lua_pushinteger(f->co, (lua_Integer)(intptr_t)f->wait);
    rt_wake(f, 1);
}

static int l_sleep_ms(lua_State *L)
{
    rt_fiber *f = rt_check_yieldable(L, "sleep_ms");
    lua_Integer ms = luaL_checkinteger(L, 1), v = luaL_checkinteger(L, 2);
    rt_park(f, on_cancel, (void *)(intptr_t)v);
    rt_timer_start(&f->timer, sleep_cb, (uint64_t)ms);
    return rt_yield(L, f);
}

/* ready_now(v) -> v: the request completes during the call, so rt_yield
 * returns its results at once (no yield). */
static int l_ready_now(lua_State *L)
{
    rt_fiber *f = rt_check_yieldable(L, "ready_now");
    lua_Integer v = luaL_checkinteger(L, 1);
    rt_park(f, on_cancel, NULL);
    lua_pushinteger(L, v);
    rt_wake(f, 1);
    return rt_yield(L, f);
}

/* pass() -> the ready queue's drains so far. */
static int l_pass(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)rt_of(L)->pass);
    return 1;
}

static void open_runtime(uv_loop_t *loop, rt *r)
{
    uv_loop_init(loop);
    ASSERT_INT_EQ(rt_init(r, loop), 0);
    lua_register(r->L, "park", l_park);
    lua_register(r->L, "ready", l_ready);
    lua_register(r->L, "sleep_ms", l_sleep_ms);
    lua_register(r->L, "ready_now", l_ready_now);
    lua_register(r->L, "pass", l_pass);
    /* spawn, wait, wait_index, kill: the children's Lua API (mod_thread.c) */
    mod_thread_open(r->L);
    static const char *const fns[] = { "spawn", "wait", "wait_index", "kill" };
    for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
        lua_getfield(r->L, -1, fns[i]);
        lua_setglobal(r->L, fns[i]);
    }
    lua_pop(r->L, 1);
}

static void close_runtime(uv_loop_t *loop, rt *r)
{
    rt_close(r, on_closed, r);
    uv_run(loop, UV_RUN_DEFAULT);
    ASSERT_INT_EQ(closed_calls, 1);
    ASSERT_UINT_EQ(r->live, 0);
    ASSERT_INT_EQ(uv_loop_close(loop), 0);
}

/* Registry refs in use: integer keys whose value is not a number
 * (luaL_unref leaves the free list's next index, a number, in a slot). */
static int live_refs(lua_State *L)
{
    int n = 0;
    lua_pushnil(L);
    while (lua_next(L, LUA_REGISTRYINDEX)) {
        if (lua_type(L, -2) == LUA_TNUMBER && lua_tonumber(L, -2) >= 1 && lua_type(L, -1) != LUA_TNUMBER)
            n++;
        lua_pop(L, 1);
    }
    return n;
}

/* Runs that return, raise, yield outside a primitive, wait and are woken,
 * complete during the call, or wait in the ready queue, several rounds
 * at once: each owner hears exactly once (done, never abandoned), each
 * attachment is freed once, the results are the ones woken with, and the
 * dropped fibers' refs are released (the pooled ones keep theirs). */
static void test_every_fiber_ends_exactly_once(void)
{
    uv_loop_t loop;
    rt r;
    open_runtime(&loop, &r);
    int base = live_refs(r.L);
    static const struct {
        const char *code;
        int status;
        lua_Integer result;
    } runs[] = {
        { "return 1", RT_OK, 1 },
        { "error('boom')", RT_ERROR, 0 },
        { "coroutine.yield()", RT_ROGUE_YIELD, 0 },
        { "return sleep_ms(1, 5) + 1", RT_OK, 6 },
        { "return ready_now(7)", RT_OK, 7 },
        { "ready(); ready(); return 3", RT_OK, 3 },
        { "return coroutine.wrap(function() return sleep_ms(1, 1) end)()", RT_ERROR, 0 },
        { "sleep_ms(2, 0); error('late')", RT_ERROR, 0 },
    };
    enum { N = sizeof runs / sizeof runs[0], ROUNDS = 5 };
    owner o[ROUNDS][N];
    memset(o, 0, sizeof o);
    for (int k = 0; k < ROUNDS; k++)
        for (int i = 0; i < N; i++)
            run(&r, runs[i].code, &o[k][i]);
    uv_run(&loop, UV_RUN_DEFAULT);
    for (int k = 0; k < ROUNDS; k++) {
        for (int i = 0; i < N; i++) {
            ASSERT_INT_EQ(o[k][i].done, 1);
            ASSERT_INT_EQ(o[k][i].abandoned, 0);
            ASSERT_INT_EQ(o[k][i].attach_freed, 1);
            ASSERT_INT_EQ(o[k][i].status, runs[i].status);
            if (runs[i].status == RT_OK)
                ASSERT_INT_EQ(o[k][i].result, runs[i].result);
        }
    }
    ASSERT_UINT_EQ(r.dying, 0);
    ASSERT_UINT_EQ(r.live, r.pool_len);
    ASSERT_INT_EQ(live_refs(r.L), base + (int)r.pool_len);
    ASSERT(r.ready_head == NULL && r.ready_tail == NULL);
    close_runtime(&loop, &r);
}

/* A request that completes during the call returns without a yield: the
 * run ends inside rt_fiber_start. One that goes through the ready queue
 * does not. */
static void test_wake_during_the_call_returns_at_once(void)
{
    uv_loop_t loop;
    rt r;
    open_runtime(&loop, &r);
    owner now = { 0 }, queued = { 0 };
    run(&r, "return ready_now(4) + ready_now(5)", &now);
    ASSERT_INT_EQ(now.done, 1);
    ASSERT_INT_EQ(now.result, 9);
    rt_fiber *f = run(&r, "ready(); return 2", &queued);
    ASSERT_INT_EQ(queued.done, 0);
    ASSERT_INT_EQ(f->state, RT_FIBER_READY);
    uv_run(&loop, UV_RUN_DEFAULT);
    ASSERT_INT_EQ(queued.done, 1);
    ASSERT_INT_EQ(queued.result, 2);
    ASSERT_INT_EQ(cancels, 0);
    close_runtime(&loop, &r);
}

/* A parked fiber discarded: its cancel hook runs once, its owner hears of
 * it once (abandoned, not done), its attachment and thread ref go, and it
 * is never resumed (its wait's timer was stopped). */
static void test_discard_parked_cancels_once_and_never_resumes(void)
{
    uv_loop_t loop;
    rt r;
    open_runtime(&loop, &r);
    int base = live_refs(r.L);
    owner o = { 0 };
    rt_fiber *f = run(&r, "sleep_ms(1, 0); resumed = true", &o);
    ASSERT_INT_EQ(f->state, RT_FIBER_PARKED);
    ASSERT_INT_EQ(live_refs(r.L), base + 1);
    rt_fiber_discard(f);
    ASSERT_INT_EQ(cancels, 1);
    ASSERT_INT_EQ(o.abandoned, 1);
    ASSERT_INT_EQ(o.done, 0);
    ASSERT_INT_EQ(o.attach_freed, 1);
    ASSERT_INT_EQ(live_refs(r.L), base);
    uv_run(&loop, UV_RUN_DEFAULT);
    lua_getglobal(r.L, "resumed");
    ASSERT(lua_isnil(r.L, -1));
    lua_pop(r.L, 1);
    ASSERT_INT_EQ(o.done, 0);
    ASSERT_INT_EQ(o.abandoned, 1);
    ASSERT_UINT_EQ(r.live, 0);
    close_runtime(&loop, &r);
}

/* A woken fiber discarded while it waits in the ready queue: it waits on
 * nothing (no cancel), leaves the queue and is never resumed. */
static void test_discard_ready_fiber_is_never_resumed(void)
{
    uv_loop_t loop;
    rt r;
    open_runtime(&loop, &r);
    owner a = { 0 }, b = { 0 }, c = { 0 };
    run(&r, "ready(); a = true", &a);
    rt_fiber *fb = run(&r, "ready(); b = true", &b);
    run(&r, "ready(); c = true", &c);
    ASSERT_INT_EQ(fb->state, RT_FIBER_READY);
    rt_fiber_discard(fb); /* the middle of the queue */
    ASSERT_INT_EQ(cancels, 0);
    ASSERT_INT_EQ(b.abandoned, 1);
    uv_run(&loop, UV_RUN_DEFAULT);
    lua_getglobal(r.L, "a");
    lua_getglobal(r.L, "b");
    lua_getglobal(r.L, "c");
    ASSERT(lua_toboolean(r.L, -3) && lua_isnil(r.L, -2) && lua_toboolean(r.L, -1));
    lua_pop(r.L, 3);
    ASSERT_INT_EQ(a.done + b.done + c.done, 2);
    ASSERT_INT_EQ(a.abandoned + b.abandoned + c.abandoned, 1);
    close_runtime(&loop, &r);
}

/* A pass of the ready queue runs only the fibers queued before it: a
 * fiber that wakes itself again waits for the next pass (after poll), so
 * a sleep(0) loop cannot starve I/O. */
static void test_ready_pass_runs_only_fibers_queued_before_it(void)
{
    uv_loop_t loop;
    rt r;
    open_runtime(&loop, &r);
    owner o = { 0 };
    run(&r, "local a = pass(); ready(); local b = pass(); ready(); local c = pass() "
            "return (b - a) * 10 + (c - b)", &o);
    uv_run(&loop, UV_RUN_DEFAULT);
    ASSERT_INT_EQ(o.done, 1);
    ASSERT_INT_EQ(o.result, 11);
    close_runtime(&loop, &r);
}

/* A fiber that returned goes back to the pool, clean, and is the next one
 * handed out (same struct, same thread, same ref); one that raised is
 * dropped. Many runs in a row need one fiber. */
static void test_pool_reuses_finished_fibers(void)
{
    uv_loop_t loop;
    rt r;
    open_runtime(&loop, &r);
    int base = live_refs(r.L);
    owner a = { 0 };
    rt_fiber *f = run(&r, "return 1", &a);
    ASSERT_UINT_EQ(r.pool_len, 1);
    lua_State *co = f->co;
    int ref = f->co_ref;
    rt_fiber *g = rt_fiber_get(&r);
    ASSERT(g == f && g->co == co && g->co_ref == ref);
    ASSERT_INT_EQ(g->state, RT_FIBER_IDLE);
    ASSERT_INT_EQ(lua_gettop(g->co), 0);
    ASSERT(g->task == NULL && g->slot == NULL && g->attach == NULL && g->done == NULL && g->abandoned == NULL);
    rt_fiber_release(g);
    ASSERT_UINT_EQ(r.pool_len, 1);
    for (int i = 0; i < 100; i++) {
        owner o = { 0 };
        ASSERT(run(&r, "return 2", &o) == f);
        ASSERT_INT_EQ(o.result, 2);
    }
    ASSERT_UINT_EQ(r.live, 1);
    owner b = { 0 };
    ASSERT(run(&r, "error('x')", &b) == f);
    ASSERT_UINT_EQ(r.pool_len, 0);
    ASSERT_INT_EQ(live_refs(r.L), base);
    uv_run(&loop, UV_RUN_DEFAULT);
    ASSERT_UINT_EQ(r.live, 0);
    owner c = { 0 };
    ASSERT(run(&r, "return 3", &c) != NULL);
    ASSERT_INT_EQ(c.result, 3);
    ASSERT_INT_EQ(live_refs(r.L), base + 1);
    close_runtime(&loop, &r);
}

/* rt_close abandons a parked fiber's run once: its attachment freed
 * once, its owner told once, its slot cleared. */
static void test_close_frees_attachments_once(void)
{
    uv_loop_t loop;
    rt r;
    open_runtime(&loop, &r);
    owner o = { 0 };
    run(&r, "park()", &o);
    rt_close(&r, on_closed, &r);
    ASSERT_INT_EQ(o.attach_freed, 1);
    ASSERT_INT_EQ(o.abandoned, 1);
    ASSERT_INT_EQ(o.done, 0);
    ASSERT(o.slot == NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    ASSERT_INT_EQ(closed_calls, 1);
    ASSERT_INT_EQ(o.attach_freed, 1);
    ASSERT_INT_EQ(uv_loop_close(&loop), 0);
}

/* A wait is bounded by the record's deadline, one ms past it, so the
 * record's own timeout fires first. */
static void test_wait_ms_is_bounded_by_the_deadline(void)
{
    uv_loop_t loop;
    rt r;
    open_runtime(&loop, &r);
    rt_fiber *f = rt_fiber_get(&r);
    uint64_t now = uv_now(&loop);
    f->deadline_ms = 0;
    ASSERT_UINT_EQ(rt_wait_ms(f, 0), 0);
    ASSERT_UINT_EQ(rt_wait_ms(f, 70), 70);
    f->deadline_ms = now + 100;
    ASSERT_UINT_EQ(rt_wait_ms(f, 0), 101);
    ASSERT_UINT_EQ(rt_wait_ms(f, 50), 50);
    ASSERT_UINT_EQ(rt_wait_ms(f, 100), 100);
    ASSERT_UINT_EQ(rt_wait_ms(f, 200), 101);
    f->deadline_ms = now; /* due */
    ASSERT_UINT_EQ(rt_wait_ms(f, 50), 1);
    f->deadline_ms = 0;
    rt_fiber_release(f);
    close_runtime(&loop, &r);
}


/* ---- children and end hooks -------------------------------------------------- */

typedef struct tracer {
    rt_hook h;
    char *log;      /* shared trace: one letter per hook that ran, then its `how` */
    char tag;
    int runs;
} tracer;

static char trace[64];

static void trace_hook(rt_hook *h, rt_fiber *f, rt_end how)
{
    (void)f;
    tracer *t = (tracer *)h;
    t->runs++;
    size_t n = strlen(trace);
    trace[n] = t->tag;
    trace[n + 1] = (char)('0' + how);
    trace[n + 2] = 0;
    ASSERT(rt_current(f->rt->L) == NULL); /* nothing may wait in a hook */
}

/* l_hook(tag): an end hook on the running fiber, traced as tag + how. */
static tracer tracers[8];
static int ntracers;

static int l_hook(lua_State *L)
{
    rt_fiber *f = rt_check_yieldable(L, "hook");
    tracer *t = &tracers[ntracers++];
    memset(t, 0, sizeof *t);
    t->tag = *luaL_checkstring(L, 1);
    t->h.fn = trace_hook;
    rt_hook_add(f, &t->h);
    return 0;
}

static void reset_trace(rt *r)
{
    trace[0] = 0;
    ntracers = 0;
    lua_register(r->L, "hook", l_hook);
}

/* A parent discarded (its record timed out) while two children and a
 * grandchild wait: every child's wait is cancelled once, the children's
 * hooks run before the parent's, each once, all with "abandoned"; nothing
 * is resumed and every thread ref is released. */
static void test_children_end_with_a_discarded_parent(void)
{
    uv_loop_t loop;
    rt r;
    open_runtime(&loop, &r);
    reset_trace(&r);
    int base = live_refs(r.L);
    owner o = { 0 };
    rt_fiber *f = run(&r,
                      "hook('p')\n"
                      "local a = spawn(function() hook('a'); sleep_ms(100000, 0); resumed = 1 end)\n"
                      "local b = spawn(function()\n"
                      "  spawn(function() hook('g'); sleep_ms(100000, 0); resumed = 1 end)\n"
                      "  hook('b'); sleep_ms(100000, 0); resumed = 1\n"
                      "end)\n"
                      "wait(a, b); resumed = 1",
                      &o);
    for (int i = 0; i < 3; i++) /* the children start, then the grandchild */
        uv_run(&loop, UV_RUN_NOWAIT);
    ASSERT_INT_EQ(f->state, RT_FIBER_PARKED);
    ASSERT_UINT_EQ(r.live - r.pool_len - r.dying, 4);
    int c0 = cancels;
    rt_fiber_discard(f);
    ASSERT_INT_EQ(cancels - c0, 3); /* a, b and the grandchild; the parent's wait has its own */
    ASSERT_INT_EQ(o.abandoned, 1);
    ASSERT_INT_EQ(o.done, 0);
    /* b's grandchild before b's own hook; both children before the parent */
    ASSERT(strchr(trace, 'p') == trace + strlen(trace) - 2);
    ASSERT(strstr(trace, "g2") < strstr(trace, "b2"));
    ASSERT(strstr(trace, "a2") != NULL);
    for (int i = 0; i < ntracers; i++)
        ASSERT_INT_EQ(tracers[i].runs, 1);
    ASSERT_INT_EQ(live_refs(r.L), base);
    uv_run(&loop, UV_RUN_DEFAULT);
    lua_getglobal(r.L, "resumed");
    ASSERT(lua_isnil(r.L, -1));
    lua_pop(r.L, 1);
    ASSERT_UINT_EQ(r.live, r.pool_len);
    close_runtime(&loop, &r);
}

/* A parent that returns while a child still sleeps and another finished
 * unwaited: the sleeper is cancelled, the finished one dropped; wait gets
 * a child's results (true, values) or its error (false, message), and a
 * second wait on the same child says so. */
static void test_children_results_and_the_end_of_a_returning_parent(void)
{
    uv_loop_t loop;
    rt r;
    open_runtime(&loop, &r);
    reset_trace(&r);
    int base = live_refs(r.L);
    owner o = { 0 };
    run(&r,
        "hook('p')\n"
        "local s = spawn(function() hook('s'); sleep_ms(100000, 0) end)\n"
        "local d = spawn(function() hook('d'); return 1 end)\n"
        "local e = spawn(function() error('boom', 0) end)\n"
        "local v = spawn(function(x) return sleep_ms(5, x), 2 end, 40)\n"
        "local ok1, a, b = wait(v)\n"
        "local ok2, err = wait(e)\n"
        "local n, m = wait(e)\n"
        "assert(ok1 == true and a == 40 and b == 2, 'v')\n"
        "assert(ok2 == false and err == 'boom', 'e')\n"
        "assert(n == nil and m == 'already waited or killed', 'again')\n"
        "assert(kill(s) == true and kill(s) == nil, 'kill')\n"
        "return a + b",
        &o);
    uv_run(&loop, UV_RUN_DEFAULT);
    ASSERT_INT_EQ(o.done, 1);
    ASSERT_INT_EQ(o.status, RT_OK);
    ASSERT_INT_EQ(o.result, 42);
    ASSERT_STR_EQ(trace, "d0s2p0"); /* d returned; s killed; then the parent's own */
    ASSERT_INT_EQ(live_refs(r.L), base + (int)r.pool_len);
    ASSERT_UINT_EQ(r.live, r.pool_len);
    close_runtime(&loop, &r);
}

/* wait_index: the position of the first to end; the others keep running
 * and end with the parent. rt_close with a family parked: every fiber is
 * abandoned once, every slot cleared, on_closed comes. */
static void test_wait_index_and_close_with_a_family_parked(void)
{
    uv_loop_t loop;
    rt r;
    open_runtime(&loop, &r);
    reset_trace(&r);
    owner o = { 0 }, p = { 0 };
    run(&r,
        "local a = spawn(function() return sleep_ms(30, 1) end)\n"
        "local b = spawn(function() return sleep_ms(5, 2) end)\n"
        "local i, ok, v = wait_index(a, b)\n"
        "assert(i == 2 and ok == true and v == 2, 'first')\n"
        "i, ok, v = wait_index(a)\n"
        "return i * 10 + v",
        &o);
    run(&r, "hook('q'); local c = spawn(function() hook('c'); park() end); wait(c)", &p);
    while (!o.done) /* (p's family stays parked: park()'s timer is 100 s) */
        uv_run(&loop, UV_RUN_ONCE);
    ASSERT_INT_EQ(o.done, 1);
    ASSERT_INT_EQ(o.result, 11);
    ASSERT_INT_EQ(p.done, 0);
    rt_close(&r, on_closed, &r);
    ASSERT_INT_EQ(p.abandoned, 1);
    ASSERT(p.slot == NULL);
    ASSERT_STR_EQ(trace, "c2q2");
    uv_run(&loop, UV_RUN_DEFAULT);
    ASSERT_INT_EQ(closed_calls, 1);
    ASSERT_UINT_EQ(r.live, 0);
    ASSERT_INT_EQ(uv_loop_close(&loop), 0);
}

/* A family nested 30,000 deep (a recursive function that spawns itself)
 * ends when its root is discarded, every member cancelled once, without
 * recursing once per level and in time linear in its size: the discard
 * runs on a thread with a 256 KiB stack (the loop's thread waits
 * meanwhile, so nothing else touches the loop or the VM), where a
 * recursive end of the family overflowed, and within 1.5 s of CPU, where
 * a walk from the root to a leaf at every step took seconds (4.5e8 steps). */
enum { DEEP = 30000 };

static void *discard_on_small_stack(void *f)
{
    rt_fiber_discard(f);
    return NULL;
}

static void test_deep_family_ends_without_recursion(void)
{
    uv_loop_t loop;
    rt r;
    open_runtime(&loop, &r);
    int base = live_refs(r.L);
    owner o = { 0 };
    rt_fiber *root = run(&r, "park()", &o);
    ASSERT_INT_EQ(root->state, RT_FIBER_PARKED);
    rt_fiber *p = root;
    for (int i = 0; i < DEEP; i++) { /* each one parked, as after its first wait */
        rt_fiber *k = rt_fiber_spawn(p);
        ASSERT(k != NULL);
        rt_park(k, on_cancel, NULL);
        p = k;
    }
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    ASSERT_INT_EQ(pthread_attr_setstacksize(&attr, 256 * 1024), 0);
    pthread_t th;
    clock_t c0 = clock();
    ASSERT_INT_EQ(pthread_create(&th, &attr, discard_on_small_stack, root), 0);
    ASSERT_INT_EQ(pthread_join(th, NULL), 0);
    double cpu = (double)(clock() - c0) / CLOCKS_PER_SEC;
    pthread_attr_destroy(&attr);
    ASSERT_INT_EQ(cancels, DEEP + 1);
    ASSERT_INT_EQ(o.abandoned, 1);
    ASSERT_INT_EQ(live_refs(r.L), base);
    if (cpu > 1.5)
        FAILF("ending a family %d deep took %.2f s of CPU", DEEP, cpu);
    uv_run(&loop, UV_RUN_DEFAULT);
    ASSERT_UINT_EQ(r.live, r.pool_len);
    close_runtime(&loop, &r);
}

/* A bushy family (3 children per member, 6 levels, some finished and
 * unwaited) ends with its root: each member once, each one's end hook
 * after those of all its descendants, none missed by the walk. */
enum { BUSHY = 1 + 3 + 9 + 27 + 81 + 243 + 729 };
typedef struct node {
    rt_hook h;
    int parent, seq, runs;
} node;
static node nodes[BUSHY];
static int nodes_seq;

static void node_hook(rt_hook *h, rt_fiber *f, rt_end how)
{
    (void)f;
    (void)how;
    node *n = (node *)h;
    n->runs++;
    n->seq = ++nodes_seq;
}

static void test_bushy_family_ends_children_first(void)
{
    uv_loop_t loop;
    rt r;
    open_runtime(&loop, &r);
    owner o = { 0 };
    rt_fiber *root = run(&r, "park()", &o);
    static rt_fiber *fib[BUSHY];
    fib[0] = root;
    memset(nodes, 0, sizeof nodes);
    nodes_seq = 0;
    nodes[0].parent = -1;
    nodes[0].h.fn = node_hook;
    rt_hook_add(root, &nodes[0].h);
    int finished = 0;
    for (int i = 1; i < BUSHY; i++) {
        int pi = (i - 1) / 3;
        rt_fiber *k = rt_fiber_spawn(fib[pi]);
        ASSERT(k != NULL);
        fib[i] = k;
        nodes[i].parent = pi;
        nodes[i].h.fn = node_hook;
        if (i >= BUSHY - 729 && i % 5 == 0) { /* a leaf that returned, unwaited */
            k->state = RT_FIBER_DONE;
            k->status = RT_OK;
            k->ended = 1;
            nodes[i].runs = nodes[i].seq = -1; /* (its run's hooks are gone) */
            finished++;
        } else {
            rt_park(k, on_cancel, NULL);
            rt_hook_add(k, &nodes[i].h);
        }
    }
    rt_fiber_discard(root);
    ASSERT_INT_EQ(cancels, BUSHY - finished);
    for (int i = 0; i < BUSHY; i++) {
        if (nodes[i].runs < 0)
            continue;
        ASSERT_INT_EQ(nodes[i].runs, 1);
        for (int a = nodes[i].parent; a >= 0; a = nodes[a].parent)
            ASSERT(nodes[a].seq > nodes[i].seq);
    }
    ASSERT_INT_EQ(nodes[0].seq, nodes_seq); /* the root's last */
    ASSERT_UINT_EQ(r.pool_len, (size_t)finished); /* the finished ones, released */
    uv_run(&loop, UV_RUN_DEFAULT);
    ASSERT_UINT_EQ(r.live, r.pool_len);
    close_runtime(&loop, &r);
}

/* held(v) -> v: parks and is woken at once with v through rt_wake_held
 * (as a socket's result, taken off its connection, waits in the ready
 * queue); held_now(v) -> v: the same during the call (no yield). */
static int held_resumed, held_dropped;

static void count_held(rt_fiber *f, int resumed)
{
    ASSERT(f->wait == &held_resumed);
    if (resumed)
        held_resumed++;
    else
        held_dropped++;
}

static void held_cb(rt_timer *t)
{
    rt_fiber *f = t->data;
    lua_pushinteger(f->co, (lua_Integer)(intptr_t)f->wait);
    rt_wake_held(f, 1, count_held, &held_resumed);
}

static int l_held(lua_State *L)
{
    rt_fiber *f = rt_check_yieldable(L, "held");
    lua_Integer v = luaL_checkinteger(L, 1);
    rt_park(f, on_cancel, (void *)(intptr_t)v);
    rt_timer_start(&f->timer, held_cb, 0);
    return rt_yield(L, f);
}

static int l_held_now(lua_State *L)
{
    rt_fiber *f = rt_check_yieldable(L, "held_now");
    lua_Integer v = luaL_checkinteger(L, 1);
    rt_park(f, on_cancel, NULL);
    lua_pushinteger(L, v);
    rt_wake_held(f, 1, count_held, &held_resumed);
    return rt_yield(L, f);
}

/* A run that spawned 3,000 children which all returned: the pool does
 * not keep them all (each a Lua thread, a registry ref and a timer, for
 * the life of the VM); it is back to RT_POOL_SPARE (256) idle fibers, and
 * the refs with it. */
static void test_pool_follows_the_load_down(void)
{
    uv_loop_t loop;
    rt r;
    open_runtime(&loop, &r);
    int base = live_refs(r.L);
    owner o = { 0 };
    run(&r,
        "local ts = {}\n"
        "for i = 1, 3000 do ts[i] = spawn(function() return sleep_ms(1, i) end) end\n"
        "local sum = 0\n"
        "for i = 1, 3000 do local ok, v = wait(ts[i]); sum = sum + v end\n"
        "return sum",
        &o);
    uv_run(&loop, UV_RUN_DEFAULT);
    ASSERT_INT_EQ(o.done, 1);
    ASSERT_INT_EQ(o.result, 3000 * 3001 / 2);
    ASSERT_UINT_EQ(r.pool_len, 256);
    ASSERT_UINT_EQ(r.live, r.pool_len);
    ASSERT_INT_EQ(live_refs(r.L), base + 256);
    close_runtime(&loop, &r);
}

/* gate(): parks until the test wakes it (gated[], in the order parked). */
enum { GATED = 30000 };
static rt_fiber *gated[GATED];
static int ngated;

static int l_gate(lua_State *L)
{
    rt_fiber *f = rt_check_yieldable(L, "gate");
    ASSERT(ngated < GATED);
    gated[ngated++] = f;
    rt_park(f, on_cancel, NULL);
    return rt_yield(L, f);
}

/* A parent that waits on 30,000 children one by one, each ending while it
 * waits: each wake costs the same whatever the number of children. The end
 * of a wait cleared every child's mark, a walk of all the children still
 * there: 4.5e8 steps here, seconds of CPU (3.4 s for 20,000 children in a
 * real run). With stale-at-once marks it takes well under 1.5 s of CPU,
 * even in the sanitizer build. */
static void test_wait_cost_does_not_grow_with_the_children(void)
{
    uv_loop_t loop;
    rt r;
    open_runtime(&loop, &r);
    lua_register(r.L, "gate", l_gate);
    ngated = 0;
    owner o = { 0 };
    run(&r,
        "local ts = {}\n"
        "for i = 1, 30000 do ts[i] = spawn(gate) end\n"
        "for i = 1, 30000 do assert(wait(ts[i])) end\n"
        "return 1",
        &o);
    while (ngated < GATED)
        uv_run(&loop, UV_RUN_NOWAIT);
    clock_t c0 = clock();
    for (int i = 0; i < GATED; i++) {
        rt_wake(gated[i], 0);
        uv_run(&loop, UV_RUN_NOWAIT); /* the child ends; its parent is woken */
        uv_run(&loop, UV_RUN_NOWAIT); /* the parent waits on the next one */
    }
    double cpu = (double)(clock() - c0) / CLOCKS_PER_SEC;
    ASSERT_INT_EQ(o.done, 1);
    ASSERT_INT_EQ(o.result, 1);
    if (cpu > 1.5)
        FAILF("30,000 waits took %.2f s of CPU", cpu);
    close_runtime(&loop, &r);
}

/* kid_held(): whether the caller's newest child waits in the ready queue,
 * woken held. */
static int l_kid_held(lua_State *L)
{
    rt_fiber *f = rt_check_yieldable(L, "kid_held");
    lua_pushboolean(L, f->kids && f->kids->state == RT_FIBER_READY && f->kids->held);
    return 1;
}

/* A held wake ends exactly once: released when the fiber runs (from the
 * ready queue, or at once when it completed during the call), undone when
 * the fiber is discarded first: killed by its parent, its run abandoned,
 * or rt_close, while its results waited in the ready queue. */
static void test_held_wake_ends_once_however_the_fiber_leaves_the_queue(void)
{
    uv_loop_t loop;
    rt r;
    open_runtime(&loop, &r);
    lua_register(r.L, "held", l_held);
    lua_register(r.L, "held_now", l_held_now);
    lua_register(r.L, "kid_held", l_kid_held);
    owner a = { 0 }, b = { 0 }, c = { 0 }, d = { 0 };
    run(&r, "return held(3) + held_now(4)", &a);
    uv_run(&loop, UV_RUN_DEFAULT);
    ASSERT_INT_EQ(a.result, 7);
    ASSERT_INT_EQ(held_resumed, 2);
    ASSERT_INT_EQ(held_dropped, 0);
    /* the child is woken held, then killed by its parent before it runs
     * (the parent, queued first, runs first in that pass) */
    run(&r, "local k = spawn(function() held(1); resumed = 1 end)\n"
            "while not kid_held() do ready() end\n"
            "return kill(k) and 5", &b);
    uv_run(&loop, UV_RUN_DEFAULT);
    ASSERT_INT_EQ(b.result, 5);
    ASSERT_INT_EQ(held_resumed, 2);
    ASSERT_INT_EQ(held_dropped, 1);
    /* the run abandoned while woken held */
    rt_fiber *f = run(&r, "held(1); resumed = 1", &c);
    rt_timer_stop(&f->timer); /* (its completion, now, before a pass can run it) */
    held_cb(&f->timer);
    ASSERT_INT_EQ(f->state, RT_FIBER_READY);
    rt_fiber_discard(f);
    ASSERT_INT_EQ(held_dropped, 2);
    ASSERT_INT_EQ(c.abandoned, 1);
    /* rt_close while woken held */
    f = run(&r, "held(1); resumed = 1", &d);
    rt_timer_stop(&f->timer);
    held_cb(&f->timer);
    ASSERT_INT_EQ(f->state, RT_FIBER_READY);
    lua_getglobal(r.L, "resumed");
    ASSERT(lua_isnil(r.L, -1));
    lua_pop(r.L, 1);
    rt_close(&r, on_closed, &r);
    ASSERT_INT_EQ(held_dropped, 3);
    ASSERT_INT_EQ(held_resumed, 2);
    ASSERT_INT_EQ(d.abandoned, 1);
    uv_run(&loop, UV_RUN_DEFAULT);
    ASSERT_INT_EQ(closed_calls, 1);
    ASSERT_INT_EQ(uv_loop_close(&loop), 0);
}

TEST_MAIN("runtime", T(test_close_abandons_parked_fibers), T(test_close_idle_runtime),
          T(test_every_fiber_ends_exactly_once), T(test_wake_during_the_call_returns_at_once),
          T(test_discard_parked_cancels_once_and_never_resumes), T(test_discard_ready_fiber_is_never_resumed),
          T(test_ready_pass_runs_only_fibers_queued_before_it), T(test_pool_reuses_finished_fibers),
          T(test_close_frees_attachments_once), T(test_wait_ms_is_bounded_by_the_deadline),
          T(test_children_end_with_a_discarded_parent), T(test_children_results_and_the_end_of_a_returning_parent),
          T(test_wait_index_and_close_with_a_family_parked), T(test_deep_family_ends_without_recursion),
          T(test_bushy_family_ends_children_first),
          T(test_held_wake_ends_once_however_the_fiber_leaves_the_queue), T(test_pool_follows_the_load_down),
          T(test_wait_cost_does_not_grow_with_the_children))
