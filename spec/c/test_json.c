/*
 * test_json.c: the strict JSON parser and writer (src/json), without Lua.
 */
#include "../../src/json/json.h"
#include "test.h"

#include <math.h>

static int parse(json_tape *t, const char *s, char *err)
{
    return json_parse(t, s, strlen(s), JSON_TOP_OBJECT, err, 256);
}

static void t_int64_edges(void)
{
    json_tape t = { 0 };
    char err[256];
    ASSERT_INT_EQ(parse(&t, "{\"a\":9223372036854775807,\"b\":-9223372036854775808,\"c\":18446744073709551615,"
                            "\"d\":9007199254740993,\"e\":9007199254740992}", err), 0);
    ASSERT(t.nodes[2].flags & JSON_I64);
    ASSERT_INT_EQ(t.nodes[2].v.i, INT64_MAX);
    ASSERT(t.nodes[4].flags & JSON_I64);
    ASSERT(t.nodes[4].v.i == INT64_MIN);
    ASSERT(t.nodes[6].flags & JSON_U64);
    ASSERT_UINT_EQ(t.nodes[6].v.u, UINT64_MAX);
    ASSERT(t.nodes[8].flags & JSON_I64);
    ASSERT_INT_EQ(t.nodes[8].v.i, 9007199254740993LL);
    ASSERT(t.nodes[10].flags & JSON_INT);
    json_tape_free(&t);
}

static void t_rejects_leading_zero(void)
{
    json_tape t = { 0 };
    char err[256];
    ASSERT_INT_EQ(parse(&t, "{\"a\":01}", err), -1);
    ASSERT_STR_EQ(err, "malformed JSON at byte 6: invalid number: leading zero");
    json_tape_free(&t);
}

static void expect_error(const char *text, size_t len, int opts, const char *want)
{
    json_tape t = { 0 };
    char err[256];
    int rc = json_parse(&t, text, len, opts, err, sizeof err);
    json_tape_free(&t);
    if (rc != -1)
        FAILF("accepted %s", text);
    ASSERT_STR_EQ(err, want);
}

static void t_errors_name_the_byte(void)
{
    expect_error("{\"a\":+1}", 8, JSON_TOP_OBJECT, "malformed JSON at byte 6: invalid number: a leading '+' is not allowed");
    expect_error("{\"a\":1.}", 8, JSON_TOP_OBJECT, "malformed JSON at byte 8: invalid number: a digit must follow '.'");
    expect_error("{\"a\":0x1F}", 10, JSON_TOP_OBJECT, "malformed JSON at byte 7: invalid number");
    expect_error("{\"a\":\"x\ty\"}", 12, JSON_TOP_OBJECT,
                 "malformed JSON at byte 8: control character 0x09 in a string (it must be escaped)");
    expect_error("{\"a\":\"x\0y\"}", 12, JSON_TOP_OBJECT,
                 "malformed JSON at byte 8: a NUL byte in a string (write it as \\u0000)");
    expect_error("{\"a\":1}\0", 8, JSON_TOP_OBJECT,
                 "malformed JSON at byte 8: a NUL byte where the end of the line (one JSON value per line) was expected");
    expect_error("\xef\xbb\xbf{}", 5, JSON_TOP_OBJECT, "malformed JSON at byte 1: a byte-order mark (U+FEFF) at the start");
    expect_error("{\"a\":\"\xc0\xaf\"}", 10, JSON_TOP_OBJECT, "malformed JSON at byte 7: invalid UTF-8 (byte 0xc0) in a string");
    expect_error("{\"a\":\"\xed\xa0\x80\"}", 11, JSON_TOP_OBJECT, "malformed JSON at byte 7: invalid UTF-8 (byte 0xed) in a string");
    expect_error("{\"a\":\"\xf4\x90\x80\x80\"}", 12, JSON_TOP_OBJECT, "malformed JSON at byte 7: invalid UTF-8 (byte 0xf4) in a string");
    expect_error("{\"a\":\"\\ud800\"}", 14, JSON_TOP_OBJECT,
                 "malformed JSON at byte 7: a high surrogate escape must be followed by a low one (\\uDC00-\\uDFFF)");
    expect_error("{\"a\":\"\\udc00\"}", 14, JSON_TOP_OBJECT,
                 "malformed JSON at byte 7: a lone low surrogate escape (\\uDC00-\\uDFFF) is not a character");
    expect_error("{\"a\":NaN}", 9, JSON_TOP_OBJECT,
                 "malformed JSON at byte 6: invalid literal (JSON has true, false and null; not NaN or Infinity)");
    expect_error("{\"a\":1,}", 8, JSON_TOP_OBJECT, "malformed JSON at byte 8: '}' where a string key was expected");
    expect_error("{\"a\":1e400}", 11, JSON_TOP_OBJECT,
                 "malformed JSON at byte 6: number out of range (beyond a double's largest value)");
    expect_error("[1]", 3, JSON_TOP_OBJECT, "malformed JSON at byte 1: a record must be a JSON object ({...})");
    expect_error("{\"a\":1} x", 9, JSON_TOP_OBJECT,
                 "malformed JSON at byte 9: 'x' where the end of the line (one JSON value per line) was expected");
    expect_error("{\"a\":[1,2}", 10, JSON_TOP_OBJECT, "malformed JSON at byte 10: '}' where ',' or ']' was expected");
    expect_error("{\"a\":\"abc", 9, JSON_TOP_OBJECT, "malformed JSON at byte 6: unterminated string");
}

static void t_depth_limit(void)
{
    char buf[2100];
    json_tape t = { 0 };
    char err[256];
    size_t n = 0;
    for (int i = 0; i < 1000; i++)
        buf[n++] = '[';
    for (int i = 0; i < 1000; i++)
        buf[n++] = ']';
    ASSERT_INT_EQ(json_parse(&t, buf, n, 0, err, sizeof err), 0);
    ASSERT_INT_EQ(t.max_depth, 1000);
    n = 0;
    for (int i = 0; i < 1001; i++)
        buf[n++] = '[';
    for (int i = 0; i < 1001; i++)
        buf[n++] = ']';
    ASSERT_INT_EQ(json_parse(&t, buf, n, 0, err, sizeof err), -1);
    ASSERT_STR_EQ(err, "malformed JSON at byte 1001: nesting deeper than 1000 levels");
    json_tape_free(&t);
}

static void t_numbers_read_exactly(void)
{
    /* The fast path must agree with strtod on every number it takes. */
    uint64_t x = 88172645463325252ULL;
    json_tape t = { 0 };
    char err[256], text[96], num[48];
    for (int i = 0; i < 200000; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        int digits = (int)(x % 17) + 1, frac = (int)((x >> 8) % (unsigned)(digits + 1)), e = (int)((x >> 16) % 61) - 30;
        uint64_t m = (x >> 20) % 10000000000000000ULL;
        int len = snprintf(num, sizeof num, "%llu", (unsigned long long)m);
        if (len > digits)
            len = digits;
        num[len] = 0;
        if (frac > 0 && frac < len)
            snprintf(text, sizeof text, "{\"n\":%.*s.%se%d}", len - frac, num, num + len - frac, e);
        else
            snprintf(text, sizeof text, "{\"n\":%se%d}", num, e);
        if (num[0] == '0' && len > 1 && !(frac > 0 && frac < len && len - frac == 1))
            continue; /* a leading zero: not JSON */
        if (json_parse(&t, text, strlen(text), JSON_TOP_OBJECT, err, sizeof err) != 0)
            FAILF("%s: %s", text, err);
        double want = strtod(text + 5, NULL);
        if (memcmp(&want, &t.nodes[2].v.d, sizeof want) != 0)
            FAILF("%s: %.17g != strtod's %.17g", text, t.nodes[2].v.d, want);
    }
    json_tape_free(&t);
}

/* What json_fmt_double wrote for non-integers before its printf-free
 * path: the fewest of 15, 16, 17 digits of "%.*g" that read back. */
static void fmt_reference(char *out, double d)
{
    for (int prec = fabs(d) < 2.2250738585072014e-308 ? 1 : 15; prec <= 17; prec++) {
        snprintf(out, 40, "%.*g", prec, d);
        if (strtod(out, NULL) == d)
            break;
    }
}

static void check_like_printf(double d)
{
    if (!isfinite(d) || d == floor(d))
        return;
    char got[40], want[40];
    json_fmt_double(got, d);
    fmt_reference(want, d);
    if (strcmp(got, want) != 0)
        FAILF("%.17g written as %s, printf's way gives %s", d, got, want);
}

/* The printf-free path gives printf's bytes: short decimals of every
 * length and scale (m / 10^k), their neighbours one ulp away, computed
 * values, both signs, the ends of its range. */
static void t_fmt_double_short_is_printf_exact(void)
{
    uint64_t x = 0x2545f4914f6cdd1dULL;
    for (int i = 0; i < 300000; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        int digits = 1 + (int)(x % 17), k = (int)((x >> 8) % 21);
        uint64_t m = (x >> 16) % 100000000000000000ULL;
        uint64_t lim = 1;
        for (int j = 0; j < digits; j++)
            lim *= 10;
        m %= lim;
        double d = (double)m;
        for (int j = 0; j < k; j++)
            d /= 10;
        if (x & 1)
            d = -d;
        check_like_printf(d);
        check_like_printf(nextafter(d, INFINITY));
        check_like_printf(nextafter(d, -INFINITY));
        check_like_printf(d * 1.1);
        check_like_printf(d / 7);
    }
    for (int i = 1; i < 100000; i++) {
        check_like_printf(i * 0.1);
        check_like_printf(i * 0.001 + 0.0002);
        check_like_printf(1.0 / i);
    }
    double edges[] = { 1e-4, 0.00010000000000000002, 9.9999999999999e-5, 999999999999999.9, 99999999999999.98,
                       1e15 - 0.5, 0.1 + 0.2, 123456.789, 0.30000000000000004, 5e-324, 2.2250738585072014e-308 };
    for (size_t i = 0; i < sizeof edges / sizeof edges[0]; i++) {
        check_like_printf(edges[i]);
        check_like_printf(-edges[i]);
    }
}

static void t_fmt_double_round_trips(void)
{
    uint64_t x = 0x9e3779b97f4a7c15ULL;
    char out[40];
    for (int i = 0; i < 200000; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        double d;
        memcpy(&d, &x, sizeof d);
        if (!isfinite(d))
            continue;
        int n = json_fmt_double(out, d);
        ASSERT(n > 0);
        double back = strtod(out, NULL);
        if (memcmp(&back, &d, sizeof d) != 0)
            FAILF("%.17g written as %s", d, out);
    }
    ASSERT_INT_EQ(json_fmt_double(out, 0.1), 3);
    ASSERT_STR_EQ(out, "0.1");
    json_fmt_double(out, 9007199254740992.0);
    ASSERT_STR_EQ(out, "9007199254740992");
    json_fmt_double(out, -0.0);
    ASSERT_STR_EQ(out, "-0");
    json_fmt_double(out, 1e300);
    ASSERT_STR_EQ(out, "1e+300");
    ASSERT_INT_EQ(json_fmt_double(out, NAN), -1);
    json_fmt_i64(out, INT64_MIN);
    ASSERT_STR_EQ(out, "-9223372036854775808");
    json_fmt_u64(out, UINT64_MAX);
    ASSERT_STR_EQ(out, "18446744073709551615");
}

static void t_unescape_and_duplicates(void)
{
    json_tape t = { 0 };
    char err[256];
    const char *s = "{\"k\":\"a\\u00e9\\ud83d\\ude00\\n\\/\",\"k\":2,\"\\u006b\":3,\"z\":4}";
    ASSERT_INT_EQ(json_parse(&t, s, strlen(s), JSON_TOP_OBJECT, err, sizeof err), 0);
    mw_buf b = { NULL, 0, 0 };
    ASSERT_INT_EQ(json_unescape(s, &t.nodes[2], &b), 0);
    ASSERT_INT_EQ(b.len, 9);
    ASSERT(memcmp(b.p, "a\xc3\xa9\xf0\x9f\x98\x80\n/", 9) == 0);
    ASSERT(!(t.nodes[1].flags & JSON_DUP));
    ASSERT(t.nodes[3].flags & JSON_DUP);  /* "k" again */
    ASSERT(t.nodes[5].flags & JSON_DUP);  /* "\u006b" is "k" too */
    ASSERT(!(t.nodes[7].flags & JSON_DUP));
    ASSERT_INT_EQ(json_member(&t, s, 0, "k", 1), 6); /* the last one */
    ASSERT_INT_EQ(json_member(&t, s, 0, "zz", 2), -1);
    free(b.p);
    json_tape_free(&t);
}

static void t_many_duplicates_sorted_path(void)
{
    mw_buf b = { NULL, 0, 0 };
    mw_buf_add(&b, "{", 1);
    for (int i = 0; i < 100; i++) {
        char m[32];
        int n = snprintf(m, sizeof m, "%s\"k%d\":%d", i ? "," : "", i % 40, i);
        mw_buf_add(&b, m, (size_t)n);
    }
    mw_buf_add(&b, "}", 1);
    json_tape t = { 0 };
    char err[256];
    ASSERT_INT_EQ(json_parse(&t, b.p, b.len, JSON_TOP_OBJECT, err, sizeof err), 0);
    int dups = 0;
    uint32_t k = 1;
    for (int i = 0; i < 100; i++, k = t.nodes[k + 1].end) {
        int is_dup = (t.nodes[k].flags & JSON_DUP) != 0;
        ASSERT_INT_EQ(is_dup, i >= 40);
        dups += is_dup;
    }
    ASSERT_INT_EQ(dups, 60);
    free(b.p);
    json_tape_free(&t);
}

static void t_put_bytes_is_always_json(void)
{
    mw_buf b = { NULL, 0, 0 };
    int lossy;
    ASSERT_INT_EQ(json_put_bytes(&b, "a\0b\xff\xc3\xa9\"", 7, &lossy), 0);
    ASSERT_INT_EQ(lossy, 1);
    ASSERT_INT_EQ(b.len, strlen("\"a\\u0000b\\u00ff\xc3\xa9\\\"\""));
    ASSERT(memcmp(b.p, "\"a\\u0000b\\u00ff\xc3\xa9\\\"\"", b.len) == 0);
    b.len = 0;
    ASSERT_INT_EQ(json_put_string(&b, "x/\x7f\x1f", 4), 0);
    ASSERT(b.len == 11 && memcmp(b.p, "\"x/\x7f\\u001f\"", 11) == 0);
    free(b.p);
}

/* A log line: the fields in order, the time in RFC 3339 UTC with ms, the
 * message escaped whatever its bytes, unknown fields left out. */
static void t_logline(void)
{
    mw_buf b = { NULL, 0, 0 };
    mw_log_ctx at = { .file = "s\"q.lua", .line = 12, .seq = 5, .generation = 2, .script = 1 };
    mw_log_rec r = { MW_LOG_WARN, 1764558245678LL, "hi\0\n\xff", 5, &at, NULL, 0 };
    ASSERT_INT_EQ(json_logline(&b, &r), 0);
    mw_buf_add(&b, "", 1);
    ASSERT_STR_EQ(b.p, "{\"time\":\"2025-12-01T03:04:05.678Z\",\"level\":\"warn\",\"msg\":\"hi\\u0000\\n\\u00ff\","
                       "\"file\":\"s\\\"q.lua\",\"line\":12,\"seq\":5,\"generation\":2}");
    b.len = 0;
    mw_log_num nums[] = { { "records_in", 3 }, { "rate", 2.5 }, { "eta_s", 1.0 / 0.0 } };
    mw_log_rec s = { MW_LOG_INFO, 0, "stats", 5, NULL, nums, 3 };
    ASSERT_INT_EQ(json_logline(&b, &s), 0);
    mw_buf_add(&b, "", 1);
    ASSERT_STR_EQ(b.p, "{\"time\":\"1970-01-01T00:00:00.000Z\",\"level\":\"info\",\"msg\":\"stats\","
                       "\"records_in\":3,\"rate\":2.5,\"eta_s\":null}");
    char t[32];
    ASSERT_INT_EQ(json_format_time(t, -1), 24);
    ASSERT_STR_EQ(t, "1969-12-31T23:59:59.999Z");
    free(b.p);
}

/* util/log.c's signal-safe clock text agrees with gmtime_r's (through
 * json_format_time) on every day from 1970 to 2100 (leap days, 2000, the
 * turn of each month and year), at odd times of day and before 1970. */
static void t_signal_safe_time(void)
{
    char a[32], b[32];
    for (int64_t day = -800; day < 47500; day++) {
        int64_t ms = day * 86400000LL + (day * 7919 % 86400000 + 86400000) % 86400000;
        ASSERT_INT_EQ((int)mw_log_format_time(a, ms), json_format_time(b, ms));
        ASSERT_STR_EQ(a, b);
    }
    mw_log_format_time(a, 951782400000LL + 999); /* 2000-02-29 */
    ASSERT_STR_EQ(a, "2000-02-29T00:00:00.999Z");
    mw_log_format_time(a, -1);
    ASSERT_STR_EQ(a, "1969-12-31T23:59:59.999Z");
}

/* json_tape_copy (--workers hands a worker the main thread's tape): the
 * copy is the parse, node for node and count for count, into an empty
 * tape, a smaller one (grown) and a larger one (reused). */
static void t_tape_copy(void)
{
    const char *txt = "{\"a\":1.50,\"a\":[1,\"\\n\",{\"b\":12345678901234567890}],\"c\":null}";
    json_tape src = { 0 }, empty = { 0 }, small = { 0 }, big = { 0 };
    char err[128];
    ASSERT_INT_EQ(json_parse(&src, txt, strlen(txt), JSON_TOP_OBJECT, err, sizeof err), 0);
    ASSERT_INT_EQ(json_parse(&small, "{}", 2, JSON_TOP_OBJECT, err, sizeof err), 0);
    ASSERT_INT_EQ(json_parse(&big, "[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20]", 52, 0, err, sizeof err), 0);
    json_tape *dsts[] = { &empty, &small, &big };
    for (int i = 0; i < 3; i++) {
        json_tape *d = dsts[i];
        ASSERT_INT_EQ(json_tape_copy(d, &src), 0);
        ASSERT_UINT_EQ(d->n, src.n);
        ASSERT(d->cap >= src.n);
        ASSERT(memcmp(d->nodes, src.nodes, src.n * sizeof *src.nodes) == 0);
        ASSERT_UINT_EQ(d->dups, src.dups);
        ASSERT_UINT_EQ(d->escaped, src.escaped);
        ASSERT_UINT_EQ(d->bigints, src.bigints);
        ASSERT_UINT_EQ(d->containers, src.containers);
        ASSERT_UINT_EQ(d->keys, src.keys);
        ASSERT_UINT_EQ(d->max_depth, src.max_depth);
        json_tape_free(d);
    }
    ASSERT_UINT_EQ(src.dups, 1);
    json_tape_free(&src);
}

TEST_MAIN("json", T(t_int64_edges), T(t_rejects_leading_zero), T(t_errors_name_the_byte), T(t_depth_limit),
          T(t_numbers_read_exactly), T(t_fmt_double_round_trips), T(t_fmt_double_short_is_printf_exact), T(t_unescape_and_duplicates),
          T(t_many_duplicates_sorted_path), T(t_put_bytes_is_always_json), T(t_logline), T(t_signal_safe_time), T(t_tape_copy))
