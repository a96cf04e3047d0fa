/*
 * stats.h: --stats: progress on stderr while the run goes and a summary at
 * the end. On a terminal (text format) the progress is one live line
 * rewritten in place, with percent done and ETA when the input's size is
 * known; elsewhere (a pipe, a file, --log-format json) a line every second.
 * Owns the timer and the rate bookkeeping; the counters come from the run
 * through a view it fills on demand (stats knows nothing of the run's
 * struct). The names are the metrics' (README, "--stats").
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
    size_t in_flight;     /* entries in the operator (what --capacity bounds) */
    size_t queued;        /* of those, records finished and waiting behind earlier ones */
    size_t backoffs;      /* of those, records waiting to retry */
    uint64_t outputs;     /* output lines written */
    uint64_t skipped, malformed;
    int generation, reloads, rejected;
    int adaptive;         /* adaptive capacity: its limit now, min and max */
    size_t limit, limit_min, limit_max;
    int limited;          /* a rate limit is set: the three below are shown */
    uint64_t limit_tokens, limit_pauses, limit_gated;
    int workers;          /* --workers (the main thread included) */
    int has_size;         /* the input's size is known (a regular file): */
    uint64_t input_bytes, input_size; /* bytes of it read so far, and its size */
} stats_view;

typedef struct stats {
    uv_loop_t *loop;
    uv_timer_t timer;
    int enabled;
    int live;             /* the progress is a terminal's live line */
    uint64_t start_ms, last_ms, last_out;
    double rate;          /* records_out/s over the last second or more */
    uint64_t start_bytes; /* input_bytes when the run started (a restore starts mid-file) */
    void (*view)(void *ud, stats_view *v);
    void *ud;
} stats;

/* Set up; the run's elapsed time counts from here. */
void stats_init(stats *s, uv_loop_t *loop, int enabled, void (*view)(void *ud, stats_view *v), void *ud);
/* Make the timer (close it with stats_stop) and start the progress (when
 * enabled). Called once the source is at its starting position. */
void stats_start(stats *s);
/* Clear the live line, print the summary (when enabled) and close the
 * timer; `closed` runs when it has closed. */
void stats_stop(stats *s, uv_close_cb closed);

#endif
