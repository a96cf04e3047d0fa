/*
 * adapt.h: adaptive capacity. A controller that moves the operator's
 * in-flight limit between a minimum and a maximum from what the records'
 * attempts report: how long each took (attempt start to outcome) and
 * whether it saw an overload (an HTTP 429/503, a record timeout,
 * ctx.overloaded()). Plain C: no libuv, no Lua; time comes from the
 * caller (the operator's clock, whole ms), so spec/c/test_adapt.c drives it
 * with a manual clock. The host (src/app/task.c) feeds it one sample per
 * attempt and applies adapt_limit() with op_set_capacity().
 *
 * The rule: AIMD on overload signals, a gradient test on latency, as in
 * Netflix's concurrency-limits (AIMDLimit and Gradient2) but simpler:
 *  - Slow start. The limit starts at `min` and doubles every latency
 *    window (one round trip) until the first decrease, or `max`.
 *  - Overload: limit *= ADAPT_BACKOFF at once, but at most once per round
 *    trip: a signal from an attempt that started before the last decrease
 *    is ignored (it reports on the old limit, already punished), so a
 *    burst of 503s from one overload does not collapse the limit to min.
 *  - Latency, once per window (at least one round trip and a few samples
 *    that started after the last decrease): the baseline `long_rtt` is a
 *    moving average of past windows. A window whose majority of samples
 *    took more than ADAPT_TOLERANCE x baseline is a slowdown: limit *=
 *    max(0.5, tolerance x baseline / window mean). A median test, so a few
 *    outliers never decrease; samples are clipped at 2 x tolerance x
 *    baseline before they enter the mean, so one huge one cannot drag it.
 *  - Otherwise the window increases the limit (x2 in slow start, else
 *    + sqrt(limit)), but only when it was used: some sample saw at least
 *    half the limit in flight. An idle pipeline keeps its limit.
 *  - The baseline follows a faster service at once (a recovering service
 *    is the new normal), never a slower one while the limit can still
 *    fall (our own queueing must not become the norm), and a slower one
 *    at min slowly (a sustained slowdown is then accepted).
 *  - Every ADAPT_PROBE_EVERY used windows, one probe window at a quarter
 *    of the limit re-measures the baseline (BBR's ProbeRTT): else a
 *    service that was slow at first, or a queue we built before the
 *    baseline was set, keeps the limit far too high.
 */
#ifndef MW_ADAPT_H
#define MW_ADAPT_H

#include <stddef.h>
#include <stdint.h>

#define ADAPT_BACKOFF 0.7    /* multiplicative decrease on an overload */
#define ADAPT_TOLERANCE 2.0  /* a sample slower than this x baseline is slow */
#define ADAPT_MIN_SAMPLES 8  /* a window needs this many (or limit/2, if less) */
#define ADAPT_LONG_WEIGHT 0.1 /* baseline's weight of a slow window at min */
#define ADAPT_PROBE_EVERY 50 /* used windows between two probe windows */

typedef struct adapt {
    double min, max;
    double limit;
    int slow_start;        /* doubling per window until the first decrease */
    int has_cut;           /* a decrease happened: cut_at is valid */
    uint64_t cut_at;       /* time of the last decrease */
    double long_rtt;       /* baseline latency (ms); 0 = none yet */
    int probing;           /* this window runs at a quarter of `saved` */
    double saved;          /* the limit to go back to after the probe */
    uint32_t since_probe;  /* used windows since the last probe */
    /* the latency window being filled */
    uint64_t win_start;
    uint32_t win_n;        /* samples in it */
    uint32_t win_slow;     /* of those, slower than tolerance x baseline */
    double win_sum;        /* their (clipped) latencies */
    size_t win_inflight;   /* the most in flight any of them saw */
    /* counters, for tests and --stats */
    uint64_t increases, decreases, overloads;
} adapt;

/* Start at `min` in slow start; `now` opens the first window. min >= 1,
 * max >= min (the caller validated them). */
void adapt_init(adapt *a, size_t min, size_t max, uint64_t now);

/* One attempt ended at `now`: it started at `started`; `inflight` entries
 * were in the operator when it ended; `overload` nonzero when it signalled
 * one (429/503, timeout, ctx.overloaded()). Returns the limit after it. */
size_t adapt_sample(adapt *a, uint64_t started, uint64_t now, size_t inflight, int overload);

/* The current limit, an integer in [min, max]. */
size_t adapt_limit(const adapt *a);

#endif
