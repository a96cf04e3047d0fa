/*
 * decode.c: JSON text to Lua values (contract in codec.h). json_parse
 * fills the pending doc's tape; build() walks the tape once, pushing
 * plain tables (pre-sized from the tape's counts; arrays carry the array
 * metatable), strings, numbers, moonwait.null and, for integers beyond
 * 2^53, int64_t/uint64_t cdata. For a record (codec_build) every table,
 * escaped string and big integer is also stored in the doc's anchors
 * array and its index noted on the tape node, so the encoder can tell
 * later whether a value is still the one that was read. Keys come from the
 * codec's key cache (codec_keys.c), whose table the doc anchors instead
 * (the node notes the key's index there, CODEC_KEY_CACHED); an escaped or
 * long key is anchored itself.
 */
#include "codec.h"

#include <lauxlib.h>
#include <stdio.h>

#include "codec_int.h"

int codec_parse(codec *c, const char *text, size_t len, char *err, size_t errlen)
{
    codec_doc *d = codec_doc_take(c);
    if (!d) {
        snprintf(err, errlen, "out of memory parsing JSON");
        return -1;
    }
    d->text = text;
    d->len = len;
    return json_parse(&d->t, text, len, JSON_TOP_OBJECT, err, errlen);
}

int codec_adopt(codec *c, const char *text, size_t len, const json_tape *t)
{
    codec_doc *d = codec_doc_take(c);
    if (!d || json_tape_copy(&d->t, t) != 0)
        return -1;
    d->text = text;
    d->len = len;
    return 0;
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
    int keys;          /* stack slot of the key table (codec_keys.c) */
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
        /* A record (anchored) gets room for two more keys: scripts add fields
         * to it (enrichment), and each key past the hash part rehashes it. */
        lua_createtable(L, 0, (int)x->n + (b->anchors && i == 0 ? 2 : 0));
        x->user = lua_topointer(L, -1);
        anchor(b, x);
        uint32_t j = i + 1;
        for (uint32_t m = 0; m < x->n; m++) {
            json_node *key = &b->nodes[j];
            uint32_t ki;
            const char *ks;
            if (!(key->flags & JSON_ESCAPED) &&
                codec_key_push(b->c, L, b->keys, j, b->text + key->off + 1, key->len - 2, &ki, &ks)) {
                key->anchor = ki | CODEC_KEY_CACHED; /* alive in the key table */
                key->user = ks;
            } else {
                push_string(b, key);
                if (b->anchors && !key->anchor)
                    anchor(b, key);
                key->user = lua_tostring(L, -1);
            }
            j = build(b, j + 1);
            lua_rawset(L, -3);
        }
        return x->end;
    }
    }
}

codec_doc *codec_build(codec *c, lua_State *L)
{
    codec_doc *d = codec_doc_hand_out(c);
    json_tape *t = &d->t;
    /* (keys mostly come from the key cache: not anchored one by one,
     * unless the cache is off for a stream of new keys) */
    int n = (int)(t->containers + t->escaped + t->bigints + (c->keys_off ? t->keys : 0)) + CODEC_ANCHOR_ROOT;
    lua_createtable(L, n, 0);
    codec_push_array_mt(c, L);
    int top = lua_gettop(L);
    int keys = codec_keys_open(c, L, t->keys);
    if (keys) {
        lua_pushvalue(L, keys);
        lua_rawseti(L, top - 1, CODEC_ANCHOR_KEYS);
    }
    builder b = { c, L, t->nodes, d->text, top - 1, top, keys, CODEC_ANCHOR_ROOT - 1 };
    build(&b, 0); /* the root is anchored first: CODEC_ANCHOR_ROOT */
    lua_pushvalue(L, b.anchors);
    d->anchors_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_replace(L, b.anchors); /* the value where the anchors were */
    lua_settop(L, b.anchors);  /* the metatable, the key table */
    return d;
}

int codec_decode(codec *c, lua_State *L, const char *text, size_t len, char *err, size_t errlen)
{
    /* The pending doc's tape is borrowed (and stays pending), so nothing
     * leaks if building raises. No Lua runs between codec_parse and
     * codec_build, so it is never in use here. */
    codec_doc *d = codec_doc_take(c);
    if (!d) {
        snprintf(err, errlen, "out of memory parsing JSON");
        return -1;
    }
    if (json_parse(&d->t, text, len, 0, err, errlen) != 0)
        return -1;
    codec_push_array_mt(c, L);
    int mt = lua_gettop(L);
    int keys = codec_keys_open(c, L, d->t.keys);
    builder b = { c, L, d->t.nodes, text, 0, mt, keys, 0 };
    build(&b, 0);
    lua_replace(L, b.mt);
    lua_settop(L, b.mt); /* the value where the metatable was */
    return 0;
}
