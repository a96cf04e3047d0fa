/*
 * http.c: the HTTP/1.1 client's protocol (contract in http.h): URLs, the
 * request's bytes, and a request's life from the pool or a fresh
 * connection to the response. No Lua: src/lua/mod_http.c binds it.
 */
#define _GNU_SOURCE
#include "http.h"

#include <ctype.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "pool.h"
#include "tls.h"

/* How long a pooled connection may stay idle. */
#define IDLE_MS 60000

/* ---- URLs and the request's bytes ------------------------------------------------- */

static int has_crlf(const char *s, size_t n)
{
    return memchr(s, '\r', n) || memchr(s, '\n', n);
}

int http_url_parse(const char *url, http_url *u)
{
    const char *p;
    memset(u, 0, sizeof *u);
    if (strncmp(url, "http://", 7) == 0) {
        p = url + 7;
        u->port = 80;
    } else if (strncmp(url, "https://", 8) == 0) {
        p = url + 8;
        u->https = 1;
        u->port = 443;
    } else {
        return -1;
    }
    const char *host_end;
    const char *h = p;
    u->authority = p;
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
    u->host = h;
    u->host_len = (size_t)(host_end - h);
    if (*p == ':') {
        /* (digits by hand: strtol, with its locale and sign handling, was a
         * tenth of this function's cost) */
        const char *d = p + 1;
        long port = 0;
        while (*d >= '0' && *d <= '9' && port <= 65535)
            port = port * 10 + (*d++ - '0');
        if (d == p + 1 || port < 1 || port > 65535)
            return -1;
        u->port = (int)port;
        p = d;
    }
    if (*p && *p != '/' && *p != '?')
        return -1;
    u->authority_len = (size_t)(p - u->authority);
    u->prefix_len = (size_t)(p - url);
    u->path = *p ? p : "/";
    u->path_len = strcspn(u->path, "#");
    if (has_crlf(u->path, u->path_len) || memchr(u->path, ' ', u->path_len))
        return -1;
    return 0;
}

int http_method_ok(const char *m, size_t n)
{
    if (n == 0)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!isupper((unsigned char)m[i]))
            return 0;
    return 1;
}

int http_header_ok(const char *name, size_t nl, const char *value, size_t vl)
{
    return !(nl == 0 || has_crlf(name, nl) || has_crlf(value, vl) || memchr(name, ':', nl) ||
             memchr(name, '\0', nl) || memchr(value, '\0', vl));
}

/* s (n bytes) is the header name lit, in any case. */
static int name_is(const char *s, size_t n, const char *lit)
{
    return n == strlen(lit) && strncasecmp(s, lit, n) == 0;
}

static void add(http_req *r, const char *s, size_t n)
{
    mw_buf_add(&r->req, s, n);
}

/* Append s (n bytes) and a NUL to r->strs; its offset there, or -1 out of
 * memory. */
static long str_add(http_req *r, const char *s, size_t n)
{
    size_t at = r->strs.len;
    if (mw_buf_reserve(&r->strs, n + 1) != 0)
        return -1;
    memcpy(r->strs.p + at, s, n);
    r->strs.p[at + n] = '\0';
    r->strs.len += n + 1;
    return (long)at;
}

int http_req_prepare(http_req *r, const char *url, const char *method, const http_opts *o)
{
    http_url u;
    /* url, host and the pool key live in r->strs, whose memory is kept
     * when r is recycled (three strdups and frees per request before) */
    r->strs.len = 0;
    long url_at = str_add(r, url, strlen(url));
    r->url = url_at < 0 ? NULL : r->strs.p + url_at;
    size_t ml = strlen(method); /* kept for messages, cut to fit (a memcpy: snprintf cost ~550 instructions) */
    if (ml >= sizeof r->method)
        ml = sizeof r->method - 1;
    memcpy(r->method, method, ml);
    r->method[ml] = '\0';
    if (url_at < 0 || http_url_parse(url, &u) != 0)
        return -1;
    r->port = u.port;
    r->https = u.https;
    size_t mlen = strlen(method);
    /* (fixed-size compares, inlined: five strcmp calls were ~110 instructions) */
#define METHOD_IS(lit) (mlen == sizeof(lit) - 1 && memcmp(method, lit, sizeof(lit) - 1) == 0)
    int is_post = METHOD_IS("POST");
    r->idempotent = !is_post && !METHOD_IS("PATCH");
    r->is_head = METHOD_IS("HEAD");
    r->wants_length = is_post || METHOD_IS("PUT");
#undef METHOD_IS
    r->keepalive = o->keepalive;
    r->verify = o->verify;
    r->pool_size = o->pool_size;
    r->resp.max_body = o->max_body;
    r->resp.max_header_bytes = o->max_header_bytes;
    r->resp.max_headers = o->max_headers;
    r->ca_file = o->ca_file ? strdup(o->ca_file) : NULL;
    long host_at = str_add(r, u.host, u.host_len);
    /* The pool key: the URL up to its path, plus for TLS what decides
     * whether a connection may be shared. */
    long key_at = str_add(r, url, u.prefix_len);
    if (key_at >= 0 && r->https) {
        r->strs.len--; /* (its NUL) */
        const char *tls = r->verify ? "|verify|" : "|noverify|";
        const char *ca = r->ca_file ? r->ca_file : "";
        if (mw_buf_add(&r->strs, tls, strlen(tls)) != 0 || str_add(r, ca, strlen(ca)) < 0)
            key_at = -1;
    }
    if (host_at < 0 || key_at < 0)
        return -1;
    r->url = r->strs.p + url_at; /* (strs may have moved) */
    r->host = r->strs.p + host_at;
    r->pool_key = r->strs.p + key_at;
    add(r, method, mlen);
    add(r, *u.path == '?' ? " /" : " ", *u.path == '?' ? 2 : 1);
    add(r, u.path, u.path_len);
    add(r, " HTTP/1.1\r\n", 11);
    /* The Host header (unless the caller sends one): the authority as
     * written, read from r's copy of the URL. */
    r->authority = r->url ? r->url + (u.authority - url) : "";
    r->authority_len = r->url ? u.authority_len : 0;
    return 0;
}

void http_req_header(http_req *r, const char *name, size_t nl, const char *value, size_t vl)
{
    r->have_host |= name_is(name, nl, "host");
    r->have_ua |= name_is(name, nl, "user-agent");
    r->have_len |= name_is(name, nl, "content-length");
    r->have_conn |= name_is(name, nl, "connection");
    add(r, name, nl);
    add(r, ": ", 2);
    add(r, value, vl);
    add(r, "\r\n", 2);
}

void http_req_end(http_req *r, const char *body, size_t blen)
{
    static const char ua[] = "User-Agent: moonwait/" MW_VERSION "\r\n";
    if (!r->have_host) {
        add(r, "Host: ", 6);
        add(r, r->authority, r->authority_len);
        add(r, "\r\n", 2);
    }
    if (!r->have_ua)
        add(r, ua, sizeof ua - 1);
    if (!r->have_conn && !r->keepalive)
        add(r, "Connection: close\r\n", 19);
    if (!r->have_len && (body || r->wants_length)) {
        char digits[24];
        size_t i = sizeof digits;
        size_t v = blen;
        do {
            digits[--i] = (char)('0' + v % 10);
            v /= 10;
        } while (v);
        add(r, "Content-Length: ", 16);
        add(r, digits + i, sizeof digits - i);
        add(r, "\r\n", 2);
    }
    add(r, "\r\n", 2);
    if (body && blen)
        add(r, body, blen);
    http_resp_init(&r->resp, r->is_head);
}

/* ---- recycling --------------------------------------------------------------------- */

/* Finished requests are kept (up to a bound) with their buffers, so a
 * steady stream of requests does not go through malloc for each one. Per
 * loop thread (a request is made and freed on its loop's thread): no lock
 * on the way. */
#define FREE_REQS_MAX 256
#define KEEP_BUF_MAX (64 * 1024)
static _Thread_local http_req *free_reqs[FREE_REQS_MAX];
static _Thread_local size_t n_free_reqs;

http_req *http_req_new(void)
{
    if (n_free_reqs == 0)
        return calloc(1, sizeof(http_req));
    http_req *r = free_reqs[--n_free_reqs];
    mw_buf req = r->req, hdrs = r->resp.hdrs, body = r->resp.body, strs = r->strs;
    memset(r, 0, offsetof(http_req, failbuf)); /* (failbuf, 1 KiB, is written before it is read) */
    r->started_ns = 0;
    r->req = req;
    r->strs = strs;
    r->resp.hdrs = hdrs;
    r->resp.body = body;
    r->req.len = r->resp.hdrs.len = r->resp.body.len = 0;
    return r;
}

static void buf_free(mw_buf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

void http_req_free_cached(void)
{
    while (n_free_reqs) {
        http_req *r = free_reqs[--n_free_reqs];
        buf_free(&r->req);
        buf_free(&r->strs);
        buf_free(&r->resp.hdrs);
        buf_free(&r->resp.body);
        free(r);
    }
}

void http_req_free(http_req *r)
{
    net_dial_cancel(&r->dial);
    if (r->conn)
        net_conn_close(r->conn);
    free(r->ca_file); /* (url, host and pool_key are in strs) */
    r->url = r->host = r->ca_file = r->pool_key = NULL;
    if (n_free_reqs < FREE_REQS_MAX && r->resp.body.cap <= KEEP_BUF_MAX && r->req.cap <= KEEP_BUF_MAX && r->strs.cap <= KEEP_BUF_MAX &&
        r->resp.hdrs.cap <= KEEP_BUF_MAX) {
        free_reqs[n_free_reqs++] = r;
        return;
    }
    buf_free(&r->req);
    buf_free(&r->strs);
    buf_free(&r->resp.hdrs);
    buf_free(&r->resp.body);
    free(r);
}

/* ---- a request on the loop ----------------------------------------------------------- */

/* The response is complete: pool the connection if it is clean, tell the
 * caller, release r. */
static void succeed(http_req *r)
{
    net_conn *c = r->conn;
    r->conn = NULL;
    if (r->keepalive && http_resp_keep_alive(&r->resp) && net_conn_buffered(c) == 0 && !c->eof &&
        !c->rerr) {
        net_conn_read_detach(c);
        net_pool_put(c, r->pool_key, IDLE_MS, r->pool_size);
    } else {
        net_conn_close(c);
    }
    r->done(r, NULL, r->ud);
    http_req_free(r);
}

const char *http_req_error(http_req *r, const char *err)
{
    char where[NET_WHERE_MAX];
    const char *url = r->url ? r->url : "";
    net_where_request(where, sizeof where, r->method, url, strlen(url));
    return net_where_join(r->failbuf, sizeof r->failbuf, err, where);
}

/* Every failure ends here: done hears err with the request named. err
 * must not be r->failbuf. */
static void fail(http_req *r, const char *err)
{
    r->done(r, http_req_error(r, err), r->ud);
    http_req_free(r);
}

static void bad_response(http_req *r, const char *why)
{
    char msg[512];
    snprintf(msg, sizeof msg, "bad response: %s", why);
    fail(r, msg);
}

/* A reused connection died before answering: try once more, fresh, if
 * the name resolves at once (it is cached after the first resolution, so
 * this is rare; else the original failure is reported). 1 if retrying. */
static int maybe_retry(http_req *r)
{
    if (!r->reused || r->retried || r->got_bytes || !r->idempotent)
        return 0;
    r->retried = 1;
    r->reused = 0;
    net_conn_close(r->conn);
    r->conn = NULL;
    http_resp_init(&r->resp, r->is_head);
    return net_dial_start(&r->dial, r->host, r->port, 1) == 0;
}

/* Feed what arrived to the parser; finish on the response's end, on a
 * refusal, on EOF or a read error. */
static void on_readable(net_conn *c, void *ud)
{
    http_req *r = ud;
    size_t n = net_conn_buffered(c);
    if (n) {
        r->got_bytes = 1;
        size_t used;
        int e = http_resp_feed(&r->resp, net_conn_data(c), n, &used);
        net_conn_consume(c, used);
        if (e == HTTP_RESP_HEADERS_TOO_LARGE) {
            bad_response(r, "headers too large");
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
        fail(r, net_conn_error(c));
    }
}

static void on_sent(net_conn *c, int status, void *ud)
{
    http_req *r = ud;
    (void)c;
    if (status != 0) {
        if (maybe_retry(r))
            return;
        fail(r, net_strerror(status));
    }
    /* else: the response is read by on_readable, already started */
}

static void send_request(http_req *r)
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
    http_req *r = ud;
    if (status != 0) {
        char why[320];
        fail(r, net_conn_tls_failure(c, why, sizeof why));
        return;
    }
    send_request(r);
}

static void on_dialed(void *ud, const char *err)
{
    http_req *r = ud;
    if (err) {
        fail(r, err);
        return;
    }
    if (r->https) {
        char why[256];
        SSL_CTX *ctx = tls_client_ctx(r->ca_file, why, sizeof why);
        if (!ctx) {
            char msg[300];
            snprintf(msg, sizeof msg, "ssl handshake failed: %s", why);
            fail(r, msg);
            return;
        }
        if (net_conn_tls_start(r->conn, ctx, r->host, r->verify, on_handshake, r) != 0)
            fail(r, "ssl handshake failed");
        return;
    }
    send_request(r);
}

void http_req_start(http_req *r, uv_loop_t *loop, http_done_cb done, void *ud)
{
    r->loop = loop;
    r->done = done;
    r->ud = ud;
    net_dial_init(&r->dial, loop, &r->conn, r->resp.max_body + 64 * 1024, on_dialed, r);
    net_conn *c = net_pool_get(r->pool_key);
    if (c) {
        r->conn = c;
        r->reused = 1;
        send_request(r);
        return;
    }
    int rc = net_dial_start(&r->dial, r->host, r->port, 0);
    if (rc < 0)
        fail(r, net_strerror(rc));
}
