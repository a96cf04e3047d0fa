/*
 * test_lru.c: the LRU store (src/util/lru.c) with a manual clock: hits and
 * misses, binary keys, replacement, eviction by count and by bytes (and
 * its order), lazy expiry, peek changing nothing, negative entries, new
 * limits applied at once, delete and clear, growth, and the counters.
 */
#include "../../src/util/lru.h"
#include "test.h"

static lru *mk(size_t n, size_t bytes)
{
    lru *c = lru_new(n, bytes, 42);
    ASSERT(c != NULL);
    return c;
}

static void put(lru *c, const char *k, const char *v, uint64_t exp)
{
    ASSERT_INT_EQ(lru_set(c, k, strlen(k), v, strlen(v), 0, exp), 0);
}

/* The value of k at now (NULL if none), as a string in a static buffer. */
static const char *val(lru *c, const char *k, uint64_t now)
{
    static char buf[256];
    lru_item it;
    if (!lru_get(c, k, strlen(k), now, &it))
        return NULL;
    ASSERT(it.vlen < sizeof buf);
    memcpy(buf, it.val, it.vlen);
    buf[it.vlen] = 0;
    return buf;
}

static lru_stats stats(lru *c)
{
    lru_stats st;
    lru_get_stats(c, &st);
    return st;
}

static void test_set_get_and_miss(void)
{
    lru *c = mk(10, 0);
    ASSERT(val(c, "a", 0) == NULL);
    put(c, "a", "1", 0);
    put(c, "b", "22", 0);
    ASSERT_STR_EQ(val(c, "a", 0), "1");
    ASSERT_STR_EQ(val(c, "b", 5), "22");
    ASSERT(val(c, "c", 0) == NULL);
    lru_stats st = stats(c);
    ASSERT_UINT_EQ(st.hits, 2);
    ASSERT_UINT_EQ(st.misses, 2);
    ASSERT_UINT_EQ(st.entries, 2);
    ASSERT_UINT_EQ(st.bytes, lru_entry_cost(1, 1) + lru_entry_cost(1, 2));
    lru_free(c);
}

static void test_keys_and_values_are_binary_safe(void)
{
    lru *c = mk(10, 0);
    const char k1[] = { 'a', 0, 'b' }, k2[] = { 'a', 0, 'c' }, v[] = { 0, 1, 0, 2 };
    ASSERT_INT_EQ(lru_set(c, k1, 3, v, 4, 0, 0), 0);
    ASSERT_INT_EQ(lru_set(c, k2, 3, "x", 1, 0, 0), 0);
    ASSERT_INT_EQ(lru_set(c, "", 0, "", 0, 0, 0), 0); /* the empty key, an empty value */
    lru_item it;
    ASSERT_INT_EQ(lru_get(c, k1, 3, 0, &it), 1);
    ASSERT_UINT_EQ(it.vlen, 4);
    ASSERT(memcmp(it.val, v, 4) == 0);
    ASSERT_INT_EQ(lru_get(c, k2, 3, 0, &it), 1);
    ASSERT_UINT_EQ(it.vlen, 1);
    ASSERT_INT_EQ(lru_get(c, "a", 1, 0, &it), 0); /* a prefix up to the NUL is another key */
    ASSERT_INT_EQ(lru_get(c, "", 0, 0, &it), 1);
    ASSERT_UINT_EQ(it.vlen, 0);
    ASSERT_UINT_EQ(stats(c).entries, 3);
    lru_free(c);
}

static void test_set_replaces_and_refreshes(void)
{
    lru *c = mk(2, 0);
    put(c, "a", "1", 0);
    put(c, "b", "2", 0);
    put(c, "a", "longer", 0); /* a is now the most recent */
    ASSERT_UINT_EQ(stats(c).entries, 2);
    ASSERT_UINT_EQ(stats(c).bytes, lru_entry_cost(1, 6) + lru_entry_cost(1, 1));
    put(c, "c", "3", 0); /* evicts b, the least recent */
    ASSERT_STR_EQ(val(c, "a", 0), "longer");
    ASSERT(val(c, "b", 0) == NULL);
    ASSERT_STR_EQ(val(c, "c", 0), "3");
    ASSERT_UINT_EQ(stats(c).evictions, 1);
    lru_free(c);
}

static void test_evicts_the_least_recently_used_by_count(void)
{
    lru *c = mk(3, 0);
    put(c, "a", "1", 0);
    put(c, "b", "2", 0);
    put(c, "c", "3", 0);
    ASSERT(val(c, "a", 0) != NULL); /* a used: b is now the least recent */
    put(c, "d", "4", 0);
    ASSERT(val(c, "b", 0) == NULL);
    ASSERT(val(c, "c", 0) != NULL); /* order now (most recent first): c d a */
    put(c, "e", "5", 0);            /* evicts a */
    ASSERT(val(c, "a", 0) == NULL);
    ASSERT(val(c, "c", 0) != NULL);
    ASSERT(val(c, "d", 0) != NULL);
    ASSERT(val(c, "e", 0) != NULL);
    lru_stats st = stats(c);
    ASSERT_UINT_EQ(st.evictions, 2);
    ASSERT_UINT_EQ(st.entries, 3);
    ASSERT_UINT_EQ(st.expired, 0);
    lru_free(c);
}

static void test_evicts_by_bytes_and_refuses_an_entry_over_the_limit(void)
{
    /* room for exactly 3 entries of a 1-byte key and a 10-byte value */
    size_t one = lru_entry_cost(1, 10);
    lru *c = mk(0, 3 * one);
    put(c, "a", "0123456789", 0);
    put(c, "b", "0123456789", 0);
    put(c, "c", "0123456789", 0);
    ASSERT_UINT_EQ(stats(c).bytes, 3 * one);
    ASSERT_UINT_EQ(stats(c).evictions, 0);
    /* 21 bytes of value: two entries must go */
    put(c, "d", "012345678901234567890", 0);
    ASSERT(val(c, "a", 0) == NULL);
    ASSERT(val(c, "b", 0) == NULL);
    ASSERT(val(c, "c", 0) != NULL);
    ASSERT_UINT_EQ(stats(c).evictions, 2);
    ASSERT(stats(c).bytes <= 3 * one);
    /* one entry bigger than everything: refused, and an old value of that key dropped */
    char big[400];
    memset(big, 'x', sizeof big);
    ASSERT_INT_EQ(lru_set(c, "c", 1, big, sizeof big, 0, 0), -2);
    ASSERT(val(c, "c", 0) == NULL);
    ASSERT(val(c, "d", 0) != NULL); /* nothing else was evicted for it */
    ASSERT_UINT_EQ(stats(c).evictions, 2);
    lru_free(c);
}

static void test_expires_lazily_on_the_manual_clock(void)
{
    lru *c = mk(10, 0);
    put(c, "a", "1", 100);
    put(c, "b", "2", 0); /* never */
    put(c, "c", "3", 50);
    ASSERT_STR_EQ(val(c, "a", 99), "1");
    ASSERT_UINT_EQ(stats(c).entries, 3);
    /* c's time is up at 50 but nothing looked: still counted */
    ASSERT_UINT_EQ(stats(c).expired, 0);
    ASSERT(val(c, "a", 100) == NULL); /* due exactly at expires_ms */
    lru_stats st = stats(c);
    ASSERT_UINT_EQ(st.expired, 1);
    ASSERT_UINT_EQ(st.entries, 2);
    ASSERT_UINT_EQ(st.misses, 1);
    ASSERT_STR_EQ(val(c, "b", 1000000), "2");
    ASSERT(val(c, "c", 1000000) == NULL);
    ASSERT_UINT_EQ(stats(c).expired, 2);
    ASSERT_UINT_EQ(stats(c).entries, 1);
    /* set again after expiry: a fresh entry */
    put(c, "a", "again", 2000);
    ASSERT_STR_EQ(val(c, "a", 1999), "again");
    lru_free(c);
}

static void test_peek_changes_nothing(void)
{
    lru *c = mk(2, 0);
    put(c, "a", "1", 10);
    put(c, "b", "2", 0);
    lru_item it;
    ASSERT_INT_EQ(lru_peek(c, "a", 1, 5, &it), 1);
    ASSERT_UINT_EQ(it.expires_ms, 10);
    ASSERT_INT_EQ(lru_peek(c, "zz", 2, 5, &it), 0);
    ASSERT_INT_EQ(lru_peek(c, "a", 1, 10, &it), 0); /* expired: reported absent ... */
    lru_stats st = stats(c);
    ASSERT_UINT_EQ(st.hits + st.misses + st.expired, 0);
    ASSERT_UINT_EQ(st.entries, 2);                  /* ... and left in place */
    /* no recency change: a is still the least recent, so it goes first */
    ASSERT_INT_EQ(lru_peek(c, "a", 1, 0, &it), 1);
    put(c, "c", "3", 0);
    ASSERT_INT_EQ(lru_peek(c, "a", 1, 0, &it), 0);
    ASSERT_INT_EQ(lru_peek(c, "b", 1, 0, &it), 1);
    lru_free(c);
}

static void test_keeps_the_negative_flag(void)
{
    lru *c = mk(10, 0);
    ASSERT_INT_EQ(lru_set(c, "n", 1, "not found", 9, 1, 30), 0);
    ASSERT_INT_EQ(lru_set(c, "p", 1, "v", 1, 0, 0), 0);
    lru_item it;
    ASSERT_INT_EQ(lru_get(c, "n", 1, 0, &it), 1);
    ASSERT_INT_EQ(it.negative, 1);
    ASSERT_UINT_EQ(it.vlen, 9);
    ASSERT_INT_EQ(lru_get(c, "p", 1, 0, &it), 1);
    ASSERT_INT_EQ(it.negative, 0);
    ASSERT_INT_EQ(lru_get(c, "n", 1, 30, &it), 0);
    lru_free(c);
}

static void test_new_limits_apply_at_once(void)
{
    lru *c = mk(10, 0);
    char k[16];
    for (int i = 0; i < 10; i++) {
        snprintf(k, sizeof k, "k%d", i);
        put(c, k, "v", 0);
    }
    ASSERT(val(c, "k0", 0) != NULL); /* k0 most recent: k1 is the least */
    lru_limit(c, 4, 0);
    lru_stats st = stats(c);
    ASSERT_UINT_EQ(st.entries, 4);
    ASSERT_UINT_EQ(st.evictions, 6);
    ASSERT(val(c, "k0", 0) != NULL);
    ASSERT(val(c, "k9", 0) != NULL);
    ASSERT(val(c, "k7", 0) != NULL);
    ASSERT(val(c, "k8", 0) != NULL);
    ASSERT(val(c, "k6", 0) == NULL);
    /* by bytes now: room for two */
    lru_limit(c, 0, 2 * lru_entry_cost(2, 1));
    ASSERT_UINT_EQ(stats(c).entries, 2);
    /* no limits at all */
    lru_limit(c, 0, 0);
    for (int i = 0; i < 100; i++) {
        snprintf(k, sizeof k, "m%d", i);
        put(c, k, "v", 0);
    }
    ASSERT_UINT_EQ(stats(c).entries, 102);
    lru_free(c);
}

static void test_delete_and_clear(void)
{
    lru *c = mk(10, 0);
    put(c, "a", "1", 0);
    put(c, "b", "2", 0);
    ASSERT_INT_EQ(lru_delete(c, "a", 1), 1);
    ASSERT_INT_EQ(lru_delete(c, "a", 1), 0);
    ASSERT(val(c, "a", 0) == NULL);
    ASSERT_UINT_EQ(stats(c).entries, 1);
    put(c, "c", "3", 0);
    lru_clear(c);
    lru_stats st = stats(c);
    ASSERT_UINT_EQ(st.entries, 0);
    ASSERT_UINT_EQ(st.bytes, 0);
    ASSERT_UINT_EQ(st.evictions, 0);
    put(c, "d", "4", 0); /* usable after */
    ASSERT_STR_EQ(val(c, "d", 0), "4");
    lru_free(c);
    lru_free(NULL);
}

static void test_grows_and_finds_every_key(void)
{
    lru *c = mk(0, 0);
    char k[16], v[16];
    for (int i = 0; i < 20000; i++) {
        snprintf(k, sizeof k, "key-%d", i);
        snprintf(v, sizeof v, "%d", i * 7);
        put(c, k, v, 0);
    }
    ASSERT_UINT_EQ(stats(c).entries, 20000);
    for (int i = 0; i < 20000; i += 7) {
        snprintf(k, sizeof k, "key-%d", i);
        snprintf(v, sizeof v, "%d", i * 7);
        ASSERT_STR_EQ(val(c, k, 0), v);
    }
    for (int i = 0; i < 20000; i += 2) {
        snprintf(k, sizeof k, "key-%d", i);
        ASSERT_INT_EQ(lru_delete(c, k, strlen(k)), 1);
    }
    ASSERT_UINT_EQ(stats(c).entries, 10000);
    ASSERT(val(c, "key-3", 0) != NULL);
    ASSERT(val(c, "key-4", 0) == NULL);
    lru_free(c);
}

static void test_any_seed_gives_the_same_behaviour(void)
{
    for (uint64_t seed = 0; seed < 5; seed++) {
        lru *c = lru_new(3, 0, seed * 0x9e3779b97f4a7c15ULL);
        ASSERT(c != NULL);
        put(c, "x", "1", 0);
        put(c, "y", "2", 0);
        put(c, "z", "3", 0);
        put(c, "w", "4", 0);
        ASSERT(val(c, "x", 0) == NULL);
        ASSERT_STR_EQ(val(c, "w", 0), "4");
        lru_free(c);
    }
}

TEST_MAIN("lru", T(test_set_get_and_miss), T(test_keys_and_values_are_binary_safe),
          T(test_set_replaces_and_refreshes), T(test_evicts_the_least_recently_used_by_count),
          T(test_evicts_by_bytes_and_refuses_an_entry_over_the_limit), T(test_expires_lazily_on_the_manual_clock),
          T(test_peek_changes_nothing), T(test_keeps_the_negative_flag), T(test_new_limits_apply_at_once),
          T(test_delete_and_clear), T(test_grows_and_finds_every_key), T(test_any_seed_gives_the_same_behaviour))
