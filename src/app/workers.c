/*
 * workers.c: --workers N (contract in workers.h).
 *
 * Two kinds of code live here, and they never share state but through the
 * queues: the main thread's side (wk_*, on_answers), which keeps the jobs
 * and the generation operations waiting for answers; and a worker's side
 * (w_*), which runs on its own thread and loop and owns its generations'
 * VMs. A job's fields are written by one side at a time: the main thread
 * before it sends INVOKE, the worker until it sends DONE, the main thread
 * again after it took DONE; the queue's mutex orders each hand-over.
 */
#define _GNU_SOURCE
#include "workers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../net/dns.h"
#include "../net/pool.h"
#include "../util/list.h"
#include "../util/log.h"
#include "reload.h"

/* To a worker, then the answers to the main thread. */
enum { M_INVOKE, M_DISCARD, M_OPEN, M_CLOSE, M_CLOSE_QUIET, M_FLUSH, M_DRAIN, M_STOP,
       A_DONE, A_DISCARDED, A_OPENED, A_CLOSED };

typedef struct msg {
    int type;
    int id;      /* a generation */
    void *p;     /* a wk_job, or a genop */
    char *err;   /* an answer's error (malloc'd), or NULL */
} msg;

/* A locked queue, drained by its consumer's async handle a batch at a time:
 * the consumer swaps its spare array for the queue's, so nothing is
 * allocated once both arrays have grown. */
typedef struct mqueue {
    uv_mutex_t mu;
    msg *v;
    size_t n, cap;
    uv_async_t async;
} mqueue;

struct wk_job {
    wk_job *prev, *next;     /* main: every job not yet freed (wk_free) */
    struct task *task;       /* main's, handed back with the outcome */
    int worker, gen_id;
    int discarded;           /* main: wk_discard was sent */
    script_call call;        /* ctx's fields; its strings point at the copies below */
    char *last_error, *source_id;
    rt_fiber *fiber;         /* worker: the attempt's fiber while it runs */
    script_item *item;       /* worker: its place in a batch */
    /* The outcome, filled by the worker before DONE. */
    int ok, retry;
    unsigned overloads;
    char *out, *err, *errmsg;
    size_t out_len;
    size_t len;
    char line[];             /* the record's line (a copy: the task may go first) */
};

/* A generation's open or close on every worker, waiting for answers. */
typedef struct genop {
    struct genop *prev, *next; /* main: every operation not yet answered (wk_free) */
    wk_gen_fn done;
    void *ud;
    int left;
    char *err;               /* the first error (malloc'd) */
} genop;

typedef struct worker worker;

/* A generation on a worker. */
typedef struct wgen {
    worker *wk;
    int id;
    script sc;
    int opened;              /* open() succeeded: close() runs at its close */
    rt_fiber *hook;          /* open or close while it runs */
    genop *open_op, *close_op; /* the operation to answer when it ends */
    char *close_err;         /* close() failed (malloc'd) */
    struct wgen *next;
} wgen;

struct worker {
    workers *w;
    int k;                   /* 1..n-1 */
    uv_thread_t th;
    int started;
    uv_loop_t loop;
    mqueue in;
    msg *spare;
    size_t spare_cap;
    wgen *gens;
    int latest;              /* newest generation that opened here (export_state's source) */
};

struct workers {
    int n;
    worker *ws;              /* n - 1 of them: ws[k - 1] */
    uv_loop_t *loop;
    mqueue out;
    msg *spare;
    size_t spare_cap;
    const config *cfg;
    const char *lua_dir;
    uint64_t key_seed;
    script_record_fn done;
    void *ud;
    size_t *busy;            /* attempts sent to each worker and not answered */
    size_t outstanding;      /* jobs and operations waiting: the handle is ref'd while > 0 */
    unsigned next_pick;
    wk_job *jobs;            /* every job not yet freed */
    genop *ops;              /* every operation not yet answered */
};

/* ---- queues ------------------------------------------------------------ */

static int mq_init(mqueue *q, uv_loop_t *loop, uv_async_cb cb, void *data)
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
static void mq_push(mqueue *q, msg m)
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
static size_t mq_take(mqueue *q, msg **spare, size_t *spare_cap)
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

/* ---- a worker's side (its own thread) -------------------------------------- */

static void answer(worker *wk, int type, int id, void *p, char *err)
{
    mq_push(&wk->w->out, (msg){ type, id, p, err });
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static wgen *w_find(worker *wk, int id)
{
    for (wgen *g = wk->gens; g; g = g->next)
        if (g->id == id)
            return g;
    return NULL;
}

static void w_unlink(worker *wk, wgen *g)
{
    for (wgen **pp = &wk->gens; *pp; pp = &(*pp)->next)
        if (*pp == g) {
            *pp = g->next;
            return;
        }
}

/* An attempt ended on this worker: its outcome goes back in the job. */
static void w_record_done(void *ud, struct task *t, script_result *r)
{
    worker *wk = ud;
    wk_job *j = (wk_job *)t;
    j->fiber = NULL;
    j->ok = r->ok;
    j->out = r->out; /* ours now (script_record_fn), the main thread's at DONE */
    j->out_len = r->len;
    j->err = dup_or_null(r->err);
    j->errmsg = dup_or_null(r->errmsg);
    j->retry = r->retry;
    j->overloads = r->overloads;
    answer(wk, A_DONE, j->gen_id, j, NULL);
}

static void w_fail_job(worker *wk, wk_job *j, const char *why)
{
    script_result r = { .ok = 0, .err = why, .errmsg = why };
    w_record_done(wk, (struct task *)j, &r);
}

static void w_invoke(worker *wk, wk_job *j)
{
    wgen *g = w_find(wk, j->gen_id);
    if (!g || !script_is_open(&g->sc)) {
        char why[96];
        snprintf(why, sizeof why, "generation %d is not loaded on worker %d", j->gen_id, wk->k + 1);
        w_fail_job(wk, j, why);
        return;
    }
    script_rec *rec;
    if (script_reparse(&g->sc, j->line, j->len, &rec) != 0) {
        w_fail_job(wk, j, "out of memory decoding the record");
        return;
    }
    j->call.task = (struct task *)j;
    j->call.fiber_slot = &j->fiber;
    j->call.item_slot = &j->item;
    script_invoke(&g->sc, rec, &j->call);
}

static void w_discard(worker *wk, wk_job *j)
{
    if (j->item)
        script_batch_leave(j->item); /* (clears j->item) */
    if (j->fiber) {
        rt_fiber_discard(j->fiber);
        j->fiber = NULL;
    }
    answer(wk, A_DISCARDED, j->gen_id, j, NULL);
}

static void w_vm_closed(void *ud)
{
    wgen *g = ud;
    worker *wk = g->wk;
    if (g->close_op)
        answer(wk, A_CLOSED, g->id, g->close_op, g->close_err);
    else
        free(g->close_err);
    free(g);
}

/* Close g's VM; g leaves the list now and is freed when the VM closed. */
static void w_close_vm(wgen *g)
{
    worker *wk = g->wk;
    w_unlink(wk, g);
    if (g->hook) {
        rt_fiber_discard(g->hook);
        g->hook = NULL;
    }
    if (script_is_open(&g->sc))
        script_close(&g->sc, w_vm_closed, g);
    else
        w_vm_closed(g);
}

static void w_hook_done(void *ud, script_result *r)
{
    wgen *g = ud;
    worker *wk = g->wk;
    g->hook = NULL;
    if (g->open_op) {
        genop *op = g->open_op;
        g->open_op = NULL;
        if (r->ok) {
            g->opened = 1;
            wk->latest = g->id;
        }
        answer(wk, A_OPENED, g->id, op, r->ok ? NULL : dup_or_null(r->err ? r->err : "open failed"));
        return;
    }
    if (!r->ok)
        g->close_err = dup_or_null(r->err ? r->err : "close failed");
    w_close_vm(g);
}

static void w_open(worker *wk, int id, genop *op)
{
    const workers *w = wk->w;
    wgen *g = calloc(1, sizeof *g);
    if (!g) {
        answer(wk, A_OPENED, id, op, strdup("out of memory"));
        return;
    }
    g->wk = wk;
    g->id = id;
    g->next = wk->gens;
    wk->gens = g;
    char *err = NULL;
    if (gen_prepare(&g->sc, &wk->loop, w->cfg, w->lua_dir, id, w->key_seed, &err) != 0) {
        answer(wk, A_OPENED, id, op, err ? err : strdup("cannot load the script"));
        return; /* closed by the M_CLOSE_QUIET the main thread sends */
    }
    script_on_done(&g->sc, w_record_done, wk);
    script_set_worker(&g->sc, wk->k + 1);
    /* ctx.previous: this worker's newest generation's state, as the main
     * thread hands its own (reload.c); a failing export gives nil. */
    wgen *prev = w_find(wk, wk->latest);
    if (prev && prev != g && script_is_open(&prev->sc)) {
        char *json = NULL;
        if (script_export_state(&prev->sc, &json) != 0) {
            free(json);
            json = NULL;
        }
        script_set_previous(&g->sc, json);
        free(json);
    }
    g->open_op = op;
    if (script_run_hook(&g->sc, "open", &g->hook, w_hook_done, g) != 0) {
        script_result ok = { .ok = 1 };
        w_hook_done(g, &ok);
    }
}

static void w_close(worker *wk, int id, genop *op, int run_close)
{
    wgen *g = w_find(wk, id);
    if (!g) {
        answer(wk, A_CLOSED, id, op, NULL);
        return;
    }
    if (g->open_op) { /* still opening: that open ends here, unanswered by its hook */
        answer(wk, A_OPENED, id, g->open_op, strdup("closed while opening"));
        g->open_op = NULL;
    }
    g->close_op = op;
    if (run_close && g->opened && !g->hook &&
        script_run_hook(&g->sc, "close", &g->hook, w_hook_done, g) == 0)
        return;
    w_close_vm(g);
}

static void w_on_messages(uv_async_t *a)
{
    worker *wk = a->data;
    size_t n = mq_take(&wk->in, &wk->spare, &wk->spare_cap);
    for (size_t i = 0; i < n; i++) {
        msg m = wk->spare[i];
        wgen *g;
        switch (m.type) {
        case M_INVOKE:
            w_invoke(wk, m.p);
            break;
        case M_DISCARD:
            w_discard(wk, m.p);
            break;
        case M_OPEN:
            w_open(wk, m.id, m.p);
            break;
        case M_CLOSE:
        case M_CLOSE_QUIET:
            w_close(wk, m.id, m.p, m.type == M_CLOSE);
            break;
        case M_FLUSH:
        case M_DRAIN:
            if ((g = w_find(wk, m.id)) && script_is_open(&g->sc)) {
                if (m.type == M_FLUSH)
                    script_batch_flush(&g->sc);
                else
                    script_batch_drain(&g->sc);
            }
            break;
        case M_STOP:
            while (wk->gens) {
                wk->gens->close_op = NULL; /* nobody waits any more */
                w_close_vm(wk->gens);
            }
            uv_close((uv_handle_t *)&wk->in.async, NULL);
            break;
        }
    }
}

static void w_close_any(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static void w_main(void *arg)
{
    worker *wk = arg;
    uv_run(&wk->loop, UV_RUN_DEFAULT);
    /* The VMs are closed; what they pooled on this thread goes with them. */
    net_pool_close_all();
    dns_cache_clear();
    while (uv_loop_close(&wk->loop) == UV_EBUSY) {
        uv_walk(&wk->loop, w_close_any, NULL);
        uv_run(&wk->loop, UV_RUN_DEFAULT);
    }
}

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
    w->busy[j->worker]--;
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
    size_t n = mq_take(&w->out, &w->spare, &w->spare_cap);
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
    w->busy = calloc((size_t)w->n, sizeof *w->busy);
    if (!w->ws || !w->busy || mq_init(&w->out, loop, on_answers, w) != 0) {
        free(w->ws);
        free(w->busy);
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
        if (rc == 0 && (rc = mq_init(&wk->in, &wk->loop, w_on_messages, wk)) != 0)
            uv_loop_close(&wk->loop);
        if (rc == 0 && (rc = uv_thread_create(&wk->th, w_main, wk)) != 0) {
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

int wk_pick(const workers *w, size_t main_busy)
{
    /* The least busy, starting after the last pick so that ties spread. */
    unsigned start = ((workers *)w)->next_pick++ % (unsigned)w->n;
    int best = -1;
    size_t least = 0;
    for (int i = 0; i < w->n; i++) {
        int k = (int)((start + (unsigned)i) % (unsigned)w->n);
        size_t b = k == 0 ? main_busy : w->busy[k];
        if (best < 0 || b < least) {
            best = k;
            least = b;
        }
    }
    return best;
}

wk_job *wk_invoke(workers *w, int k, int gen_id, const char *line, size_t len, const script_call *call)
{
    wk_job *j = calloc(1, sizeof *j + len + 1);
    if (!j)
        return NULL;
    j->task = call->task;
    j->worker = k;
    j->gen_id = gen_id;
    j->call = *call;
    j->last_error = dup_or_null(call->last_error);
    j->source_id = dup_or_null(call->source_id);
    if ((call->last_error && !j->last_error) || (call->source_id && !j->source_id)) {
        free(j->last_error);
        free(j->source_id);
        free(j);
        return NULL;
    }
    j->call.last_error = j->last_error;
    j->call.source_id = j->source_id;
    j->len = len;
    memcpy(j->line, line, len);
    MW_LIST_PUSH(w->jobs, j, prev, next);
    w->busy[k]++;
    hold(w, +1);
    mq_push(&w->ws[k - 1].in, (msg){ M_INVOKE, gen_id, j, NULL });
    return j;
}

void wk_discard(workers *w, wk_job *j)
{
    if (j->discarded)
        return;
    j->discarded = 1;
    w->busy[j->worker]--;
    mq_push(&w->ws[j->worker - 1].in, (msg){ M_DISCARD, j->gen_id, j, NULL });
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
        mq_push(&w->ws[k - 1].in, (msg){ type, id, op, NULL });
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
        mq_push(&w->ws[k - 1].in, (msg){ type, id, NULL, NULL });
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
        mq_push(&wk->in, (msg){ M_STOP, 0, NULL, NULL });
        uv_thread_join(&wk->th);
        uv_mutex_destroy(&wk->in.mu);
        free(wk->in.v);
        free(wk->spare);
    }
    /* Answers nobody took (the run ended first), then every job and
     * operation left. */
    size_t n = mq_take(&w->out, &w->spare, &w->spare_cap);
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
    free(w->busy);
    free(w);
}
