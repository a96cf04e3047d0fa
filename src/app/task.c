/*
 * task.c: a record's attempts (contract in task.h).
 */
#define _GNU_SOURCE
#include "task.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

_Static_assert(SCRIPT_NO_KEY == OP_NO_KEY, "a record without a key has the operator's no-key key");

struct task {
    op_entry *e;
    const task_env *env;  /* the run's (--workers: where attempts are sent) */
    int worker;           /* --workers: the worker its attempts run on (0: this thread) */
    int busy;             /* an attempt of it runs on this thread (main_busy) */
    wk_job *job;          /* an attempt of it runs on another worker; NULL after */
    script_tape *tape;    /* --workers: its line's tape, read here, for its worker
                           * to build the first attempt's record from (owned
                           * until sent with it), or NULL */
    int malformed;        /* a line that did not parse, routed to the dead letters */
    gen *g;               /* the generation it runs on */
    rt_fiber *fiber;      /* while an attempt or predicate runs; NULL after */
    script_item *item;    /* a batching script: its place in a batch while it
                           * waits in one or the batch runs; NULL after */
    char *line;           /* raw input line (owned; read ones live in the same
                           * allocation, right after the struct) */
    size_t len;
    uint64_t lineno;
    char *last_error;     /* the previous attempt's error (owned), or NULL */
    char *source_id;      /* a broker's entry id (owned), or NULL */
    uint32_t deliveries;
    uint64_t ticket;      /* the source's, for source_done */
    uint64_t started;     /* op_now when the running attempt started */
    /* --metrics only (env->mx), uv_hrtime: */
    uint64_t read_ns;     /* the line was read */
    uint64_t attempt_ns;  /* the running attempt started (0: none runs) */
    uint64_t done_ns;     /* the record finished (its outcome was decided) */
};

/* --metrics: the running attempt of t ended now (returns now, 0 without). */
static uint64_t attempt_ended(const task_env *env, task *t)
{
    if (!env->mx)
        return 0;
    uint64_t now = expose_now();
    expose_attempt(env->mx, t->attempt_ns, now);
    t->attempt_ns = 0;
    return now;
}

/* --metrics: t's outcome is being applied (now_ns: its time, 0 to read the
 * clock): a record the operator emits in this call other than t waited
 * behind it. Call finished(env) after. */
static void finishing(const task_env *env, task *t, uint64_t now_ns)
{
    if (!env->mx)
        return;
    t->done_ns = now_ns ? now_ns : expose_now();
    expose_completing(env->mx, t);
}

static void finished(const task_env *env)
{
    if (env->mx)
        expose_completing(env->mx, NULL);
}

static void free_task(task *t)
{
    if (t->line != (char *)(t + 1))
        free(t->line);
    script_tape_free(t->tape);
    free(t->last_error);
    free(t->source_id);
    free(t);
}

static route_rec rec_of(const task *t)
{
    return (route_rec){ t->line, t->len, t->lineno, t->malformed, t->source_id, t->deliveries };
}

static void fail_record(const task_env *env, task *t, const char *err)
{
    route_rec rec = rec_of(t);
    if (env->mx && !t->done_ns)
        finishing(env, t, 0);
    route_failure(env->route, t->e, &rec, err, op_now(env->op));
    finished(env);
}

/* The record's deadline as the script takes it: the operator's, on the
 * same clock (the loop's uv_now), 0 for none. */
static uint64_t deadline_ms(const op_entry *e)
{
    return e->deadline == OP_NO_DEADLINE ? 0 : e->deadline;
}

/* Run the attempt e->attempt of t on its generation with the decoded
 * record `rec` (ownership passes). May complete (and even emit) before it
 * returns. */
static void invoke(const task_env *env, task *t, op_entry *e, script_rec *rec)
{
    t->started = op_now(env->op);
    if (env->mx)
        t->attempt_ns = e->attempt == 1 && t->read_ns ? t->read_ns : expose_now();
    script_call call = { t, &t->fiber, &t->item, e->seq, t->lineno, (int)e->attempt, deadline_ms(e), t->last_error,
                         t->source_id, t->deliveries };
    if (t->worker > 0) {
        /* Its worker builds the record in its own VM: from the tape read
         * here for the first attempt, from the line for the others. */
        t->job = wk_invoke(env->wk, t->worker, gen_script(t->g)->generation, t->line, t->len, t->tape, &call);
        t->tape = NULL;
        if (!t->job)
            fail_record(env, t, "out of memory sending the record to its worker");
        return;
    }
    t->busy = 1;
    (*env->main_busy)++;
    script_invoke(gen_script(t->g), rec, &call);
}

/* This thread's attempt of t ended or was abandoned. */
static void not_busy(task *t)
{
    if (t->busy) {
        t->busy = 0;
        (*t->env->main_busy)--;
    }
}

/* Read `line` (t's) on generation g: what it is, and for a record the
 * worker its attempts run on and, when that is this thread, its decoded
 * record (*sr). 0, or -1 with err (a malformed line). With one worker
 * this is script_parse; with several, the line is decoded only where it
 * runs, and a key always runs on the same worker (keyed mode's order
 * needs no more: the operator starts a key's records one after another). */
static int classify(const task_env *env, task *t, gen *g, script_parsed *p, script_rec **sr, char *err,
                    size_t errlen)
{
    *sr = NULL;
    t->worker = 0;
    if (!env->wk)
        return script_parse(gen_script(g), t->line, t->len, p, sr, err, errlen);
    if (script_classify(gen_script(g), t->line, t->len, p, err, errlen) != 0)
        return -1;
    if (p->is_watermark)
        return 0;
    int n = wk_count(env->wk);
    t->worker = p->key != SCRIPT_NO_KEY ? (int)(p->key % (uint64_t)n) : wk_pick(env->wk, *env->main_busy, op_capacity(env->op));
    if (t->worker == 0)
        *sr = script_build(gen_script(g)); /* from the tape just read */
    else
        t->tape = script_tape_keep(gen_script(g)); /* (NULL: the worker parses) */
    return 0;
}

/* Adaptive capacity: t's attempt ended now (overload: it signalled one, or
 * timed out). The controller sets the operator's capacity; the run's pump
 * follows it. Before the outcome is applied: that may release t. */
static void adapt_feed(const task_env *env, const task *t, int overload)
{
    if (!env->adapt)
        return;
    size_t lim = adapt_sample(env->adapt, t->started, op_now(env->op), op_size(env->op), overload);
    op_set_capacity(env->op, lim);
}

/* t entered the operator as e on generation g: run its attempt there. */
static void start(const task_env *env, task *t, gen *g, op_entry *e, script_rec *rec)
{
    t->e = e;
    t->g = g;
    gen_retain(g);
    e->policy = gen_policy(g);
    invoke(env, t, e, rec);
}

static int is_blank(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r')
            return 0;
    return 1;
}

/* A line that did not parse. */
static int malformed(const task_env *env, task *t, const char *err)
{
    t->malformed = 1;
    route_rec rec = rec_of(t);
    int rc = route_malformed(env->route, &rec, err, t, op_now(env->op));
    if (rc == ROUTE_QUEUED)
        return TASK_OK; /* t is the entry's now, and may be gone already:
                         * a dead letter (or skipped line) at the head leaves at once */
    free_task(t);
    return rc == ROUTE_STOP ? TASK_STOP : TASK_OK;
}

int task_accept(const task_env *env, const source_record *rec, char *msg, size_t msglen)
{
    if (is_blank(rec->data, rec->len)) {
        source_done(env->src, rec->ticket);
        return TASK_OK;
    }
    gen *g = gen_current(env->gens);
    /* The task's own copy of the line is what gets parsed: the decoded
     * record writes its untouched values from these bytes, long after the
     * input buffer has moved on. (Not strndup: a NUL byte would cut it.) */
    task *t = rec->len < SIZE_MAX - sizeof *t ? malloc(sizeof *t + rec->len + 1) : NULL;
    if (!t) {
        snprintf(msg, msglen, "input line %" PRIu64 ": out of memory", rec->line);
        return TASK_FATAL;
    }
    memset(t, 0, sizeof *t);
    char *copy = (char *)(t + 1); /* one allocation for both: a malloc and a free less a record */
    memcpy(copy, rec->data, rec->len);
    copy[rec->len] = 0;
    t->env = env;
    t->line = copy;
    t->len = rec->len;
    t->lineno = rec->line;
    t->ticket = rec->ticket;
    t->deliveries = rec->deliveries;
    if (env->mx)
        t->read_ns = expose_now();
    if (rec->id && !(t->source_id = strdup(rec->id))) {
        free_task(t);
        snprintf(msg, msglen, "input line %" PRIu64 ": out of memory", rec->line);
        return TASK_FATAL;
    }
    char err[512];
    script_parsed parsed;
    script_rec *sr;
    if (classify(env, t, g, &parsed, &sr, err, sizeof err) != 0)
        return malformed(env, t, err);
    if (parsed.is_watermark) {
        source_done(env->src, t->ticket);
        free_task(t);
        if (evtime_on_watermark(env->ev, parsed.watermark))
            op_push_watermark(env->op, parsed.watermark);
        return TASK_OK;
    }
    op_entry *e;
    if (op_push_keyed(env->op, parsed.key, t->lineno, 0, t, &e) != 0) {
        /* Cannot happen: the run checks room first. Keep the record visible. */
        script_rec_free(gen_script(g), sr);
        free_task(t);
        snprintf(msg, msglen, "input line %" PRIu64 ": the operator refused the record", rec->line);
        return TASK_FATAL;
    }
    if (parsed.has_ts)
        evtime_on_event(env->ev, parsed.ts);
    if (rec->refuse) {
        /* Not to be invoked (a poison entry): it fails as it is, in its
         * turn; t may be gone after this. */
        script_rec_free(gen_script(g), sr);
        t->e = e;
        fail_record(env, t, rec->refuse);
        return TASK_OK;
    }
    limit_take(env->lim); /* its first attempt starts: the pump saw the token */
    start(env, t, g, e, sr);
    return TASK_OK;
}

int task_outcome(const task_env *env, task *t, script_result *r, int aborting)
{
    op_entry *e = t->e;
    t->fiber = NULL;
    t->job = NULL;
    not_busy(t);
    if (!r->ok && !r->err)
        r->err = "out of memory"; /* the message itself could not be made */
    if (e->state == OP_PENDING && !e->in_backoff && e->deadline != OP_NO_DEADLINE &&
        e->deadline <= op_now(env->op) && !aborting) {
        /* The record's deadline passed before this outcome was taken: a
         * call's timer (or its I/O) woke the fiber in an earlier phase of
         * the loop turn than the record's own timer. The record's deadline
         * decides, whatever the callback order: its timeout fires now (on
         * the timer, which is due), and on_timeout runs. */
        free(r->out);
        return TASK_LATE;
    }
    if (!aborting)
        adapt_feed(env, t, r->overloads > 0);
    uint64_t now_ns = attempt_ended(env, t);
    if (r->retry && !aborting && op_retry(env->op, e) == 0) {
        /* Another attempt follows; only the final attempt's outputs count. */
        free(r->out);
        free(t->last_error);
        t->last_error = r->ok ? NULL : strdup(r->errmsg ? r->errmsg : r->err);
    } else if (r->ok) {
        finishing(env, t, now_ns);
        if (op_complete(env->op, e, r->out, r->len) != 0)
            free(r->out);
        finished(env);
    } else if (e->state == OP_PENDING) {
        finishing(env, t, now_ns);
        fail_record(env, t, r->err);
    }
    return TASK_OK;
}

void task_retry(const task_env *env, op_entry *e)
{
    task *t = e->udata;
    script_rec *rec = NULL;
    if (t->worker == 0 && script_reparse(gen_script(t->g), t->line, t->len, &rec) != 0) {
        fail_record(env, t, "out of memory decoding the record for another attempt");
        return;
    }
    invoke(env, t, e, rec);
}

void task_timeout(const task_env *env, op_entry *e)
{
    task *t = e->udata;
    /* Abandon first: whatever it waits on is cancelled and it is never
     * resumed, so a late result cannot race the timeout's outcome. */
    task_discard(t);
    adapt_feed(env, t, 1); /* a timeout is an overload signal */
    uint64_t now_ns = env->mx && t->attempt_ns ? attempt_ended(env, t) : 0;
    char *out = NULL, *err = NULL;
    size_t len = 0;
    script_call a = { .seq = e->seq, .line = t->lineno, .attempt = (int)e->attempt, .deadline_ms = deadline_ms(e),
                      .source_id = t->source_id, .deliveries = t->deliveries };
    int rc = script_on_timeout(gen_script(t->g), t->line, t->len, &a, &out, &len, &err);
    finishing(env, t, now_ns);
    if (rc == 1) {
        op_complete(env->op, e, out, len);
        finished(env);
    } else if (rc == 0) {
        char msg[160];
        snprintf(msg, sizeof msg, "timed out after %" PRIu64 " ms%s (the script has no on_timeout)",
                 env->timeout_ms, e->attempt > 1 ? " across its attempts" : "");
        fail_record(env, t, msg);
    } else {
        char *msg = NULL;
        if (asprintf(&msg, "timed out, and on_timeout failed: %s", err) < 0)
            msg = NULL;
        fail_record(env, t, msg ? msg : err);
        free(msg);
    }
    free(err);
}

void task_discard(task *t)
{
    if (!t)
        return;
    if (t->job) {
        wk_discard(t->env->wk, t->job);
        t->job = NULL;
    }
    if (t->item)
        script_batch_leave(t->item); /* (clears t->item) */
    if (t->fiber) {
        rt_fiber_discard(t->fiber);
        t->fiber = NULL;
    }
    not_busy(t);
}

void task_release(op_entry *e)
{
    task *t = e->udata;
    if (!t)
        return;
    task_discard(t);
    gen *g = t->g;
    free_task(t);
    if (g)
        gen_release(g);
}

/* A stored record not completed: decode it again and re-invoke it (a
 * malformed one is routed again). 0, or -1 with msg. */
static int restore_pending(const task_env *env, task *t, ckpt_entry *ce, char *msg, size_t msglen)
{
    gen *g = gen_current(env->gens);
    char err[512];
    script_parsed parsed;
    script_rec *sr = NULL;
    int bad = ce->malformed || classify(env, t, g, &parsed, &sr, err, sizeof err) != 0;
    if (bad && ce->malformed)
        snprintf(err, sizeof err, "malformed JSON (restored from a checkpoint)");
    op_entry *e;
    uint64_t key = bad ? OP_NO_KEY : parsed.key; /* a malformed line has no key, as when it was read */
    if (op_restore_keyed(env->op, key, ce->seq, ce->line, ce->attempt, ce->budget_used_ms, t, &e) != 0) {
        script_rec_free(gen_script(g), sr);
        free_task(t);
        snprintf(msg, msglen, "restoring from the checkpoint: out of memory");
        return -1;
    }
    if (bad) {
        t->e = e;
        t->malformed = 1;
        fail_record(env, t, err);
        return 0;
    }
    /* A restored record has started: with no token now it waits for one
     * in the operator (on its own budget), through the rate limit's gate,
     * then task_retry runs this same attempt. */
    uint64_t at = limit_gate(env->lim, op_now(env->op));
    if (at != 0) {
        script_rec_free(gen_script(g), sr);
        t->e = e;
        t->g = g;
        gen_retain(g);
        e->policy = gen_policy(g);
        if (op_delay_start(env->op, e, at) != 0) {
            snprintf(msg, msglen, "restoring from the checkpoint: out of memory");
            return -1;
        }
        return 0;
    }
    start(env, t, g, e, sr);
    return 0;
}

int task_restore(const task_env *env, ckpt_entry *ce, char *msg, size_t msglen)
{
    task *t = calloc(1, sizeof *t);
    if (!t) {
        snprintf(msg, msglen, "out of memory restoring the checkpoint's record at input line %" PRIu64, ce->line);
        return -1;
    }
    t->env = env;
    t->line = ce->raw;
    t->len = ce->raw_len;
    t->lineno = ce->line;
    t->last_error = ce->last_error;
    t->malformed = ce->malformed;
    ce->raw = ce->last_error = NULL; /* the task owns them now */
    if (!ce->done)
        return restore_pending(env, t, ce, msg, msglen);
    /* Its key, read again from its line (keys are hashed with this run's
     * secret); a malformed line has none. */
    uint64_t key = OP_NO_KEY;
    if (!t->malformed && script_key(gen_script(gen_current(env->gens)), t->line, t->len, &key) != 0)
        key = OP_NO_KEY;
    /* The format writes "no dead letter" as length 0 and reads it back as
     * "" (a dead-letter line is never empty): passed on, the operator would
     * count every restored held record as dead-lettered. */
    if (ce->dlq && ce->dlq_len == 0) {
        free(ce->dlq);
        ce->dlq = NULL;
    }
    /* Its result passes to the entry; the task (raw line) stays for later
     * checkpoints. It may leave at once, releasing t. */
    if (op_restore_completed_keyed(env->op, key, ce->seq, ce->line, ce->attempt, ce->timed_out, ce->out,
                                   ce->out_len, ce->dlq, ce->dlq_len, t, NULL) != 0) {
        free_task(t);
        snprintf(msg, msglen, "restoring from the checkpoint: out of memory");
        return -1;
    }
    ce->out = ce->dlq = NULL;
    return 0;
}

const char *task_line(const task *t, size_t *len)
{
    *len = t->len;
    return t->line;
}

uint64_t task_lineno(const task *t)
{
    return t->lineno;
}

int task_generation(const task *t)
{
    return t->g ? gen_script(t->g)->generation : 0;
}

int task_malformed(const task *t)
{
    return t->malformed;
}

const char *task_last_error(const task *t)
{
    return t->last_error;
}

void task_times(const task *t, uint64_t *read_ns, uint64_t *done_ns)
{
    *read_ns = t ? t->read_ns : 0;
    *done_ns = t ? t->done_ns : 0;
}

uint64_t task_ticket(const task *t)
{
    return t ? t->ticket : 0;
}
