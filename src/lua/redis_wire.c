/* redis_wire.c: moonwait.redis's fast path on the wire (contract in
 * redis_wire.h). Each rule below is one of lua/moonwait/redis.lua's, named
 * where it is kept; what is not kept here is declined. */
#include "redis_wire.h"

#include <stdint.h>
#include <string.h>

#define TWO53 9007199254740992.0
#define MAX_BULK (512u * 1024 * 1024) /* redis.lua's MAX_BULK */

/* ---- the command ------------------------------------------------------------ */

/* "<type><n>\r\n" at o; returns the end. */
static char *put_len(char *o, char type, size_t n)
{
    *o = type;
    if (n < 10) { /* (most counts and lengths: one or two digits) */
        o[1] = (char)('0' + n);
        o[2] = '\r';
        o[3] = '\n';
        return o + 4;
    }
    if (n < 100) {
        o[1] = (char)('0' + n / 10);
        o[2] = (char)('0' + n % 10);
        o[3] = '\r';
        o[4] = '\n';
        return o + 5;
    }
    o++;
    char digits[24];
    size_t k = 0;
    do {
        digits[k++] = (char)('0' + n % 10);
        n /= 10;
    } while (n);
    while (k)
        *o++ = digits[--k];
    *o++ = '\r';
    *o++ = '\n';
    return o;
}

/* An integral number as format("%d", x) writes it; x within +-2^53. */
static size_t put_int(char *o, lua_Number x)
{
    int64_t v = (int64_t)x;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    char digits[24];
    size_t k = 0, n = 0;
    do {
        digits[k++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        o[n++] = '-';
    while (k)
        o[n++] = digits[--k];
    return n;
}

size_t redis_wire_command(lua_State *L, int first, int last, char *out, size_t cap)
{
    /* (room for the longest "$<len>\r\n" and "\r\n" is checked per
     * argument; 48 covers either header) */
    if (last < first || cap < 48)
        return 0;
    char *o = put_len(out, '*', (size_t)(last - first + 1));
    char num[24];
    for (int i = first; i <= last; i++) {
        const char *s;
        size_t l;
        int t = lua_type(L, i);
        if (t == LUA_TSTRING) {
            s = lua_tolstring(L, i, &l);
        } else if (t == LUA_TNUMBER) {
            /* serialize's arg(): an integral number within 2^53 as "%d";
             * any other number (tostring, %.17g) is declined */
            lua_Number x = lua_tonumber(L, i);
            if (!(x >= -TWO53 && x <= TWO53) || (lua_Number)(int64_t)x != x)
                return 0;
            l = put_int(num, x);
            s = num;
        } else {
            return 0; /* booleans, int64 cdata, and the types arg() refuses */
        }
        if ((size_t)(out + cap - o) < l + 48)
            return 0;
        o = put_len(o, '$', l);
        memcpy(o, s, l);
        o += l;
        *o++ = '\r';
        *o++ = '\n';
    }
    return (size_t)(o - out);
}

/* ---- the reply ------------------------------------------------------------------ */

typedef struct rd {
    const char *d;
    size_t n;          /* bytes buffered */
    size_t pos;        /* read so far */
    size_t bytes;      /* read_value's st.bytes: what is left of max_bytes */
    size_t elements;   /* st.elements: what is left of max_elements */
    size_t max_depth;
} rd;

/* The next line, as sock:receive("*l") gives it to read_value: *s, *l
 * without its LF and one CR before it, charged as read_value charges it
 * (#line + 2). -1: not buffered, or past max_bytes. */
static int next_line(rd *r, const char **s, size_t *l)
{
    const char *p = r->d + r->pos;
    const char *nl = memchr(p, '\n', r->n - r->pos);
    if (!nl)
        return -1;
    size_t len = (size_t)(nl - p);
    r->pos += len + 1;
    if (len > 0 && p[len - 1] == '\r')
        len--;
    if (len + 2 > r->bytes)
        return -1;
    r->bytes -= len + 2;
    *s = p;
    *l = len;
    return 0;
}

/* s[0..l) as "-?%d+" (the patterns of read_value): 0 with *neg, *v (the
 * magnitude, any value from 2^53 up as 2^53 or more) and *nd (the digits,
 * leading zeros counted); -1 for anything else. */
static int digits(const char *s, size_t l, int *neg, uint64_t *v, size_t *nd)
{
    size_t i = l > 0 && s[0] == '-';
    *neg = (int)i;
    if (i == l)
        return -1;
    uint64_t acc = 0;
    *nd = l - i;
    for (; i < l; i++) {
        unsigned c = (unsigned)(unsigned char)s[i] - '0';
        if (c > 9)
            return -1;
        if (acc < (1ull << 53))
            acc = acc * 10 + c;
    }
    *v = acc;
    return 0;
}

/* A "$n" or "*n" length as tonumber(sub(line, 2)) reads it: 1 for a nil
 * (-1), 0 with *v >= 0 (-0 is 0: read_value takes it for a length), -1
 * for another negative number or not a length. */
static int length(const char *s, size_t l, uint64_t *v)
{
    int neg;
    size_t nd;
    if (digits(s + 1, l - 1, &neg, v, &nd) != 0)
        return -1;
    if (neg && *v == 1)
        return 1;
    if (neg && *v != 0)
        return -1;
    return 0;
}

/* One value, pushed on L (read_value's branches, in its order). -1:
 * declined (what was pushed is left for the caller to drop). */
static int value(lua_State *L, rd *r, size_t depth)
{
    const char *s;
    size_t l, nd;
    uint64_t v;
    int neg, rc;
    if (next_line(r, &s, &l) != 0 || l == 0)
        return -1;
    switch (s[0]) {
    case '+':
        lua_pushlstring(L, s + 1, l - 1);
        return 0;
    case ':':
        /* integer(): at most 15 digits is tonumber's double (-0 too);
         * more may need an int64_t cdata: declined */
        if (digits(s + 1, l - 1, &neg, &v, &nd) != 0 || nd > 15)
            return -1;
        lua_pushnumber(L, neg ? -(lua_Number)v : (lua_Number)v);
        return 0;
    case '$':
        if ((rc = length(s, l, &v)) != 0)
            break;
        if (v > MAX_BULK || v + 2 > r->bytes)
            return -1;
        r->bytes -= v + 2;
        if (r->n - r->pos < v + 2)
            return -1; /* not all here yet */
        s = r->d + r->pos;
        if (s[v] != '\r' || s[v + 1] != '\n')
            return -1;
        lua_pushlstring(L, s, (size_t)v);
        r->pos += v + 2;
        return 0;
    case '*':
        if ((rc = length(s, l, &v)) != 0)
            break;
        if (v > r->elements || depth >= r->max_depth)
            return -1;
        /* (every element takes 2 bytes at least: more than fit in what is
         * buffered are not all here, and no table is made for them) */
        if (v > (r->n - r->pos) / 2 || !lua_checkstack(L, 3))
            return -1;
        r->elements -= v;
        lua_createtable(L, (int)v, 0);
        for (uint64_t i = 1; i <= v; i++) {
            if (value(L, r, depth + 1) != 0)
                return -1;
            lua_rawseti(L, -2, (int)i);
        }
        return 0;
    default:
        return -1; /* '-': an error reply; or an unknown type */
    }
    if (rc < 0)
        return -1;
    lua_pushlightuserdata(L, NULL); /* moonwait.null */
    return 0;
}

size_t redis_wire_reply(lua_State *L, const char *d, size_t n, const redis_wire_limits *lim)
{
    rd r = { d, n, 0, lim->max_bytes, lim->max_elements, lim->max_depth };
    int base = lua_gettop(L);
    if (n == 0 || !lua_checkstack(L, 3) || value(L, &r, 0) != 0) {
        lua_settop(L, base);
        return 0;
    }
    return r.pos;
}
