/*
 * expose.h: --metrics: the run's Prometheus metrics and the endpoint that
 * serves them (README: "Metrics").
 *
 * Counters and most gauges cost nothing per record: they are read at
 * scrape time from the run's own counters (the operator's op_stats, the
 * routes, the generations) through a view the run fills (expose knows
 * nothing of the run's struct). The three histograms are observed per
 * attempt and per record by task.c and flow.c, on uv_hrtime stamps the
 * task keeps only while --metrics is set (env->mx non-NULL); without
 * --metrics none of this exists and the stamps are not taken.
 *
 * The endpoint is net/httpd.c on the run's loop; its handles do not keep
 * the loop alive, and expose_close (at the run's DONE) closes them.
 */
#ifndef MW_EXPOSE_H
#define MW_EXPOSE_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "../io/source.h"
#include "../op/op.h"

/* What a scrape reads from the run, as of now. */
typedef struct expose_view {
    const op_stats *op;
    uint64_t outputs, skipped, malformed;
    uint64_t reloads, rejected;
    size_t in_flight;         /* records in the operator (watermarks not counted) */
    size_t queued;            /* finished, waiting behind earlier records to leave */
    size_t backoffs;          /* waiting to retry */
    size_t capacity;
    int generation, generations_live;
    int checkpoints;          /* --checkpoint-dir is set: the age below means something */
    double checkpoint_age_s;  /* since the last checkpoint written (or the run's start) */
    int healthy;              /* reading or about to: 200 on /healthz */
    const char *state;        /* /healthz's word: "running", "opening", "draining", "failing" */
    mw_source *src;           /* asked for its backlog (source_lag), or NULL */
    int workers;              /* --workers */
    size_t worker_attempts[64]; /* attempts running on each worker now ([0]: worker 1) */
} expose_view;

typedef struct expose expose;

/* Start the endpoint on host:port for the run (view(ud, v) fills v at each
 * scrape). 0, or -1 with the message said (naming --metrics and the
 * address): the run does not start (exit 2). */
int expose_start(expose **out, uv_loop_t *loop, const char *flag_value, const char *host, int port,
                 void (*view)(void *ud, expose_view *v), void *ud);

/* Close the endpoint and free everything (NULL: nothing). */
void expose_close(expose *x);

/* The clock of the stamps: uv_hrtime, in ns. */
static inline uint64_t expose_now(void) { return uv_hrtime(); }

/* An attempt that started at start_ns ended at now_ns (outcome or timeout). */
void expose_attempt(expose *x, uint64_t start_ns, uint64_t now_ns);

/* A record leaves the operator at now_ns: read at read_ns (0: unknown, a
 * restored record), finished at done_ns (0: unknown), and `at_once` when
 * it left in the call that finished it (no head-of-line wait). */
void expose_emit(expose *x, uint64_t read_ns, uint64_t done_ns, int at_once, uint64_t now_ns);

/* The record whose completion is being applied (the operator may emit it
 * and the records behind it in the same call), or NULL after. */
void expose_completing(expose *x, const void *task);
const void *expose_completing_task(const expose *x);

#endif
