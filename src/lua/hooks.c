/*
 * hooks.c: the script's functions other than async_invoke (contract in
 * script.h): open and close (each in a fiber; `return nil, err` fails),
 * on_timeout (synchronous, on a fresh decode of the record's line), and the
 * state a hot reload carries from one generation to the next
 * (export_state in the old VM, encoded to JSON; ctx.previous decoded from
 * it in the new one, so nothing crosses VMs but bytes).
 *
 * Called by src/app (the pipeline's phases, its record timeouts, reloads).
 */
#define _GNU_SOURCE
#include "script.h"

#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "script_int.h"

/* open or close ended: reported through the hook's own callback. */
static void hook_done(void *ud, rt_fiber *f, int status)
{
    script *sc = ud;
    script_result r;
    memset(&r, 0, sizeof r);
    char *err = NULL;
    if (status == RT_OK) {
        /* `return nil, err` fails; anything else succeeds. */
        int n = lua_gettop(f->co);
        r.ok = !(n >= 1 && lua_isnil(f->co, 1) && n >= 2 && !lua_isnil(f->co, 2));
        if (!r.ok)
            err = rt_strdup_value(f->co, 2);
        rt_fiber_release(f);
    } else {
        err = f->err;
        f->err = NULL;
        rt_fiber_discard(f);
    }
    r.err = r.errmsg = err;
    script_hook_fn done = sc->hook_done;
    sc->hook_done = NULL;
    done(sc->hook_ud, &r);
    free(err);
}

int script_run_hook(script *sc, const char *which, rt_fiber **fiber_slot, script_hook_fn done, void *ud)
{
    int is_open = strcmp(which, "open") == 0;
    int ref = is_open ? sc->open_ref : sc->close_ref;
    if (ref == LUA_NOREF)
        return 1;
    rt_fiber *f = rt_fiber_get(&sc->rt);
    if (!f)
        return 1;
    lua_rawgeti(f->co, LUA_REGISTRYINDEX, ref);
    /* ctx.log comes from the ctx metatable on first use (inside the
     * hook's coroutine, where a raise is the hook's error): calling
     * `require` here, outside any pcall, would abort the process if the
     * script had replaced it. Nothing below can raise. */
    lua_createtable(f->co, 0, 2);
    lua_pushinteger(f->co, sc->generation);
    lua_setfield(f->co, -2, "generation");
    if (is_open && sc->previous_ref != LUA_NOREF) {
        lua_rawgeti(f->co, LUA_REGISTRYINDEX, sc->previous_ref);
        lua_setfield(f->co, -2, "previous");
    }
    lua_rawgeti(f->co, LUA_REGISTRYINDEX, sc->ctx_mt_ref);
    lua_setmetatable(f->co, -2);
    f->seq = 0;
    *fiber_slot = f;
    f->slot = fiber_slot;
    sc->hook_done = done;
    sc->hook_ud = ud;
    rt_fiber_start(f, 1, hook_done, sc);
    return 0;
}

int script_on_timeout(script *sc, const char *line, size_t len, const script_call *a, char **out, size_t *outlen,
                      char **err)
{
    *out = NULL;
    *outlen = 0;
    *err = NULL;
    if (sc->timeout_ref == LUA_NOREF)
        return 0;
    lua_State *L = sc->rt.L;
    int base = lua_gettop(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, sc->timeout_ref);
    char derr[512];
    if (codec_parse(&sc->codec, line, len, derr, sizeof derr) != 0) {
        lua_settop(L, base);
        *err = strdup(derr);
        return -1;
    }
    codec_doc *doc = codec_build(&sc->codec, L);
    script_call ctx = *a;
    ctx.last_error = NULL;
    script_push_ctx(sc, L, &ctx);
    sc->sync_deadline_ms = a->deadline_ms; /* ctx.remaining_ms() outside a fiber */
    int rc = script_pcall(L, 2, LUA_MULTRET);
    sc->sync_deadline_ms = 0;
    if (rc != 0) {
        *err = rt_strdup_value(L, -1);
        lua_settop(L, base);
        codec_doc_free(&sc->codec, doc);
        return -1;
    }
    rc = script_encode_results(sc, "on_timeout", base + 1, doc, out, outlen, err) == 0 ? 1 : -1;
    codec_doc_free(&sc->codec, doc);
    return rc;
}

/* mod -> has, state: whether the module has export_state, and what it
 * returned. Run through script_pcall: the module's __index may raise too. */
static int call_export_state(lua_State *L)
{
    lua_getfield(L, 1, "export_state");
    if (lua_isnil(L, -1)) {
        lua_pushboolean(L, 0);
        return 1;
    }
    lua_call(L, 0, 1);
    lua_pushboolean(L, 1);
    lua_insert(L, -2);
    return 2;
}

int script_export_state(script *sc, char **json)
{
    *json = NULL;
    lua_State *L = sc->rt.L;
    int top = lua_gettop(L);
    lua_pushcfunction(L, call_export_state);
    lua_rawgeti(L, LUA_REGISTRYINDEX, sc->module_ref);
    if (script_pcall(L, 1, 2) != 0) {
        if (asprintf(json, "export_state failed: %s", lua_tostring(L, -1)) < 0)
            *json = NULL;
        lua_settop(L, top);
        return -1;
    }
    if (!lua_toboolean(L, -2)) { /* no export_state */
        lua_settop(L, top);
        return 0;
    }
    if (lua_type(L, -1) != LUA_TTABLE) {
        if (asprintf(json, "export_state must return a table, got %s", luaL_typename(L, -1)) < 0)
            *json = NULL;
        lua_settop(L, top);
        return -1;
    }
    mw_buf b = { NULL, 0, 0 };
    char why[256] = "out of memory"; /* (codec_encode sets it when it fails) */
    if (codec_encode(&sc->codec, L, -1, NULL, &b, why, sizeof why) != 0 || mw_buf_add(&b, "", 1) != 0) {
        free(b.p);
        if (asprintf(json, "export_state returned a table that cannot be copied (strings, numbers, "
                           "booleans and tables of them only): %s", why) < 0)
            *json = NULL;
        lua_settop(L, top);
        return -1;
    }
    *json = b.p;
    lua_settop(L, top);
    return 0;
}

int script_set_previous(script *sc, const char *json)
{
    lua_State *L = sc->rt.L;
    if (sc->previous_ref != LUA_NOREF)
        luaL_unref(L, LUA_REGISTRYINDEX, sc->previous_ref);
    sc->previous_ref = LUA_NOREF;
    if (!json)
        return 0;
    char err[256];
    if (codec_decode(&sc->codec, L, json, strlen(json), err, sizeof err) != 0)
        return -1;
    sc->previous_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}
