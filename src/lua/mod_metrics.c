/*
 * mod_metrics.c: moonwait.metrics, a script's own Prometheus metrics
 * (README: "Metrics"), and the HTTP client's per-host metrics, both in one
 * process-wide registry (util/metrics.c) that the endpoint renders after
 * the run's own (src/app/expose.c, through script_metrics_render).
 *
 *   local m = require "moonwait.metrics"
 *   local hits = m.counter("geo_hits_total", "Lookups answered.", { "source" })
 *   hits:inc(1, { "cache" })
 *   local h = m.histogram("geo_seconds", "Lookup time.", nil, { 0.01, 0.1, 1 })
 *   h:observe(0.02)
 *
 * The registry outlives every generation, like named caches: a reload that
 * registers the same metric gets the same one, with its values; another
 * type, other labels or buckets is `nil, err`. A metric object is a
 * userdata holding its family's pointer, which stays valid until
 * script_metrics_free_all at exit.
 *
 * Errors: registration returns `nil, err`. The methods raise on misuse of
 * Lua types (a value that is not a number, label values not in a table
 * of strings or numbers) and return `nil, err` for what depends on the
 * values: a wrong number of label values, a negative counter increment,
 * a metric past its cap of label sets (SCRIPT_METRICS_MAX_SERIES: the
 * value is not counted). Success returns true. Nothing here yields.
 *
 * Threads (--workers N): the registry is one for the process, so every
 * worker's increments land in the same series and a scrape (on the main
 * thread) sums them by construction. Every touch of it (registering, a
 * series' lookup and its update, rendering, freeing) is under reg_mu; a
 * method reads its Lua arguments (which may raise) before taking it, so
 * the lock is never held across a Lua error, and holds it only for the
 * lookup and the update (no allocation once the series exists). The HTTP
 * client's last-host cache is per thread (`last`), checked against the
 * registry's epoch, so a thread never keeps series of a freed registry.
 */
#define _GNU_SOURCE
#include <lauxlib.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "../util/metrics.h"
#include "modules.h"
#include "script.h"

#define METRIC_MT "moonwait.metric"

static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static metrics *reg;       /* the scripts' and the HTTP client's; made on first use (reg_mu) */
static atomic_int http_on; /* --metrics is set: the HTTP client observes */
static metric *http_reqs, *http_secs; /* (reg_mu) */
static uint64_t epoch = 1; /* (reg_mu) counts registries: a thread's `last` names one */

/* The last host's series on this thread (a run talks to few hosts, often
 * one): found again without formatting or hashing its label values. Read
 * and filled under reg_mu (the series belong to the registry of `epoch`). */
static _Thread_local struct {
    uint64_t epoch;           /* the registry these series are of; 0: none */
    char host[300];           /* "host:port" */
    size_t len;
    int port;
    metric_series *secs, *code[6]; /* 1xx .. 5xx, error; NULL: not looked up yet */
} last;


/* (reg_mu held) */
static metrics *registry(void)
{
    if (!reg)
        reg = metrics_new(SCRIPT_METRICS_MAX_SERIES);
    return reg;
}

void script_metrics_enable(int on)
{
    atomic_store_explicit(&http_on, on, memory_order_relaxed);
}

int script_metrics_http_on(void)
{
    return atomic_load_explicit(&http_on, memory_order_relaxed);
}

int script_metrics_render(mw_buf *out)
{
    pthread_mutex_lock(&reg_mu);
    int rc = reg ? metrics_render(reg, out) : 0;
    pthread_mutex_unlock(&reg_mu);
    return rc;
}

/* At exit, after every worker thread ended (a metric object of a VM still
 * open would name a freed family). */
void script_metrics_free_all(void)
{
    pthread_mutex_lock(&reg_mu);
    metrics_free(reg);
    reg = NULL;
    http_reqs = http_secs = NULL;
    epoch++;
    pthread_mutex_unlock(&reg_mu);
    memset(&last, 0, sizeof last);
    atomic_store_explicit(&http_on, 0, memory_order_relaxed);
}

static metric_series *lookup(metric *f, size_t n, const char *code)
{
    char err[160];
    const char *v[2] = { last.host, code };
    size_t l[2] = { last.len, code ? strlen(code) : 0 };
    return metrics_series(f, n, v, l, err, sizeof err);
}

static void http_locked(const char *host, int port, int status, double secs);

void script_metrics_http(const char *host, int port, int status, double secs)
{
    if (!script_metrics_http_on())
        return;
    pthread_mutex_lock(&reg_mu);
    if (registry())
        http_locked(host, port, status, secs);
    pthread_mutex_unlock(&reg_mu);
}

/* (reg_mu held) */
static void http_locked(const char *host, int port, int status, double secs)
{
    char err[160];
    if (last.epoch != epoch)
        memset(&last, 0, sizeof last);
    last.epoch = epoch;
    if (!http_reqs) {
        static const char *const hc[] = { "host", "code" }, *const h[] = { "host" };
        http_reqs = metrics_family(reg, METRIC_COUNTER, "moonwait_http_client_requests_total",
                                   "HTTP requests of moonwait.http by host (host:port) and status class "
                                   "(2xx..5xx, or error: no response).",
                                   2, hc, 0, NULL, err, sizeof err);
        http_secs = metrics_family(reg, METRIC_HISTOGRAM, "moonwait_http_client_request_duration_seconds",
                                   "Time from a moonwait.http request's start to its response or error, by host.",
                                   1, h, 0, NULL, err, sizeof err);
        if (!http_reqs || !http_secs)
            return;
    }
    size_t hl = strlen(host);
    if (port != last.port || hl + 8 > sizeof last.host || last.len <= hl || last.host[hl] != ':' ||
        memcmp(last.host, host, hl) != 0) {
        memset(&last, 0, sizeof last);
        last.epoch = epoch;
        last.port = port;
        int n = snprintf(last.host, sizeof last.host, "%s:%d", host, port);
        last.len = n < 0 ? 0 : (size_t)n >= sizeof last.host ? sizeof last.host - 1 : (size_t)n;
    }
    static const char *const codes[] = { "1xx", "2xx", "3xx", "4xx", "5xx", "error" };
    int k = status >= 100 && status < 600 ? status / 100 - 1 : 5;
    if (!last.code[k])
        last.code[k] = lookup(http_reqs, 2, codes[k]);
    if (!last.secs)
        last.secs = lookup(http_secs, 1, NULL);
    if (last.code[k])
        metrics_add(last.code[k], 1);
    if (last.secs)
        metrics_observe(last.secs, secs);
}

/* ---- registering ------------------------------------------------------------------- */

/* metrics.counter/gauge/histogram(name, help, labels[, buckets]): pushes
 * the metric, or nil, err. */
static int define(lua_State *L, metric_type t)
{
    const char *name = luaL_checkstring(L, 1);
    const char *help = luaL_optstring(L, 2, "");
    const char *labels[METRICS_MAX_LABELS];
    double buckets[METRICS_MAX_BUCKETS];
    size_t nl = 0, nb = 0;
    if (!lua_isnoneornil(L, 3)) {
        luaL_checktype(L, 3, LUA_TTABLE);
        nl = lua_objlen(L, 3);
        if (nl > METRICS_MAX_LABELS) {
            lua_pushnil(L);
            lua_pushfstring(L, "metric '%s': at most %d labels", name, METRICS_MAX_LABELS);
            return 2;
        }
        for (size_t i = 0; i < nl; i++) {
            lua_rawgeti(L, 3, (int)i + 1);
            if (lua_type(L, -1) != LUA_TSTRING)
                return luaL_error(L, "metrics: label names must be strings (label %d)", (int)i + 1);
            labels[i] = lua_tostring(L, -1); /* (anchored by the table) */
            lua_pop(L, 1);
        }
    }
    if (t == METRIC_HISTOGRAM && !lua_isnoneornil(L, 4)) {
        luaL_checktype(L, 4, LUA_TTABLE);
        nb = lua_objlen(L, 4);
        if (nb > METRICS_MAX_BUCKETS || nb == 0) {
            lua_pushnil(L);
            lua_pushfstring(L, "metric '%s': from 1 to %d buckets", name, METRICS_MAX_BUCKETS);
            return 2;
        }
        for (size_t i = 0; i < nb; i++) {
            lua_rawgeti(L, 4, (int)i + 1);
            if (lua_type(L, -1) != LUA_TNUMBER)
                return luaL_error(L, "metrics: buckets must be numbers (bucket %d)", (int)i + 1);
            buckets[i] = lua_tonumber(L, -1);
            lua_pop(L, 1);
        }
    }
    char err[300];
    metric *f = NULL;
    pthread_mutex_lock(&reg_mu);
    if (strncmp(name, "moonwait_", 9) == 0)
        snprintf(err, sizeof err, "metric '%s': the prefix 'moonwait_' is the host's", name);
    else if (!registry())
        snprintf(err, sizeof err, "metric '%s': out of memory", name);
    else
        f = metrics_family(reg, t, name, help, nl, labels, nb, nb ? buckets : NULL, err, sizeof err);
    pthread_mutex_unlock(&reg_mu);
    if (!f) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    metric **u = lua_newuserdata(L, sizeof *u);
    *u = f;
    luaL_getmetatable(L, METRIC_MT);
    lua_setmetatable(L, -2);
    return 1;
}

static int l_counter(lua_State *L) { return define(L, METRIC_COUNTER); }
static int l_gauge(lua_State *L) { return define(L, METRIC_GAUGE); }
static int l_histogram(lua_State *L) { return define(L, METRIC_HISTOGRAM); }

/* ---- the methods ------------------------------------------------------------------- */

enum { OP_ADD, OP_SET, OP_OBSERVE };

/* Apply op with x to the series of the label values at index li (a table,
 * or none). Pushes true, or nil, err (a wrong count, the series cap). The
 * values are read first (a bad one raises), then the lookup and the update
 * are done under reg_mu. */
static int update(lua_State *L, metric *f, int li, int op, double x)
{
    const char *v[METRICS_MAX_LABELS];
    size_t lens[METRICS_MAX_LABELS], n = 0;
    if (!lua_isnoneornil(L, li)) {
        luaL_checktype(L, li, LUA_TTABLE);
        luaL_checkstack(L, METRICS_MAX_LABELS + 2, "metrics: label values");
        n = lua_objlen(L, li);
        if (n > METRICS_MAX_LABELS)
            n = METRICS_MAX_LABELS + 1; /* (refused below: no family has that many) */
        for (size_t i = 0; i < n && i < METRICS_MAX_LABELS; i++) {
            lua_rawgeti(L, li, (int)i + 1);
            int t = lua_type(L, -1);
            if (t != LUA_TSTRING && t != LUA_TNUMBER)
                luaL_error(L, "metrics: label values must be strings or numbers (value %d)", (int)i + 1);
            /* Left on the stack until the lookup is done (a number is
             * converted on this copy, not in the caller's table). */
            v[i] = lua_tolstring(L, -1, &lens[i]);
        }
    }
    char err[300];
    pthread_mutex_lock(&reg_mu);
    metric_series *s = metrics_series(f, n, v, lens, err, sizeof err);
    if (s && op == OP_ADD)
        metrics_add(s, x);
    else if (s && op == OP_SET)
        metrics_set(s, x);
    else if (s)
        metrics_observe(s, x);
    pthread_mutex_unlock(&reg_mu);
    if (!s) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

static metric *check_metric(lua_State *L)
{
    return *(metric **)luaL_checkudata(L, 1, METRIC_MT);
}

/* m:inc([n], [labelvalues]) on a counter or gauge; m:dec on a gauge. */
static int add(lua_State *L, double sign)
{
    metric *f = check_metric(L);
    double n = luaL_optnumber(L, 2, 1) * sign;
    if (metrics_type(f) == METRIC_HISTOGRAM)
        return luaL_error(L, "metrics: '%s' is a histogram: use observe", metrics_name(f));
    if (metrics_type(f) == METRIC_COUNTER && sign < 0)
        return luaL_error(L, "metrics: '%s' is a counter: it has no dec", metrics_name(f));
    if (metrics_type(f) == METRIC_COUNTER && !(n >= 0)) {
        lua_pushnil(L);
        lua_pushfstring(L, "metric '%s' is a counter: it only goes up (got %f)", metrics_name(f), n);
        return 2;
    }
    return update(L, f, 3, OP_ADD, n);
}

static int l_inc(lua_State *L) { return add(L, 1); }
static int l_dec(lua_State *L) { return add(L, -1); }

static int l_set(lua_State *L)
{
    metric *f = check_metric(L);
    double v = luaL_checknumber(L, 2);
    if (metrics_type(f) != METRIC_GAUGE)
        return luaL_error(L, "metrics: '%s' is not a gauge: it has no set", metrics_name(f));
    return update(L, f, 3, OP_SET, v);
}

static int l_observe(lua_State *L)
{
    metric *f = check_metric(L);
    double v = luaL_checknumber(L, 2);
    if (metrics_type(f) != METRIC_HISTOGRAM)
        return luaL_error(L, "metrics: '%s' is not a histogram: it has no observe", metrics_name(f));
    return update(L, f, 3, OP_OBSERVE, v);
}

static int l_tostring(lua_State *L)
{
    metric *f = check_metric(L);
    static const char *const types[] = { "counter", "gauge", "histogram" };
    lua_pushfstring(L, "moonwait.metrics.%s(%s)", types[metrics_type(f)], metrics_name(f));
    return 1;
}

int mod_metrics_open(lua_State *L)
{
    static const luaL_Reg methods[] = { { "inc", l_inc },         { "dec", l_dec }, { "set", l_set },
                                        { "observe", l_observe }, { NULL, NULL } };
    luaL_newmetatable(L, METRIC_MT);
    lua_newtable(L);
    luaL_register(L, NULL, methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
    static const luaL_Reg fns[] = { { "counter", l_counter }, { "gauge", l_gauge }, { "histogram", l_histogram },
                                    { NULL, NULL } };
    lua_newtable(L);
    luaL_register(L, NULL, fns);
    return 1;
}
