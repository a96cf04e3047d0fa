/*
 * pipeline.c: one run, wiring source -> operator -> script -> sink.
 *
 * Phases: OPENING (the script's open hook runs; nothing is read), RUNNING
 * (pump() moves lines from the input into the operator while it has room),
 * CLOSING (input ended or the run failed, the queue is empty or abandoned;
 * close hook runs), DRAINING (output flushed), DONE (handles closing).
 *
 * Ownership: the pipeline owns every handle here and each per-record
 * `task` (hung on the operator entry's udata; freed in on_release). A task
 * owns its copy of the raw input line and, while it runs, its fiber.
 *
 * Retries: when an attempt's outcome asks for another (the script's retry
 * predicate said so), op_retry() decides whether one may follow; if so the
 * record waits in back-off in the operator (keeping its slot) and cb_retry
 * starts the next attempt from the raw line. A record that failed for good
 * goes where --on-error says: fail the run, skip it, or the dead-letter file
 * (written when the record leaves the operator, in its turn).
 */
#define _GNU_SOURCE
#include "pipeline.h"

#include <inttypes.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "../io/input.h"
#include "../io/output.h"
#include "../json/json.h"
#include "../lua/guard.h"
#include "../lua/script.h"
#include "../net/dns.h"
#include "../net/pool.h"
#include "../net/tls.h"
#include "../op/op.h"
#include "../op/wmgen.h"
#include "../store/ckpt.h"
#include "pipeline_int.h"

static void pump(pipeline *p);
static void finish_if_done(pipeline *p);
/* How a failure stops the run: ABORT abandons what is in flight at once;
 * DRAIN stops reading but lets in-flight records finish (a signal). */
enum { ABORT, DRAIN };
static void fail_run(pipeline *p, int how, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* ---- operator callbacks ------------------------------------------------------- */

static uint64_t cb_now(void *ud)
{
    return uv_now(((pipeline *)ud)->loop);
}

static void cb_emit(void *ud, op_entry *e)
{
    pipeline *p = ud;
    if (e->dlq_len)
        output_write(&p->dlq, e->dlq, e->dlq_len);
    if (!e->out_len)
        return;
    for (const char *s = e->out, *end = e->out + e->out_len; (s = memchr(s, '\n', (size_t)(end - s))); s++)
        p->outputs++;
    /* The output takes the bytes (a large fan-out is not copied again). */
    output_write_owned(&p->out, e->out, e->out_len);
    e->out = NULL;
    e->out_len = 0;
}

static void cb_emit_watermark(void *ud, int64_t wm)
{
    pipeline *p = ud;
    char b[64];
    int n = snprintf(b, sizeof b, "{\"$watermark\":%" PRId64 "}\n", wm);
    output_write(&p->out, b, (size_t)n);
}

/* ---- failure routing ------------------------------------------------------------ */

/* "msg\nstack traceback:\n\t[C]: ...\n\tscript.lua:3: in function 'f'" ->
 * "msg (at script.lua:3: in function 'f')": the first frame in Lua code. */
static char *with_first_frame(const char *err)
{
    const char *tb = strstr(err, "\nstack traceback:\n");
    if (!tb)
        return strdup(err);
    const char *frame = NULL;
    for (const char *l = tb + 18; *l; ) {
        while (*l == '\n' || *l == '\t')
            l++;
        if (!*l)
            break;
        const char *end = strchr(l, '\n');
        size_t n = end ? (size_t)(end - l) : strlen(l);
        if (strncmp(l, "[C]:", 4) != 0) {
            frame = l;
            char *m = NULL;
            if (asprintf(&m, "%.*s (at %.*s)", (int)(tb - err), err, (int)n, frame) < 0)
                m = NULL;
            return m;
        }
        l += n;
    }
    return strndup(err, (size_t)(tb - err));
}

/* Standard base64 of s[0..n). 0 or -1. */
static int put_base64(mw_buf *b, const unsigned char *s, size_t n)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)s[i] << 16 | (i + 1 < n ? (unsigned)s[i + 1] << 8 : 0) | (i + 2 < n ? s[i + 2] : 0);
        char q[4] = { tab[v >> 18], tab[v >> 12 & 63], i + 1 < n ? tab[v >> 6 & 63] : '=', i + 2 < n ? tab[v & 63] : '=' };
        if (mw_buf_add(b, q, 4))
            return -1;
    }
    return 0;
}

/* One dead-letter line (malloc'd, newline-terminated), always valid JSON.
 * `record` is the raw input line: embedded as JSON under "record" when it
 * parsed, else as a string under "raw" (bytes that are not UTF-8 written as
 * \u0080-\u00ff, with the exact bytes in "raw_base64" then). */
static char *dead_letter_line(const char *record, size_t rlen, int parsed, const char *err,
                              uint32_t attempts, uint64_t elapsed_ms, uint64_t line, int timed_out,
                              size_t *outlen)
{
    mw_buf b = { NULL, 0, 0 };
    char num[128];
    int rc = mw_buf_add(&b, num, (size_t)snprintf(num, sizeof num, "{\"line\":%" PRIu64, line));
    if (parsed) {
        rc |= mw_buf_add(&b, ",\"record\":", 10);
        rc |= mw_buf_add(&b, record, rlen);
    } else {
        int lossy = 0;
        rc |= mw_buf_add(&b, ",\"raw\":", 7);
        rc |= json_put_bytes(&b, record, rlen, &lossy);
        if (lossy) {
            rc |= mw_buf_add(&b, ",\"raw_base64\":\"", 15);
            rc |= put_base64(&b, (const unsigned char *)record, rlen);
            rc |= mw_buf_add(&b, "\"", 1);
        }
    }
    char *msg = with_first_frame(err);
    const char *m = msg ? msg : err;
    rc |= mw_buf_add(&b, ",\"error\":", 9);
    int lossy_msg = 0;
    rc |= json_put_bytes(&b, m, strlen(m), &lossy_msg);
    free(msg);
    rc |= mw_buf_add(&b, num,
                     (size_t)snprintf(num, sizeof num, ",\"attempts\":%u,\"elapsed_ms\":%" PRIu64 ",\"timed_out\":%s}\n",
                                      attempts, elapsed_ms, timed_out ? "true" : "false"));
    if (rc) {
        free(b.p);
        return NULL;
    }
    *outlen = b.len;
    return b.p;
}

/* Record `e` failed for good: fail the run, skip it, or dead-letter it. */
static void route_failure(pipeline *p, op_entry *e, const char *err)
{
    task *t = e->udata;
    switch (p->cfg->on_error) {
    case ON_ERROR_FAIL:
        op_fail(&p->op, e, err);
        break;
    case ON_ERROR_SKIP:
        p->skipped++;
        op_complete(&p->op, e, NULL, 0);
        break;
    case ON_ERROR_DEAD_LETTER: {
        /* A malformed line was never invoked: no attempts, no time spent. */
        size_t len = 0;
        char *dl = t->malformed ? dead_letter_line(t->line, t->len, 0, err, 0, 0, t->lineno, 0, &len)
                                : dead_letter_line(t->line, t->len, 1, err, e->attempt,
                                                   uv_now(p->loop) - e->accepted_at + e->budget_prior_ms,
                                                   t->lineno, e->timed_out, &len);
        if (dl)
            op_complete_dead(&p->op, e, dl, len);
        else
            op_fail(&p->op, e, "out of memory writing the dead letter");
        break;
    }
    }
}

static void cb_timeout(void *ud, op_entry *e)
{
    pipeline *p = ud;
    task *t = e->udata;
    /* Abandon first: whatever it waits on is cancelled and it is never
     * resumed, so a late result cannot race the timeout's outcome. */
    if (t->fiber) {
        rt_fiber_discard(t->fiber);
        t->fiber = NULL;
    }
    char *out = NULL, *err = NULL;
    size_t len = 0;
    int rc = script_on_timeout(&t->g->sc, t->line, t->len, e->seq, t->lineno, (int)e->attempt, t->deadline,
                               &out, &len, &err);
    if (rc == 1) {
        op_complete(&p->op, e, out, len);
    } else if (rc == 0) {
        char msg[160];
        snprintf(msg, sizeof msg, "timed out after %" PRIu64 " ms%s (the script has no on_timeout)",
                 p->cfg->timeout_ms, e->attempt > 1 ? " across its attempts" : "");
        route_failure(p, e, msg);
    } else {
        char *msg = NULL;
        if (asprintf(&msg, "timed out, and on_timeout failed: %s", err) < 0)
            msg = NULL;
        route_failure(p, e, msg ? msg : err);
        free(msg);
    }
    free(err);
}

static void abandon_all(pipeline *p)
{
    for (op_entry *e = p->op.head; e; e = e->next) {
        task *t = e->udata;
        if (t && t->fiber) {
            rt_fiber_discard(t->fiber);
            t->fiber = NULL;
        }
    }
}

static void cb_failure(void *ud, op_entry *e)
{
    pipeline *p = ud;
    task *t = e->udata;
    if (t && t->lineno && e->seq && t->line && e->attempt > 1)
        fail_run(p, ABORT, "input line %" PRIu64 " (record %" PRIu64 ") failed after %u attempts: %s",
                 e->line, e->seq, e->attempt, e->err);
    else if (t && t->lineno && e->seq && t->line)
        fail_run(p, ABORT, "input line %" PRIu64 " (record %" PRIu64 ") failed: %s", e->line, e->seq, e->err);
    else
        fail_run(p, ABORT, "%s", e->err);
}

static void cb_release(void *ud, op_entry *e)
{
    (void)ud;
    task *t = e->udata;
    if (!t)
        return;
    if (t->fiber)
        rt_fiber_discard(t->fiber);
    gen *g = t->g;
    free(t->line);
    free(t->last_error);
    free(t);
    if (g)
        gen_record_released(g);
}

/* A record's back-off ended: its next attempt starts from the raw line. */
static void cb_retry(void *ud, op_entry *e)
{
    pipeline *p = ud;
    task *t = e->udata;
    if (p->stop_reading && p->aborting)
        return;
    if (script_reparse(&t->g->sc, t->line, t->len) != 0) {
        route_failure(p, e, "out of memory decoding the record for another attempt");
        return;
    }
    script_invoke(&t->g->sc, t, &t->fiber, e->seq, t->lineno, (int)e->attempt,
                  e->deadline == OP_NO_DEADLINE ? 0 : e->deadline, t->last_error);
}

static double cb_random(void *ud)
{
    pipeline *p = ud;
    p->rng ^= p->rng << 13;
    p->rng ^= p->rng >> 7;
    p->rng ^= p->rng << 17;
    return (double)(p->rng >> 11) / 9007199254740992.0;
}

/* ---- timers ------------------------------------------------------------------- */

static void on_timeout_timer(uv_timer_t *h);

static void rearm(pipeline *p)
{
    uint64_t next = op_next_deadline(&p->op);
    if (next == p->armed)
        return;
    p->armed = next;
    if (next == OP_NO_DEADLINE || p->phase >= DRAINING) {
        uv_timer_stop(&p->timeout_timer);
        p->armed = OP_NO_DEADLINE;
        return;
    }
    uint64_t now = uv_now(p->loop);
    uv_timer_start(&p->timeout_timer, on_timeout_timer, next > now ? next - now : 0, 0);
}

static void on_timeout_timer(uv_timer_t *h)
{
    pipeline *p = h->data;
    p->armed = OP_NO_DEADLINE;
    op_expire(&p->op);
    pump(p);
    rearm(p);
    finish_if_done(p);
}

static void print_stats(pipeline *p, const char *label)
{
    uint64_t now = uv_now(p->loop);
    const op_stats *s = &p->op.stats;
    double rate;
    if (strcmp(label, "summary") == 0) {
        double secs = (double)(now - p->start_ms) / 1000.0;
        rate = secs > 0 ? (double)s->records_out / secs : 0;
        uv_rusage_t ru;
        long rss_kb = 0;
        double cpu = 0;
        if (uv_getrusage(&ru) == 0) {
            rss_kb = (long)ru.ru_maxrss;
            cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                  (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
        }
        fprintf(stderr,
                "moonwait: summary: records_in=%" PRIu64 " records_out=%" PRIu64 " outputs=%" PRIu64
                " watermarks=%" PRIu64 " attempts=%" PRIu64 " retries=%" PRIu64 " timeouts=%" PRIu64
                " errors=%" PRIu64 " skipped=%" PRIu64 " dead_lettered=%" PRIu64 " malformed=%" PRIu64
                " generation=%d reloads=%d rejected=%d elapsed_s=%.3f rate=%.0f/s cpu_s=%.3f peak_rss_kb=%ld\n",
                s->records_in, s->records_out, p->outputs, s->watermarks_out, s->attempts, s->retries,
                s->timeouts, s->failures, p->skipped, s->dead_lettered, p->malformed,
                p->cur ? p->cur->id : 0, p->reloads, p->rejected, secs, rate, cpu, rss_kb);
        return;
    }
    double dt = (double)(now - p->last_stats_ms) / 1000.0;
    rate = dt > 0 ? (double)(s->records_out - p->last_stats_out) / dt : 0;
    p->last_stats_ms = now;
    p->last_stats_out = s->records_out;
    fprintf(stderr,
            "moonwait: stats: in=%" PRIu64 " out=%" PRIu64 " in_flight=%zu backoff=%zu rate=%.0f/s attempts=%" PRIu64
            " retries=%" PRIu64 " timeouts=%" PRIu64 " errors=%" PRIu64 " skipped=%" PRIu64
            " dead_lettered=%" PRIu64 " generation=%d\n",
            s->records_in, s->records_out, op_size(&p->op), op_backoffs(&p->op), rate, s->attempts,
            s->retries, s->timeouts, s->failures, p->skipped, s->dead_lettered, p->cur ? p->cur->id : 0);
}

static void on_stats_timer(uv_timer_t *h)
{
    print_stats(h->data, "progress");
}

/* ---- shutdown ----------------------------------------------------------------- */

static void handle_closed(uv_handle_t *h)
{
    pipeline *p = h->data;
    p->open_handles--;
}

static void script_closed(rt *r)
{
    (void)r;
}

static void input_closed(input *in)
{
    (void)in;
}

static void output_closed(output *o)
{
    (void)o;
}

static void shutdown_all(pipeline *p)
{
    p->phase = DONE;
    ckpt_stop(p);
    if (p->cfg->stats)
        print_stats(p, "summary");
    uv_close((uv_handle_t *)&p->timeout_timer, handle_closed);
    uv_close((uv_handle_t *)&p->stats_timer, handle_closed);
    uv_close((uv_handle_t *)&p->sigint, handle_closed);
    uv_close((uv_handle_t *)&p->sigterm, handle_closed);
    op_free(&p->op);
    gen_stop_triggers(p);
    /* After the VMs (closed by gen_close_all): */
    (void)script_closed;
    /* After the VM: nothing can take a pooled connection any more. */
    net_pool_close_all();
    dns_cache_clear();
    tls_cleanup();
    if (p->input_open)
        input_close(&p->in, input_closed);
    output_close(&p->out, output_closed);
    if (p->dlq_open)
        output_close(&p->dlq, output_closed);
}

static void output_drained(void *ud)
{
    pipeline *p = ud;
    if (p->phase == DRAINING && --p->drains_left == 0) {
        /* A clean end commits a final checkpoint marking the run complete;
         * any other end lets a checkpoint in progress (a signal's) finish
         * first: it uses the outputs' fds. */
        if (p->exit_code == 0 && !p->stop_reading && !p->out.error && !(p->dlq_open && p->dlq.error))
            ckpt_finish(p, shutdown_all);
        else
            ckpt_when_idle(p, shutdown_all);
    }
}

static void start_draining(pipeline *p)
{
    p->phase = DRAINING;
    uv_timer_stop(&p->timeout_timer);
    p->drains_left = 1 + p->dlq_open;
    output_drain(&p->out, output_drained);
    if (p->dlq_open)
        output_drain(&p->dlq, output_drained);
}

/* Input ended (or the run failed) and the queue is empty: run close. */
static void start_closing(pipeline *p)
{
    if (p->phase >= CLOSING)
        return;
    p->phase = CLOSING;
    gen_close_all(p); /* pipeline_all_gens_closed() follows */
}

void pipeline_all_gens_closed(pipeline *p)
{
    if (p->phase == CLOSING)
        start_draining(p);
}

static void finish_if_done(pipeline *p)
{
    if (p->phase != RUNNING)
        return;
    if (op_failed(&p->op) || p->aborting) {
        start_closing(p);
        return;
    }
    if ((p->input_ended || p->stop_reading) && op_size(&p->op) == 0 && !p->have_pending_wm)
        start_closing(p);
}

static void fail_run(pipeline *p, int how, const char *fmt, ...)
{
    if (p->exit_code == 0) {
        char *msg = NULL;
        va_list ap;
        va_start(ap, fmt);
        if (vasprintf(&msg, fmt, ap) < 0)
            msg = NULL;
        va_end(ap);
        fprintf(stderr, "moonwait: %s\n", msg ? msg : "run failed");
        free(msg);
        p->exit_code = 1;
    }
    p->stop_reading = 1;
    if (how == ABORT) {
        p->aborting = 1;
        abandon_all(p);
    }
}

/* ---- script completions ------------------------------------------------------- */

void pipeline_script_done(void *ud, void *taskp, script_result *r)
{
    gen *g = ud;
    pipeline *p = g->p;
    if (taskp == &g->sc) {
        gen_hook_done(g, r); /* open or close */
        return;
    }
    task *t = taskp;
    op_entry *e = t->e;
    t->fiber = NULL;
    if (!r->ok && !r->err)
        r->err = "out of memory"; /* the message itself could not be made */
    if (e->state == OP_PENDING && !e->in_backoff && e->deadline != OP_NO_DEADLINE &&
        e->deadline <= uv_now(p->loop) && !p->aborting) {
        /* The record's deadline passed before this outcome was taken: a
         * call's timer (or its I/O) woke the fiber in an earlier phase of
         * the loop turn than the record's own timer. The record's deadline
         * decides, whatever the callback order: its timeout fires now (on
         * the timer, which is due), and on_timeout runs. */
        free(r->out);
        if (!p->pumping)
            rearm(p);
        return;
    }
    if (r->ok)
        t->g->processed++; /* (t may be freed once the record is completed) */
    if (r->retry && !(p->aborting) && op_retry(&p->op, e) == 0) {
        /* Another attempt follows; only the final attempt's outputs count. */
        free(r->out);
        free(t->last_error);
        t->last_error = r->ok ? NULL : strdup(r->errmsg ? r->errmsg : r->err);
    } else if (r->ok) {
        if (op_complete(&p->op, e, r->out, r->len) != 0)
            free(r->out);
    } else if (e->state == OP_PENDING) {
        route_failure(p, e, r->err);
    }
    if (!p->pumping) {
        pump(p);
        rearm(p);
    }
}

/* ---- the pump ----------------------------------------------------------------- */

static int is_blank(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r')
            return 0;
    return 1;
}

static void free_task(task *t)
{
    free(t->line);
    free(t);
}

static void accept_line(pipeline *p, const char *line, size_t len, uint64_t lineno)
{
    char err[512];
    script_parsed parsed;
    gen *g = p->cur;
    /* The task's own copy of the line is what gets parsed: the decoded
     * record writes its untouched values from these bytes, long after the
     * input buffer has moved on. (Not strndup: a NUL byte would cut it.) */
    task *t = calloc(1, sizeof *t);
    char *copy = t ? malloc(len + 1) : NULL;
    if (!copy) {
        free(t);
        fail_run(p, ABORT, "input line %" PRIu64 ": out of memory", lineno);
        return;
    }
    memcpy(copy, line, len);
    copy[len] = 0;
    t->line = copy;
    t->len = len;
    t->lineno = lineno;
    op_entry *e;
    if (script_parse(&g->sc, t->line, len, &parsed, err, sizeof err) != 0) {
        char msg[600];
        snprintf(msg, sizeof msg, "input line %" PRIu64 ": %s", lineno, err);
        switch (p->cfg->on_error) {
        case ON_ERROR_FAIL:
            free_task(t);
            op_push_failed(&p->op, lineno, msg, NULL);
            p->stop_reading = 1;
            break;
        case ON_ERROR_SKIP:
            free_task(t);
            p->skipped++;
            p->malformed++;
            break;
        case ON_ERROR_DEAD_LETTER:
            /* It takes a slot and leaves in its turn, so the dead-letter
             * file keeps pace with the output; the task keeps the raw line
             * for checkpoints. */
            t->malformed = 1;
            if (op_push_record(&p->op, lineno, 0, t, &e) == 0) {
                t->e = e;
                p->malformed++;
                route_failure(p, e, err);
            } else {
                free_task(t);
            }
            break;
        }
        return;
    }
    if (parsed.is_watermark) {
        free_task(t);
        if (wmgen_on_watermark(&p->wm, parsed.watermark))
            op_push_watermark(&p->op, parsed.watermark);
        return;
    }
    if (op_push_record(&p->op, lineno, 0, t, &e) != 0) {
        /* Cannot happen: pump checks room first. Keep the record visible. */
        script_drop_parsed(&g->sc);
        free_task(t);
        fail_run(p, ABORT, "input line %" PRIu64 ": the operator refused the record", lineno);
        return;
    }
    t->e = e;
    t->g = g;
    g->records++;
    e->policy = &g->policy;
    if (e->deadline != OP_NO_DEADLINE)
        t->deadline = g->sc.rt.epoch0 + (double)e->deadline / 1000.0;
    int64_t wm;
    if (parsed.has_ts && wmgen_on_event(&p->wm, parsed.ts, &wm)) {
        p->have_pending_wm = 1;
        p->pending_wm = wm;
    }
    /* May complete (and even emit) before it returns. */
    script_invoke(&g->sc, t, &t->fiber, e->seq, lineno, 1,
                  e->deadline == OP_NO_DEADLINE ? 0 : e->deadline, NULL);
}

/* Re-insert the checkpoint's entries in stored order. A record that had
 * completed (held for order or behind a watermark) comes back with its
 * result and leaves in its turn without calling the script again; the
 * others are re-invoked, continuing their attempt counts and used budgets. */
static void inject_restore(pipeline *p)
{
    ckpt *k = p->restore;
    p->restore = NULL;
    for (size_t i = 0; i < k->n && !p->aborting && !op_failed(&p->op); i++) {
        ckpt_entry *ce = &k->entries[i];
        if (ce->kind == CKPT_WATERMARK) {
            if (op_restore_watermark(&p->op, ce->watermark) != 0)
                fail_run(p, ABORT, "restoring from the checkpoint: out of memory");
            continue;
        }
        gen *g = p->cur;
        task *t = calloc(1, sizeof *t);
        if (!t) {
            fail_run(p, ABORT, "out of memory restoring the checkpoint's record at input line %" PRIu64,
                     ce->line);
            break;
        }
        t->line = ce->raw;
        t->len = ce->raw_len;
        t->lineno = ce->line;
        t->last_error = ce->last_error;
        t->malformed = ce->malformed;
        ce->raw = ce->last_error = NULL; /* the task owns them now */
        op_entry *e;
        if (ce->done) {
            /* Its result passes to the entry; the task (raw line) stays
             * for later checkpoints. It may leave at once, releasing t. */
            int rc = op_restore_completed(&p->op, ce->seq, ce->line, ce->attempt, ce->timed_out, ce->out,
                                          ce->out_len, ce->dlq, ce->dlq_len, t, NULL);
            if (rc != 0) {
                free(t->line);
                free(t->last_error);
                free(t);
                fail_run(p, ABORT, "restoring from the checkpoint: out of memory");
                break;
            }
            ce->out = ce->dlq = NULL;
            continue;
        }
        char err[512];
        script_parsed parsed;
        int bad = ce->malformed || script_parse(&g->sc, t->line, t->len, &parsed, err, sizeof err) != 0;
        if (bad && ce->malformed)
            snprintf(err, sizeof err, "malformed JSON (restored from a checkpoint)");
        if (op_restore_record(&p->op, ce->seq, ce->line, ce->attempt, ce->budget_used_ms, t, &e) != 0) {
            if (!bad)
                script_drop_parsed(&g->sc);
            free(t->line);
            free(t->last_error);
            free(t);
            fail_run(p, ABORT, "restoring from the checkpoint: out of memory");
            break;
        }
        t->e = e;
        if (bad) {
            t->malformed = 1;
            route_failure(p, e, err);
            continue;
        }
        t->g = g;
        g->records++;
        e->policy = &g->policy;
        if (e->deadline != OP_NO_DEADLINE)
            t->deadline = g->sc.rt.epoch0 + (double)e->deadline / 1000.0;
        script_invoke(&g->sc, t, &t->fiber, e->seq, t->lineno, (int)e->attempt,
                      e->deadline == OP_NO_DEADLINE ? 0 : e->deadline, t->last_error);
    }
    op_restore_done(&p->op, k->next_seq);
    ckpt_free(k);
    free(k);
}

static void pump(pipeline *p)
{
    if (p->pumping || p->phase != RUNNING)
        return;
    p->pumping = 1;
    if (p->restore)
        inject_restore(p);
    while (!p->stop_reading && !op_failed(&p->op)) {
        if (p->have_pending_wm) {
            if (op_full(&p->op))
                break;
            p->have_pending_wm = 0;
            op_push_watermark(&p->op, p->pending_wm);
            continue;
        }
        if (op_full(&p->op) || output_backlog(&p->out) > OUTPUT_HIGH_WATER || p->input_ended)
            break;
        const char *line;
        size_t len;
        uint64_t lineno;
        int rc = input_next_line(&p->in, &line, &len, &lineno);
        if (rc == INPUT_AGAIN) {
            input_want(&p->in);
            break;
        }
        if (rc == INPUT_EOF) {
            p->input_ended = 1;
            /* The back-offs waiting now end at once, so the drain does not
             * sit out long delays; a retry scheduled after this point
             * waits its delay again (max_attempts is honoured and a
             * struggling service is not hammered). README: "Retries". */
            op_retry_all_now(&p->op);
            break;
        }
        if (rc == INPUT_ERROR) {
            char msg[512];
            input_strerror(&p->in, msg, sizeof msg);
            op_push_failed(&p->op, p->in.lineno, msg, NULL);
            p->stop_reading = 1;
            break;
        }
        if (is_blank(line, len))
            continue;
        accept_line(p, line, len, lineno);
    }
    p->pumping = 0;
    rearm(p);
    finish_if_done(p);
}

void pipeline_pump(pipeline *p)
{
    pump(p);
}

void pipeline_fail(pipeline *p, int abort_now, const char *fmt, ...)
{
    char *msg = NULL;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&msg, fmt, ap) < 0)
        msg = NULL;
    va_end(ap);
    fail_run(p, abort_now ? ABORT : DRAIN, "%s", msg ? msg : "run failed");
    free(msg);
    finish_if_done(p);
}

static void on_input_data(void *ud)
{
    pump(ud);
}

static void on_output_written(void *ud)
{
    pipeline *p = ud;
    ckpt_output_progress(p);
    /* pump() itself checks the backlog against the high-water mark. */
    if (output_backlog(&p->out) <= OUTPUT_HIGH_WATER)
        pump(p);
}

static void on_dlq_error(void *ud)
{
    pipeline *p = ud;
    fail_run(p, ABORT, "--dead-letter %s: write error: %s", p->cfg->dead_letter, uv_strerror(p->dlq.error));
    finish_if_done(p);
}

static void on_output_error(void *ud)
{
    pipeline *p = ud;
    if (p->out.error == UV_EPIPE) {
        /* The reader went away (`moonwait ... | head -1`, a FIFO's reader
         * closed): nobody wants the rest. Stop quietly, as a Unix filter
         * killed by SIGPIPE does, with its status (128 + SIGPIPE). */
        if (p->exit_code == 0)
            p->exit_code = 128 + SIGPIPE;
        p->stop_reading = 1;
        p->aborting = 1;
        abandon_all(p);
        finish_if_done(p);
        return;
    }
    fail_run(p, ABORT, "--output %s: write error: %s", p->cfg->output, uv_strerror(p->out.error));
    finish_if_done(p);
}

/* ---- signals ------------------------------------------------------------------ */

static void on_signal(uv_signal_t *h, int signum)
{
    pipeline *p = h->data;
    const char *name = signum == SIGINT ? "SIGINT" : "SIGTERM";
    if (++p->signals > 1) { /* (guard_second_signal's handler exits first) */
        fprintf(stderr, "moonwait: second %s: exiting at once\n", name);
        exit(128 + signum);
    }
    if (p->cfg->checkpoint_dir && p->phase == RUNNING && !p->restore && p->exit_code == 0 && !p->aborting) {
        /* Exactly-once: stop reading, checkpoint this moment (the records
         * in flight included), abandon them, exit 128 + signal once the
         * checkpoint is written. A restart redoes only those records. */
        p->stop_reading = 1;
        size_t n = op_size(&p->op);
        if (ckpt_take_now(p) != 0)
            return; /* the run was failed, saying why */
        p->signal_exit = 128 + signum;
        fail_run(p, ABORT, "interrupted by %s after input line %" PRIu64 ": writing a checkpoint of the %zu "
                           "entries in flight to %s, then exiting %d; run the same command to continue (send "
                           "it again to exit at once)",
                 name, p->in.lineno, n, p->cfg->checkpoint_dir, p->signal_exit);
        finish_if_done(p);
        return;
    }
    fail_run(p, DRAIN, "interrupted by %s after input line %" PRIu64
                "; records already emitted are complete (send it again to exit at once)",
             name, p->in.lineno);
    finish_if_done(p);
}

/* ---- run ---------------------------------------------------------------------- */

int pipeline_run(const config *c, const char *lua_dir)
{
    pipeline *p = calloc(1, sizeof *p);
    if (!p) {
        fprintf(stderr, "moonwait: out of memory\n");
        return 1;
    }
    uv_loop_t loop;
    uv_loop_init(&loop);
    p->cfg = c;
    p->lua_dir = lua_dir;
    p->loop = &loop;
    p->armed = OP_NO_DEADLINE;
    p->start_ms = p->last_stats_ms = uv_now(&loop);
    signal(SIGPIPE, SIG_IGN);
    int code = 0;
    char *err = NULL;
    /* Before the first VM: the newest VM takes LuaJIT's profiler. */
    int grc = guard_start(&loop, c->cpu_budget_ms);
    if (grc != 0)
        fprintf(stderr, "moonwait: warning: --cpu-budget is off: %s\n", uv_strerror(grc));

    int prep = ckpt_prepare(p);
    if (prep != 0) {
        code = prep < 0 ? 2 : 0;
        goto early;
    }
    script_stdin_is_input = strcmp(c->input, "-") == 0;
    if (gen_first(p) != 0) {
        code = 2;
        goto early;
    }
    /* A failed open leaves the struct closable: close it either way. */
    p->output_open = 1;
    if (output_open(&p->out, &loop, c->output, p->restore_out_len, on_output_error, p, &err) != 0) {
        fprintf(stderr, "moonwait: --output %s\n", err ? err : "cannot open output");
        code = 2;
        goto early;
    }
    if (c->on_error == ON_ERROR_DEAD_LETTER) {
        p->dlq_open = 1;
        if (output_open(&p->dlq, &loop, c->dead_letter, p->restore_dlq_len, on_dlq_error, p, &err) != 0) {
            fprintf(stderr, "moonwait: --dead-letter %s\n", err ? err : "cannot open the dead-letter file");
            code = 2;
            goto early;
        }
    }
    /* SIGHUP's handler goes in before a FIFO input can block us in open():
     * its default action would end the process. */
    gen_start_triggers(p);
    p->input_open = 1;
    if (input_open(&p->in, &loop, c->input, c->max_line, on_input_data, p, &err) != 0) {
        fprintf(stderr, "moonwait: %s\n", err ? err : "cannot open input");
        code = 2;
        goto early;
    }

    wmgen_init(&p->wm, c->max_ooo_ms);
    op_config oc = { c->mode, c->capacity, c->timeout_ms };
    op_callbacks cb = { cb_now, cb_emit, cb_emit_watermark, cb_timeout, cb_failure, cb_release,
                        cb_retry, cb_random };
    op_init(&p->op, &oc, &cb, p);
    p->rng = uv_hrtime() | 1;
    output_on_written(&p->out, on_output_written);
    if (p->dlq_open)
        output_on_written(&p->dlq, on_output_written);
    ckpt_apply_input(p);
    ckpt_start(p);

    uv_timer_init(&loop, &p->timeout_timer);
    uv_timer_init(&loop, &p->stats_timer);
    uv_signal_init(&loop, &p->sigint);
    uv_signal_init(&loop, &p->sigterm);
    p->timeout_timer.data = p->stats_timer.data = p->sigint.data = p->sigterm.data = p;
    p->open_handles = 4;
    uv_signal_start(&p->sigint, on_signal, SIGINT);
    uv_signal_start(&p->sigterm, on_signal, SIGTERM);
    uv_unref((uv_handle_t *)&p->sigint);
    uv_unref((uv_handle_t *)&p->sigterm);
    /* The second one exits from the signal handler itself: libuv's
     * callbacks do not run while a script keeps the loop busy. */
    guard_second_signal();
    if (c->stats) {
        uv_timer_start(&p->stats_timer, on_stats_timer, 1000, 1000);
        uv_unref((uv_handle_t *)&p->stats_timer);
    }

    p->phase = OPENING;
    if (script_run_hook(&p->cur->sc, "open", &p->cur->hook_fiber) != 0) {
        p->cur->state = G_CURRENT;
        p->phase = RUNNING;
        pump(p);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    if (p->phase != DONE) {
        /* The loop ran dry while work remained: a script waiting on
         * nothing. Say so rather than exit silently. */
        fprintf(stderr, "moonwait: internal error: the event loop stopped with %zu records in "
                        "flight (phase %d)\n", op_size(&p->op), p->phase);
        p->exit_code = 1;
        shutdown_all(p);
        uv_run(&loop, UV_RUN_DEFAULT);
    }
    code = p->exit_code;
    /* Stopped by a signal whose checkpoint was written: 128 + signal. */
    if (p->signal_exit && !p->ckpt_failed)
        code = p->signal_exit;
    goto out;

early:
    free(err);
    net_pool_close_all();
    if (p->input_open)
        input_close(&p->in, NULL);
    if (p->output_open)
        output_close(&p->out, NULL);
    if (p->dlq_open)
        output_close(&p->dlq, NULL);
    gen_stop_triggers(p);
    gen_close_all(p);
    uv_run(&loop, UV_RUN_DEFAULT);
out:
    gen_free_all(p);
    ckpt_release(p);
    if (p->restore) {
        ckpt_free(p->restore);
        free(p->restore);
    }
    guard_stop();
    if (uv_loop_close(&loop) != 0 && code == 0) {
        fprintf(stderr, "moonwait: internal error: handles left open at exit\n");
        code = 1;
    }
    free(p);
    return code;
}
