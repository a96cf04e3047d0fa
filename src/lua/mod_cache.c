/*
 * mod_cache.c: moonwait._cache, the Lua binding of moonwait.cache (the
 * public module is lua/moonwait/cache.lua, which adds c:get on these
 * pieces). Arguments, errors and results here; the stores are
 * cache_store.c's, the single flight cache_flight.c's, the values' bytes
 * cache_value.c's (cache_int.h says who does what).
 *
 * cache.lua's c:get drives a load through four calls:
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
#include <lauxlib.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>

#include "cache_int.h"
#include "modules.h"

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

static uint64_t expiry(const handle *h, uint64_t ttl_ms)
{
    return ttl_ms ? now_ms(h) + ttl_ms : 0;
}

/* An unnamed store's memory is freed by its handle's __gc, but the Lua GC
 * does not see it (the handle is 16 bytes): a script that made a cache per
 * record, each holding a big value, grew by gigabytes before a cycle ran.
 * So what an unnamed store takes on is reported to the GC as if Lua had
 * allocated it (a GC step of that size), every 64 KiB. Run last: the step
 * may run finalizers. */
static void gc_account(lua_State *L, const store *s, size_t bytes)
{
    static _Thread_local size_t unreported; /* (any of this thread's VMs may do the step) */
    if (s->name)
        return;
    unreported += bytes;
    if (unreported < 65536)
        return;
    int kb = unreported >> 10 > INT_MAX ? INT_MAX : (int)(unreported >> 10);
    unreported = 0;
    if (lua_gc(L, LUA_GCISRUNNING, 0)) /* (a step would restart a stopped GC) */
        lua_gc(L, LUA_GCSTEP, kb);
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
        return 1 + cache_value_push(L, it.val, it.vlen, it.negative);
    }
    rt_fiber *f = fiber_of(L, h);
    if (!f) {
        s->loads++;
        lua_pushboolean(L, 0);
        lua_pushinteger(L, ST_DIRECT);
        return 2;
    }
    flight *fl = cache_flight_find(s, key, klen);
    if (!fl) {
        if (!cache_flight_new(s, key, klen, f))
            return cache_error(L, 2, s, "out of memory");
        s->loads++;
        lua_pushboolean(L, 0);
        lua_pushinteger(L, ST_LOAD);
        return 2;
    }
    for (rt_fiber *a = f; a; a = a->parent)
        if (a == fl->loader)
            return cache_error(L, 2, s, "get(%s) inside the loader of the same key would wait for itself", lua_tostring(L, 2));
    if (cache_flight_wait(fl, f) != 0)
        return cache_error(L, 2, s, "out of memory");
    lua_settop(L, 0);
    return rt_yield(L, f);
}

static int l_take(lua_State *L)
{
    handle *h = check_handle(L, 2);
    blob *b = NULL;
    int got = cache_flight_take(fiber_of(L, h), &b);
    if (got < 0)
        return cache_error(L, 2, h->s, "nothing was waited for (internal error)");
    if (got == 0) { /* handed the load: this fiber loads now */
        lua_pushboolean(L, 0);
        lua_pushinteger(L, ST_LOAD);
        return 2;
    }
    lua_pushboolean(L, 1);
    /* The bytes into a Lua string first, so the blob goes whatever
     * decoding does. */
    lua_pushlstring(L, (const char *)b->bytes, b->len);
    int negative = b->negative;
    cache_flight_unref(b);
    size_t n;
    const char *p = lua_tolstring(L, -1, &n);
    int at = lua_gettop(L);
    int nres = cache_value_push(L, p, n, negative);
    lua_remove(L, at);
    return 1 + nres;
}

/* The current fiber's flight of key, or NULL (a direct load, or nothing). */
static flight *own_flight(lua_State *L, handle *h, const char *key, size_t klen)
{
    rt_fiber *f = fiber_of(L, h);
    flight *fl = f ? cache_flight_find(h->s, key, klen) : NULL;
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
    cache_encoded e;
    int rc = 0;
    if (!negative)
        rc = cache_value_encode(L, 3, "value", &e, err, sizeof err);
    else if (!lua_isnoneornil(L, 4))
        rc = cache_value_encode(L, 4, "err", &e, err, sizeof err);
    else /* nil alone: no bytes */
        cache_value_none(&e);
    if (rc != 0) {
        /* The loader's result cannot be kept: the waiters hear why, the
         * loader's caller gets the error. */
        cache_value_encoded_free(&e);
        s->load_errors++;
        lua_pushfstring(L, "the loader's result: %s", err);
        if (fl) {
            if (cache_value_encode(L, lua_gettop(L), "err", &e, err, sizeof err) == 0)
                cache_flight_done(fl, e.b->p, e.b->len, 1);
            else
                cache_flight_hand_off(fl);
            cache_value_encoded_free(&e);
        }
        return cache_error(L, 2, s, "%s", lua_tostring(L, -1));
    }
    if (!negative)
        lru_set(s->entries, key, klen, e.b->p, e.b->len, 0, expiry(h, s->ttl_ms));
    else if (s->neg_ttl_ms)
        lru_set(s->entries, key, klen, e.b->p, e.b->len, 1, expiry(h, s->neg_ttl_ms));
    if (fl)
        cache_flight_done(fl, e.b->p, e.b->len, negative);
    size_t cost = lru_entry_cost(klen, e.b->len);
    cache_value_encoded_free(&e);
    gc_account(L, s, cost);
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
    cache_encoded e;
    if (cache_value_encode(L, 3, "err", &e, err, sizeof err) == 0)
        cache_flight_done(fl, e.b->p, e.b->len, 1);
    else
        cache_flight_hand_off(fl);
    cache_value_encoded_free(&e);
    return 0;
}

/* ---- cache.new ---------------------------------------------------------------- */

/* cache.new(opts): a handle on a new store, or (with a name) on the
 * process's store of that name. Raises on a bad option. */
static int l_new(lua_State *L)
{
    cache_opts o;
    cache_store_read_opts(L, &o);
    rt *r = rt_of(L);
    if (!r)
        return luaL_error(L, "cache.new: no moonwait runtime in this Lua state");
    handle *h = lua_newuserdata(L, sizeof *h);
    h->s = NULL;
    h->r = r;
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_setmetatable(L, -2);
    store *s = cache_store_open(&o);
    if (!s)
        return luaL_error(L, "cache.new: out of memory");
    h->s = s;
    gc_account(L, s, sizeof *s + 1024); /* (its two maps: about 1 KiB) */
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
        ttl_ms = cache_store_ms(t);
    }
    char err[512];
    cache_encoded e;
    if (cache_value_encode(L, 3, "value", &e, err, sizeof err) != 0) {
        cache_value_encoded_free(&e);
        return cache_error(L, 1, s, "set: %s", err);
    }
    int rc = lru_set(s->entries, key, klen, e.b->p, e.b->len, 0, expiry(h, ttl_ms));
    size_t cost = lru_entry_cost(klen, e.b->len);
    cache_value_encoded_free(&e);
    if (rc != 0) {
        lua_pushnil(L);
        lua_pushstring(L, rc == -2 ? "too large" : "out of memory");
        return 2;
    }
    gc_account(L, s, cost);
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
    int n = cache_value_push(L, it.val, it.vlen, it.negative);
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
    cache_store_release(s);
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
