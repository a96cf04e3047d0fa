/*
 * workers.c: --workers N, the main thread's side (contract in workers.h):
 * starting and stopping the threads, the queues, sending attempts and
 * generation operations, and taking the answers (on_answers), which it
 * keeps until they come. A worker's side is wk_thread.c; the two share
 * nothing but the queues and what a message hands over. A job's fields
 * are written by one side at a time: this thread before it sends INVOKE,
 * the worker until it sends DONE, this thread again after it took DONE;
 * the queue's mutex orders each hand-over.
 */
#define _GNU_SOURCE

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../util/list.h"
#include "../util/log.h"
#include "workers_int.h"

/* ---- queues ------------------------------------------------------------ */

int wk_mq_init(mqueue *q, uv_loop_t *loop, uv_async_cb cb, void *data)
{
    memset(q, 0, sizeof *q);
    if (uv_mutex_init(&q->mu) != 0)
        return -1;
    if (uv_async_init(loop, &q->async, cb) != 0) {
        uv_mutex_destroy(&q->mu);
        return -1;
    }
    q->async.data = data;
    return 0;
}

/* Append (any thread) and wake the consumer. Out of memory aborts: a lost
 * message would lose a record or hang the run, and there is no one to tell. */
void wk_mq_push(mqueue *q, msg m)
{
    uv_mutex_lock(&q->mu);
    if (q->n == q->cap) {
        size_t cap = q->cap ? q->cap * 2 : 64;
        msg *v = realloc(q->v, cap * sizeof *v);
        if (!v) {
            uv_mutex_unlock(&q->mu);
            mw_log(MW_LOG_ERROR, "out of memory passing a message between workers");
            abort();
        }
        q->v = v;
        q->cap = cap;
    }
    q->v[q->n++] = m;
    uv_mutex_unlock(&q->mu);
    uv_async_send(&q->async);
}

/* Take everything queued: *spare becomes the batch (n messages). */
size_t wk_mq_take(mqueue *q, msg **spare, size_t *spare_cap)
{
    uv_mutex_lock(&q->mu);
    msg *v = q->v;
    size_t n = q->n, cap = q->cap;
    q->v = *spare;
    q->cap = *spare_cap;
    q->n = 0;
    uv_mutex_unlock(&q->mu);
    *spare = v;
    *spare_cap = cap;
    return n;
}

/* How much busier the main thread counts itself in wk_pick, at most. */
#define WK_MAIN_BIAS 64

/* ---- the main thread's side ------------------------------------------------ */

static void hold(workers *w, int delta)
{
    w->outstanding = (size_t)((long)w->outstanding + delta);
    if (uv_is_closing((uv_handle_t *)&w->out.async))
        return;
    /* The main loop must not end while a worker owes it an answer, and
     * must not be kept alive by workers that owe it nothing. */
    if (w->outstanding)
        uv_ref((uv_handle_t *)&w->out.async);
    else
        uv_unref((uv_handle_t *)&w->out.async);
}

static void job_free(workers *w, wk_job *j)
{
    MW_LIST_UNLINK(w->jobs, j, prev, next);
    free(j->out);
    free(j->err);
    free(j->errmsg);
    free(j->last_error);
    free(j->source_id);
    script_tape_free(j->tape); /* (a worker that stopped before it ran) */
    free(j);
}

static void op_answered(workers *w, genop *op, char *err)
{
    if (err && !op->err)
        op->err = err;
    else
        free(err);
    if (--op->left > 0)
        return;
    hold(w, -1);
    MW_LIST_UNLINK(w->ops, op, prev, next);
    op->done(op->ud, op->err);
    free(op->err);
    free(op);
}

static void job_done(workers *w, wk_job *j)
{
    if (j->discarded)
        return; /* its DISCARDED follows; the outcome is dropped then */
    struct task *t = j->task;
    script_result r = { j->ok, j->out, j->out_len, j->err, j->errmsg, j->retry, j->overloads };
    j->out = NULL; /* the callee takes it */
    w->done(w->ud, t, &r);
    job_free(w, j);
    hold(w, -1);
}

static void on_answers(uv_async_t *a)
{
    workers *w = a->data;
    /* An outcome is judged against its record's deadline on the loop's
     * clock: read it now, not at the start of a turn this thread may have
     * spent running a script of its own while the worker ran on. */
    uv_update_time(w->loop);
    size_t n = wk_mq_take(&w->out, &w->spare, &w->spare_cap);
    for (size_t i = 0; i < n; i++) {
        msg m = w->spare[i];
        switch (m.type) {
        case A_DONE:
            job_done(w, m.p);
            break;
        case A_DISCARDED:
            job_free(w, m.p);
            hold(w, -1);
            break;
        case A_OPENED:
        case A_CLOSED:
            op_answered(w, m.p, m.err);
            break;
        }
    }
}

int wk_start(workers **out, uv_loop_t *loop, const config *c, const char *lua_dir, uint64_t key_seed,
             script_record_fn done, void *ud)
{
    *out = NULL;
    workers *w = calloc(1, sizeof *w);
    if (!w)
        goto oom;
    w->n = c->workers;
    w->loop = loop;
    w->cfg = c;
    w->lua_dir = lua_dir;
    w->key_seed = key_seed;
    w->done = done;
    w->ud = ud;
    w->ws = calloc((size_t)w->n - 1, sizeof *w->ws);
    if (!w->ws || wk_mq_init(&w->out, loop, on_answers, w) != 0) {
        free(w->ws);
        free(w);
        goto oom;
    }
    uv_unref((uv_handle_t *)&w->out.async);
    *out = w;
    for (int k = 1; k < w->n; k++) {
        worker *wk = &w->ws[k - 1];
        wk->w = w;
        wk->k = k;
        int rc = uv_loop_init(&wk->loop);
        if (rc == 0 && (rc = wk_mq_init(&wk->in, &wk->loop, wk_thread_messages, wk)) != 0)
            uv_loop_close(&wk->loop);
        if (rc == 0 && (rc = uv_thread_create(&wk->th, wk_thread_main, wk)) != 0) {
            uv_close((uv_handle_t *)&wk->in.async, NULL);
            uv_run(&wk->loop, UV_RUN_DEFAULT);
            uv_loop_close(&wk->loop);
        }
        if (rc != 0) {
            mw_log(MW_LOG_ERROR, "--workers %d: cannot start worker %d: %s", w->n, k + 1, uv_strerror(rc));
            return -1; /* the run frees what started (wk_free) */
        }
        wk->started = 1;
    }
    return 0;
oom:
    mw_log(MW_LOG_ERROR, "--workers: out of memory");
    return -1;
}

int wk_count(const workers *w)
{
    return w ? w->n : 1;
}

size_t wk_running(const workers *w, int k)
{
    return atomic_load_explicit(&((workers *)w)->ws[k - 1].pending, memory_order_relaxed);
}

int wk_pick(workers *w, size_t main_busy, size_t capacity)
{
    /* The least loaded, the main thread counted `bias` attempts busier
     * than it is: it also reads, decides and writes, and a script that
     * never yields leaves main_busy at 0 however much it runs. So each
     * other worker is kept fed (its queue never runs dry while the main
     * thread runs a record itself, which hides the time a sleeping thread
     * takes to wake) and the main thread runs the rest. The bias is at
     * most a worker's share of the capacity, so that a small capacity
     * still leaves the main thread some records. Ties spread from a
     * rotating start. */
    size_t share = capacity / (size_t)w->n, bias = share < WK_MAIN_BIAS ? share : WK_MAIN_BIAS;
    unsigned start = w->next_pick++ % (unsigned)w->n;
    int best = -1;
    size_t least = 0;
    for (int i = 0; i < w->n; i++) {
        int k = (int)((start + (unsigned)i) % (unsigned)w->n);
        size_t b = k == 0 ? main_busy + bias : wk_running(w, k);
        if (best < 0 || b < least) {
            best = k;
            least = b;
        }
    }
    return best;
}

wk_job *wk_invoke(workers *w, int k, int gen_id, const char *line, size_t len, script_tape *tape,
                  const script_call *call)
{
    wk_job *j = calloc(1, sizeof *j + len + 1);
    if (!j) {
        script_tape_free(tape);
        return NULL;
    }
    j->tape = tape;
    j->task = call->task;
    j->worker = k;
    j->gen_id = gen_id;
    j->call = *call;
    j->last_error = wk_strdup_or_null(call->last_error);
    j->source_id = wk_strdup_or_null(call->source_id);
    if ((call->last_error && !j->last_error) || (call->source_id && !j->source_id)) {
        free(j->last_error);
        free(j->source_id);
        script_tape_free(j->tape);
        free(j);
        return NULL;
    }
    j->call.last_error = j->last_error;
    j->call.source_id = j->source_id;
    j->len = len;
    memcpy(j->line, line, len);
    MW_LIST_PUSH(w->jobs, j, prev, next);
    atomic_fetch_add_explicit(&w->ws[k - 1].pending, 1, memory_order_relaxed);
    hold(w, +1);
    wk_mq_push(&w->ws[k - 1].in, (msg){ M_INVOKE, gen_id, j, NULL });
    return j;
}

void wk_discard(workers *w, wk_job *j)
{
    if (j->discarded)
        return;
    j->discarded = 1;
    wk_mq_push(&w->ws[j->worker - 1].in, (msg){ M_DISCARD, j->gen_id, j, NULL });
}

static void gen_op(workers *w, int type, int id, wk_gen_fn done, void *ud)
{
    genop *op = calloc(1, sizeof *op);
    if (!op) {
        done(ud, "out of memory");
        return;
    }
    op->done = done;
    op->ud = ud;
    op->left = w->n - 1;
    MW_LIST_PUSH(w->ops, op, prev, next);
    hold(w, +1);
    for (int k = 1; k < w->n; k++)
        wk_mq_push(&w->ws[k - 1].in, (msg){ type, id, op, NULL });
}

void wk_gen_open(workers *w, int id, wk_gen_fn done, void *ud)
{
    gen_op(w, M_OPEN, id, done, ud);
}

void wk_gen_close(workers *w, int id, int run_close, wk_gen_fn done, void *ud)
{
    gen_op(w, run_close ? M_CLOSE : M_CLOSE_QUIET, id, done, ud);
}

static void broadcast(workers *w, int type, int id)
{
    for (int k = 1; k < w->n; k++)
        wk_mq_push(&w->ws[k - 1].in, (msg){ type, id, NULL, NULL });
}

void wk_gen_flush(workers *w, int id)
{
    broadcast(w, M_FLUSH, id);
}

void wk_gen_drain(workers *w, int id)
{
    broadcast(w, M_DRAIN, id);
}

void wk_close(workers *w)
{
    if (w && !uv_is_closing((uv_handle_t *)&w->out.async))
        uv_close((uv_handle_t *)&w->out.async, NULL);
}

void wk_free(workers *w)
{
    if (!w)
        return;
    for (int k = 1; k < w->n; k++) {
        worker *wk = &w->ws[k - 1];
        if (!wk->started)
            continue;
        wk_mq_push(&wk->in, (msg){ M_STOP, 0, NULL, NULL });
        uv_thread_join(&wk->th);
        uv_mutex_destroy(&wk->in.mu);
        free(wk->in.v);
        free(wk->spare);
    }
    /* Answers nobody took (the run ended first), then every job and
     * operation left. */
    size_t n = wk_mq_take(&w->out, &w->spare, &w->spare_cap);
    for (size_t i = 0; i < n; i++)
        free(w->spare[i].err);
    while (w->jobs)
        job_free(w, w->jobs);
    while (w->ops) {
        genop *op = w->ops;
        MW_LIST_UNLINK(w->ops, op, prev, next);
        free(op->err);
        free(op);
    }
    uv_mutex_destroy(&w->out.mu);
    free(w->out.v);
    free(w->spare);
    free(w->ws);
    free(w);
}
