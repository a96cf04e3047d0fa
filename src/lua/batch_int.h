/*
 * batch_int.h: what batch.c (the pending batches, their timer, settings)
 * and batch_run.c (a batch's fiber and its results) share. Not for other
 * files: script.h is the batching contract.
 */
#ifndef MW_BATCH_INT_H
#define MW_BATCH_INT_H

#include "script.h"

enum { IT_PENDING, IT_RUNNING, IT_SETTLED, IT_DONE };

struct script_item {
    struct batch *b;
    int state;              /* IT_* */
    script_call a;          /* the attempt; a.last_error points at last_error */
    char *last_error;       /* owned copy */
    codec_doc *doc;         /* the record (owned while pending; then the fiber's) */
    /* The outcome, between batch_done's two passes (owned). */
    int ok;
    char *out, *err, *errmsg;
    size_t len;
    int outputs_ref;        /* the outputs table for retry_on_result, or LUA_NOREF */
};

typedef struct batch {
    struct batch *next, *prev; /* the batcher's pending list, while pending */
    struct batch *hnext;    /* its bucket's chain in the batcher's table, while pending */
    uint64_t hash;          /* of its key */
    struct batcher *bt;     /* while pending */
    script *sc;
    char *key;              /* the key value's bytes (a type letter first), NULL = nil */
    size_t klen;
    uint64_t first_ms;      /* when its first record came (loop ms) */
    script_item **items;    /* in the order of records[] */
    size_t n, cap;
    size_t live;            /* running: items not yet settled */
    rt_fiber *fiber;        /* running: its fiber */
    int running;            /* started */
    int ending;             /* batch_done is splitting its results */
    int abandoned;          /* its fiber was discarded: freed with the attachment */
    uint32_t overloads;     /* overload signals batch_invoke gave (ctx.overloaded, an
                             * HTTP 429/503): each record of the batch reports them */
} batch;

struct batcher {
    script *sc;
    uv_timer_t timer;       /* the oldest pending batch's max_wait_ms; freed in its close callback */
    uint32_t max_size;
    uint64_t max_wait_ms;
    char **key_path;        /* split on '.', NULL-terminated; NULL = one batch for all */
    batch *head, *tail;     /* pending batches, oldest first */
    /* The pending batches by key: with batch.key there may be as many as
     * records in flight (distinct keys), and a list scan per record made
     * that quadratic (4.5 s for 40k records at --capacity 20000). SipHash
     * with a secret per batcher, so input cannot choose collisions. */
    batch **tab;
    size_t tabn, count;     /* buckets (a power of 2), pending batches */
    uint64_t k0, k1;
    int flush_all;          /* script_batch_flush asked: the timer starts them all */
    int draining;           /* script_batch_drain: every batch goes at the end of its turn */
};

/* batch.c: free a batch that no fiber holds (its items too); take a
 * pending batch off the batcher's list and table. */
void batch_free(batch *b);
void batch_unlink_pending(batch *b);

/* batch_run.c: run b (unlinked from the pending list) as a fiber calling
 * batch_invoke(records, ctxs). b may be gone when this returns. */
void batch_start(batch *b);

#endif
