/*
 * mod_cache.c: moonwait._cache, the core of moonwait.cache (the public
 * module is lua/moonwait/cache.lua, which adds c:get on these pieces).
 *
 * A store is an LRU of byte values (util/lru.c) plus the loads in flight.
 * Values cross into it and out of it as bytes (lvalue.c): a get gives the
 * caller a fresh copy, so no table is ever shared between records or
 * between generations (each generation is its own VM).
 *
 * Named stores are process-wide: cache.new{name=...} in a later generation
 * gets the same store (its newest options win), and it lives until the
 * process ends (script_cache_free_all). An unnamed store belongs to its
 * handle: freed when the handle is collected (at the latest when its VM
 * closes).
 *
 * Single flight. A get that misses in a fiber either becomes the key's
 * loader (the flight's `loader`, with an end hook on its fiber) or parks
 * as a waiter on the flight, in arrival order. The loader's result is
 * stored and handed to every waiter as bytes (a refcounted blob; each
 * waiter decodes its own copy in its own VM once it runs: take). When the
 * loader's fiber ends without a result (its record timed out, was
 * cancelled, its generation closed, or it raised past get's pcall), the
 * end hook hands the load to the first waiter (it wakes and runs its own
 * loader), or ends the flight when none waits. A waiter handed the load
 * that ends before it runs passes it on the same way. So a waiter never
 * waits on a fiber that is gone. Waiters may be fibers of any VM: nothing
 * here holds a Lua reference, only fibers' C pointers, and every fiber
 * leaves the flight (cancel hook, end hook) before its VM closes.
 *
 *   get(c, key)        true, value | true, nil[, err] (a hit, or a timeout:
 *                      true, nil, "timeout"); false, LOAD (load it, then
 *                      store or fail); false, DIRECT (no fiber: load it
 *                      without single flight, then store or fail); or parks and
 *                      resumes with false, WAITED (then take)
 *   take(c)            after WAITED: true, value | true, nil[, err]; or
 *                      false, LOAD (the load was handed over)
 *   store(c, key, v, err)  the load's result: cached (v: ttl; nil: neg_ttl)
 *                      and handed to the waiters
 *   fail(c, key, msg)  the loader raised: the waiters get nil, msg
 *   new(opts), and the methods set, delete, peek, purge, stats
 */
#define _GNU_SOURCE
#include <lauxlib.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../util/lru.h"
#include "lvalue.h"
#include "modules.h"
#include "runtime.h"
#include "script.h"

#define CACHE_MT "moonwait.cache"
#define DEFAULT_SIZE 1000
#define MAX_SIZE 100000000 /* entries */
#define MAX_NAME 200

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

static store *named;     /* every named store, newest first */
static mw_buf scratch;   /* encoded values on their way in (see encode) */

/* ---- stores ------------------------------------------------------------------ */

static store *store_new(const char *name)
{
    store *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    uint64_t seed = uv_hrtime() ^ (uint64_t)(uintptr_t)s;
    s->entries = lru_new(DEFAULT_SIZE, 0, seed);
    s->flights = lru_new(0, 0, seed * 31 + 7);
    if (!s->entries || !s->flights || (name && !(s->name = strdup(name)))) {
        lru_free(s->entries);
        lru_free(s->flights);
        free(s);
        return NULL;
    }
    s->size = DEFAULT_SIZE;
    return s;
}

static void store_free(store *s)
{
    lru_free(s->entries);
    lru_free(s->flights);
    free(s->name);
    free(s);
}

static void blob_unref(blob *b)
{
    if (b && --b->refs == 0)
        free(b);
}

/* ---- flights ----------------------------------------------------------------- */

static flight *flight_find(store *s, const char *key, size_t klen)
{
    if (!s->nflights)
        return NULL;
    lru_item it;
    flight *fl;
    if (!lru_peek(s->flights, key, klen, 0, &it))
        return NULL;
    memcpy(&fl, it.val, sizeof fl);
    return fl;
}

static void loader_ended(rt_hook *h, rt_fiber *f, rt_end how);

/* A new flight of key with f as its loader. NULL when out of memory. */
static flight *flight_new(store *s, const char *key, size_t klen, rt_fiber *f)
{
    flight *fl = calloc(1, sizeof *fl + klen);
    if (!fl)
        return NULL;
    if (lru_set(s->flights, key, klen, &fl, sizeof fl, 0, 0) != 0) {
        free(fl);
        return NULL;
    }
    fl->s = s;
    fl->klen = klen;
    memcpy(fl->key, key, klen);
    fl->loader = f;
    fl->hook.fn = loader_ended;
    rt_hook_add(f, &fl->hook);
    s->nflights++;
    return fl;
}

/* The flight is over: off the map and the loader's fiber, freed (and its
 * store with it when that was waiting for its last flight). Its waiters
 * must be gone already. */
static void flight_end(flight *fl)
{
    store *s = fl->s;
    if (fl->loader)
        rt_hook_remove(fl->loader, &fl->hook);
    lru_delete(s->flights, fl->key, fl->klen);
    s->nflights--;
    free(fl);
    if (s->orphan && !s->nflights)
        store_free(s);
}

/* Wake w (taken off its queue) with false, WAITED: it takes its outcome
 * when it runs. */
static void wake_waiter(waiter *w)
{
    uv_timer_stop(&w->f->timer);
    lua_pushboolean(w->f->co, 0);
    lua_pushinteger(w->f->co, ST_WAITED);
    rt_wake(w->f, 2);
}

static waiter *dequeue(flight *fl)
{
    waiter *w = fl->head;
    if (!w)
        return NULL;
    fl->head = w->next;
    if (fl->head)
        fl->head->prev = NULL;
    else
        fl->tail = NULL;
    w->next = w->prev = NULL;
    fl->s->waiting--;
    return w;
}

static void unqueue(flight *fl, waiter *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        fl->head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        fl->tail = w->prev;
    w->next = w->prev = NULL;
    fl->s->waiting--;
}

/* No one loads any more: the first waiter gets the load, or the flight
 * ends. */
static void hand_off(flight *fl)
{
    if (fl->loader) {
        rt_hook_remove(fl->loader, &fl->hook);
        fl->loader = NULL;
    }
    waiter *w = dequeue(fl);
    if (!w) {
        flight_end(fl);
        return;
    }
    fl->s->handoffs++;
    fl->heir = w;
    w->state = W_HANDOFF;
    wake_waiter(w);
}

/* The load ended with a result (bytes of a value, or of nil, err when
 * negative): every waiter gets it; the flight ends. */
static void flight_done(flight *fl, const void *bytes, size_t len, int negative)
{
    blob *b = NULL;
    if (fl->head) {
        b = malloc(sizeof *b + len);
        if (!b) { /* out of memory: the next in line loads for itself */
            hand_off(fl);
            return;
        }
        b->refs = 1;
        b->negative = negative;
        b->len = len;
        if (len)
            memcpy(b->bytes, bytes, len);
    }
    waiter *w;
    while ((w = dequeue(fl))) {
        w->fl = NULL;
        w->state = W_RESULT;
        w->res = b;
        b->refs++;
        wake_waiter(w);
    }
    blob_unref(b);
    flight_end(fl);
}

/* The loader's fiber ended (end hook) before the load stored or failed. */
static void loader_ended(rt_hook *h, rt_fiber *f, rt_end how)
{
    (void)f;
    (void)how;
    flight *fl = (flight *)h;
    fl->s->abandoned++;
    fl->loader = NULL; /* (the hook is off the fiber already) */
    hand_off(fl);
}

/* ---- waiters ----------------------------------------------------------------- */

/* A parked waiter leaves its flight's queue (it waits no more). */
static void waiter_leave(waiter *w)
{
    uv_timer_stop(&w->f->timer);
    if (w->state == W_PARKED) {
        unqueue(w->fl, w);
        w->fl = NULL;
        w->state = W_GONE;
    }
}

/* The waiting fiber was discarded while parked (rt_fiber_discard runs
 * this, then the end hooks: waiter_ended frees w). */
static void waiter_cancel(rt_fiber *f)
{
    waiter_leave(f->wait);
}

/* The waiting fiber's run ended before it took its outcome (discarded
 * while parked or after being woken, or it raised in between). */
static void waiter_ended(rt_hook *h, rt_fiber *f, rt_end how)
{
    (void)how;
    (void)f;
    waiter *w = (waiter *)h;
    waiter_leave(w); /* (only when still parked; the cancel hook did it already) */
    if (w->state == W_RESULT)
        blob_unref(w->res);
    if (w->state == W_HANDOFF) {
        flight *fl = w->fl;
        fl->heir = NULL;
        hand_off(fl);
    }
    free(w);
}

/* The fiber's deadline came while it waited (after the record's own
 * timeout, which normally abandons it first: see rt_wait_ms). */
static void waiter_timeout(uv_timer_t *t)
{
    rt_fiber *f = t->data;
    waiter *w = f->wait;
    unqueue(w->fl, w);
    rt_hook_remove(f, &w->hook);
    free(w);
    lua_pushboolean(f->co, 1);
    lua_pushnil(f->co);
    lua_pushliteral(f->co, "timeout");
    rt_wake(f, 3);
}

/* ---- Lua helpers ------------------------------------------------------------- */

/* Raise "<where>cache "<name>": <message>", with the position of the
 * function `level` levels up (1: whoever called the C function; 2: the
 * caller of cache.lua's get). */
static int cache_error(lua_State *L, int level, const store *s, const char *fmt, ...)
{
    va_list ap;
    luaL_where(L, level);
    if (s && s->name)
        lua_pushfstring(L, "cache \"%s\": ", s->name);
    else
        lua_pushliteral(L, "cache: ");
    va_start(ap, fmt);
    lua_pushvfstring(L, fmt, ap);
    va_end(ap);
    lua_concat(L, 3);
    return lua_error(L);
}

static handle *check_handle(lua_State *L, int level)
{
    handle *h = lua_touserdata(L, 1);
    int ok = h && lua_getmetatable(L, 1) && lua_rawequal(L, -1, lua_upvalueindex(1));
    if (!ok) {
        luaL_where(L, level);
        lua_pushfstring(L, "a moonwait.cache expected (c:method(...), not c.method(...)), got %s",
                        luaL_typename(L, 1));
        lua_concat(L, 2);
        lua_error(L);
    }
    lua_pop(L, 1);
    return h;
}

/* The key at idx: a string, or a number as its string form. */
static const char *check_key(lua_State *L, int idx, const store *s, int level, size_t *klen)
{
    int t = lua_type(L, idx);
    if (t != LUA_TSTRING && t != LUA_TNUMBER)
        cache_error(L, level, s, "the key must be a string or a number, got %s", luaL_typename(L, idx));
    return lua_tolstring(L, idx, klen);
}

static uint64_t now_ms(const handle *h)
{
    return uv_now(h->r->loop);
}

/* The fiber running L that may wait, or NULL (load time, on_timeout, a
 * coroutine of the script's own). */
static rt_fiber *fiber_of(lua_State *L, const handle *h)
{
    rt_fiber *f = h->r->running;
    return f && f->co == L ? f : NULL;
}

/* Push the value encoded in p[0..n) from a copy (a Lua finalizer run while
 * building it may change the store, and decoding may raise). */
static void push_copy(lua_State *L, const void *p, size_t n)
{
    unsigned char small[512];
    if (n <= sizeof small) {
        memcpy(small, p, n);
        lval_push(L, small, n);
        return;
    }
    void *copy = lua_newuserdata(L, n);
    memcpy(copy, p, n);
    int at = lua_gettop(L);
    lval_push(L, copy, n);
    lua_remove(L, at);
}

/* A result (a value, or a negative entry's nil, err) on L: returns how
 * many values (1 or 2). */
static int push_result(lua_State *L, const void *p, size_t n, int negative)
{
    if (!negative) {
        push_copy(L, p, n);
        return 1;
    }
    lua_pushnil(L);
    if (!n)
        return 1;
    push_copy(L, p, n);
    return 2;
}

/* A value's bytes on their way into the store. */
typedef struct encoded {
    mw_buf *b;           /* &scratch, or &own */
    mw_buf own;
} encoded;

/* Encode the value at idx into e->b: the shared scratch buffer, or a
 * buffer of its own when an encoding is already under way (a finalizer
 * that stores while a value is being encoded). 0, or -1 with err. Free
 * with encoded_free. */
static int encode(lua_State *L, int idx, const char *root, encoded *e, char *err, size_t errlen)
{
    static int busy;
    memset(&e->own, 0, sizeof e->own);
    e->b = busy ? &e->own : &scratch;
    e->b->len = 0;
    busy++;
    int rc = lval_encode(L, idx, root, e->b, err, errlen);
    busy--;
    return rc;
}

static void encoded_free(encoded *e)
{
    free(e->own.p);
}

static uint64_t expiry(const handle *h, uint64_t ttl_ms)
{
    return ttl_ms ? now_ms(h) + ttl_ms : 0;
}

/* ---- get, take, store, fail (cache.lua's get) ------------------------------- */

static int l_get(lua_State *L)
{
    handle *h = check_handle(L, 2);
    store *s = h->s;
    size_t klen;
    const char *key = check_key(L, 2, s, 2, &klen);
    lru_item it;
    if (lru_get(s->entries, key, klen, now_ms(h), &it)) {
        lua_pushboolean(L, 1);
        return 1 + push_result(L, it.val, it.vlen, it.negative);
    }
    rt_fiber *f = fiber_of(L, h);
    if (!f) {
        s->loads++;
        lua_pushboolean(L, 0);
        lua_pushinteger(L, ST_DIRECT);
        return 2;
    }
    flight *fl = flight_find(s, key, klen);
    if (!fl) {
        if (!flight_new(s, key, klen, f))
            return cache_error(L, 2, s, "out of memory");
        s->loads++;
        lua_pushboolean(L, 0);
        lua_pushinteger(L, ST_LOAD);
        return 2;
    }
    for (rt_fiber *a = f; a; a = a->parent)
        if (a == fl->loader)
            return cache_error(L, 2, s, "get(%s) inside the loader of the same key would wait for itself", lua_tostring(L, 2));
    waiter *w = calloc(1, sizeof *w);
    if (!w)
        return cache_error(L, 2, s, "out of memory");
    w->f = f;
    w->fl = fl;
    w->state = W_PARKED;
    w->hook.fn = waiter_ended;
    w->prev = fl->tail;
    if (fl->tail)
        fl->tail->next = w;
    else
        fl->head = w;
    fl->tail = w;
    s->waiters++;
    s->waiting++;
    rt_hook_add(f, &w->hook);
    uint64_t ms = rt_wait_ms(f, 0);
    if (ms)
        uv_timer_start(&f->timer, waiter_timeout, ms, 0);
    lua_settop(L, 0);
    rt_park(f, waiter_cancel, w);
    return rt_yield(L, f);
}

static int l_take(lua_State *L)
{
    handle *h = check_handle(L, 2);
    rt_fiber *f = fiber_of(L, h);
    waiter *w = NULL;
    for (rt_hook *k = f ? f->hooks : NULL; k && !w; k = k->next)
        if (k->fn == waiter_ended)
            w = (waiter *)k;
    if (!w)
        return cache_error(L, 2, h->s, "nothing was waited for (internal error)");
    rt_hook_remove(f, &w->hook);
    if (w->state == W_HANDOFF) {
        flight *fl = w->fl;
        free(w);
        fl->heir = NULL;
        fl->loader = f;
        rt_hook_add(f, &fl->hook);
        fl->s->loads++;
        lua_pushboolean(L, 0);
        lua_pushinteger(L, ST_LOAD);
        return 2;
    }
    blob *b = w->res;
    free(w);
    lua_pushboolean(L, 1);
    /* The bytes into a Lua string first, so the blob goes whatever
     * decoding does. */
    lua_pushlstring(L, (const char *)b->bytes, b->len);
    int negative = b->negative;
    blob_unref(b);
    size_t n;
    const char *p = lua_tolstring(L, -1, &n);
    int at = lua_gettop(L);
    int nres = push_result(L, p, n, negative);
    lua_remove(L, at);
    return 1 + nres;
}

/* The current fiber's flight of key, or NULL (a direct load, or nothing). */
static flight *own_flight(lua_State *L, handle *h, const char *key, size_t klen)
{
    rt_fiber *f = fiber_of(L, h);
    flight *fl = f ? flight_find(h->s, key, klen) : NULL;
    return fl && fl->loader == f ? fl : NULL;
}

static int l_store(lua_State *L)
{
    handle *h = check_handle(L, 2);
    store *s = h->s;
    size_t klen;
    const char *key = check_key(L, 2, s, 2, &klen);
    flight *fl = own_flight(L, h, key, klen);
    int negative = lua_isnil(L, 3);
    char err[512];
    encoded e;
    int rc = 0;
    if (!negative)
        rc = encode(L, 3, "value", &e, err, sizeof err);
    else if (!lua_isnoneornil(L, 4))
        rc = encode(L, 4, "err", &e, err, sizeof err);
    else /* nil alone: no bytes */
        e = (encoded){ &e.own, { NULL, 0, 0 } };
    if (rc != 0) {
        /* The loader's result cannot be kept: the waiters hear why, the
         * loader's caller gets the error. */
        encoded_free(&e);
        s->load_errors++;
        lua_pushfstring(L, "the loader's result: %s", err);
        if (fl) {
            if (encode(L, lua_gettop(L), "err", &e, err, sizeof err) == 0)
                flight_done(fl, e.b->p, e.b->len, 1);
            else
                hand_off(fl);
            encoded_free(&e);
        }
        return cache_error(L, 2, s, "%s", lua_tostring(L, -1));
    }
    if (!negative)
        lru_set(s->entries, key, klen, e.b->p, e.b->len, 0, expiry(h, s->ttl_ms));
    else if (s->neg_ttl_ms)
        lru_set(s->entries, key, klen, e.b->p, e.b->len, 1, expiry(h, s->neg_ttl_ms));
    if (fl)
        flight_done(fl, e.b->p, e.b->len, negative);
    encoded_free(&e);
    return 0;
}

static int l_fail(lua_State *L)
{
    handle *h = check_handle(L, 2);
    store *s = h->s;
    size_t klen;
    const char *key = check_key(L, 2, s, 2, &klen);
    s->load_errors++;
    flight *fl = own_flight(L, h, key, klen);
    if (!fl)
        return 0;
    /* The error as a message string (what a waiter gets as err). */
    if (lua_type(L, 3) != LUA_TSTRING && lua_type(L, 3) != LUA_TNUMBER) {
        lua_pushfstring(L, "the loader raised an error object of type %s", luaL_typename(L, 3));
        lua_replace(L, 3);
    }
    lua_tostring(L, 3);
    char err[128];
    encoded e;
    if (encode(L, 3, "err", &e, err, sizeof err) == 0)
        flight_done(fl, e.b->p, e.b->len, 1);
    else
        hand_off(fl);
    encoded_free(&e);
    return 0;
}

/* ---- cache.new ---------------------------------------------------------------- */

typedef struct opts {
    const char *name;    /* NULL: unnamed */
    size_t size, max_bytes;
    double ttl, neg_ttl; /* seconds */
} opts;

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

static uint64_t to_ms(double secs)
{
    return (uint64_t)ceil(secs * 1000.0);
}

/* Read cache.new's table at 1 into *o (strings stay on L's stack). */
static void read_opts(lua_State *L, opts *o)
{
    memset(o, 0, sizeof *o);
    o->size = DEFAULT_SIZE;
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
            if (!o->name || n == 0 || n > MAX_NAME || strlen(o->name) != n)
                luaL_error(L, "cache.new: name: a string of 1 to %d bytes (no NUL) expected, got %s", MAX_NAME,
                           lua_type(L, v) == LUA_TSTRING ? "another string" : luaL_typename(L, v));
        } else if (k && strcmp(k, "size") == 0) {
            o->size = whole_number(L, v, "size", 1, MAX_SIZE);
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
static void apply(store *s, const opts *o, int say)
{
    uint64_t ttl_ms = to_ms(o->ttl), neg_ms = to_ms(o->neg_ttl);
    char line[512] = "";
    size_t at = 0; /* (each part is short: line never fills) */
    if (say && mod_log_level <= LOG_INFO) {
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
        fprintf(stderr, "moonwait: [info] cache \"%s\": new options from cache.new: %s%s; %llu entries evicted to "
                        "fit, %zu kept\n",
                s->name, line + 2, ttls ? " (a new ttl applies to entries stored from now on)" : "",
                (unsigned long long)evicted, after.entries);
    }
}

/* cache.new(opts): a handle on a new store, or (with a name) on the
 * process's store of that name. Raises on a bad option. */
static int l_new(lua_State *L)
{
    opts o;
    read_opts(L, &o);
    rt *r = rt_of(L);
    if (!r)
        return luaL_error(L, "cache.new: no moonwait runtime in this Lua state");
    handle *h = lua_newuserdata(L, sizeof *h);
    h->s = NULL;
    h->r = r;
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_setmetatable(L, -2);
    store *s = NULL;
    if (o.name)
        for (s = named; s && strcmp(s->name, o.name) != 0; s = s->next)
            ;
    if (s) {
        apply(s, &o, 1);
    } else {
        if (!(s = store_new(o.name)))
            return luaL_error(L, "cache.new: out of memory");
        apply(s, &o, 0);
        if (o.name) {
            s->next = named;
            named = s;
        }
    }
    h->s = s;
    return 1;
}

/* ---- the methods ---------------------------------------------------------------- */

/* c:set(key, value [, ttl]): stores a copy of value (not nil) for ttl
 * seconds (default: the cache's ttl; 0: never expires). true, or nil, err
 * ("too large": over max_bytes alone; "out of memory"). Raises on a bad
 * key, a nil value, a value that cannot be cached or a bad ttl. */
static int l_set(lua_State *L)
{
    handle *h = check_handle(L, 1);
    store *s = h->s;
    size_t klen;
    const char *key = check_key(L, 2, s, 1, &klen);
    if (lua_isnoneornil(L, 3))
        return cache_error(L, 1, s, "set: a value expected (to remove a key, use c:delete)");
    uint64_t ttl_ms = s->ttl_ms;
    if (!lua_isnoneornil(L, 4)) {
        double t = lua_type(L, 4) == LUA_TNUMBER ? lua_tonumber(L, 4) : NAN;
        if (!(t >= 0 && t <= 1e9))
            return cache_error(L, 1, s, "set: ttl: a number of seconds from 0 to 1e9 expected (0: never expires)");
        ttl_ms = to_ms(t);
    }
    char err[512];
    encoded e;
    if (encode(L, 3, "value", &e, err, sizeof err) != 0) {
        encoded_free(&e);
        return cache_error(L, 1, s, "set: %s", err);
    }
    int rc = lru_set(s->entries, key, klen, e.b->p, e.b->len, 0, expiry(h, ttl_ms));
    encoded_free(&e);
    if (rc != 0) {
        lua_pushnil(L);
        lua_pushstring(L, rc == -2 ? "too large" : "out of memory");
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* c:delete(key): true if an entry was there. A load in flight for the
 * key still stores its result when it ends. */
static int l_delete(lua_State *L)
{
    handle *h = check_handle(L, 1);
    size_t klen;
    const char *key = check_key(L, 2, h->s, 1, &klen);
    lua_pushboolean(L, lru_delete(h->s->entries, key, klen));
    return 1;
}

/* c:peek(key): what get would return on a hit, plus the seconds it has
 * left (math.huge: never expires), without loading, counting or changing
 * its place in the LRU order: value, nil, ttl | nil, err, ttl (a negative
 * entry); nothing (nil) when there is no live entry. */
static int l_peek(lua_State *L)
{
    handle *h = check_handle(L, 1);
    size_t klen;
    const char *key = check_key(L, 2, h->s, 1, &klen);
    lru_item it;
    uint64_t now = now_ms(h);
    if (!lru_peek(h->s->entries, key, klen, now, &it)) {
        lua_pushnil(L);
        return 1;
    }
    uint64_t exp = it.expires_ms;
    int n = push_result(L, it.val, it.vlen, it.negative);
    if (n == 1)
        lua_pushnil(L);
    lua_pushnumber(L, exp ? (double)(exp - now) / 1000.0 : HUGE_VAL);
    return 3;
}

/* c:purge(): drops every entry (counters stay; loads in flight go on). */
static int l_purge(lua_State *L)
{
    handle *h = check_handle(L, 1);
    lru_clear(h->s->entries);
    return 0;
}

static void set_num(lua_State *L, const char *k, double v)
{
    lua_pushnumber(L, v);
    lua_setfield(L, -2, k);
}

/* c:stats(): a table of the counters (since the store was made; a named
 * store's span generations) and the sizes now. */
static int l_stats(lua_State *L)
{
    handle *h = check_handle(L, 1);
    store *s = h->s;
    lru_stats st;
    lru_get_stats(s->entries, &st);
    lua_createtable(L, 0, 20);
    set_num(L, "hits", (double)st.hits);
    set_num(L, "misses", (double)st.misses);
    set_num(L, "loads", (double)s->loads);
    set_num(L, "load_errors", (double)s->load_errors);
    set_num(L, "evictions", (double)st.evictions);
    set_num(L, "expired", (double)st.expired);
    set_num(L, "waiters", (double)s->waiters);
    set_num(L, "waiting", (double)s->waiting);
    set_num(L, "handoffs", (double)s->handoffs);
    set_num(L, "abandoned", (double)s->abandoned);
    set_num(L, "entries", (double)st.entries);
    set_num(L, "bytes", (double)st.bytes);
    set_num(L, "size", (double)s->size);
    set_num(L, "max_bytes", (double)s->max_bytes);
    set_num(L, "ttl", (double)s->ttl_ms / 1000);
    set_num(L, "neg_ttl", (double)s->neg_ttl_ms / 1000);
    set_num(L, "loading", (double)s->nflights);
    if (s->name) {
        lua_pushstring(L, s->name);
        lua_setfield(L, -2, "name");
    }
    return 1;
}

static int l_gc(lua_State *L)
{
    handle *h = lua_touserdata(L, 1);
    store *s = h->s;
    h->s = NULL;
    if (!s || s->name)
        return 0; /* a named store lives until the process ends */
    if (s->nflights)
        s->orphan = 1; /* freed with its last flight */
    else
        store_free(s);
    return 0;
}

static int l_tostring(lua_State *L)
{
    handle *h = lua_touserdata(L, 1);
    if (h->s && h->s->name)
        lua_pushfstring(L, "moonwait.cache \"%s\": %p", h->s->name, (void *)h->s);
    else
        lua_pushfstring(L, "moonwait.cache: %p", (void *)h->s);
    return 1;
}

void script_cache_free_all(void)
{
    while (named) {
        store *s = named;
        named = s->next;
        store_free(s); /* (no flight is left: every VM has closed) */
    }
    free(scratch.p);
    scratch.p = NULL;
    scratch.len = scratch.cap = 0;
}

int mod_cache_open(lua_State *L)
{
    luaL_newmetatable(L, CACHE_MT);
    int mt = lua_gettop(L);
    lua_newtable(L);
    int methods = mt + 1;
    static const luaL_Reg meths[] = {
        { "set", l_set }, { "delete", l_delete }, { "peek", l_peek }, { "purge", l_purge }, { "stats", l_stats },
        { NULL, NULL },
    };
    for (const luaL_Reg *m = meths; m->name; m++) {
        lua_pushvalue(L, mt);
        lua_pushcclosure(L, m->func, 1);
        lua_setfield(L, methods, m->name);
    }
    lua_pushvalue(L, methods);
    lua_setfield(L, mt, "__index");
    lua_pushcfunction(L, l_gc);
    lua_setfield(L, mt, "__gc");
    lua_pushcfunction(L, l_tostring);
    lua_setfield(L, mt, "__tostring");
    lua_pushliteral(L, CACHE_MT);
    lua_setfield(L, mt, "__metatable");

    lua_createtable(L, 0, 10);
    static const luaL_Reg fns[] = {
        { "new", l_new }, { "get", l_get }, { "take", l_take }, { "store", l_store }, { "fail", l_fail },
        { NULL, NULL },
    };
    for (const luaL_Reg *m = fns; m->name; m++) {
        lua_pushvalue(L, mt);
        lua_pushcclosure(L, m->func, 1);
        lua_setfield(L, -2, m->name);
    }
    lua_pushvalue(L, methods);
    lua_setfield(L, -2, "methods");
    lua_pushinteger(L, ST_LOAD);
    lua_setfield(L, -2, "LOAD");
    lua_pushinteger(L, ST_DIRECT);
    lua_setfield(L, -2, "DIRECT");
    lua_pushinteger(L, ST_WAITED);
    lua_setfield(L, -2, "WAITED");
    return 1;
}
