/*
 * mod_limit.c: moonwait.limit, a rate limiter a script holds for one
 * service among several (README: "Rate limits").
 *
 *   local lim = moonwait.limit.new{ name = "geo", rps = 50, burst = 5 }
 *   local ok, err = lim:take()      -- or lim:take(n)
 *
 * Each limiter is a token bucket (util/tbucket.c) on uv_hrtime. take()
 * takes its tokens at once when they are there; otherwise it reserves them
 * (the bucket goes into debt, so waiters are served in the order they
 * came) and parks the fiber on its own timer until they are covered. The
 * wait is charged to the record's budget (the record has started): when
 * the tokens cannot be there before the record's deadline, take() returns
 * nil, err at once instead of sleeping into a timeout, and reserves
 * nothing. A fiber abandoned while it waits (its record timed out, killed,
 * a parent's kill, the VM closing) gives its reservation back through the
 * cancel hook, so the tokens go to the next waiter.
 *
 * Named limiters are process-wide, like named caches: limit.new{name=...}
 * in a later generation gets the same bucket (the newest options win) and
 * it lives until the process ends (script_limit_free_all). An unnamed one
 * belongs to its handle and to the takes waiting on it: __gc frees it
 * unless a take still waits, and then the last waiter does. A parked
 * take() cannot count on its handle staying reachable: in
 * `return lim:take()` (a tail call) nothing but the yielded C frame holds
 * it, and the collector may take it while the take waits.
 *
 * Threads (--workers N): a named limiter is one for the process, so 100
 * rps stays 100 rps across every worker. Its bucket arithmetic (take,
 * reserve, give back, new options, stats) and the registry are under
 * lim_mu, with the clock read inside it (tbucket wants its times in
 * order); nothing that may raise runs under it. The wait is on the
 * caller's own fiber timer, on its own loop, outside the lock. An unnamed
 * limiter belongs to one VM, hence one thread, but takes the same lock
 * (one code path; uncontended it costs a few ns).
 */
#define _GNU_SOURCE
#include <lauxlib.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../util/tbucket.h"
#include "modules.h"
#include "runtime.h"
#include "script.h"

#define LIMIT_MT "moonwait.limit"
#define RATE_MAX 10000000.0

typedef struct limiter {
    char *name;            /* NULL: unnamed */
    tbucket b;
    struct limiter *next;  /* the registry of named ones */
    unsigned waiters;      /* takes parked on it (each holds it) */
    int orphaned;          /* unnamed and its handle collected: the last waiter frees it */
} limiter;

typedef struct handle {
    limiter *l;
    int owned;             /* unnamed: freed with the handle */
} handle;

/* One fiber's reservation while it waits (f->wait). */
typedef struct reservation {
    limiter *l;
    double n;
    uint64_t at_ns;        /* uv_hrtime when the tokens are covered */
} reservation;

static pthread_mutex_t lim_mu = PTHREAD_MUTEX_INITIALIZER;
static limiter *named; /* every named limiter, newest first (lim_mu) */

static void limiter_free(limiter *l)
{
    free(l->name);
    free(l);
}

/* At exit, after every worker thread ended. */
void script_limit_free_all(void)
{
    pthread_mutex_lock(&lim_mu);
    while (named) {
        limiter *l = named;
        named = l->next;
        limiter_free(l);
    }
    pthread_mutex_unlock(&lim_mu);
}

/* ---- limit.new ----------------------------------------------------------------- */

/* The value at idx for an error message: a number as it is, a string
 * quoted, else its type. Pushed on L (so it lives as long as the error). */
static const char *shown(lua_State *L, int idx)
{
    char b[64];
    if (lua_type(L, idx) == LUA_TNUMBER) {
        snprintf(b, sizeof b, "%.17g", lua_tonumber(L, idx));
        return lua_pushstring(L, b), lua_tostring(L, -1);
    }
    if (lua_type(L, idx) == LUA_TSTRING)
        return lua_pushfstring(L, "'%s'", lua_tostring(L, idx));
    return luaL_typename(L, idx);
}

/* Field `k` of the options table at 1 as a number in [lo, hi] (integral
 * when `whole`), or `dflt` when absent. Raises naming the field. */
static double opt_number(lua_State *L, const char *k, double lo, double hi, int whole, double dflt)
{
    lua_getfield(L, 1, k);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return dflt;
    }
    double v = lua_tonumber(L, -1);
    if (lua_type(L, -1) != LUA_TNUMBER || !(v >= lo && v <= hi) || (whole && v != floor(v))) {
        if (whole)
            luaL_error(L, "moonwait.limit.new: '%s' must be an integer from %.0f to %.0f, got %s", k, lo, hi,
                       shown(L, -1));
        luaL_error(L, "moonwait.limit.new: '%s' must be a number above 0 and at most %.0f, got %s", k, hi,
                   shown(L, -1));
    }
    lua_pop(L, 1);
    return v;
}

/* limit.new{ name = "geo", rps = 50, burst = 5 }: pushes a limiter.
 * rps is required (fractional allowed); burst defaults to 10 ms worth of
 * tokens, at least 1 (as --rate-limit's). A name makes it shared by every
 * generation; the newest options win. Raises on a bad argument, naming it. */
static int l_new(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_pushnil(L);
    while (lua_next(L, 1)) {
        const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
        if (!k || (strcmp(k, "name") && strcmp(k, "rps") && strcmp(k, "burst")))
            return luaL_error(L, "moonwait.limit.new: unknown option '%s' (known: name, rps, burst)",
                              k ? k : luaL_typename(L, -2));
        lua_pop(L, 1);
    }
    lua_getfield(L, 1, "rps");
    if (lua_isnil(L, -1))
        return luaL_error(L, "moonwait.limit.new: 'rps' is required (tokens per second)");
    lua_pop(L, 1);
    /* (a tiny positive lower bound: rps > 0) */
    double rps = opt_number(L, "rps", 1e-300, RATE_MAX, 0, 0);
    double dflt = ceil(rps / 100) < 1 ? 1 : ceil(rps / 100);
    double burst = opt_number(L, "burst", 1, RATE_MAX, 1, dflt);
    lua_getfield(L, 1, "name");
    const char *name = NULL;
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TSTRING || lua_objlen(L, -1) == 0)
            return luaL_error(L, "moonwait.limit.new: 'name' must be a non-empty string, got %s",
                              luaL_typename(L, -1));
        name = lua_tostring(L, -1);
    }
    handle *h = lua_newuserdata(L, sizeof *h);
    h->l = NULL;
    h->owned = 0;
    luaL_getmetatable(L, LIMIT_MT);
    lua_setmetatable(L, -2);
    limiter *l = NULL;
    pthread_mutex_lock(&lim_mu);
    uint64_t now = uv_hrtime();
    if (name)
        for (l = named; l && strcmp(l->name, name) != 0; l = l->next)
            ;
    if (l) {
        tbucket_set(&l->b, rps, burst, now);
    } else {
        if (!(l = calloc(1, sizeof *l)) || (name && !(l->name = strdup(name)))) {
            pthread_mutex_unlock(&lim_mu);
            free(l);
            return luaL_error(L, "moonwait.limit.new: out of memory");
        }
        tbucket_init(&l->b, rps, burst, now);
        if (name) {
            l->next = named;
            named = l;
        }
    }
    pthread_mutex_unlock(&lim_mu);
    h->l = l;
    h->owned = name == NULL;
    return 1;
}

/* ---- lim:take -------------------------------------------------------------------- */

/* A waiter lets go of its limiter: an orphaned one goes with its last.
 * (lim_mu held) */
static void unhold(limiter *l)
{
    if (--l->waiters == 0 && l->orphaned)
        limiter_free(l);
}

static void take_cancel(rt_fiber *f)
{
    reservation *rv = f->wait;
    rt_timer_stop(&f->timer);
    pthread_mutex_lock(&lim_mu);
    tbucket_give(&rv->l->b, rv->n, uv_hrtime());
    unhold(rv->l);
    pthread_mutex_unlock(&lim_mu);
    free(rv);
    f->wait = NULL;
}

/* Whole ms, rounded up, at least 1. */
static uint64_t ms_up(uint64_t ns)
{
    uint64_t ms = ns / 1000000 + (ns % 1000000 != 0);
    return ms ? ms : 1;
}

static void take_done(rt_timer *t)
{
    rt_fiber *f = t->data;
    reservation *rv = f->wait;
    /* A timer of whole ms on a loop clock read at the start of the turn may
     * fire up to a ms before the tokens are there: wait the rest. */
    uint64_t now = uv_hrtime();
    if (now < rv->at_ns) {
        rt_timer_start(&f->timer, take_done, ms_up(rv->at_ns - now));
        return;
    }
    pthread_mutex_lock(&lim_mu);
    unhold(rv->l);
    pthread_mutex_unlock(&lim_mu);
    free(f->wait);
    f->wait = NULL;
    lua_pushboolean(f->co, 1);
    rt_wake(f, 1);
}

static const char *label(const limiter *l)
{
    return l->name ? l->name : "(unnamed)";
}

/* lim:take([n]): n tokens (default 1, an integer from 1 to the burst).
 * Pushes true at once when they are there, or yields until they are;
 * pushes nil, err at once when they cannot come before the record's
 * deadline. Raises on a bad n, or when it must wait where it cannot
 * yield. */
static int l_take(lua_State *L)
{
    handle *h = luaL_checkudata(L, 1, LIMIT_MT);
    limiter *l = h->l;
    double n = luaL_optnumber(L, 2, 1);
    pthread_mutex_lock(&lim_mu);
    double burst = l->b.burst;
    uint64_t now = uv_hrtime();
    uint64_t wait_ns = n >= 1 && n <= burst ? tbucket_wait_ns(&l->b, n, now) : 1;
    if (wait_ns == 0 && n == floor(n)) {
        tbucket_reserve(&l->b, n, now);
        pthread_mutex_unlock(&lim_mu);
        lua_pushboolean(L, 1);
        return 1;
    }
    pthread_mutex_unlock(&lim_mu);
    /* It must wait (or n is bad): what may raise, outside the lock. */
    if (!(n >= 1 && n <= burst) || n != floor(n))
        return luaL_error(L, "bad argument #1 to 'take' (n: expected an integer from 1 to the burst, %.0f, got %s)",
                          burst, shown(L, 2));
    rt_fiber *f = rt_check_yieldable(L, "lim:take");
    reservation *rv = malloc(sizeof *rv);
    if (!rv)
        return luaL_error(L, "lim:take: out of memory");
    /* Again under the lock: another thread may have taken or given back
     * tokens meanwhile. */
    pthread_mutex_lock(&lim_mu);
    now = uv_hrtime();
    wait_ns = tbucket_wait_ns(&l->b, n, now);
    uint64_t covered = 0;
    int late = wait_ns && f->deadline_ms && uv_now(f->rt->loop) + ms_up(wait_ns) >= f->deadline_ms;
    if (!late) {
        covered = tbucket_reserve(&l->b, n, now);
        if (wait_ns)
            l->waiters++;
    }
    pthread_mutex_unlock(&lim_mu);
    if (late || !wait_ns) {
        free(rv);
        if (!late) {
            lua_pushboolean(L, 1);
            return 1;
        }
        lua_pushnil(L);
        lua_pushfstring(L, "rate limit '%s': no token before the record's deadline", label(l));
        return 2;
    }
    rv->l = l;
    rv->n = n;
    rv->at_ns = now + covered;
    rt_timer_start(&f->timer, take_done, ms_up(covered));
    rt_park(f, take_cancel, rv);
    return rt_yield(L, f);
}

/* lim:stats(): pushes { name =, rps =, burst =, tokens =, taken =, waits = }
 * (tokens: the balance now, negative while waiters hold reservations). */
static int l_stats(lua_State *L)
{
    handle *h = luaL_checkudata(L, 1, LIMIT_MT);
    limiter *l = h->l;
    pthread_mutex_lock(&lim_mu);
    double tokens = tbucket_tokens(&l->b, uv_hrtime());
    tbucket b = l->b;
    pthread_mutex_unlock(&lim_mu);
    lua_createtable(L, 0, 6);
    if (l->name) {
        lua_pushstring(L, l->name);
        lua_setfield(L, -2, "name");
    }
    lua_pushnumber(L, b.rate);
    lua_setfield(L, -2, "rps");
    lua_pushnumber(L, b.burst);
    lua_setfield(L, -2, "burst");
    lua_pushnumber(L, tokens);
    lua_setfield(L, -2, "tokens");
    lua_pushnumber(L, (lua_Number)b.taken);
    lua_setfield(L, -2, "taken");
    lua_pushnumber(L, (lua_Number)b.waits);
    lua_setfield(L, -2, "waits");
    return 1;
}

static int l_gc(lua_State *L)
{
    handle *h = luaL_checkudata(L, 1, LIMIT_MT);
    if (h->owned && h->l) {
        pthread_mutex_lock(&lim_mu);
        int waited = h->l->waiters != 0;
        if (waited)
            h->l->orphaned = 1;
        pthread_mutex_unlock(&lim_mu);
        if (!waited)
            limiter_free(h->l);
    }
    h->l = NULL;
    return 0;
}

static int l_tostring(lua_State *L)
{
    handle *h = luaL_checkudata(L, 1, LIMIT_MT);
    pthread_mutex_lock(&lim_mu);
    tbucket b = h->l->b;
    pthread_mutex_unlock(&lim_mu);
    lua_pushfstring(L, "moonwait.limit '%s' (%f/s, burst %d)", label(h->l), b.rate, (int)b.burst);
    return 1;
}

int mod_limit_open(lua_State *L)
{
    static const luaL_Reg methods[] = { { "take", l_take }, { "stats", l_stats }, { NULL, NULL } };
    luaL_newmetatable(L, LIMIT_MT);
    lua_newtable(L);
    luaL_register(L, NULL, methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, l_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushcfunction(L, l_new);
    lua_setfield(L, -2, "new");
    return 1;
}
