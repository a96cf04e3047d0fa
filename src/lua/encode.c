/*
 * encode.c: Lua values to JSON text (contract in codec.h): strings (UTF-8
 * only), numbers (the shortest form that reads back the same double; no
 * NaN or infinity), booleans, nil and moonwait.null as null,
 * int64_t/uint64_t cdata as exact integers, and tables: the array
 * metatable, or keys exactly 1..n (n > 0), make an array; anything else is
 * an object with its keys sorted by their bytes, so the same values always
 * give the same bytes. A table of the record's doc goes to encode_doc.c
 * (enc_original), which keeps what the script did not change.
 */
#include "codec.h"

#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec_int.h"

/* lua_type() of a LuaJIT cdata (lua.h has no name for it). */
#define MW_TCDATA 10

int enc_oom(enc *e)
{
    snprintf(e->err, e->errlen, "out of memory");
    return -1;
}

int enc_put(enc *e, const char *s, size_t n)
{
    return mw_buf_add(e->b, s, n) ? enc_oom(e) : 0;
}

/* A Lua string as a JSON string: it must be UTF-8 (JSON text is). */
static int put_lua_string(enc *e, const char *s, size_t n, const char *what)
{
    int rc = json_put_string(e->b, s, n);
    if (rc == -2) {
        snprintf(e->err, e->errlen, "cannot encode %s that is not valid UTF-8 as JSON", what);
        return -1;
    }
    return rc ? enc_oom(e) : 0;
}

static int put_number(enc *e, double d)
{
    char tmp[32];
    int n = json_fmt_double(tmp, d);
    if (n < 0) {
        snprintf(e->err, e->errlen, "cannot encode %s as JSON", isnan(d) ? "NaN" : "an infinite number");
        return -1;
    }
    return enc_put(e, tmp, (size_t)n);
}

static int put_cdata(enc *e, int idx)
{
    lua_State *L = e->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, e->c->cdata_kind_ref);
    lua_pushvalue(L, idx);
    lua_call(L, 1, 1);
    int kind = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
    const void *p = lua_topointer(L, idx);
    char tmp[24];
    int n;
    if (kind == 1) {
        int64_t v;
        memcpy(&v, p, sizeof v);
        n = json_fmt_i64(tmp, v);
    } else if (kind == 2) {
        uint64_t v;
        memcpy(&v, p, sizeof v);
        n = json_fmt_u64(tmp, v);
    } else {
        snprintf(e->err, e->errlen, "cannot encode a cdata value as JSON (only int64_t and uint64_t)");
        return -1;
    }
    return enc_put(e, tmp, (size_t)n);
}

/* Does the table at idx carry the array metatable? */
int enc_marked_array(enc *e, int idx)
{
    if (!lua_getmetatable(e->L, idx))
        return 0;
    int is_array = lua_topointer(e->L, -1) == e->c->array_mt;
    lua_pop(e->L, 1);
    return is_array;
}

size_t enc_count_keys(lua_State *L, int t)
{
    size_t n = 0;
    lua_pushnil(L);
    while (lua_next(L, t)) {
        lua_pop(L, 1);
        n++;
    }
    return n;
}

typedef struct key {
    const char *s;  /* the key's text: a string key's own bytes (alive while
                     * it is a key of the table), or a number key's in num */
    size_t n;
    int is_num;
    lua_Number num_key;
    int slot;       /* the value's stack slot when collect_keys keeps them, else 0 */
} key;

typedef char numtext[32]; /* a number key written as a string */

static int key_cmp(const void *a, const void *b)
{
    const key *x = a, *y = b;
    size_t n = x->n < y->n ? x->n : y->n;
    int c = memcmp(x->s, y->s, n);
    return c ? c : (x->n < y->n ? -1 : x->n > y->n);
}

int enc_ptr_cmp(const void *a, const void *b)
{
    const char *x = *(const char *const *)a, *y = *(const char *const *)b;
    return x < y ? -1 : x > y;
}

static void sort_keys(key *keys, size_t n)
{
    if (n > 12) {
        qsort(keys, n, sizeof *keys, key_cmp);
        return;
    }
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
}

/* Collect the keys of table t that are not in `skip` into keys (number
 * keys written into nums), refusing keys JSON cannot hold. With `keep`,
 * each collected key's value stays on the stack (key->slot; the caller
 * made room for 2 slots a key and restores the top): writing it then
 * needs no second lookup, which re-made the key's string (hashed and
 * interned) and looked it up. 0 with *n, or -1 (the stack restored). */
static int collect_keys(enc *e, int t, const char **skip, size_t nskip, key *keys, numtext *nums, size_t cap,
                        int keep, size_t *n)
{
    lua_State *L = e->L;
    int base = lua_gettop(L), rc = 0;
    *n = 0;
    lua_pushnil(L);
    while (*n < cap && lua_next(L, t)) { /* (cap: the count; never past the arrays) */
        key *k = &keys[*n];
        k->slot = 0;
        if (keep) {
            k->slot = lua_gettop(L);
            lua_pushvalue(L, -2); /* the key again, for lua_next */
        } else {
            lua_pop(L, 1);
        }
        int kt = lua_type(L, -1);
        if (kt == LUA_TSTRING) {
            k->s = lua_tolstring(L, -1, &k->n);
            k->is_num = 0;
            if (nskip && bsearch(&k->s, skip, nskip, sizeof *skip, enc_ptr_cmp)) {
                if (keep) {
                    lua_remove(L, -2); /* (its value) */
                    lua_remove(L, -2); /* (its key) */
                }
                continue; /* an original member, already written */
            }
        } else if (kt == LUA_TNUMBER) {
            k->num_key = lua_tonumber(L, -1);
            int len = json_fmt_double(nums[*n], k->num_key);
            if (len < 0) {
                snprintf(e->err, e->errlen, "cannot encode a table with a NaN or infinite key as JSON");
                rc = -1;
                break;
            }
            k->s = nums[*n];
            k->n = (size_t)len;
            k->is_num = 1;
            /* 1 and "1" would both be written as "1". */
            lua_pushlstring(L, k->s, k->n);
            lua_rawget(L, t);
            int clash = !lua_isnil(L, -1);
            lua_pop(L, 1);
            if (clash) {
                snprintf(e->err, e->errlen, "cannot encode a table with both the key %s and the key \"%s\" as JSON",
                         k->s, k->s);
                rc = -1;
                break;
            }
        } else {
            snprintf(e->err, e->errlen, "cannot encode a table with a %s key as JSON", lua_typename(L, kt));
            rc = -1;
            break;
        }
        (*n)++;
    }
    if (rc || !keep)
        lua_settop(L, base); /* (with keep, the caller restores the top) */
    return rc;
}

/* Write the members of table t whose keys are not in `skip` (sorted key
 * string addresses, nskip of them), sorted by key. `first`: no comma
 * before the first one. A small table's values are kept on the stack
 * while the keys are sorted; a big one's are looked up again one at a
 * time, so a table of any size needs only a few Lua stack slots. */
int enc_members(enc *e, int t, int depth, const char **skip, size_t nskip, int first, size_t count)
{
    lua_State *L = e->L;
    if (!count)
        count = enc_count_keys(L, t);
    if (count == 0)
        return 0;
    key small[16];
    numtext small_nums[16];
    key *keys = count <= 16 ? small : malloc(count * sizeof *keys);
    numtext *nums = count <= 16 ? small_nums : malloc(count * sizeof *nums);
    int rc = 0;
    size_t n = 0;
    int top = lua_gettop(L);
    int keep = count <= 16 && lua_checkstack(L, 2 * (int)count + 4);
    if (!keys || !nums)
        rc = enc_oom(e);
    else
        rc = collect_keys(e, t, skip, nskip, keys, nums, count, keep, &n);
    int base = lua_gettop(L);
    if (rc == 0) {
        sort_keys(keys, n);
        for (size_t i = 0; i < n && rc == 0; i++) {
            if (!first || i > 0)
                rc = enc_put(e, ",", 1);
            if (rc == 0)
                rc = put_lua_string(e, keys[i].s, keys[i].n, "a table with a key");
            if (rc == 0)
                rc = enc_put(e, ":", 1);
            if (rc == 0 && keys[i].slot) {
                rc = enc_value(e, keys[i].slot, depth + 1);
                lua_settop(L, base);
            } else if (rc == 0) {
                if (keys[i].is_num)
                    lua_pushnumber(L, keys[i].num_key);
                else
                    lua_pushlstring(L, keys[i].s, keys[i].n);
                lua_rawget(L, t);
                rc = enc_value(e, lua_gettop(L), depth + 1);
                lua_settop(L, base);
            }
        }
    }
    lua_settop(L, top);
    if (keys != small)
        free(keys);
    if (nums != small_nums)
        free(nums);
    return rc;
}

/* Nonzero when the keys of table t are exactly 1..n (n = 0: empty); then
 * *n is set. Counting keys against #t is not enough: #t may be any border,
 * so {1, nil, nil, 4, x = 1, y = 2} has 4 keys and #t == 4. */
int enc_is_sequence(lua_State *L, int t, size_t *n)
{
    size_t len = lua_objlen(L, t), count = 0;
    int ok = 1;
    lua_pushnil(L);
    while (lua_next(L, t)) {
        lua_pop(L, 1);
        count++;
        if (ok) {
            lua_Number k = lua_type(L, -1) == LUA_TNUMBER ? lua_tonumber(L, -1) : 0;
            ok = k >= 1 && k == floor(k) && k <= (lua_Number)len;
        }
    }
    /* Distinct keys, all in 1..len, and len of them: exactly 1..len. */
    *n = len;
    return ok && count == len;
}

/* A table marked as an array: elements 1..#t, and nothing else. */
int enc_array_length(enc *e, int t, size_t *n)
{
    if (!enc_is_sequence(e->L, t, n)) {
        snprintf(e->err, e->errlen, "cannot encode a JSON array that has holes or keys other than 1..n");
        return -1;
    }
    return 0;
}

/* Entering a table at `depth` (0 is the first level): refuse what the
 * parser would refuse to read back, and make room on the Lua stack. */
int enc_enter_table(enc *e, int depth)
{
    if (depth >= JSON_MAX_DEPTH) {
        snprintf(e->err, e->errlen, "cannot encode a table nested more than %d levels (a cycle?)", JSON_MAX_DEPTH);
        return -1;
    }
    if (!lua_checkstack(e->L, 6)) {
        snprintf(e->err, e->errlen, "out of Lua stack");
        return -1;
    }
    return 0;
}

static int encode_table(enc *e, int idx, int depth)
{
    lua_State *L = e->L;
    if (enc_enter_table(e, depth))
        return -1;
    if (e->d) {
        long node = enc_find_node(e, lua_topointer(L, idx));
        if (node >= 0)
            return enc_original(e, idx, (uint32_t)node, depth);
    }
    /* Another record's table (a batch's results): written as its doc's. */
    for (size_t i = 0; i < e->c->nalso; i++) {
        codec_doc *o = e->c->also[i];
        if (!o || o == e->d || o->anchors_ref == LUA_NOREF)
            continue;
        enc sub = *e;
        sub.d = o;
        long node = enc_find_node(&sub, lua_topointer(L, idx));
        if (node < 0)
            continue;
        if (!lua_checkstack(L, 2)) {
            snprintf(e->err, e->errlen, "out of Lua stack");
            return -1;
        }
        enc_open_doc(&sub, o);
        int rc = enc_original(&sub, idx, (uint32_t)node, depth);
        lua_settop(L, sub.anchors - 1);
        return rc;
    }
    return enc_built(e, idx, depth);
}

void codec_encode_also(codec *c, codec_doc *const *docs, size_t n)
{
    c->also = docs;
    c->nalso = docs ? n : 0;
}

/* A table the script built (or reshaped): the array metatable makes an
 * array; otherwise keys exactly 1..n (n > 0) make an array, anything else
 * an object with sorted keys. */
int enc_built(enc *e, int idx, int depth)
{
    size_t n;
    if (enc_marked_array(e, idx)) {
        if (enc_array_length(e, idx, &n))
            return -1;
        return enc_array(e, idx, n, depth, NULL, 0);
    }
    if (enc_is_sequence(e->L, idx, &n) && n > 0)
        return enc_array(e, idx, n, depth, NULL, 0);
    if (enc_put(e, "{", 1) || enc_members(e, idx, depth, NULL, 0, 1, 0))
        return -1;
    return enc_put(e, "}", 1);
}

int enc_value(enc *e, int idx, int depth)
{
    lua_State *L = e->L;
    switch (lua_type(L, idx)) {
    case LUA_TSTRING: {
        size_t n;
        const char *s = lua_tolstring(L, idx, &n);
        return put_lua_string(e, s, n, "a string");
    }
    case LUA_TNUMBER:
        return put_number(e, lua_tonumber(L, idx));
    case LUA_TBOOLEAN:
        return lua_toboolean(L, idx) ? enc_put(e, "true", 4) : enc_put(e, "false", 5);
    case LUA_TNIL:
        return enc_put(e, "null", 4);
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, idx) == NULL)
            return enc_put(e, "null", 4);
        break;
    case LUA_TTABLE:
        return encode_table(e, idx, depth);
    case MW_TCDATA:
        return put_cdata(e, idx);
    default:
        break;
    }
    snprintf(e->err, e->errlen, "cannot encode a %s value as JSON", luaL_typename(L, idx));
    return -1;
}

int codec_encode(codec *c, lua_State *L, int idx, codec_doc *doc, mw_buf *b, char *err, size_t errlen)
{
    if (idx < 0)
        idx = lua_gettop(L) + idx + 1;
    int top = lua_gettop(L);
    enc e = { c, L, NULL, 0, 0, b, err, errlen, NULL, 0 };
    if (doc && doc->anchors_ref != LUA_NOREF)
        enc_open_doc(&e, doc);
    /* Another record itself (a batch's results): its doc, so that untouched
     * it is its exact line too. */
    for (size_t i = 0; lua_type(L, idx) == LUA_TTABLE && i < c->nalso; i++) {
        codec_doc *o = c->also[i];
        if (o && o != doc && o->anchors_ref != LUA_NOREF && o->t.n && lua_topointer(L, idx) == o->t.nodes[0].user) {
            lua_settop(L, top);
            enc_open_doc(&e, o);
            break;
        }
    }
    size_t len = b->len;
    int rc;
    if (e.d && !e.d->t.dups && lua_type(L, idx) == LUA_TTABLE && lua_topointer(L, idx) == e.d->t.nodes[0].user &&
        enc_unchanged(&e, idx, 0, 0)) {
        /* The record itself, untouched: its exact line, whitespace too
         * (only at the top: nested containers are written compactly). */
        rc = enc_put(&e, e.d->text, e.d->len);
    } else {
        rc = enc_value(&e, idx, 0);
    }
    if (rc)
        b->len = len;
    lua_settop(L, top);
    return rc;
}
