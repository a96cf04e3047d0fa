/* resp.c: the RESP2 reply reader (contract in resp.h). */
#include "resp.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void resp_init(resp_reader *r, size_t max_bytes, size_t max_elements, size_t max_depth)
{
    memset(r, 0, sizeof *r);
    r->max_bytes = max_bytes;
    /* node indexes are 32-bit */
    r->max_elements = max_elements < (1u << 30) ? max_elements : (1u << 30);
    r->max_depth = max_depth;
}

void resp_next_reply(resp_reader *r)
{
    r->len = r->depth = r->pos = r->elements = r->scanned = 0;
    r->err[0] = 0;
}

void resp_free(resp_reader *r)
{
    free(r->nodes);
    free(r->stack);
    r->nodes = NULL;
    r->stack = NULL;
    r->cap = r->stack_cap = r->len = r->depth = 0;
}

static int bad(resp_reader *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int bad(resp_reader *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->err, sizeof r->err, fmt, ap);
    va_end(ap);
    return RESP_BAD;
}

/* At most 40 bytes of a bad line, quoted, control and non-ASCII bytes as
 * \xHH (what the Lua client shows). */
static const char *shown(const char *s, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    out[o++] = '\'';
    for (size_t i = 0; i < n && i < 40 && o + 6 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 32 || c >= 127)
            o += (size_t)snprintf(out + o, cap - o, "\\x%02x", c);
        else
            out[o++] = (char)c;
    }
    if (n > 40 && o + 5 < cap) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o++] = '\'';
    out[o] = 0;
    return out;
}

/* A strict decimal integer ("-?[0-9]+") within int64_t: 0, or -1. */
static int parse_i64(const char *s, size_t n, int64_t *v)
{
    int neg = n > 0 && s[0] == '-';
    size_t i = (size_t)neg;
    if (i == n)
        return -1;
    uint64_t limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX, acc = 0;
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        unsigned d = (unsigned)(s[i] - '0');
        if (acc > (limit - d) / 10)
            return -1;
        acc = acc * 10 + d;
    }
    *v = neg ? (acc == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)acc) : (int64_t)acc;
    return 0;
}

/* The array p (*cap elements of `size` bytes, `len` used), with room for
 * one more: p itself, a larger copy (*cap updated), or NULL (out of
 * memory; p is left as it was). */
static void *grow(resp_reader *r, void *p, size_t *cap, size_t len, size_t size)
{
    if (len < *cap)
        return p;
    size_t ncap = *cap ? *cap * 2 : 16;
    void *np = realloc(p, ncap * size);
    if (!np) {
        bad(r, "out of memory");
        return NULL;
    }
    *cap = ncap;
    return np;
}

static int push_node(resp_reader *r, const resp_node *x)
{
    resp_node *nodes = grow(r, r->nodes, &r->cap, r->len, sizeof *nodes);
    if (!nodes)
        return RESP_BAD;
    r->nodes = nodes;
    r->nodes[r->len++] = *x;
    return 0;
}

static int open_array(resp_reader *r, uint32_t node, uint32_t n)
{
    resp_frame *stack = grow(r, r->stack, &r->stack_cap, r->depth, sizeof *stack);
    if (!stack)
        return RESP_BAD;
    r->stack = stack;
    r->stack[r->depth++] = (resp_frame){ node, n };
    return 0;
}

/* A "$N" or "*N" line: 1 for a nil ("-1": x is one), 0 with *v = N >= 0,
 * or RESP_BAD when it is not a length. */
static int nil_or_length(resp_reader *r, const char *s, size_t l, resp_node *x, int64_t *v)
{
    char sh[200];
    if (parse_i64(s + 1, l - 1, v) != 0 || *v < -1)
        return bad(r, "not %s length: %s", s[0] == '$' ? "a bulk" : "an array", shown(s, l, sh, sizeof sh));
    if (*v == -1) {
        x->type = RESP_NIL;
        return 1;
    }
    return 0;
}

/* A bulk of v bytes after its line (ending at line_end). */
static int bulk(resp_reader *r, const char *d, size_t n, size_t line_end, int64_t v, resp_node *x)
{
    if ((uint64_t)v > RESP_MAX_BULK)
        return bad(r, "a bulk of %lld bytes (the most is 512 MiB)", (long long)v);
    if (line_end + (uint64_t)v + 2 > r->max_bytes)
        return bad(r, "a bulk of %lld bytes: more than max_reply_bytes (%zu) in one reply", (long long)v,
                   r->max_bytes);
    if (n < line_end + (size_t)v + 2)
        return RESP_MORE; /* r->pos stays at its line */
    if (d[line_end + v] != '\r' || d[line_end + v + 1] != '\n')
        return bad(r, "a bulk of %lld bytes not followed by CRLF", (long long)v);
    x->type = RESP_BULK;
    x->off = line_end;
    x->n = (uint32_t)v;
    r->pos = line_end + (size_t)v + 2;
    return RESP_DONE;
}

/* An array of v elements (they follow as values of their own). */
static int array(resp_reader *r, int64_t v, resp_node *x)
{
    if ((uint64_t)v > r->max_elements - r->elements)
        return bad(r, "an array of %lld elements: more than max_elements (%zu) in one reply", (long long)v,
                   r->max_elements);
    if (r->depth >= r->max_depth)
        return bad(r, "arrays nested deeper than max_depth (%zu)", r->max_depth);
    r->elements += (size_t)v;
    x->type = RESP_ARRAY;
    x->n = (uint32_t)v;
    return RESP_DONE;
}

/* Read the value whose line is d[at..at+l) (its terminator ends at
 * line_end) into *x. RESP_DONE (x filled, r->pos advanced), RESP_MORE (a
 * bulk's bytes have not all arrived), or RESP_BAD. */
static int value(resp_reader *r, const char *d, size_t n, size_t at, size_t l, size_t line_end, resp_node *x)
{
    const char *s = d + at;
    char sh[200];
    int64_t v;
    int rc = RESP_DONE;
    memset(x, 0, sizeof *x);
    switch (s[0]) {
    case '+':
    case '-':
        x->type = s[0] == '+' ? RESP_STATUS : RESP_ERROR;
        x->off = at + 1;
        x->n = (uint32_t)(l - 1);
        break;
    case ':':
        if (parse_i64(s + 1, l - 1, &x->i) != 0)
            return bad(r, "not an integer: %s", shown(s, l, sh, sizeof sh));
        x->type = RESP_INT;
        break;
    case '$':
    case '*':
        if ((rc = nil_or_length(r, s, l, x, &v)) != 0)
            break; /* a nil, or bad */
        if (s[0] == '$')
            return bulk(r, d, n, line_end, v, x);
        rc = array(r, v, x);
        break;
    default:
        return bad(r, "unknown type: %s", shown(s, l, sh, sizeof sh));
    }
    if (rc == RESP_BAD)
        return rc;
    r->pos = line_end;
    return RESP_DONE;
}

int resp_feed(resp_reader *r, const char *d, size_t n, size_t *used)
{
    for (;;) {
        size_t at = r->pos;
        /* (a line that arrives in pieces is searched once, not from its
         * start again with every piece) */
        size_t from = r->scanned > at ? r->scanned : at;
        const char *nl = from < n ? memchr(d + from, '\n', n - from) : NULL;
        if (!nl) {
            r->scanned = n;
            return n > r->max_bytes ? bad(r, "more than max_reply_bytes (%zu) in one reply", r->max_bytes)
                                    : RESP_MORE;
        }
        size_t line_end = (size_t)(nl - d) + 1;
        if (line_end > r->max_bytes)
            return bad(r, "more than max_reply_bytes (%zu) in one reply", r->max_bytes);
        size_t l = line_end - 1 - at;
        if (l > 0 && d[at + l - 1] == '\r')
            l--;
        if (l == 0)
            return bad(r, "an empty line");
        resp_node x;
        int rc = value(r, d, n, at, l, line_end, &x);
        if (rc != RESP_DONE)
            return rc;
        uint32_t idx = (uint32_t)r->len;
        if (push_node(r, &x) != 0)
            return RESP_BAD;
        if (x.type == RESP_ARRAY && x.n > 0) {
            if (open_array(r, idx, x.n) != 0)
                return RESP_BAD;
            continue;
        }
        if (x.type == RESP_ARRAY)
            r->nodes[idx].end = idx + 1;
        /* A value ended: it may end the arrays around it. */
        while (r->depth > 0 && --r->stack[r->depth - 1].left == 0) {
            r->nodes[r->stack[r->depth - 1].node].end = (uint32_t)r->len;
            r->depth--;
        }
        if (r->depth == 0) {
            *used = r->pos;
            return RESP_DONE;
        }
    }
}
