/*
 * metrics.h: a registry of Prometheus metrics (counters, gauges,
 * histograms, with labels) and its text exposition format 0.0.4. Plain C:
 * no libuv, no Lua; the run fills it (src/app/expose.c), scripts add to it
 * (src/lua/mod_metrics.c), the endpoint (src/net/httpd.c) serves what
 * metrics_render writes.
 *
 * A registry owns its families, a family its series (one per set of label
 * values). Nothing is freed before metrics_free: a family or series pointer
 * stays valid for the registry's life, so callers keep them (a Lua metric
 * object holds its family) and an observation is a lookup at most.
 * Observations allocate nothing once the series exists; a histogram's bucket
 * is found by binary search on its (small, sorted) bounds.
 */
#ifndef MW_METRICS_H
#define MW_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

typedef enum { METRIC_COUNTER = 0, METRIC_GAUGE, METRIC_HISTOGRAM } metric_type;

/* At most this many label names on a family, and bucket bounds on a
 * histogram. */
#define METRICS_MAX_LABELS 16
#define METRICS_MAX_BUCKETS 64
/* At most this many families in a registry: a name made per record (a
 * user id in it) would otherwise grow memory, each registration's lookup
 * and every scrape without bound, as label sets past their cap do not. */
#define METRICS_MAX_FAMILIES 1000

typedef struct metrics metrics;
typedef struct metric metric;
typedef struct metric_series metric_series;

/* A registry whose families each hold at most `max_series` series (label
 * sets); NULL when out of memory. */
metrics *metrics_new(size_t max_series);
void metrics_free(metrics *m);

/* The family `name` of type t with these label names (and, for a
 * histogram, these bucket bounds: strictly increasing finite numbers; none
 * given: the defaults of metrics_default_buckets), registering it when
 * new. The same name again with the same type, labels and buckets is the
 * same family (help may differ: the first stays). NULL with why in err: a
 * name or label name that Prometheus refuses, a reserved label (`le` on a
 * histogram, a name starting with `__`), a duplicate label, a name taken
 * with another type, labels or buckets, bad buckets, out of memory. */
metric *metrics_family(metrics *m, metric_type t, const char *name, const char *help, size_t nlabels,
                       const char *const *labels, size_t nbuckets, const double *buckets, char *err,
                       size_t errlen);

/* The family named `name`, or NULL. */
metric *metrics_find(const metrics *m, const char *name);

metric_type metrics_type(const metric *f);
size_t metrics_nlabels(const metric *f);
const char *metrics_name(const metric *f);

/* The series of these label values (n must equal the family's label
 * count; values are any bytes, lens given), creating it on first use.
 * NULL with why in err: a wrong count, the family's series cap reached
 * (nothing is created past it: the caller decides what to say), out of
 * memory. A family without labels has one series, returned at once. */
metric_series *metrics_series(metric *f, size_t n, const char *const *values, const size_t *lens, char *err,
                              size_t errlen);

/* Counter: add v (>= 0: the caller checks). Gauge: add v (any sign). */
void metrics_add(metric_series *s, double v);
/* Gauge (or a counter mirrored from a count kept elsewhere): set. */
void metrics_set(metric_series *s, double v);
/* Histogram: count v in its bucket, its sum and its count. */
void metrics_observe(metric_series *s, double v);
/* The value of a counter or gauge; a histogram's count. */
double metrics_value(const metric_series *s);

/* Append the exposition text of every family in registration order
 * (`# HELP`, `# TYPE`, then the samples; a family with no series is
 * written with its HELP and TYPE only). 0, or -1 out of memory. */
int metrics_render(const metrics *m, mw_buf *out);

/* A number as Prometheus reads it: integers without a fraction, others in
 * the shortest form that reads back the same, NaN, +Inf, -Inf. Returns the
 * length written into b (at least 32 bytes). */
size_t metrics_fmt_double(char *b, size_t n, double v);

/* The default bucket bounds, in seconds: 0.0005 .. 60. */
extern const double metrics_default_buckets[];
extern const size_t metrics_default_nbuckets;

/* Is `name` a valid metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)? */
int metrics_valid_name(const char *name);

#endif
