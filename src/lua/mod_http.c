/*
 * mod_http.c: moonwait.http, an HTTP/1.1 client whose calls park the
 * calling fiber. Written in C on net_conn (not on the Lua cosocket) so a
 * keep-alive request costs a few microseconds of client CPU; responses
 * are parsed by net/http_resp.c on llhttp (compiled from Debian's
 * node-llhttp sources).
 *
 *   res, err = http.request(url, opts)   opts: method, headers, body,
 *       timeout_ms (whole request; default 60000, and never past the
 *       record's deadline), keepalive (default true), pool_size (1024),
 *       max_body (16 MiB), ssl_verify (default true), ca_file
 *   http.get(url, opts), http.post(url, body, opts)
 *   res.status, res.headers (lower-case keys; lookups are case-insensitive),
 *   res.body
 *
 * A non-2xx status is a response. Transport failures return nil, err:
 * "timeout", "connection refused", "connection reset", "closed",
 * "host not found", "body too large", "bad response: <why> (<url>)",
 * "ssl handshake failed: ...", "certificate verify failed: ...",
 * "bad url: <url>". Misuse (bad argument types, CR/LF in a header) raises.
 *
 * Connections come from and return to the shared pool (net/pool.c) under
 * the key "http://host:port" or "https://host:port/sni"; a response that
 * leaves the connection clean returns it. A pooled connection that fails
 * before any byte of the response is retried once on a fresh connection
 * for idempotent methods (the server may have closed it while idle).
 * When the record times out, the request is cancelled: its connection is
 * closed, never pooled, and its memory freed.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../net/conn.h"
#include "../util/buf.h"
#include "../net/dns.h"
#include "../net/http_resp.h"
#include "../net/pool.h"
#include "../net/tls.h"
#include "modules.h"
#include "runtime.h"

#define DEFAULT_TIMEOUT_MS 60000
#define DEFAULT_POOL_SIZE 1024
#define DEFAULT_IDLE_MS 60000
#define DEFAULT_MAX_BODY (16u * 1024 * 1024)
/* The response head (status line and headers, as on the wire) and the
 * number of header lines, as nginx bounds a request's: a peer that sends
 * headers without end gets "bad response: headers too large". */
#define DEFAULT_MAX_HEADER_BYTES (64 * 1024)
#define DEFAULT_MAX_HEADERS 100

typedef mw_buf buf;
#define buf_add mw_buf_add

typedef struct hreq {
    rt_fiber *f;
    net_conn *conn;
    dns_query *dnsq;
    dns_result addrs;
    size_t addr_ix;
    char *url;            /* as given, for messages */
    char *host;           /* owned; also the SNI name */
    const char *authority;/* host[:port] as written in url (points into url) */
    size_t authority_len, prefix_len;
    int port, https, verify, keepalive, idempotent, is_head;
    char *ca_file;
    char *pool_key;
    size_t pool_size;
    buf req;              /* the serialised request */
    http_resp resp;       /* the response parser (net/http_resp.c), its caps and what it kept */
    int got_bytes;        /* any response byte arrived */
    int reused, retried;
    char failbuf[512];
} hreq;

/* ---- request lifecycle ------------------------------------------------------------ */

/* Finished requests are kept (up to a bound) with their buffers, so a
 * steady stream of requests does not go through malloc for each one. */
#define FREE_REQS_MAX 256
#define KEEP_BUF_MAX (64 * 1024)
static hreq *free_reqs[FREE_REQS_MAX];
static size_t n_free_reqs;

static hreq *hreq_new(void)
{
    if (n_free_reqs == 0)
        return calloc(1, sizeof(hreq));
    hreq *r = free_reqs[--n_free_reqs];
    buf req = r->req, hdrs = r->resp.hdrs, body = r->resp.body;
    memset(r, 0, sizeof *r);
    r->req = req;
    r->resp.hdrs = hdrs;
    r->resp.body = body;
    r->req.len = r->resp.hdrs.len = r->resp.body.len = 0;
    return r;
}

static void buf_free(buf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

static void hreq_free(hreq *r)
{
    if (r->dnsq)
        dns_cancel(r->dnsq);
    if (r->conn)
        net_conn_close(r->conn);
    free(r->url);
    free(r->host);
    free(r->ca_file);
    free(r->pool_key);
    r->url = r->host = r->ca_file = r->pool_key = NULL;
    if (n_free_reqs < FREE_REQS_MAX && r->resp.body.cap <= KEEP_BUF_MAX && r->req.cap <= KEEP_BUF_MAX &&
        r->resp.hdrs.cap <= KEEP_BUF_MAX) {
        free_reqs[n_free_reqs++] = r;
        return;
    }
    buf_free(&r->req);
    buf_free(&r->resp.hdrs);
    buf_free(&r->resp.body);
    free(r);
}

/* The record timed out: cancel everything; the connection is closed. */
static void on_cancel(rt_fiber *f)
{
    hreq *r = f->wait;
    uv_timer_stop(&f->timer);
    hreq_free(r);
}

#define HDR_MT "moonwait.http.headers"
#define RES_MT "moonwait.http.response"
#define RAW_KEY "moonwait.http.raw_headers"

/* Turn a "name\0value\0..." block (at index -1 of L) into the headers
 * table, replacing it. Repeated names are joined with ", " (RFC 9110). */
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
    lua_getfield(L, LUA_REGISTRYINDEX, RAW_KEY);
    lua_pushvalue(L, 1);
    lua_rawget(L, -2);
    if (lua_isnil(L, -1))
        return 1;
    build_headers(L);
    lua_pushvalue(L, 1);
    lua_pushnil(L);
    lua_rawset(L, -4); /* raw[res] = nil */
    lua_pushliteral(L, "headers");
    lua_pushvalue(L, -2);
    lua_rawset(L, 1);  /* res.headers = headers: later reads are plain */
    return 1;
}

/* Push res = { status, headers, body } on the fiber and wake it. */
static void succeed(hreq *r)
{
    rt_fiber *f = r->f;
    lua_State *co = f->co;
    uv_timer_stop(&f->timer);
    lua_createtable(co, 0, 3);
    lua_pushinteger(co, r->resp.status);
    lua_setfield(co, -2, "status");
    /* res.headers is built on first access (most lookups never read it):
     * until then the raw block waits in a weak table keyed by res. */
    luaL_getmetatable(co, RES_MT);
    lua_setmetatable(co, -2);
    lua_getfield(co, LUA_REGISTRYINDEX, RAW_KEY);
    lua_pushvalue(co, -2);
    lua_pushlstring(co, r->resp.hdrs.p ? r->resp.hdrs.p : "", r->resp.hdrs.len);
    lua_rawset(co, -3);
    lua_pop(co, 1);
    lua_pushlstring(co, r->resp.body.p ? r->resp.body.p : "", r->resp.body.len);
    lua_setfield(co, -2, "body");

    net_conn *c = r->conn;
    r->conn = NULL;
    if (r->keepalive && http_resp_keep_alive(&r->resp) && net_conn_buffered(c) == 0 &&
        !c->eof && !c->rerr) {
        net_conn_read_detach(c);
        net_pool_put(c, r->pool_key, DEFAULT_IDLE_MS, r->pool_size);
    } else {
        net_conn_close(c);
    }
    hreq_free(r);
    rt_wake(f, 1);
}

static void fail(hreq *r, const char *err)
{
    rt_fiber *f = r->f;
    uv_timer_stop(&f->timer);
    lua_pushnil(f->co);
    lua_pushstring(f->co, err);
    hreq_free(r);
    rt_wake(f, 2);
}

static void start_connect(hreq *r);
static void send_request(hreq *r);

/* A reused connection died before answering: try once more, fresh. */
static int maybe_retry(hreq *r)
{
    if (!r->reused || r->retried || r->got_bytes || !r->idempotent)
        return 0;
    r->retried = 1;
    r->reused = 0;
    net_conn_close(r->conn);
    r->conn = NULL;
    http_resp_init(&r->resp, r->is_head);
    dns_result now;
    int rc = dns_resolve(r->f->rt->loop, r->host, r->port, &now, NULL, NULL, &r->dnsq);
    if (rc == 1) {
        r->addrs = now;
        r->addr_ix = 0;
        start_connect(r);
    } else {
        /* Names are cached after the first resolution, so this is rare:
         * report the original failure rather than resolve again. */
        if (r->dnsq) {
            dns_cancel(r->dnsq);
            r->dnsq = NULL;
        }
        return 0;
    }
    return 1;
}

static void bad_response(hreq *r, const char *why)
{
    snprintf(r->failbuf, sizeof r->failbuf, "bad response: %s (%s)", why, r->url);
    fail(r, r->failbuf);
}

static void on_readable(net_conn *c, void *ud)
{
    hreq *r = ud;
    size_t n = net_conn_buffered(c);
    if (n) {
        r->got_bytes = 1;
        size_t used;
        int e = http_resp_feed(&r->resp, net_conn_data(c), n, &used);
        net_conn_consume(c, used);
        if (e == HTTP_RESP_HEADERS_TOO_LARGE) {
            snprintf(r->failbuf, sizeof r->failbuf, "bad response: headers too large (%s)", r->url);
            fail(r, r->failbuf);
            return;
        }
        if (e == HTTP_RESP_BODY_TOO_LARGE) {
            fail(r, "body too large");
            return;
        }
        if (e != HTTP_RESP_OK) {
            bad_response(r, http_resp_reason(&r->resp));
            return;
        }
        if (r->resp.complete) {
            succeed(r);
            return;
        }
    }
    if (c->eof) {
        if (r->got_bytes && http_resp_eof(&r->resp)) {
            r->keepalive = 0;
            succeed(r);
            return;
        }
        if (maybe_retry(r))
            return;
        if (r->got_bytes)
            bad_response(r, "the connection closed before the response was complete");
        else
            fail(r, "closed");
        return;
    }
    if (c->rerr) {
        if (maybe_retry(r))
            return;
        if (c->rerr == UV_EPROTO && c->tls_err[0])
            fail(r, c->tls_err);
        else
            fail(r, net_strerror(c->rerr));
    }
}

static void on_sent(net_conn *c, int status, void *ud)
{
    hreq *r = ud;
    (void)c;
    if (status != 0) {
        if (maybe_retry(r))
            return;
        fail(r, net_strerror(status));
    }
    /* else: the response is read by on_readable, already started */
}

static void send_request(hreq *r)
{
    int rc = net_conn_read_start(r->conn, on_readable, r);
    if (rc == 0)
        rc = net_conn_write(r->conn, r->req.p, r->req.len, on_sent, r);
    if (rc != 0) {
        if (maybe_retry(r))
            return;
        fail(r, net_strerror(rc));
    }
}

static void on_handshake(net_conn *c, int status, void *ud)
{
    hreq *r = ud;
    if (status != 0) {
        if (strncmp(c->tls_err, "certificate verify failed", 25) == 0)
            snprintf(r->failbuf, sizeof r->failbuf, "%s (%s)", c->tls_err, r->url);
        else
            snprintf(r->failbuf, sizeof r->failbuf, "ssl handshake failed: %s (%s)", c->tls_err, r->url);
        fail(r, r->failbuf);
        return;
    }
    send_request(r);
}

static void on_connected(net_conn *c, int status, void *ud)
{
    hreq *r = ud;
    if (status != 0) {
        net_conn_close(c);
        r->conn = NULL;
        if (++r->addr_ix < r->addrs.n &&
            (status == UV_ECONNREFUSED || status == UV_EHOSTUNREACH || status == UV_ENETUNREACH ||
             status == UV_EADDRNOTAVAIL)) {
            start_connect(r);
            return;
        }
        fail(r, net_strerror(status));
        return;
    }
    if (r->https) {
        char err[256];
        SSL_CTX *ctx = tls_client_ctx(r->ca_file, err, sizeof err);
        if (!ctx) {
            snprintf(r->failbuf, sizeof r->failbuf, "ssl handshake failed: %s", err);
            fail(r, r->failbuf);
            return;
        }
        if (net_conn_tls_start(c, ctx, r->host, r->verify, on_handshake, r) != 0)
            fail(r, "ssl handshake failed");
        return;
    }
    send_request(r);
}

static void start_connect(hreq *r)
{
    r->conn = net_conn_new(r->f->rt->loop, r->resp.max_body + 64 * 1024);
    if (!r->conn) {
        fail(r, "out of memory");
        return;
    }
    int rc = net_conn_connect(r->conn, (struct sockaddr *)&r->addrs.addrs[r->addr_ix], on_connected, r);
    if (rc != 0) {
        net_conn_close(r->conn);
        r->conn = NULL;
        fail(r, net_strerror(rc));
    }
}

static void on_resolved(void *ud, int status, const dns_result *res)
{
    hreq *r = ud;
    r->dnsq = NULL;
    if (status != 0) {
        fail(r, net_strerror(status));
        return;
    }
    r->addrs = *res;
    r->addr_ix = 0;
    start_connect(r);
}

static void on_timer(uv_timer_t *t)
{
    rt_fiber *f = t->data;
    hreq *r = f->wait;
    if (r)
        fail(r, "timeout");
}

/* ---- building the request --------------------------------------------------------- */

/* Split url into scheme/host/port/path. Returns 0 or -1. */
static int parse_url(hreq *r, const char *url, const char **path)
{
    const char *p;
    if (strncmp(url, "http://", 7) == 0) {
        p = url + 7;
        r->port = 80;
    } else if (strncmp(url, "https://", 8) == 0) {
        p = url + 8;
        r->https = 1;
        r->port = 443;
    } else {
        return -1;
    }
    const char *host_end;
    const char *h = p;
    r->authority = p;
    if (*p == '[') {
        host_end = strchr(p, ']');
        if (!host_end)
            return -1;
        h = p + 1;
        p = host_end + 1;
    } else {
        host_end = p + strcspn(p, ":/?#");
        p = host_end;
    }
    if (host_end == h)
        return -1;
    r->host = strndup(h, (size_t)(host_end - h));
    if (*p == ':') {
        char *end;
        long port = strtol(p + 1, &end, 10);
        if (end == p + 1 || port < 1 || port > 65535)
            return -1;
        r->port = (int)port;
        p = end;
    }
    if (*p && *p != '/' && *p != '?')
        return -1;
    r->authority_len = (size_t)(p - r->authority);
    r->prefix_len = (size_t)(p - url);
    *path = *p ? p : "/";
    return 0;
}

static int has_crlf(const char *s, size_t n)
{
    return memchr(s, '\r', n) || memchr(s, '\n', n);
}

/* Build "METHOD path HTTP/1.1" + headers + body into r->req. Raises on
 * misuse. Stack: opts at index `o` (or 0). */
static void build_request(lua_State *L, hreq *r, const char *method, const char *path,
                          const char *body, size_t blen, int o)
{
    buf *b = &r->req;
    int have_host = 0, have_ua = 0, have_len = 0, have_conn = 0;
    const char *pathq = path;
    if (*path == '?') {
        buf_add(b, method, strlen(method));
        buf_add(b, " /", 2);
    } else {
        buf_add(b, method, strlen(method));
        buf_add(b, " ", 1);
    }
    size_t plen = strcspn(pathq, "#");
    buf_add(b, pathq, plen);
    buf_add(b, " HTTP/1.1\r\n", 11);
    if (o) {
        lua_getfield(L, o, "headers");
        if (!lua_isnil(L, -1)) {
            int t = lua_gettop(L);
            lua_pushnil(L);
            while (lua_next(L, t)) { /* validated by check_headers */
                size_t nl, vl;
                const char *n = lua_tolstring(L, -2, &nl);
                const char *v = lua_tolstring(L, -1, &vl);
                have_host |= strcasecmp(n, "host") == 0;
                have_ua |= strcasecmp(n, "user-agent") == 0;
                have_len |= strcasecmp(n, "content-length") == 0;
                have_conn |= strcasecmp(n, "connection") == 0;
                buf_add(b, n, nl);
                buf_add(b, ": ", 2);
                buf_add(b, v, vl);
                buf_add(b, "\r\n", 2);
                lua_pop(L, 1);
            }
        }
        lua_pop(L, 1);
    }
    if (!have_host) {
        buf_add(b, "Host: ", 6);
        buf_add(b, r->authority, r->authority_len);
        buf_add(b, "\r\n", 2);
    }
    if (!have_ua)
        buf_add(b, "User-Agent: moonwait/" MW_VERSION "\r\n", sizeof("User-Agent: moonwait/" MW_VERSION "\r\n") - 1);
    if (!have_conn && !r->keepalive)
        buf_add(b, "Connection: close\r\n", 19);
    if (!have_len && (body || strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0)) {
        char digits[24];
        size_t i = sizeof digits;
        size_t v = blen;
        do {
            digits[--i] = (char)('0' + v % 10);
            v /= 10;
        } while (v);
        buf_add(b, "Content-Length: ", 16);
        buf_add(b, digits + i, sizeof digits - i);
        buf_add(b, "\r\n", 2);
    }
    buf_add(b, "\r\n", 2);
    if (body && blen)
        buf_add(b, body, blen);
}

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

/* The common path of request/get/post. url at index 1; method/body may be
 * NULL (then taken from opts); opts at index o (0 if none). */
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
            if (nl == 0 || has_crlf(n, nl) || has_crlf(v, vl) || memchr(n, ':', nl) ||
                memchr(n, '\0', nl) || memchr(v, '\0', vl))
                luaL_error(L, "http: header '%s' contains a line break, a NUL byte, a colon or is empty", n);
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
}

/* nil, "bad url: URL" (a NUL shown as %00, so the message is the whole URL). */
static int bad_url(lua_State *L, const char *url, size_t len)
{
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    luaL_addstring(&b, "bad url: ");
    for (const char *e = url + len; url < e;) {
        const char *z = memchr(url, '\0', (size_t)(e - url));
        size_t n = z ? (size_t)(z - url) : (size_t)(e - url);
        luaL_addlstring(&b, url, n);
        url += n;
        if (z) {
            luaL_addstring(&b, "%00");
            url++;
        }
    }
    lua_pushnil(L);
    luaL_pushresult(&b);
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
    size_t blen = 0;
    const char *body = NULL;
    if (body_idx && !lua_isnoneornil(L, body_idx)) {
        body = luaL_checklstring(L, body_idx, &blen);
    } else if (o) {
        lua_getfield(L, o, "body");
        if (!lua_isnil(L, -1)) {
            if (!lua_isstring(L, -1))
                return luaL_error(L, "http: option 'body' must be a string");
            body = lua_tolstring(L, -1, &blen); /* stays on the stack: pinned */
        }
    }
    size_t mlen = 0;
    if (!method && o) {
        lua_getfield(L, o, "method");
        method = lua_isnil(L, -1) ? NULL : lua_tolstring(L, -1, &mlen);
        if (method && mlen == 0)
            return luaL_error(L, "http: method must be an upper-case token, got ''");
    }
    if (!method)
        method = body ? "POST" : "GET";
    if (!mlen)
        mlen = strlen(method);
    for (size_t i = 0; i < mlen; i++)
        if (!isupper((unsigned char)method[i]))
            return luaL_error(L, "http: method must be an upper-case token, got '%s'", method);
    int keepalive = opt_bool(L, o, "keepalive", 1);
    int verify = opt_bool(L, o, "ssl_verify", 1);
    size_t pool_size = (size_t)opt_int(L, o, "pool_size", DEFAULT_POOL_SIZE, 1);
    size_t max_body = (size_t)opt_int(L, o, "max_body", DEFAULT_MAX_BODY, 0);
    uint64_t timeout = (uint64_t)opt_int(L, o, "timeout_ms", DEFAULT_TIMEOUT_MS, 0);
    size_t max_header_bytes = (size_t)opt_int(L, o, "max_header_bytes", DEFAULT_MAX_HEADER_BYTES, 1);
    size_t max_headers = (size_t)opt_int(L, o, "max_headers", DEFAULT_MAX_HEADERS, 1);
    const char *ca_file = NULL;
    if (o) {
        lua_getfield(L, o, "ca_file");
        if (!lua_isnil(L, -1))
            ca_file = opt_cstring(L, -1, "option 'ca_file'");
        check_headers(L, o);
    }

    if (memchr(url, '\0', url_len))
        return bad_url(L, url, url_len);
    hreq *r = hreq_new();
    if (!r)
        return luaL_error(L, "out of memory");
    r->url = strdup(url);
    const char *path;
    size_t plen = 0;
    if (parse_url(r, url, &path) == 0) {
        plen = strcspn(path, "#");
        if (has_crlf(path, plen) || memchr(path, ' ', plen))
            path = NULL;
    } else {
        path = NULL;
    }
    if (!path) {
        hreq_free(r);
        lua_pushnil(L);
        lua_pushfstring(L, "bad url: %s", url);
        return 2;
    }
    r->idempotent = strcmp(method, "POST") != 0 && strcmp(method, "PATCH") != 0;
    r->is_head = strcmp(method, "HEAD") == 0;
    r->keepalive = keepalive;
    r->verify = verify;
    r->pool_size = pool_size;
    r->resp.max_body = max_body;
    r->resp.max_header_bytes = max_header_bytes;
    r->resp.max_headers = max_headers;
    r->ca_file = ca_file ? strdup(ca_file) : NULL;
    /* The pool key: the URL up to its path ("http://host:port"), plus for
     * TLS what changes whether a connection may be shared. */
    buf key = { 0 };
    buf_add(&key, url, r->prefix_len);
    if (r->https) {
        buf_add(&key, r->verify ? "|verify|" : "|noverify|", r->verify ? 8 : 10);
        if (r->ca_file)
            buf_add(&key, r->ca_file, strlen(r->ca_file));
    }
    buf_add(&key, "", 1);
    r->pool_key = key.p;
    build_request(L, r, method, path, body, blen, o);
    http_resp_init(&r->resp, r->is_head);
    r->f = f;

    /* Park first: every callback below may run before we yield. */
    rt_park(f, on_cancel, r);
    uint64_t ms = rt_wait_ms(f, timeout);
    if (ms)
        uv_timer_start(&f->timer, on_timer, ms, 0);
    net_conn *c = net_pool_get(r->pool_key);
    if (c) {
        r->conn = c;
        r->reused = 1;
        send_request(r);
        return rt_yield(L, f);
    }
    dns_result now;
    int rc = dns_resolve(f->rt->loop, r->host, r->port, &now, on_resolved, r, &r->dnsq);
    if (rc < 0) {
        fail(r, net_strerror(rc));
    } else if (rc == 1) {
        r->addrs = now;
        start_connect(r);
    }
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
    luaL_newmetatable(L, RES_MT);
    lua_pushcfunction(L, l_res_index);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    lua_newtable(L); /* raw[res] = header block, until res.headers is read */
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "k");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_setfield(L, LUA_REGISTRYINDEX, RAW_KEY);
    static const luaL_Reg fns[] = {
        { "request", l_request }, { "get", l_get }, { "post", l_post }, { NULL, NULL },
    };
    lua_newtable(L);
    luaL_register(L, NULL, fns);
    return 1;
}
