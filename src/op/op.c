/*
 * op.c: the operator core (see op.h for the rules and the contract).
 *
 * Data structures: a doubly linked queue of entries in input order; two
 * binary min-heaps, one of the pending records keyed by deadline, one of the
 * records in back-off keyed by retry_at (deadlines are not monotone in input
 * order once budgets differ: a restored record, a retry; hence heaps rather
 * than FIFOs); in unordered and keyed mode, a ready list of the head
 * segment's completed records that may leave. Keyed mode also chains the
 * queued records of each key (key_prev/key_next, input order) and maps a
 * key to its chain's last record (keymap.c). Entries are recycled through
 * a free list.
 *
 * The ready list's invariant: a record is on it exactly from the moment it
 * may leave (done, in the head segment, and in keyed mode first of its
 * key) until it leaves. Each of those three conditions turns true once and
 * never back, and every place that turns one true (op_complete, a
 * watermark leaving, a key's predecessor leaving) pushes the record only
 * when the other two already hold, so no record is pushed twice.
 */
#include "op.h"

#include <stdlib.h>
#include <string.h>

#include "../util/list.h"

#define NOT_IN_HEAP SIZE_MAX

/* ---- heaps -------------------------------------------------------------- */

/* Two binary min-heaps share this code: 0 keys on deadline, 1 on retry_at.
 * Each slot holds its key (an entry's key changes only through
 * heap_rekey). */
static uint64_t key(const op_entry *e, int h)
{
    return h == 0 ? e->deadline : e->retry_at;
}

static void heap_swap(struct op_heap *hp, int h, size_t a, size_t b)
{
    struct op_heap_slot t = hp->v[a];
    hp->v[a] = hp->v[b];
    hp->v[b] = t;
    hp->v[a].e->heap_ix[h] = a;
    hp->v[b].e->heap_ix[h] = b;
}

static void heap_up(struct op_heap *hp, int h, size_t i)
{
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (hp->v[p].key <= hp->v[i].key)
            break;
        heap_swap(hp, h, p, i);
        i = p;
    }
}

static void heap_down(struct op_heap *hp, int h, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < hp->len && hp->v[l].key < hp->v[m].key)
            m = l;
        if (r < hp->len && hp->v[r].key < hp->v[m].key)
            m = r;
        if (m == i)
            return;
        heap_swap(hp, h, i, m);
        i = m;
    }
}

static int heap_insert(op *o, int h, op_entry *e)
{
    struct op_heap *hp = &o->heap[h];
    if (hp->len == hp->cap) {
        size_t cap = hp->cap ? hp->cap * 2 : 64;
        struct op_heap_slot *v = realloc(hp->v, cap * sizeof *v);
        if (!v)
            return OP_ENOMEM;
        hp->v = v;
        hp->cap = cap;
    }
    e->heap_ix[h] = hp->len;
    hp->v[hp->len++] = (struct op_heap_slot){ key(e, h), e };
    heap_up(hp, h, e->heap_ix[h]);
    return 0;
}

static void heap_remove(op *o, int h, op_entry *e)
{
    struct op_heap *hp = &o->heap[h];
    size_t i = e->heap_ix[h];
    if (i == NOT_IN_HEAP)
        return;
    e->heap_ix[h] = NOT_IN_HEAP;
    hp->len--;
    if (i == hp->len)
        return;
    hp->v[i] = hp->v[hp->len];
    hp->v[i].e->heap_ix[h] = i;
    heap_up(hp, h, i);
    heap_down(hp, h, hp->v[i].e->heap_ix[h]);
}

/* e's key went down (it is in heap h): its slot follows. */
static void heap_rekey_down(op *o, int h, op_entry *e)
{
    struct op_heap *hp = &o->heap[h];
    hp->v[e->heap_ix[h]].key = key(e, h);
    heap_up(hp, h, e->heap_ix[h]);
}

static op_entry *heap_top(const op *o, int h)
{
    return o->heap[h].len ? o->heap[h].v[0].e : NULL;
}

/* ---- the ready list (unordered, keyed) ---------------------------------- */

/* Unordered, keyed: `e` may leave now (see the ready list's invariant). */
static int may_leave(const op *o, const op_entry *e)
{
    return e->state == OP_DONE && e->segment == o->head_segment && (o->cfg.mode != OP_KEYED || !e->key_prev);
}

/* Unordered, keyed: queue a record that may leave for emission. */
static void ready_push(op *o, op_entry *e)
{
    e->ready_next = NULL;
    if (o->ready_tail)
        o->ready_tail->ready_next = e;
    else
        o->ready_head = e;
    o->ready_tail = e;
}

static op_entry *ready_pop(op *o)
{
    op_entry *e = o->ready_head;
    if (e) {
        o->ready_head = e->ready_next;
        if (!o->ready_head)
            o->ready_tail = NULL;
    }
    return e;
}

/* ---- entries ---------------------------------------------------------- */

/* Admit a new entry at the tail of the queue (a recycled one if any):
 * 0 with *out, or OP_ESTATE after a failure, OP_EFULL at capacity,
 * OP_ENOMEM. */
static int admit(op *o, op_kind kind, op_entry **out)
{
    if (o->failed)
        return OP_ESTATE;
    if (op_full(o))
        return OP_EFULL;
    op_entry *e = o->free_list;
    if (e)
        o->free_list = e->next;
    else if (!(e = malloc(sizeof *e)))
        return OP_ENOMEM;
    memset(e, 0, sizeof *e);
    e->kind = kind;
    e->heap_ix[0] = e->heap_ix[1] = NOT_IN_HEAP;
    e->deadline = OP_NO_DEADLINE;
    e->segment = o->segments;
    e->accepted_at = o->cb.now(o->ud);
    MW_QUEUE_APPEND(o->head, o->tail, e, prev, next);
    o->size++;
    *out = e;
    return 0;
}

/* Keyed: take `e` out of its key's chain (and the key out of the map when
 * it was the key's only queued record). When `e` was the key's first, its
 * successor becomes first, and joins the ready list if it may leave now:
 * here, at the one place its key_prev turns NULL. */
static void key_unlink(op *o, op_entry *e)
{
    if (e->key_prev)
        e->key_prev->key_next = e->key_next;
    if (e->key_next) {
        e->key_next->key_prev = e->key_prev;
        if (!e->key_prev && may_leave(o, e->key_next))
            ready_push(o, e->key_next);
    } else if (e->key_prev)
        keymap_put(&o->keys, e->key, e->key_prev); /* the key is present: no allocation */
    else
        keymap_del(&o->keys, e->key);
    e->key_prev = e->key_next = NULL;
}

/* Unlink `e`, let the adapter release its state, and recycle it. */
static void entry_drop(op *o, op_entry *e)
{
    MW_QUEUE_UNLINK(o->head, o->tail, e, prev, next);
    if (o->cfg.mode == OP_KEYED && e->kind == OP_KIND_RECORD)
        key_unlink(o, e);
    o->size--;
    heap_remove(o, 0, e);
    heap_remove(o, 1, e);
    if (e->state == OP_PENDING && e->kind == OP_KIND_RECORD)
        o->pending--;
    if (o->cb.release)
        o->cb.release(o->ud, e);
    free(e->out);
    free(e->err);
    free(e->dlq);
    e->out = e->err = e->dlq = NULL;
    e->next = o->free_list;
    o->free_list = e;
}

/* ---- emission ----------------------------------------------------------- */

static void emit_record(op *o, op_entry *e)
{
    o->stats.records_out++;
    o->cb.emit(o->ud, e);
    entry_drop(o, e); /* keyed: its key's next record may leave now */
}

static void emit_watermark(op *o, op_entry *e)
{
    o->stats.watermarks_out++;
    o->cb.emit_watermark(o->ud, e->watermark);
    entry_drop(o, e);
}

/* Report the failed head entry. Everything before it has been emitted. */
static void report_failure(op *o, op_entry *e)
{
    o->failed = 1;
    o->cb.failure(o->ud, e);
}

/* Move out everything the rules allow. Callbacks may call back into the
 * core (op_complete from emit, say): the guard makes such calls only update
 * state, and this loop re-examines the queue on every turn, so it picks
 * them up without recursion. */
static void flush(op *o)
{
    if (o->in_flush)
        return;
    o->in_flush = 1;
    while (!o->failed) {
        op_entry *h = ready_pop(o);
        if (h) {
            emit_record(o, h);
            continue;
        }
        h = o->head;
        if (!h)
            break;
        if (h->kind == OP_KIND_WATERMARK) {
            /* Every record read before it has left. */
            o->head_segment = h->segment + 1;
            emit_watermark(o, h);
            if (o->cfg.mode != OP_ORDERED) {
                /* The next segment becomes the head: its completed records
                 * (keyed: those first of their key; a key's earlier records
                 * all were in earlier segments, which have left, or are in
                 * this one) may leave now. Each segment is scanned once. */
                for (op_entry *e = o->head; e && e->kind == OP_KIND_RECORD; e = e->next)
                    if (may_leave(o, e))
                        ready_push(o, e);
            }
            continue;
        }
        if (h->state == OP_DONE && o->cfg.mode == OP_ORDERED) {
            emit_record(o, h);
            continue;
        }
        if (h->state == OP_FAILED) {
            report_failure(o, h);
            break;
        }
        break; /* head pending: everything else waits */
    }
    o->in_flush = 0;
}

/* ---- public API --------------------------------------------------------- */

int op_init(op *o, const op_config *cfg, const op_callbacks *cb, void *ud)
{
    memset(o, 0, sizeof *o);
    o->cfg = *cfg;
    if (o->cfg.capacity == 0)
        o->cfg.capacity = 1;
    o->cb = *cb;
    o->ud = ud;
    o->next_seq = 1;
    return 0;
}

void op_free(op *o)
{
    o->ready_head = o->ready_tail = NULL;
    while (o->head)
        entry_drop(o, o->head);
    o->ready_head = o->ready_tail = NULL; /* keyed: successors pushed meanwhile */
    keymap_free(&o->keys);
    while (o->free_list) {
        op_entry *e = o->free_list;
        o->free_list = e->next;
        free(e);
    }
    for (int h = 0; h < 2; h++) {
        free(o->heap[h].v);
        o->heap[h].v = NULL;
        o->heap[h].len = o->heap[h].cap = 0;
    }
}

int op_full(const op *o)
{
    return o->size >= o->cfg.capacity;
}

size_t op_size(const op *o)
{
    return o->size;
}

void op_set_capacity(op *o, size_t capacity)
{
    o->cfg.capacity = capacity ? capacity : 1;
}

size_t op_capacity(const op *o)
{
    return o->cfg.capacity;
}

int op_failed(const op *o)
{
    return o->failed;
}

uint64_t op_now(const op *o)
{
    return o->cb.now(o->ud);
}

int op_push_record(op *o, uint64_t line, uint64_t budget_used_ms, void *udata, op_entry **out)
{
    return op_push_keyed(o, OP_NO_KEY, line, budget_used_ms, udata, out);
}

int op_push_keyed(op *o, uint64_t key, uint64_t line, uint64_t budget_used_ms, void *udata, op_entry **out)
{
    op_entry *e;
    int rc = admit(o, OP_KIND_RECORD, &e);
    if (rc != 0)
        return rc;
    if (o->cfg.mode == OP_KEYED) {
        /* Join the key's chain: it leaves after the key's last queued record. */
        op_entry *last = keymap_get(&o->keys, key);
        if (keymap_put(&o->keys, key, e) != 0) {
            MW_QUEUE_UNLINK(o->head, o->tail, e, prev, next);
            o->size--;
            e->next = o->free_list;
            o->free_list = e;
            return OP_ENOMEM;
        }
        e->key = key;
        e->key_prev = last;
        if (last)
            last->key_next = e;
    }
    e->seq = o->next_seq++;
    e->line = line;
    e->udata = udata;
    e->state = OP_PENDING;
    e->attempt = 1;
    o->pending++;
    o->stats.records_in++;
    o->stats.attempts++;
    if (o->cfg.timeout_ms) {
        uint64_t left = budget_used_ms >= o->cfg.timeout_ms ? 0 : o->cfg.timeout_ms - budget_used_ms;
        e->deadline = e->accepted_at + left;
        if (heap_insert(o, 0, e) != 0) {
            e->udata = NULL; /* the caller still owns it */
            entry_drop(o, e);
            return OP_ENOMEM;
        }
    }
    if (out)
        *out = e;
    return 0;
}

int op_restore_record(op *o, uint64_t seq, uint64_t line, uint32_t attempt, uint64_t budget_used_ms,
                      void *udata, op_entry **out)
{
    return op_restore_keyed(o, OP_NO_KEY, seq, line, attempt, budget_used_ms, udata, out);
}

int op_restore_keyed(op *o, uint64_t key, uint64_t seq, uint64_t line, uint32_t attempt, uint64_t budget_used_ms,
                     void *udata, op_entry **out)
{
    size_t cap = o->cfg.capacity;
    o->cfg.capacity = SIZE_MAX; /* restored entries were all in the queue */
    o->next_seq = seq;
    op_entry *e = NULL;
    int rc = op_push_keyed(o, key, line, budget_used_ms, udata, &e);
    o->cfg.capacity = cap;
    if (rc == 0) {
        e->attempt = attempt ? attempt : 1;
        e->budget_prior_ms = budget_used_ms;
        o->stats.attempts += e->attempt - 1;
        if (out)
            *out = e;
    }
    return rc;
}

int op_restore_completed(op *o, uint64_t seq, uint64_t line, uint32_t attempt, int timed_out, char *out,
                         size_t out_len, char *dlq, size_t dlq_len, void *udata, op_entry **outp)
{
    return op_restore_completed_keyed(o, OP_NO_KEY, seq, line, attempt, timed_out, out, out_len, dlq, dlq_len,
                                      udata, outp);
}

int op_restore_completed_keyed(op *o, uint64_t key, uint64_t seq, uint64_t line, uint32_t attempt, int timed_out,
                               char *out, size_t out_len, char *dlq, size_t dlq_len, void *udata, op_entry **outp)
{
    op_entry *e;
    int rc = op_restore_keyed(o, key, seq, line, attempt, 0, udata, &e);
    if (rc != 0)
        return rc;
    e->timed_out = timed_out;
    if (outp)
        *outp = e;
    /* Completes it: it leaves now if it is at the head (ordered), in the
     * head segment (unordered) and first of its key (keyed), else it waits
     * its turn. */
    if (dlq) {
        e->dlq = dlq;
        e->dlq_len = dlq_len;
        o->stats.dead_lettered++;
    }
    return op_complete(o, e, out, out_len);
}

int op_restore_watermark(op *o, int64_t wm)
{
    size_t cap = o->cfg.capacity;
    o->cfg.capacity = SIZE_MAX;
    int rc = op_push_watermark(o, wm);
    o->cfg.capacity = cap;
    return rc;
}

void op_restore_done(op *o, uint64_t next_seq)
{
    if (next_seq > o->next_seq)
        o->next_seq = next_seq;
}

int op_push_failed(op *o, uint64_t line, const char *err, void *udata)
{
    op_entry *e;
    int rc = op_push_record(o, line, 0, udata, &e);
    if (rc != 0)
        return rc;
    return op_fail(o, e, err);
}

int op_push_watermark(op *o, int64_t wm)
{
    op_entry *e;
    int rc = admit(o, OP_KIND_WATERMARK, &e);
    if (rc != 0)
        return rc;
    e->watermark = wm;
    e->seq = o->next_seq - 1;
    o->segments++;
    o->stats.watermarks_in++;
    flush(o);
    return 0;
}

/* The outcome of pending record `e` is in (first completion wins): it
 * takes state `st` and leaves both heaps. 0, or OP_ELATE when it is not a
 * pending record. */
static int settle(op *o, op_entry *e, op_state st)
{
    if (e->kind != OP_KIND_RECORD || e->state != OP_PENDING)
        return OP_ELATE;
    e->state = st;
    o->pending--;
    heap_remove(o, 0, e);
    heap_remove(o, 1, e);
    e->in_backoff = 0;
    e->held_start = 0;
    return 0;
}

int op_complete(op *o, op_entry *e, char *out, size_t len)
{
    if (settle(o, e, OP_DONE) != 0)
        return OP_ELATE;
    e->out = out;
    e->out_len = len;
    if (o->cfg.mode != OP_ORDERED && may_leave(o, e))
        ready_push(o, e);
    flush(o);
    return 0;
}

int op_fail(op *o, op_entry *e, const char *err)
{
    if (settle(o, e, OP_FAILED) != 0)
        return OP_ELATE;
    e->err = strdup(err ? err : "unknown error");
    o->stats.failures++;
    flush(o);
    return 0;
}

int op_complete_dead(op *o, op_entry *e, char *dlq, size_t len)
{
    if (e->kind != OP_KIND_RECORD || e->state != OP_PENDING)
        return OP_ELATE;
    e->dlq = dlq;
    e->dlq_len = len;
    o->stats.dead_lettered++;
    return op_complete(o, e, NULL, 0);
}

size_t op_backoffs(const op *o)
{
    return o->heap[1].len;
}

int op_retry(op *o, op_entry *e)
{
    if (e->kind != OP_KIND_RECORD || e->state != OP_PENDING || e->in_backoff)
        return OP_ELATE;
    const op_retry_policy *p = e->policy;
    uint64_t now = o->cb.now(o->ud);
    if (!p || p->backoff == RETRY_NONE || e->attempt >= p->max_attempts || e->timed_out ||
        (e->deadline != OP_NO_DEADLINE && now >= e->deadline))
        return OP_EEXHAUSTED;
    double rnd = o->cb.random ? o->cb.random(o->ud) : 1.0;
    e->retry_at = now + op_retry_delay(p, e->attempt, rnd);
    if (heap_insert(o, 1, e) != 0)
        return OP_ENOMEM;
    e->in_backoff = 1;
    return 0;
}

/* The back-off of `e` ended: its next attempt starts (or, held at its
 * start, the attempt it was restored at). */
static void start_retry(op *o, op_entry *e)
{
    heap_remove(o, 1, e);
    e->in_backoff = 0;
    if (e->held_start) {
        e->held_start = 0;
    } else {
        e->attempt++;
        o->stats.attempts++;
        o->stats.retries++;
    }
    if (o->cb.retry)
        o->cb.retry(o->ud, e);
}

/* The rate limit, asked before a back-off ends: 0 (start it), or 1 with
 * every back-off held until the time the gate gave (gate_at; at least the
 * next ms, so a gate that errs cannot spin op_expire). The entries keep
 * their places in the heap, so a refusal costs O(1) however many wait, and
 * they start in the order their back-offs ended. */
static int gated(op *o, uint64_t now)
{
    if (now < o->gate_at)
        return 1;
    if (!o->cb.gate)
        return 0;
    uint64_t at = o->cb.gate(o->ud);
    if (at == 0)
        return 0;
    o->stats.gated++;
    o->gate_at = at > now ? at : now + 1;
    return 1;
}

int op_delay_start(op *o, op_entry *e, uint64_t at)
{
    if (e->kind != OP_KIND_RECORD || e->state != OP_PENDING || e->in_backoff)
        return OP_ELATE;
    e->retry_at = at;
    if (heap_insert(o, 1, e) != 0)
        return OP_ENOMEM;
    e->in_backoff = 1;
    e->held_start = 1;
    return 0;
}

void op_retry_all_now(op *o)
{
    /* Only the back-offs waiting now: an attempt started here may end at
     * once and schedule a new back-off, which waits its delay. Take a
     * snapshot (entry, seq): an entry recycled meanwhile is recognised by
     * its new seq. */
    size_t n = o->heap[1].len;
    if (n == 0)
        return;
    struct snap {
        op_entry *e;
        uint64_t seq;
    } *v = malloc(n * sizeof *v);
    if (!v)
        return;
    for (size_t i = 0; i < n; i++) {
        v[i].e = o->heap[1].v[i].e;
        v[i].seq = v[i].e->seq;
    }
    for (size_t i = 0; i < n && !o->failed; i++) {
        op_entry *e = v[i].e;
        if (e->seq == v[i].seq && e->in_backoff && e->heap_ix[1] != NOT_IN_HEAP) {
            uint64_t now = o->cb.now(o->ud);
            if (!gated(o, now)) {
                start_retry(o, e);
            } else if (e->retry_at > now) {
                /* Held by the rate limit: due now, in line for its token. */
                e->retry_at = now;
                heap_rekey_down(o, 1, e);
            }
        }
    }
    free(v);
}

uint64_t op_next_deadline(const op *o)
{
    uint64_t d = o->heap[0].len ? o->heap[0].v[0].key : OP_NO_DEADLINE;
    uint64_t r = o->heap[1].len ? o->heap[1].v[0].key : OP_NO_DEADLINE;
    if (r != OP_NO_DEADLINE && r < o->gate_at)
        r = o->gate_at; /* ended, held by the rate limit until then */
    return d < r ? d : r;
}

size_t op_expire(op *o)
{
    size_t fired = 0;
    uint64_t now = o->cb.now(o->ud);
    int was_in_flush = o->in_flush;
    /* Hold emission while callbacks decide outcomes, so `e` stays valid. */
    o->in_flush = 1;
    op_entry *e;
    while ((e = heap_top(o, 0)) && e->deadline <= now) {
        heap_remove(o, 0, e);
        /* A retry that was scheduled is dropped: timed out wins. */
        heap_remove(o, 1, e);
        e->in_backoff = 0;
        e->held_start = 0;
        e->timed_out = 1;
        o->stats.timeouts++;
        fired++;
        o->cb.timeout(o->ud, e);
        /* The contract says the callee decides; if it did not, the record
         * must not stay pending forever with no deadline. */
        if (e->state == OP_PENDING)
            op_fail(o, e, "timeout (no outcome decided)");
    }
    o->in_flush = was_in_flush;
    flush(o);
    /* Back-offs that ended start their next attempt. An attempt may end at
     * once and emit, so take them one at a time from the heap. */
    while (!o->failed && (e = heap_top(o, 1)) && e->retry_at <= now && !gated(o, now))
        start_retry(o, e);
    return fired;
}
