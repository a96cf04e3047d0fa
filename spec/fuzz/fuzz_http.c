/*
 * fuzz_http.c: libFuzzer target for the HTTP response parser
 * (src/net/http_resp.c: the llhttp callbacks, header accumulation under
 * max_header_bytes/max_headers, bodies under max_body, the end of a
 * response by length, chunks or the peer's close), the code
 * src/lua/mod_http.c runs on every byte a server sends.
 *
 * Input: 4 bytes of parameters, then the bytes the server sends:
 *   [0] bit 0: the request was HEAD; bits 1-7: seed of the random split
 *   [1] max_headers = 1 + [1] % 32
 *   [2] max_header_bytes = 1 + [2] * 8 (1..2041)
 *   [3] max_body = [3] * 16 (0..4080), or 16 MiB (mod_http's default) when 255
 * The bytes are parsed three times, as mod_http feeds them (each read
 * appended to what is left, the parser fed until the response completes,
 * then the peer's close if it did not): in one piece, in random pieces,
 * and one byte at a time (inputs up to 1 KiB). Checks:
 *  - no crash, no leak, no sanitizer report;
 *  - memory bounded by the caps: the kept names and values at most
 *    max_header_bytes (plus their NUL separators, two per line), header
 *    lines at most max_headers, the body at most max_body;
 *  - a complete response: a 3-digit status; "name\0value\0" pairs, one per
 *    header line counted, names lower-cased; the bytes it used within the
 *    input; the same status, headers, body, bytes used and keep-alive in
 *    all three parses;
 *  - a body delimited by the close (llhttp_message_needs_eof after the
 *    head) completes at the close;
 *  - a refusal in one parse is a refusal in the others (which refusal may
 *    depend on where the pieces end: a cap can be passed at a piece's end
 *    before llhttp sees a bad byte later in the same header value).
 */
#include "../../src/net/http_resp.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond, ...)                                                                \
    do {                                                                                \
        if (!(cond)) {                                                                  \
            fprintf(stderr, "fuzz_http: %s:%d: check failed: %s\n  ", __FILE__, __LINE__, \
                    #cond);                                                             \
            fprintf(stderr, __VA_ARGS__);                                               \
            fputc('\n', stderr);                                                        \
            abort();                                                                    \
        }                                                                               \
    } while (0)

/* What one parse gave. */
typedef struct outcome {
    int rc;         /* HTTP_RESP_* from feed; HTTP_RESP_OK with complete or not */
    int complete;
    int by_eof;     /* completed by the close */
    size_t used;    /* bytes of the input the response took */
    int status, keep_alive;
    size_t nheaders;
} outcome;

static http_resp P[3];

static uint32_t rng(uint32_t *s)
{
    *s = *s * 1103515245u + 12345u;
    return *s >> 16;
}

/* mode 0: one piece; 1: random pieces; 2: one byte each. */
static outcome parse(http_resp *h, const uint8_t *p, size_t n, int is_head, uint32_t seed, int mode)
{
    outcome o = { 0 };
    http_resp_init(h, is_head);
    size_t off = 0;       /* consumed */
    size_t arrived = 0;   /* read from the "socket" so far */
    while (arrived < n) {
        size_t piece = mode == 0 ? n : mode == 2 ? 1 : 1 + rng(&seed) % (rng(&seed) % 4 ? 16 : 512);
        if (piece > n - arrived)
            piece = n - arrived;
        arrived += piece;
        size_t used;
        int rc = http_resp_feed(h, (const char *)p + off, arrived - off, &used);
        CHECK(used <= arrived - off, "used %zu of %zu", used, arrived - off);
        off += used;
        if (rc != HTTP_RESP_OK) {
            o.rc = rc;
            return o;
        }
        if (h->complete)
            break;
        CHECK(off == arrived, "an incomplete response left %zu bytes unconsumed", arrived - off);
    }
    if (!h->complete && n > 0) {
        /* a body that ends at the close (no length, not chunked) */
        int by_close = h->head_done && h->close_delimited;
        if (http_resp_eof(h)) {
            CHECK(h->complete, "eof said complete");
            o.by_eof = 1;
        }
        CHECK(!by_close || o.by_eof, "a close-delimited body (status %d, %zu bytes) is refused at the close",
              h->status, h->body.len);
    }
    o.complete = h->complete;
    o.used = off;
    o.status = h->status;
    o.nheaders = h->nheaders;
    if (o.complete)
        o.keep_alive = o.by_eof ? 0 : http_resp_keep_alive(h);
    return o;
}

static void check_bounds(const http_resp *h)
{
    /* the line past max_headers is counted, then refused (its name kept) */
    CHECK(h->nheaders <= h->max_headers + 1, "%zu header lines, max_headers %zu", h->nheaders, h->max_headers);
    CHECK(h->hdrs.len <= h->max_header_bytes + 2 * h->max_headers + 2, "kept %zu bytes of headers, max %zu",
          h->hdrs.len, h->max_header_bytes);
    CHECK(h->body.len <= h->max_body, "kept %zu bytes of body, max_body %zu", h->body.len, h->max_body);
}

static void check_complete(const http_resp *h, const outcome *o, size_t n)
{
    CHECK(o->used <= n, "used %zu of %zu", o->used, n);
    CHECK(h->nheaders <= h->max_headers, "%zu header lines, max_headers %zu", h->nheaders, h->max_headers);
    CHECK(h->status >= 0 && h->status <= 999, "status %d", h->status); /* llhttp takes any 3 digits: "025" is 25 */
    /* The block mod_http's build_headers walks: NUL-terminated name, value. */
    size_t pairs = 0, i = 0;
    while (i < h->hdrs.len) {
        const char *name = h->hdrs.p + i;
        const char *z = memchr(name, '\0', h->hdrs.len - i);
        CHECK(z, "a name without its NUL at %zu", i);
        for (const char *c = name; c < z; c++)
            CHECK(!(*c >= 'A' && *c <= 'Z'), "an upper-case name");
        i = (size_t)(z - h->hdrs.p) + 1;
        CHECK(i < h->hdrs.len, "a name without a value");
        z = memchr(h->hdrs.p + i, '\0', h->hdrs.len - i);
        CHECK(z, "a value without its NUL at %zu", i);
        i = (size_t)(z - h->hdrs.p) + 1;
        pairs++;
    }
    CHECK(pairs == h->nheaders, "%zu name/value pairs for %zu header lines", pairs, h->nheaders);
}

static void same(const http_resp *a, const outcome *x, const http_resp *b, const outcome *y, const char *what)
{
    CHECK(x->complete == y->complete && (x->rc == 0) == (y->rc == 0),
          "%s: complete %d/%d, refused %d/%d", what, x->complete, y->complete, x->rc, y->rc);
    if (!x->complete)
        return;
    CHECK(x->by_eof == y->by_eof && x->used == y->used && x->status == y->status && x->keep_alive == y->keep_alive,
          "%s: by_eof %d/%d used %zu/%zu status %d/%d keep_alive %d/%d", what, x->by_eof, y->by_eof, x->used,
          y->used, x->status, y->status, x->keep_alive, y->keep_alive);
    CHECK(a->hdrs.len == b->hdrs.len && (a->hdrs.len == 0 || memcmp(a->hdrs.p, b->hdrs.p, a->hdrs.len) == 0),
          "%s: headers differ", what);
    CHECK(a->body.len == b->body.len && (a->body.len == 0 || memcmp(a->body.p, b->body.p, a->body.len) == 0),
          "%s: bodies differ (%zu/%zu bytes)", what, a->body.len, b->body.len);
}

static void finish(void)
{
    for (int i = 0; i < 3; i++) {
        free(P[i].hdrs.p);
        free(P[i].body.p);
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    atexit(finish);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4)
        return 0;
    int is_head = data[0] & 1;
    uint32_t seed = data[0] >> 1;
    for (int i = 0; i < 3; i++) {
        P[i].max_headers = 1 + data[1] % 32;
        P[i].max_header_bytes = 1 + (size_t)data[2] * 8;
        P[i].max_body = data[3] == 255 ? 16u * 1024 * 1024 : (size_t)data[3] * 16;
    }
    const uint8_t *p = data + 4;
    size_t n = size - 4;
    outcome o[3];
    int modes = n <= 1024 ? 3 : 2;
    for (int m = 0; m < modes; m++) {
        o[m] = parse(&P[m], p, n, is_head, seed, m);
        check_bounds(&P[m]);
        if (o[m].complete)
            check_complete(&P[m], &o[m], n);
    }
    same(&P[0], &o[0], &P[1], &o[1], "one piece vs random pieces");
    if (modes == 3)
        same(&P[0], &o[0], &P[2], &o[2], "one piece vs byte by byte");
    /* Keep the buffers from growing without bound across inputs (as
     * mod_http keeps a finished request's buffers only up to 64 KiB). */
    for (int i = 0; i < 3; i++) {
        if (P[i].body.cap > 64 * 1024 || P[i].hdrs.cap > 64 * 1024) {
            free(P[i].hdrs.p);
            free(P[i].body.p);
            memset(&P[i].hdrs, 0, sizeof P[i].hdrs);
            memset(&P[i].body, 0, sizeof P[i].body);
        }
    }
    return 0;
}
