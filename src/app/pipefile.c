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

#include "../lua/retry_table.h"
#include "../util/str.h"
#include "options.h"

/* A path from the pipeline file is relative to the file's directory. */
static char *resolve(const char *pipeline, const char *v)
{
    if (strcmp(v, "-") == 0 || v[0] == '/')
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

/* The text form of the value at the top of L's stack for a setting of type
 * t (into val when it is a number), or NULL when it has the wrong type. */
static const char *value_text(lua_State *L, option_type t, char *val, size_t n)
{
    int lt = lua_type(L, -1);
    if ((t == OPTION_STRING || t == OPTION_PATH || t == OPTION_RETRY) && lt == LUA_TSTRING)
        return lua_tostring(L, -1);
    if (t == OPTION_BOOL && lt == LUA_TBOOLEAN)
        return lua_toboolean(L, -1) ? "true" : "false";
    if (t == OPTION_INT && lt == LUA_TNUMBER) {
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
        *err = mw_str_fmt("%s: unknown key '%s' (known keys: %s)", path, key, known);
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
