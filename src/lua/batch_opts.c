/*
 * batch_opts.c: the batch settings' rules (contract in batch.h), shared
 * by the flags and the pipeline file (src/app) and the script's M.batch
 * (script_batch_read, called by vm.c). No libuv, so the settings' unit
 * test links it alone.
 */
#define _GNU_SOURCE
#include "batch.h"

#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int batch_key_check(const char *key, char *err, size_t errlen)
{
    size_t n = strlen(key);
    if (n == 0 || key[0] == '.' || key[n - 1] == '.' || strstr(key, "..")) {
        snprintf(err, errlen, "expected a field name or a dotted path like 'a.b', got '%s'", key);
        return -1;
    }
    return 0;
}

void batch_opts_free(batch_opts *o)
{
    free(o->key);
    o->key = NULL;
    o->has_key = 0;
}

/* An integer from lo to hi at the top of L's stack, or -1. */
static int int_in(lua_State *L, double lo, double hi, double *out)
{
    if (lua_type(L, -1) != LUA_TNUMBER)
        return -1;
    double d = lua_tonumber(L, -1);
    if (d != floor(d) || d < lo || d > hi)
        return -1;
    *out = d;
    return 0;
}

int script_batch_read(lua_State *L, int idx, batch_opts *o, char *why, size_t whylen)
{
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
        double d;
        if (strcmp(k, "max_size") == 0) {
            if (int_in(L, 1, BATCH_MAX_SIZE, &d) != 0) {
                snprintf(why, whylen, "max_size: expected an integer from 1 to %d, got %s", BATCH_MAX_SIZE,
                         lua_type(L, -1) == LUA_TNUMBER ? lua_tostring(L, -1) : luaL_typename(L, -1));
                lua_pop(L, 2);
                return -1;
            }
            o->max_size = (uint32_t)d;
            o->has_size = 1;
        } else if (strcmp(k, "max_wait_ms") == 0) {
            if (int_in(L, 0, BATCH_MAX_WAIT_MS, &d) != 0) {
                snprintf(why, whylen, "max_wait_ms: expected milliseconds from 0 to %d, got %s", BATCH_MAX_WAIT_MS,
                         lua_type(L, -1) == LUA_TNUMBER ? lua_tostring(L, -1) : luaL_typename(L, -1));
                lua_pop(L, 2);
                return -1;
            }
            o->max_wait_ms = (uint64_t)d;
            o->has_wait = 1;
        } else if (strcmp(k, "key") == 0) {
            if (lua_type(L, -1) != LUA_TSTRING) {
                snprintf(why, whylen, "key: expected a field name or a dotted path like 'a.b', got a %s",
                         luaL_typename(L, -1));
                lua_pop(L, 2);
                return -1;
            }
            char kw[200];
            if (batch_key_check(lua_tostring(L, -1), kw, sizeof kw) != 0) {
                snprintf(why, whylen, "key: %s", kw);
                lua_pop(L, 2);
                return -1;
            }
            free(o->key);
            o->key = strdup(lua_tostring(L, -1));
            o->has_key = o->key != NULL;
        } else {
            snprintf(why, whylen, "unknown field '%s' (expected max_size, max_wait_ms or key)", k);
            lua_pop(L, 2);
            return -1;
        }
        lua_pop(L, 1);
    }
    return 0;
}
