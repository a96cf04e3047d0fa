/*
 * codec_keys.c: the codec's key cache (contract in codec_int.h): the
 * object keys it has built, as Lua strings held by one Lua array (the key
 * table, referenced from the registry), found again from their bytes
 * through a C hash table, so a record's keys cost a hash and a
 * lua_rawgeti instead of lua_pushlstring's interning, an anchor each and a
 * lua_tolstring (~150 instructions a key: 1,300 of a 9-key record's
 * 25,600).
 *
 * Records of a stream mostly repeat the same keys. A doc whose keys came
 * from the cache keeps the key table it used in its anchors (slot 1), so
 * those strings live as long as the doc even after the cache starts a new
 * table: the cache is never evicted entry by entry, it starts afresh when
 * full (KEYS_MAX), so a stream of ever new keys costs one fresh table per
 * KEYS_MAX keys and nothing breaks. Escaped keys and long ones are not
 * cached (decode.c anchors them in the doc as before).
 */
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "codec_int.h"

/* Keys per key table before a fresh one; the hash has twice the slots. */
#define KEYS_MAX 2048
/* A table that filled up with fewer hits than keys held keys that mostly
 * never came again (ids as keys): each cost a lookup and a slot for
 * nothing (+14% a record for 20 new keys a record). The next this many
 * keys are built the plain way (anchored, as escaped keys are), then the
 * cache tries again. */
#define KEYS_OFF (16 * KEYS_MAX)
#define KEY_SLOTS (2 * KEYS_MAX) /* (fits a uint16_t hint) */

/* One cached key: its bytes (the Lua string's own, alive while the key
 * table is), and its index in the key table (0 = empty slot). */
struct codec_key {
    const char *s;
    uint32_t len;
    uint32_t idx;
};

/* FNV-1a from a random basis: keys are short, and the length is compared
 * before the bytes. (The input may be anyone's: keys chosen to share a
 * slot would cost a probe each per lookup, up to the table's 2,048.) */
static uint32_t key_hash(uint32_t basis, const char *s, size_t n)
{
    uint32_t h = basis;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

int codec_keys_init(codec *c, lua_State *L)
{
    if (!c->key_slots) {
        if (!(c->key_slots = calloc(KEY_SLOTS, sizeof *c->key_slots)))
            return -1;
        if (getrandom(&c->key_basis, sizeof c->key_basis, GRND_NONBLOCK) != (ssize_t)sizeof c->key_basis)
            c->key_basis = (uint32_t)time(NULL) ^ (uint32_t)(uintptr_t)c;
        c->key_basis ^= 2166136261u;
    }
    memset(c->key_slots, 0, KEY_SLOTS * sizeof *c->key_slots);
    if (c->keys_ref != LUA_NOREF)
        luaL_unref(L, LUA_REGISTRYINDEX, c->keys_ref);
    c->keys_ref = LUA_NOREF;
    c->nkeys = 0;
    c->key_hits = 0;
    lua_createtable(L, KEYS_MAX, 0);
    c->keys_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

int codec_keys_open(codec *c, lua_State *L, uint32_t want)
{
    if (c->keys_off) {
        c->keys_off = c->keys_off > want ? c->keys_off - want : 0;
        return 0;
    }
    if (c->keys_ref == LUA_NOREF || c->nkeys + (want < KEYS_MAX ? want : KEYS_MAX) > KEYS_MAX) {
        if (c->keys_ref != LUA_NOREF && c->key_hits < c->nkeys) {
            /* (docs keep the table they used: dropping it here is safe) */
            luaL_unref(L, LUA_REGISTRYINDEX, c->keys_ref);
            c->keys_ref = LUA_NOREF;
            c->keys_off = KEYS_OFF;
            return 0;
        }
        if (codec_keys_init(c, L) != 0)
            return 0;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->keys_ref);
    return lua_gettop(L);
}

/* s[0..n) == k's bytes, n == k->len known: keys are short, so a byte loop
 * is cheaper than a call to memcmp. */
static int same_bytes(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (a[i] != b[i])
            return 0;
    return 1;
}

int codec_key_push(codec *c, lua_State *L, int keys, uint32_t pos, const char *s, size_t n, uint32_t *idx,
                   const char **str)
{
    if (n > CODEC_KEY_MAX_LEN || !keys)
        return 0;
    /* Records of one shape have the same key at the same tape position:
     * the slot found there last time is tried before hashing. */
    uint16_t *hint = pos < CODEC_KEY_HINTS ? &c->key_hint[pos] : NULL;
    struct codec_key *k = hint ? &c->key_slots[*hint] : NULL;
    if (k && k->idx && k->len == n && same_bytes(k->s, s, n))
        goto found;
    uint32_t mask = KEY_SLOTS - 1, h = key_hash(c->key_basis, s, n) & mask;
    for (k = &c->key_slots[h]; k->idx; h = (h + 1) & mask, k = &c->key_slots[h])
        if (k->len == n && same_bytes(k->s, s, n)) {
            if (hint)
                *hint = (uint16_t)h;
            goto found;
        }
    if (c->nkeys >= KEYS_MAX)
        return 0; /* full in the middle of one record: the rest anchored */
    lua_pushlstring(L, s, n);
    lua_pushvalue(L, -1);
    lua_rawseti(L, keys, (int)++c->nkeys);
    *k = (struct codec_key){ lua_tostring(L, -1), (uint32_t)n, c->nkeys };
    if (hint)
        *hint = (uint16_t)h;
    *idx = k->idx;
    *str = k->s;
    return 1;
found:
    if (c->key_hits < UINT32_MAX)
        c->key_hits++;
    lua_rawgeti(L, keys, (int)k->idx);
    *idx = k->idx;
    *str = k->s;
    return 1;
}

void codec_keys_free(codec *c)
{
    free(c->key_slots);
    c->key_slots = NULL;
}
