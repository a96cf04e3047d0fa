/*
 * httpd.h: a small HTTP/1.1 server on the run's libuv loop, for the
 * metrics endpoint (src/app/expose.c). No Lua, no knowledge of the app: it
 * parses requests with llhttp and serves the bytes its handler gives.
 *
 * It serves GET and HEAD (HEAD: the head GET would have, no body); any
 * other method is 405 with `Allow: GET, HEAD`. Keep-alive and pipelined
 * requests are answered in order, one at a time: the next request is not
 * parsed before the previous response was written, so a client that never
 * reads costs one response and HTTPD_IN_BYTES of input, never more.
 *
 * The peer is not trusted: a request whose line, headers and body pass
 * HTTPD_MAX_REQUEST bytes, or with more than HTTPD_MAX_HEADERS header
 * lines, is answered 431 and closed; bytes that are not HTTP, 400 and
 * closed; past HTTPD_MAX_CONNS connections, a new one is closed at once; a
 * connection that has not completed a request and had its response written
 * within HTTPD_TIMEOUT_MS of opening or of its previous response (idle,
 * slow, or not reading) is closed. The handler runs on the loop and must
 * not block.
 *
 * Its handles do not keep the loop alive (uv_unref): the run ends when its
 * input ends, whatever clients are connected. httpd_close closes every
 * connection (their writes are cancelled) and the listener; the memory is
 * freed in the last close callback.
 */
#ifndef MW_HTTPD_H
#define MW_HTTPD_H

#include <stddef.h>
#include <uv.h>

#include "../util/buf.h"

#define HTTPD_MAX_CONNS 32
#define HTTPD_MAX_REQUEST 8192
#define HTTPD_MAX_HEADERS 64
#define HTTPD_TIMEOUT_MS 10000
#define HTTPD_IN_BYTES 16384

/* A response the handler fills: status (200 unless set), its content type
 * (borrowed: a string constant), and body bytes appended to `body` (the
 * server's buffer, emptied before each call). */
typedef struct httpd_response {
    int status;
    const char *content_type;
    mw_buf *body;
} httpd_response;

/* Called for each GET or HEAD with the path (the URL up to '?' or '#',
 * NUL-terminated, borrowed for the call). */
typedef void (*httpd_handler)(void *ud, const char *path, httpd_response *res);

typedef struct httpd httpd;

/* Listen on host:port (a numeric IPv4 or IPv6 address; port 0: one the
 * kernel picks, written to *bound_port). 0, or a negative libuv error
 * (UV_EADDRINUSE, UV_EADDRNOTAVAIL, UV_EACCES, UV_EINVAL for a host that
 * is not an address), with nothing left open. */
int httpd_start(httpd **out, uv_loop_t *loop, const char *host, int port, httpd_handler h, void *ud,
                int *bound_port);

/* Close the listener and every connection; `closed(ud)` (may be NULL) runs
 * when all have closed and the server's memory is freed. */
void httpd_close(httpd *s, void (*closed)(void *ud), void *ud);

/* Connections open now (for tests of the cap, through the app's gauge). */
size_t httpd_connections(const httpd *s);

#endif
