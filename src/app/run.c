/*
 * run.c: one run from start to stop: opening the source and sinks
 * (io.h), wiring the operator, the tasks, the generations and the
 * checkpoints, the signals, the loop; and what the other parts ask of the
 * run (gen_events, cp_host, --stats' view). The running itself (pump,
 * phases, the operator's callbacks) is flow.c's.
 *
 * Ownership: the run owns every handle of the run, directly (signals) or
 * through the parts it embeds (timers); the source and sinks it opened;
 * the operator, and through its entries each record's task (task.c).
 */
#define _GNU_SOURCE
#include "run.h"

#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../io/io.h"
#include "../lua/guard.h"
#include "../net/pool.h"
#include "../util/log.h"
#include "run_int.h"

/* ---- what the generations, the checkpoint and --stats ask ---------------------- */

static void ev_opened(void *ud, const char *err)
{
    run *r = ud;
    r->phase = RUNNING;
    if (err) {
        flow_fail(r, ABORT, "%s", err);
        flow_finish_if_done(r);
        return;
    }
    flow_pump(r);
}

static void ev_failed(void *ud, const char *err)
{
    run *r = ud;
    flow_fail(r, ABORT, "%s", err);
    flow_finish_if_done(r);
}

static void ev_all_closed(void *ud)
{
    run *r = ud;
    flow_all_closed(r);
}

static void ev_record_done(void *ud, task *t, script_result *res)
{
    run *r = ud;
    int rc = task_outcome(&r->env, t, res, r->aborting);
    if (r->pumping)
        return;
    if (rc != TASK_LATE)
        flow_pump(r);
    timeouts_rearm(&r->tmo);
}

static int may_snapshot(void *ud)
{
    run *r = ud;
    return r->phase == RUNNING && !r->stop_reading && !restore_pending(&r->rs);
}

static void checkpoint_failed(void *ud, const char *msg)
{
    run *r = ud;
    /* Said even when another message came first. */
    if (r->exit_code != 0)
        mw_log(MW_LOG_ERROR, "%s", msg);
    flow_fail(r, ABORT, "%s", msg);
    flow_finish_if_done(r);
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

/* The records in the operator (watermarks not counted), and of those the
 * ones finished and waiting behind earlier ones to leave: one definition
 * for --stats and --metrics. */
static void in_flight(const run *r, size_t *records, size_t *queued)
{
    const op_stats *o = op_counters(&r->op);
    *records = op_size(&r->op) - (size_t)(o->watermarks_in - o->watermarks_out);
    *queued = *records - r->op.pending;
}

static void stats_fill(void *ud, stats_view *v)
{
    run *r = ud;
    v->op = op_counters(&r->op);
    in_flight(r, &v->in_flight, &v->queued);
    v->backoffs = op_backoffs(&r->op);
    v->has_size = r->src && source_size(r->src, &v->input_size) == 0;
    v->input_bytes = v->has_size ? source_position(r->src).offset : 0;
    v->outputs = r->outputs;
    v->skipped = r->route.skipped;
    v->malformed = r->route.malformed;
    v->generation = gen_last_id(&r->gens);
    gen_counts(&r->gens, &v->reloads, &v->rejected);
    v->adaptive = r->cfg->adaptive;
    v->limit = op_capacity(&r->op);
    v->limit_min = r->cfg->cap_min;
    v->limit_max = r->cfg->cap_max;
    v->limited = r->lim.on;
    v->limit_tokens = r->lim.on ? r->lim.b.taken : 0;
    v->limit_pauses = r->lim.pauses;
    v->limit_gated = v->op->gated;
    v->workers = r->cfg->workers;
}

/* What a scrape of --metrics reads (expose.h). */
static void expose_fill(void *ud, expose_view *v)
{
    run *r = ud;
    const op_stats *o = op_counters(&r->op);
    int reloads, rejected;
    v->op = o;
    v->outputs = r->outputs;
    v->skipped = r->route.skipped;
    v->malformed = r->route.malformed;
    gen_counts(&r->gens, &reloads, &rejected);
    v->reloads = (uint64_t)reloads;
    v->rejected = (uint64_t)rejected;
    in_flight(r, &v->in_flight, &v->queued);
    v->backoffs = op_backoffs(&r->op);
    v->capacity = op_capacity(&r->op);
    int newest = gen_last_id(&r->gens); /* (the newest generation, as --stats says) */
    v->generation = newest;
    v->generations_live = gen_live_count(&r->gens);
    v->checkpoints = r->cfg->checkpoint_dir != NULL;
    uint64_t at = cp_last_written_ms(&r->cp);
    uint64_t now = uv_now(r->loop);
    if (!at)
        at = r->started_ms;
    v->checkpoint_age_s = v->checkpoints && now > at ? (double)(now - at) / 1000.0 : 0;
    v->src = r->phase < DONE ? r->src : NULL;
    _Static_assert(WORKERS_MAX <= 64, "expose_view holds 64 workers' attempts");
    v->workers = r->cfg->workers;
    for (int k = 0; k < v->workers && k < 64; k++)
        v->worker_attempts[k] = k == 0 ? r->main_busy : wk_running(r->wk, k);
    /* failing: the run failed and abandons what is in flight; draining:
     * reading stopped (the input ended, a signal) and the records in
     * flight finish. */
    v->healthy = r->exit_code == 0 && !r->stop_reading && r->phase == RUNNING;
    v->state = r->aborting || op_failed(&r->op) ? "failing"
               : r->phase == OPENING            ? "opening"
               : r->phase == RUNNING && !r->stop_reading && r->exit_code == 0 ? "running"
                                                                              : "draining";
}

/* ---- signals ------------------------------------------------------------------ */

/* The second signal's exit status (0: 128 + the signal). With a checkpoint
 * dir, 130/143 promise that the signal's checkpoint is on disk, which a
 * second signal does not wait for: it exits 1, and a restart continues
 * from the newest checkpoint that was written. */
static int second_signal_code(const run *r)
{
    return r->cfg->checkpoint_dir || io_is_broker(r->cfg->input) ? 1 : 0;
}

static void on_signal(uv_signal_t *h, int signum)
{
    run *r = h->data;
    const char *name = signum == SIGINT ? "SIGINT" : "SIGTERM";
    if (++r->signals > 1) { /* (guard_second_signal's handler exits first) */
        mw_log(MW_LOG_WARN, "second %s: exiting at once", name);
        exit(second_signal_code(r) ? second_signal_code(r) : 128 + signum);
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
        flow_fail(r, ABORT, "interrupted by %s after input line %" PRIu64 ": writing a checkpoint of the %zu "
                           "entries in flight to %s, then exiting %d; run the same command to continue (send "
                           "it again to exit at once)",
                 name, line, n, r->cfg->checkpoint_dir, r->signal_exit);
        flow_finish_if_done(r);
        return;
    }
    if (io_is_broker(r->cfg->input) && r->exit_code == 0) {
        /* A broker keeps the position: once the records in flight are
         * finished and committed, stopping is clean (128 + signal, like a
         * signal's checkpoint); the rest stays in the group. */
        r->signal_exit = 128 + signum;
        r->signal_drain = 1;
        flow_fail(r, DRAIN, "interrupted by %s: finishing and committing the %zu records in flight, then "
                            "exiting %d (send it again to exit at once: they are then claimed by another "
                            "consumer after claim_idle_ms)",
                  name, op_size(&r->op), r->signal_exit);
        flow_finish_if_done(r);
        return;
    }
    flow_fail(r, DRAIN, "interrupted by %s after input line %" PRIu64
                "; records already emitted are complete (send it again to exit at once)",
             name, line);
    flow_finish_if_done(r);
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
    guard_second_signal(second_signal_code(r));
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
    if (io_is_broker(c->input)) {
        /* The broker keeps the position: an output file grows across
         * restarts (its earlier lines were acked; truncating would lose
         * them). */
        keep_out = io_is_broker(c->output) ? 0 : SINK_APPEND;
        keep_dlq = c->dead_letter && io_is_broker(c->dead_letter) ? 0 : SINK_APPEND;
    }
    int rc = io_sink_open(&r->out, r->loop, c->output, keep_out, &err);
    if (rc != 0)
        mw_log(MW_LOG_ERROR, "--output %s", err ? err : "cannot open output");
    if (rc == 0 && c->on_error == ON_ERROR_DEAD_LETTER) {
        rc = io_sink_open(&r->dlq, r->loop, c->dead_letter, keep_dlq, &err);
        if (rc != 0)
            mw_log(MW_LOG_ERROR, "--dead-letter %s", err ? err : "cannot open the dead-letter file");
    }
    if (rc == 0) {
        /* SIGHUP's handler goes in before a FIFO input can block us in
         * open(): its default action would end the process. */
        gen_start_triggers(&r->gens);
        rc = io_source_open(&r->src, r->loop, c->input, c->max_line, &err);
        if (rc != 0)
            mw_log(MW_LOG_ERROR, "%s", err ? err : "cannot open input");
    }
    if (rc == 0 && (rc = io_bind(r->src, r->out, r->dlq, &err)) != 0)
        mw_log(MW_LOG_ERROR, "%s", err ? err : "cannot start the output");
    free(err);
    return rc == 0 ? 0 : -1;
}

/* Wire the operator, tasks, sinks, source and checkpoints. 0, or -1. */
static int start_core(run *r)
{
    const config *c = r->cfg;
    evtime_init(&r->ev, c->max_ooo_ms);
    op_config oc = { c->mode, c->capacity, c->timeout_ms };
    op_init(&r->op, &oc, &flow_op_callbacks, r);
    r->rng = uv_hrtime() | 1;
    route_init(&r->route, &r->op, c->on_error);
    if (c->adaptive)
        adapt_init(&r->adapt, c->cap_min, c->cap_max, uv_now(r->loop));
    if (c->workers > 1) {
        if (wk_start(&r->wk, r->loop, c, r->lua_dir, r->gens.key_seed, ev_record_done, r) != 0)
            return -1;
        gen_set_workers(&r->gens, r->wk);
    }
    r->env = (task_env){ &r->op, &r->route, &r->ev, &r->gens, c->timeout_ms, r->src, c->adaptive ? &r->adapt : NULL,
                         &r->lim, r->mx, r->wk, &r->main_busy };
    limit_init(&r->lim, r->loop, c->rate_rps, c->rate_burst, flow_limit_ready, r);
    r->src->on_ready = flow_source_ready;
    r->src->ud = r;
    r->out->on_error = flow_out_error;
    r->out->on_written = flow_out_written;
    r->out->ud = r;
    if (r->dlq) {
        r->dlq->on_error = flow_dlq_error;
        r->dlq->on_written = flow_out_written;
        r->dlq->ud = r;
    }
    if (restore_apply(&r->rs, r->src, &r->ev) != 0) {
        mw_log(MW_LOG_ERROR, "--input %s cannot be rewound to the checkpoint's position", c->input);
        return -1;
    }
    snap_view v = { .mode = c->mode, .key = c->key, .timeout_ms = c->timeout_ms, .op = &r->op, .ev = &r->ev, .src = r->src,
                    .out = r->out, .dlq = r->dlq, .record = snap_record };
    restore_identity(&r->rs, &v.id_in, &v.id_out, &v.id_dl);
    cp_host h = { may_snapshot, checkpoint_failed, r };
    cp_init(&r->cp, r->loop, c->checkpoint_dir, c->checkpoint_interval_ms, &v, &h);
    cp_start(&r->cp);
    timeouts_init(&r->tmo, r->loop, &r->op, flow_timeouts_fired, r);
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
        mw_log(MW_LOG_ERROR, "internal error: the event loop stopped with %zu records in "
                        "flight (phase %d)", op_size(&r->op), r->phase);
        r->exit_code = 1;
        flow_shutdown(r);
        uv_run(r->loop, UV_RUN_DEFAULT);
    }
    /* Stopped by a signal whose checkpoint was written (or, from a broker,
     * whose records in flight were committed): 128 + signal. */
    if (r->signal_drain)
        return r->aborting ? r->exit_code : r->signal_exit;
    if (r->signal_exit && !cp_failed(&r->cp))
        return r->signal_exit;
    return r->exit_code;
}

/* A run that did not start: close what was opened (the generations too
 * when they were made). */
static void close_early(run *r, int gens_made)
{
    expose_close(r->mx);
    r->mx = NULL;
    limit_close(&r->lim);
    wk_close(r->wk);
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
        mw_log(MW_LOG_ERROR, "out of memory");
        return 1;
    }
    uv_loop_t loop;
    uv_loop_init(&loop);
    r->cfg = c;
    r->lua_dir = lua_dir;
    r->loop = &loop;
    stats_init(&r->st, &loop, c->stats, stats_fill, r);
    signal(SIGPIPE, SIG_IGN);
    /* SIGHUP asks for a reload (triggers.c's handle, from open_io on). Before
     * that handle is in (the first generation's load, which a big module
     * can make take seconds) and after it is closed (the end of the run:
     * closing VMs, joining --workers' threads), its default action would end
     * a healthy run with 129: a reload asked for then has nothing to do. */
    signal(SIGHUP, SIG_IGN);
    /* Before the first VM: the newest VM takes LuaJIT's profiler. */
    int grc = guard_start(&loop, c->cpu_budget_ms);
    if (grc != 0)
        mw_warn("--cpu-budget is off: %s", uv_strerror(grc));
    gen_events ev = { ev_opened, ev_failed, ev_all_closed, ev_record_done, r };
    int code;
    int prep = restore_prepare(&r->rs, c);
    r->started_ms = uv_now(&loop);
    if (prep != 0)
        code = prep < 0 ? 2 : 0;
    /* The endpoint before any input is opened: a port in use is exit 2
     * with nothing read. */
    else if (gen_init(&r->gens, &loop, c, lua_dir, strcmp(c->input, "-") == 0, &ev) != 0 ||
             (c->metrics && expose_start(&r->mx, &loop, c->metrics, c->metrics_host, c->metrics_port, expose_fill,
                                         r) != 0) ||
             open_io(r) != 0 ||
             start_core(r) != 0)
        code = 2;
    else
        code = loop_to_end(r);
    if (r->phase != DONE)
        close_early(r, prep == 0);
    wk_free(r->wk); /* (its threads are stopped and joined) */
    gen_free_all(&r->gens);
    script_cache_free_all();
    script_limit_free_all();
    script_metrics_free_all();
    cp_free(&r->cp);
    restore_release(&r->rs);
    guard_stop();
    if (uv_loop_close(&loop) != 0 && code == 0) {
        mw_log(MW_LOG_ERROR, "internal error: handles left open at exit");
        code = 1;
    }
    free(r);
    return code;
}
