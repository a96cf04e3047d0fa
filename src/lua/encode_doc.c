/*
 * encode_doc.c: encoding a decoded record faithfully (contract in
 * codec.h): what the script did not change is written as the bytes it
 * came with, in its original order.
 *
 * How "unchanged" is recognised without proxies (scripts get plain
 * tables): every table, key, escaped string and 64-bit integer the decoder
 * made is anchored by one Lua array per doc (decode.c; keys through the
 * key table of codec_keys.c that the array holds), so its identity
 * (address) is stable while the doc lives. When encoding, a table found in
 * the doc (enc_find_node) is walked in its original key order; a member
 * whose current value is still the original one (the same anchored string
 * or cdata, a number with the same bits) is written as the bytes it came
 * with; a changed or new value is encoded (encode.c). Unescaped strings
 * need no anchor: encoding them gives back exactly the bytes they came
 * with.
 */
#define _GNU_SOURCE
#include "codec.h"

#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#include "codec_int.h"

static int order_cmp(const void *a, const void *b, void *arg)
{
    const json_node *nodes = arg;
    const char *x = nodes[*(const uint32_t *)a].user, *y = nodes[*(const uint32_t *)b].user;
    return x < y ? -1 : x > y;
}

void enc_push_key(enc *e, const json_node *key)
{
    if (key->anchor & CODEC_KEY_CACHED)
        lua_rawgeti(e->L, e->keys, (int)(key->anchor & ~CODEC_KEY_CACHED));
    else
        lua_rawgeti(e->L, e->anchors, (int)key->anchor);
}

void enc_open_doc(enc *e, codec_doc *d)
{
    lua_rawgeti(e->L, LUA_REGISTRYINDEX, d->anchors_ref);
    e->anchors = lua_gettop(e->L);
    lua_rawgeti(e->L, e->anchors, CODEC_ANCHOR_KEYS);
    e->keys = e->anchors + 1;
    e->d = d;
}

long enc_find_node(enc *e, const void *tp)
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

/* Objects up to this many members are checked in one lua_next walk. */
#define WALK_MAX 16

/* The value node of the member of object `node` whose key string is ks
 * (an anchored key's bytes: the same string has the same address), or 0. */
static uint32_t member_of(const json_node *nodes, uint32_t node, const char *ks)
{
    uint32_t k = node + 1;
    for (uint32_t m = 0; m < nodes[node].n; m++, k = nodes[k + 1].end)
        if (nodes[k].user == ks)
            return k + 1;
    return 0;
}

/* enc_unchanged for an object of at most WALK_MAX members: one lua_next
 * walk, each key found among the members by its address (the caller ruled
 * out duplicate keys, so distinct members have distinct strings), instead
 * of counting the keys and then looking every member up. */
static int object_unchanged(enc *e, int idx, uint32_t node, int depth)
{
    lua_State *L = e->L;
    const json_node *nodes = e->d->t.nodes;
    uint32_t seen = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        uint32_t vi = ++seen <= nodes[node].n && lua_type(L, -2) == LUA_TSTRING
                          ? member_of(nodes, node, lua_tostring(L, -2)) : 0;
        int same = vi ? same_value(e, lua_gettop(L), &nodes[vi]) : 0;
        if (same == 2)
            same = enc_unchanged(e, lua_gettop(L), vi, depth + 1);
        lua_pop(L, 1);
        if (!same) {
            lua_pop(L, 1);
            return 0;
        }
    }
    return seen == nodes[node].n;
}

/* The keys of the table at idx. A record's own table is counted by
 * enc_unchanged (an object of more than WALK_MAX members) and then by
 * enc_original (a lua_next walk each, ~550 instructions for 3 keys): the
 * first count serves both. (No Lua that could add a key runs in between,
 * and enc_members' walk stops at the count it is given, so a count can
 * never overrun its arrays.) */
static size_t count_keys(enc *e, int idx)
{
    const void *p = lua_topointer(e->L, idx);
    if (p == e->counted)
        return e->counted_n;
    size_t n = enc_count_keys(e->L, idx);
    if (p == e->d->t.nodes[0].user) {
        e->counted = p;
        e->counted_n = n;
    }
    return n;
}

/* Nonzero when the original table at idx (node `node`) is exactly as it
 * was decoded, all the way down: then its bytes can be copied whole. The
 * caller has ruled out duplicate keys (their bytes would repeat a key). */
int enc_unchanged(enc *e, int idx, uint32_t node, int depth)
{
    lua_State *L = e->L;
    json_node *nodes = e->d->t.nodes, *x = &nodes[node];
    if (depth > JSON_MAX_DEPTH || !lua_checkstack(L, 4))
        return 0;
    /* Reshaped by its metatable (see encode_original)? */
    if (x->type == JSON_OBJECT ? enc_marked_array(e, idx) : (x->n == 0 && !enc_marked_array(e, idx)))
        return 0;
    if (x->type == JSON_OBJECT && x->n <= WALK_MAX)
        return object_unchanged(e, idx, node, depth);
    if (count_keys(e, idx) != x->n)
        return 0;
    if (x->type == JSON_ARRAY && lua_objlen(L, idx) != x->n)
        return 0;
    uint32_t k = node + 1;
    for (uint32_t m = 0; m < x->n; m++) {
        uint32_t vi = k;
        if (x->type == JSON_OBJECT) {
            enc_push_key(e, &nodes[k]);
            lua_rawget(L, idx);
            vi = k + 1;
        } else {
            lua_rawgeti(L, idx, (int)m + 1);
        }
        int same = same_value(e, lua_gettop(L), &nodes[vi]);
        if (same == 2)
            same = enc_unchanged(e, lua_gettop(L), vi, depth + 1);
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
        return enc_original(e, cur, vi, depth);
    if (same)
        return enc_put(e, e->d->text + v->off, v->len);
    return enc_value(e, cur, depth);
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

int enc_array(enc *e, int t, size_t n, int depth, const json_node *orig, uint32_t first)
{
    lua_State *L = e->L;
    moved_map moved = { NULL, 0, 0, 0 };
    int rc = enc_put(e, "[", 1);
    uint32_t ei = first;
    for (size_t i = 1; i <= n && rc == 0; i++) {
        if (i > 1 && enc_put(e, ",", 1)) {
            rc = -1;
            break;
        }
        lua_rawgeti(L, t, (int)i);
        int cur = lua_gettop(L);
        int same = orig && i <= orig->n ? same_value(e, cur, &e->d->t.nodes[ei]) : 0;
        if (same == 2) {
            rc = enc_original(e, cur, ei, depth + 1);
        } else if (same) {
            rc = enc_put(e, e->d->text + e->d->t.nodes[ei].off, e->d->t.nodes[ei].len);
        } else {
            const json_node *m = orig ? moved_find(e, &moved, cur, orig, first) : NULL;
            rc = m && same_value(e, cur, m) == 1 ? enc_put(e, e->d->text + m->off, m->len) : enc_value(e, cur, depth + 1);
        }
        if (orig && i <= orig->n)
            ei = e->d->t.nodes[ei].end;
        lua_pop(L, 1);
    }
    free(moved.slots);
    return rc ? -1 : enc_put(e, "]", 1);
}

/* The members of the original object at idx (doc node x = nodes[node])
 * still present, in their original order, each key as it was spelled.
 * 0 with *present (how many were written), or -1. */
static int original_members(enc *e, int idx, uint32_t node, int depth, size_t *present)
{
    lua_State *L = e->L;
    const json_node *x = &e->d->t.nodes[node];
    uint32_t k = node + 1;
    for (uint32_t m = 0; m < x->n; m++) {
        json_node *key = &e->d->t.nodes[k];
        uint32_t vi = k + 1;
        k = e->d->t.nodes[vi].end;
        if (key->flags & JSON_DUP)
            continue; /* written once, at its first position */
        if (key->n)
            vi = key->n; /* a repeated key: the last value is the one kept */
        enc_push_key(e, key);
        lua_rawget(L, idx);
        if (lua_isnil(L, -1)) {
            lua_pop(L, 1);
            continue;
        }
        if (((*present)++ && enc_put(e, ",", 1)) || enc_put(e, e->d->text + key->off, key->len) ||
            enc_put(e, ":", 1) || encode_member(e, lua_gettop(L), vi, depth + 1)) {
            lua_pop(L, 1);
            return -1;
        }
        lua_pop(L, 1);
    }
    return 0;
}

/* Keys the script added to the original object at idx: after the
 * original ones (`present` of them written), sorted. */
static int added_members(enc *e, int idx, uint32_t node, int depth, size_t present, size_t count)
{
    const json_node *x = &e->d->t.nodes[node];
    const char *small[32], **skip = x->n <= 32 ? small : malloc(x->n * sizeof *skip);
    if (!skip)
        return enc_oom(e);
    size_t ns = 0;
    uint32_t k = node + 1;
    for (uint32_t m = 0; m < x->n; m++) {
        json_node *key = &e->d->t.nodes[k];
        if (!(key->flags & JSON_DUP))
            skip[ns++] = key->user;
        k = e->d->t.nodes[k + 1].end;
    }
    if (ns > 1)
        qsort(skip, ns, sizeof *skip, enc_ptr_cmp);
    int rc = enc_members(e, idx, depth, skip, ns, present == 0, count);
    if (skip != small)
        free(skip);
    return rc ? -1 : 0;
}

int enc_original(enc *e, int idx, uint32_t node, int depth)
{
    lua_State *L = e->L;
    if (enc_enter_table(e, depth))
        return -1;
    json_node *x = &e->d->t.nodes[node];
    /* The script may reshape an original table with its metatable:
     * json.array() on a decoded object, or a decoded array without the
     * array metatable (then keys 1..n, n > 0, still make an array). */
    int marked = enc_marked_array(e, idx);
    size_t seq_n;
    if (x->type == JSON_OBJECT ? marked : (!marked && !(enc_is_sequence(L, idx, &seq_n) && seq_n > 0)))
        return enc_built(e, idx, depth);
    if (x->type == JSON_ARRAY) {
        size_t n;
        if (enc_array_length(e, idx, &n))
            return -1;
        return enc_array(e, idx, n, depth, x, node + 1);
    }
    size_t present = 0;
    if (enc_put(e, "{", 1) || original_members(e, idx, node, depth, &present))
        return -1;
    size_t count = count_keys(e, idx);
    if (count > present && added_members(e, idx, node, depth, present, count))
        return -1;
    return enc_put(e, "}", 1);
}
