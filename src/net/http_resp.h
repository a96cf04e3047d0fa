/*
 * http_resp.h: an HTTP/1.1 response parser on llhttp, in plain C (no Lua,
 * no libuv): the llhttp callbacks and the caps on the head, the header
 * lines and the body. src/lua/mod_http.c feeds it what the connection
 * reads; spec/fuzz/fuzz_http.c feeds it arbitrary bytes in arbitrary
 * splits.
 *
 *   http_resp_init(h, is_head)    before the first byte (and before a retry)
 *   http_resp_feed(h, d, n, &used)
 *       0: fine so far, or h->complete: the response ended after `used`
 *          bytes of d (anything after it is not this response's);
 *       else HTTP_RESP_HEADERS_TOO_LARGE (the head did not end within
 *       max_header_bytes, or more than max_headers header/trailer lines, or
 *       their names and values past max_header_bytes),
 *       HTTP_RESP_BODY_TOO_LARGE (past max_body) or HTTP_RESP_BAD
 *       (http_resp_reason says why); then h is done with.
 *   http_resp_eof(h)   the peer closed: 1 if that ends the response (a body
 *       delimited by the close, as the head said: h->close_delimited),
 *       then h->complete is set. A chunked body cut anywhere, its
 *       trailers included, is 0: truncated.
 *
 * Interim responses (1xx but 101) are skipped: the final one is the
 * answer. Every byte before the final head's end (interim heads, and a
 * body llhttp reads for a 1xx with a Content-Length) counts against
 * max_header_bytes, in whatever pieces the bytes arrive.
 *
 * What is kept: status; hdrs, "name\0value\0" pairs (names lower-cased,
 * trailers included); body. Memory: hdrs.len <= max_header_bytes + 2 *
 * max_headers + 2 bytes, body.len <= max_body (plus mw_buf's doubling).
 */
#ifndef MW_HTTP_RESP_H
#define MW_HTTP_RESP_H

#include <llhttp.h>
#include <stddef.h>

#include "../util/buf.h"

enum { HTTP_RESP_OK = 0, HTTP_RESP_HEADERS_TOO_LARGE, HTTP_RESP_BODY_TOO_LARGE, HTTP_RESP_BAD };

typedef struct http_resp {
    llhttp_t parser;
    size_t max_body, max_header_bytes, max_headers; /* set by the caller */
    int is_head;          /* a HEAD response has no body */
    size_t head_bytes;    /* bytes of the head fed to the parser so far */
    size_t nheaders;      /* header (and trailer) lines seen */
    int head_done;        /* the final (not 1xx) response's head ended */
    int close_delimited;  /* the head says: the body ends at the close */
    int status;
    int complete;
    int err;              /* HTTP_RESP_*: why a callback stopped the parser */
    int fast;             /* parsed whole by the fast path, not llhttp */
    int fast_keep_alive;  /* ... and the connection may be reused */
    int parser_ready;     /* parser was set up: on llhttp's first byte, as
                           * the fast path's answers never need it */
    mw_buf hdrs;          /* "name\0value\0" pairs, names lower-cased */
    mw_buf body;
} http_resp;

/* Start (or restart) a response: state reset, the buffers emptied (their
 * memory kept), the caps and the buffers' memory left as they are. */
void http_resp_init(http_resp *h, int is_head);

int http_resp_feed(http_resp *h, const char *d, size_t n, size_t *used);

int http_resp_eof(http_resp *h);

/* llhttp's reason for HTTP_RESP_BAD. */
const char *http_resp_reason(const http_resp *h);

/* The response allows the connection to be reused. */
int http_resp_keep_alive(const http_resp *h);

#endif
