/*
 * lru.c: the LRU store (contract in lru.h). A chained hash table of
 * power-of-two size (doubled when entries outnumber buckets, never shrunk)
 * and a doubly linked recency list, most recent first; each entry is one
 * allocation holding its key and value bytes.
 */
#include "lru.h"

#include <stdlib.h>
#include <string.h>

#include "siphash.h"

typedef struct entry entry;
struct entry {
    entry *hnext;          /* next in its bucket */
    entry *prev, *next;    /* recency list: prev is more recent */
    uint64_t hash;
    uint64_t expires_ms;   /* 0 = never */
    size_t klen, vlen;
    int negative;
    unsigned char data[];  /* key, then value */
};

struct lru {
    entry **buckets;
    size_t nbuckets;       /* a power of two */
    entry *head, *tail;    /* most and least recently used */
    size_t max_entries, max_bytes; /* 0 = none */
    uint64_t k0, k1;       /* SipHash key */
    lru_stats st;
};

/* ---- the table and the list --------------------------------------------- */

lru *lru_new(size_t max_entries, size_t max_bytes, uint64_t seed)
{
    lru *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->nbuckets = 16;
    c->buckets = calloc(c->nbuckets, sizeof *c->buckets);
    if (!c->buckets) {
        free(c);
        return NULL;
    }
    c->max_entries = max_entries;
    c->max_bytes = max_bytes;
    c->k0 = mw_splitmix64(seed);
    c->k1 = mw_splitmix64(c->k0 ^ seed);
    return c;
}

static entry **slot_of(const lru *c, uint64_t hash)
{
    return &c->buckets[hash & (c->nbuckets - 1)];
}

static entry *find(const lru *c, const void *key, size_t klen, uint64_t hash)
{
    for (entry *e = *slot_of(c, hash); e; e = e->hnext)
        if (e->hash == hash && e->klen == klen && memcmp(e->data, key, klen) == 0)
            return e;
    return NULL;
}

static void list_unlink(lru *c, entry *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        c->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        c->tail = e->prev;
    e->prev = e->next = NULL;
}

static void list_push_front(lru *c, entry *e)
{
    e->prev = NULL;
    e->next = c->head;
    if (c->head)
        c->head->prev = e;
    else
        c->tail = e;
    c->head = e;
}

/* Take e off the table and the list, and free it. */
static void drop(lru *c, entry *e)
{
    entry **pp = slot_of(c, e->hash);
    while (*pp != e)
        pp = &(*pp)->hnext;
    *pp = e->hnext;
    list_unlink(c, e);
    c->st.entries--;
    c->st.bytes -= lru_entry_cost(e->klen, e->vlen);
    free(e);
}

/* Double the buckets (nothing happens when that cannot be allocated: the
 * chains only get longer). */
static void grow(lru *c)
{
    size_t n = c->nbuckets * 2;
    entry **b = calloc(n, sizeof *b);
    if (!b)
        return;
    for (size_t i = 0; i < c->nbuckets; i++) {
        for (entry *e = c->buckets[i], *next; e; e = next) {
            next = e->hnext;
            e->hnext = b[e->hash & (n - 1)];
            b[e->hash & (n - 1)] = e;
        }
    }
    free(c->buckets);
    c->buckets = b;
    c->nbuckets = n;
}

/* Evict from the least recently used end until `more` entries of `bytes`
 * more would fit. */
static void fit(lru *c, size_t more, size_t bytes)
{
    while (c->tail && ((c->max_entries && c->st.entries + more > c->max_entries) ||
                       (c->max_bytes && c->st.bytes + bytes > c->max_bytes))) {
        drop(c, c->tail);
        c->st.evictions++;
    }
}

static int expired(const entry *e, uint64_t now_ms)
{
    return e->expires_ms && now_ms >= e->expires_ms;
}

static void fill(const entry *e, lru_item *out)
{
    out->val = e->data + e->klen;
    out->vlen = e->vlen;
    out->negative = e->negative;
    out->expires_ms = e->expires_ms;
}

/* ---- the contract ----------------------------------------------------------- */

int lru_get(lru *c, const void *key, size_t klen, uint64_t now_ms, lru_item *out)
{
    entry *e = find(c, key, klen, mw_siphash13(c->k0, c->k1, key, klen));
    if (e && expired(e, now_ms)) {
        drop(c, e);
        c->st.expired++;
        e = NULL;
    }
    if (!e) {
        c->st.misses++;
        return 0;
    }
    c->st.hits++;
    if (c->head != e) {
        list_unlink(c, e);
        list_push_front(c, e);
    }
    fill(e, out);
    return 1;
}

int lru_peek(const lru *c, const void *key, size_t klen, uint64_t now_ms, lru_item *out)
{
    entry *e = find(c, key, klen, mw_siphash13(c->k0, c->k1, key, klen));
    if (!e || expired(e, now_ms))
        return 0;
    fill(e, out);
    return 1;
}

int lru_set(lru *c, const void *key, size_t klen, const void *val, size_t vlen, int negative, uint64_t expires_ms)
{
    uint64_t hash = mw_siphash13(c->k0, c->k1, key, klen);
    entry *old = find(c, key, klen, hash);
    size_t cost = lru_entry_cost(klen, vlen);
    if (c->max_bytes && cost > c->max_bytes) {
        if (old)
            drop(c, old);
        return -2;
    }
    if (klen > SIZE_MAX / 2 || vlen > SIZE_MAX / 2 - klen - sizeof(entry))
        return -1;
    entry *e = malloc(sizeof *e + klen + vlen);
    if (!e)
        return -1;
    if (old)
        drop(c, old);
    fit(c, 1, cost);
    e->hash = hash;
    e->expires_ms = expires_ms;
    e->klen = klen;
    e->vlen = vlen;
    e->negative = negative;
    if (klen)
        memcpy(e->data, key, klen);
    if (vlen)
        memcpy(e->data + klen, val, vlen);
    if (c->st.entries >= c->nbuckets)
        grow(c);
    entry **slot = slot_of(c, hash);
    e->hnext = *slot;
    *slot = e;
    list_push_front(c, e);
    c->st.entries++;
    c->st.bytes += cost;
    return 0;
}

int lru_delete(lru *c, const void *key, size_t klen)
{
    entry *e = find(c, key, klen, mw_siphash13(c->k0, c->k1, key, klen));
    if (!e)
        return 0;
    drop(c, e);
    return 1;
}

void lru_limit(lru *c, size_t max_entries, size_t max_bytes)
{
    c->max_entries = max_entries;
    c->max_bytes = max_bytes;
    fit(c, 0, 0);
}

void lru_clear(lru *c)
{
    while (c->head)
        drop(c, c->head);
}

void lru_free(lru *c)
{
    if (!c)
        return;
    lru_clear(c);
    free(c->buckets);
    free(c);
}

void lru_get_stats(const lru *c, lru_stats *st)
{
    *st = c->st;
}
