/*
 * mod_http.c: moonwait.http, the Lua binding of the HTTP/1.1 client in
 * net/http.c: it checks the arguments, turns the options table into the
 * request, parks the calling fiber while the request runs (the fiber's
 * timer bounds it), and builds the response table. The protocol (URLs,
 * the request's bytes, the pool, the retry of a stale connection, the
 * response's caps) is net/http.c's, without Lua.
 *
 *   res, err = http.request(url, opts)   opts: method, headers, body,
 *       timeout_ms (whole request; default 60000, and never past the
 *       record's deadline), keepalive (default true), pool_size (1024),
 *       max_body (16 MiB), max_header_bytes (64 KiB), max_headers (100),
 *       ssl_verify (default true), ca_file
 *   http.get(url, opts), http.post(url, body, opts)
 *   res.status, res.headers (lower-case keys; lookups are case-insensitive),
 *   res.body
 *   Each yields the calling fiber until the response, a failure or the
 *   timeout; res is pushed, or nil, err.
 *
 * A non-2xx status is a response. Transport failures return nil, err
 * (net/http.h lists them), "timeout", or "bad url", each followed by
 * " (METHOD URL)" (net/where.h: a password as ***, at most 256 bytes of
 * the URL). Misuse (bad argument types, CR/LF in a header) raises.
 *
 * Ownership: the request (http_req) is the waiting fiber's: its cancel
 * hook (the record timed out or was abandoned) and the timer free it;
 * otherwise net/http.c releases it after the done callback. res.headers
 * is built on first access from the raw header block, which waits until
 * then in a weak table keyed by res.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../net/http.h"
#include "modules.h"
#include "runtime.h"
#include "script.h"

#define DEFAULT_TIMEOUT_MS 60000

#define HDR_MT "moonwait.http.headers"
#define RES_MT "moonwait.http.response"

/* Registry key (by address: a pointer hashes faster than a name) of the
 * VM's table of what every response needs, at these indices (array part:
 * one lookup each). Constant: no per-process state. */
static const char state_key;
enum { ST_RES_MT = 1, ST_RAW, ST_STATUS, ST_BODY };

/* Turn a "name\0value\0..." block (a string at index -1 of L) into the
 * headers table, replacing it. Repeated names are joined with ", " (RFC 9110). */
static void build_headers(lua_State *L)
{
    size_t len;
    const char *raw = lua_tolstring(L, -1, &len);
    lua_newtable(L);
    for (size_t i = 0; i < len;) {
        const char *name = raw + i;
        size_t nl = strlen(name);
        const char *val = name + nl + 1;
        size_t vl = strlen(val);
        i += nl + vl + 2;
        lua_pushlstring(L, name, nl);
        lua_rawget(L, -2);
        if (lua_isnil(L, -1)) {
            lua_pop(L, 1);
            lua_pushlstring(L, name, nl);
            lua_pushlstring(L, val, vl);
        } else {
            lua_pushlstring(L, name, nl);
            lua_insert(L, -2);
            lua_pushliteral(L, ", ");
            lua_pushlstring(L, val, vl);
            lua_concat(L, 3);
        }
        lua_rawset(L, -3);
    }
    luaL_getmetatable(L, HDR_MT);
    lua_setmetatable(L, -2);
    lua_remove(L, -2);
}

/* res.__index: builds res.headers on first access. */
static int l_res_index(lua_State *L)
{
    size_t kl;
    const char *k = lua_type(L, 2) == LUA_TSTRING ? lua_tolstring(L, 2, &kl) : NULL;
    if (!k || kl != 7 || memcmp(k, "headers", 7) != 0)
        return 0;
    lua_pushlightuserdata(L, (void *)&state_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    lua_rawgeti(L, -1, ST_RAW);
    lua_remove(L, -2);
    lua_pushvalue(L, 1);
    lua_rawget(L, -2);
    if (lua_type(L, -1) != LUA_TSTRING) {
        lua_pushnil(L);
        return 1;
    }
    build_headers(L);
    lua_pushvalue(L, 1);
    lua_pushnil(L);
    lua_rawset(L, -4); /* raw[res] = nil */
    lua_pushliteral(L, "headers");
    lua_pushvalue(L, -2);
    lua_rawset(L, 1);  /* res.headers = headers: later reads are plain */
    return 1;
}

/* ---- the waiting fiber ------------------------------------------------------------ */

/* Push res = { status, headers, body } on co. */
static void push_response(lua_State *co, const http_resp *resp)
{
    /* What every response needs, from one registry lookup (see
     * mod_http_open): the keys as strings already made (lua_setfield
     * hashes and interns its name per call), the metatable, the weak table. */
    lua_pushlightuserdata(co, (void *)&state_key);
    lua_rawget(co, LUA_REGISTRYINDEX);
    int st = lua_gettop(co);
    lua_createtable(co, 0, 3);
    lua_rawgeti(co, st, ST_STATUS);
    lua_pushinteger(co, resp->status);
    lua_rawset(co, -3);
    lua_rawgeti(co, st, ST_BODY);
    lua_pushlstring(co, resp->body.p ? resp->body.p : "", resp->body.len);
    lua_rawset(co, -3);
    lua_rawgeti(co, st, ST_RES_MT);
    lua_setmetatable(co, -2);
    /* res.headers is built on first access (most lookups never read it):
     * until then the raw block waits in a weak table keyed by res, as a
     * string: cheaper than a userdata (LuaJIT hashes a long string
     * sparsely, and the responses of one server within a second often
     * have the same block, so most are found, not made). */
    lua_rawgeti(co, st, ST_RAW);
    lua_pushvalue(co, -2);
    lua_pushlstring(co, resp->hdrs.p ? resp->hdrs.p : "", resp->hdrs.len);
    lua_rawset(co, -3);
    lua_pop(co, 1);
    lua_remove(co, st);
}

/* --metrics: the request's host, status class (0: no response) and time. */
static void observe(const http_req *r, int status)
{
    if (r->started_ns)
        script_metrics_http(r->host, r->port, status, (double)(uv_hrtime() - r->started_ns) / 1e9);
}

static void wake_err(rt_fiber *f, const char *err)
{
    rt_timer_stop(&f->timer);
    lua_pushnil(f->co);
    lua_pushstring(f->co, err);
    rt_wake(f, 2);
}

/* The request ended (net/http.c frees it after this returns). */
static void on_done(http_req *r, const char *err, void *ud)
{
    rt_fiber *f = ud;
    observe(r, err ? 0 : r->resp.status);
    if (err) {
        wake_err(f, err);
        return;
    }
    rt_timer_stop(&f->timer);
    /* The service says it is overloaded: the record's attempt reports it
     * (adaptive capacity); the script still gets the response. */
    if (r->resp.status == 429 || r->resp.status == 503)
        rt_overload(f);
    push_response(f->co, &r->resp);
    rt_wake(f, 1);
}

/* The record timed out: cancel everything; the connection is closed. */
static void on_cancel(rt_fiber *f)
{
    rt_timer_stop(&f->timer);
    observe(f->wait, 0);
    http_req_free(f->wait);
}

static void on_timer(rt_timer *t)
{
    rt_fiber *f = t->data;
    http_req *r = f->wait;
    if (!r)
        return;
    char msg[sizeof r->failbuf];
    snprintf(msg, sizeof msg, "%s", http_req_error(r, "timeout"));
    observe(r, 0);
    http_req_free(r);
    wake_err(f, msg);
}

/* ---- the request from Lua's arguments ----------------------------------------------- */

static lua_Integer opt_int(lua_State *L, int o, const char *name, lua_Integer dflt, lua_Integer min)
{
    if (!o)
        return dflt;
    lua_getfield(L, o, name);
    lua_Integer v = dflt;
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TNUMBER)
            luaL_error(L, "http: option '%s' must be a number", name);
        v = lua_tointeger(L, -1);
        if (v < min)
            luaL_error(L, "http: option '%s' must be >= %d", name, (int)min);
    }
    lua_pop(L, 1);
    return v;
}

static int opt_bool(lua_State *L, int o, const char *name, int dflt)
{
    if (!o)
        return dflt;
    lua_getfield(L, o, name);
    int v = lua_isnil(L, -1) ? dflt : lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

/* nil, "bad url (METHOD URL)": the URL as net/where.h shows a refused one
 * (a NUL as %00, a password as *** even when its '/' ended the authority
 * early, at most 256 bytes). */
static int bad_url(lua_State *L, const char *method, const char *url, size_t len)
{
    char where[NET_WHERE_MAX];
    net_where_refused(where, sizeof where, method, url, len);
    lua_pushnil(L);
    lua_pushfstring(L, "bad url (%s)", where);
    return 2;
}

/* A string option that C reads as a C string: a NUL inside would cut it. */
static const char *opt_cstring(lua_State *L, int idx, const char *what)
{
    size_t n;
    const char *s = luaL_checklstring(L, idx, &n);
    if (memchr(s, '\0', n))
        luaL_error(L, "http: %s contains a NUL byte", what);
    return s;
}

/* Raise on a malformed headers option (before anything is allocated, so a
 * raise leaks nothing). */
static void check_headers(lua_State *L, int o)
{
    lua_getfield(L, o, "headers");
    if (!lua_isnil(L, -1)) {
        luaL_checktype(L, -1, LUA_TTABLE);
        int t = lua_gettop(L);
        lua_pushnil(L);
        while (lua_next(L, t)) {
            if (lua_type(L, -2) != LUA_TSTRING || !lua_isstring(L, -1))
                luaL_error(L, "http: headers must map names to strings");
            size_t nl, vl;
            const char *n = lua_tolstring(L, -2, &nl);
            const char *v = lua_tolstring(L, -1, &vl);
            if (!http_header_ok(n, nl, v, vl))
                luaL_error(L, "http: header '%s' contains a line break, a NUL byte, a colon or is empty", n);
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
}

/* The headers option (checked by check_headers) into r, in table order. */
static void add_headers(lua_State *L, http_req *r, int o)
{
    lua_getfield(L, o, "headers");
    if (!lua_isnil(L, -1)) {
        int t = lua_gettop(L);
        lua_pushnil(L);
        while (lua_next(L, t)) {
            size_t nl, vl;
            const char *n = lua_tolstring(L, -2, &nl);
            const char *v = lua_tolstring(L, -1, &vl);
            http_req_header(r, n, nl, v, vl);
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
}

/* The options table at index o (0: none) into *opts and *timeout. Raises
 * on a bad option; a string it returns stays on the stack (pinned). */
static void read_opts(lua_State *L, int o, http_opts *opts, uint64_t *timeout)
{
    opts->keepalive = opt_bool(L, o, "keepalive", 1);
    opts->verify = opt_bool(L, o, "ssl_verify", 1);
    opts->pool_size = (size_t)opt_int(L, o, "pool_size", HTTP_DEFAULT_POOL_SIZE, 1);
    opts->max_body = (size_t)opt_int(L, o, "max_body", HTTP_DEFAULT_MAX_BODY, 0);
    *timeout = DEFAULT_TIMEOUT_MS;
    if (o) {
        lua_getfield(L, o, "timeout_ms");
        if (!lua_isnil(L, -1) && lua_type(L, -1) != LUA_TNUMBER)
            luaL_error(L, "http: option 'timeout_ms' must be a number");
        if (!lua_isnil(L, -1) && rt_lua_ms(L, -1, timeout) != 0)
            luaL_error(L, "http: option 'timeout_ms' must be >= 0 (math.huge: no limit but the record's)");
        lua_pop(L, 1);
    }
    opts->max_header_bytes = (size_t)opt_int(L, o, "max_header_bytes", HTTP_DEFAULT_MAX_HEADER_BYTES, 1);
    opts->max_headers = (size_t)opt_int(L, o, "max_headers", HTTP_DEFAULT_MAX_HEADERS, 1);
    opts->ca_file = NULL;
    if (o) {
        lua_getfield(L, o, "ca_file");
        if (!lua_isnil(L, -1))
            opts->ca_file = opt_cstring(L, -1, "option 'ca_file'");
        check_headers(L, o);
    }
}

/* The body (the argument at body_idx, else opts.body) and the method
 * (given, else opts.method, else POST with a body and GET without).
 * Raises on a bad one; strings stay on the stack (pinned). */
static const char *read_method_body(lua_State *L, const char *method, int body_idx, int o,
                                    const char **body, size_t *blen)
{
    *body = NULL;
    *blen = 0;
    if (body_idx && !lua_isnoneornil(L, body_idx)) {
        *body = luaL_checklstring(L, body_idx, blen);
    } else if (o) {
        lua_getfield(L, o, "body");
        if (!lua_isnil(L, -1)) {
            if (!lua_isstring(L, -1))
                luaL_error(L, "http: option 'body' must be a string");
            *body = lua_tolstring(L, -1, blen);
        }
    }
    size_t mlen = 0;
    if (!method && o) {
        lua_getfield(L, o, "method");
        method = lua_isnil(L, -1) ? NULL : lua_tolstring(L, -1, &mlen);
        if (method && mlen == 0)
            luaL_error(L, "http: method must be an upper-case token, got ''");
    }
    if (!method)
        method = *body ? "POST" : "GET";
    if (!mlen)
        mlen = strlen(method);
    if (!http_method_ok(method, mlen))
        luaL_error(L, "http: method must be an upper-case token, got '%s'", method);
    return method;
}

/* The common path of request/get/post. url at index 1; method may be
 * NULL (then taken from opts); the body at body_idx (0: from opts); opts
 * at index o (0 if none). Pushes res, or nil, err; yields until then. */
static int do_request(lua_State *L, const char *method, int body_idx, int o)
{
    size_t url_len;
    const char *url = luaL_checklstring(L, 1, &url_len);
    if (o && !lua_isnoneornil(L, o))
        luaL_checktype(L, o, LUA_TTABLE);
    else
        o = 0;
    rt_fiber *f = rt_check_yieldable(L, "moonwait.http");
    /* Everything that may raise comes first. */
    const char *body;
    size_t blen;
    method = read_method_body(L, method, body_idx, o, &body, &blen);
    http_opts opts;
    uint64_t timeout;
    read_opts(L, o, &opts, &timeout);

    if (memchr(url, '\0', url_len))
        return bad_url(L, method, url, url_len);
    http_req *r = http_req_new();
    if (!r)
        return luaL_error(L, "out of memory");
    if (http_req_prepare(r, url, method, &opts) != 0) {
        http_req_free(r);
        return bad_url(L, method, url, url_len);
    }
    if (o)
        add_headers(L, r, o);
    http_req_end(r, body, blen);

    /* Park first: the request may end before we yield. */
    rt_park(f, on_cancel, r);
    uint64_t ms = rt_wait_ms(f, timeout);
    if (ms)
        rt_timer_start(&f->timer, on_timer, ms);
    r->started_ns = script_metrics_http_on() ? uv_hrtime() : 0;
    http_req_start(r, f->rt->loop, on_done, f);
    return rt_yield(L, f);
}

static int l_request(lua_State *L)
{
    return do_request(L, NULL, 0, 2);
}

static int l_get(lua_State *L)
{
    return do_request(L, "GET", 0, 2);
}

static int l_post(lua_State *L)
{
    luaL_checkstring(L, 2);
    return do_request(L, "POST", 2, 3);
}

/* headers[k] for any case of k */
static int l_hdr_index(lua_State *L)
{
    if (lua_type(L, 2) != LUA_TSTRING)
        return 0;
    size_t n;
    const char *k = lua_tolstring(L, 2, &n);
    char small[128];
    char *low = n < sizeof small ? small : malloc(n + 1);
    if (!low)
        return 0;
    for (size_t i = 0; i < n; i++)
        low[i] = (char)tolower((unsigned char)k[i]);
    lua_pushlstring(L, low, n);
    if (low != small)
        free(low);
    lua_rawget(L, 1);
    return 1;
}

int mod_http_open(lua_State *L)
{
    luaL_newmetatable(L, HDR_MT);
    lua_pushcfunction(L, l_hdr_index);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    lua_pushlightuserdata(L, (void *)&state_key);
    lua_createtable(L, 4, 0);
    luaL_newmetatable(L, RES_MT);
    lua_pushcfunction(L, l_res_index);
    lua_setfield(L, -2, "__index");
    lua_rawseti(L, -2, ST_RES_MT);
    lua_newtable(L); /* raw[res] = header block, until res.headers is read */
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "k");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_rawseti(L, -2, ST_RAW);
    lua_pushliteral(L, "status");
    lua_rawseti(L, -2, ST_STATUS);
    lua_pushliteral(L, "body");
    lua_rawseti(L, -2, ST_BODY);
    lua_rawset(L, LUA_REGISTRYINDEX);
    static const luaL_Reg fns[] = {
        { "request", l_request }, { "get", l_get }, { "post", l_post }, { NULL, NULL },
    };
    lua_newtable(L);
    luaL_register(L, NULL, fns);
    return 1;
}
