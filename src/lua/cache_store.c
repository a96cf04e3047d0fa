/*
 * cache_store.c: moonwait.cache's stores (cache_int.h): making and freeing
 * them, the process's registry of named ones, cache.new's options and how
 * a store takes them. Called by mod_cache.c (cache.new, a handle's __gc),
 * cache_flight.c (an orphan's last flight) and, at exit, the app
 * (script_cache_free_all).
 *
 * Named stores are per loop thread: cache.new{name=...} in a later
 * generation on the same thread gets the same store (its newest options
 * win), and it lives until that thread frees them (script_cache_free_all,
 * after its last VM closed). With --workers N each worker has its own store
 * of each name: a store's single flight parks fibers of one loop and wakes
 * them on it, and its LRU is not locked, so sharing one across threads
 * would need both redone; per thread, nothing here is shared. An unnamed store belongs to its
 * handle: freed when the handle is collected (at the latest when its VM
 * closes), or, when loads are still in flight then, with the last of them.
 */
#define _GNU_SOURCE
#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../util/log.h"
#include "cache_int.h"
#include "modules.h"
#include "script.h"

static _Thread_local store *named;     /* this thread's named stores, newest first */
_Thread_local size_t cache_store_live; /* this thread's stores not yet freed, named or not (runtime_stats) */

static store *store_new(const char *name)
{
    store *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    uint64_t seed = uv_hrtime() ^ (uint64_t)(uintptr_t)s;
    s->entries = lru_new(CACHE_DEFAULT_SIZE, 0, seed);
    s->flights = lru_new(0, 0, seed * 31 + 7);
    if (!s->entries || !s->flights || (name && !(s->name = strdup(name)))) {
        lru_free(s->entries);
        lru_free(s->flights);
        free(s);
        return NULL;
    }
    s->size = CACHE_DEFAULT_SIZE;
    cache_store_live++;
    return s;
}

void cache_store_free(store *s)
{
    cache_store_live--;
    lru_free(s->entries);
    lru_free(s->flights);
    free(s->name);
    free(s);
}

void cache_store_release(store *s)
{
    if (!s || s->name)
        return; /* a named store lives until the process ends */
    if (s->nflights)
        s->orphan = 1; /* freed with its last flight */
    else
        cache_store_free(s);
}

uint64_t cache_store_ms(double secs)
{
    return (uint64_t)ceil(secs * 1000.0);
}

/* ---- cache.new's options ---------------------------------------------------- */

static size_t whole_number(lua_State *L, int idx, const char *what, double lo, double hi)
{
    double d = lua_type(L, idx) == LUA_TNUMBER ? lua_tonumber(L, idx) : NAN;
    if (!(d >= lo && d <= hi) || d != floor(d)) {
        /* lua_pushfstring has no precision: 2^53 would read 9.007199254741e+15 */
        char range[64];
        snprintf(range, sizeof range, "%.0f to %.0f", lo, hi);
        luaL_error(L, "cache.new: %s: a whole number from %s expected, got %s", what, range,
                   lua_type(L, idx) == LUA_TNUMBER ? lua_tostring(L, idx) : luaL_typename(L, idx));
    }
    return (size_t)d;
}

static double seconds(lua_State *L, int idx, const char *what)
{
    double d = lua_type(L, idx) == LUA_TNUMBER ? lua_tonumber(L, idx) : NAN;
    if (!(d >= 0 && d <= 1e9))
        luaL_error(L, "cache.new: %s: a number of seconds from 0 to 1e9 expected (0: %s), got %s", what,
                   strcmp(what, "ttl") == 0 ? "never expires" : "not cached",
                   lua_type(L, idx) == LUA_TNUMBER ? lua_tostring(L, idx) : luaL_typename(L, idx));
    return d;
}

void cache_store_read_opts(lua_State *L, cache_opts *o)
{
    memset(o, 0, sizeof *o);
    o->size = CACHE_DEFAULT_SIZE;
    if (lua_isnoneornil(L, 1))
        return;
    if (!lua_istable(L, 1))
        luaL_error(L, "cache.new: a table of options expected ({ name =, size =, max_bytes =, ttl =, neg_ttl = }), "
                      "got %s", luaL_typename(L, 1));
    lua_pushnil(L);
    while (lua_next(L, 1)) {
        const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
        int v = lua_gettop(L);
        if (k && strcmp(k, "name") == 0) {
            size_t n;
            o->name = lua_type(L, v) == LUA_TSTRING ? lua_tolstring(L, v, &n) : NULL;
            if (!o->name || n == 0 || n > CACHE_MAX_NAME || strlen(o->name) != n)
                luaL_error(L, "cache.new: name: a string of 1 to %d bytes (no NUL) expected, got %s", CACHE_MAX_NAME,
                           lua_type(L, v) == LUA_TSTRING ? "another string" : luaL_typename(L, v));
        } else if (k && strcmp(k, "size") == 0) {
            o->size = whole_number(L, v, "size", 1, CACHE_MAX_SIZE);
        } else if (k && strcmp(k, "max_bytes") == 0) {
            o->max_bytes = whole_number(L, v, "max_bytes", 1, 9007199254740992.0);
        } else if (k && strcmp(k, "ttl") == 0) {
            o->ttl = seconds(L, v, "ttl");
        } else if (k && strcmp(k, "neg_ttl") == 0) {
            o->neg_ttl = seconds(L, v, "neg_ttl");
        } else {
            lua_pushvalue(L, -2);
            luaL_error(L, "cache.new: unknown option %s (name, size, max_bytes, ttl, neg_ttl)",
                       k ? lua_pushfstring(L, "'%s'", k) : luaL_typename(L, -1));
        }
        lua_pop(L, 1);
    }
}

static void fmt_bytes(char *buf, size_t n, size_t v)
{
    if (v)
        snprintf(buf, n, "%zu", v);
    else
        snprintf(buf, n, "none");
}

/* Give s the options of o: limits at once (evicting to fit), ttl and
 * neg_ttl for what is stored from now on. `say` logs what changed. */
static void apply(store *s, const cache_opts *o, int say)
{
    uint64_t ttl_ms = cache_store_ms(o->ttl), neg_ms = cache_store_ms(o->neg_ttl);
    char line[512] = "";
    size_t at = 0; /* (each part is short: line never fills) */
    if (say && mw_log_enabled(MW_LOG_INFO)) {
        char a[32], b[32];
        if (o->size != s->size)
            at += (size_t)snprintf(line + at, sizeof line - at, ", size %zu -> %zu", s->size, o->size);
        if (o->max_bytes != s->max_bytes) {
            fmt_bytes(a, sizeof a, s->max_bytes);
            fmt_bytes(b, sizeof b, o->max_bytes);
            at += (size_t)snprintf(line + at, sizeof line - at, ", max_bytes %s -> %s", a, b);
        }
        if (ttl_ms != s->ttl_ms)
            at += (size_t)snprintf(line + at, sizeof line - at, ", ttl %g -> %g s", (double)s->ttl_ms / 1000,
                                   (double)ttl_ms / 1000);
        if (neg_ms != s->neg_ttl_ms)
            at += (size_t)snprintf(line + at, sizeof line - at, ", neg_ttl %g -> %g s", (double)s->neg_ttl_ms / 1000,
                                   (double)neg_ms / 1000);
    }
    lru_stats before, after;
    lru_get_stats(s->entries, &before);
    s->size = o->size;
    s->max_bytes = o->max_bytes;
    lru_limit(s->entries, s->size, s->max_bytes);
    lru_get_stats(s->entries, &after);
    int ttls = ttl_ms != s->ttl_ms || neg_ms != s->neg_ttl_ms;
    s->ttl_ms = ttl_ms;
    s->neg_ttl_ms = neg_ms;
    if (at) {
        uint64_t evicted = after.evictions - before.evictions;
        mw_logx(MW_LOG_INFO, &(mw_log_ctx){ .script = 1 },
                "cache \"%s\": new options from cache.new: %s%s; %llu entries evicted to fit, %zu kept",
                s->name, line + 2, ttls ? " (a new ttl applies to entries stored from now on)" : "",
                (unsigned long long)evicted, after.entries);
    }
}

/* ---- the registry --------------------------------------------------------------- */

store *cache_store_open(const cache_opts *o)
{
    store *s = NULL;
    if (o->name)
        for (s = named; s && strcmp(s->name, o->name) != 0; s = s->next)
            ;
    if (s) {
        apply(s, o, 1);
        return s;
    }
    if (!(s = store_new(o->name)))
        return NULL;
    apply(s, o, 0);
    if (o->name) {
        s->next = named;
        named = s;
    }
    return s;
}

/* The calling thread's named stores and scratch buffer (each loop thread,
 * after its last VM closed). */
void script_cache_free_all(void)
{
    while (named) {
        store *s = named;
        named = s->next;
        cache_store_free(s); /* (no flight is left: every VM has closed) */
    }
    cache_value_free_all();
}
