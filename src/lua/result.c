/*
 * result.c: a call's results out of a script's VM: check what async_invoke
 * or on_timeout returned (an array of output records, or nil and an
 * error), tag each record with the generation when asked, and encode them
 * with the record's doc into one buffer of newline-terminated JSON lines.
 *
 * Called by invoke.c (an attempt's outcome) and hooks.c (on_timeout).
 */
#define _GNU_SOURCE
#include "script.h"

#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "script_int.h"

#define WRONG_RETURN_HINT "expected an array of output records (did you mean `return { record }`?)"
#define WRONG_RESULT_HINT "expected an array of output records (did you mean `results[i] = { records[i] }`?)"

/* The hint for what returned the wrong shape: one of batch_invoke's
 * results ("batch_invoke (results[i])") is set, not returned. */
static const char *wrong_hint(const char *what)
{
    return strncmp(what, "batch_invoke", 12) == 0 ? WRONG_RESULT_HINT : WRONG_RETURN_HINT;
}

/* The number of output records in `what`'s n results from base, or -1
 * with *err (malloc'd; NULL means out of memory) when they are not one
 * array of records or nil and an error. */
static long check_results(lua_State *L, const char *what, int base, int n, char **err)
{
    if (n <= 0) {
        if (asprintf(err, "%s returned nothing; %s", what, wrong_hint(what)) < 0)
            *err = NULL;
        return -1;
    }
    if (lua_isnil(L, base)) {
        if (n >= 2 && !lua_isnil(L, base + 1))
            *err = rt_strdup_value(L, base + 1);
        else if (asprintf(err, "%s returned nil without an error message; %s", what, wrong_hint(what)) < 0)
            *err = NULL;
        return -1;
    }
    if (lua_type(L, base) != LUA_TTABLE) {
        if (asprintf(err, "%s returned a %s; %s", what, luaL_typename(L, base), wrong_hint(what)) < 0)
            *err = NULL;
        return -1;
    }
    size_t count = lua_objlen(L, base), keys = 0;
    lua_pushnil(L);
    while (lua_next(L, base)) {
        lua_pop(L, 1);
        if (++keys > count) {
            lua_pop(L, 1);
            break;
        }
    }
    if (keys != count) {
        if (asprintf(err, "%s returned a table that is not an array; %s", what, wrong_hint(what)) < 0)
            *err = NULL;
        return -1;
    }
    return (long)count;
}

/* Encode elements 1..count of the array at base into jb, one line each. */
static int encode_records(script *sc, const char *what, int base, size_t count, codec_doc *doc, mw_buf *jb,
                          char **err)
{
    lua_State *L = sc->rt.L;
    for (size_t i = 1; i <= count; i++) {
        lua_rawgeti(L, base, (int)i);
        if (sc->tag_field && lua_type(L, -1) == LUA_TTABLE) {
            lua_pushstring(L, sc->tag_field);
            lua_pushinteger(L, sc->generation);
            lua_rawset(L, -3);
        }
        char why[256];
        int erc = codec_encode(&sc->codec, L, -1, doc, jb, why, sizeof why);
        lua_pop(L, 1);
        if (erc != 0 || mw_buf_add(jb, "\n", 1) != 0) {
            if (asprintf(err, "%s: cannot encode output record %zu as JSON: %s", what, i, erc ? why : "out of memory") < 0)
                *err = NULL;
            return -1;
        }
    }
    return 0;
}

int script_encode_results(script *sc, const char *what, int base, codec_doc *doc, char **out, size_t *outlen,
                          char **err)
{
    lua_State *L = sc->rt.L;
    *out = NULL;
    *outlen = 0;
    *err = NULL;
    int rc = -1;
    long count = check_results(L, what, base, lua_gettop(L) - base + 1, err);
    if (count > 0) {
        mw_buf jb = { NULL, 0, 0 };
        if (encode_records(sc, what, base, (size_t)count, doc, &jb, err) == 0) {
            *out = jb.p;
            *outlen = jb.len;
            rc = 0;
        } else {
            free(jb.p);
        }
    } else if (count == 0) {
        rc = 0;
    }
    lua_settop(L, base - 1);
    if (rc != 0 && !*err)
        *err = strdup("out of memory");
    return rc;
}
