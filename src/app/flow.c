/*
 * flow.c: the run while it runs: the operator's callbacks, the pump
 * (source -> operator; the operator emits to the sinks), failing, and the
 * phases to the end.
 *
 * Phases: OPENING (the first generation's open() runs; nothing is read),
 * RUNNING (the pump pulls records from the source into the operator while
 * it has room and the output's backlog is under its high-water mark),
 * CLOSING (the input ended or the run failed, and the queue is empty or
 * abandoned: every generation's close() runs), DRAINING (the sinks flush;
 * a clean end commits the final checkpoint and the source's position),
 * DONE (handles closing).
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../net/dns.h"
#include "../net/pool.h"
#include "../net/tls.h"
#include "../util/log.h"
#include "run_int.h"

/* ---- operator callbacks ------------------------------------------------------- */

/* The operator's clock (op.h): the loop's cached uv_now. The Lua side
 * counts a record's deadline on the same clock (script.h). */
static uint64_t cb_now(void *ud)
{
    return uv_now(((run *)ud)->loop);
}

static void cb_emit(void *ud, op_entry *e)
{
    run *r = ud;
    if (r->mx) {
        uint64_t read_ns, done_ns;
        task_times(e->udata, &read_ns, &done_ns);
        int at_once = e->udata && e->udata == expose_completing_task(r->mx);
        expose_emit(r->mx, read_ns, done_ns, at_once, at_once ? done_ns : expose_now());
    }
    if (e->dlq_len)
        sink_write(r->dlq, e->dlq, e->dlq_len);
    if (e->out_len) {
        for (const char *s = e->out, *end = e->out + e->out_len; (s = memchr(s, '\n', (size_t)(end - s))); s++)
            r->outputs++;
        /* The sink takes the bytes (a large fan-out is not copied again). */
        sink_write_owned(r->out, e->out, e->out_len);
        e->out = NULL;
        e->out_len = 0;
    }
    /* Its outputs are with the sinks: a broker commits them with its ack. */
    source_done(r->src, task_ticket(e->udata));
}

static void cb_emit_watermark(void *ud, int64_t wm)
{
    run *r = ud;
    char b[64];
    int n = snprintf(b, sizeof b, "{\"$watermark\":%" PRId64 "}\n", wm);
    sink_write(r->out, b, (size_t)n);
    source_done(r->src, 0); /* (outputs of no record) */
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
    mw_log_ctx about = { .seq = e->seq, .generation = t ? task_generation(t) : 0 };
    flow_fail_about(r, ABORT, &about, "%s", msg ? msg : "run failed");
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

/* A started record's next attempt waits for the rate limit's token. */
static uint64_t cb_gate(void *ud)
{
    run *r = ud;
    return limit_gate(&r->lim, uv_now(r->loop));
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
    for (op_entry *e = op_first(&r->op); e; e = op_next(e))
        task_discard(e->udata);
}

static void vfail(run *r, int how, const mw_log_ctx *about, const char *fmt, va_list ap)
{
    if (r->exit_code == 0) {
        char *msg = NULL;
        if (vasprintf(&msg, fmt, ap) < 0)
            msg = NULL;
        mw_logx(MW_LOG_ERROR, about, "%s", msg ? msg : "run failed");
        free(msg);
        r->exit_code = 1;
    }
    r->stop_reading = 1;
    if (how == ABORT) {
        r->aborting = 1;
        abandon_all(r);
    } else {
        gen_flush_batches(&r->gens); /* the records in flight finish: none waits for more */
    }
}

void flow_fail(run *r, int how, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfail(r, how, NULL, fmt, ap);
    va_end(ap);
}

void flow_fail_about(run *r, int how, const mw_log_ctx *about, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfail(r, how, about, fmt, ap);
    va_end(ap);
}

/* ---- the end ------------------------------------------------------------------ */

void flow_shutdown(void *ud)
{
    run *r = ud;
    r->phase = DONE;
    expose_close(r->mx);
    r->mx = NULL;
    cp_stop(&r->cp);
    timeouts_stop(&r->tmo);
    stats_stop(&r->st, NULL); /* the summary, with --stats */
    timeouts_close(&r->tmo, NULL);
    limit_close(&r->lim);
    wk_close(r->wk);
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
        /* Everything is written: without checkpoints that is committed;
         * with them, the final checkpoint commits the source's position
         * once it is written (checkpoint.c). */
        if (!r->cfg->checkpoint_dir)
            source_commit(r->src, source_position(r->src));
        cp_finish(&r->cp, flow_shutdown);
    } else {
        cp_when_idle(&r->cp, flow_shutdown);
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

void flow_finish_if_done(run *r)
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

/* How many records the run could take now: the operator's room, and with
 * a rate limit no more than the tokens there (at least 1), so a broker
 * does not fetch entries that would sit unstarted, waiting for tokens. */
static size_t room(run *r)
{
    size_t n = op_capacity(&r->op) > op_size(&r->op) ? op_capacity(&r->op) - op_size(&r->op) : 0;
    return limit_room(&r->lim, n);
}

/* One record from the source, if there is room. 0: go on; -1: stop. */
static int pull(run *r)
{
    if (op_full(&r->op) || sink_backlog(r->out) > OUTPUT_HIGH_WATER || r->input_ended)
        return -1;
    /* No token: the line stays unread (its budget has not begun) and the
     * limit's timer pumps again when one arrives. A retry whose back-off
     * ended goes first: its budget runs while it waits (the deadline timer
     * starts it through the gate, then pumps). */
    if (r->lim.on && op_next_backoff(&r->op) <= op_now(&r->op))
        return -1;
    /* An input that has ended needs no token to say so: without this the
     * run would wait up to 1/RPS after its last record just to read the
     * end (forever at a tiny rate), with everything already emitted. */
    if (r->lim.on && !source_ended(r->src) && !limit_ready(&r->lim))
        return -1;
    /* (a broker fetches no more than this) */
    r->src->room = room(r);
    source_record rec = { 0 };
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
        flow_fail(r, ABORT, "%s", msg);
        break;
    }
    return 0;
}

void flow_pump(run *r)
{
    if (r->pumping || r->phase != RUNNING)
        return;
    r->pumping = 1;
    char msg[600];
    if (restore_pending(&r->rs) && restore_inject(&r->rs, &r->env, &r->aborting, msg, sizeof msg) != 0)
        flow_fail(r, ABORT, "%s", msg);
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
    /* A batching script's pending batches wait max_wait_ms for more
     * records; when none can come soon (the operator is full, the output's
     * backlog stops intake, the input ended or reading stopped) they start
     * at the end of this loop turn. */
    if ((op_full(&r->op) || sink_backlog(r->out) > OUTPUT_HIGH_WATER || r->input_ended || r->stop_reading) &&
        !r->aborting)
        gen_flush_batches(&r->gens);
    /* What the loop took (records, watermarks) is in the queue now: a
     * broker that fetches from a callback before the next pump sees the
     * room as it is, not as it was before the last record. */
    r->src->room = room(r);
    r->pumping = 0;
    timeouts_rearm(&r->tmo);
    flow_finish_if_done(r);
}

void flow_timeouts_fired(void *ud)
{
    run *r = ud;
    flow_pump(r);
    timeouts_rearm(&r->tmo);
    flow_finish_if_done(r);
}

void flow_limit_ready(void *ud)
{
    flow_pump(ud);
}

void flow_source_ready(void *ud)
{
    flow_pump(ud);
}

void flow_out_written(void *ud)
{
    run *r = ud;
    cp_progress(&r->cp);
    /* flow_pump() itself checks the backlog against the high-water mark. */
    if (sink_backlog(r->out) <= OUTPUT_HIGH_WATER)
        flow_pump(r);
}

void flow_dlq_error(void *ud)
{
    run *r = ud;
    char msg[600];
    sink_strerror(r->dlq, msg, sizeof msg);
    flow_fail(r, ABORT, "--dead-letter %s: write error: %s", r->cfg->dead_letter, msg);
    flow_finish_if_done(r);
}

void flow_out_error(void *ud)
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
        flow_finish_if_done(r);
        return;
    }
    char msg[600];
    sink_strerror(r->out, msg, sizeof msg);
    flow_fail(r, ABORT, "--output %s: write error: %s", r->cfg->output, msg);
    flow_finish_if_done(r);
}

void flow_all_closed(run *r)
{
    if (r->phase == CLOSING)
        start_draining(r);
}

const op_callbacks flow_op_callbacks = {
    .now = cb_now, .emit = cb_emit, .emit_watermark = cb_emit_watermark, .timeout = cb_timeout,
    .failure = cb_failure, .release = cb_release, .retry = cb_retry, .random = cb_random, .gate = cb_gate,
};
