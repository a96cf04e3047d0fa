/*
 * cache_value.c: moonwait.cache's values on their way into a store and out
 * of it (cache_int.h), on lvalue.c's bytes. Called by mod_cache.c.
 *
 * Two hazards of the Lua side are handled here: a finalizer (__gc) may run
 * while a value is encoded or decoded, and it may use the cache itself. So
 * an encoding that starts while another is under way gets a buffer of its
 * own instead of the shared scratch one, and a value is decoded from a
 * copy of its bytes, never from the store's (which that finalizer may
 * change or free).
 */
#include <lauxlib.h>
#include <string.h>

#include "cache_int.h"
#include "lvalue.h"

/* Encoded values on their way in (see encode); per loop thread, as the
 * stores are. */
static _Thread_local mw_buf scratch;

/* lval_push of a private copy (pushing.p), in a protected call so that the
 * copy is freed however decoding ends. */
typedef struct pushing {
    void *p;
    size_t n;
} pushing;

static int push_private(lua_State *L)
{
    const pushing *a = lua_touserdata(L, 1);
    lval_push(L, a->p, a->n);
    return 1;
}

/* Push the value encoded in p[0..n) from a copy (a Lua finalizer run while
 * building it may change the store, and decoding may raise). The copy is
 * made before any Lua allocation: LuaJIT may run a GC step, and with it a
 * finalizer, at the start of every allocation (lua_newuserdata included),
 * and a finalizer that purges or overwrites the entry frees p (it did: a
 * use after free, or another value's bytes, for values over 512 bytes). */
static void push_copy(lua_State *L, const void *p, size_t n)
{
    unsigned char small[512];
    if (n <= sizeof small) {
        memcpy(small, p, n);
        lval_push(L, small, n);
        return;
    }
    pushing a = { malloc(n), n };
    if (!a.p)
        luaL_error(L, "cache: out of memory");
    memcpy(a.p, p, n);
    lua_pushcfunction(L, push_private);
    lua_pushlightuserdata(L, &a);
    int rc = lua_pcall(L, 1, 1, 0);
    free(a.p);
    if (rc != 0)
        lua_error(L);
}

int cache_value_push(lua_State *L, const void *p, size_t n, int negative)
{
    if (!negative) {
        push_copy(L, p, n);
        return 1;
    }
    lua_pushnil(L);
    if (!n)
        return 1;
    push_copy(L, p, n);
    return 2;
}

/* The shared scratch buffer, or a buffer of its own when an encoding is
 * already under way (a finalizer that stores while a value is being
 * encoded). */
int cache_value_encode(lua_State *L, int idx, const char *root, cache_encoded *e, char *err, size_t errlen)
{
    static _Thread_local int busy;
    memset(&e->own, 0, sizeof e->own);
    e->b = busy ? &e->own : &scratch;
    e->b->len = 0;
    busy++;
    int rc = lval_encode(L, idx, root, e->b, err, errlen);
    busy--;
    return rc;
}

void cache_value_none(cache_encoded *e)
{
    memset(&e->own, 0, sizeof e->own);
    e->b = &e->own;
}

void cache_value_encoded_free(cache_encoded *e)
{
    free(e->own.p);
}

void cache_value_free_all(void)
{
    free(scratch.p);
    scratch.p = NULL;
    scratch.len = scratch.cap = 0;
}
