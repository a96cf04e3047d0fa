/*
 * batch.c: batching across records (contract in script.h): the pending
 * batches of a batching script (one per key value, oldest first), the one
 * timer that starts a batch max_wait_ms after its first record, records
 * leaving, and the settings. batch_run.c runs a batch (its fiber, its
 * results split back into one outcome per record).
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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../util/siphash.h"
#include "batch_int.h"
#include "script_int.h"

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

void batch_free(batch *b)
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

void batch_unlink_pending(batch *b)
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
    /* batch_start() unlinks first and may run the run's callbacks (which may add
     * batches, or ask for a flush again): read the head and the flag again
     * each time. */
    for (batch *b; (b = bt->head) && (bt->flush_all || b->first_ms + bt->max_wait_ms <= now);)
        batch_start(b);
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
            batch_unlink_pending(b);
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
        batch_start(b);
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
            batch_unlink_pending(b);
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
