/*
 * parse.c: a strict RFC 8259 parser from one JSON text to a tape (json.h).
 *
 * Strict means: whatever is not RFC 8259 is refused with the byte where it
 * went wrong, never repaired. No byte-order mark, no NUL byte, no control
 * character inside a string, no invalid UTF-8 (overlong forms, UTF-16
 * surrogates, code points above U+10FFFF), no lone surrogate escapes, no
 * leading zeros, no '+', hex, NaN or Infinity, no trailing commas, nothing
 * after the value, nesting at most JSON_MAX_DEPTH deep, and no number that
 * overflows a double.
 *
 * The parser is iterative (an explicit stack of open containers), so a
 * hostile depth costs a bounded C stack. It allocates only to grow the tape
 * (and, for objects with escaped keys, a scratch buffer to compare names).
 */
#define _GNU_SOURCE
#include "json.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct parser {
    const unsigned char *s;
    size_t len, i;
    json_tape *t;
    char *err;
    size_t errlen;
} parser;

/* Byte classes inside a string: 0 plain ASCII, 1 '"', 2 '\\', 3 control,
 * 4 non-ASCII (a UTF-8 sequence to validate). */
static const unsigned char str_class[256] = {
    3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3,
    0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
};

static int fail(parser *p, size_t at, const char *fmt, const char *arg)
{
    char what[256];
    snprintf(what, sizeof what, fmt, arg);
    snprintf(p->err, p->errlen, "malformed JSON at byte %zu: %s", at + 1, what);
    return -1;
}

/* Describe the byte at `at` for an "unexpected" message. */
static int fail_byte(parser *p, size_t at, const char *expected)
{
    char what[220];
    if (at >= p->len) {
        snprintf(what, sizeof what, "the line ends where %s was expected", expected);
        return fail(p, p->len ? p->len - 1 : 0, "%s", what);
    }
    unsigned char c = p->s[at];
    if (c == 0)
        snprintf(what, sizeof what, "a NUL byte where %s was expected", expected);
    else if (c < 0x20 || c == 0x7f)
        snprintf(what, sizeof what, "control character 0x%02x where %s was expected", c, expected);
    else if (c >= 0x80)
        snprintf(what, sizeof what, "byte 0x%02x where %s was expected", c, expected);
    else
        snprintf(what, sizeof what, "'%c' where %s was expected", c, expected);
    return fail(p, at, "%s", what);
}

static inline void skip_ws(parser *p)
{
    while (p->i < p->len) {
        unsigned char c = p->s[p->i];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            break;
        p->i++;
    }
}

static json_node *add(parser *p, int type, unsigned depth)
{
    json_tape *t = p->t;
    if (t->n == t->cap) {
        uint32_t cap = t->cap ? t->cap * 2 : 64;
        json_node *n = realloc(t->nodes, (size_t)cap * sizeof *n);
        if (!n) {
            snprintf(p->err, p->errlen, "out of memory parsing JSON");
            return NULL;
        }
        t->nodes = n;
        t->cap = cap;
    }
    json_node *x = &t->nodes[t->n++];
    x->type = (uint8_t)type;
    x->flags = 0;
    x->depth = (uint16_t)depth;
    x->off = (uint32_t)p->i;
    x->len = 0;
    x->n = 0;
    x->end = t->n;
    x->anchor = 0;
    x->v.u = 0;
    x->user = NULL;
    return x;
}

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

static int hex4(parser *p, size_t at, unsigned *out)
{
    if (at + 4 > p->len)
        return fail(p, at < p->len ? at : p->len - 1, "%s", "a \\u escape needs 4 hex digits");
    unsigned v = 0;
    for (size_t k = 0; k < 4; k++) {
        int h = hexval(p->s[at + k]);
        if (h < 0)
            return fail(p, at + k, "%s", "a \\u escape needs 4 hex digits");
        v = v << 4 | (unsigned)h;
    }
    *out = v;
    return 0;
}

/* Length of the valid UTF-8 sequence at s[i] (a non-ASCII lead), or 0. */
static size_t utf8_seq(const unsigned char *s, size_t i, size_t len)
{
    unsigned char c = s[i];
    size_t need;
    unsigned char lo = 0x80, hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf)
        need = 1;
    else if (c >= 0xe0 && c <= 0xef) {
        need = 2;
        if (c == 0xe0)
            lo = 0xa0; /* no overlong forms */
        else if (c == 0xed)
            hi = 0x9f; /* no UTF-16 surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        need = 3;
        if (c == 0xf0)
            lo = 0x90;
        else if (c == 0xf4)
            hi = 0x8f; /* nothing above U+10FFFF */
    } else {
        return 0;
    }
    if (i + need >= len)
        return 0;
    if (s[i + 1] < lo || s[i + 1] > hi)
        return 0;
    for (size_t k = 2; k <= need; k++)
        if (s[i + k] < 0x80 || s[i + k] > 0xbf)
            return 0;
    return need + 1;
}

int json_utf8_valid(const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    for (size_t i = 0; i < n;) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        size_t k = utf8_seq(s, i, n);
        if (!k)
            return 0;
        i += k;
    }
    return 1;
}

/* A string starting at the '"' at p->i; leaves p->i after the closing quote. */
static int parse_string(parser *p, json_node *x)
{
    const unsigned char *s = p->s;
    size_t i = p->i + 1, len = p->len;
    for (;;) {
        while (i < len && str_class[s[i]] == 0)
            i++;
        if (i >= len)
            return fail(p, p->i, "%s", "unterminated string");
        switch (str_class[s[i]]) {
        case 1:
            p->i = i + 1;
            x->len = (uint32_t)(p->i - x->off);
            return 0;
        case 2: {
            x->flags |= JSON_ESCAPED;
            if (i + 1 >= len)
                return fail(p, i, "%s", "unterminated string");
            unsigned char e = s[i + 1];
            if (e == 'u') {
                unsigned cp;
                if (hex4(p, i + 2, &cp))
                    return -1;
                if (cp >= 0xdc00 && cp <= 0xdfff)
                    return fail(p, i, "%s", "a lone low surrogate escape (\\uDC00-\\uDFFF) is not a character");
                if (cp >= 0xd800 && cp <= 0xdbff) {
                    unsigned lo;
                    if (i + 7 >= len || s[i + 6] != '\\' || s[i + 7] != 'u')
                        return fail(p, i, "%s", "a high surrogate escape must be followed by a low one (\\uDC00-\\uDFFF)");
                    if (hex4(p, i + 8, &lo))
                        return -1;
                    if (lo < 0xdc00 || lo > 0xdfff)
                        return fail(p, i + 6, "%s", "a high surrogate escape must be followed by a low one (\\uDC00-\\uDFFF)");
                    i += 12;
                } else {
                    i += 6;
                }
            } else if (e == '"' || e == '\\' || e == '/' || e == 'b' || e == 'f' || e == 'n' || e == 'r' ||
                       e == 't') {
                i += 2;
            } else if (e == 0) {
                return fail(p, i + 1, "%s", "a NUL byte in a string escape");
            } else if (e < 0x20 || e >= 0x7f) {
                return fail(p, i + 1, "%s", "an invalid escape in a string");
            } else {
                char c[2] = { (char)e, 0 };
                return fail(p, i, "invalid escape '\\%s' in a string", c);
            }
            break;
        }
        case 3:
            if (s[i] == 0)
                return fail(p, i, "%s", "a NUL byte in a string (write it as \\u0000)");
            {
                char hx[8];
                snprintf(hx, sizeof hx, "0x%02x", s[i]);
                return fail(p, i, "control character %s in a string (it must be escaped)", hx);
            }
        default: {
            size_t k = utf8_seq(s, i, len);
            if (!k) {
                char hx[8];
                snprintf(hx, sizeof hx, "0x%02x", s[i]);
                return fail(p, i, "invalid UTF-8 (byte %s) in a string", hx);
            }
            i += k;
        }
        }
    }
}

static const double pow10_exact[23] = {
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
    1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
};

#define TWO53 9007199254740992ULL

static int parse_number(parser *p, json_node *x)
{
    const unsigned char *s = p->s;
    size_t i = p->i, len = p->len, start = i;
    int neg = 0;
    if (s[i] == '-') {
        neg = 1;
        i++;
    }
    if (i >= len || s[i] < '0' || s[i] > '9')
        return fail(p, i < len ? i : len - 1, "%s", "invalid number: a digit must follow '-'");
    uint64_t m = 0;      /* significant digits, while they fit */
    int sig = 0;         /* significant digits seen */
    int dropped = 0;     /* digits beyond the 19 that fit in m */
    int int_overflow = 0;
    long exp10 = 0;
    if (s[i] == '0') {
        i++;
        if (i < len && s[i] >= '0' && s[i] <= '9')
            return fail(p, start, "%s", "invalid number: leading zero");
    } else {
        for (; i < len && s[i] >= '0' && s[i] <= '9'; i++) {
            if (sig < 19) {
                m = m * 10 + (uint64_t)(s[i] - '0');
                sig++;
            } else {
                /* A 20th digit may still fit in uint64. */
                if (!int_overflow && dropped == 0 && m <= (UINT64_MAX - (uint64_t)(s[i] - '0')) / 10) {
                    m = m * 10 + (uint64_t)(s[i] - '0');
                    sig++;
                } else {
                    int_overflow = 1;
                    dropped++;
                }
            }
        }
    }
    int is_int = 1;
    if (i < len && s[i] == '.') {
        is_int = 0;
        i++;
        if (i >= len || s[i] < '0' || s[i] > '9')
            return fail(p, i < len ? i : len - 1, "%s", "invalid number: a digit must follow '.'");
        for (; i < len && s[i] >= '0' && s[i] <= '9'; i++) {
            if (sig == 0 && s[i] == '0') {
                exp10--; /* leading zeros of the fraction */
            } else if (sig < 19) {
                m = m * 10 + (uint64_t)(s[i] - '0');
                sig++;
                exp10--;
            } else {
                dropped++;
            }
        }
    }
    if (i < len && (s[i] == 'e' || s[i] == 'E')) {
        is_int = 0;
        i++;
        int eneg = 0;
        if (i < len && (s[i] == '+' || s[i] == '-')) {
            eneg = s[i] == '-';
            i++;
        }
        if (i >= len || s[i] < '0' || s[i] > '9')
            return fail(p, i < len ? i : len - 1, "%s", "invalid number: a digit must follow the exponent");
        long e = 0;
        for (; i < len && s[i] >= '0' && s[i] <= '9'; i++)
            if (e < 100000)
                e = e * 10 + (s[i] - '0');
        exp10 += eneg ? -e : e;
    }
    if (i < len) {
        unsigned char c = s[i];
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
            c == '+' || c == '-' || c == '_')
            return fail(p, i, "%s", "invalid number");
    }
    x->len = (uint32_t)(i - start);
    p->i = i;

    if (is_int && !int_overflow) {
        if (!neg) {
            if (m <= TWO53) {
                x->flags |= JSON_INT;
                x->v.d = (double)m;
            } else if (m <= (uint64_t)INT64_MAX) {
                x->flags |= JSON_I64;
                x->v.i = (int64_t)m;
                p->t->bigints++;
            } else {
                x->flags |= JSON_U64;
                x->v.u = m;
                p->t->bigints++;
            }
            return 0;
        }
        if (m <= TWO53) {
            x->flags |= JSON_INT;
            x->v.d = -(double)m;
            return 0;
        }
        if (m <= (uint64_t)INT64_MAX + 1) {
            x->flags |= JSON_I64;
            x->v.i = m == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)m;
            p->t->bigints++;
            return 0;
        }
        /* Below INT64_MIN: a double (the bytes are kept for untouched values). */
    }
    /* Clinger's fast path: an exact significand and an exact power of ten
     * give the correctly rounded double with one operation. */
    if (!dropped && !int_overflow && m < TWO53 && exp10 >= -22 && exp10 <= 22) {
        double d = (double)m;
        d = exp10 < 0 ? d / pow10_exact[-exp10] : d * pow10_exact[exp10];
        x->v.d = neg ? -d : d;
        return 0;
    }
    char small[64], *tmp = small;
    size_t n = i - start;
    if (n >= sizeof small) {
        tmp = malloc(n + 1);
        if (!tmp)
            return fail(p, start, "%s", "out of memory reading a number");
    }
    memcpy(tmp, s + start, n);
    tmp[n] = 0;
    double d = strtod(tmp, NULL);
    if (tmp != small)
        free(tmp);
    if (isinf(d))
        return fail(p, start, "%s", "number out of range (beyond a double's largest value)");
    x->v.d = d;
    return 0;
}

/* The name of key node k for comparison: raw bytes inside the quotes, or
 * its decoded form appended to scratch (then *off says where). */
typedef struct keyname {
    const char *s;
    size_t n, off;
    int decoded;
    uint32_t pos;
} keyname;

static int key_eq(const keyname *a, const keyname *b)
{
    return a->n == b->n && memcmp(a->s, b->s, a->n) == 0;
}

static int key_cmp(const void *x, const void *y)
{
    const keyname *a = x, *b = y;
    size_t n = a->n < b->n ? a->n : b->n;
    int c = memcmp(a->s, b->s, n);
    if (c)
        return c;
    if (a->n != b->n)
        return a->n < b->n ? -1 : 1;
    return a->pos < b->pos ? -1 : a->pos > b->pos;
}

/* Mark later members whose name repeats an earlier one (JSON_DUP). */
static int mark_duplicates(parser *p, uint32_t obj)
{
    json_node *nodes = p->t->nodes;
    uint32_t n = nodes[obj].n;
    if (n < 2)
        return 0;
    keyname small[32], *k = n <= 32 ? small : malloc((size_t)n * sizeof *k);
    if (!k)
        return fail(p, nodes[obj].off, "%s", "out of memory parsing JSON");
    mw_buf scratch = { NULL, 0, 0 };
    mw_buf one = { NULL, 0, 0 };
    int rc = 0;
    uint32_t idx = obj + 1;
    for (uint32_t m = 0; m < n; m++) {
        json_node *key = &nodes[idx];
        k[m].pos = idx;
        k[m].decoded = (key->flags & JSON_ESCAPED) != 0;
        if (k[m].decoded) {
            if (json_unescape((const char *)p->s, key, &one) || mw_buf_add(&scratch, one.p, one.len)) {
                rc = fail(p, key->off, "%s", "out of memory parsing JSON");
                goto out;
            }
            k[m].off = scratch.len - one.len;
            k[m].n = one.len;
        } else {
            k[m].s = (const char *)p->s + key->off + 1;
            k[m].n = key->len - 2;
        }
        idx = nodes[idx + 1].end;
    }
    for (uint32_t m = 0; m < n; m++)
        if (k[m].decoded)
            k[m].s = scratch.p + k[m].off;
    if (n <= 32) {
        /* Most objects have no duplicate: a 64-bit filter on (length,
         * first byte, last byte) proves it without comparing pairs. */
        uint64_t seen = 0;
        int maybe = 0;
        for (uint32_t m = 0; m < n && !maybe; m++) {
            unsigned h = (unsigned)k[m].n * 31u;
            if (k[m].n)
                h += (unsigned char)k[m].s[0] * 7u + (unsigned char)k[m].s[k[m].n - 1];
            uint64_t bit = 1ULL << (h & 63);
            maybe = (seen & bit) != 0;
            seen |= bit;
        }
        for (uint32_t j = 1; maybe && j < n; j++)
            for (uint32_t i = 0; i < j; i++)
                if (key_eq(&k[i], &k[j])) {
                    nodes[k[j].pos].flags |= JSON_DUP;
                    nodes[k[i].pos].n = k[j].pos + 1; /* the value kept */
                    p->t->dups++;
                    break;
                }
    } else {
        qsort(k, n, sizeof *k, key_cmp);
        uint32_t firstpos = 0;
        for (uint32_t j = 0; j < n; j++) {
            if (j > 0 && key_eq(&k[j - 1], &k[j])) {
                nodes[k[j].pos].flags |= JSON_DUP;
                nodes[firstpos].n = k[j].pos + 1; /* the value kept */
                p->t->dups++;
            } else {
                firstpos = k[j].pos;
            }
        }
    }
out:
    free(scratch.p);
    free(one.p);
    if (k != small)
        free(k);
    return rc;
}

static int close_container(parser *p, uint32_t idx)
{
    json_node *x = &p->t->nodes[idx];
    x->end = p->t->n;
    x->len = (uint32_t)(p->i - x->off);
    if (x->type == JSON_OBJECT)
        return mark_duplicates(p, idx);
    return 0;
}

static int literal(parser *p, json_node *x, const char *word, size_t n)
{
    if (p->len - p->i < n || memcmp(p->s + p->i, word, n) != 0)
        return fail(p, p->i, "%s", "invalid literal (JSON has true, false and null; not NaN or Infinity)");
    p->i += n;
    x->len = (uint32_t)n;
    if (p->i < p->len) {
        unsigned char c = p->s[p->i];
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_')
            return fail(p, x->off, "%s", "invalid literal (JSON has true, false and null; not NaN or Infinity)");
    }
    return 0;
}

int json_parse(json_tape *t, const char *text, size_t len, int opts, char *err, size_t errlen)
{
    parser ps = { (const unsigned char *)text, len, 0, t, err, errlen }, *p = &ps;
    uint32_t stack[JSON_MAX_DEPTH + 1];
    unsigned depth = 0;
    t->n = 0;
    t->max_depth = t->escaped = t->bigints = t->containers = t->keys = t->dups = 0;
    if (len >= UINT32_MAX)
        return fail(p, 0, "%s", "a JSON text of 4 GiB or more is not supported");
    if (len >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0)
        return fail(p, 0, "%s", "a byte-order mark (U+FEFF) at the start");
    skip_ws(p);
    if (p->i >= len)
        return fail_byte(p, p->i, (opts & JSON_TOP_OBJECT) ? "a JSON object" : "a JSON value");
    if ((opts & JSON_TOP_OBJECT) && p->s[p->i] != '{') {
        unsigned char c = p->s[p->i];
        if (c == '[' || c == '"' || c == '-' || (c >= '0' && c <= '9') || c == 't' || c == 'f' || c == 'n')
            return fail(p, p->i, "%s", "a record must be a JSON object ({...})");
        return fail_byte(p, p->i, "a JSON object");
    }

value:
    skip_ws(p);
    if (p->i >= len)
        return fail_byte(p, p->i, "a value");
    if (depth > 0 && t->nodes[stack[depth - 1]].type == JSON_ARRAY)
        t->nodes[stack[depth - 1]].n++;
    {
        unsigned char c = p->s[p->i];
        json_node *x;
        switch (c) {
        case '{':
        case '[':
            if (depth >= JSON_MAX_DEPTH)
                return fail(p, p->i, "nesting deeper than %s levels", "1000");
            if (!(x = add(p, c == '{' ? JSON_OBJECT : JSON_ARRAY, depth)))
                return -1;
            t->containers++;
            stack[depth++] = t->n - 1;
            if (depth > t->max_depth)
                t->max_depth = depth;
            p->i++;
            skip_ws(p);
            if (p->i < len && p->s[p->i] == (c == '{' ? '}' : ']')) {
                p->i++;
                depth--;
                if (close_container(p, stack[depth]))
                    return -1;
                goto after_value;
            }
            if (c == '{')
                goto key;
            goto value;
        case '"':
            if (!(x = add(p, JSON_STRING, depth)) || parse_string(p, x))
                return -1;
            if (x->flags & JSON_ESCAPED)
                t->escaped++;
            goto after_value;
        case 't':
            if (!(x = add(p, JSON_TRUE, depth)) || literal(p, x, "true", 4))
                return -1;
            goto after_value;
        case 'f':
            if (!(x = add(p, JSON_FALSE, depth)) || literal(p, x, "false", 5))
                return -1;
            goto after_value;
        case 'n':
            if (!(x = add(p, JSON_NULL, depth)) || literal(p, x, "null", 4))
                return -1;
            goto after_value;
        case '+':
            return fail(p, p->i, "%s", "invalid number: a leading '+' is not allowed");
        case '.':
            return fail(p, p->i, "%s", "invalid number: a digit must come before '.'");
        case 'N':
        case 'I':
            return fail(p, p->i, "%s", "invalid literal (JSON has true, false and null; not NaN or Infinity)");
        default:
            if (c == '-' || (c >= '0' && c <= '9')) {
                if (!(x = add(p, JSON_NUMBER, depth)) || parse_number(p, x))
                    return -1;
                goto after_value;
            }
            return fail_byte(p, p->i, "a value");
        }
    }

key:
    skip_ws(p);
    if (p->i >= len || p->s[p->i] != '"')
        return fail_byte(p, p->i, "a string key");
    {
        json_node *k = add(p, JSON_STRING, depth);
        if (!k || parse_string(p, k))
            return -1;
        if (k->flags & JSON_ESCAPED)
            t->escaped++;
        t->keys++;
        t->nodes[stack[depth - 1]].n++;
    }
    skip_ws(p);
    if (p->i >= len || p->s[p->i] != ':')
        return fail_byte(p, p->i, "':'");
    p->i++;
    goto value;

after_value:
    if (depth == 0)
        goto done;
    skip_ws(p);
    {
        json_node *parent = &t->nodes[stack[depth - 1]];
        int obj = parent->type == JSON_OBJECT;
        if (p->i < len && p->s[p->i] == ',') {
            p->i++;
            if (obj)
                goto key;
            goto value;
        }
        if (p->i < len && p->s[p->i] == (obj ? '}' : ']')) {
            p->i++;
            depth--;
            if (close_container(p, stack[depth]))
                return -1;
            goto after_value;
        }
        return fail_byte(p, p->i, obj ? "',' or '}'" : "',' or ']'");
    }

done:
    skip_ws(p);
    if (p->i < len)
        return fail_byte(p, p->i, "the end of the line (one JSON value per line)");
    return 0;
}

void json_tape_free(json_tape *t)
{
    free(t->nodes);
    t->nodes = NULL;
    t->n = t->cap = 0;
}

static int put_utf8(mw_buf *b, unsigned cp)
{
    char u[4];
    size_t n;
    if (cp < 0x80) {
        u[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        u[0] = (char)(0xc0 | cp >> 6);
        u[1] = (char)(0x80 | (cp & 0x3f));
        n = 2;
    } else if (cp < 0x10000) {
        u[0] = (char)(0xe0 | cp >> 12);
        u[1] = (char)(0x80 | (cp >> 6 & 0x3f));
        u[2] = (char)(0x80 | (cp & 0x3f));
        n = 3;
    } else {
        u[0] = (char)(0xf0 | cp >> 18);
        u[1] = (char)(0x80 | (cp >> 12 & 0x3f));
        u[2] = (char)(0x80 | (cp >> 6 & 0x3f));
        u[3] = (char)(0x80 | (cp & 0x3f));
        n = 4;
    }
    return mw_buf_add(b, u, n);
}

static unsigned hex4_at(const unsigned char *s)
{
    unsigned v = 0;
    for (int k = 0; k < 4; k++)
        v = v << 4 | (unsigned)hexval(s[k]);
    return v;
}

/* The string was validated by json_parse, so escapes are well formed. */
int json_unescape(const char *text, const json_node *x, mw_buf *out)
{
    const unsigned char *s = (const unsigned char *)text + x->off + 1;
    size_t n = x->len - 2, run = 0;
    out->len = 0;
    for (size_t i = 0; i < n;) {
        if (s[i] != '\\') {
            i++;
            continue;
        }
        if (mw_buf_add(out, s + run, i - run))
            return -1;
        unsigned char e = s[i + 1];
        char c = 0;
        switch (e) {
        case 'b': c = '\b'; break;
        case 'f': c = '\f'; break;
        case 'n': c = '\n'; break;
        case 'r': c = '\r'; break;
        case 't': c = '\t'; break;
        case 'u': {
            unsigned cp = hex4_at(s + i + 2);
            i += 6;
            if (cp >= 0xd800 && cp <= 0xdbff) {
                unsigned lo = hex4_at(s + i + 2);
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                i += 6;
            }
            if (put_utf8(out, cp))
                return -1;
            run = i;
            continue;
        }
        default: c = (char)e; break; /* '"', '\\', '/' */
        }
        if (mw_buf_add(out, &c, 1))
            return -1;
        i += 2;
        run = i;
    }
    return mw_buf_add(out, s + run, n - run);
}

int json_member(const json_tape *t, const char *text, uint32_t obj, const char *name, size_t n)
{
    const json_node *nodes = t->nodes;
    if (obj >= t->n || nodes[obj].type != JSON_OBJECT)
        return -1;
    uint32_t k = obj + 1;
    int found = -1;
    mw_buf tmp = { NULL, 0, 0 };
    for (uint32_t m = 0; m < nodes[obj].n; m++, k = nodes[k + 1].end) {
        const json_node *key = &nodes[k];
        const char *s = text + key->off + 1;
        size_t len = key->len - 2;
        if (key->flags & JSON_ESCAPED) {
            if (json_unescape(text, key, &tmp))
                continue;
            s = tmp.p;
            len = tmp.len;
        }
        if (len == n && memcmp(s, name, n) == 0)
            found = (int)(k + 1); /* the last one wins, as when decoded */
    }
    free(tmp.p);
    return found;
}
