/*
 * stats.h: --stats: a progress line on stderr every second and a summary
 * at the end. Owns the timer and the rate bookkeeping; the counters come
 * from the run through a view it fills on demand (stats knows nothing of
 * the run's struct).
 */
#ifndef MW_STATS_H
#define MW_STATS_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "../op/op.h"

/* The counters a line shows, as of now. */
typedef struct stats_view {
    const op_stats *op;
    size_t in_flight, backoffs;
    uint64_t outputs;     /* output lines written */
    uint64_t skipped, malformed;
    int generation, reloads, rejected;
    int adaptive;         /* adaptive capacity: its limit now, min and max */
    size_t limit, limit_min, limit_max;
    int limited;          /* a rate limit is set: the three below are shown */
    uint64_t limit_tokens, limit_pauses, limit_gated;
} stats_view;

typedef struct stats {
    uv_loop_t *loop;
    uv_timer_t timer;
    int enabled;
    uint64_t start_ms, last_ms, last_out;
    void (*view)(void *ud, stats_view *v);
    void *ud;
} stats;

/* Set up; the run's elapsed time counts from here. */
void stats_init(stats *s, uv_loop_t *loop, int enabled, void (*view)(void *ud, stats_view *v), void *ud);
/* Make the timer (close it with stats_stop) and start the progress lines
 * (when enabled). */
void stats_start(stats *s);
/* Print the summary (when enabled) and close the timer; `closed` runs
 * when it has closed. */
void stats_stop(stats *s, uv_close_cb closed);

#endif
