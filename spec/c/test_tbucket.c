/*
 * test_tbucket.c: the token bucket (src/util/tbucket.c) on a manual
 * nanosecond clock: starts full, refill, the burst cap, fractional rates,
 * a long idle, the time of the next token, very high rates, reservations
 * in debt and giving them back, new settings.
 */
#include "../../src/util/tbucket.h"
#include "test.h"

#define MS 1000000ull
#define S  1000000000ull

static void test_starts_full_and_empties(void)
{
    tbucket b;
    tbucket_init(&b, 10, 3, 0);
    ASSERT(tbucket_take(&b, 1, 0));
    ASSERT(tbucket_take(&b, 1, 0));
    ASSERT(tbucket_take(&b, 1, 0));
    ASSERT(!tbucket_take(&b, 1, 0));
    ASSERT_UINT_EQ(b.taken, 3);
    ASSERT_UINT_EQ(b.waits, 1);
}

static void test_refills_at_the_rate(void)
{
    tbucket b;
    tbucket_init(&b, 10, 1, 0); /* one per 100 ms */
    ASSERT(tbucket_take(&b, 1, 0));
    ASSERT(!tbucket_take(&b, 1, 99 * MS));
    ASSERT(tbucket_take(&b, 1, 100 * MS));
    ASSERT(!tbucket_take(&b, 1, 150 * MS));
    ASSERT(tbucket_take(&b, 1, 200 * MS));
}

static void test_burst_caps_a_long_idle(void)
{
    tbucket b;
    tbucket_init(&b, 100, 5, 0);
    for (int i = 0; i < 5; i++)
        ASSERT(tbucket_take(&b, 1, 0));
    /* A day idle: still only 5 at once. */
    uint64_t t = 86400ull * S;
    for (int i = 0; i < 5; i++)
        ASSERT(tbucket_take(&b, 1, t));
    ASSERT(!tbucket_take(&b, 1, t));
    ASSERT_UINT_EQ(tbucket_wait_ns(&b, 1, t), 10 * MS);
}

static void test_fractional_rate(void)
{
    tbucket b;
    tbucket_init(&b, 0.5, 1, 0); /* one per 2 s */
    ASSERT(tbucket_take(&b, 1, 0));
    ASSERT_UINT_EQ(tbucket_wait_ns(&b, 1, 0), 2 * S);
    ASSERT_UINT_EQ(tbucket_wait_ns(&b, 1, S), S);
    ASSERT(!tbucket_take(&b, 1, 2 * S - 1));
    ASSERT(tbucket_take(&b, 1, 2 * S));
}

static void test_next_token_time_is_exact(void)
{
    tbucket b;
    tbucket_init(&b, 3, 1, 0); /* 333,333,333.3 ns each */
    ASSERT(tbucket_take(&b, 1, 0));
    uint64_t w = tbucket_wait_ns(&b, 1, 0);
    ASSERT_UINT_EQ(w, 333333334);
    ASSERT(!tbucket_take(&b, 1, w - 2));
    ASSERT(tbucket_take(&b, 1, w));
    /* The next one a third of a second after that, to the ns. */
    uint64_t w2 = tbucket_wait_ns(&b, 1, w);
    ASSERT(w2 >= 333333332 && w2 <= 333333334);
}

/* 1e6/s for one simulated second with a take every 250 ns: exactly 1e6
 * tokens (plus the burst), none lost to rounding. */
static void test_a_million_per_second_is_accurate(void)
{
    tbucket b;
    tbucket_init(&b, 1e6, 1, 0);
    uint64_t got = 0;
    for (uint64_t t = 0; t <= S; t += 250)
        got += (uint64_t)tbucket_take(&b, 1, t);
    ASSERT(got >= 1000000 && got <= 1000001);
    /* And asking when: one microsecond at most. */
    ASSERT(tbucket_wait_ns(&b, 1, S) <= 1000);
}

/* The same rate served by a pump that wakes each ms and takes all it can:
 * a burst of 1000 (1 ms of tokens) keeps the rate. */
static void test_high_rate_with_ms_wakeups(void)
{
    tbucket b;
    tbucket_init(&b, 1e5, 100, 0);
    uint64_t got = 0;
    for (uint64_t t = MS; t <= S; t += MS)
        while (tbucket_take(&b, 1, t))
            got++;
    ASSERT(got >= 100000 && got <= 100100);
}

static void test_reservations_queue_in_debt(void)
{
    tbucket b;
    tbucket_init(&b, 10, 1, 0);
    ASSERT_UINT_EQ(tbucket_reserve(&b, 1, 0), 0);
    ASSERT_UINT_EQ(tbucket_reserve(&b, 1, 0), 100 * MS);
    ASSERT_UINT_EQ(tbucket_reserve(&b, 1, 0), 200 * MS);
    ASSERT(tbucket_tokens(&b, 0) < -1.99 && tbucket_tokens(&b, 0) > -2.01);
    /* The third waiter is abandoned: the second's token still comes at
     * 100 ms, and the one after that at 200 ms again, not 300. */
    tbucket_give(&b, 1, 0);
    ASSERT_UINT_EQ(tbucket_reserve(&b, 1, 0), 200 * MS);
    ASSERT_UINT_EQ(b.taken, 3);
    ASSERT_UINT_EQ(b.waits, 3);
}

static void test_give_back_is_capped_at_burst(void)
{
    tbucket b;
    tbucket_init(&b, 10, 2, 0);
    tbucket_give(&b, 5, 0);
    ASSERT(tbucket_tokens(&b, 0) <= 2.0);
}

static void test_take_of_several(void)
{
    tbucket b;
    tbucket_init(&b, 10, 5, 0);
    ASSERT(tbucket_take(&b, 3, 0));
    ASSERT(!tbucket_take(&b, 3, 0));
    ASSERT_UINT_EQ(tbucket_wait_ns(&b, 3, 0), 100 * MS);
    ASSERT(tbucket_take(&b, 3, 100 * MS));
}

static void test_new_settings_keep_what_arrived(void)
{
    tbucket b;
    tbucket_init(&b, 10, 10, 0);
    for (int i = 0; i < 10; i++)
        ASSERT(tbucket_take(&b, 1, 0));
    /* 500 ms at 10/s: 5 arrived; then the rate is 1/s with a burst of 2. */
    tbucket_set(&b, 1, 2, 500 * MS);
    ASSERT(tbucket_take(&b, 1, 500 * MS));
    ASSERT(tbucket_take(&b, 1, 500 * MS));
    ASSERT(!tbucket_take(&b, 1, 500 * MS));
    ASSERT_UINT_EQ(tbucket_wait_ns(&b, 1, 500 * MS), S);
}

static void test_clock_standing_still_adds_nothing(void)
{
    tbucket b;
    tbucket_init(&b, 1e9, 1, 5 * S);
    ASSERT(tbucket_take(&b, 1, 5 * S));
    ASSERT(!tbucket_take(&b, 1, 5 * S));
    ASSERT(!tbucket_take(&b, 1, 4 * S)); /* (earlier: as if no time passed) */
    ASSERT(tbucket_take(&b, 1, 5 * S + 1));
}

TEST_MAIN("tbucket", T(test_starts_full_and_empties), T(test_refills_at_the_rate), T(test_burst_caps_a_long_idle),
          T(test_fractional_rate), T(test_next_token_time_is_exact), T(test_a_million_per_second_is_accurate),
          T(test_high_rate_with_ms_wakeups), T(test_reservations_queue_in_debt),
          T(test_give_back_is_capped_at_burst), T(test_take_of_several), T(test_new_settings_keep_what_arrived),
          T(test_clock_standing_still_adds_nothing))
