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

static const double pow10_exact[23] = {
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
    1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
};

/* The usual non-integer (1e-4 <= |d| < 1e15 with at most 15 significant
 * digits: 0.143, 12.5, 1234.5678) without printf: the bytes "%.15g" gives,
 * which is what the loop below settles on, at a tenth of the cost
 * (snprintf's __printf_fp and strtod were ~11% of a record's instructions
 * when a script computed a float). 0 when d is not such a number.
 *
 * Why it is exact: the first k with round(|d| * 10^k) / 10^k == |d| gives
 * m with m / 10^k reading back as d (m < 2^53 and 10^k are exact, so the
 * division is correctly rounded, as strtod is). While m < 10^15 the
 * product's error (< 0.25) cannot move the rounding, so no shorter k is
 * missed; and a decimal of at most 15 digits that reads back as d is the
 * one "%.15g" rounds d to (15-digit decimals are further apart than d's
 * rounding error), which it prints in fixed notation for exponents -4..14,
 * trailing zeros dropped. */
static int fmt_short(char *out, double d)
{
    double a = fabs(d);
    if (!(a >= 1e-4 && a < 1e15))
        return 0;
    for (int k = 1; k <= 19; k++) {
        double s = a * pow10_exact[k];
        if (s >= 1e15)
            return 0;
        double m = floor(s + 0.5);
        if (m / pow10_exact[k] != a)
            continue;
        char dig[24];
        int nd = json_fmt_u64(dig, (uint64_t)m);
        while (k > 0 && dig[nd - 1] == '0') { /* (not expected: k is the first) */
            nd--;
            k--;
        }
        int n = 0;
        if (d < 0)
            out[n++] = '-';
        if (nd > k) {
            memcpy(out + n, dig, (size_t)(nd - k));
            n += nd - k;
        } else {
            out[n++] = '0';
        }
        if (k > 0) {
            out[n++] = '.';
            for (int z = nd; z < k; z++)
                out[n++] = '0';
            int from = nd > k ? nd - k : 0;
            memcpy(out + n, dig + from, (size_t)(nd - from));
            n += nd - from;
        }
        out[n] = 0;
        return n;
    }
    return 0;
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
    int n = fmt_short(out, d);
    if (n > 0)
        return n;
    /* The fewest of 15, 16, 17 significant digits that read back the
     * same. %g writes a plain decimal or an exponent ("1e+21"); both are
     * JSON. */
    /* Subnormals carry fewer digits: start lower for them. */
    for (int prec = fabs(d) < 2.2250738585072014e-308 ? 1 : 15; prec <= 17; prec++) {
        n = snprintf(out, 32, "%.*g", prec, d);
        if (strtod(out, NULL) == d)
            break;
    }
    return n;
}
