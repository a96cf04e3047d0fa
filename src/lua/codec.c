/*
 * codec.c: records between JSON text and Lua values (contract in codec.h).
 *
 * How "unchanged" is recognised without proxies (scripts get plain
 * tables): every table, key, escaped string and 64-bit integer the decoder
 * made is anchored in one Lua array per doc, so its identity (address) is
 * stable while the doc lives. When encoding, a table found in the doc is
 * walked in its original key order; a member whose current value is still
 * the original one (the same anchored string or cdata, a number with the
 * same bits) is written as the bytes it came with; a changed or new value
 * is encoded. Unescaped strings need no anchor: encoding them gives back
 * exactly the bytes they came with.
 */
#define _GNU_SOURCE
#include "codec.h"

#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* lua_type() of a LuaJIT cdata (lua.h has no name for it). */
#define MW_TCDATA 10

/* Tapes above this many nodes are not kept for reuse. */
#define KEEP_NODES 4096

struct codec_doc {
    json_tape t;
    const char *text;    /* the raw text (the caller's; outlives the doc) */
    size_t len;
    int anchors_ref;     /* registry ref of the anchors array, or LUA_NOREF */
    uint32_t *order;     /* container nodes sorted by table address (lazy) */
    uint32_t norder;
    int order_built;
    codec_doc *next, *prev;
};

static char codec_key;

codec *codec_of(lua_State *L)
{
    lua_pushlightuserdata(L, &codec_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    codec *c = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return c;
}

static const char ffi_helpers[] =
    "local ffi = require('ffi')\n"
    "local i64p, u64p = ffi.typeof('const int64_t *'), ffi.typeof('const uint64_t *')\n"
    "local i64, u64 = ffi.typeof('int64_t'), ffi.typeof('uint64_t')\n"
    "local cast, istype = ffi.cast, ffi.istype\n"
    "return function(p) return cast(i64p, p)[0] end,\n"
    "       function(p) return cast(u64p, p)[0] end,\n"
    "       function(v) if istype(i64, v) then return 1 elseif istype(u64, v) then return 2 end return 0 end\n";

int codec_init(codec *c, lua_State *L)
{
    memset(c, 0, sizeof *c);
    c->L = L;
    lua_newtable(L);
    lua_pushliteral(L, "moonwait.json.array");
    lua_setfield(L, -2, "__name");
    c->array_mt = lua_topointer(L, -1);
    c->array_mt_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    if (luaL_loadstring(L, ffi_helpers) != 0 || lua_pcall(L, 0, 3, 0) != 0) {
        lua_pop(L, 1);
        return -1;
    }
    c->cdata_kind_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    c->mk_u64_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    c->mk_i64_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushlightuserdata(L, &codec_key);
    lua_pushlightuserdata(L, c);
    lua_rawset(L, LUA_REGISTRYINDEX);
    return 0;
}

static void doc_destroy(codec_doc *d)
{
    json_tape_free(&d->t);
    free(d->order);
    free(d);
}

void codec_close(codec *c)
{
    codec_doc *d, *n;
    for (d = c->free_docs; d; d = n) {
        n = d->next;
        doc_destroy(d);
    }
    for (d = c->live; d; d = n) {
        n = d->next;
        doc_destroy(d);
    }
    if (c->next)
        doc_destroy(c->next);
    free(c->scratch.p);
    memset(c, 0, sizeof *c);
}

void codec_push_array_mt(codec *c, lua_State *L)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->array_mt_ref);
}

/* ---- decoding ---------------------------------------------------------------- */

static codec_doc *take_doc(codec *c)
{
    if (c->next)
        return c->next;
    codec_doc *d = c->free_docs;
    if (d)
        c->free_docs = d->next;
    else if (!(d = calloc(1, sizeof *d)))
        return NULL;
    d->next = d->prev = NULL;
    d->anchors_ref = LUA_NOREF;
    d->order_built = 0;
    d->norder = 0;
    c->next = d;
    return d;
}

int codec_parse(codec *c, const char *text, size_t len, char *err, size_t errlen)
{
    codec_doc *d = take_doc(c);
    if (!d) {
        snprintf(err, errlen, "out of memory parsing JSON");
        return -1;
    }
    d->text = text;
    d->len = len;
    return json_parse(&d->t, text, len, JSON_TOP_OBJECT, err, errlen);
}

const json_tape *codec_pending(const codec *c)
{
    return &c->next->t;
}

typedef struct builder {
    codec *c;
    lua_State *L;
    json_node *nodes;
    const char *text;
    int anchors, mt;   /* stack slots; anchors 0 = do not anchor */
    int na;
} builder;

static void anchor(builder *b, json_node *x)
{
    if (!b->anchors)
        return;
    lua_pushvalue(b->L, -1);
    lua_rawseti(b->L, b->anchors, ++b->na);
    x->anchor = (uint32_t)b->na;
}

static void push_string(builder *b, json_node *x)
{
    if (x->flags & JSON_ESCAPED) {
        if (json_unescape(b->text, x, &b->c->scratch) != 0)
            luaL_error(b->L, "out of memory decoding a string");
        lua_pushlstring(b->L, b->c->scratch.p, b->c->scratch.len);
        anchor(b, x);
    } else {
        lua_pushlstring(b->L, b->text + x->off + 1, x->len - 2);
    }
}

/* Push node i's value; returns the index after its subtree. */
static uint32_t build(builder *b, uint32_t i)
{
    lua_State *L = b->L;
    json_node *x = &b->nodes[i];
    switch (x->type) {
    case JSON_NULL:
        lua_pushlightuserdata(L, NULL);
        return i + 1;
    case JSON_TRUE:
    case JSON_FALSE:
        lua_pushboolean(L, x->type == JSON_TRUE);
        return i + 1;
    case JSON_NUMBER:
        if (x->flags & (JSON_I64 | JSON_U64)) {
            lua_rawgeti(L, LUA_REGISTRYINDEX, (x->flags & JSON_I64) ? b->c->mk_i64_ref : b->c->mk_u64_ref);
            lua_pushlightuserdata(L, &x->v);
            lua_call(L, 1, 1);
            anchor(b, x);
        } else {
            lua_pushnumber(L, x->v.d);
        }
        return i + 1;
    case JSON_STRING:
        push_string(b, x);
        return i + 1;
    case JSON_ARRAY: {
        if (!lua_checkstack(L, 8))
            luaL_error(L, "JSON nested too deep for the Lua stack");
        lua_createtable(L, (int)x->n, 0);
        lua_pushvalue(L, b->mt);
        lua_setmetatable(L, -2);
        x->user = lua_topointer(L, -1);
        anchor(b, x);
        uint32_t j = i + 1;
        for (uint32_t k = 1; k <= x->n; k++) {
            j = build(b, j);
            lua_rawseti(L, -2, (int)k);
        }
        return x->end;
    }
    default: { /* JSON_OBJECT */
        if (!lua_checkstack(L, 8))
            luaL_error(L, "JSON nested too deep for the Lua stack");
        lua_createtable(L, 0, (int)x->n);
        x->user = lua_topointer(L, -1);
        anchor(b, x);
        uint32_t j = i + 1;
        for (uint32_t m = 0; m < x->n; m++) {
            json_node *key = &b->nodes[j];
            push_string(b, key);
            if (b->anchors && !key->anchor)
                anchor(b, key);
            key->user = lua_tostring(L, -1);
            j = build(b, j + 1);
            lua_rawset(L, -3);
        }
        return x->end;
    }
    }
}

codec_doc *codec_build(codec *c, lua_State *L)
{
    codec_doc *d = c->next;
    c->next = NULL;
    json_tape *t = &d->t;
    int n = (int)(t->containers + t->keys + t->escaped + t->bigints);
    lua_createtable(L, n, 0);
    codec_push_array_mt(c, L);
    builder b = { c, L, t->nodes, d->text, lua_gettop(L) - 1, lua_gettop(L), 0 };
    build(&b, 0);
    lua_pushvalue(L, b.anchors);
    d->anchors_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_replace(L, b.anchors); /* the value where the anchors were */
    lua_pop(L, 1);             /* the metatable */
    d->next = c->live;
    d->prev = NULL;
    if (c->live)
        c->live->prev = d;
    c->live = d;
    return d;
}

void codec_doc_free(codec *c, codec_doc *d)
{
    if (!d)
        return;
    if (d->anchors_ref != LUA_NOREF)
        luaL_unref(c->L, LUA_REGISTRYINDEX, d->anchors_ref);
    d->anchors_ref = LUA_NOREF;
    if (d->prev)
        d->prev->next = d->next;
    else
        c->live = d->next;
    if (d->next)
        d->next->prev = d->prev;
    if (d->t.cap > KEEP_NODES) {
        doc_destroy(d);
        return;
    }
    d->next = c->free_docs;
    d->prev = NULL;
    c->free_docs = d;
}

int codec_decode(codec *c, lua_State *L, const char *text, size_t len, char *err, size_t errlen)
{
    /* The pending doc's tape is borrowed (and stays pending), so nothing
     * leaks if building raises. No Lua runs between codec_parse and
     * codec_build, so it is never in use here. */
    codec_doc *d = take_doc(c);
    if (!d) {
        snprintf(err, errlen, "out of memory parsing JSON");
        return -1;
    }
    if (json_parse(&d->t, text, len, 0, err, errlen) != 0)
        return -1;
    codec_push_array_mt(c, L);
    builder b = { c, L, d->t.nodes, text, 0, lua_gettop(L), 0 };
    build(&b, 0);
    lua_remove(L, b.mt);
    return 0;
}

/* ---- encoding ---------------------------------------------------------------- */

typedef struct enc {
    codec *c;
    lua_State *L;
    codec_doc *d;
    int anchors;    /* stack slot of d's anchors, or 0 */
    mw_buf *b;
    char *err;
    size_t errlen;
} enc;

static int encode(enc *e, int idx, int depth);
static int encode_built(enc *e, int idx, int depth);

/* Does the table at idx carry the array metatable? */
static int marked_array(enc *e, int idx)
{
    if (!lua_getmetatable(e->L, idx))
        return 0;
    int is_array = lua_topointer(e->L, -1) == e->c->array_mt;
    lua_pop(e->L, 1);
    return is_array;
}

static int oom(enc *e)
{
    snprintf(e->err, e->errlen, "out of memory");
    return -1;
}

static int put(enc *e, const char *s, size_t n)
{
    return mw_buf_add(e->b, s, n) ? oom(e) : 0;
}

/* A Lua string as a JSON string: it must be UTF-8 (JSON text is). */
static int put_lua_string(enc *e, const char *s, size_t n, const char *what)
{
    int rc = json_put_string(e->b, s, n);
    if (rc == -2) {
        snprintf(e->err, e->errlen, "cannot encode %s that is not valid UTF-8 as JSON", what);
        return -1;
    }
    return rc ? oom(e) : 0;
}

static int put_number(enc *e, double d)
{
    char tmp[32];
    int n = json_fmt_double(tmp, d);
    if (n < 0) {
        snprintf(e->err, e->errlen, "cannot encode %s as JSON", isnan(d) ? "NaN" : "an infinite number");
        return -1;
    }
    return put(e, tmp, (size_t)n);
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
    return put(e, tmp, (size_t)n);
}

/* Find the doc node of the table at idx, or -1. */
static int order_cmp(const void *a, const void *b, void *arg)
{
    const json_node *nodes = arg;
    const char *x = nodes[*(const uint32_t *)a].user, *y = nodes[*(const uint32_t *)b].user;
    return x < y ? -1 : x > y;
}

static long find_node(enc *e, const void *tp)
{
    codec_doc *d = e->d;
    if (!d || !d->t.n)
        return -1;
    json_node *nodes = d->t.nodes;
    if (nodes[0].user == tp)
        return 0;
    if (!d->order_built) {
        uint32_t n = 0;
        free(d->order);
        d->order = malloc((d->t.containers ? d->t.containers : 1) * sizeof *d->order);
        if (!d->order)
            return -1;
        for (uint32_t i = 0; i < d->t.n; i++)
            if (nodes[i].type == JSON_ARRAY || nodes[i].type == JSON_OBJECT)
                d->order[n++] = i;
        qsort_r(d->order, n, sizeof *d->order, order_cmp, nodes);
        d->norder = n;
        d->order_built = 1;
    }
    uint32_t lo = 0, hi = d->norder;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        const void *u = nodes[d->order[mid]].user;
        if (u == tp)
            return d->order[mid];
        if ((const char *)u < (const char *)tp)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

static size_t count_keys(lua_State *L, int t)
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
} key;

typedef char numtext[32]; /* a number key written as a string */

static int key_cmp(const void *a, const void *b)
{
    const key *x = a, *y = b;
    size_t n = x->n < y->n ? x->n : y->n;
    int c = memcmp(x->s, y->s, n);
    return c ? c : (x->n < y->n ? -1 : x->n > y->n);
}

static int ptr_cmp(const void *a, const void *b)
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

/* Write the members of table t whose keys are not in `skip` (sorted key
 * string addresses, nskip of them), sorted by key. `first`: no comma
 * before the first one. Values are looked up again one at a time, so a
 * table of any size needs only a few Lua stack slots. */
static int put_sorted_members(enc *e, int t, int depth, const char **skip, size_t nskip, int first)
{
    lua_State *L = e->L;
    size_t count = count_keys(L, t);
    if (count == 0)
        return 0;
    key small[16];
    numtext small_nums[16];
    key *keys = count <= 16 ? small : malloc(count * sizeof *keys);
    numtext *nums = count <= 16 ? small_nums : malloc(count * sizeof *nums);
    int rc = 0;
    size_t n = 0;
    if (!keys || !nums) {
        rc = oom(e);
        goto out;
    }
    int base = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, t)) {
        lua_pop(L, 1);
        key *k = &keys[n];
        int kt = lua_type(L, -1);
        if (kt == LUA_TSTRING) {
            k->s = lua_tolstring(L, -1, &k->n);
            k->is_num = 0;
            if (nskip && bsearch(&k->s, skip, nskip, sizeof *skip, ptr_cmp))
                continue; /* an original member, already written */
        } else if (kt == LUA_TNUMBER) {
            k->num_key = lua_tonumber(L, -1);
            int len = json_fmt_double(nums[n], k->num_key);
            if (len < 0) {
                snprintf(e->err, e->errlen, "cannot encode a table with a NaN or infinite key as JSON");
                rc = -1;
                break;
            }
            k->s = nums[n];
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
        n++;
    }
    lua_settop(L, base);
    if (rc == 0) {
        sort_keys(keys, n);
        for (size_t i = 0; i < n && rc == 0; i++) {
            if (!first || i > 0)
                rc = put(e, ",", 1);
            if (rc == 0)
                rc = put_lua_string(e, keys[i].s, keys[i].n, "a table with a key");
            if (rc == 0)
                rc = put(e, ":", 1);
            if (rc == 0) {
                if (keys[i].is_num)
                    lua_pushnumber(L, keys[i].num_key);
                else
                    lua_pushlstring(L, keys[i].s, keys[i].n);
                lua_rawget(L, t);
                rc = encode(e, lua_gettop(L), depth + 1);
                lua_settop(L, base);
            }
        }
    }
out:
    if (keys != small)
        free(keys);
    if (nums != small_nums)
        free(nums);
    return rc;
}

static int encode_original(enc *e, int idx, uint32_t node, int depth);

/* Is the value at cur still node v's original? 1 for a scalar that is (its
 * bytes may be written as they came), 2 for the original table (its
 * contents may still have changed), 0 otherwise. */
static int same_value(enc *e, int cur, const json_node *v)
{
    lua_State *L = e->L;
    int same = 0;
    switch (v->type) {
    case JSON_NUMBER:
        if (v->flags & (JSON_I64 | JSON_U64)) {
            lua_rawgeti(L, e->anchors, (int)v->anchor);
            same = lua_rawequal(L, cur, -1);
            lua_pop(L, 1);
        } else if (lua_type(L, cur) == LUA_TNUMBER) {
            double d = lua_tonumber(L, cur);
            same = memcmp(&d, &v->v.d, sizeof d) == 0;
        }
        return same;
    case JSON_STRING:
        if (v->flags & JSON_ESCAPED) {
            lua_rawgeti(L, e->anchors, (int)v->anchor);
            same = lua_rawequal(L, cur, -1);
            lua_pop(L, 1);
        } else if (lua_type(L, cur) == LUA_TSTRING) {
            size_t n;
            const char *str = lua_tolstring(L, cur, &n);
            same = n == v->len - 2 && memcmp(str, e->d->text + v->off + 1, n) == 0;
        }
        return same;
    case JSON_TRUE:
    case JSON_FALSE:
        return lua_type(L, cur) == LUA_TBOOLEAN && lua_toboolean(L, cur) == (v->type == JSON_TRUE);
    case JSON_NULL:
        return lua_type(L, cur) == LUA_TLIGHTUSERDATA && lua_touserdata(L, cur) == NULL;
    default: /* JSON_ARRAY, JSON_OBJECT */
        return lua_type(L, cur) == LUA_TTABLE && lua_topointer(L, cur) == v->user ? 2 : 0;
    }
}

/* Nonzero when the original table at idx (node `node`) is exactly as it
 * was decoded, all the way down: then its bytes can be copied whole. The
 * caller has ruled out duplicate keys (their bytes would repeat a key). */
static int unchanged(enc *e, int idx, uint32_t node, int depth)
{
    lua_State *L = e->L;
    json_node *nodes = e->d->t.nodes, *x = &nodes[node];
    if (depth > JSON_MAX_DEPTH || !lua_checkstack(L, 4) || count_keys(L, idx) != x->n)
        return 0;
    if (x->type == JSON_ARRAY && lua_objlen(L, idx) != x->n)
        return 0;
    /* Reshaped by its metatable (see encode_original)? */
    if (x->type == JSON_OBJECT ? marked_array(e, idx) : (x->n == 0 && !marked_array(e, idx)))
        return 0;
    uint32_t k = node + 1;
    for (uint32_t m = 0; m < x->n; m++) {
        uint32_t vi = k;
        if (x->type == JSON_OBJECT) {
            lua_rawgeti(L, e->anchors, (int)nodes[k].anchor);
            lua_rawget(L, idx);
            vi = k + 1;
        } else {
            lua_rawgeti(L, idx, (int)m + 1);
        }
        int same = same_value(e, lua_gettop(L), &nodes[vi]);
        if (same == 2)
            same = unchanged(e, lua_gettop(L), vi, depth + 1);
        lua_pop(L, 1);
        if (!same)
            return 0;
        k = nodes[vi].end;
    }
    return 1;
}

/* A member or element whose original was node vi: its bytes if unchanged. */
static int encode_member(enc *e, int cur, uint32_t vi, int depth)
{
    json_node *v = &e->d->t.nodes[vi];
    int same = same_value(e, cur, v);
    if (same == 2)
        return encode_original(e, cur, vi, depth);
    if (same)
        return put(e, e->d->text + v->off, v->len);
    return encode(e, cur, depth);
}

/* Elements of an original array whose spelling is not what encoding their
 * value would give (floats like 1.50 or 1e2, strings with escapes), by
 * value, so that an element moved by table.insert/remove keeps it. */
typedef struct moved {
    uint64_t key;    /* a float's bits, or an escaped string's address */
    uint32_t node;   /* 0 = empty slot */
    int is_str;
} moved;

typedef struct moved_map {
    moved *slots;
    size_t mask;
    int built, empty;
} moved_map;

static uint64_t mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    return x ^ (x >> 33);
}

static int value_key(lua_State *L, int cur, uint64_t *key, int *is_str)
{
    if (lua_type(L, cur) == LUA_TNUMBER) {
        double d = lua_tonumber(L, cur);
        memcpy(key, &d, sizeof d);
        *is_str = 0;
        return 1;
    }
    if (lua_type(L, cur) == LUA_TSTRING) {
        *key = (uint64_t)(uintptr_t)lua_tostring(L, cur);
        *is_str = 1;
        return 1;
    }
    return 0;
}

static void moved_build(enc *e, moved_map *m, const json_node *orig, uint32_t first)
{
    json_node *nodes = e->d->t.nodes;
    lua_State *L = e->L;
    m->built = 1;
    size_t count = 0;
    for (uint32_t i = 0, ei = first; i < orig->n; i++, ei = nodes[ei].end) {
        const json_node *v = &nodes[ei];
        count += (v->type == JSON_NUMBER && !(v->flags & (JSON_INT | JSON_I64 | JSON_U64))) ||
                 (v->type == JSON_STRING && (v->flags & JSON_ESCAPED));
    }
    size_t cap = 8;
    while (cap < count * 2)
        cap *= 2;
    if (!count || !(m->slots = calloc(cap, sizeof *m->slots))) {
        m->empty = 1;
        return;
    }
    m->mask = cap - 1;
    for (uint32_t i = 0, ei = first; i < orig->n; i++, ei = nodes[ei].end) {
        const json_node *v = &nodes[ei];
        uint64_t key;
        int is_str;
        if (v->type == JSON_NUMBER && !(v->flags & (JSON_INT | JSON_I64 | JSON_U64))) {
            memcpy(&key, &v->v.d, sizeof key);
            is_str = 0;
        } else if (v->type == JSON_STRING && (v->flags & JSON_ESCAPED)) {
            lua_rawgeti(L, e->anchors, (int)v->anchor);
            key = (uint64_t)(uintptr_t)lua_tostring(L, -1);
            lua_pop(L, 1);
            is_str = 1;
        } else {
            continue;
        }
        size_t h = mix(key) & m->mask;
        while (m->slots[h].node && !(m->slots[h].key == key && m->slots[h].is_str == is_str))
            h = (h + 1) & m->mask;
        if (!m->slots[h].node) /* the first of equal values keeps its spelling */
            m->slots[h] = (moved){ key, ei, is_str };
    }
}

static const json_node *moved_find(enc *e, moved_map *m, int cur, const json_node *orig, uint32_t first)
{
    uint64_t key;
    int is_str;
    if (!value_key(e->L, cur, &key, &is_str))
        return NULL;
    if (!m->built)
        moved_build(e, m, orig, first);
    if (m->empty)
        return NULL;
    for (size_t h = mix(key) & m->mask; m->slots[h].node; h = (h + 1) & m->mask)
        if (m->slots[h].key == key && m->slots[h].is_str == is_str)
            return &e->d->t.nodes[m->slots[h].node];
    return NULL;
}

static int encode_array_elems(enc *e, int t, size_t n, int depth, const json_node *orig, uint32_t first)
{
    lua_State *L = e->L;
    moved_map moved = { NULL, 0, 0, 0 };
    int rc = put(e, "[", 1);
    uint32_t ei = first;
    for (size_t i = 1; i <= n && rc == 0; i++) {
        if (i > 1 && put(e, ",", 1)) {
            rc = -1;
            break;
        }
        lua_rawgeti(L, t, (int)i);
        int cur = lua_gettop(L);
        int same = orig && i <= orig->n ? same_value(e, cur, &e->d->t.nodes[ei]) : 0;
        if (same == 2) {
            rc = encode_original(e, cur, ei, depth + 1);
        } else if (same) {
            rc = put(e, e->d->text + e->d->t.nodes[ei].off, e->d->t.nodes[ei].len);
        } else {
            const json_node *m = orig ? moved_find(e, &moved, cur, orig, first) : NULL;
            rc = m && same_value(e, cur, m) == 1 ? put(e, e->d->text + m->off, m->len) : encode(e, cur, depth + 1);
        }
        if (orig && i <= orig->n)
            ei = e->d->t.nodes[ei].end;
        lua_pop(L, 1);
    }
    free(moved.slots);
    return rc ? -1 : put(e, "]", 1);
}

/* Nonzero when the keys of table t are exactly 1..n (n = 0: empty); then
 * *n is set. Counting keys against #t is not enough: #t may be any border,
 * so {1, nil, nil, 4, x = 1, y = 2} has 4 keys and #t == 4. */
static int is_sequence(lua_State *L, int t, size_t *n)
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
static int array_length(enc *e, int t, size_t *n)
{
    if (!is_sequence(e->L, t, n)) {
        snprintf(e->err, e->errlen, "cannot encode a JSON array that has holes or keys other than 1..n");
        return -1;
    }
    return 0;
}

/* Entering a table at `depth` (0 is the first level): refuse what the
 * parser would refuse to read back, and make room on the Lua stack. */
static int enter_table(enc *e, int depth)
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

static int encode_original(enc *e, int idx, uint32_t node, int depth)
{
    lua_State *L = e->L;
    if (enter_table(e, depth))
        return -1;
    json_node *x = &e->d->t.nodes[node];
    /* The script may reshape an original table with its metatable:
     * json.array() on a decoded object, or a decoded array without the
     * array metatable (then keys 1..n, n > 0, still make an array). */
    int marked = marked_array(e, idx);
    size_t seq_n;
    if (x->type == JSON_OBJECT ? marked : (!marked && !(is_sequence(L, idx, &seq_n) && seq_n > 0)))
        return encode_built(e, idx, depth);
    if (x->type == JSON_ARRAY) {
        size_t n;
        if (array_length(e, idx, &n))
            return -1;
        return encode_array_elems(e, idx, n, depth, x, node + 1);
    }
    if (put(e, "{", 1))
        return -1;
    size_t present = 0;
    uint32_t k = node + 1;
    for (uint32_t m = 0; m < x->n; m++) {
        json_node *key = &e->d->t.nodes[k];
        uint32_t vi = k + 1;
        k = e->d->t.nodes[vi].end;
        if (key->flags & JSON_DUP)
            continue; /* written once, at its first position */
        if (key->n)
            vi = key->n; /* a repeated key: the last value is the one kept */
        lua_rawgeti(L, e->anchors, (int)key->anchor);
        lua_rawget(L, idx);
        if (lua_isnil(L, -1)) {
            lua_pop(L, 1);
            continue;
        }
        if ((present++ && put(e, ",", 1)) || put(e, e->d->text + key->off, key->len) || put(e, ":", 1) ||
            encode_member(e, lua_gettop(L), vi, depth + 1)) {
            lua_pop(L, 1);
            return -1;
        }
        lua_pop(L, 1);
    }
    if (count_keys(L, idx) > present) {
        /* Keys the script added: after the original ones, sorted. */
        const char *small[32], **skip = x->n <= 32 ? small : malloc(x->n * sizeof *skip);
        if (!skip)
            return oom(e);
        size_t ns = 0;
        k = node + 1;
        for (uint32_t m = 0; m < x->n; m++) {
            json_node *key = &e->d->t.nodes[k];
            if (!(key->flags & JSON_DUP))
                skip[ns++] = key->user;
            k = e->d->t.nodes[k + 1].end;
        }
        qsort(skip, ns, sizeof *skip, ptr_cmp);
        int rc = put_sorted_members(e, idx, depth, skip, ns, present == 0);
        if (skip != small)
            free(skip);
        if (rc)
            return -1;
    }
    return put(e, "}", 1);
}

static int encode_table(enc *e, int idx, int depth)
{
    lua_State *L = e->L;
    if (enter_table(e, depth))
        return -1;
    if (e->d) {
        long node = find_node(e, lua_topointer(L, idx));
        if (node >= 0)
            return encode_original(e, idx, (uint32_t)node, depth);
    }
    return encode_built(e, idx, depth);
}

/* A table the script built (or reshaped): the array metatable makes an
 * array; otherwise keys exactly 1..n (n > 0) make an array, anything else
 * an object with sorted keys. */
static int encode_built(enc *e, int idx, int depth)
{
    size_t n;
    if (marked_array(e, idx)) {
        if (array_length(e, idx, &n))
            return -1;
        return encode_array_elems(e, idx, n, depth, NULL, 0);
    }
    if (is_sequence(e->L, idx, &n) && n > 0)
        return encode_array_elems(e, idx, n, depth, NULL, 0);
    if (put(e, "{", 1) || put_sorted_members(e, idx, depth, NULL, 0, 1))
        return -1;
    return put(e, "}", 1);
}

static int encode(enc *e, int idx, int depth)
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
        return lua_toboolean(L, idx) ? put(e, "true", 4) : put(e, "false", 5);
    case LUA_TNIL:
        return put(e, "null", 4);
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, idx) == NULL)
            return put(e, "null", 4);
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
    enc e = { c, L, doc, 0, b, err, errlen };
    if (doc && doc->anchors_ref != LUA_NOREF) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, doc->anchors_ref);
        e.anchors = lua_gettop(L);
    } else {
        e.d = NULL;
    }
    size_t len = b->len;
    int rc;
    if (e.d && !e.d->t.dups && lua_type(L, idx) == LUA_TTABLE && lua_topointer(L, idx) == e.d->t.nodes[0].user &&
        unchanged(&e, idx, 0, 0)) {
        /* The record itself, untouched: its exact line, whitespace too
         * (only at the top: nested containers are written compactly). */
        rc = put(&e, e.d->text, e.d->len);
    } else {
        rc = encode(&e, idx, 0);
    }
    if (rc)
        b->len = len;
    lua_settop(L, top);
    return rc;
}
