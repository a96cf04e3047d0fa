/* test_resp.c: the RESP2 reply reader (src/net/resp.c), fed whole and in
 * every split. */
#include "../../src/net/resp.h"
#include "test.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MB (64u * 1024 * 1024)

/* Feed s whole: the result, with *r holding the tape. */
static int feed_all(resp_reader *r, const char *s, size_t n, size_t *used)
{
    resp_init(r, MB, 1u << 20, 64);
    return resp_feed(r, s, n, used);
}

/* Feed s a byte more at a time: every prefix but the whole says MORE
 * (or BAD), and the whole gives the same result and tape as feeding it at
 * once. Returns the result. */
static int feed_split(const char *s, size_t n)
{
    resp_reader whole, r;
    size_t used_whole = 0, used = 0;
    int want = feed_all(&whole, s, n, &used_whole);
    resp_init(&r, MB, 1u << 20, 64);
    int rc = RESP_MORE;
    for (size_t k = 1; k <= n && rc == RESP_MORE; k++)
        rc = resp_feed(&r, s, k, &used);
    ASSERT_INT_EQ(rc, want);
    if (rc == RESP_DONE) {
        ASSERT_UINT_EQ(used, used_whole);
        ASSERT_UINT_EQ(r.len, whole.len);
        ASSERT(memcmp(r.nodes, whole.nodes, r.len * sizeof *r.nodes) == 0);
    }
    resp_free(&whole);
    resp_free(&r);
    return rc;
}

static void test_simple_values(void)
{
    resp_reader r;
    size_t used;
    const char *s = "+OK\r\n";
    ASSERT_INT_EQ(feed_all(&r, s, strlen(s), &used), RESP_DONE);
    ASSERT_UINT_EQ(used, 5);
    ASSERT_INT_EQ(r.nodes[0].type, RESP_STATUS);
    ASSERT(r.nodes[0].n == 2 && memcmp(resp_str(&r.nodes[0], s), "OK", 2) == 0);
    resp_free(&r);
    s = "-ERR no such key\r\n";
    ASSERT_INT_EQ(feed_all(&r, s, strlen(s), &used), RESP_DONE);
    ASSERT_INT_EQ(r.nodes[0].type, RESP_ERROR);
    ASSERT(r.nodes[0].n == 15 && memcmp(resp_str(&r.nodes[0], s), "ERR no such key", 15) == 0);
    resp_free(&r);
    s = ":-9223372036854775808\r\n";
    ASSERT_INT_EQ(feed_all(&r, s, strlen(s), &used), RESP_DONE);
    ASSERT(r.nodes[0].type == RESP_INT && r.nodes[0].i == INT64_MIN);
    resp_free(&r);
    s = ":9223372036854775807\r\n";
    ASSERT_INT_EQ(feed_all(&r, s, strlen(s), &used), RESP_DONE);
    ASSERT(r.nodes[0].i == INT64_MAX);
    resp_free(&r);
    s = "$-1\r\n";
    ASSERT_INT_EQ(feed_all(&r, s, strlen(s), &used), RESP_DONE);
    ASSERT_INT_EQ(r.nodes[0].type, RESP_NIL);
    resp_free(&r);
    s = "*-1\r\n";
    ASSERT_INT_EQ(feed_all(&r, s, strlen(s), &used), RESP_DONE);
    ASSERT_INT_EQ(r.nodes[0].type, RESP_NIL);
    resp_free(&r);
}

static void test_bulks_hold_any_bytes(void)
{
    resp_reader r;
    size_t used;
    static const char s[] = "$7\r\na\r\nb\0c\n\r\n";
    ASSERT_INT_EQ(feed_all(&r, s, sizeof s - 1, &used), RESP_DONE);
    ASSERT_UINT_EQ(used, sizeof s - 1);
    ASSERT(r.nodes[0].type == RESP_BULK && r.nodes[0].n == 7);
    ASSERT(memcmp(resp_str(&r.nodes[0], s), "a\r\nb\0c\n", 7) == 0);
    resp_free(&r);
    ASSERT_INT_EQ(feed_all(&r, "$0\r\n\r\n", 6, &used), RESP_DONE);
    ASSERT(r.nodes[0].type == RESP_BULK && r.nodes[0].n == 0);
    resp_free(&r);
    ASSERT_INT_EQ(feed_split(s, sizeof s - 1), RESP_DONE);
}

/* An XREADGROUP reply: [[stream, [[id, [field, value, ...]], ...]]]. */
static const char XREAD[] = "*1\r\n*2\r\n$3\r\nin0\r\n*2\r\n"
                            "*2\r\n$15\r\n1700000000000-0\r\n*2\r\n$4\r\ndata\r\n$7\r\n{\"a\":1}\r\n"
                            "*2\r\n$15\r\n1700000000000-1\r\n*-1\r\n";

static void test_nested_arrays_as_a_tape(void)
{
    resp_reader r;
    size_t used;
    ASSERT_INT_EQ(feed_all(&r, XREAD, sizeof XREAD - 1, &used), RESP_DONE);
    ASSERT_UINT_EQ(used, sizeof XREAD - 1);
    /* 0 [ 1 [ 2 in0 3 [ 4 [ 5 id 6 [ 7 data 8 {..} ] ] 9 [ 10 id 11 nil ] ] ] ] */
    ASSERT_UINT_EQ(r.len, 12);
    ASSERT(r.nodes[0].type == RESP_ARRAY && r.nodes[0].n == 1 && r.nodes[0].end == 12);
    ASSERT(r.nodes[1].n == 2 && r.nodes[1].end == 12);
    ASSERT(memcmp(resp_str(&r.nodes[2], XREAD), "in0", 3) == 0);
    ASSERT(r.nodes[3].type == RESP_ARRAY && r.nodes[3].n == 2 && r.nodes[3].end == 12);
    ASSERT(r.nodes[4].end == 9);
    ASSERT(resp_skip(&r, 4) == 9);
    ASSERT(memcmp(resp_str(&r.nodes[5], XREAD), "1700000000000-0", 15) == 0);
    ASSERT(r.nodes[6].end == 9);
    ASSERT(memcmp(resp_str(&r.nodes[8], XREAD), "{\"a\":1}", 7) == 0);
    ASSERT(r.nodes[9].end == 12);
    ASSERT_INT_EQ(r.nodes[11].type, RESP_NIL);
    resp_free(&r);
    ASSERT_INT_EQ(feed_split(XREAD, sizeof XREAD - 1), RESP_DONE);
    ASSERT_INT_EQ(feed_split("*0\r\n", 4), RESP_DONE);
    ASSERT_INT_EQ(feed_split("*3\r\n*0\r\n*1\r\n*0\r\n:5\r\n", 21), RESP_DONE);
}

static void test_replies_back_to_back(void)
{
    resp_reader r;
    size_t used, off = 0;
    const char *s = "+OK\r\n:1\r\n*2\r\n$1\r\na\r\n$-1\r\n";
    size_t n = strlen(s);
    resp_init(&r, MB, 100, 8);
    int kinds[3] = { RESP_STATUS, RESP_INT, RESP_ARRAY };
    for (int k = 0; k < 3; k++) {
        ASSERT_INT_EQ(resp_feed(&r, s + off, n - off, &used), RESP_DONE);
        ASSERT_INT_EQ(r.nodes[0].type, kinds[k]);
        off += used;
        resp_next_reply(&r);
    }
    ASSERT_UINT_EQ(off, n);
    ASSERT_INT_EQ(resp_feed(&r, s + off, 0, &used), RESP_MORE);
    resp_free(&r);
}

static void expect_bad(const char *s, size_t n, size_t max_bytes, size_t max_elements, size_t max_depth,
                       const char *msg)
{
    resp_reader r;
    size_t used;
    resp_init(&r, max_bytes, max_elements, max_depth);
    int rc = resp_feed(&r, s, n, &used);
    if (rc != RESP_BAD || strcmp(r.err, msg) != 0)
        FAILF("'%.*s': rc %d, err '%s', expected '%s'", (int)(n > 60 ? 60 : n), s, rc, r.err, msg);
    resp_free(&r);
}

static void test_bad_replies_are_named(void)
{
    expect_bad(":abc\r\n", 6, MB, 10, 4, "not an integer: ':abc'");
    expect_bad(":0x10\r\n", 7, MB, 10, 4, "not an integer: ':0x10'");
    expect_bad(":9223372036854775808\r\n", 22, MB, 10, 4, "not an integer: ':9223372036854775808'");
    expect_bad(":\r\n", 3, MB, 10, 4, "not an integer: ':'");
    expect_bad("$1.5\r\n", 6, MB, 10, 4, "not a bulk length: '$1.5'");
    expect_bad("$-2\r\n", 5, MB, 10, 4, "not a bulk length: '$-2'");
    expect_bad("*x\r\n", 4, MB, 10, 4, "not an array length: '*x'");
    expect_bad("\r\n", 2, MB, 10, 4, "an empty line");
    expect_bad("%1\r\n", 4, MB, 10, 4, "unknown type: '%1'");
    expect_bad("!\x01\xff\r\n", 5, MB, 10, 4, "unknown type: '!\\x01\\xff'");
    expect_bad("$3\r\nabcXY", 9, MB, 10, 4, "a bulk of 3 bytes not followed by CRLF");
}

static void test_limits_bound_memory(void)
{
    expect_bad("$999999999999\r\n", 15, MB, 10, 4, "a bulk of 999999999999 bytes (the most is 512 MiB)");
    expect_bad("$100\r\n", 6, 64, 10, 4, "a bulk of 100 bytes: more than max_reply_bytes (64) in one reply");
    expect_bad("*999999999\r\n", 12, MB, 1000, 4,
               "an array of 999999999 elements: more than max_elements (1000) in one reply");
    /* elements count across the whole reply */
    expect_bad("*2\r\n*2\r\n:1\r\n:2\r\n*2\r\n", 20, MB, 5, 4,
               "an array of 2 elements: more than max_elements (5) in one reply");
    expect_bad("*1\r\n*1\r\n*1\r\n:1\r\n", 16, MB, 10, 2, "arrays nested deeper than max_depth (2)");
    /* a line that never ends is refused once it passes the limit */
    char big[200];
    memset(big, '+', sizeof big);
    expect_bad(big, sizeof big, 100, 10, 4, "more than max_reply_bytes (100) in one reply");
    resp_reader r;
    size_t used;
    resp_init(&r, 100, 10, 4);
    ASSERT_INT_EQ(resp_feed(&r, big, 100, &used), RESP_MORE);
    resp_free(&r);
}

/* A long line that arrives in pieces is searched for its end once, not
 * from its start again with every piece: 60 MiB in 8 KiB pieces took
 * tens of seconds of memchr (a peer that never sends the newline kept a
 * core busy); now milliseconds. The bound is loose on purpose. */
static void test_long_line_in_pieces_is_scanned_once(void)
{
    size_t n = 60u * 1024 * 1024;
    char *line = malloc(n + 2);
    ASSERT(line != NULL);
    memset(line, 'a', n);
    line[0] = '+';
    memcpy(line + n, "\r\n", 2);
    resp_reader r;
    size_t used = 0;
    resp_init(&r, MB, 10, 4);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int rc = RESP_MORE;
    for (size_t k = 8192; rc == RESP_MORE; k = k + 8192 < n + 2 ? k + 8192 : n + 2)
        rc = resp_feed(&r, line, k, &used);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    ASSERT_INT_EQ(rc, RESP_DONE);
    ASSERT_UINT_EQ(used, n + 2);
    ASSERT_INT_EQ(r.nodes[0].type, RESP_STATUS);
    ASSERT_UINT_EQ(r.nodes[0].n, n - 1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    ASSERT(secs < 3.0);
    resp_free(&r);
    free(line);
}

TEST_MAIN("resp",
          T(test_simple_values), T(test_bulks_hold_any_bytes), T(test_nested_arrays_as_a_tape),
          T(test_replies_back_to_back), T(test_bad_replies_are_named), T(test_limits_bound_memory),
          T(test_long_line_in_pieces_is_scanned_once))
