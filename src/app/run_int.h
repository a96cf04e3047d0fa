/*
 * run_int.h: one run's state, shared by the two files of the run and by
 * no other: run.c (start and stop, signals, what the other parts ask of
 * the run) and flow.c (the operator's callbacks, the pump, the phases and
 * the end). Every other part keeps its own state behind its own header and
 * hears from the run only through calls; it reports back through the
 * callbacks it was given.
 */
#ifndef MW_RUN_INT_H
#define MW_RUN_INT_H

#include <stdint.h>
#include <uv.h>

#include "../io/sink.h"
#include "../io/source.h"
#include "../op/adapt.h"
#include "../op/op.h"
#include "../util/log.h"
#include "checkpoint.h"
#include "config.h"
#include "evtime.h"
#include "expose.h"
#include "limit.h"
#include "reload.h"
#include "restore.h"
#include "route.h"
#include "stats.h"
#include "task.h"
#include "timeouts.h"
#include "workers.h"

/* Stop reading while this much output is waiting to be written. */
#define OUTPUT_HIGH_WATER (4u * 1024 * 1024)

enum { OPENING, RUNNING, CLOSING, DRAINING, DONE };

/* How a failure stops the run: ABORT abandons what is in flight at once;
 * DRAIN stops reading but lets in-flight records finish (a signal). */
enum { ABORT, DRAIN };

typedef struct run {
    const config *cfg;
    uv_loop_t *loop;
    op op;
    adapt adapt;              /* adaptive capacity (cfg->adaptive): its controller */
    evtime ev;
    route route;
    task_env env;
    gens gens;
    restore rs;
    cp cp;
    stats st;
    timeouts tmo;
    limit lim;                /* rate_limit (off without one) */
    mw_source *src;
    mw_sink *out, *dlq;       /* dlq: --dead-letter (NULL without) */
    uv_signal_t sigint, sigterm;
    int signals;
    int phase;
    int pumping;
    int input_ended;          /* the source ended */
    int stop_reading;         /* failure or signal: accept nothing more */
    int aborting;             /* in-flight records were abandoned */
    int exit_code;
    int signal_exit;          /* 130/143: a signal's checkpoint was taken */
    int signal_drain;         /* ... or a broker's records in flight drain */
    int drains_left;          /* sinks still flushing at the end */
    uint64_t outputs;         /* output lines written */
    uint64_t rng;             /* xorshift state for retry jitter */
    expose *mx;               /* --metrics: the endpoint and the histograms, or NULL */
    uint64_t started_ms;      /* uv_now at the start (checkpoint age before the first) */
    const char *lua_dir;      /* the shipped Lua modules (workers load from it) */
    workers *wk;              /* --workers N >= 2: the other workers, or NULL */
    size_t main_busy;         /* attempts running on this thread (task.c) */
} run;

/* flow.c, for run.c */
extern const op_callbacks flow_op_callbacks;
/* Pull records into the operator while it has room (not re-entered). */
void flow_pump(run *r);
/* Start closing once the input ended (or the run failed) and the queue is
 * empty or abandoned. */
void flow_finish_if_done(run *r);
/* Fail the run (exit 1), printing the message unless one came first. */
void flow_fail(run *r, int how, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* The same about a record (its seq and generation in a JSON log line). */
void flow_fail_about(run *r, int how, const mw_log_ctx *about, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Every generation has closed (CLOSING): flush the sinks. */
void flow_all_closed(run *r);
/* Close every handle (DONE). */
void flow_shutdown(void *r);
/* The source's and sinks' callbacks (ud = the run). */
void flow_source_ready(void *ud);
void flow_out_written(void *ud);
void flow_out_error(void *ud);
void flow_dlq_error(void *ud);
/* The rate limit's next token is there (ud = the run). */
void flow_limit_ready(void *ud);
/* The deadline timer fired (ud = the run). */
void flow_timeouts_fired(void *ud);

#endif
