/*
 * http.h: the HTTP/1.1 client's protocol, in plain C (no Lua): URL
 * parsing, the request's bytes, and one request's life on the loop: a
 * pooled keep-alive connection or a fresh one (dial.c, then TLS), the
 * request sent, the response read through http_resp.c with its caps, the
 * retry of a stale pooled connection, and the connection pooled again or
 * closed. src/lua/mod_http.c is its Lua binding (options from a table,
 * the fiber parked, the response table); spec/c/test_http.c tests it.
 * Public names: http_url_*, http_req_* and http_*_ok (http_resp_* are
 * http_resp.c's).
 *
 * A request, step by step:
 *   r = http_req_new()
 *   http_req_prepare(r, url, method, &opts)   -1: "bad url"
 *   http_req_header(r, ...) for each caller's header, then http_req_end(r, body, n)
 *   http_req_start(r, loop, done, ud)          done(r, err, ud) runs once
 * or http_req_free(r) at any point before done (a bad URL, a cancelled
 * record): no callback runs after it; its connection is closed, never
 * pooled.
 *
 * Connections are pooled (net/pool.c) under the URL up to its path, as
 * written ("http://host[:port]"), for TLS followed by "|verify|CAFILE"
 * or "|noverify|CAFILE" (CAFILE empty for the system's CAs):
 * a response that leaves the connection clean returns it. A pooled
 * connection that fails before any byte of the response comes is retried
 * once on a fresh one for idempotent methods (all but POST and PATCH; the
 * server may have closed it while idle), when the name resolves at once.
 *
 * Errors given to done: "connection refused", "connection reset",
 * "closed", "host not found", "body too large", "out of memory",
 * "bad response: <why>", "ssl handshake failed: <why>",
 * "certificate verify failed: <why>", the other net_strerror() strings,
 * each followed by " (METHOD URL)" (net/where.h: the URL's password as
 * "***", at most 256 bytes of it), so a record with several requests
 * tells which one failed. Timeouts are the caller's (it frees the
 * request, naming it with http_req_error first).
 */
#ifndef MW_HTTP_H
#define MW_HTTP_H

#include <stddef.h>
#include <uv.h>

#include "../util/buf.h"
#include "conn.h"
#include "dial.h"
#include "http_resp.h"
#include "where.h"

#define HTTP_DEFAULT_POOL_SIZE 1024
#define HTTP_DEFAULT_MAX_BODY (16u * 1024 * 1024)
/* The response head (status line and headers, as on the wire) and the
 * number of header lines, as nginx bounds a request's: a peer that sends
 * headers without end gets "bad response: headers too large". */
#define HTTP_DEFAULT_MAX_HEADER_BYTES (64 * 1024)
#define HTTP_DEFAULT_MAX_HEADERS 100

/* A URL split in place: the pointers point into the string parsed. */
typedef struct http_url {
    int https;
    int port;                /* 80 or 443 unless written */
    const char *host;        /* without an IPv6 literal's brackets */
    size_t host_len;
    const char *authority;   /* host[:port] as written: the Host header */
    size_t authority_len;
    size_t prefix_len;       /* "scheme://authority": the pool key's start */
    const char *path;        /* from the '/' or '?' after the authority; "/" if none */
    size_t path_len;         /* up to a '#' (the fragment is never sent) */
} http_url;

/* Split an "http://" or "https://" URL: host (a name, an IPv4 address or a
 * bracketed IPv6 one), an optional :port (1..65535), then nothing, or a
 * path or query. 0, or -1 for anything else: another scheme, an empty
 * host, a bad port, userinfo with a ':' in it, a fragment right after the
 * authority, a CR, LF or space in the path. */
int http_url_parse(const char *url, http_url *u);

/* A method is a non-empty run of upper-case letters. */
int http_method_ok(const char *m, size_t n);

/* A header line the caller may send: a non-empty name without CR, LF, NUL
 * or ':', a value without CR, LF or NUL. */
int http_header_ok(const char *name, size_t nl, const char *value, size_t vl);

/* What the caller chooses for a request. */
typedef struct http_opts {
    int keepalive;           /* keep the connection for the next request */
    int verify;              /* TLS: check the certificate and the name */
    const char *ca_file;     /* TLS: the CAs (NULL: the system's); copied */
    size_t pool_size;        /* idle connections kept per pool key */
    size_t max_body, max_header_bytes, max_headers; /* the response's caps */
} http_opts;

typedef struct http_req http_req;

/* The end of a request, once: err NULL, and r->resp holds the response
 * (status, hdrs, body; valid during the call); or err, the message (valid
 * during the call). r is released when it returns. */
typedef void (*http_done_cb)(http_req *r, const char *err, void *ud);

struct http_req {
    uv_loop_t *loop;
    http_done_cb done;
    void *ud;
    net_conn *conn;          /* owned: the connection in use, until pooled or closed */
    net_dial dial;           /* connects a fresh one into conn */
    char *url;               /* in strs: as given, for messages */
    char *host;              /* in strs: to resolve; also the TLS server name */
    char *ca_file;           /* owned, or NULL */
    char *pool_key;          /* in strs */
    mw_buf strs;             /* url, host, pool_key (memory kept when recycled) */
    const char *authority;   /* host[:port] as written: points into url */
    size_t authority_len;
    int port, https, verify, keepalive;
    int idempotent;          /* may be sent again after a stale connection */
    int is_head;             /* the response has no body */
    int wants_length;        /* POST and PUT say Content-Length even without a body */
    int have_host, have_ua, have_len, have_conn; /* the caller sent these headers */
    size_t pool_size;
    mw_buf req;              /* the request's bytes (memory kept when recycled) */
    http_resp resp;          /* the response parser, its caps and what it kept */
    int got_bytes;           /* a byte of the response arrived */
    int reused, retried;     /* conn came from the pool; the retry was used */
    char method[NET_WHERE_METHOD + 8]; /* as given (cut beyond), for messages */
    char failbuf[1024];      /* the error message given to done, where included */
    uint64_t started_ns;     /* the binding's: uv_hrtime at its start (metrics) */
};

/* A request (recycled: its buffers' memory kept), or NULL when out of
 * memory. The caller owns it until http_req_start. */
http_req *http_req_new(void);

/* Parse url, note the method, copy url, the host and the options, and
 * start the request's bytes: "METHOD path HTTP/1.1". 0, or -1 for a URL
 * http_url_parse refuses. method: http_method_ok. */
int http_req_prepare(http_req *r, const char *url, const char *method, const http_opts *o);

/* Append "name: value" (copied), checked by http_header_ok. */
void http_req_header(http_req *r, const char *name, size_t nl, const char *value, size_t vl);

/* End the head: Host, User-Agent, Connection: close (without keepalive)
 * and Content-Length unless the caller sent them (Content-Length when
 * there is a body, or for POST and PUT), the blank line, the body
 * (copied; NULL: none). */
void http_req_end(http_req *r, const char *body, size_t blen);

/* Send it on loop. done runs once, maybe before this returns. Ownership
 * passes to the request itself until done returns (or http_req_free). */
void http_req_start(http_req *r, uv_loop_t *loop, http_done_cb done, void *ud);

/* err followed by " (METHOD URL)", r's method and URL as net/where.h
 * shows them, in r's buffer (valid until r is freed or fails). For the
 * caller's own errors about r ("timeout"). */
const char *http_req_error(http_req *r, const char *err);

/* Release r at any point before done: its DNS query is cancelled, its
 * connection closed, never pooled; done never runs. */
void http_req_free(http_req *r);

/* Free the finished requests the calling thread keeps for reuse (at its
 * exit). */
void http_req_free_cached(void);

#endif
