/*
 * cache_int.h: what the files of moonwait.cache share; not for use outside
 * them (the module is opened through modules.h, freed through script.h).
 *
 *   cache_store.c   (cache_store_) stores: new, free, the named registry,
 *                   cache.new's options and their application,
 *                   script_cache_free_all
 *   cache_flight.c  (cache_flight_) single flight: flights, waiters,
 *                   hand-offs, the results handed to waiters (blobs)
 *   cache_value.c   (cache_value_) a value's bytes into the store and a
 *                   fresh copy out of it, safe against finalizers
 *   mod_cache.c     moonwait._cache, the Lua binding: get, take, store,
 *                   fail (cache.lua's c:get), cache.new and the methods
 *
 * A store is an LRU of byte values (util/lru.c) plus the loads in flight.
 * Values cross into it and out of it as bytes (lvalue.c): a get gives the
 * caller a fresh copy, so no table is ever shared between records or
 * between generations (each generation is its own VM). Nothing here holds
 * a Lua reference: stores and flights outlive VMs, and know fibers only by
 * their C pointers (every fiber leaves its flight before its VM closes).
 */
#ifndef MW_CACHE_INT_H
#define MW_CACHE_INT_H

#include <lua.h>
#include <stddef.h>
#include <stdint.h>

#include "../util/buf.h"
#include "../util/lru.h"
#include "runtime.h"

#define CACHE_MT "moonwait.cache"
#define CACHE_DEFAULT_SIZE 1000
#define CACHE_MAX_SIZE 100000000 /* entries */
#define CACHE_MAX_NAME 200

/* What get and take tell cache.lua besides a hit (its second value). */
enum { ST_LOAD = 1, ST_DIRECT = 2, ST_WAITED = 3 };

typedef struct store store;
typedef struct flight flight;
typedef struct waiter waiter;

/* A load's result as bytes, shared by the waiters it is handed to. */
typedef struct blob {
    int refs;
    int negative;        /* bytes are the err (or empty: nil) of nil, err */
    size_t len;
    unsigned char bytes[];
} blob;

/* A waiter's state: parked on the flight's queue; woken with a result
 * (res); woken to run the load itself (handed the load: its flight's heir);
 * gone (left the queue: its fiber ended or stopped waiting). */
enum { W_PARKED = 0, W_RESULT, W_HANDOFF, W_GONE };

struct waiter {
    rt_hook hook;        /* on the waiting fiber until take (first member) */
    waiter *next, *prev; /* in fl's queue while parked */
    flight *fl;          /* while parked, or handed the load */
    rt_fiber *f;
    int state;
    blob *res;           /* W_RESULT: one reference */
};

struct flight {
    rt_hook hook;        /* on the loader's fiber while it loads (first member) */
    store *s;
    rt_fiber *loader;    /* NULL while handed to a waiter that has not run yet */
    waiter *heir;        /* that waiter */
    waiter *head, *tail; /* parked waiters, oldest first */
    size_t klen;
    char key[];
};

struct store {
    store *next;         /* on the named list */
    char *name;          /* NULL: unnamed */
    lru *entries;
    lru *flights;        /* key -> flight * (the pointer's bytes); no limits */
    size_t size, max_bytes;          /* max_bytes 0 = no byte limit */
    uint64_t ttl_ms, neg_ttl_ms;     /* ttl 0: never expires; neg_ttl 0: not stored */
    uint64_t loads, load_errors, waiters, handoffs, abandoned;
    size_t waiting;      /* waiters parked now */
    size_t nflights;
    int orphan;          /* unnamed, its handle collected while flights were open */
};

/* The userdata a script holds. */
typedef struct handle {
    store *s;
    rt *r;               /* its VM's runtime (a handle never leaves its VM) */
} handle;

/* ---- cache_store.c ---- */

/* cache.new's options. */
typedef struct cache_opts {
    const char *name;    /* NULL: unnamed */
    size_t size, max_bytes;
    double ttl, neg_ttl; /* seconds */
} cache_opts;

/* Read cache.new's table at 1 of L into *o (its strings stay on L's
 * stack). Raises on a misspelt option or a value out of range. */
void cache_store_read_opts(lua_State *L, cache_opts *o);

/* The store o names (the process's store of that name, given o's options,
 * a line logged when they change), or a new one (named: registered for the
 * process; unnamed: the caller's, see cache_store_release). NULL when out
 * of memory. */
store *cache_store_open(const cache_opts *o);

/* A handle on s is gone: an unnamed s is freed now, or with its last
 * flight (orphan); a named one lives until script_cache_free_all. */
void cache_store_release(store *s);

/* Free s and its entries (no flight may be open). */
/* Stores of this thread not yet freed, named or not: what
 * moonwait.runtime_stats().caches says, for leak checks. */
extern _Thread_local size_t cache_store_live;

void cache_store_free(store *s);

/* Seconds as whole milliseconds, rounded up (a tiny ttl still expires). */
uint64_t cache_store_ms(double secs);

/* ---- cache_flight.c ---- */

/* The flight of key in s, or NULL. */
flight *cache_flight_find(store *s, const char *key, size_t klen);

/* A new flight of key with f as its loader (an end hook on f hands the load
 * on if f's run ends first). NULL when out of memory. */
flight *cache_flight_new(store *s, const char *key, size_t klen, rt_fiber *f);

/* Park f (the running fiber) as a waiter on fl, until its fiber's deadline
 * at most: the caller then clears f's stack and does rt_yield. 0, or -1 out
 * of memory (nothing done). */
int cache_flight_wait(flight *fl, rt_fiber *f);

/* After the wait, in f (running again): its outcome. 1: a result, *res
 * holds one reference (cache_flight_unref); 0: f was handed the load and is
 * now its loader; -1: f waited for nothing. */
int cache_flight_take(rt_fiber *f, blob **res);

/* Drop a reference to a result (NULL: nothing). */
void cache_flight_unref(blob *b);

/* The load ended with a result (bytes of a value, or of nil, err when
 * negative): every waiter gets it; the flight ends. */
void cache_flight_done(flight *fl, const void *bytes, size_t len, int negative);

/* No one loads any more: the first waiter gets the load, or the flight
 * ends. */
void cache_flight_hand_off(flight *fl);

/* ---- cache_value.c ---- */

/* A value's bytes on their way into the store. */
typedef struct cache_encoded {
    mw_buf *b;           /* the shared scratch buffer, or &own */
    mw_buf own;
} cache_encoded;

/* Encode the value at idx of L into e->b (lval_encode; `root` names it in
 * errors). 0, or -1 with the message in err. Free with
 * cache_value_encoded_free, whatever the outcome. */
int cache_value_encode(lua_State *L, int idx, const char *root, cache_encoded *e, char *err, size_t errlen);
void cache_value_encoded_free(cache_encoded *e);

/* An encoding of nothing (nil alone: no bytes). */
void cache_value_none(cache_encoded *e);

/* Push a result from p[0..n): a value, or a negative entry's nil[, err].
 * Returns how many values (1 or 2). The bytes are copied first, so they
 * may change meanwhile. Raises when out of memory. */
int cache_value_push(lua_State *L, const void *p, size_t n, int negative);

/* Free this thread's scratch buffer (at its exit). */
void cache_value_free_all(void);

#endif
