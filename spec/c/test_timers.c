/*
 * test_timers.c: the fibers' timer heap (src/lua/timers.c) on a real
 * loop: timers fire in due order, equal dues in start order, whether they
 * sit on the FIFO list or in the heap; stop and restart from either; a
 * timer restarted with 0 ms from a callback waits for the next pass; the
 * loop ends once no timer is armed; many random timers all fire, in order.
 */
#include "../../src/lua/timers.h"
#include "test.h"

enum { MAXT = 2000 };
static int order[MAXT * 2], norder;
static uint64_t fired_at[MAXT];
static rt_timer tm[MAXT];

static void note(rt_timer *t)
{
    int id = (int)(intptr_t)t->data;
    order[norder++] = id;
    fired_at[id] = uv_now(t->ts->h.loop);
}

static void setup(uv_loop_t *loop, rt_timers *ts, int n)
{
    ASSERT_INT_EQ(uv_loop_init(loop), 0);
    rt_timers_init(ts, loop);
    ASSERT_INT_EQ(rt_timers_reserve(ts, (size_t)n), 0);
    for (int i = 0; i < n; i++)
        rt_timer_init(ts, &tm[i], (void *)(intptr_t)i);
    norder = 0;
}

static void teardown(uv_loop_t *loop, rt_timers *ts)
{
    rt_timers_close(ts, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    rt_timers_free(ts);
    ASSERT_INT_EQ(uv_loop_close(loop), 0);
}

static void test_due_order_then_start_order(void)
{
    uv_loop_t loop;
    rt_timers ts;
    setup(&loop, &ts, 6);
    rt_timer_start(&tm[0], note, 30); /* list */
    rt_timer_start(&tm[1], note, 10); /* heap */
    rt_timer_start(&tm[2], note, 30); /* list, after 0 */
    rt_timer_start(&tm[3], note, 10); /* heap, after 1 */
    rt_timer_start(&tm[4], note, 20); /* heap */
    rt_timer_start(&tm[5], note, 40); /* list */
    ASSERT(rt_timer_active(&tm[1]) && rt_timer_active(&tm[5]));
    uv_run(&loop, UV_RUN_DEFAULT);
    int want[] = { 1, 3, 4, 0, 2, 5 };
    ASSERT_INT_EQ(norder, 6);
    for (int i = 0; i < 6; i++)
        ASSERT_INT_EQ(order[i], want[i]);
    ASSERT(!rt_timer_active(&tm[0]));
    teardown(&loop, &ts);
}

static void test_stop_and_restart_from_list_and_heap(void)
{
    uv_loop_t loop;
    rt_timers ts;
    setup(&loop, &ts, 4);
    rt_timer_start(&tm[0], note, 20);
    rt_timer_start(&tm[1], note, 5);
    rt_timer_start(&tm[2], note, 30);
    rt_timer_stop(&tm[0]);         /* from the list */
    rt_timer_stop(&tm[1]);         /* from the heap */
    rt_timer_stop(&tm[3]);         /* never started: nothing */
    rt_timer_start(&tm[2], note, 1); /* restarted earlier */
    ASSERT(!rt_timer_active(&tm[0]) && !rt_timer_active(&tm[1]));
    uv_run(&loop, UV_RUN_DEFAULT);
    ASSERT_INT_EQ(norder, 1);
    ASSERT_INT_EQ(order[0], 2);
    teardown(&loop, &ts);
}

/* Stopping every timer lets the loop end at once (the driver stops too). */
static void test_nothing_armed_lets_the_loop_end(void)
{
    uv_loop_t loop;
    rt_timers ts;
    setup(&loop, &ts, 2);
    rt_timer_start(&tm[0], note, 3000);
    rt_timer_start(&tm[1], note, 2000);
    rt_timer_stop(&tm[1]);
    rt_timer_stop(&tm[0]);
    uint64_t t0 = uv_hrtime();
    uv_run(&loop, UV_RUN_DEFAULT);
    ASSERT(uv_hrtime() - t0 < 1000000000ull);
    ASSERT_INT_EQ(norder, 0);
    teardown(&loop, &ts);
}

static int again_left, passes;
static void on_prepare(uv_prepare_t *p)
{
    (void)p;
    passes++;
}

static uv_timer_t other;
static int other_saw = -1;

static void on_other(uv_timer_t *h)
{
    (void)h;
    other_saw = norder;
}

static void again(rt_timer *t)
{
    note(t);
    if (norder == 1) /* a plain libuv timer due now, started before the re-arm */
        uv_timer_start(&other, on_other, 0, 0);
    if (--again_left > 0)
        rt_timer_start(t, again, 0);
}

/* A callback re-arming with 0 ms: one firing per firing pass, not a spin
 * inside one (libuv before 1.45 may run the driver's next pass in the same
 * loop iteration, as it ran a fiber's own timer). */
static void test_zero_ms_from_a_callback_waits_a_pass(void)
{
    uv_loop_t loop;
    rt_timers ts;
    setup(&loop, &ts, 1);
    uv_prepare_t prep;
    uv_prepare_init(&loop, &prep);
    uv_prepare_start(&prep, on_prepare);
    uv_unref((uv_handle_t *)&prep);
    uv_timer_init(&loop, &other);
    again_left = 5;
    passes = 0;
    rt_timer_start(&tm[0], again, 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    ASSERT_INT_EQ(norder, 5);
    ASSERT(passes >= 1);
    /* the first pass ended after one firing: the other timer ran before
     * the second */
    ASSERT_INT_EQ(other_saw, 1);
    uv_close((uv_handle_t *)&prep, NULL);
    uv_close((uv_handle_t *)&other, NULL);
    teardown(&loop, &ts);
}

static void test_many_random_timers_fire_in_order(void)
{
    uv_loop_t loop;
    rt_timers ts;
    setup(&loop, &ts, MAXT);
    srand(7);
    uint64_t due[MAXT];
    uint64_t now = uv_now(&loop);
    for (int i = 0; i < MAXT; i++) {
        uint64_t ms = (uint64_t)(rand() % 3 ? 20 + i / 100 : rand() % 40);
        rt_timer_start(&tm[i], note, ms);
        due[i] = now + ms;
    }
    for (int i = 0; i < MAXT; i += 7)
        rt_timer_stop(&tm[i]);
    uv_run(&loop, UV_RUN_DEFAULT);
    ASSERT_INT_EQ(norder, MAXT - (MAXT + 6) / 7);
    for (int k = 0; k < norder; k++) {
        int id = order[k];
        ASSERT(id % 7 != 0);
        ASSERT(fired_at[id] >= due[id]);
        if (k > 0) {
            int p = order[k - 1];
            ASSERT(due[p] < due[id] || (due[p] == due[id] && p < id));
        }
    }
    teardown(&loop, &ts);
}

TEST_MAIN("timers", T(test_due_order_then_start_order), T(test_stop_and_restart_from_list_and_heap),
          T(test_nothing_armed_lets_the_loop_end), T(test_zero_ms_from_a_callback_waits_a_pass),
          T(test_many_random_timers_fire_in_order))
