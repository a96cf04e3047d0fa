/*
 * pipefile.c: reads the pipeline file (contract in pipefile.h). Called by
 * config_parse_run before the flags, which override what it sets.
 */
#define _GNU_SOURCE
#include "pipefile.h"

#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../io/redis_url.h"
#include "../lua/retry_table.h"
#include "../util/buf.h"
#include "../util/str.h"
#include "options.h"

/* A path from the pipeline file is relative to the file's directory. */
static char *resolve(const char *pipeline, const char *v)
{
    if (strcmp(v, "-") == 0 || v[0] == '/' || redis_url_is(v))
        return strdup(v);
    const char *slash = strrchr(pipeline, '/');
    if (!slash)
        return strdup(v);
    return mw_str_fmt("%.*s/%s", (int)(slash - pipeline), pipeline, v);
}

/* `checkpoint = { dir = "DIR", interval_ms = N }`, the table at the top of
 * L's stack. */
static int apply_checkpoint(lua_State *L, config *c, const char *path, char **err)
{
    int tb = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, tb)) {
        const char *k2 = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
        char why[256] = "", val[64];
        int bad = 0;
        if (strcmp(k2, "dir") == 0 && lua_type(L, -1) == LUA_TSTRING) {
            char *r = resolve(path, lua_tostring(L, -1));
            bad = options_by_flag("checkpoint-dir", 14)->set(c, r, why, sizeof why);
            free(r);
        } else if (strcmp(k2, "interval_ms") == 0 && lua_type(L, -1) == LUA_TNUMBER) {
            snprintf(val, sizeof val, "%lld", (long long)lua_tonumber(L, -1));
            bad = options_by_flag("checkpoint-interval", 19)->set(c, val, why, sizeof why);
        } else {
            snprintf(why, sizeof why, "expected { dir = \"DIR\", interval_ms = N }, got key '%s'", k2);
            bad = 1;
        }
        if (bad) {
            *err = mw_str_fmt("%s: key 'checkpoint': %s", path, why);
            return -1;
        }
        lua_pop(L, 1);
    }
    return 0;
}

/* `capacity = { min = N, max = N, adaptive = true }`, the table at the top
 * of L's stack, as the flag's "MIN..MAX" (min defaults to 1); with
 * adaptive = false, a fixed capacity of max. */
static int apply_capacity(lua_State *L, config *c, const char *path, const option *s, char **err)
{
    static const char shape[] = "expected { min = N, max = N, adaptive = true }";
    int tb = lua_gettop(L), adaptive = -1;
    double num[2] = { 1, -1 }; /* min, max */
    const char *why = NULL;
    char got[128] = "";
    lua_pushnil(L);
    while (!why && lua_next(L, tb)) {
        const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
        int t = lua_type(L, -1), slot = !strcmp(k, "min") ? 0 : !strcmp(k, "max") ? 1 : -1;
        if (slot >= 0 && t == LUA_TNUMBER)
            num[slot] = lua_tonumber(L, -1);
        else if (!strcmp(k, "adaptive") && t == LUA_TBOOLEAN)
            adaptive = lua_toboolean(L, -1);
        else {
            snprintf(got, sizeof got, ", got key '%s' (a %s)", k, luaL_typename(L, -1));
            why = shape;
        }
        lua_pop(L, 1);
    }
    lua_settop(L, tb);
    if (!why && adaptive < 0)
        why = "a table is for adaptive capacity: say adaptive = true (or give a plain integer)";
    else if (!why && num[1] < 0)
        why = adaptive ? "adaptive capacity needs max" : "adaptive = false needs max (the fixed capacity)";
    if (why) {
        *err = mw_str_fmt("%s: key 'capacity': %s%s", path, why, got);
        return -1;
    }
    char val[80], whyset[256];
    if (adaptive)
        snprintf(val, sizeof val, "%.17g..%.17g", num[0], num[1]);
    else
        snprintf(val, sizeof val, "%.17g", num[1]);
    if (s->set(c, val, whyset, sizeof whyset) != 0) {
        *err = mw_str_fmt("%s: key 'capacity': %s", path, whyset);
        return -1;
    }
    return 0;
}

/* `batch = { max_size = N, max_wait_ms = MS, key = "FIELD" }`, the table
 * at the top of L's stack, through the flags' setters. */
static int apply_batch(lua_State *L, config *c, const char *path, char **err)
{
    static const struct {
        const char *field, *flag;
        int type;
    } fields[] = { { "max_size", "batch-size", LUA_TNUMBER },
                   { "max_wait_ms", "batch-wait", LUA_TNUMBER },
                   { "key", "batch-key", LUA_TSTRING } };
    int tb = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, tb)) {
        const char *k2 = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
        char why[256] = "", val[64];
        size_t i = 0;
        while (i < 3 && strcmp(k2, fields[i].field) != 0)
            i++;
        int bad = 1;
        if (i == 3) {
            snprintf(why, sizeof why, "expected { max_size = N, max_wait_ms = MS, key = \"FIELD\" }, got key '%s'", k2);
        } else if (lua_type(L, -1) != fields[i].type) {
            snprintf(why, sizeof why, "%s: expected %s, got %s", k2, fields[i].type == LUA_TNUMBER ? "an integer" : "a string",
                     luaL_typename(L, -1));
        } else {
            double d = lua_tonumber(L, -1);
            if (fields[i].type == LUA_TNUMBER && d == (double)(long long)d)
                snprintf(val, sizeof val, "%lld", (long long)d);
            else if (fields[i].type == LUA_TNUMBER)
                snprintf(val, sizeof val, "%g", d);
            const char *v = fields[i].type == LUA_TNUMBER ? val : lua_tostring(L, -1);
            const option *o = options_by_flag(fields[i].flag, strlen(fields[i].flag));
            char w2[200];
            bad = o->set(c, v, w2, sizeof w2) != 0;
            if (bad)
                snprintf(why, sizeof why, "%s: %s", k2, w2);
        }
        if (bad) {
            *err = mw_str_fmt("%s: key 'batch': %s", path, why);
            return -1;
        }
        lua_pop(L, 1);
    }
    return 0;
}

/* `rate_limit = { rps = N, burst = B }`, the table at the top of L's
 * stack: made into the flag's "N:B" and given to its setter. */
static int apply_rate(lua_State *L, config *c, const char *path, const option *s, char **err)
{
    int tb = lua_gettop(L);
    char rps[64] = "", burst[64] = "", why[320];
    lua_pushnil(L);
    while (lua_next(L, tb)) {
        const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
        char *dst = !strcmp(k, "rps") ? rps : !strcmp(k, "burst") ? burst : NULL;
        if (!dst || lua_type(L, -1) != LUA_TNUMBER) {
            *err = mw_str_fmt("%s: key 'rate_limit': expected { rps = N, burst = B } with numbers, got %s '%s'",
                              path, dst ? luaL_typename(L, -1) : "key", k);
            return -1;
        }
        snprintf(dst, 64, "%.17g", lua_tonumber(L, -1));
        lua_pop(L, 1);
    }
    if (!rps[0]) {
        *err = mw_str_fmt("%s: key 'rate_limit': expected { rps = N, burst = B }: rps is missing", path);
        return -1;
    }
    char v[140];
    snprintf(v, sizeof v, "%s%s%s", rps, burst[0] ? ":" : "", burst);
    if (s->set(c, v, why, sizeof why) != 0) {
        *err = mw_str_fmt("%s: key 'rate_limit': %s", path, why);
        return -1;
    }
    return 0;
}

/* Append s percent-encoded (all but unreserved characters). */
static int put_pct(mw_buf *b, const char *s, size_t n)
{
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        unsigned char ch = (unsigned char)s[i];
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || strchr("-._~$", ch)) {
            rc = mw_buf_add(b, s + i, 1);
        } else {
            char hex[4];
            snprintf(hex, sizeof hex, "%%%02X", ch);
            rc = mw_buf_add(b, hex, 3);
        }
    }
    return rc;
}

/* `input = { redis = "HOST:PORT", stream = ..., group = ... }` (or
 * `redis_cluster = "H:P,H:P"` or an array of them; `password`): the table
 * at the top of L's stack as the URL the flag takes (malloc'd), which the
 * Redis source or sink checks like any other. NULL with *err. */
static char *redis_table_url(lua_State *L, const char *path, const char *key, char **err)
{
    int tb = lua_gettop(L);
    mw_buf hosts = { 0 }, pass = { 0 }, q = { 0 };
    int cluster = -1, rc = 0;
    lua_pushnil(L);
    while (!rc && lua_next(L, tb)) {
        const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
        int t = lua_type(L, -1);
        if (k && (!strcmp(k, "redis") || !strcmp(k, "redis_cluster")) && (t == LUA_TSTRING || t == LUA_TTABLE)) {
            cluster = !strcmp(k, "redis_cluster");
            if (t == LUA_TSTRING) {
                rc = mw_buf_add(&hosts, lua_tostring(L, -1), lua_objlen(L, -1));
            } else {
                for (int i = 1; !rc && i <= (int)lua_objlen(L, -1); i++) {
                    lua_rawgeti(L, -1, i);
                    rc = (i > 1 && mw_buf_add(&hosts, ",", 1)) || !lua_isstring(L, -1) ||
                         mw_buf_add(&hosts, lua_tostring(L, -1), lua_objlen(L, -1));
                    lua_pop(L, 1);
                }
            }
        } else if (k && !strcmp(k, "password") && (t == LUA_TSTRING || t == LUA_TNUMBER)) {
            size_t n;
            const char *pw = lua_tolstring(L, -1, &n); /* (a number, as Lua writes it: 1234) */
            rc = put_pct(&pass, pw, n);
        } else if (k && (t == LUA_TSTRING || t == LUA_TNUMBER)) {
            char num[32];
            const char *v = t == LUA_TSTRING ? lua_tostring(L, -1) : num;
            if (t == LUA_TNUMBER)
                snprintf(num, sizeof num, "%.17g", lua_tonumber(L, -1));
            rc = (q.len && mw_buf_add(&q, "&", 1)) || put_pct(&q, k, strlen(k)) || mw_buf_add(&q, "=", 1) ||
                 put_pct(&q, v, strlen(v));
        } else {
            *err = mw_str_fmt("%s: key '%s': expected { redis = \"HOST:PORT\", stream = ..., ... } with string "
                              "or number values, got key '%s' (a %s)",
                              path, key, k ? k : "?", luaL_typename(L, -1));
            rc = -2;
        }
        lua_pop(L, 1);
    }
    if (rc == -2) {
        lua_settop(L, tb);
    } else if (cluster < 0) {
        *err = mw_str_fmt("%s: key '%s': a table needs redis = \"HOST:PORT\" (or redis_cluster)", path, key);
    } else if (rc == 0) {
        char *url = mw_str_fmt("%s://%s%.*s%s%.*s?%.*s", cluster ? "redis+cluster" : "redis", pass.len ? ":" : "",
                               (int)pass.len, pass.p ? pass.p : "", pass.len ? "@" : "", (int)hosts.len,
                               hosts.p ? hosts.p : "", (int)q.len, q.p ? q.p : "");
        free(hosts.p);
        free(pass.p);
        free(q.p);
        return url;
    } else {
        *err = mw_str_fmt("%s: key '%s': out of memory or a host that is not a string", path, key);
    }
    free(hosts.p);
    free(pass.p);
    free(q.p);
    return NULL;
}

/* The text form of the value at the top of L's stack for a setting of type
 * t (into val when it is a number), or NULL when it has the wrong type. */
static const char *value_text(lua_State *L, option_type t, char *val, size_t n)
{
    int lt = lua_type(L, -1);
    if ((t == OPTION_STRING || t == OPTION_PATH || t == OPTION_RETRY) && lt == LUA_TSTRING)
        return lua_tostring(L, -1);
    if (t == OPTION_BOOL && lt == LUA_TBOOLEAN)
        return lua_toboolean(L, -1) ? "true" : "false";
    if (t == OPTION_RATE && lt == LUA_TSTRING)
        return lua_tostring(L, -1);
    if ((t == OPTION_INT || t == OPTION_CAPACITY || t == OPTION_RATE) && lt == LUA_TNUMBER) {
        double d = lua_tonumber(L, -1);
        if (d == (double)(long long)d)
            snprintf(val, n, "%lld", (long long)d);
        else
            snprintf(val, n, "%g", d);
        return val;
    }
    return NULL;
}

/* One `key = value` of the file: the value at the top of L's stack. */
static int apply_key(lua_State *L, config *c, const char *path, const char *key, char **err)
{
    const option *s = options_by_key(key);
    if (!s) {
        char known[512];
        options_keys(known, sizeof known);
        const char *near = options_suggest_key(key);
        *err = near ? mw_str_fmt("%s: unknown key '%s' (did you mean '%s'? known keys: %s)", path, key, near, known)
                    : mw_str_fmt("%s: unknown key '%s' (known keys: %s)", path, key, known);
        return -1;
    }
    char why[256], val[64];
    if (s->type == OPTION_RETRY && lua_type(L, -1) == LUA_TTABLE) {
        if (retry_table_parse(L, -1, &c->retry, why, sizeof why) == 0)
            return 0;
        *err = mw_str_fmt("%s: key 'retry': %s", path, why);
        return -1;
    }
    if (s->type == OPTION_CKPT && lua_type(L, -1) == LUA_TTABLE)
        return apply_checkpoint(L, c, path, err);
    if (s->type == OPTION_CAPACITY && lua_type(L, -1) == LUA_TTABLE)
        return apply_capacity(L, c, path, s, err);
    if (s->type == OPTION_RATE && lua_type(L, -1) == LUA_TTABLE)
        return apply_rate(L, c, path, s, err);
    if (s->type == OPTION_BATCH) {
        if (lua_type(L, -1) == LUA_TTABLE)
            return apply_batch(L, c, path, err);
        *err = mw_str_fmt("%s: key 'batch': expected %s, got %s", path, options_want(s->type), luaL_typename(L, -1));
        return -1;
    }
    if (s->type == OPTION_PATH && lua_type(L, -1) == LUA_TTABLE &&
        (!strcmp(key, "input") || !strcmp(key, "output") || !strcmp(key, "dead_letter"))) {
        char *url = redis_table_url(L, path, key, err);
        if (!url)
            return -1;
        int rc = s->set(c, url, why, sizeof why);
        free(url);
        if (rc != 0)
            *err = mw_str_fmt("%s: key '%s': %s", path, key, why);
        return rc;
    }
    const char *v = value_text(L, s->type, val, sizeof val);
    if (!v) {
        *err = mw_str_fmt("%s: key '%s': expected %s, got %s", path, key, options_want(s->type),
                          luaL_typename(L, -1));
        return -1;
    }
    char *resolved = s->type == OPTION_PATH ? resolve(path, v) : NULL;
    int rc = s->set(c, resolved ? resolved : v, why, sizeof why);
    free(resolved);
    if (rc != 0)
        *err = mw_str_fmt("%s: key '%s': %s", path, key, why);
    return rc;
}

int pipefile_load(config *c, const char *path, char **err)
{
    lua_State *L = luaL_newstate();
    if (!L) {
        *err = strdup("out of memory");
        return -1;
    }
    luaL_openlibs(L);
    int rc = -1;
    if (luaL_loadfile(L, path) != 0 || lua_pcall(L, 0, 1, 0) != 0) {
        *err = mw_str_fmt("%s", lua_tostring(L, -1));
        goto out;
    }
    if (!lua_istable(L, -1)) {
        *err = mw_str_fmt("%s: a pipeline file must return a table of settings, got %s", path,
                          luaL_typename(L, -1));
        goto out;
    }
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        if (lua_type(L, -2) != LUA_TSTRING) {
            *err = mw_str_fmt("%s: settings must be named (key = value), found a %s key", path,
                              luaL_typename(L, -2));
            goto out;
        }
        if (apply_key(L, c, path, lua_tostring(L, -2), err) != 0)
            goto out;
        lua_pop(L, 1);
    }
    rc = 0;
out:
    lua_close(L);
    return rc;
}
