/*
 * string.c: JSON strings: the string token (strict: no control characters,
 * no invalid UTF-8, escapes checked, surrogate escapes paired), UTF-8
 * validation, and decoding escapes (json_unescape). Part of the parser
 * (lex.h); json_utf8_valid is also the writer's check.
 */
#include "lex.h"

#include <stdio.h>

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

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

static int hex4(json_parser *p, size_t at, unsigned *out)
{
    if (at + 4 > p->len)
        return json_fail(p, at < p->len ? at : p->len - 1, "%s", "a \\u escape needs 4 hex digits");
    unsigned v = 0;
    for (size_t k = 0; k < 4; k++) {
        int h = hexval(p->s[at + k]);
        if (h < 0)
            return json_fail(p, at + k, "%s", "a \\u escape needs 4 hex digits");
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

/* A message naming the byte at s[i] in hex ("... byte 0x%s ..."). */
static int fail_hex(json_parser *p, size_t i, const char *fmt)
{
    char hx[8];
    snprintf(hx, sizeof hx, "0x%02x", p->s[i]);
    return json_fail(p, i, fmt, hx);
}

/* The escape at the backslash s[i] (i + 1 < len): its length, or 0 with
 * the error written. */
static size_t lex_escape(json_parser *p, size_t i)
{
    const unsigned char *s = p->s;
    unsigned char e = s[i + 1];
    if (e == 'u') {
        unsigned cp = 0, lo = 0;
        if (hex4(p, i + 2, &cp))
            return 0;
        if (cp >= 0xdc00 && cp <= 0xdfff)
            return json_fail(p, i, "%s", "a lone low surrogate escape (\\uDC00-\\uDFFF) is not a character"), 0;
        if (cp < 0xd800 || cp > 0xdbff)
            return 6;
        if (i + 7 >= p->len || s[i + 6] != '\\' || s[i + 7] != 'u')
            return json_fail(p, i, "%s", "a high surrogate escape must be followed by a low one (\\uDC00-\\uDFFF)"), 0;
        if (hex4(p, i + 8, &lo))
            return 0;
        if (lo < 0xdc00 || lo > 0xdfff)
            return json_fail(p, i + 6, "%s", "a high surrogate escape must be followed by a low one (\\uDC00-\\uDFFF)"), 0;
        return 12;
    }
    if (e == '"' || e == '\\' || e == '/' || e == 'b' || e == 'f' || e == 'n' || e == 'r' || e == 't')
        return 2;
    if (e == 0)
        return json_fail(p, i + 1, "%s", "a NUL byte in a string escape"), 0;
    if (e < 0x20 || e >= 0x7f)
        return json_fail(p, i + 1, "%s", "an invalid escape in a string"), 0;
    char c[2] = { (char)e, 0 };
    return json_fail(p, i, "invalid escape '\\%s' in a string", c), 0;
}

int json_lex_string(json_parser *p, json_node *x)
{
    const unsigned char *s = p->s;
    size_t i = p->i + 1, len = p->len, k;
    for (;;) {
        while (i < len && str_class[s[i]] == 0)
            i++;
        if (i >= len)
            return json_fail(p, p->i, "%s", "unterminated string");
        switch (str_class[s[i]]) {
        case 1:
            p->i = i + 1;
            x->len = (uint32_t)(p->i - x->off);
            return 0;
        case 2:
            x->flags |= JSON_ESCAPED;
            if (i + 1 >= len)
                return json_fail(p, i, "%s", "unterminated string");
            if (!(k = lex_escape(p, i)))
                return -1;
            i += k;
            break;
        case 3:
            if (s[i] == 0)
                return json_fail(p, i, "%s", "a NUL byte in a string (write it as \\u0000)");
            return fail_hex(p, i, "control character %s in a string (it must be escaped)");
        default:
            if (!(k = utf8_seq(s, i, len)))
                return fail_hex(p, i, "invalid UTF-8 (byte %s) in a string");
            i += k;
        }
    }
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
