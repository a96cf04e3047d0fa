/*
 * codec.c: the record codec of one VM and its docs (contract in codec.h):
 * set up the array metatable and the FFI helpers for 64-bit integers,
 * find the codec from Lua (codec_of), and keep the docs: the pending one
 * (filled by the next parse), the live ones (handed out with a built
 * record, each anchoring its values until codec_doc_free) and the
 * recycled ones (their tape arrays reused by the next record).
 *
 * Decoding is decode.c; encoding is encode.c and encode_doc.c.
 */
#include "codec.h"

#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#include "../util/list.h"
#include "codec_int.h"

/* Tapes above this many nodes are not kept for reuse. */
#define KEEP_NODES 4096

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
    c->keys_ref = LUA_NOREF;
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
    return codec_keys_init(c, L);
}

void codec_push_array_mt(codec *c, lua_State *L)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->array_mt_ref);
}

/* ---- docs ---------------------------------------------------------------------- */

static void doc_destroy(codec_doc *d)
{
    json_tape_free(&d->t);
    free(d->order);
    free(d);
}

codec_doc *codec_doc_take(codec *c)
{
    if (c->next)
        return c->next;
    codec_doc *d = c->free_docs;
    if (d)
        c->free_docs = d->next;
    else if (!(d = calloc(1, sizeof *d)))
        return NULL;
    d->next = d->prev = NULL;
    d->owner = c;
    d->anchors_ref = LUA_NOREF;
    d->order_built = 0;
    d->norder = 0;
    c->next = d;
    return d;
}

codec_doc *codec_doc_hand_out(codec *c)
{
    codec_doc *d = c->next;
    c->next = NULL;
    MW_LIST_PUSH(c->live, d, prev, next);
    return d;
}

void codec_doc_push(const codec_doc *d, lua_State *L)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, d->anchors_ref);
    lua_rawgeti(L, -1, CODEC_ANCHOR_ROOT);
    lua_remove(L, -2);
}

codec *codec_doc_owner(const codec_doc *d)
{
    return d->owner;
}

void codec_doc_free(codec *c, codec_doc *d)
{
    if (!d)
        return;
    if (d->anchors_ref != LUA_NOREF)
        luaL_unref(c->L, LUA_REGISTRYINDEX, d->anchors_ref);
    d->anchors_ref = LUA_NOREF;
    MW_LIST_UNLINK(c->live, d, prev, next);
    if (d->t.cap > KEEP_NODES) {
        doc_destroy(d);
        return;
    }
    d->next = c->free_docs;
    d->prev = NULL;
    c->free_docs = d;
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
    codec_keys_free(c);
    memset(c, 0, sizeof *c);
}
