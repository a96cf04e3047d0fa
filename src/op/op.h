/*
 * op.h: the operator core. Apache Flink's AsyncWaitOperator rules in plain C.
 *
 * Owns the queue of in-flight entries (records and watermarks in input
 * order), capacity, the ordered/unordered emission rules, watermark
 * segments, per-record timeouts and retry back-offs. It has no libuv and no
 * Lua inside: time comes from an injected clock, effects leave through
 * callbacks. The host (src/app) is its only caller: it pushes
 * records and watermarks, reports each attempt's outcome (op_complete,
 * op_complete_dead, op_retry, op_fail), arms one timer at
 * op_next_deadline() and calls op_expire() when it fires. Unit tests drive
 * it with a manual clock (spec/c/test_op.c).
 *
 * The clock. Every time the core reads or reports is a reading of the
 * caller's `cb.now`: whole milliseconds from an arbitrary origin, never
 * going backwards. The caller provides it and must use the same clock for
 * everything it derives from the core's times: an entry's `accepted_at`,
 * `deadline` and `retry_at`, op_next_deadline(), op_now(). In moonwait the
 * host passes the libuv loop's cached clock (uv_now), so a uv timer armed
 * for `deadline - uv_now()` ms fires at the deadline; a layer that needs a
 * deadline in another unit (Lua's ctx.deadline in seconds, a fiber's I/O
 * timeout) converts the core's deadline, never a second clock.
 *
 * Rules (see ARCHITECTURE.md for the prose version; spec/c/test_op.c has a
 * test for each):
 *  - At most `capacity` entries (records and watermarks) are queued;
 *    completed records wait in the queue until they are emitted and keep
 *    their slot until then. op_full() tells the source to stop reading.
 *  - Ordered: entries leave strictly in input order.
 *  - Unordered: a record leaves as soon as it is complete, provided no
 *    watermark read before it is still queued; a watermark leaves once every
 *    record read before it has left. So nothing crosses a watermark.
 *  - Keyed: as unordered, and a record leaves only when no record with the
 *    same key (op_push_keyed) read before it is still queued: per key the
 *    order is the input order, different keys overtake each other.
 *  - Timeout: fires `timeout_ms` after acceptance (minus budget already used,
 *    see op_push_record). The owner decides the outcome inside the timeout
 *    callback by calling op_complete() or op_fail() on the entry; if it
 *    decides nothing, the core fails the record.
 *  - Retries: op_retry() keeps the record in its slot and position and
 *    starts its next attempt (cb.retry) when the back-off ends, unless its
 *    deadline comes first: a timeout wins over a scheduled retry.
 *  - Rate limit: with cb.gate set, a back-off that ended starts only when
 *    the gate gives a token; otherwise every ended back-off stays in line
 *    until the time the gate names, deadlines still running (a timeout
 *    still wins), and they start in the order their back-offs ended.
 *  - First completion wins: a second op_complete/op_complete_dead/op_fail
 *    (or an op_retry) on an entry no longer pending returns OP_ELATE.
 *  - A failed entry is reported (cb.failure) when it reaches the head of the
 *    queue, i.e. after everything read before it has been emitted. After
 *    that nothing is emitted again and nothing more is accepted.
 */
#ifndef MW_OP_H
#define MW_OP_H

#include <stddef.h>
#include <stdint.h>

#include "keymap.h"
#include "retry.h"

/* Return codes: 0 or one of these negatives. */
#define OP_EFULL  (-1) /* queue is at capacity */
#define OP_ELATE  (-2) /* entry already completed (first completion wins) */
#define OP_ESTATE (-3) /* operator has failed or ended; no more input */
#define OP_ENOMEM (-4)
#define OP_EEXHAUSTED (-5) /* no retry: attempts used up, deadline passed, or no strategy */

#define OP_NO_DEADLINE UINT64_MAX

typedef enum { OP_ORDERED = 0, OP_UNORDERED = 1, OP_KEYED = 2 } op_mode;

/* Keyed mode: the key of a record pushed without one (op_push_record,
 * op_push_failed). The host gives it to records without a key. */
#define OP_NO_KEY 0

typedef enum {
    OP_KIND_RECORD = 0,
    OP_KIND_WATERMARK = 1,
} op_kind;

typedef enum {
    OP_PENDING = 0, /* record accepted, result not in yet */
    OP_DONE,        /* result in (possibly held for order) */
    OP_FAILED,      /* failed; reported when it reaches the head */
} op_state;

typedef struct op_entry op_entry;
typedef struct op op;

/* One queued element. Allocated and freed by the core; the caller hangs its
 * own per-record state on `udata` and gets it back in cb.release. */
struct op_entry {
    op_kind kind;
    op_state state;
    uint64_t seq;        /* record number from 1; watermarks: seq of the last record before */
    uint64_t line;       /* input line number (for messages) */
    int64_t watermark;   /* OP_KIND_WATERMARK: its timestamp (ms) */
    uint64_t segment;    /* number of watermarks pushed before this entry */
    uint64_t accepted_at;/* cb.now when accepted */
    uint64_t budget_prior_ms; /* budget used before accepted_at (a restored record) */
    uint64_t deadline;   /* cb.now time it times out; OP_NO_DEADLINE if none */
    void *udata;         /* the caller's; released through cb.release */
    char *out;           /* OP_DONE: encoded output (owned by the entry) */
    size_t out_len;
    char *err;           /* OP_FAILED: message (owned by the entry) */
    char *dlq;           /* OP_DONE, dead-lettered: the dead-letter line (owned) */
    size_t dlq_len;
    int timed_out;       /* the timeout fired for this record */
    uint32_t attempt;    /* current attempt, from 1 */
    int in_backoff;      /* OP_PENDING and waiting for retry_at */
    int held_start;      /* in_backoff for attempt `attempt` itself, not yet
                          * started (op_delay_start): no attempt is added */
    uint64_t retry_at;   /* cb.now time the next attempt starts */
    const op_retry_policy *policy; /* the strategy this record runs under: set
                                    * by the caller after the push (it must
                                    * outlive the entry); NULL = no retries */
    op_entry *prev, *next; /* queue order */
    op_entry *ready_next;  /* unordered, keyed: completed, waiting to leave */
    uint64_t key;          /* keyed: the record's key (OP_NO_KEY if none) */
    op_entry *key_prev, *key_next; /* keyed: queued records of the same key,
                                    * input order; key_prev NULL = first */
    size_t heap_ix[2];   /* index in the deadline / back-off heap, or SIZE_MAX */
};

typedef struct op_callbacks {
    /* The operator's clock (see "The clock" above): whole milliseconds
     * from an arbitrary origin, monotonic. Required. */
    uint64_t (*now)(void *ud);
    /* A record's output leaves the operator (may be zero bytes). The core
     * frees entry->out after the call. */
    void (*emit)(void *ud, op_entry *e);
    /* A watermark leaves the operator. */
    void (*emit_watermark)(void *ud, int64_t wm);
    /* A record's deadline passed while it was pending. The callee must call
     * op_complete() or op_fail() on it before returning. */
    void (*timeout)(void *ud, op_entry *e);
    /* A failed entry reached the head: the run fails. Called once. */
    void (*failure)(void *ud, op_entry *e);
    /* The entry leaves the queue (emitted, or discarded at op_free). The
     * caller frees what hangs on e->udata. May be NULL. */
    void (*release)(void *ud, op_entry *e);
    /* A record's back-off ended: start attempt e->attempt (already
     * incremented). May be NULL when no retry strategy is used. */
    void (*retry)(void *ud, op_entry *e);
    /* A uniform number in [0, 1) for jitter; NULL means 1 (no jitter). */
    double (*random)(void *ud);
    /* The rate limit on attempts' starts, asked before a back-off (or an
     * op_delay_start) ends in cb.retry: 0 when the attempt may start now
     * (the callee took its token), else the cb.now time to ask again; the
     * record keeps waiting in back-off meanwhile, on its own deadline (a
     * timeout still wins). NULL: no limit. */
    uint64_t (*gate)(void *ud);
} op_callbacks;

typedef struct op_config {
    op_mode mode;
    size_t capacity;     /* >= 1 */
    uint64_t timeout_ms; /* 0 = no timeout */
} op_config;

typedef struct op_stats {
    uint64_t records_in;
    uint64_t records_out;    /* records emitted (each may have 0..N outputs) */
    uint64_t watermarks_in;
    uint64_t watermarks_out;
    uint64_t timeouts;
    uint64_t failures;       /* records failed for good (op_fail) */
    uint64_t attempts;       /* calls started, first attempts included */
    uint64_t retries;        /* attempts after the first */
    uint64_t dead_lettered;  /* completed through op_complete_dead */
    uint64_t gated;          /* starts cb.gate put off (one per refusal) */
} op_stats;

struct op {
    op_config cfg;
    op_callbacks cb;
    void *ud;
    op_entry *head, *tail;  /* queue, input order */
    size_t size;            /* entries queued (records + watermarks) */
    size_t pending;         /* records in OP_PENDING */
    uint64_t next_seq;
    uint64_t segments;      /* watermarks pushed so far */
    uint64_t head_segment;  /* unordered, keyed: segment whose records may leave */
    struct op_heap {
        /* The key beside the entry: a comparison reads the array, not the
         * entries (spread over the heap, cold with 10,000 in flight). */
        struct op_heap_slot {
            uint64_t key;   /* the entry's deadline / retry_at */
            op_entry *e;
        } *v;
        size_t len, cap;
    } heap[2];              /* [0]: pending records by deadline; [1]: back-offs by retry_at */
    op_entry *ready_head, *ready_tail; /* unordered, keyed: head-segment records to emit */
    keymap keys;            /* keyed: key -> its last queued record */
    op_entry *free_list;    /* recycled entries */
    int failed;             /* a failure was reported: emit nothing more */
    int in_flush;           /* guard: flush is not re-entered from callbacks */
    uint64_t gate_at;       /* cb.gate refused: no back-off starts before this */
    op_stats stats;
};

/* Initialise `o` (a capacity of 0 is taken as 1). `cb.now` is required.
 * Allocates nothing until the first push; returns 0. */
int op_init(op *o, const op_config *cfg, const op_callbacks *cb, void *ud);

/* Release every queued entry (calling cb.release) and the core's memory. */
void op_free(op *o);

/* Nonzero when no further entry may be pushed (capacity reached). */
int op_full(const op *o);

/* Entries currently queued (records + watermarks). */
size_t op_size(const op *o);

/* Change the capacity at run time (adaptive capacity; 0 is taken as 1).
 * Lowering it below op_size() cancels nothing: op_full() holds until
 * enough entries have left. */
void op_set_capacity(op *o, size_t capacity);

/* The capacity now. */
size_t op_capacity(const op *o);

/* Accept a record read from input line `line`. `budget_used_ms` is timeout
 * budget it already consumed (0 for a fresh record; checkpoint restore uses
 * it). Sets its deadline to now + timeout_ms - budget_used_ms (not before
 * now; none when timeout_ms is 0). Returns 0 with the entry in *out, or OP_EFULL, OP_ESTATE (after a
 * failure) or OP_ENOMEM. The record is OP_PENDING until its outcome is
 * reported; its `policy` is NULL until the caller sets it. */
int op_push_record(op *o, uint64_t line, uint64_t budget_used_ms, void *udata, op_entry **out);

/* op_push_record with the record's key: in keyed mode it leaves after
 * every queued record of the same key (equal keys are one key; the host
 * passes a seeded hash, so a collision only joins two keys' order). Other
 * modes ignore the key. */
int op_push_keyed(op *o, uint64_t key, uint64_t line, uint64_t budget_used_ms, void *udata, op_entry **out);

/* Re-insert a record from a checkpoint: like op_push_record but with its
 * stored seq, the attempt it continues at, and its used budget; it is
 * accepted even beyond capacity (the queue held it when the checkpoint
 * was taken). Call op_restore_done() after the last restored entry. */
int op_restore_record(op *o, uint64_t seq, uint64_t line, uint32_t attempt, uint64_t budget_used_ms,
                      void *udata, op_entry **out);
/* op_restore_record with the record's key (see op_push_keyed). */
int op_restore_keyed(op *o, uint64_t key, uint64_t seq, uint64_t line, uint32_t attempt, uint64_t budget_used_ms,
                     void *udata, op_entry **out);
/* Re-insert a record that had completed but was held in the queue (for
 * order, or behind a watermark) when the checkpoint was taken, with its
 * result: `out` (malloc'd or NULL) and, when it went to the dead letters,
 * `dlq` (malloc'd or NULL); ownership of both passes on success. It is not
 * invoked again: it leaves in its turn like any completed record (at once
 * if nothing before it is pending). Returns 0 or OP_ESTATE/OP_ENOMEM. */
int op_restore_completed(op *o, uint64_t seq, uint64_t line, uint32_t attempt, int timed_out, char *out,
                         size_t out_len, char *dlq, size_t dlq_len, void *udata, op_entry **outp);
/* op_restore_completed of a record with key `key` (see op_push_keyed). */
int op_restore_completed_keyed(op *o, uint64_t key, uint64_t seq, uint64_t line, uint32_t attempt, int timed_out,
                               char *out, size_t out_len, char *dlq, size_t dlq_len, void *udata, op_entry **outp);
int op_restore_watermark(op *o, int64_t wm);
void op_restore_done(op *o, uint64_t next_seq);

/* Accept a record that has already failed before it was invoked (e.g. a
 * malformed input line). It is reported in its turn, like any failure.
 * Takes ownership of nothing: `err` is copied. Returns as op_push_record. */
int op_push_failed(op *o, uint64_t line, const char *err, void *udata);

/* Accept a watermark. Returns 0, OP_EFULL or OP_ESTATE. A watermark with
 * nothing queued before it leaves at once. */
int op_push_watermark(op *o, int64_t wm);

/* A record's result is in: `out` (malloc'd, may be NULL when len 0) becomes
 * the entry's. On OP_ELATE the caller keeps ownership of `out`. May emit. */
int op_complete(op *o, op_entry *e, char *out, size_t len);

/* A record failed for good: the caller has already decided that no
 * attempt follows (op_retry returned OP_EEXHAUSTED, or the outcome asked for
 * none) and that it is not dead-lettered. It is reported through
 * cb.failure when it reaches the head, and the run emits nothing after it.
 * `err` is copied. Returns 0 or OP_ELATE. */
int op_fail(op *o, op_entry *e, const char *err);

/* Complete a record that failed for good into the dead-letter route: it
 * leaves in its turn like any completed record, with no output and `dlq`
 * (malloc'd, ownership passes) as its dead-letter line. */
int op_complete_dead(op *o, op_entry *e, char *dlq, size_t len);

/* The attempt of pending record `e` ended and its outcome asks for another.
 * Schedules it at now + the back-off of e->policy (the record keeps its slot
 * and position; cb.retry starts it when the back-off ends) and returns 0.
 * Returns OP_EEXHAUSTED when no attempt may follow (no strategy or "none",
 * attempts used up, its timeout fired, its deadline reached): the caller
 * then completes or fails the record with the outcome it has. OP_ELATE when
 * `e` is not pending or already waits in back-off; OP_ENOMEM. */
int op_retry(op *o, op_entry *e);

/* Pending record `e`, whose attempt e->attempt has not started (a record
 * restored from a checkpoint that found no token), waits in back-off until
 * `at` (a cb.now time); then, through cb.gate, cb.retry starts that same
 * attempt (no attempt is added). 0, OP_ELATE or OP_ENOMEM. */
int op_delay_start(op *o, op_entry *e, uint64_t at);

/* The attempt a record continues at if it is restored now: the next one
 * when it waits in back-off, else the current one. */
static inline uint32_t op_resume_attempt(const op_entry *e)
{
    return e->attempt + (e->in_backoff && !e->held_start ? 1 : 0);
}

/* Start every record waiting in back-off now (end of input: the drain
 * does not wait out long back-offs). */
void op_retry_all_now(op *o);

/* Records waiting in back-off. */
size_t op_backoffs(const op *o);

/* The earliest back-off end (a cb.now time), or OP_NO_DEADLINE; at or
 * before now while a started record waits for the rate limit's token. */
static inline uint64_t op_next_backoff(const op *o)
{
    return o->heap[1].len ? o->heap[1].v[0].key : OP_NO_DEADLINE;
}

/* The earliest pending deadline or back-off end (a cb.now time), or
 * OP_NO_DEADLINE: the host arms its timer for this and calls op_expire(). */
uint64_t op_next_deadline(const op *o);

/* Fire the timeout callback for every pending record whose deadline is
 * <= now (a record in back-off included: its retry is dropped), then start
 * every back-off that ended (cb.retry). Deadlines go first, so a retry
 * never starts at or after its record's deadline. Returns how many
 * timeouts fired. */
size_t op_expire(op *o);

/* Nonzero once a failure has been reported. */
int op_failed(const op *o);

/* The operator's clock now (cb.now): what every deadline is compared with. */
uint64_t op_now(const op *o);

/* Read-only views for the host (snapshots, stats, the run's drain): the
 * queue in input order (the first entry, then each one's next; NULL at the
 * end), the seq the next record read gets, and the counters. Nothing may
 * be pushed, completed or freed while walking the queue. */
static inline op_entry *op_first(const op *o) { return o->head; }
static inline op_entry *op_next(const op_entry *e) { return e->next; }
static inline uint64_t op_next_seq(const op *o) { return o->next_seq; }
static inline const op_stats *op_counters(const op *o) { return &o->stats; }

#endif
