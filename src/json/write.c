/*
 * write.c: the writing half of json.h: string literals and numbers.
 *
 * Strings: only what JSON requires is escaped ('"', '\\' and the control
 * characters below 0x20), so a string that arrived without escapes is
 * written back byte for byte. '/' and DEL are not escaped.
 */
#include "json.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* 1 for the bytes a JSON string literal must escape. */
static const unsigned char must_escape[256] = {
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0,
};

static int put_escape(mw_buf *b, unsigned char c)
{
    static const char hex[] = "0123456789abcdef";
    char u[6];
    switch (c) {
    case '"': return mw_buf_add(b, "\\\"", 2);
    case '\\': return mw_buf_add(b, "\\\\", 2);
    case '\n': return mw_buf_add(b, "\\n", 2);
    case '\r': return mw_buf_add(b, "\\r", 2);
    case '\t': return mw_buf_add(b, "\\t", 2);
    case '\b': return mw_buf_add(b, "\\b", 2);
    case '\f': return mw_buf_add(b, "\\f", 2);
    default:
        u[0] = '\\', u[1] = 'u', u[2] = '0', u[3] = '0', u[4] = hex[c >> 4], u[5] = hex[c & 15];
        return mw_buf_add(b, u, 6);
    }
}

int json_put_string(mw_buf *b, const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    if (mw_buf_reserve(b, n + 2))
        return -1;
    size_t start = b->len;
    b->p[b->len++] = '"';
    size_t run = 0;
    int checked = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] >= 0x80 && !checked) {
            /* Once per string, and only for non-ASCII text. */
            if (!json_utf8_valid(str + i, n - i)) {
                b->len = start;
                return -2;
            }
            checked = 1;
        }
        if (!must_escape[s[i]])
            continue;
        if (mw_buf_add(b, s + run, i - run) || put_escape(b, s[i]))
            return -1;
        run = i + 1;
    }
    if (mw_buf_add(b, s + run, n - run))
        return -1;
    return mw_buf_add(b, "\"", 1);
}

int json_put_bytes(mw_buf *b, const char *str, size_t n, int *lossy)
{
    const unsigned char *s = (const unsigned char *)str;
    *lossy = 0;
    if (mw_buf_add(b, "\"", 1))
        return -1;
    size_t run = 0;
    for (size_t i = 0; i < n;) {
        unsigned char c = s[i];
        if (c < 0x80) {
            if (must_escape[c]) {
                if (mw_buf_add(b, s + run, i - run) || put_escape(b, c))
                    return -1;
                run = i + 1;
            }
            i++;
            continue;
        }
        /* Find the longest valid UTF-8 prefix of length 2..4 here. */
        size_t k = 0;
        for (size_t try = 2; try <= 4 && i + try <= n; try++)
            if (json_utf8_valid(str + i, try)) {
                k = try;
                break;
            }
        if (k) {
            i += k;
            continue;
        }
        /* Not UTF-8: its Latin-1 reading, U+0080..U+00FF. */
        char u[6] = { '\\', 'u', '0', '0', "0123456789abcdef"[c >> 4], "0123456789abcdef"[c & 15] };
        if (mw_buf_add(b, s + run, i - run) || mw_buf_add(b, u, 6))
            return -1;
        *lossy = 1;
        i++;
        run = i;
    }
    if (mw_buf_add(b, s + run, n - run))
        return -1;
    return mw_buf_add(b, "\"", 1);
}

int json_fmt_u64(char *out, uint64_t v)
{
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (int k = 0; k < n; k++)
        out[k] = tmp[n - 1 - k];
    out[n] = 0;
    return n;
}

int json_fmt_i64(char *out, int64_t v)
{
    if (v < 0) {
        out[0] = '-';
        /* -(v + 1) + 1 avoids negating INT64_MIN. */
        return 1 + json_fmt_u64(out + 1, (uint64_t)(-(v + 1)) + 1);
    }
    return json_fmt_u64(out, (uint64_t)v);
}

int json_fmt_double(char *out, double d)
{
    if (!isfinite(d))
        return -1;
    if (d == floor(d) && fabs(d) <= 9007199254740992.0) {
        if (d == 0 && signbit(d)) {
            memcpy(out, "-0", 3);
            return 2;
        }
        return json_fmt_i64(out, (int64_t)d);
    }
    /* The fewest of 15, 16, 17 significant digits that read back the
     * same. %g writes a plain decimal or an exponent ("1e+21"); both are
     * JSON. */
    int n = 0;
    /* Subnormals carry fewer digits: start lower for them. */
    for (int prec = fabs(d) < 2.2250738585072014e-308 ? 1 : 15; prec <= 17; prec++) {
        n = snprintf(out, 32, "%.*g", prec, d);
        if (strtod(out, NULL) == d)
            break;
    }
    return n;
}
