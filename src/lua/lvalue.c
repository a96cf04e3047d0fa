/*
 * lvalue.c: a Lua value to bytes and back (contract in lvalue.h).
 *
 * The bytes: one tag byte per value, then its payload.
 *
 *   NIL FALSE TRUE NULL          no payload (NULL is moonwait.null)
 *   INT8                         1 byte, signed (integers -128..127, not -0)
 *   INT32                        4 bytes, native order (other int32 integers)
 *   DOUBLE                       8 bytes: every other number, bit for bit
 *   SHORT+n (n < 64)             a string of n bytes, then the bytes
 *   STR                          varint length, then the bytes
 *   TABLE, ARRAY                 varint narr, uint32 nhash, then narr values
 *                                (t[1..narr]), then nhash key, value pairs;
 *                                ARRAY: it had the codec's array metatable
 *   I64, U64                     8 bytes, native order
 *
 * Varints are LEB128 (7 bits a byte, low first).
 */
#include "lvalue.h"

#include <ctype.h>
#include <lauxlib.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "codec_int.h"

/* lua_type() of a LuaJIT cdata (lua.h has no name for it). */
#define LV_TCDATA 10

enum {
    T_NIL = 0,
    T_FALSE,
    T_TRUE,
    T_NULL,
    T_INT8,
    T_INT32,
    T_DOUBLE,
    T_STR,
    T_TABLE,
    T_ARRAY,
    T_I64,
    T_U64,
    T_SHORT = 0x40, /* 0x40..0x7f: a string of (tag - 0x40) bytes */
};

/* ---- encoding ------------------------------------------------------------- */

/* One step of the path to the value being encoded: the key is on the Lua
 * stack at `slot`, or (slot 0) the array index `index`. */
typedef struct step {
    int slot;
    size_t index;
    const void *table; /* the table this step is in, for the cycle check */
} step;

typedef struct lenc {
    lua_State *L;
    codec *c;          /* the VM's codec (NULL: no arrays or 64-bit cdata known) */
    mw_buf *b;
    const char *root;
    char *err;
    size_t errlen;
    step path[LVAL_MAX_DEPTH + 1];
    int depth;
} lenc;

static int oom(lenc *e)
{
    snprintf(e->err, e->errlen, "out of memory");
    return -1;
}

static int put(lenc *e, const void *p, size_t n)
{
    return mw_buf_add(e->b, p, n) ? oom(e) : 0;
}

static int put_tag(lenc *e, int tag)
{
    unsigned char t = (unsigned char)tag;
    return put(e, &t, 1);
}

static int put_varint(lenc *e, size_t v)
{
    unsigned char tmp[10];
    size_t n = 0;
    do {
        unsigned char byte = v & 0x7f;
        v >>= 7;
        tmp[n++] = (unsigned char)(byte | (v ? 0x80 : 0));
    } while (v);
    return put(e, tmp, n);
}

/* Is s an identifier (shown as .s in a path)? */
static int is_name(const char *s, size_t n)
{
    if (!n || n > 64 || !(isalpha((unsigned char)s[0]) || s[0] == '_'))
        return 0;
    for (size_t i = 1; i < n; i++)
        if (!(isalnum((unsigned char)s[i]) || s[i] == '_'))
            return 0;
    return 1;
}

/* "<root><path>: <what> cannot be cached" in e->err. */
static int fail(lenc *e, const char *what)
{
    luaL_Buffer pb;
    lua_State *L = e->L;
    if (!lua_checkstack(L, 4)) {
        snprintf(e->err, e->errlen, "%s: %s cannot be cached", e->root, what);
        return -1;
    }
    luaL_buffinit(L, &pb);
    luaL_addstring(&pb, e->root);
    for (int i = 0; i < e->depth; i++) {
        step *s = &e->path[i];
        char tmp[64];
        if (!s->slot) {
            snprintf(tmp, sizeof tmp, "[%zu]", s->index);
            luaL_addstring(&pb, tmp);
            continue;
        }
        switch (lua_type(L, s->slot)) {
        case LUA_TSTRING: {
            size_t n;
            const char *k = lua_tolstring(L, s->slot, &n);
            if (is_name(k, n)) {
                luaL_addchar(&pb, '.');
                luaL_addlstring(&pb, k, n);
            } else {
                luaL_addstring(&pb, "[\"");
                for (size_t j = 0; j < n && j < 64; j++) {
                    unsigned char ch = (unsigned char)k[j];
                    if (ch == '"' || ch == '\\' || ch < 0x20 || ch >= 0x7f) {
                        snprintf(tmp, sizeof tmp, "\\%03u", ch);
                        luaL_addstring(&pb, tmp);
                    } else {
                        luaL_addchar(&pb, (char)ch);
                    }
                }
                luaL_addstring(&pb, n > 64 ? "...\"]" : "\"]");
            }
            break;
        }
        case LUA_TNUMBER:
            snprintf(tmp, sizeof tmp, "[%.14g]", lua_tonumber(L, s->slot));
            luaL_addstring(&pb, tmp);
            break;
        case LUA_TBOOLEAN:
            luaL_addstring(&pb, lua_toboolean(L, s->slot) ? "[true]" : "[false]");
            break;
        default:
            luaL_addstring(&pb, "[?]");
        }
    }
    luaL_pushresult(&pb);
    size_t n;
    const char *path = lua_tolstring(L, -1, &n);
    if (n > 160) /* the start and the end of a long path */
        snprintf(e->err, e->errlen, "%.80s...%s: %s cannot be cached", path, path + n - 60, what);
    else
        snprintf(e->err, e->errlen, "%s: %s cannot be cached", path, what);
    lua_pop(L, 1);
    return -1;
}

static int enc_any(lenc *e, int idx);

static int enc_number(lenc *e, double d)
{
    if (d >= -128 && d <= 127 && d == (double)(int8_t)d && !(d == 0 && signbit(d))) {
        unsigned char t[2] = { T_INT8, (unsigned char)(int8_t)d };
        return put(e, t, 2);
    }
    if (d >= INT32_MIN && d <= INT32_MAX && d == (double)(int32_t)d && !(d == 0 && signbit(d))) {
        int32_t v = (int32_t)d;
        unsigned char t[5] = { T_INT32 };
        memcpy(t + 1, &v, 4);
        return put(e, t, 5);
    }
    unsigned char t[9] = { T_DOUBLE };
    memcpy(t + 1, &d, 8);
    return put(e, t, 9);
}

static int enc_string(lenc *e, const char *s, size_t n)
{
    if (n < 64) {
        if (put_tag(e, T_SHORT + (int)n))
            return -1;
    } else if (put_tag(e, T_STR) || put_varint(e, n)) {
        return -1;
    }
    return put(e, s, n);
}

static int enc_cdata(lenc *e, int idx)
{
    lua_State *L = e->L;
    int kind = 0;
    if (e->c) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, e->c->cdata_kind_ref);
        lua_pushvalue(L, idx);
        lua_call(L, 1, 1);
        kind = (int)lua_tointeger(L, -1);
        lua_pop(L, 1);
    }
    if (kind != 1 && kind != 2)
        return fail(e, "a cdata value other than int64_t or uint64_t");
    unsigned char t[9] = { (unsigned char)(kind == 1 ? T_I64 : T_U64) };
    memcpy(t + 1, lua_topointer(L, idx), 8);
    return put(e, t, 9);
}

/* The table at idx (absolute): t[1..narr] first, then the other pairs. */
static int enc_table(lenc *e, int idx)
{
    lua_State *L = e->L;
    const void *self = lua_topointer(L, idx);
    for (int i = 0; i < e->depth; i++)
        if (e->path[i].table == self)
            return fail(e, "a table that contains itself");
    if (e->depth >= LVAL_MAX_DEPTH) {
        char what[64];
        snprintf(what, sizeof what, "a table nested more than %d levels deep", LVAL_MAX_DEPTH);
        return fail(e, what);
    }
    if (!lua_checkstack(L, 8))
        return fail(e, "a table nested too deep for the Lua stack");
    int tag = T_TABLE;
    if (lua_getmetatable(L, idx)) {
        int is_array = e->c && lua_topointer(L, -1) == e->c->array_mt;
        lua_pop(L, 1);
        if (!is_array)
            return fail(e, "a table with a metatable (other than a JSON array's)");
        tag = T_ARRAY;
    }
    /* The array part: t[1..n] while set. */
    size_t narr = 0, len = lua_objlen(L, idx);
    while (narr < len) {
        lua_rawgeti(L, idx, (int)(narr + 1));
        int nil = lua_isnil(L, -1);
        lua_pop(L, 1);
        if (nil)
            break;
        narr++;
    }
    if (put_tag(e, tag) || put_varint(e, narr))
        return -1;
    size_t count_at = e->b->len;
    uint32_t nhash = 0;
    if (put(e, &nhash, 4))
        return -1;
    step *s = &e->path[e->depth++];
    s->table = self;
    s->slot = 0;
    for (size_t i = 1; i <= narr; i++) {
        s->index = i;
        lua_rawgeti(L, idx, (int)i);
        if (enc_any(e, lua_gettop(L)))
            return -1;
        lua_pop(L, 1);
    }
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        int k = lua_gettop(L) - 1;
        s->slot = k;
        int kt = lua_type(L, k);
        if (kt == LUA_TNUMBER) {
            double d = lua_tonumber(L, k);
            if (d >= 1 && d <= (double)narr && d == floor(d)) {
                lua_pop(L, 1); /* in the array part */
                continue;
            }
            if (enc_number(e, d))
                return -1;
        } else if (kt == LUA_TSTRING) {
            size_t n;
            const char *ks = lua_tolstring(L, k, &n);
            if (enc_string(e, ks, n))
                return -1;
        } else if (kt == LUA_TBOOLEAN) {
            if (put_tag(e, lua_toboolean(L, k) ? T_TRUE : T_FALSE))
                return -1;
        } else {
            e->depth--; /* the path is the table's */
            char what[64];
            snprintf(what, sizeof what, "a key of type %s", lua_typename(L, kt));
            return fail(e, what);
        }
        if (enc_any(e, k + 1))
            return -1;
        lua_pop(L, 1);
        if (nhash == UINT32_MAX)
            return fail(e, "a table of more than 2^32 keys");
        nhash++;
    }
    e->depth--;
    memcpy(e->b->p + count_at, &nhash, 4);
    return 0;
}

static int enc_any(lenc *e, int idx)
{
    lua_State *L = e->L;
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        return put_tag(e, T_NIL);
    case LUA_TBOOLEAN:
        return put_tag(e, lua_toboolean(L, idx) ? T_TRUE : T_FALSE);
    case LUA_TNUMBER:
        return enc_number(e, lua_tonumber(L, idx));
    case LUA_TSTRING: {
        size_t n;
        const char *s = lua_tolstring(L, idx, &n);
        return enc_string(e, s, n);
    }
    case LUA_TTABLE:
        return enc_table(e, idx);
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, idx) == NULL)
            return put_tag(e, T_NULL);
        return fail(e, "a light userdata (other than moonwait.null)");
    case LV_TCDATA:
        return enc_cdata(e, idx);
    case LUA_TFUNCTION:
        return fail(e, "a function");
    case LUA_TTHREAD:
        return fail(e, "a coroutine");
    case LUA_TUSERDATA:
        return fail(e, "a userdata");
    default:
        return fail(e, "a value of this type");
    }
}

int lval_encode(lua_State *L, int idx, const char *root, mw_buf *b, char *err, size_t errlen)
{
    if (idx < 0 && idx > LUA_REGISTRYINDEX)
        idx = lua_gettop(L) + idx + 1;
    lenc *e = malloc(sizeof *e);
    if (!e) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    e->L = L;
    e->c = NULL;
    e->b = b;
    e->root = root;
    e->err = err;
    e->errlen = errlen;
    e->depth = 0;
    int t = lua_type(L, idx);
    if (t == LUA_TTABLE || t == LV_TCDATA)
        e->c = codec_of(L);
    int top = lua_gettop(L);
    int rc = enc_any(e, idx);
    lua_settop(L, top);
    free(e);
    return rc;
}

/* ---- decoding --------------------------------------------------------------- */

typedef struct ldec {
    lua_State *L;
    const unsigned char *p, *end;
    codec *c;      /* looked up at the first array or 64-bit integer */
    int have_c;
} ldec;

static void corrupt(ldec *d)
{
    luaL_error(d->L, "moonwait.cache: a stored value is corrupt (internal error)");
}

static const unsigned char *take(ldec *d, size_t n)
{
    if ((size_t)(d->end - d->p) < n)
        corrupt(d);
    const unsigned char *p = d->p;
    d->p += n;
    return p;
}

static size_t get_varint(ldec *d)
{
    size_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        unsigned char byte = *take(d, 1);
        v |= (size_t)(byte & 0x7f) << shift;
        if (!(byte & 0x80))
            return v;
    }
    corrupt(d);
    return 0;
}

static codec *dec_codec(ldec *d)
{
    if (!d->have_c) {
        d->c = codec_of(d->L);
        d->have_c = 1;
    }
    if (!d->c)
        luaL_error(d->L, "moonwait.cache: this VM has no record codec");
    return d->c;
}

static void dec_any(ldec *d, int depth)
{
    lua_State *L = d->L;
    int tag = *take(d, 1);
    if (tag >= T_SHORT && tag < T_SHORT + 64) {
        size_t n = (size_t)(tag - T_SHORT);
        lua_pushlstring(L, (const char *)take(d, n), n);
        return;
    }
    switch (tag) {
    case T_NIL:
        lua_pushnil(L);
        return;
    case T_FALSE:
    case T_TRUE:
        lua_pushboolean(L, tag == T_TRUE);
        return;
    case T_NULL:
        lua_pushlightuserdata(L, NULL);
        return;
    case T_INT8:
        lua_pushnumber(L, (double)(int8_t)*take(d, 1));
        return;
    case T_INT32: {
        int32_t v;
        memcpy(&v, take(d, 4), 4);
        lua_pushnumber(L, (double)v);
        return;
    }
    case T_DOUBLE: {
        double v;
        memcpy(&v, take(d, 8), 8);
        lua_pushnumber(L, v);
        return;
    }
    case T_STR: {
        size_t n = get_varint(d);
        lua_pushlstring(L, (const char *)take(d, n), n);
        return;
    }
    case T_I64:
    case T_U64: {
        codec *c = dec_codec(d);
        uint64_t v;
        memcpy(&v, take(d, 8), 8);
        lua_rawgeti(L, LUA_REGISTRYINDEX, tag == T_I64 ? c->mk_i64_ref : c->mk_u64_ref);
        lua_pushlightuserdata(L, &v);
        lua_call(L, 1, 1);
        return;
    }
    case T_TABLE:
    case T_ARRAY: {
        if (depth > LVAL_MAX_DEPTH || !lua_checkstack(L, 6))
            corrupt(d);
        size_t narr = get_varint(d);
        uint32_t nhash;
        memcpy(&nhash, take(d, 4), 4);
        lua_createtable(L, narr > INT32_MAX ? 0 : (int)narr, nhash > INT32_MAX ? 0 : (int)nhash);
        if (tag == T_ARRAY) {
            codec_push_array_mt(dec_codec(d), L);
            lua_setmetatable(L, -2);
        }
        for (size_t i = 1; i <= narr; i++) {
            dec_any(d, depth + 1);
            lua_rawseti(L, -2, (int)i);
        }
        for (uint32_t i = 0; i < nhash; i++) {
            dec_any(d, depth + 1); /* the key */
            if (lua_isnil(L, -1))
                corrupt(d);
            dec_any(d, depth + 1);
            lua_rawset(L, -3);
        }
        return;
    }
    default:
        corrupt(d);
    }
}

void lval_push(lua_State *L, const void *p, size_t n)
{
    ldec d = { L, p, (const unsigned char *)p + n, NULL, 0 };
    dec_any(&d, 0);
}
