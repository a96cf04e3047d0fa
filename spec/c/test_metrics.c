/*
 * test_metrics.c: the metrics registry (src/util/metrics.c): names and
 * labels Prometheus refuses, re-registration (same: the same family;
 * another type, labels or buckets: an error), series by label values and
 * their cap, counters and gauges, histogram buckets (le is "less or
 * equal", +Inf, sum, count, cumulative in the text), escaping of HELP and
 * label values, and number formatting.
 */
#include <math.h>

#include "../../src/util/metrics.h"
#include "test.h"

static char err[256];

static char *render(metrics *m)
{
    mw_buf b = { 0 };
    ASSERT_INT_EQ(metrics_render(m, &b), 0);
    ASSERT(mw_buf_add(&b, "", 1) == 0);
    return b.p;
}

static int contains(const char *hay, const char *needle)
{
    if (!strstr(hay, needle)) {
        fprintf(stderr, "  missing: %s\n  in:\n%s\n", needle, hay);
        return 0;
    }
    return 1;
}

static metric_series *series(metric *f, const char *a, const char *b)
{
    const char *v[2] = { a, b };
    size_t l[2] = { a ? strlen(a) : 0, b ? strlen(b) : 0 };
    size_t n = b ? 2 : a ? 1 : 0;
    return metrics_series(f, n, v, l, err, sizeof err);
}

static void test_bad_names_are_refused(void)
{
    metrics *m = metrics_new(10);
    const char *bad_label[] = { "9x" }, *reserved[] = { "__x" }, *le[] = { "le" }, *twice[] = { "a", "a" },
               *colon[] = { "a:b" };
    ASSERT(!metrics_family(m, METRIC_COUNTER, "", "h", 0, NULL, 0, NULL, err, sizeof err));
    ASSERT(!metrics_family(m, METRIC_COUNTER, "1abc", "h", 0, NULL, 0, NULL, err, sizeof err));
    ASSERT(!metrics_family(m, METRIC_COUNTER, "a-b", "h", 0, NULL, 0, NULL, err, sizeof err));
    ASSERT(strstr(err, "bad metric name 'a-b'"));
    ASSERT(!metrics_family(m, METRIC_COUNTER, "x", "h", 1, bad_label, 0, NULL, err, sizeof err));
    ASSERT(strstr(err, "bad label name '9x'"));
    ASSERT(!metrics_family(m, METRIC_COUNTER, "x", "h", 1, reserved, 0, NULL, err, sizeof err));
    ASSERT(!metrics_family(m, METRIC_COUNTER, "x", "h", 1, colon, 0, NULL, err, sizeof err));
    ASSERT(!metrics_family(m, METRIC_HISTOGRAM, "x", "h", 1, le, 0, NULL, err, sizeof err));
    ASSERT(strstr(err, "'le' is reserved"));
    ASSERT(metrics_family(m, METRIC_COUNTER, "le_ok", "h", 1, le, 0, NULL, err, sizeof err)); /* only histograms */
    ASSERT(!metrics_family(m, METRIC_COUNTER, "x", "h", 2, twice, 0, NULL, err, sizeof err));
    ASSERT(strstr(err, "given twice"));
    ASSERT(metrics_family(m, METRIC_GAUGE, "ns:sub_name", "h", 0, NULL, 0, NULL, err, sizeof err));
    double unsorted[] = { 1, 0.5 }, inf[] = { 1, INFINITY };
    ASSERT(!metrics_family(m, METRIC_HISTOGRAM, "h1", "h", 0, NULL, 2, unsorted, err, sizeof err));
    ASSERT(strstr(err, "increasing"));
    ASSERT(!metrics_family(m, METRIC_HISTOGRAM, "h2", "h", 0, NULL, 2, inf, err, sizeof err));
    metrics_free(m);
}

static void test_same_family_again_and_conflicts(void)
{
    metrics *m = metrics_new(10);
    const char *l1[] = { "a" }, *l2[] = { "b" };
    metric *f = metrics_family(m, METRIC_COUNTER, "c", "help", 1, l1, 0, NULL, err, sizeof err);
    ASSERT(f);
    ASSERT(metrics_family(m, METRIC_COUNTER, "c", "other help", 1, l1, 0, NULL, err, sizeof err) == f);
    ASSERT(!metrics_family(m, METRIC_GAUGE, "c", "help", 1, l1, 0, NULL, err, sizeof err));
    ASSERT(strstr(err, "already registered as a counter"));
    ASSERT(!metrics_family(m, METRIC_COUNTER, "c", "help", 1, l2, 0, NULL, err, sizeof err));
    ASSERT(strstr(err, "other labels"));
    ASSERT(!metrics_family(m, METRIC_COUNTER, "c", "help", 0, NULL, 0, NULL, err, sizeof err));
    double b1[] = { 1, 2 }, b2[] = { 1, 3 };
    metric *h = metrics_family(m, METRIC_HISTOGRAM, "h", "help", 0, NULL, 2, b1, err, sizeof err);
    ASSERT(h);
    ASSERT(metrics_family(m, METRIC_HISTOGRAM, "h", "help", 0, NULL, 2, b1, err, sizeof err) == h);
    ASSERT(!metrics_family(m, METRIC_HISTOGRAM, "h", "help", 0, NULL, 2, b2, err, sizeof err));
    ASSERT(metrics_find(m, "h") == h);
    ASSERT(metrics_find(m, "nope") == NULL);
    metrics_free(m);
}

/* A histogram's samples are name_bucket, name_count and name_sum: a family
 * of one of those names beside it, in either order, is refused (the text
 * would be ambiguous: Prometheus refuses the whole scrape). */
static void test_histogram_sample_names_collide(void)
{
    metrics *m = metrics_new(10);
    ASSERT(metrics_family(m, METRIC_HISTOGRAM, "lat", "h", 0, NULL, 0, NULL, err, sizeof err));
    ASSERT(!metrics_family(m, METRIC_GAUGE, "lat_count", "g", 0, NULL, 0, NULL, err, sizeof err));
    ASSERT(strstr(err, "collides with the histogram 'lat'"));
    ASSERT(!metrics_family(m, METRIC_COUNTER, "lat_sum", "c", 0, NULL, 0, NULL, err, sizeof err));
    ASSERT(!metrics_family(m, METRIC_HISTOGRAM, "lat_bucket", "c", 0, NULL, 0, NULL, err, sizeof err));
    ASSERT(metrics_family(m, METRIC_GAUGE, "lat_total", "g", 0, NULL, 0, NULL, err, sizeof err));
    ASSERT(metrics_family(m, METRIC_GAUGE, "_sum", "g", 0, NULL, 0, NULL, err, sizeof err));
    ASSERT(metrics_family(m, METRIC_COUNTER, "q_count", "c", 0, NULL, 0, NULL, err, sizeof err));
    ASSERT(!metrics_family(m, METRIC_HISTOGRAM, "q", "h", 0, NULL, 0, NULL, err, sizeof err));
    ASSERT(strstr(err, "collides with the counter 'q_count'"));
    ASSERT(metrics_family(m, METRIC_HISTOGRAM, "lat", "h", 0, NULL, 0, NULL, err, sizeof err)); /* itself again */
    char *t = render(m);
    ASSERT(!strstr(t, "# TYPE lat_count") && !strstr(t, "# TYPE q "));
    free(t);
    metrics_free(m);
}

/* Names made per record would grow the registry without bound: past
 * METRICS_MAX_FAMILIES a new one is refused; those there are still found. */
static void test_family_cap(void)
{
    metrics *m = metrics_new(10);
    char name[32];
    for (int i = 0; i < METRICS_MAX_FAMILIES; i++) {
        snprintf(name, sizeof name, "f%d", i);
        ASSERT(metrics_family(m, METRIC_COUNTER, name, "h", 0, NULL, 0, NULL, err, sizeof err));
    }
    ASSERT(!metrics_family(m, METRIC_COUNTER, "one_more", "h", 0, NULL, 0, NULL, err, sizeof err));
    ASSERT(strstr(err, "limit of 1000 metrics"));
    ASSERT(metrics_family(m, METRIC_COUNTER, "f7", "h", 0, NULL, 0, NULL, err, sizeof err));
    metrics_free(m);
}

static void test_series_by_values_and_cap(void)
{
    metrics *m = metrics_new(3);
    const char *l[] = { "a", "b" };
    metric *f = metrics_family(m, METRIC_COUNTER, "c", "h", 2, l, 0, NULL, err, sizeof err);
    metric_series *s1 = series(f, "x", "y");
    ASSERT(s1);
    ASSERT(series(f, "x", "y") == s1);
    metric_series *s2 = series(f, "xy", "");
    ASSERT(s2 && s2 != s1);
    ASSERT(series(f, "", "xy") != s2);
    ASSERT(!series(f, "q", "r")); /* the fourth: past the cap of 3 */
    ASSERT(strstr(err, "limit of 3 label sets"));
    ASSERT(series(f, "x", "y") == s1); /* existing ones still found */
    ASSERT(!series(f, "x", NULL));
    ASSERT(strstr(err, "has 2 labels, got 1 value"));
    metrics_add(s1, 2);
    metrics_add(s1, 0.5);
    ASSERT(metrics_value(s1) == 2.5);
    /* binary label values */
    const char *v[2] = { "a\0b", "c" };
    size_t len[2] = { 3, 1 };
    metric_series *b = metrics_series(f, 2, v, len, err, sizeof err);
    ASSERT(!b); /* cap */
    metrics_free(m);
    m = metrics_new(100);
    f = metrics_family(m, METRIC_COUNTER, "c", "h", 2, l, 0, NULL, err, sizeof err);
    b = metrics_series(f, 2, v, len, err, sizeof err);
    ASSERT(b && metrics_series(f, 2, v, len, err, sizeof err) == b);
    len[0] = 1;
    ASSERT(metrics_series(f, 2, v, len, err, sizeof err) != b);
    /* many series: the table grows, each still found */
    char name[16];
    metric_series *all[90];
    for (int i = 0; i < 90; i++) {
        snprintf(name, sizeof name, "v%d", i);
        ASSERT((all[i] = series(f, name, "z")));
    }
    for (int i = 0; i < 90; i++) {
        snprintf(name, sizeof name, "v%d", i);
        ASSERT(series(f, name, "z") == all[i]);
    }
    metrics_free(m);
}

static void test_histogram_buckets(void)
{
    metrics *m = metrics_new(10);
    double b[] = { 0.1, 1, 10 };
    metric *h = metrics_family(m, METRIC_HISTOGRAM, "lat_seconds", "Latency.", 0, NULL, 3, b, err, sizeof err);
    metric_series *s = series(h, NULL, NULL);
    ASSERT(s);
    metrics_observe(s, 0.1);  /* le: on the bound counts in it */
    metrics_observe(s, 0.05);
    metrics_observe(s, 1.5);
    metrics_observe(s, 100);  /* +Inf only */
    metrics_observe(s, 10);
    char *t = render(m);
    ASSERT(contains(t, "# HELP lat_seconds Latency.\n# TYPE lat_seconds histogram\n"));
    ASSERT(contains(t, "lat_seconds_bucket{le=\"0.1\"} 2\n"));
    ASSERT(contains(t, "lat_seconds_bucket{le=\"1\"} 2\n"));
    ASSERT(contains(t, "lat_seconds_bucket{le=\"10\"} 4\n"));
    ASSERT(contains(t, "lat_seconds_bucket{le=\"+Inf\"} 5\n"));
    ASSERT(contains(t, "lat_seconds_sum 111.65\n"));
    ASSERT(contains(t, "lat_seconds_count 5\n"));
    free(t);
    /* default buckets, with a label */
    const char *l[] = { "host" };
    metric *d = metrics_family(m, METRIC_HISTOGRAM, "d", "", 1, l, 0, NULL, err, sizeof err);
    metrics_observe(series(d, "a", NULL), 0.0007);
    t = render(m);
    ASSERT(contains(t, "d_bucket{host=\"a\",le=\"0.0005\"} 0\n"));
    ASSERT(contains(t, "d_bucket{host=\"a\",le=\"0.001\"} 1\n"));
    ASSERT(contains(t, "d_bucket{host=\"a\",le=\"60\"} 1\n"));
    ASSERT(contains(t, "d_bucket{host=\"a\",le=\"+Inf\"} 1\n"));
    free(t);
    metrics_free(m);
}

static void test_text_escapes_and_order(void)
{
    metrics *m = metrics_new(10);
    const char *l[] = { "v" };
    metric *c = metrics_family(m, METRIC_COUNTER, "a_total", "Back\\slash and\nnewline \"quoted\".", 1, l, 0, NULL,
                               err, sizeof err);
    metric *g = metrics_family(m, METRIC_GAUGE, "b", "A gauge.", 0, NULL, 0, NULL, err, sizeof err);
    metric *e = metrics_family(m, METRIC_COUNTER, "c_total", "No series yet.", 1, l, 0, NULL, err, sizeof err);
    (void)e;
    metrics_add(series(c, "q\"uo\\te\nnl", NULL), 3);
    metrics_set(series(g, NULL, NULL), -1.5);
    char *t = render(m);
    ASSERT(contains(t, "# HELP a_total Back\\\\slash and\\nnewline \"quoted\".\n"));
    ASSERT(contains(t, "a_total{v=\"q\\\"uo\\\\te\\nnl\"} 3\n"));
    ASSERT(contains(t, "# TYPE b gauge\nb -1.5\n"));
    ASSERT(contains(t, "# HELP c_total No series yet.\n# TYPE c_total counter\n"));
    ASSERT(strstr(t, "a_total") < strstr(t, "# HELP b ")); /* registration order */
    free(t);
    metrics_free(m);
}

/* Prometheus refuses a scrape whose label value or HELP is not UTF-8: none
 * gets in. */
static void test_label_values_and_help_must_be_utf8(void)
{
    metrics *m = metrics_new(10);
    const char *l[] = { "v" };
    ASSERT(!metrics_family(m, METRIC_GAUGE, "g", "bad \xff help", 0, NULL, 0, NULL, err, sizeof err));
    ASSERT(strstr(err, "help text is not UTF-8"));
    metric *f = metrics_family(m, METRIC_COUNTER, "c", "h", 1, l, 0, NULL, err, sizeof err);
    static const char *const bad[] = { "\xff", "a\xc3", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80",
                                       "\xe2\x82", "\x80", NULL };
    for (int i = 0; bad[i]; i++) {
        if (series(f, bad[i], NULL))
            FAILF("took label value %d", i);
        ASSERT(strstr(err, "label value 1 is not UTF-8"));
    }
    static const char *const good[] = { "plain", "caf\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80", "", NULL };
    for (int i = 0; good[i]; i++)
        if (!series(f, good[i], NULL))
            FAILF("refused label value %d: %s", i, err);
    metrics_free(m);
}

static void test_number_format(void)
{
    char b[40];
    metrics_fmt_double(b, sizeof b, 3);
    ASSERT_STR_EQ(b, "3");
    metrics_fmt_double(b, sizeof b, -0.25);
    ASSERT_STR_EQ(b, "-0.25");
    metrics_fmt_double(b, sizeof b, 0.1);
    ASSERT_STR_EQ(b, "0.1");
    metrics_fmt_double(b, sizeof b, 1e20);
    ASSERT_STR_EQ(b, "1e+20");
    metrics_fmt_double(b, sizeof b, NAN);
    ASSERT_STR_EQ(b, "NaN");
    metrics_fmt_double(b, sizeof b, INFINITY);
    ASSERT_STR_EQ(b, "+Inf");
    metrics_fmt_double(b, sizeof b, -INFINITY);
    ASSERT_STR_EQ(b, "-Inf");
    metrics_fmt_double(b, sizeof b, 1.0 / 3);
    ASSERT(strtod(b, NULL) == 1.0 / 3);
    metrics_fmt_double(b, sizeof b, 9007199254740993.0);
    ASSERT(strtod(b, NULL) == 9007199254740993.0);
}

TEST_MAIN("metrics", T(test_bad_names_are_refused), T(test_same_family_again_and_conflicts),
          T(test_histogram_sample_names_collide), T(test_family_cap),
          T(test_series_by_values_and_cap), T(test_histogram_buckets), T(test_text_escapes_and_order),
          T(test_label_values_and_help_must_be_utf8), T(test_number_format))
