/*
 * json_out.c: the host's JSON encoder for output records.
 *
 * Records are read with lua-cjson but written here, for one reason: the
 * bytes must not depend on the VM's history. lua-cjson writes an object's
 * keys in table-iteration order, which changes with how the table was
 * built (interpreted or JIT-compiled code, a fresh VM after a restore or a
 * reload), so the same record could be written two ways, and a restored
 * run's output would differ in bytes from an uninterrupted one. This
 * encoder writes keys sorted, so equal values give equal bytes.
 *
 * Rules (lua-cjson's defaults, where they apply): a table whose keys are
 * exactly 1..n is an array; any other table is an object (number keys are
 * written as strings; other key types are an error); an empty table is {};
 * integers are written exactly, other numbers in the fewest digits (15 to
 * 17) that read back as the same double, NaN and infinities are an error; moonwait.null (cjson.null)
 * is null; "/" is not escaped; at most 1000 levels (cycles are an error).
 */
#define _GNU_SOURCE
#include "json_out.h"

#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 1000

static int put(json_buf *b, const char *s, size_t n)
{
    return mw_buf_add(b, s, n);
}

static int put_string(json_buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    if (put(b, "\"", 1))
        return -1;
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        char u[6];
        switch (c) {
        case '"': esc = "\\\""; break;
        case '\\': esc = "\\\\"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\t': esc = "\\t"; break;
        case '\b': esc = "\\b"; break;
        case '\f': esc = "\\f"; break;
        default:
            if (c < 0x20 || c == 0x7f) {
                u[0] = '\\', u[1] = 'u', u[2] = '0', u[3] = '0', u[4] = hex[c >> 4], u[5] = hex[c & 15];
                if (put(b, s + run, i - run) || put(b, u, 6))
                    return -1;
                run = i + 1;
            }
            continue;
        }
        if (put(b, s + run, i - run) || put(b, esc, strlen(esc)))
            return -1;
        run = i + 1;
    }
    if (put(b, s + run, n - run))
        return -1;
    return put(b, "\"", 1);
}

/* The shortest of %.15g, %.16g, %.17g that reads back as the same double
 * (so 0.1 is written 0.1, and every value round-trips); integers exactly. */
static int fmt_number(char *tmp, size_t size, lua_Number d)
{
    if (d == floor(d) && fabs(d) < 1e15)
        return snprintf(tmp, size, "%.0f", d);
    int n = 0;
    for (int prec = 15; prec <= 17; prec++) {
        n = snprintf(tmp, size, "%.*g", prec, d);
        if (strtod(tmp, NULL) == d)
            break;
    }
    return n;
}

static int put_number(json_buf *b, lua_Number d, char *err, size_t errlen)
{
    char tmp[64];
    if (!isfinite(d)) {
        snprintf(err, errlen, "cannot encode %s as JSON", isnan(d) ? "NaN" : "an infinite number");
        return -1;
    }
    return put(b, tmp, (size_t)fmt_number(tmp, sizeof tmp, d));
}

typedef struct key {
    const char *s;
    size_t n;
    int slot;  /* stack index of its value */
} key;

typedef char numtext[32]; /* a number key written as a string */

static int key_cmp(const void *a, const void *b)
{
    const key *x = a, *y = b;
    size_t n = x->n < y->n ? x->n : y->n;
    int c = memcmp(x->s, y->s, n);
    return c ? c : (x->n < y->n ? -1 : x->n > y->n);
}

static int encode(lua_State *L, int idx, json_buf *b, int depth, const void *null, char *err, size_t errlen);

static int encode_table(lua_State *L, int t, json_buf *b, int depth, const void *null, char *err, size_t errlen)
{
    if (depth > MAX_DEPTH) {
        snprintf(err, errlen, "cannot encode a table nested more than %d levels (a cycle?)", MAX_DEPTH);
        return -1;
    }
    if (!lua_checkstack(L, 4)) {
        snprintf(err, errlen, "out of Lua stack");
        return -1;
    }
    /* Array or object? Count keys; an array has exactly the keys 1..n. */
    size_t count = 0, max = 0;
    int all_int = 1;
    lua_pushnil(L);
    while (lua_next(L, t)) {
        lua_pop(L, 1);
        count++;
        if (lua_type(L, -1) == LUA_TNUMBER) {
            lua_Number k = lua_tonumber(L, -1);
            if (k >= 1 && k == floor(k) && k < 1e15) {
                if ((size_t)k > max)
                    max = (size_t)k;
                continue;
            }
        }
        all_int = 0;
    }
    if (count > 0 && all_int && max == count) {
        if (put(b, "[", 1))
            return -1;
        for (size_t i = 1; i <= count; i++) {
            if (i > 1 && put(b, ",", 1))
                return -1;
            lua_rawgeti(L, t, (int)i);
            int rc = encode(L, lua_gettop(L), b, depth + 1, null, err, errlen);
            lua_pop(L, 1);
            if (rc)
                return -1;
        }
        return put(b, "]", 1);
    }
    /* Object: keys sorted, so equal tables give equal bytes. The key
     * strings stay alive: they are keys of t, which is on the stack. */
    key small[16];
    numtext small_nums[16];
    key *keys = count <= 16 ? small : malloc(count * sizeof *keys);
    numtext *nums = count <= 16 ? small_nums : malloc(count * sizeof *nums);
    if (!keys || !nums) {
        if (keys != small)
            free(keys);
        if (nums != small_nums)
            free(nums);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    size_t n = 0;
    int rc = 0;
    if (!lua_checkstack(L, (int)count + 4)) {
        snprintf(err, errlen, "out of Lua stack");
        rc = -1;
        goto out;
    }
    /* Leave each value on the stack (no second lookup): [.. v1 v2 .. k]. */
    int first = lua_gettop(L) + 1;
    lua_pushnil(L);
    while (lua_next(L, t)) {
        lua_insert(L, -2); /* value below, key on top for lua_next */
        key *k = &keys[n];
        k->slot = first + (int)n;
        int kt = lua_type(L, -1);
        if (kt == LUA_TSTRING) {
            k->s = lua_tolstring(L, -1, &k->n);
        } else if (kt == LUA_TNUMBER) {
            lua_Number d = lua_tonumber(L, -1);
            int len = fmt_number(nums[n], sizeof nums[n], d);
            k->s = nums[n];
            k->n = (size_t)len;
        } else {
            snprintf(err, errlen, "cannot encode a table with a %s key as JSON", lua_typename(L, kt));
            lua_settop(L, first - 1);
            rc = -1;
            goto out;
        }
        n++;
    }
    if (n <= 12) {
        /* Records are small: insertion sort beats qsort's call overhead. */
        for (size_t i = 1; i < n; i++) {
            key k = keys[i];
            size_t j = i;
            while (j > 0 && key_cmp(&keys[j - 1], &k) > 0) {
                keys[j] = keys[j - 1];
                j--;
            }
            keys[j] = k;
        }
    } else {
        qsort(keys, n, sizeof *keys, key_cmp);
    }
    rc = put(b, "{", 1);
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (i > 0)
            rc = put(b, ",", 1);
        if (rc == 0)
            rc = put_string(b, keys[i].s, keys[i].n);
        if (rc == 0)
            rc = put(b, ":", 1);
        if (rc == 0)
            rc = encode(L, keys[i].slot, b, depth + 1, null, err, errlen);
    }
    if (rc == 0)
        rc = put(b, "}", 1);
    lua_settop(L, first - 1);
out:
    if (keys != small)
        free(keys);
    if (nums != small_nums)
        free(nums);
    return rc;
}

static int encode(lua_State *L, int idx, json_buf *b, int depth, const void *null, char *err, size_t errlen)
{
    switch (lua_type(L, idx)) {
    case LUA_TSTRING: {
        size_t n;
        const char *s = lua_tolstring(L, idx, &n);
        return put_string(b, s, n);
    }
    case LUA_TNUMBER:
        return put_number(b, lua_tonumber(L, idx), err, errlen);
    case LUA_TBOOLEAN:
        return lua_toboolean(L, idx) ? put(b, "true", 4) : put(b, "false", 5);
    case LUA_TNIL:
        return put(b, "null", 4);
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, idx) == null)
            return put(b, "null", 4);
        break;
    case LUA_TTABLE:
        return encode_table(L, idx, b, depth, null, err, errlen);
    default:
        break;
    }
    snprintf(err, errlen, "cannot encode a %s value as JSON", luaL_typename(L, idx));
    return -1;
}

int json_out_string(json_buf *b, const char *s, size_t n)
{
    return put_string(b, s, n);
}

int json_out_encode(lua_State *L, int idx, const void *null, json_buf *b, char *err, size_t errlen)
{
    if (idx < 0)
        idx = lua_gettop(L) + idx + 1;
    return encode(L, idx, b, 0, null, err, errlen);
}
