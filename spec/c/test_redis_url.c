/* test_redis_url.c: the Redis Streams names (src/io/redis_url.c) and the
 * cluster helpers (src/net/redis_cluster.c): key slots, the CLUSTER SLOTS
 * reply, MOVED / ASK. */
#include <string.h>

#include "../../src/io/redis_url.h"
#include "../../src/net/redis_cluster.h"
#include "test.h"

static void expect_error(const char *url, int role, const char *want)
{
    redis_url u;
    char err[300] = "";
    ASSERT_INT_EQ(redis_url_parse(&u, url, role, err, sizeof err), -1);
    ASSERT_STR_EQ(err, want);
}

static void test_a_source_with_every_parameter(void)
{
    redis_url u;
    char err[300] = "";
    ASSERT_INT_EQ(redis_url_parse(&u,
                                  "redis://:p%40ss@127.0.0.1:6380?stream=ev%20s&group=g&consumer=c1&field=body&count=7"
                                  "&claim_idle_ms=250&max_deliveries=3&start=$&until=empty",
                                  REDIS_URL_SOURCE, err, sizeof err),
                  0);
    ASSERT_STR_EQ(u.password, "p@ss");
    redis_url_free(&u);
    ASSERT_INT_EQ(redis_url_parse(&u, "redis://:a@b@127.0.0.1:6380?stream=ev%20s&group=g", REDIS_URL_SOURCE, err,
                                  sizeof err),
                  0);
    ASSERT_STR_EQ(u.password, "a@b"); /* (a raw '@' in a password: the last one ends it) */
    redis_url_free(&u);
    ASSERT_INT_EQ(redis_url_parse(&u,
                                  "redis://:p%40ss@127.0.0.1:6380?stream=ev%20s&group=g&consumer=c1&field=body&count=7"
                                  "&claim_idle_ms=250&max_deliveries=3&start=$&until=empty",
                                  REDIS_URL_SOURCE, err, sizeof err),
                  0);
    ASSERT_STR_EQ(u.hosts[0].host, "127.0.0.1");
    ASSERT_INT_EQ(u.hosts[0].port, 6380);
    ASSERT_STR_EQ(u.stream, "ev s");
    ASSERT_STR_EQ(u.group, "g");
    ASSERT_STR_EQ(u.consumer, "c1");
    ASSERT_STR_EQ(u.field, "body");
    ASSERT_UINT_EQ(u.count, 7);
    ASSERT_UINT_EQ(u.claim_idle_ms, 250);
    ASSERT_UINT_EQ(u.max_deliveries, 3);
    ASSERT_STR_EQ(u.start, "$");
    ASSERT_INT_EQ(u.until_empty, 1);
    ASSERT_INT_EQ(u.cluster, 0);
    redis_url_free(&u);
}

static void test_defaults(void)
{
    redis_url u;
    char err[300] = "";
    ASSERT_INT_EQ(redis_url_parse(&u, "redis://[::1]:6379/?stream=s&group=g", REDIS_URL_SOURCE, err, sizeof err), 0);
    ASSERT_STR_EQ(u.hosts[0].host, "::1");
    ASSERT(u.password == NULL && u.consumer == NULL);
    ASSERT_STR_EQ(u.field, "data");
    ASSERT_STR_EQ(u.start, "0");
    ASSERT_UINT_EQ(u.claim_idle_ms, 30000);
    ASSERT_UINT_EQ(u.max_deliveries, 5);
    ASSERT_INT_EQ(u.until_empty, 0);
    redis_url_free(&u);
    ASSERT_INT_EQ(redis_url_parse(&u, "redis://h:1?stream=o&maxlen=1000", REDIS_URL_SINK, err, sizeof err), 0);
    ASSERT_UINT_EQ(u.maxlen, 1000);
    redis_url_free(&u);
}

static void test_a_cluster_with_seeds_and_partitions(void)
{
    redis_url u;
    char err[300] = "";
    ASSERT_INT_EQ(redis_url_parse(&u, "redis+cluster://a:7001,b:7002,c:7003?stream=in&partitions=4&group=g",
                                  REDIS_URL_SOURCE, err, sizeof err),
                  0);
    ASSERT_INT_EQ(u.cluster, 1);
    ASSERT_UINT_EQ(u.nhosts, 3);
    ASSERT_STR_EQ(u.hosts[2].host, "c");
    ASSERT_INT_EQ(u.hosts[2].port, 7003);
    ASSERT_UINT_EQ(u.partitions, 4);
    char *k = redis_url_key(&u, 3);
    ASSERT_STR_EQ(k, "in{3}");
    free(k);
    redis_url_free(&u);
}

static void test_mistakes_name_the_parameter(void)
{
    expect_error("redis://h:1?strem=s&group=g", REDIS_URL_SOURCE,
                 "unknown parameter \"strem\" (known: stream, group, consumer, field, count, claim_idle_ms, "
                 "max_deliveries, start, until, partitions)");
    expect_error("redis://h:1?stream=s", REDIS_URL_SOURCE, "parameter \"group\" is required for an input");
    expect_error("redis://h:1?group=g", REDIS_URL_SOURCE, "parameter \"stream\" is required");
    expect_error("redis://h:1?stream=s&group=g", REDIS_URL_SINK, "parameter \"group\" is for an input, not an output");
    expect_error("redis://h:1?stream=s&maxlen=5&group=g", REDIS_URL_SOURCE,
                 "parameter \"maxlen\" is for an output, not an input");
    expect_error("redis://h:1?stream=s&group=g&count=0", REDIS_URL_SOURCE,
                 "parameter \"count\" must be a whole number from 1 to 100000, not \"0\"");
    expect_error("redis://h:1?stream=s&group=g&until=never", REDIS_URL_SOURCE,
                 "parameter \"until\" must be \"empty\", not \"never\"");
    expect_error("redis://h:1?stream=s&stream=t&group=g", REDIS_URL_SOURCE, "parameter \"stream\" is given twice");
    expect_error("redis://h:1?stream&group=g", REDIS_URL_SOURCE,
                 "parameter \"stream\" has no value (expected name=value)");
    expect_error("redis://h?stream=s&group=g", REDIS_URL_SOURCE, "bad host \"h\": expected HOST:PORT");
    expect_error("redis://h:99999?stream=s&group=g", REDIS_URL_SOURCE, "bad host \"h:99999\": expected HOST:PORT");
    expect_error("redis://a:1,b:2?stream=s&group=g", REDIS_URL_SOURCE, "several hosts need redis+cluster://");
    expect_error("redis://user:pw@h:1?stream=s&group=g", REDIS_URL_SOURCE,
                 "the password goes as :PASSWORD@ (a user name is not supported)");
    expect_error("redis://:pw%zz@h:1?stream=s&group=g", REDIS_URL_SOURCE, "bad %-escape in the password");
    expect_error("redis://h:1?stream=a%00b&group=g", REDIS_URL_SOURCE, "bad %-escape in \"stream=a%00b\"");
    expect_error("redis://h:1?stream=s&group=g&start=latest", REDIS_URL_SOURCE,
                 "parameter \"start\" must be 0, $ or an entry id (MS-SEQ), not \"latest\"");
    expect_error("rediss://h:1?stream=s&group=g", REDIS_URL_SOURCE,
                 "TLS to Redis (rediss://) is not supported: use redis:// on a trusted network");
    ASSERT(redis_url_is("rediss://h:1?stream=s") && redis_url_is("redis+cluster://h:1") && !redis_url_is("redis.jsonl") &&
           !redis_url_is("redisdir/x://y"));
    expect_error("redis+cluster://h:1?stream=s&group=g", REDIS_URL_SOURCE,
                 "parameter \"partitions\" is required with redis+cluster://");
    expect_error("redis://h:1?stream=s&group=g&partitions=2", REDIS_URL_SOURCE,
                 "parameter \"partitions\" needs redis+cluster://");
    expect_error("redis+cluster://h:1?stream=s{x}&group=g&partitions=2", REDIS_URL_SOURCE,
                 "parameter \"stream\": the partitions add the {i} hash tag themselves");
    /* numbers are digits only: strtoull's leading white space (a tab, a
     * %-escaped one, a vertical tab) was taken */
    expect_error("redis://h:1?stream=s&group=g&count=%0920", REDIS_URL_SOURCE,
                 "parameter \"count\" must be a whole number from 1 to 100000, not \"\t20\"");
    expect_error("redis://h:1?stream=s&group=g&max_deliveries=%0B3", REDIS_URL_SOURCE,
                 "parameter \"max_deliveries\" must be a whole number from 1 to 1000000, not \"\v3\"");
    expect_error("redis://h:1?stream=s&maxlen=+5", REDIS_URL_SINK,
                 "parameter \"maxlen\" must be a whole number from 1 to 9223372036854775807, not \"+5\"");
    expect_error("redis://h:\t7?stream=s&group=g", REDIS_URL_SOURCE, "bad host \"h:\t7\": expected HOST:PORT");
    expect_error("redis://h:\n7?stream=s&group=g", REDIS_URL_SOURCE, "bad host \"h:\n7\": expected HOST:PORT");
}

static void test_same_node(void)
{
    redis_url a, b, c;
    char err[300];
    ASSERT_INT_EQ(redis_url_parse(&a, "redis://:x@h:1?stream=in&group=g", REDIS_URL_SOURCE, err, sizeof err), 0);
    ASSERT_INT_EQ(redis_url_parse(&b, "redis://:x@h:1?stream=out", REDIS_URL_SINK, err, sizeof err), 0);
    ASSERT_INT_EQ(redis_url_parse(&c, "redis://h:1?stream=out", REDIS_URL_SINK, err, sizeof err), 0);
    ASSERT(redis_url_same_node(&a, &b));
    ASSERT(!redis_url_same_node(&a, &c)); /* (another password: another user) */
    redis_url_free(&a);
    redis_url_free(&b);
    redis_url_free(&c);
}

/* A password with an unescaped @ or ? once came back, in part, in the
 * message ("bad host \"ss:w\"", "bad host \":pa\""). */
static void test_an_unescaped_password_is_not_echoed(void)
{
    const char *want = "expected :PASSWORD@HOST:PORT (%-escape an @, ?, /, # or % in the password: %40, %3F, %2F, "
                       "%23, %25)";
    expect_error("redis://:pa?ss@h:1?stream=s&group=g", REDIS_URL_SOURCE, want);
    expect_error("redis://:pa?ss@h:1", REDIS_URL_SINK, want);
    expect_error("redis://:p@ss:w@h?stream=s&group=g", REDIS_URL_SOURCE,
                 "bad host: expected HOST:PORT after the password (%-escape an @, ?, /, # or % in it: %40, %3F, "
                 "%2F, %23, %25)");
    /* an @ in it is taken as it is (the host follows the last @) */
    redis_url u;
    char err[300] = "";
    ASSERT_INT_EQ(redis_url_parse(&u, "redis://:p@ss:w@h:1?stream=s&group=g", REDIS_URL_SOURCE, err, sizeof err), 0);
    ASSERT_STR_EQ(u.password, "p@ss:w");
    ASSERT_STR_EQ(u.hosts[0].host, "h");
    redis_url_free(&u);
}

/* An output naming the input's own stream. */
static void test_same_stream(void)
{
    ASSERT(redis_url_same_stream("redis://h:1?stream=s&group=g", "redis://h:1?stream=s"));
    ASSERT(redis_url_same_stream("redis://h:1/?stream=s&group=g&until=empty", "redis://h:1?stream=s&maxlen=5"));
    ASSERT(redis_url_same_stream("redis+cluster://a:1?stream=s&partitions=2&group=g",
                                 "redis+cluster://a:1?stream=s&partitions=2"));
    ASSERT(!redis_url_same_stream("redis://h:1?stream=s&group=g", "redis://h:1?stream=t"));
    ASSERT(!redis_url_same_stream("redis://h:1?stream=s&group=g", "redis://h:2?stream=s"));
    ASSERT(!redis_url_same_stream("redis://h:1?stream=s&group=g", "out.jsonl"));
    ASSERT(!redis_url_same_stream("redis://h:1?stream=s&group=g", NULL));
    ASSERT(!redis_url_same_stream("redis://h:1?stream=s", "redis://h:1?stream=s")); /* (no group: refused on open) */
}

static void test_key_slots_match_redis(void)
{
    /* (values from a real server's CLUSTER KEYSLOT) */
    ASSERT_UINT_EQ(redis_key_slot("foo", 3), 12182);
    ASSERT_UINT_EQ(redis_key_slot("in{0}", 5), 13907);
    ASSERT_UINT_EQ(redis_key_slot("out{0}", 6), 13907); /* the tag decides */
    ASSERT_UINT_EQ(redis_key_slot("{}x", 3), 10595);    /* an empty tag is no tag */
    ASSERT_UINT_EQ(redis_key_slot("a{b}c{d}", 8), 3300);
}

static void test_slots_and_redirections(void)
{
    /* CLUSTER SLOTS: [[0, 5460, ["", 7001, "id"]], [5461, 16383, ["10.0.0.2", 7002, "id2"]]] */
    static const char reply[] = "*2\r\n"
                                "*3\r\n:0\r\n:5460\r\n*3\r\n$0\r\n\r\n:7001\r\n$2\r\nid\r\n"
                                "*3\r\n:5461\r\n:16383\r\n*3\r\n$8\r\n10.0.0.2\r\n:7002\r\n$3\r\nid2\r\n";
    resp_reader r;
    size_t used;
    resp_init(&r, 1 << 20, 1000, 8);
    ASSERT_INT_EQ(resp_feed(&r, reply, sizeof reply - 1, &used), RESP_DONE);
    redis_slots m;
    ASSERT_INT_EQ(redis_slots_parse(&m, &r, reply, "seed"), 0);
    ASSERT_UINT_EQ(m.n, 2);
    const redis_slot_range *n = redis_slots_find(&m, 100);
    ASSERT_STR_EQ(n->host, "seed"); /* an empty host is the one asked */
    ASSERT_INT_EQ(n->port, 7001);
    n = redis_slots_find(&m, 16383);
    ASSERT_STR_EQ(n->host, "10.0.0.2");
    ASSERT_INT_EQ(n->port, 7002);
    redis_slots_free(&m);
    resp_free(&r);

    int ask, port;
    uint16_t slot;
    char host[64];
    ASSERT_INT_EQ(redis_redirect_parse("MOVED 3999 127.0.0.1:6381", &ask, &slot, host, sizeof host, &port), 1);
    ASSERT_INT_EQ(ask, 0);
    ASSERT_UINT_EQ(slot, 3999);
    ASSERT_STR_EQ(host, "127.0.0.1");
    ASSERT_INT_EQ(port, 6381);
    ASSERT_INT_EQ(redis_redirect_parse("ASK 1 ::1:7000", &ask, &slot, host, sizeof host, &port), 1);
    ASSERT_INT_EQ(ask, 1);
    ASSERT_STR_EQ(host, "::1");
    ASSERT_INT_EQ(redis_redirect_parse("MOVED 99999 h:1", &ask, &slot, host, sizeof host, &port), 0);
    ASSERT_INT_EQ(redis_redirect_parse("MOVED 1 h:", &ask, &slot, host, sizeof host, &port), 0);
    ASSERT_INT_EQ(redis_redirect_parse("MOVED 3999 :6380", &ask, &slot, host, sizeof host, &port), 1);
    ASSERT_STR_EQ(host, "");
    ASSERT_INT_EQ(port, 6380);
    ASSERT_INT_EQ(redis_redirect_parse("ERR x", &ask, &slot, host, sizeof host, &port), 0);
}

/* A CLUSTER SLOTS range is refused unless 0 <= lo <= hi < 16384 and its
 * port is 1..65535 (they were cut to 16 bits and an int: slot 16384 became
 * 0, port 88315 was kept as is). */
static void expect_slots_refused(const char *reply)
{
    resp_reader r;
    size_t used;
    resp_init(&r, 1 << 20, 1000, 8);
    ASSERT_INT_EQ(resp_feed(&r, reply, strlen(reply), &used), RESP_DONE);
    redis_slots m;
    ASSERT_INT_EQ(redis_slots_parse(&m, &r, reply, "seed"), -1);
    ASSERT(m.r == NULL && m.n == 0);
    resp_free(&r);
}

static void test_slots_out_of_range_are_refused(void)
{
#define RANGE(lo, hi, port) "*1\r\n*3\r\n:" lo "\r\n:" hi "\r\n*3\r\n$1\r\nh\r\n:" port "\r\n$2\r\nid\r\n"
    expect_slots_refused(RANGE("8192", "16383", "88315")); /* found by fuzz_redis */
    expect_slots_refused(RANGE("0", "16383", "0"));
    expect_slots_refused(RANGE("0", "16383", "-1"));
    expect_slots_refused(RANGE("0", "16384", "7000"));
    expect_slots_refused(RANGE("-1", "10", "7000"));
    expect_slots_refused(RANGE("10", "9", "7000"));
    expect_slots_refused(RANGE("65536", "65537", "7000"));
    /* the edges are fine */
    static const char ok[] = RANGE("0", "16383", "65535");
#undef RANGE
    resp_reader r;
    size_t used;
    resp_init(&r, 1 << 20, 1000, 8);
    ASSERT_INT_EQ(resp_feed(&r, ok, sizeof ok - 1, &used), RESP_DONE);
    redis_slots m;
    ASSERT_INT_EQ(redis_slots_parse(&m, &r, ok, "seed"), 0);
    ASSERT(m.n == 1 && m.r[0].lo == 0 && m.r[0].hi == 16383 && m.r[0].port == 65535);
    redis_slots_free(&m);
    resp_free(&r);
}

TEST_MAIN("redis_url",
          T(test_a_source_with_every_parameter), T(test_defaults), T(test_a_cluster_with_seeds_and_partitions),
          T(test_mistakes_name_the_parameter), T(test_same_node), T(test_an_unescaped_password_is_not_echoed),
          T(test_same_stream), T(test_key_slots_match_redis), T(test_slots_and_redirections),
          T(test_slots_out_of_range_are_refused))
