/*
 * metrics_int.h: the registry's structs, shared by metrics.c (families,
 * series, values) and metrics_text.c (the exposition text). Nothing else
 * includes it: callers go through metrics.h.
 */
#ifndef MW_METRICS_INT_H
#define MW_METRICS_INT_H

#include <stddef.h>
#include <stdint.h>

#include "metrics.h"

struct metric_series {
    metric_series *hnext;     /* next in its hash chain */
    metric_series *next;      /* creation order */
    uint64_t hash;
    char **values;            /* the label values (owned), lens in vlens */
    size_t *vlens;
    double value;             /* counter, gauge */
    double sum;               /* histogram */
    uint64_t count;
    uint64_t *buckets;        /* histogram: per bound, not cumulative; [nb] is +Inf */
    const metric *fam;
};

struct metric {
    metric *next;             /* registration order */
    metric_type type;
    char *name, *help;
    size_t nlabels;
    char *labels[METRICS_MAX_LABELS];
    size_t nb;                /* histogram bounds */
    double *bounds;
    metric_series *first, *last;
    metric_series **table;    /* hash chains, ntable a power of two */
    size_t ntable, nseries, max_series;
};

struct metrics {
    metric *first, *last;
    size_t nfamilies;
    size_t max_series;
};

/* The TYPE line's word for t. */
static inline const char *metrics_type_name(metric_type t)
{
    return t == METRIC_COUNTER ? "counter" : t == METRIC_GAUGE ? "gauge" : "histogram";
}

#endif
