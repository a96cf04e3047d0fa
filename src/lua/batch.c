/*
 * batch.c: batching across records (contract in script.h): the pending
 * batches of a batching script (one per key value, oldest first), the one
 * timer that starts a batch max_wait_ms after its first record, the
 * batch's fiber running batch_invoke(records, ctxs), and splitting its
 * results back into one outcome per record, reported through the same
 * path as async_invoke's (script_attempt_ended: the retry predicates per
 * record, then the record callback).
 *
 * Ownership. A pending batch is the batcher's; an item (one record's
 * attempt) is its batch's and owns the record's doc while pending. A
 * running batch is its fiber's: the docs go with the fiber's attachment
 * (after end hooks, as async_invoke's doc does), the batch itself at the
 * end of batch_done, or, when the fiber is discarded (every record left:
 * timed out, abandoned; or the VM closes), with the attachment.
 *
 * A record's place is known to its owner through *item_slot while it is
 * pending or running; a record that leaves (script_batch_leave) is
 * forgotten by a pending batch and dropped by a running one (its result,
 * if it comes, is not reported: its timeout already decided).
 *
 * Called by invoke.c (script_invoke of a batching script), vm.c (settings
 * at load, close) and the host (configure, flush, leave).
 */
#define _GNU_SOURCE
#include "script.h"

#include <lauxlib.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../util/siphash.h"
#include "script_int.h"

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

static void start(batch *b);
static void on_timer(uv_timer_t *t);

/* ---- batches ------------------------------------------------------------------- */

static void item_free(script_item *it)
{
    free(it->last_error);
    free(it->out);
    free(it->err);
    free(it->errmsg);
    free(it);
}

static void batch_free(batch *b)
{
    for (size_t i = 0; i < b->n; i++)
        item_free(b->items[i]);
    free(b->items);
    free(b->key);
    free(b);
}

/* The timer follows the oldest pending batch. */
static void arm(struct batcher *bt)
{
    if (!bt->head) {
        uv_timer_stop(&bt->timer);
        return;
    }
    uint64_t due = bt->head->first_ms + bt->max_wait_ms, now = uv_now(bt->timer.loop);
    uv_timer_start(&bt->timer, on_timer, due > now && !bt->flush_all ? due - now : 0, 0);
}

static void unlink_pending(batch *b)
{
    struct batcher *bt = b->bt;
    int was_head = bt->head == b;
    for (batch **p = &bt->tab[b->hash & (bt->tabn - 1)]; *p; p = &(*p)->hnext)
        if (*p == b) {
            *p = b->hnext;
            bt->count--;
            break;
        }
    b->hnext = NULL;
    if (b->prev)
        b->prev->next = b->next;
    else
        bt->head = b->next;
    if (b->next)
        b->next->prev = b->prev;
    else
        bt->tail = b->prev;
    b->next = b->prev = NULL;
    b->bt = NULL;
    if (was_head)
        arm(bt);
}

static void on_timer(uv_timer_t *t)
{
    struct batcher *bt = t->data;
    uint64_t now = uv_now(t->loop);
    /* start() unlinks first and may run the run's callbacks (which may add
     * batches, or ask for a flush again): read the head and the flag again
     * each time. */
    for (batch *b; (b = bt->head) && (bt->flush_all || b->first_ms + bt->max_wait_ms <= now);)
        start(b);
    bt->flush_all = 0;
    arm(bt);
}

/* The key value of the record at the top of L's stack as bytes with a type
 * letter (a string "s", a number "n", a boolean "b"), malloc'd into *key;
 * *key NULL for nil (absent, or not a scalar: those batch together). Pops
 * the record. */
static void key_of(struct batcher *bt, lua_State *L, char **key, size_t *klen)
{
    *key = NULL;
    *klen = 0;
    for (char **k = bt->key_path; *k; k++) {
        /* A path that meets a non-table before its end does not reach the
         * field: {"a":"x"} has no a.b (not the key "x"). */
        if (lua_type(L, -1) != LUA_TTABLE) {
            lua_pop(L, 1);
            lua_pushnil(L);
            break;
        }
        lua_pushstring(L, *k);
        lua_rawget(L, -2);
        lua_remove(L, -2);
    }
    char num[40];
    const char *s = NULL;
    size_t n = 0;
    switch (lua_type(L, -1)) {
    case LUA_TSTRING:
        s = lua_tolstring(L, -1, &n);
        break;
    case LUA_TNUMBER:
        n = (size_t)snprintf(num, sizeof num, "%.17g", lua_tonumber(L, -1));
        s = num;
        break;
    case LUA_TBOOLEAN:
        s = lua_toboolean(L, -1) ? "1" : "0";
        n = 1;
        break;
    }
    int type = lua_type(L, -1);
    if (s && (*key = malloc(n + 1))) {
        (*key)[0] = type == LUA_TSTRING ? 's' : type == LUA_TNUMBER ? 'n' : 'b';
        memcpy(*key + 1, s, n);
        *klen = n + 1;
    }
    lua_pop(L, 1);
}

/* Twice the buckets once there are more batches than buckets (kept as it
 * is when out of memory: longer chains, still right). */
static void grow(struct batcher *bt)
{
    size_t n = bt->tabn * 2;
    batch **t = calloc(n, sizeof *t);
    if (!t)
        return;
    for (size_t i = 0; i < bt->tabn; i++)
        for (batch *b = bt->tab[i], *next; b; b = next) {
            next = b->hnext;
            b->hnext = t[b->hash & (n - 1)];
            t[b->hash & (n - 1)] = b;
        }
    free(bt->tab);
    bt->tab = t;
    bt->tabn = n;
}

/* The pending batch for a key (taking `key`), made when there is none. */
static batch *pending_for(struct batcher *bt, char *key, size_t klen)
{
    uint64_t h = mw_siphash13(bt->k0, bt->k1, key ? key : "", klen);
    for (batch *b = bt->tab[h & (bt->tabn - 1)]; b; b = b->hnext)
        if (b->hash == h && b->klen == klen && (!klen || memcmp(b->key, key, klen) == 0)) {
            free(key);
            return b;
        }
    batch *b = calloc(1, sizeof *b);
    if (!b) {
        free(key);
        return NULL;
    }
    b->hash = h;
    b->hnext = bt->tab[h & (bt->tabn - 1)];
    bt->tab[h & (bt->tabn - 1)] = b;
    if (++bt->count > bt->tabn)
        grow(bt);
    b->bt = bt;
    b->sc = bt->sc;
    b->key = key;
    b->klen = klen;
    b->first_ms = uv_now(bt->timer.loop);
    b->prev = bt->tail;
    if (bt->tail)
        bt->tail->next = b;
    else
        bt->head = b;
    bt->tail = b;
    if (bt->head == b)
        arm(bt);
    return b;
}

void script_batch_add(script *sc, script_rec *rec, const script_call *a)
{
    struct batcher *bt = sc->batcher;
    script_item *it = calloc(1, sizeof *it);
    char *last = it && a->last_error ? strdup(a->last_error) : NULL;
    batch *b = NULL;
    if (it && (!a->last_error || last)) {
        char *key = NULL;
        size_t klen = 0;
        if (bt->key_path) {
            codec_doc_push(rec, sc->rt.L);
            key_of(bt, sc->rt.L, &key, &klen);
        }
        b = pending_for(bt, key, klen);
    }
    if (b && b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 8;
        if (cap > bt->max_size)
            cap = bt->max_size;
        script_item **p = realloc(b->items, cap * sizeof *p);
        if (p) {
            b->items = p;
            b->cap = cap;
        }
    }
    if (!b || b->n == b->cap) {
        if (b && b->n == 0) {
            unlink_pending(b);
            batch_free(b);
        }
        free(it);
        free(last);
        script_rec_free(sc, rec);
        script_result r = { 0, NULL, 0, "out of memory adding the record to a batch", "out of memory", 0, 0 };
        sc->record_done(sc->record_ud, a->task, &r);
        return;
    }
    it->b = b;
    it->state = IT_PENDING;
    it->a = *a;
    it->last_error = last;
    it->a.last_error = last;
    it->doc = rec;
    it->outputs_ref = LUA_NOREF;
    b->items[b->n++] = it;
    *a->item_slot = it;
    if (b->n >= bt->max_size)
        start(b);
    else if (bt->draining)
        script_batch_flush(sc); /* (nothing ran: bt is still there) */
}

/* Not at once: the records of a batch that just ended are reported one by
 * one, each making room, and a flush at each would start batches of one
 * record. At the end of the loop turn, every record that came in it goes. */
void script_batch_flush(script *sc)
{
    struct batcher *bt = sc->batcher;
    if (!bt || !bt->head || bt->flush_all)
        return;
    bt->flush_all = 1;
    arm(bt);
}

void script_batch_drain(script *sc)
{
    struct batcher *bt = sc->batcher;
    if (!bt)
        return;
    bt->draining = 1;
    script_batch_flush(sc);
}

/* ---- the batch's fiber --------------------------------------------------------- */

/* The fiber's attachment: the records' docs, after its end hooks ran. A
 * batch whose fiber was discarded goes with them. */
static void free_attached(rt_fiber *f)
{
    batch *b = f->attach;
    codec *c = codec_of(f->rt->L);
    for (size_t i = 0; i < b->n; i++) {
        codec_doc_free(c, b->items[i]->doc);
        b->items[i]->doc = NULL;
    }
    if (b->abandoned)
        batch_free(b);
}

/* The fiber was discarded mid-run: every record left (or the VM closes,
 * when those still in it are forgotten: the run abandons them too). */
static void batch_abandoned(void *ud)
{
    batch *b = ud;
    b->abandoned = 1;
    b->fiber = NULL;
    for (size_t i = 0; i < b->n; i++) {
        script_item *it = b->items[i];
        if (it->state == IT_RUNNING) {
            it->state = IT_SETTLED;
            *it->a.item_slot = NULL;
        }
    }
}

static void set_failed(script_item *it, char *err)
{
    it->ok = 0;
    it->err = err;
    it->errmsg = err ? strdup(err) : NULL;
}

/* Every record still in the batch fails with the same message. */
static void fail_all(batch *b, const char *err, const char *errmsg)
{
    for (size_t i = 0; i < b->n; i++) {
        script_item *it = b->items[i];
        if (it->state != IT_RUNNING)
            continue;
        it->ok = 0;
        it->err = err ? strdup(err) : NULL;
        it->errmsg = errmsg ? strdup(errmsg) : NULL;
    }
}

static char *fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));
static char *fmt(const char *f, ...)
{
    char *m = NULL;
    va_list ap;
    va_start(ap, f);
    if (vasprintf(&m, f, ap) < 0)
        m = NULL;
    va_end(ap);
    return m;
}

/* One record's entry of the results (results[i] at the top of L's stack,
 * popped; errs at index errs, or 0). */
static void take_one(batch *b, lua_State *L, size_t i, int errs, script_item *it)
{
    script *sc = b->sc;
    int t = lua_type(L, -1);
    if (t == LUA_TTABLE) {
        if (sc->on_result_ref != LUA_NOREF) {
            lua_pushvalue(L, -1);
            it->outputs_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        }
        char what[64];
        snprintf(what, sizeof what, "batch_invoke (results[%zu])", i);
        char *err = NULL;
        if (script_encode_results(sc, what, lua_gettop(L), it->doc, &it->out, &it->len, &err) == 0) {
            it->ok = 1;
        } else {
            set_failed(it, err);
            if (it->outputs_ref != LUA_NOREF) {
                luaL_unref(L, LUA_REGISTRYINDEX, it->outputs_ref);
                it->outputs_ref = LUA_NOREF;
            }
        }
        return;
    }
    lua_pop(L, 1);
    if (t != LUA_TNIL) {
        set_failed(it, fmt("batch_invoke: results[%zu] is a %s; expected an array of output records ({} for none)",
                           i, lua_typename(L, t)));
        return;
    }
    char *err = NULL;
    if (errs) {
        lua_rawgeti(L, errs, (int)i);
        if (!lua_isnil(L, -1))
            err = rt_strdup_value(L, -1);
        lua_pop(L, 1);
    }
    set_failed(it, err ? err
                       : fmt("batch_invoke returned no result for records[%zu] (results[%zu] is nil and errs[%zu] "
                             "is not set)",
                             i, i, i));
}

/* batch_invoke returned the n values at base of L: each record's outcome. */
static void take_results(batch *b, lua_State *L, int base, int n)
{
    int res = base, errs = n >= 2 && lua_type(L, base + 1) == LUA_TTABLE ? base + 1 : 0;
    char *all = NULL;
    if (n == 0 || lua_isnil(L, res)) {
        all = n >= 2 && !lua_isnil(L, base + 1)
                  ? rt_strdup_value(L, base + 1)
                  : strdup("batch_invoke returned nil without an error message; expected an array with one "
                           "output array per record (results[i] for records[i])");
    } else if (lua_type(L, res) != LUA_TTABLE) {
        all = fmt("batch_invoke returned a %s; expected an array with one output array per record (results[i] "
                  "for records[i])",
                  luaL_typename(L, res));
    } else if (lua_objlen(L, res) > b->n) {
        all = fmt("batch_invoke returned %zu results for %zu records; expected one per record (results[i] for "
                  "records[i])",
                  (size_t)lua_objlen(L, res), b->n);
    }
    if (all || n == 0 || lua_type(L, res) != LUA_TTABLE) {
        fail_all(b, all ? all : "out of memory", all ? all : "out of memory");
        free(all);
        return;
    }
    /* results[i] may hold records[j] (sorted, grouped, one record's
     * outputs for another): every record of the batch is written as it
     * came where unchanged, not only records[i]. (Without the array, out of
     * memory, only records[i] is.) */
    codec_doc **docs = malloc(b->n * sizeof *docs);
    if (docs) {
        for (size_t i = 0; i < b->n; i++)
            docs[i] = b->items[i]->doc;
        codec_encode_also(&b->sc->codec, docs, b->n);
    }
    for (size_t i = 0; i < b->n; i++) {
        script_item *it = b->items[i];
        if (it->state != IT_RUNNING)
            continue;
        lua_rawgeti(L, res, (int)(i + 1));
        take_one(b, L, i + 1, errs, it);
    }
    codec_encode_also(&b->sc->codec, NULL, 0);
    free(docs);
}

/* batch_invoke ended: read every record's outcome off the fiber (nothing
 * is reported meanwhile, so the VM's stack is ours), release the fiber,
 * then report each record still in the batch (which may run the whole
 * run's machinery, down to closing this VM). */
static void batch_done(void *ud, rt_fiber *f, int status)
{
    batch *b = ud;
    script *sc = b->sc;
    lua_State *L = sc->rt.L;
    b->ending = 1;
    b->fiber = NULL;
    b->overloads = f->overloads;
    if (status == RT_OK) {
        int n = lua_gettop(f->co);
        int base = lua_gettop(L) + 1;
        lua_xmove(f->co, L, n);
        take_results(b, L, base, n);
        lua_settop(L, base - 1);
        rt_fiber_release(f);
    } else {
        fail_all(b, f->err, f->errmsg);
        rt_fiber_discard(f);
    }
    for (size_t i = 0; i < b->n; i++) {
        script_item *it = b->items[i];
        int ref = it->outputs_ref;
        it->outputs_ref = LUA_NOREF;
        if (it->state != IT_RUNNING) {
            if (ref != LUA_NOREF && sc->rt.L)
                luaL_unref(sc->rt.L, LUA_REGISTRYINDEX, ref);
            continue;
        }
        it->state = IT_DONE;
        *it->a.item_slot = NULL;
        char *out = it->out, *err = it->err, *msg = it->errmsg;
        it->out = it->err = it->errmsg = NULL;
        script_attempt_ended(sc, &it->a, it->ok, out, it->len, err, msg, ref, b->overloads);
    }
    batch_free(b);
}

/* Run b: unlink it from the pending list and start batch_invoke on its
 * records in a fiber. b may be gone when this returns. */
static void start(batch *b)
{
    script *sc = b->sc;
    unlink_pending(b);
    b->running = 1;
    b->live = b->n;
    uint64_t deadline = 0;
    int unbounded = 0;
    for (size_t i = 0; i < b->n; i++) {
        script_item *it = b->items[i];
        it->state = IT_RUNNING;
        if (!it->a.deadline_ms)
            unbounded = 1;
        else if (it->a.deadline_ms > deadline)
            deadline = it->a.deadline_ms;
    }
    rt_fiber *f = rt_fiber_get(&sc->rt);
    if (!f) {
        b->ending = 1;
        for (size_t i = 0; i < b->n; i++) {
            codec_doc_free(&sc->codec, b->items[i]->doc);
            b->items[i]->doc = NULL;
        }
        /* (each report may make the others leave: a failed run abandons all) */
        for (size_t i = 0; i < b->n; i++) {
            script_item *it = b->items[i];
            if (it->state != IT_RUNNING)
                continue;
            it->state = IT_DONE;
            *it->a.item_slot = NULL;
            script_attempt_ended(sc, &it->a, 0, NULL, 0, strdup("out of memory starting a coroutine"),
                                 strdup("out of memory"), LUA_NOREF, 0);
        }
        batch_free(b);
        return;
    }
    lua_State *co = f->co;
    lua_rawgeti(co, LUA_REGISTRYINDEX, sc->batch_ref);
    lua_createtable(co, (int)b->n, 0);
    for (size_t i = 0; i < b->n; i++) {
        codec_doc_push(b->items[i]->doc, co);
        lua_rawseti(co, -2, (int)(i + 1));
    }
    lua_createtable(co, (int)b->n, 0);
    for (size_t i = 0; i < b->n; i++) {
        script_item *it = b->items[i];
        script_push_ctx(sc, co, &it->a);
        /* Each record's own deadline (the fiber's is the batch's latest). */
        script_push_remaining_ms(co, it->a.deadline_ms);
        lua_setfield(co, -2, "remaining_ms");
        lua_rawseti(co, -2, (int)(i + 1));
    }
    /* The batch's I/O waits end at its latest record's deadline: the
     * records due earlier time out on their own timers meanwhile. */
    f->deadline_ms = unbounded ? 0 : deadline;
    f->seq = 0;
    f->task = NULL;
    b->fiber = f;
    f->slot = &b->fiber;
    f->attach = b;
    f->attach_free = free_attached;
    f->abandoned = batch_abandoned;
    rt_fiber_start(f, 2, batch_done, b);
}

void script_batch_leave(script_item *it)
{
    batch *b = it->b;
    *it->a.item_slot = NULL;
    if (it->state == IT_PENDING) {
        size_t i = 0;
        while (i < b->n && b->items[i] != it)
            i++;
        memmove(b->items + i, b->items + i + 1, (b->n - i - 1) * sizeof *b->items);
        b->n--;
        codec_doc_free(&b->sc->codec, it->doc);
        item_free(it);
        if (b->n == 0) {
            unlink_pending(b);
            batch_free(b);
        }
        return;
    }
    if (it->state != IT_RUNNING)
        return;
    it->state = IT_SETTLED;
    /* The last record left a running batch: nobody wants its result. */
    if (--b->live == 0 && !b->ending && b->fiber)
        rt_fiber_discard(b->fiber);
}

/* ---- settings and the end ------------------------------------------------------ */

int script_batch_configure(script *sc, uint32_t max_size, uint64_t max_wait_ms, const char *key)
{
    struct batcher *bt = sc->batcher;
    char why[200];
    if (key && batch_key_check(key, why, sizeof why) != 0)
        return -1;
    char **path = key ? script_path_split(key) : NULL;
    if (key && !path)
        return -1;
    if (!bt) {
        if (!(bt = calloc(1, sizeof *bt)) || !(bt->tab = calloc(16, sizeof *bt->tab))) {
            free(bt);
            script_path_free(path);
            return -1;
        }
        bt->tabn = 16;
        uint64_t seed[2];
        if (uv_random(NULL, NULL, seed, sizeof seed, 0, NULL) != 0)
            seed[0] = seed[1] = uv_hrtime();
        bt->k0 = mw_splitmix64(seed[0]);
        bt->k1 = mw_splitmix64(seed[1] ^ bt->k0);
        bt->sc = sc;
        uv_timer_init(sc->rt.loop, &bt->timer);
        bt->timer.data = bt;
        sc->batcher = bt;
    }
    script_path_free(bt->key_path);
    bt->key_path = path;
    bt->max_size = max_size ? max_size : 1;
    bt->max_wait_ms = max_wait_ms;
    return 0;
}

static void batcher_closed(uv_handle_t *h)
{
    struct batcher *bt = h->data;
    script_path_free(bt->key_path);
    free(bt->tab);
    free(bt);
}

void script_batch_close(script *sc)
{
    struct batcher *bt = sc->batcher;
    if (!bt)
        return;
    sc->batcher = NULL;
    while (bt->head) {
        batch *b = bt->head;
        bt->head = b->next;
        for (size_t i = 0; i < b->n; i++) {
            *b->items[i]->a.item_slot = NULL;
            codec_doc_free(&sc->codec, b->items[i]->doc);
        }
        batch_free(b);
    }
    bt->tail = NULL;
    memset(bt->tab, 0, bt->tabn * sizeof *bt->tab);
    bt->count = 0;
    uv_close((uv_handle_t *)&bt->timer, batcher_closed);
}
