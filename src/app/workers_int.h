/*
 * workers_int.h: what the two sides of --workers share: the main thread's
 * (workers.c) and a worker thread's (wk_thread.c). Nothing else includes it.
 */
#ifndef MW_WORKERS_INT_H
#define MW_WORKERS_INT_H

#include <stdatomic.h>

#include "workers.h"

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
    script_tape *tape;       /* the line's tape from the main thread (first
                              * attempts), freed by whichever side ends it */
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
    /* Attempts sent to it and not ended there yet: raised by the main
     * thread when it sends one, lowered by the worker the moment one ends,
     * so wk_pick sees a worker's real load without waiting for answers
     * that a long pump turn on the main thread has not taken yet. */
    _Atomic size_t pending;
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
    size_t outstanding;      /* jobs and operations waiting: the handle is ref'd while > 0 */
    unsigned next_pick;
    wk_job *jobs;            /* every job not yet freed */
    genop *ops;              /* every operation not yet answered */
};

/* The queues (workers.c). Out of memory in wk_mq_push aborts (see there). */
int wk_mq_init(mqueue *q, uv_loop_t *loop, uv_async_cb cb, void *data);
void wk_mq_push(mqueue *q, msg m);
size_t wk_mq_take(mqueue *q, msg **spare, size_t *spare_cap);

/* A copy of s (NULL for NULL, and when out of memory). */
char *wk_strdup_or_null(const char *s);

/* A worker thread's body and its queue's handler (wk_thread.c). */
void wk_thread_main(void *arg);
void wk_thread_messages(uv_async_t *a);

#endif
