/*
 * run.c: one run's lifecycle and its pump: source -> operator -> sinks.
 *
 * Phases: OPENING (the first generation's open() runs; nothing is read),
 * RUNNING (pump() pulls records from the source into the operator while it
 * has room and the output's backlog is under its high-water mark), CLOSING
 * (the input ended or the run failed, and the queue is empty or abandoned:
 * every generation's close() runs), DRAINING (the sinks flush; a clean end
 * commits the final checkpoint), DONE (handles closing).
 *
 * This is the hub: it owns every handle of the run (signals; through the
 * files below, the timers) and wires the others, which never call it back
 * except through the callbacks it gives them: the operator's (op_callbacks),
 * the generations' (gen_events), the checkpoint's (cp_host), the source's
 * and sinks' (on_ready, on_written, on_error). Per-record work is task.c's,
 * failure routing route.c's, the deadline timer timeouts.c's, --stats
 * stats.c's, checkpoints checkpoint.c's and restore.c's, generations
 * reload.c's.
 */
#define _GNU_SOURCE
#include "run.h"

#include <inttypes.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "../io/io.h"
#include "../lua/guard.h"
#include "../net/dns.h"
#include "../net/pool.h"
#include "../net/tls.h"
#include "checkpoint.h"
#include "evtime.h"
#include "opview.h"
#include "reload.h"
#include "restore.h"
#include "route.h"
#include "stats.h"
#include "task.h"
#include "timeouts.h"

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
    evtime ev;
    route route;
    task_env env;
    gens gens;
    restore rs;
    cp cp;
    stats st;
    timeouts tmo;
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
    int drains_left;          /* sinks still flushing at the end */
    uint64_t outputs;         /* output lines written */
    uint64_t rng;             /* xorshift state for retry jitter */
} run;

static void pump(run *r);
static void finish_if_done(run *r);
static void fail_run(run *r, int how, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* ---- operator callbacks ------------------------------------------------------- */

static uint64_t cb_now(void *ud)
{
    return uv_now(((run *)ud)->loop);
}

static void cb_emit(void *ud, op_entry *e)
{
    run *r = ud;
    if (e->dlq_len)
        sink_write(r->dlq, e->dlq, e->dlq_len);
    if (!e->out_len)
        return;
    for (const char *s = e->out, *end = e->out + e->out_len; (s = memchr(s, '\n', (size_t)(end - s))); s++)
        r->outputs++;
    /* The sink takes the bytes (a large fan-out is not copied again). */
    sink_write_owned(r->out, e->out, e->out_len);
    e->out = NULL;
    e->out_len = 0;
}

static void cb_emit_watermark(void *ud, int64_t wm)
{
    run *r = ud;
    char b[64];
    int n = snprintf(b, sizeof b, "{\"$watermark\":%" PRId64 "}\n", wm);
    sink_write(r->out, b, (size_t)n);
}

static void cb_timeout(void *ud, op_entry *e)
{
    task_timeout(&((run *)ud)->env, e);
}

static void cb_failure(void *ud, op_entry *e)
{
    run *r = ud;
    const task *t = e->udata;
    size_t len = 0;
    char *msg = route_fatal_message(e, t && task_lineno(t) && e->seq && task_line(t, &len));
    fail_run(r, ABORT, "%s", msg ? msg : "run failed");
    free(msg);
}

static void cb_release(void *ud, op_entry *e)
{
    (void)ud;
    task_release(e);
}

/* A record's back-off ended: its next attempt starts from the raw line. */
static void cb_retry(void *ud, op_entry *e)
{
    run *r = ud;
    if (r->stop_reading && r->aborting)
        return;
    task_retry(&r->env, e);
}

static double cb_random(void *ud)
{
    run *r = ud;
    r->rng ^= r->rng << 13;
    r->rng ^= r->rng >> 7;
    r->rng ^= r->rng << 17;
    return (double)(r->rng >> 11) / 9007199254740992.0;
}

/* ---- failing ------------------------------------------------------------------ */

static void abandon_all(run *r)
{
    for (op_entry *e = opv_first(&r->op); e; e = opv_next(e))
        task_discard(e->udata);
}

static void fail_run(run *r, int how, const char *fmt, ...)
{
    if (r->exit_code == 0) {
        char *msg = NULL;
        va_list ap;
        va_start(ap, fmt);
        if (vasprintf(&msg, fmt, ap) < 0)
            msg = NULL;
        va_end(ap);
        fprintf(stderr, "moonwait: %s\n", msg ? msg : "run failed");
        free(msg);
        r->exit_code = 1;
    }
    r->stop_reading = 1;
    if (how == ABORT) {
        r->aborting = 1;
        abandon_all(r);
    }
}

/* ---- the end ------------------------------------------------------------------ */

static void shutdown_all(void *ud)
{
    run *r = ud;
    r->phase = DONE;
    cp_stop(&r->cp);
    timeouts_stop(&r->tmo);
    stats_stop(&r->st, NULL); /* the summary, with --stats */
    timeouts_close(&r->tmo, NULL);
    uv_close((uv_handle_t *)&r->sigint, NULL);
    uv_close((uv_handle_t *)&r->sigterm, NULL);
    op_free(&r->op);
    gen_stop_triggers(&r->gens);
    /* After the VMs (closed by gen_close_all): nothing can take a pooled
     * connection any more. */
    net_pool_close_all();
    dns_cache_clear();
    tls_cleanup();
    source_close(r->src, NULL);
    sink_close(r->out, NULL);
    if (r->dlq)
        sink_close(r->dlq, NULL);
}

static void sink_drained(void *ud)
{
    run *r = ud;
    if (r->phase != DRAINING || --r->drains_left != 0)
        return;
    /* A clean end commits a final checkpoint marking the run complete;
     * any other end lets a checkpoint in progress (a signal's) finish
     * first: it uses the sinks. */
    if (r->exit_code == 0 && !r->stop_reading && !sink_error(r->out) && !(r->dlq && sink_error(r->dlq))) {
        source_commit(r->src, source_position(r->src));
        cp_finish(&r->cp, shutdown_all);
    } else {
        cp_when_idle(&r->cp, shutdown_all);
    }
}

static void start_draining(run *r)
{
    r->phase = DRAINING;
    timeouts_stop(&r->tmo);
    r->drains_left = 1 + (r->dlq != NULL);
    sink_flush(r->out, sink_drained);
    if (r->dlq)
        sink_flush(r->dlq, sink_drained);
}

/* Input ended (or the run failed) and the queue is empty: run close. */
static void start_closing(run *r)
{
    if (r->phase >= CLOSING)
        return;
    r->phase = CLOSING;
    gen_close_all(&r->gens); /* ev_all_closed follows */
}

static void finish_if_done(run *r)
{
    if (r->phase != RUNNING)
        return;
    if (op_failed(&r->op) || r->aborting) {
        start_closing(r);
        return;
    }
    if ((r->input_ended || r->stop_reading) && op_size(&r->op) == 0 && !evtime_pending(&r->ev))
        start_closing(r);
}

/* ---- the pump ----------------------------------------------------------------- */

/* One record from the source, if there is room. 0: go on; -1: stop. */
static int pull(run *r)
{
    if (op_full(&r->op) || sink_backlog(r->out) > OUTPUT_HIGH_WATER || r->input_ended)
        return -1;
    source_record rec;
    char msg[600];
    switch (source_next(r->src, &rec)) {
    case SOURCE_AGAIN:
        return -1;
    case SOURCE_END:
        r->input_ended = 1;
        /* The back-offs waiting now end at once, so the drain does not sit
         * out long delays; a retry scheduled after this point waits its
         * delay again (max_attempts is honoured and a struggling service
         * is not hammered). README: "Retries". */
        op_retry_all_now(&r->op);
        return -1;
    case SOURCE_ERROR:
        source_strerror(r->src, msg, sizeof msg);
        op_push_failed(&r->op, source_position(r->src).line, msg, NULL);
        r->stop_reading = 1;
        return -1;
    }
    switch (task_accept(&r->env, &rec, msg, sizeof msg)) {
    case TASK_STOP:
        r->stop_reading = 1;
        break;
    case TASK_FATAL:
        fail_run(r, ABORT, "%s", msg);
        break;
    }
    return 0;
}

static void pump(run *r)
{
    if (r->pumping || r->phase != RUNNING)
        return;
    r->pumping = 1;
    char msg[600];
    if (restore_pending(&r->rs) && restore_inject(&r->rs, &r->env, &r->aborting, msg, sizeof msg) != 0)
        fail_run(r, ABORT, "%s", msg);
    while (!r->stop_reading && !op_failed(&r->op)) {
        int64_t wm;
        if (evtime_pending(&r->ev)) {
            if (op_full(&r->op))
                break;
            if (evtime_take(&r->ev, &wm))
                op_push_watermark(&r->op, wm);
            continue;
        }
        if (pull(r) != 0)
            break;
    }
    r->pumping = 0;
    timeouts_rearm(&r->tmo);
    finish_if_done(r);
}

static void on_timeouts_fired(void *ud)
{
    run *r = ud;
    pump(r);
    timeouts_rearm(&r->tmo);
    finish_if_done(r);
}

static void on_source_ready(void *ud)
{
    pump(ud);
}

static void on_out_written(void *ud)
{
    run *r = ud;
    cp_progress(&r->cp);
    /* pump() itself checks the backlog against the high-water mark. */
    if (sink_backlog(r->out) <= OUTPUT_HIGH_WATER)
        pump(r);
}

static void on_dlq_error(void *ud)
{
    run *r = ud;
    fail_run(r, ABORT, "--dead-letter %s: write error: %s", r->cfg->dead_letter, uv_strerror(sink_error(r->dlq)));
    finish_if_done(r);
}

static void on_out_error(void *ud)
{
    run *r = ud;
    if (sink_error(r->out) == UV_EPIPE) {
        /* The reader went away (`moonwait ... | head -1`, a FIFO's reader
         * closed): nobody wants the rest. Stop quietly, as a Unix filter
         * killed by SIGPIPE does, with its status (128 + SIGPIPE). */
        if (r->exit_code == 0)
            r->exit_code = 128 + SIGPIPE;
        r->stop_reading = 1;
        r->aborting = 1;
        abandon_all(r);
        finish_if_done(r);
        return;
    }
    fail_run(r, ABORT, "--output %s: write error: %s", r->cfg->output, uv_strerror(sink_error(r->out)));
    finish_if_done(r);
}

/* ---- what the generations, the checkpoint and --stats ask ---------------------- */

static void ev_opened(void *ud, const char *err)
{
    run *r = ud;
    r->phase = RUNNING;
    if (err) {
        fail_run(r, ABORT, "%s", err);
        finish_if_done(r);
        return;
    }
    pump(r);
}

static void ev_failed(void *ud, const char *err)
{
    run *r = ud;
    fail_run(r, ABORT, "%s", err);
    finish_if_done(r);
}

static void ev_all_closed(void *ud)
{
    run *r = ud;
    if (r->phase == CLOSING)
        start_draining(r);
}

static void ev_record_done(void *ud, task *t, script_result *res)
{
    run *r = ud;
    int rc = task_outcome(&r->env, t, res, r->aborting);
    if (r->pumping)
        return;
    if (rc != TASK_LATE)
        pump(r);
    timeouts_rearm(&r->tmo);
}

static int cp_may_snapshot(void *ud)
{
    run *r = ud;
    return r->phase == RUNNING && !r->stop_reading && !restore_pending(&r->rs);
}

static void cp_failed_cb(void *ud, const char *msg)
{
    run *r = ud;
    /* Said even when another message came first. */
    if (r->exit_code != 0)
        fprintf(stderr, "moonwait: %s\n", msg);
    fail_run(r, ABORT, "%s", msg);
    finish_if_done(r);
}

static int snap_record(const op_entry *e, snap_rec *out)
{
    const task *t = e->udata;
    if (!t) /* a malformed line failing the run: it is read again */
        return -1;
    out->line = task_line(t, &out->len);
    out->malformed = task_malformed(t);
    out->last_error = task_last_error(t);
    return 0;
}

static void stats_fill(void *ud, stats_view *v)
{
    run *r = ud;
    v->op = opv_stats(&r->op);
    v->in_flight = op_size(&r->op);
    v->backoffs = op_backoffs(&r->op);
    v->outputs = r->outputs;
    v->skipped = r->route.skipped;
    v->malformed = r->route.malformed;
    v->generation = gen_current_id(&r->gens);
    v->reloads = r->gens.reloads;
    v->rejected = r->gens.rejected;
}

/* ---- signals ------------------------------------------------------------------ */

static void on_signal(uv_signal_t *h, int signum)
{
    run *r = h->data;
    const char *name = signum == SIGINT ? "SIGINT" : "SIGTERM";
    if (++r->signals > 1) { /* (guard_second_signal's handler exits first) */
        fprintf(stderr, "moonwait: second %s: exiting at once\n", name);
        exit(128 + signum);
    }
    uint64_t line = source_position(r->src).line;
    if (r->cfg->checkpoint_dir && r->phase == RUNNING && !restore_pending(&r->rs) && r->exit_code == 0 &&
        !r->aborting) {
        /* Exactly-once: stop reading, checkpoint this moment (the records
         * in flight included), abandon them, exit 128 + signal once the
         * checkpoint is written. A restart redoes only those records. */
        r->stop_reading = 1;
        size_t n = op_size(&r->op);
        if (cp_take_now(&r->cp) != 0)
            return; /* the run was failed, saying why */
        r->signal_exit = 128 + signum;
        fail_run(r, ABORT, "interrupted by %s after input line %" PRIu64 ": writing a checkpoint of the %zu "
                           "entries in flight to %s, then exiting %d; run the same command to continue (send "
                           "it again to exit at once)",
                 name, line, n, r->cfg->checkpoint_dir, r->signal_exit);
        finish_if_done(r);
        return;
    }
    fail_run(r, DRAIN, "interrupted by %s after input line %" PRIu64
                "; records already emitted are complete (send it again to exit at once)",
             name, line);
    finish_if_done(r);
}

static void start_signals(run *r)
{
    uv_signal_init(r->loop, &r->sigint);
    uv_signal_init(r->loop, &r->sigterm);
    r->sigint.data = r->sigterm.data = r;
    uv_signal_start(&r->sigint, on_signal, SIGINT);
    uv_signal_start(&r->sigterm, on_signal, SIGTERM);
    uv_unref((uv_handle_t *)&r->sigint);
    uv_unref((uv_handle_t *)&r->sigterm);
    /* The second one exits from the signal handler itself: libuv's
     * callbacks do not run while a script keeps the loop busy. */
    guard_second_signal();
}

/* ---- start and stop ----------------------------------------------------------- */

/* Open the sinks, start the reload triggers, open the source. 0, or -1
 * (message printed; exit 2). */
static int open_io(run *r)
{
    const config *c = r->cfg;
    char *err = NULL;
    uint64_t keep_out, keep_dlq;
    restore_keep(&r->rs, &keep_out, &keep_dlq);
    int rc = io_sink_open(&r->out, r->loop, c->output, keep_out, &err);
    if (rc != 0)
        fprintf(stderr, "moonwait: --output %s\n", err ? err : "cannot open output");
    if (rc == 0 && c->on_error == ON_ERROR_DEAD_LETTER) {
        rc = io_sink_open(&r->dlq, r->loop, c->dead_letter, keep_dlq, &err);
        if (rc != 0)
            fprintf(stderr, "moonwait: --dead-letter %s\n", err ? err : "cannot open the dead-letter file");
    }
    if (rc == 0) {
        /* SIGHUP's handler goes in before a FIFO input can block us in
         * open(): its default action would end the process. */
        gen_start_triggers(&r->gens);
        rc = io_source_open(&r->src, r->loop, c->input, c->max_line, &err);
        if (rc != 0)
            fprintf(stderr, "moonwait: %s\n", err ? err : "cannot open input");
    }
    free(err);
    return rc == 0 ? 0 : -1;
}

/* Wire the operator, tasks, sinks, source and checkpoints. 0, or -1. */
static int start_core(run *r)
{
    const config *c = r->cfg;
    evtime_init(&r->ev, c->max_ooo_ms);
    op_config oc = { c->mode, c->capacity, c->timeout_ms };
    op_callbacks cb = { cb_now, cb_emit, cb_emit_watermark, cb_timeout, cb_failure, cb_release,
                        cb_retry, cb_random };
    op_init(&r->op, &oc, &cb, r);
    r->rng = uv_hrtime() | 1;
    route_init(&r->route, &r->op, c->on_error);
    r->env = (task_env){ &r->op, &r->route, &r->ev, &r->gens, r->loop, c->timeout_ms };
    r->src->on_ready = on_source_ready;
    r->src->ud = r;
    r->out->on_error = on_out_error;
    r->out->on_written = on_out_written;
    r->out->ud = r;
    if (r->dlq) {
        r->dlq->on_error = on_dlq_error;
        r->dlq->on_written = on_out_written;
        r->dlq->ud = r;
    }
    if (restore_apply(&r->rs, r->src, &r->ev) != 0) {
        fprintf(stderr, "moonwait: --input %s cannot be rewound to the checkpoint's position\n", c->input);
        return -1;
    }
    snap_view v = { .mode = c->mode, .timeout_ms = c->timeout_ms, .op = &r->op, .ev = &r->ev, .src = r->src,
                    .out = r->out, .dlq = r->dlq, .record = snap_record };
    restore_identity(&r->rs, &v.id_in, &v.id_out, &v.id_dl);
    cp_host h = { cp_may_snapshot, cp_failed_cb, r };
    cp_init(&r->cp, r->loop, c->checkpoint_dir, c->checkpoint_interval_ms, &v, &h);
    cp_start(&r->cp);
    timeouts_init(&r->tmo, r->loop, &r->op, on_timeouts_fired, r);
    start_signals(r);
    stats_start(&r->st);
    return 0;
}

/* Run the loop to the end. The exit status. */
static int loop_to_end(run *r)
{
    r->phase = OPENING;
    gen_open_first(&r->gens);
    uv_run(r->loop, UV_RUN_DEFAULT);
    if (r->phase != DONE) {
        /* The loop ran dry while work remained: a script waiting on
         * nothing. Say so rather than exit silently. */
        fprintf(stderr, "moonwait: internal error: the event loop stopped with %zu records in "
                        "flight (phase %d)\n", op_size(&r->op), r->phase);
        r->exit_code = 1;
        shutdown_all(r);
        uv_run(r->loop, UV_RUN_DEFAULT);
    }
    /* Stopped by a signal whose checkpoint was written: 128 + signal. */
    if (r->signal_exit && !cp_failed(&r->cp))
        return r->signal_exit;
    return r->exit_code;
}

/* A run that did not start: close what was opened (the generations too
 * when they were made). */
static void close_early(run *r, int gens_made)
{
    net_pool_close_all();
    if (r->src)
        source_close(r->src, NULL);
    if (r->out)
        sink_close(r->out, NULL);
    if (r->dlq)
        sink_close(r->dlq, NULL);
    if (gens_made) {
        gen_stop_triggers(&r->gens);
        gen_close_all(&r->gens);
    }
    uv_run(r->loop, UV_RUN_DEFAULT);
}

int run_pipeline(const config *c, const char *lua_dir)
{
    run *r = calloc(1, sizeof *r);
    if (!r) {
        fprintf(stderr, "moonwait: out of memory\n");
        return 1;
    }
    uv_loop_t loop;
    uv_loop_init(&loop);
    r->cfg = c;
    r->loop = &loop;
    stats_init(&r->st, &loop, c->stats, stats_fill, r);
    signal(SIGPIPE, SIG_IGN);
    /* Before the first VM: the newest VM takes LuaJIT's profiler. */
    int grc = guard_start(&loop, c->cpu_budget_ms);
    if (grc != 0)
        fprintf(stderr, "moonwait: warning: --cpu-budget is off: %s\n", uv_strerror(grc));
    gen_events ev = { ev_opened, ev_failed, ev_all_closed, ev_record_done, r };
    int code;
    int prep = restore_prepare(&r->rs, c);
    if (prep != 0)
        code = prep < 0 ? 2 : 0;
    else if (gen_init(&r->gens, &loop, c, lua_dir, strcmp(c->input, "-") == 0, &ev) != 0 || open_io(r) != 0 ||
             start_core(r) != 0)
        code = 2;
    else
        code = loop_to_end(r);
    if (r->phase != DONE)
        close_early(r, prep == 0);
    gen_free_all(&r->gens);
    cp_free(&r->cp);
    restore_release(&r->rs);
    guard_stop();
    if (uv_loop_close(&loop) != 0 && code == 0) {
        fprintf(stderr, "moonwait: internal error: handles left open at exit\n");
        code = 1;
    }
    free(r);
    return code;
}
