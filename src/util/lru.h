/*
 * lru.h: a string-keyed store of byte values with least-recently-used
 * eviction and per-entry expiry (plain C: no Lua, no libuv).
 *
 * Keys and values are byte strings (binary-safe; a key may hold NUL bytes)
 * copied in on lru_set. Each entry has an expiry on the caller's clock
 * (now_ms, passed to every call that may look at it, so tests drive a
 * manual clock) and a `negative` flag the caller gives its own meaning to
 * (moonwait.cache: "the loader found nothing"). Expiry is lazy: an expired
 * entry is dropped when a lookup finds it, and counted then.
 *
 * Limits: at most max_entries entries and, when max_bytes is set, at most
 * max_bytes of key + value + LRU_ENTRY_OVERHEAD per entry. Storing past a
 * limit evicts from the least recently used end until the new entry fits.
 *
 * The hash is SipHash-1-3 with the seed given to lru_new, so keys taken
 * from input records cannot be chosen to collide.
 *
 * Used by src/lua/cache_*.c (moonwait.cache); pinned by
 * spec/c/test_lru.c.
 */
#ifndef MW_LRU_H
#define MW_LRU_H

#include <stddef.h>
#include <stdint.h>

/* What each entry costs against max_bytes besides its key and value. */
#define LRU_ENTRY_OVERHEAD 64

typedef struct lru lru;

/* One entry as a lookup found it. `val` points into the store: valid until
 * the next call that may change it (lru_set, lru_delete, lru_limit,
 * lru_clear, lru_get, lru_free). */
typedef struct lru_item {
    const void *val;
    size_t vlen;
    int negative;
    uint64_t expires_ms; /* 0 = never */
} lru_item;

typedef struct lru_stats {
    uint64_t hits;      /* lru_get found a live entry */
    uint64_t misses;    /* lru_get found none (expired ones included) */
    uint64_t evictions; /* entries dropped to fit a limit */
    uint64_t expired;   /* entries dropped because their time was up */
    size_t entries;     /* entries now */
    size_t bytes;       /* their cost now: key + value + LRU_ENTRY_OVERHEAD each */
} lru_stats;

/* A store with the given limits (0 = no limit of that kind). NULL when out
 * of memory. */
lru *lru_new(size_t max_entries, size_t max_bytes, uint64_t seed);

/* Free the store and every entry (NULL: nothing). */
void lru_free(lru *c);

/* Look key up. 1 with *out filled when a live entry is there (it becomes
 * the most recently used; counted as a hit); 0 otherwise (counted as a
 * miss; an expired entry is dropped and counted as expired). */
int lru_get(lru *c, const void *key, size_t klen, uint64_t now_ms, lru_item *out);

/* Like lru_get, but changes nothing: no counters, no recency, an expired
 * entry is reported absent and left for a later lru_get. */
int lru_peek(const lru *c, const void *key, size_t klen, uint64_t now_ms, lru_item *out);

/* Store a copy of key and value (replacing an entry of the same key), as
 * the most recently used, expiring at expires_ms (0 = never). Evicts from
 * the least recently used end to fit the limits. 0; -1 out of memory (the
 * old entry, if any, is kept); -2 the entry alone is over max_bytes (not
 * stored; an old entry of the same key is dropped, since it is stale). */
int lru_set(lru *c, const void *key, size_t klen, const void *val, size_t vlen, int negative, uint64_t expires_ms);

/* Drop key's entry. 1 if there was one, else 0. */
int lru_delete(lru *c, const void *key, size_t klen);

/* New limits (0 = none), applied at once: evicts (and counts) from the
 * least recently used end until the store fits. */
void lru_limit(lru *c, size_t max_entries, size_t max_bytes);

/* Drop every entry (not counted as evictions). */
void lru_clear(lru *c);

/* Counters and sizes now. */
void lru_get_stats(const lru *c, lru_stats *st);

/* The cost of one entry against max_bytes. */
static inline size_t lru_entry_cost(size_t klen, size_t vlen)
{
    return klen + vlen + LRU_ENTRY_OVERHEAD;
}

#endif
