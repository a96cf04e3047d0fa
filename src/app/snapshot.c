/*
 * snapshot.c: capturing a checkpoint's contents (contract in snapshot.h).
 */
#include "snapshot.h"

#include <stdio.h>
#include <string.h>

#include "../store/ckpt.h"

/* A record's entry: a completed one with its result, any other with the
 * attempt to continue at and the budget it used. */
static void record_entry(const snap_view *v, const op_entry *e, uint64_t now, ckpt_entry *ce)
{
    ce->kind = CKPT_RECORD;
    ce->seq = e->seq;
    ce->line = e->line;
    if (e->state == OP_DONE) {
        /* Completed, held for order or behind a watermark: its result
         * is stored, so a restore emits it without calling the script
         * again (a second call could give another answer, or time out
         * on the budget it spent waiting here). */
        ce->done = 1;
        ce->attempt = e->attempt;
        ce->timed_out = e->timed_out;
        ce->out = e->out;
        ce->out_len = e->out ? e->out_len : 0;
        ce->dlq = e->dlq;
        ce->dlq_len = e->dlq ? e->dlq_len : 0;
        return;
    }
    /* A record in back-off continues at its next attempt; one running (or
     * failed, with --on-error fail) repeats its current one. Its budget
     * used is the time it ran: since it was accepted, plus what it had
     * used before a restore. */
    ce->attempt = op_resume_attempt(e);
    if (e->deadline != OP_NO_DEADLINE && v->timeout_ms) {
        uint64_t left = e->deadline > now ? e->deadline - now : 0;
        ce->budget_used_ms = left >= v->timeout_ms ? 0 : v->timeout_ms - left;
    }
}

/* Every queued entry, in order, into k (its strings borrowed). 0 or -1. */
static int add_entries(const snap_view *v, uint64_t now, ckpt *k)
{
    for (const op_entry *e = op_first(v->op); e; e = op_next(e)) {
        ckpt_entry ce;
        memset(&ce, 0, sizeof ce);
        if (e->kind == OP_KIND_WATERMARK) {
            ce.kind = CKPT_WATERMARK;
            ce.watermark = e->watermark;
        } else {
            snap_rec r;
            if (v->record(e, &r) != 0)
                continue;
            record_entry(v, e, now, &ce);
            ce.malformed = r.malformed;
            ce.raw = (char *)r.line;
            ce.raw_len = r.len;
            ce.last_error = (char *)r.last_error;
        }
        if (ckpt_add(k, &ce) != 0)
            return -1;
    }
    return 0;
}

void snap_mode_name(op_mode mode, const char *key, char *out, size_t n)
{
    if (mode == OP_KEYED)
        snprintf(out, n, "keyed by %s", key ? key : "");
    else
        snprintf(out, n, "%s", mode == OP_ORDERED ? "ordered" : "unordered");
}

int snap_take(const snap_view *v, int complete, uint64_t now, snap *s)
{
    ckpt k;
    memset(&k, 0, sizeof k);
    k.borrowed = 1; /* the strings are the run's: unchanged while we encode */
    k.input = (char *)v->id_in;
    k.output = (char *)v->id_out;
    k.dead_letter = (char *)v->id_dl;
    char mode[320];
    snap_mode_name(v->mode, v->key, mode, sizeof mode);
    k.mode = mode;
    k.complete = complete;
    s->pos = source_position(v->src);
    k.input_offset = s->pos.offset;
    k.input_line = s->pos.line;
    k.next_seq = op_next_seq(v->op);
    evtime_save(v->ev, &k);
    k.output_len = sink_position(v->out);
    k.dead_letter_len = v->dlq ? sink_position(v->dlq) : 0;
    int rc = add_entries(v, now, &k) == 0 && ckpt_encode(&k, &s->buf, &s->len) == 0 ? 0 : -1;
    s->out_len = k.output_len;
    s->dlq_len = k.dead_letter_len;
    s->final = complete;
    k.input = k.output = k.dead_letter = k.mode = NULL;
    ckpt_free(&k);
    return rc;
}
