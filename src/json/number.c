/*
 * number.c: the JSON number token (part of the parser, lex.h). Strict
 * syntax (no leading zeros, '+', hex, NaN or Infinity); integers exactly
 * into int64/uint64 when they fit (JSON_INT, JSON_I64, JSON_U64); other
 * numbers through Clinger's fast path (an exact significand times an exact
 * power of ten), else strtod; overflowing a double is an error.
 */
#include "lex.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const double pow10_exact[23] = {
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
    1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
};

#define TWO53 9007199254740992ULL

/* What the scan of a number's bytes found. */
typedef struct numscan {
    uint64_t m;       /* significant digits, while they fit */
    int sig;          /* significant digits seen */
    int dropped;      /* digits beyond the 19 that fit in m */
    int int_overflow; /* the integer part does not fit uint64 */
    int neg, is_int;
    long exp10;       /* the value is m * 10^exp10 (while nothing dropped) */
} numscan;

/* The integer part, after the sign, from s[*ip] (a digit). */
static int scan_int(json_parser *p, numscan *n, size_t *ip, size_t start)
{
    const unsigned char *s = p->s;
    size_t i = *ip, len = p->len;
    if (s[i] == '0') {
        i++;
        if (i < len && s[i] >= '0' && s[i] <= '9')
            return json_fail(p, start, "%s", "invalid number: leading zero");
        *ip = i;
        return 0;
    }
    for (; i < len && s[i] >= '0' && s[i] <= '9'; i++) {
        if (n->sig < 19) {
            n->m = n->m * 10 + (uint64_t)(s[i] - '0');
            n->sig++;
        } else if (!n->int_overflow && n->dropped == 0 && n->m <= (UINT64_MAX - (uint64_t)(s[i] - '0')) / 10) {
            /* A 20th digit may still fit in uint64. */
            n->m = n->m * 10 + (uint64_t)(s[i] - '0');
            n->sig++;
        } else {
            n->int_overflow = 1;
            n->dropped++;
        }
    }
    *ip = i;
    return 0;
}

/* The fraction and the exponent, if any, from s[*ip]. */
static int scan_frac_exp(json_parser *p, numscan *n, size_t *ip)
{
    const unsigned char *s = p->s;
    size_t i = *ip, len = p->len;
    if (i < len && s[i] == '.') {
        n->is_int = 0;
        i++;
        if (i >= len || s[i] < '0' || s[i] > '9')
            return json_fail(p, i < len ? i : len - 1, "%s", "invalid number: a digit must follow '.'");
        for (; i < len && s[i] >= '0' && s[i] <= '9'; i++) {
            if (n->sig == 0 && s[i] == '0') {
                n->exp10--; /* leading zeros of the fraction */
            } else if (n->sig < 19) {
                n->m = n->m * 10 + (uint64_t)(s[i] - '0');
                n->sig++;
                n->exp10--;
            } else {
                n->dropped++;
            }
        }
    }
    if (i < len && (s[i] == 'e' || s[i] == 'E')) {
        n->is_int = 0;
        i++;
        int eneg = 0;
        if (i < len && (s[i] == '+' || s[i] == '-')) {
            eneg = s[i] == '-';
            i++;
        }
        if (i >= len || s[i] < '0' || s[i] > '9')
            return json_fail(p, i < len ? i : len - 1, "%s", "invalid number: a digit must follow the exponent");
        long e = 0;
        for (; i < len && s[i] >= '0' && s[i] <= '9'; i++)
            if (e < 100000)
                e = e * 10 + (s[i] - '0');
        n->exp10 += eneg ? -e : e;
    }
    *ip = i;
    return 0;
}

/* An integer that fits int64 or uint64 exactly: 1 when stored in x. */
static int put_integer(json_parser *p, const numscan *n, json_node *x)
{
    uint64_t m = n->m;
    if (!n->neg) {
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
        return 1;
    }
    if (m <= TWO53) {
        x->flags |= JSON_INT;
        x->v.d = -(double)m;
        return 1;
    }
    if (m <= (uint64_t)INT64_MAX + 1) {
        x->flags |= JSON_I64;
        x->v.i = m == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)m;
        p->t->bigints++;
        return 1;
    }
    return 0; /* below INT64_MIN: a double (the bytes are kept for untouched values) */
}

/* Any other number, as the correctly rounded double of s[start..end). */
static int put_double(json_parser *p, const numscan *n, json_node *x, size_t start, size_t end)
{
    /* Clinger's fast path: an exact significand and an exact power of ten
     * give the correctly rounded double with one operation. */
    if (!n->dropped && !n->int_overflow && n->m < TWO53 && n->exp10 >= -22 && n->exp10 <= 22) {
        double d = (double)n->m;
        d = n->exp10 < 0 ? d / pow10_exact[-n->exp10] : d * pow10_exact[n->exp10];
        x->v.d = n->neg ? -d : d;
        return 0;
    }
    char small[64], *tmp = small;
    size_t len = end - start;
    if (len >= sizeof small) {
        tmp = malloc(len + 1);
        if (!tmp)
            return json_fail(p, start, "%s", "out of memory reading a number");
    }
    memcpy(tmp, p->s + start, len);
    tmp[len] = 0;
    double d = strtod(tmp, NULL);
    if (tmp != small)
        free(tmp);
    if (isinf(d))
        return json_fail(p, start, "%s", "number out of range (beyond a double's largest value)");
    x->v.d = d;
    return 0;
}

int json_lex_number(json_parser *p, json_node *x)
{
    const unsigned char *s = p->s;
    size_t i = p->i, len = p->len, start = i;
    numscan n = { 0, 0, 0, 0, 0, 1, 0 };
    if (s[i] == '-') {
        n.neg = 1;
        i++;
    }
    if (i >= len || s[i] < '0' || s[i] > '9')
        return json_fail(p, i < len ? i : len - 1, "%s", "invalid number: a digit must follow '-'");
    if (scan_int(p, &n, &i, start) || scan_frac_exp(p, &n, &i))
        return -1;
    if (i < len) {
        unsigned char c = s[i];
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
            c == '+' || c == '-' || c == '_')
            return json_fail(p, i, "%s", "invalid number");
    }
    x->len = (uint32_t)(i - start);
    p->i = i;
    if (n.is_int && !n.int_overflow && put_integer(p, &n, x))
        return 0;
    return put_double(p, &n, x, start, i);
}
