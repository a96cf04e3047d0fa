/*
 * test_adapt.c: the adaptive capacity controller (src/op/adapt.c) with a
 * manual clock and a simulated service: it converges near the service's
 * concurrency (503 past it, or slower past it), recovers after an
 * overload, stays within min and max, ignores outliers within tolerance,
 * decreases once per round trip (no storm from one burst of 503s), and
 * does not grow when the limit is not used.
 */
#include <math.h>

#include "../../src/op/adapt.h"
#include "test.h"

/* ---- a simulated service ----------------------------------------------------- */

#define MAXREQ 4096

typedef struct sim {
    adapt a;
    uint64_t now;
    size_t n;                      /* requests in flight */
    uint64_t start[MAXREQ], end[MAXREQ];
    int over[MAXREQ];
    /* the service: past `conc` requests in flight it answers 503 after
     * 1 ms (reject) or takes base_ms * inflight / conc (queueing) */
    size_t conc;
    uint64_t base_ms;
    int reject;
    uint64_t noise;                /* every 10th request takes this x longer (0: none) */
    uint64_t started_total, overloaded_total;
    size_t lo, hi;                 /* the limit's range since the last sim_reset_range */
    uint32_t rng;
} sim;

static void sim_init(sim *s, size_t min, size_t max, size_t conc, uint64_t base_ms, int reject)
{
    memset(s, 0, sizeof *s);
    s->now = 1000;
    adapt_init(&s->a, min, max, s->now);
    s->conc = conc;
    s->base_ms = base_ms;
    s->reject = reject;
    s->rng = 12345;
    s->lo = SIZE_MAX;
}

static void sim_reset_range(sim *s)
{
    s->lo = SIZE_MAX;
    s->hi = 0;
    s->started_total = s->overloaded_total = 0;
}

static uint32_t rnd(sim *s)
{
    s->rng = s->rng * 1103515245u + 12345u;
    return (s->rng >> 16) & 0x7fff;
}

/* Start requests up to the limit (an endless input: the limit is used). */
static void fill(sim *s, size_t upto)
{
    while (s->n < upto && s->n < MAXREQ) {
        size_t k = s->n++;
        s->start[k] = s->now;
        s->started_total++;
        if (s->reject && s->n > s->conc) {
            s->end[k] = s->now + 1;
            s->over[k] = 1;
            s->overloaded_total++;
        } else {
            uint64_t ms = s->base_ms;
            if (!s->reject && s->n > s->conc)
                ms = s->base_ms * s->n / s->conc;
            ms += rnd(s) % (s->base_ms / 5 + 1); /* jitter up to 20 % */
            if (s->noise && rnd(s) % 10 == 0)
                ms *= s->noise;
            s->end[k] = s->now + ms;
            s->over[k] = 0;
        }
    }
}

/* Run `ms` milliseconds; `offered`: how many requests the input keeps in
 * flight at most (SIZE_MAX: as many as the limit allows). */
static void sim_run(sim *s, uint64_t ms, size_t offered)
{
    for (uint64_t t = 0; t < ms; t++) {
        s->now++;
        for (size_t k = 0; k < s->n;) {
            if (s->end[k] <= s->now) {
                size_t inflight = s->n;
                adapt_sample(&s->a, s->start[k], s->now, inflight, s->over[k]);
                s->n--;
                s->start[k] = s->start[s->n];
                s->end[k] = s->end[s->n];
                s->over[k] = s->over[s->n];
            } else {
                k++;
            }
        }
        size_t lim = adapt_limit(&s->a);
        fill(s, lim < offered ? lim : offered);
        if (lim < s->lo && !s->a.probing) /* (a probe window dips on purpose) */
            s->lo = lim;
        if (lim > s->hi)
            s->hi = lim;
    }
}

/* ---- tests -------------------------------------------------------------------- */

static void test_starts_at_min_and_slow_starts(void)
{
    adapt a;
    adapt_init(&a, 8, 1000, 0);
    ASSERT_UINT_EQ(adapt_limit(&a), 8);
    /* a window: 8 samples of 10 ms, the limit fully used */
    uint64_t t = 0;
    for (int w = 0; w < 3; w++) {
        for (int i = 0; i < 8; i++)
            adapt_sample(&a, t, t + 10, adapt_limit(&a), 0);
        t += 10;
    }
    ASSERT_UINT_EQ(adapt_limit(&a), 64); /* 8 -> 16 -> 32 -> 64 */
}

static void test_converges_near_a_service_that_rejects_past_its_concurrency(void)
{
    sim s;
    sim_init(&s, 1, 500, 20, 50, 1);
    sim_run(&s, 5000, SIZE_MAX);
    sim_reset_range(&s);
    sim_run(&s, 20000, SIZE_MAX);
    if (s.lo < 8 || s.hi > 40)
        FAILF("limit ranged %zu..%zu, want within 8..40 around 20", s.lo, s.hi);
    /* few 503s: well under 10 % of the requests */
    if (s.overloaded_total * 10 > s.started_total)
        FAILF("%llu of %llu requests overloaded", (unsigned long long)s.overloaded_total,
              (unsigned long long)s.started_total);
}

static void test_converges_near_a_service_that_slows_past_its_concurrency(void)
{
    sim s;
    sim_init(&s, 1, 1000, 50, 20, 0);
    sim_run(&s, 10000, SIZE_MAX);
    sim_reset_range(&s);
    sim_run(&s, 20000, SIZE_MAX);
    if (s.lo < 25 || s.hi > 150)
        FAILF("limit ranged %zu..%zu, want within 25..150 around 50", s.lo, s.hi);
    ASSERT(s.a.decreases > 0);
}

static void test_recovers_after_an_overload_ends(void)
{
    sim s;
    sim_init(&s, 4, 400, 300, 20, 1);
    sim_run(&s, 5000, SIZE_MAX);
    ASSERT(adapt_limit(&s.a) >= 200);
    s.conc = 5; /* overloaded */
    sim_run(&s, 3000, SIZE_MAX);
    ASSERT(adapt_limit(&s.a) <= 12);
    s.conc = 300; /* recovered */
    sim_run(&s, 5000, SIZE_MAX);
    if (adapt_limit(&s.a) < 200)
        FAILF("limit %zu 5 s after the service recovered, want >= 200", adapt_limit(&s.a));
}

static void test_accepts_a_service_that_stays_slower(void)
{
    sim s;
    sim_init(&s, 4, 200, 100000, 20, 0);
    sim_run(&s, 5000, SIZE_MAX);
    ASSERT_UINT_EQ(adapt_limit(&s.a), 200);
    s.base_ms = 100; /* 5x slower for good, whatever the load */
    sim_run(&s, 3000, SIZE_MAX);
    ASSERT(s.a.decreases > 0);
    ASSERT(adapt_limit(&s.a) < 200);
    sim_run(&s, 60000, SIZE_MAX);
    if (adapt_limit(&s.a) < 150)
        FAILF("limit %zu: a service slower for its own reasons is never accepted", adapt_limit(&s.a));
}

/* A service slow at first (cold caches): the baseline it sets would keep
 * the limit far too high once it is warm (its windows carry the queue we
 * built); the probe windows find the warm baseline, so the limit ends
 * near where the warm service slows down. */
static void test_a_service_slow_at_first(void)
{
    sim s;
    sim_init(&s, 1, 1000, 50, 100, 0);
    sim_run(&s, 2000, SIZE_MAX);
    s.base_ms = 20; /* warm: each probe (every 50 used windows) finds a lower baseline */
    sim_run(&s, 30000, SIZE_MAX);
    sim_reset_range(&s);
    sim_run(&s, 10000, SIZE_MAX);
    if (s.lo < 25 || s.hi > 175)
        FAILF("limit ranged %zu..%zu once warm, want within 25..175 (latency within 2x: about 100)", s.lo, s.hi);
}

static void test_respects_min_and_max(void)
{
    sim s;
    sim_init(&s, 10, 30, 2, 20, 1); /* a service that takes 2: the limit stays at min */
    sim_run(&s, 5000, SIZE_MAX);
    ASSERT_UINT_EQ(s.lo, 10);
    ASSERT_UINT_EQ(adapt_limit(&s.a), 10);
    sim_init(&s, 10, 30, 1000, 20, 1); /* one that takes 1000: at most max */
    sim_run(&s, 5000, SIZE_MAX);
    ASSERT_UINT_EQ(s.hi, 30);
    ASSERT_UINT_EQ(adapt_limit(&s.a), 30);
    /* direct: a storm of cuts stops at min */
    adapt a;
    adapt_init(&a, 3, 10, 0);
    for (uint64_t t = 1; t < 100; t++)
        adapt_sample(&a, t, t, 1, 1);
    ASSERT_UINT_EQ(adapt_limit(&a), 3);
}

static void test_ignores_outliers_within_tolerance(void)
{
    sim s;
    sim_init(&s, 4, 200, 100000, 20, 0);
    s.noise = 10; /* one request in ten takes 10x longer */
    sim_run(&s, 10000, SIZE_MAX);
    ASSERT_UINT_EQ(s.a.decreases, 0);
    ASSERT_UINT_EQ(adapt_limit(&s.a), 200);
    /* a slowdown within tolerance (1.5x) does not decrease either */
    adapt a;
    adapt_init(&a, 4, 50, 0);
    uint64_t t = 0;
    for (int i = 0; i < 400; i++, t += 10)
        adapt_sample(&a, t, t + (i < 100 ? 10 : 15), adapt_limit(&a), 0);
    ASSERT_UINT_EQ(a.decreases, 0);
    ASSERT_UINT_EQ(adapt_limit(&a), 50);
}

static void test_no_decrease_storm_from_one_burst(void)
{
    adapt a;
    adapt_init(&a, 1, 1000, 0);
    a.limit = 400;
    a.slow_start = 0;
    /* 400 requests started at t 0..9, all answered 503 at t 10..20: one cut */
    for (int i = 0; i < 400; i++)
        adapt_sample(&a, (uint64_t)(i % 10), 10 + (uint64_t)(i % 11), 400, 1);
    ASSERT_UINT_EQ(a.decreases, 1);
    ASSERT_UINT_EQ(adapt_limit(&a), 280);
    /* one started after the cut (at 10) is a new round trip: a second cut */
    adapt_sample(&a, 10, 21, 280, 1);
    ASSERT_UINT_EQ(a.decreases, 2);
    ASSERT_UINT_EQ(adapt_limit(&a), 196);
    /* a slow or fast success that started before it changes nothing */
    adapt_sample(&a, 5, 500, 280, 0);
    ASSERT_UINT_EQ(a.win_n, 0);
}

static void test_does_not_grow_when_the_limit_is_not_used(void)
{
    sim s;
    sim_init(&s, 8, 1000, 100000, 20, 1);
    sim_run(&s, 10000, 3); /* the input keeps 3 in flight */
    ASSERT_UINT_EQ(adapt_limit(&s.a), 8);
    sim_run(&s, 3000, SIZE_MAX); /* it picks up when used */
    ASSERT(adapt_limit(&s.a) > 100);
}

static void test_a_timeout_or_signal_decreases_like_a_503(void)
{
    adapt a;
    adapt_init(&a, 2, 100, 0);
    a.limit = 100;
    a.slow_start = 0;
    adapt_sample(&a, 0, 1000, 100, 1); /* a record timed out after 1 s */
    ASSERT_UINT_EQ(adapt_limit(&a), 70);
    ASSERT_UINT_EQ(a.overloads, 1);
    ASSERT(!a.slow_start);
}

TEST_MAIN("adapt", T(test_starts_at_min_and_slow_starts),
          T(test_converges_near_a_service_that_rejects_past_its_concurrency),
          T(test_converges_near_a_service_that_slows_past_its_concurrency), T(test_recovers_after_an_overload_ends),
          T(test_accepts_a_service_that_stays_slower), T(test_a_service_slow_at_first),
          T(test_respects_min_and_max), T(test_ignores_outliers_within_tolerance),
          T(test_no_decrease_storm_from_one_burst), T(test_does_not_grow_when_the_limit_is_not_used),
          T(test_a_timeout_or_signal_decreases_like_a_503))
