/* retry_table.c: a retry strategy from a Lua table (contract in retry_table.h). */
#include "retry_table.h"

#include <lauxlib.h>
#include <stdio.h>
#include <string.h>

static int field_num(lua_State *L, int t, const char *name, double dflt, double *out, char *err, size_t n)
{
    lua_getfield(L, t, name);
    int ty = lua_type(L, -1);
    if (ty == LUA_TNIL) {
        *out = dflt;
    } else if (ty == LUA_TNUMBER && lua_tonumber(L, -1) >= 0) {
        *out = lua_tonumber(L, -1);
    } else {
        snprintf(err, n, "retry.%s must be a non-negative number, got %s", name, luaL_typename(L, -1));
        lua_pop(L, 1);
        return -1;
    }
    lua_pop(L, 1);
    return 0;
}

/* A delay field: whole or fractional ms from 0 to 2^40 (--retry's bound).
 * Past 2^64 the conversion to an integer is undefined (1e308 gave 0 on
 * x86: a delay of "forever" retried at once). */
static int field_ms(lua_State *L, int t, const char *name, double dflt, uint64_t *out, char *err, size_t n)
{
    double v;
    if (field_num(L, t, name, dflt, &v, err, n))
        return -1;
    if (!(v <= 1099511627776.0)) {
        snprintf(err, n, "retry.%s must be a number of ms from 0 to 1099511627776 (2^40), got %.17g", name, v);
        return -1;
    }
    *out = (uint64_t)v;
    return 0;
}

int retry_table_parse(lua_State *L, int idx, retry_policy *p, char *err, size_t n)
{
    static const char *const known[] = { "max_attempts", "backoff", "delay_ms", "initial_delay_ms",
                                         "max_delay_ms", "multiplier", "jitter", NULL };
    int t = idx < 0 ? lua_gettop(L) + idx + 1 : idx;
    memset(p, 0, sizeof *p);
    p->set = 1;
    lua_pushnil(L);
    while (lua_next(L, t)) {
        size_t klen = 0;
        const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tolstring(L, -2, &klen) : NULL;
        if (k && klen != strlen(k))
            k = NULL; /* a NUL inside: no known key */
        int ok = 0;
        for (int i = 0; k && known[i]; i++)
            ok |= strcmp(k, known[i]) == 0;
        if (!ok) {
            snprintf(err, n, "retry: unknown key '%s' (known: max_attempts, backoff, delay_ms, "
                             "initial_delay_ms, max_delay_ms, multiplier, jitter)", k ? k : "?");
            lua_pop(L, 2);
            return -1;
        }
        lua_pop(L, 1);
    }
    lua_getfield(L, t, "backoff");
    size_t blen = 5;
    const char *b = lua_isnil(L, -1) ? "fixed" : lua_tolstring(L, -1, &blen);
    if (b && blen != strlen(b))
        b = NULL; /* a NUL inside: not one of the names */
    if (!b || (strcmp(b, "fixed") && strcmp(b, "exponential") && strcmp(b, "none"))) {
        snprintf(err, n, "retry.backoff must be \"fixed\", \"exponential\" or \"none\"");
        lua_pop(L, 1);
        return -1;
    }
    p->backoff = strcmp(b, "none") == 0 ? RETRY_NONE : strcmp(b, "fixed") == 0 ? RETRY_FIXED : RETRY_EXPONENTIAL;
    lua_pop(L, 1);
    double v;
    if (field_num(L, t, "max_attempts", 3, &v, err, n))
        return -1;
    if (v < 1 || v != (double)(uint32_t)v) {
        snprintf(err, n, "retry.max_attempts must be an integer >= 1");
        return -1;
    }
    p->max_attempts = (uint32_t)v;
    if (field_ms(L, t, "delay_ms", 100, &p->delay_ms, err, n))
        return -1;
    if (field_ms(L, t, "initial_delay_ms", 10, &p->initial_ms, err, n))
        return -1;
    if (field_ms(L, t, "max_delay_ms", 1000, &p->max_ms, err, n))
        return -1;
    if (field_num(L, t, "multiplier", 2, &p->multiplier, err, n))
        return -1;
    lua_getfield(L, t, "jitter");
    size_t jlen = 4;
    const char *j = lua_isnil(L, -1) ? "none" : lua_tolstring(L, -1, &jlen);
    if (j && jlen != strlen(j))
        j = NULL; /* a NUL inside: not one of the names */
    if (!j || (strcmp(j, "none") && strcmp(j, "full"))) {
        snprintf(err, n, "retry.jitter must be \"none\" or \"full\"");
        lua_pop(L, 1);
        return -1;
    }
    p->jitter_full = strcmp(j, "full") == 0;
    lua_pop(L, 1);
    if (retry_policy_check(p, err, n) != 0) {
        char tmp[200];
        snprintf(tmp, sizeof tmp, "retry: %s", err);
        snprintf(err, n, "%s", tmp);
        return -1;
    }
    return 0;
}
