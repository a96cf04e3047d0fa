/*
 * vm.c: a script's VM (contract in script.h): load the script into a fresh
 * lua_State with the host modules in package.preload, the script's
 * directory first on package.path, the policy of lua/moonwait/host.lua
 * (os.exit and, when moonwait reads stdin, io.read refused; strict
 * globals) and the ctx metatable (its __index: ctx.c); check the module's contract and take
 * refs to its functions; list the files it loaded for the watcher; close.
 * Also the one protected call with a traceback that every synchronous
 * call into the script goes through (script_pcall).
 *
 * Called by src/app (load, close, the watcher's file list) and by the
 * other script files (script_pcall).
 */
#define _GNU_SOURCE
#include "script.h"

#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../net/dns.h"
#include "../net/http.h"
#include "../net/pool.h"
#include "cache_int.h"
#include "guard.h"
#include "modules.h"
#include "retry_table.h"
#include "script_int.h"

_Atomic int script_live_vms;
_Atomic int script_stdin_is_input;

/* ---- protected calls --------------------------------------------------------- */

static int traceback_handler(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (!msg)
        msg = luaL_typename(L, 1);
    if (rt_untraced(L, msg))
        lua_pushstring(L, msg);
    else
        luaL_traceback(L, L, msg, 1);
    return 1;
}

int script_pcall(lua_State *L, int nargs, int nres)
{
    int base = lua_gettop(L) - nargs;
    lua_pushcfunction(L, traceback_handler);
    lua_insert(L, base);
    guard_mark gm;
    rt *r = rt_of(L); /* (the guard wants the VM's main state) */
    guard_enter(r ? r->L : L, &gm);
    int rc = lua_pcall(L, nargs, nres, base);
    if (guard_leave(&gm) && rc != 0) {
        /* Out of budget: say so, whatever the script made of the error. */
        const char *e = lua_tostring(L, -1);
        if (!e || !strstr(e, guard_message())) {
            lua_pop(L, 1);
            lua_pushstring(L, guard_message());
        }
    }
    lua_remove(L, base);
    return rc;
}

/* ---- the moonwait module ----------------------------------------------------- */

/* Active handles (running timers, reading sockets, signals...): what a
 * leaked request or connection leaves behind. Idle handles of pooled
 * fibers are not counted (`fibers` covers those). */
static void count_handle(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h) && uv_is_active(h))
        (*(size_t *)arg)++;
}

/* moonwait.runtime_stats() -> { handles, fibers, pooled, vms, refs, caches }:
 * active libuv handles, fibers running or waiting (not idle in the pool),
 * idle keep-alive connections, live script VMs (generations), and registry
 * refs held in the caller's VM, and moonwait.cache stores not yet freed.
 * For leak checks in tests and diagnostics. */
static int l_runtime_stats(lua_State *L)
{
    rt *r = rt_of(L);
    size_t handles = 0;
    uv_walk(r->loop, count_handle, &handles);
    lua_createtable(L, 0, 3);
    lua_pushinteger(L, (lua_Integer)handles);
    lua_setfield(L, -2, "handles");
    lua_pushinteger(L, (lua_Integer)(r->live - r->pool_len - r->dying));
    lua_setfield(L, -2, "fibers");
    lua_pushinteger(L, (lua_Integer)net_pool_count(NULL));
    lua_setfield(L, -2, "pooled");
    lua_pushinteger(L, script_live_vms);
    lua_setfield(L, -2, "vms");
    /* Registry refs in use in this VM: integer keys whose value is not a
     * number (luaL_unref leaves the free list's next index in a slot). */
    lua_Integer refs = 0;
    lua_pushnil(L);
    while (lua_next(L, LUA_REGISTRYINDEX)) {
        if (lua_type(L, -2) == LUA_TNUMBER && lua_tonumber(L, -2) >= 1 && lua_type(L, -1) != LUA_TNUMBER)
            refs++;
        lua_pop(L, 1);
    }
    lua_pushinteger(L, refs);
    lua_setfield(L, -2, "refs");
    lua_pushinteger(L, (lua_Integer)cache_store_live);
    lua_setfield(L, -2, "caches");
    return 1;
}

static int open_moonwait(lua_State *L)
{
    lua_newtable(L);
    lua_pushstring(L, MW_VERSION);
    lua_setfield(L, -2, "version");
    lua_pushlightuserdata(L, NULL); /* JSON null (the same value as cjson.null) */
    lua_setfield(L, -2, "null");
    lua_pushcfunction(L, l_runtime_stats);
    lua_setfield(L, -2, "runtime_stats");
    static const char *const subs[] = { "time", "json", "log", "socket", "http", "cache", "limit", "metrics" };
    for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++) {
        lua_getglobal(L, "require");
        lua_pushfstring(L, "moonwait.%s", subs[i]);
        lua_call(L, 1, 1);
        lua_setfield(L, -2, subs[i]);
    }
    /* Concurrency inside a record, at the top as in ngx.thread's place. */
    lua_getglobal(L, "require");
    lua_pushliteral(L, "moonwait.thread");
    lua_call(L, 1, 1);
    static const char *const thread_fns[] = { "spawn", "wait", "kill", "all" };
    for (size_t i = 0; i < sizeof thread_fns / sizeof thread_fns[0]; i++) {
        lua_getfield(L, -1, thread_fns[i]);
        lua_setfield(L, -3, thread_fns[i]);
    }
    lua_setfield(L, -2, "thread");
    return 1;
}

static void preload(lua_State *L, const char *name, lua_CFunction fn)
{
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "preload");
    lua_pushcfunction(L, fn);
    lua_setfield(L, -2, name);
    lua_pop(L, 2);
}

/* ---- loading ----------------------------------------------------------------- */

static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return strdup(".");
    if (slash == path)
        return strdup("/");
    return strndup(path, (size_t)(slash - path));
}

static int ref_field(lua_State *L, int t, const char *name)
{
    lua_getfield(L, t, name);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return LUA_NOREF;
    }
    return luaL_ref(L, LUA_REGISTRYINDEX);
}

/* Check the module's contract and take its hooks, with the script's own
 * metamethods live (a module or M.retry with an __index that raises):
 * called through script_pcall, so nothing here can abort the process.
 * Args: host, mod, sc (light userdata), path. Returns nothing when the
 * module is good, or the contract error (a string). */
static int setup_module(lua_State *L)
{
    script *sc = lua_touserdata(L, 3);
    const char *path = lua_tostring(L, 4);
    lua_getfield(L, 1, "check");
    lua_pushvalue(L, 2);
    lua_pushvalue(L, 4);
    lua_call(L, 2, 2);
    if (!lua_toboolean(L, -2))
        return 1;
    lua_pop(L, 2);
    sc->invoke_ref = ref_field(L, 2, "async_invoke");
    sc->timeout_ref = ref_field(L, 2, "on_timeout");
    sc->open_ref = ref_field(L, 2, "open");
    sc->close_ref = ref_field(L, 2, "close");
    sc->on_result_ref = ref_field(L, 2, "retry_on_result");
    sc->on_error_ref = ref_field(L, 2, "retry_on_error");
    sc->batch_ref = ref_field(L, 2, "batch_invoke");
    lua_getfield(L, 2, "batch");
    if (!lua_isnil(L, -1)) {
        char why[256];
        if (script_batch_read(L, lua_gettop(L), &sc->batch, why, sizeof why) != 0) {
            lua_pushfstring(L, "%s: M.batch: %s", path, why);
            return 1;
        }
    }
    lua_pop(L, 1);
    lua_getfield(L, 2, "retry");
    if (!lua_isnil(L, -1)) {
        char why[256];
        if (retry_table_parse(L, lua_gettop(L), &sc->retry, why, sizeof why) != 0) {
            lua_pushfstring(L, "%s: M.%s", path, why);
            return 1;
        }
    }
    return 0;
}

/* fmt with one %s, malloc'd (NULL when out of memory). */
static char *fmt_err(const char *fmt, const char *a)
{
    char *m = NULL;
    if (asprintf(&m, fmt, a) < 0)
        m = NULL;
    return m;
}

/* Set up sc's fresh VM before the script runs: the codec, the host
 * modules, package.path, the ctx metatable and host.lua's policy. Leaves
 * the moonwait.host module on the stack at *host. 0, or -1 with *err
 * (malloc'd; NULL means out of memory). */
static int setup_vm(script *sc, const char *lua_dir, int *host, char **err)
{
    lua_State *L = sc->rt.L;
    if (codec_init(&sc->codec, L) != 0) {
        *err = strdup("cannot set up the JSON codec (LuaJIT's ffi module missing?)");
        return -1;
    }
    preload(L, "moonwait", open_moonwait);
    preload(L, "moonwait.time", mod_time_open);
    preload(L, "moonwait.json", mod_json_open);
    preload(L, "moonwait.log", mod_log_open);
    preload(L, "moonwait.socket", mod_socket_open);
    preload(L, "moonwait.http", mod_http_open);
    preload(L, "moonwait._thread", mod_thread_open);
    preload(L, "moonwait._cache", mod_cache_open);
    preload(L, "moonwait.limit", mod_limit_open);
    preload(L, "moonwait.metrics", mod_metrics_open);
    if (script_testing)
        preload(L, "moonwait._test", mod_test_open);

    /* Modules: the script's directory first, then the shipped lua/ dir. */
    char *sdir = dir_of(sc->path);
    if (!sdir)
        return -1;
    lua_getglobal(L, "package");
    lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;%s/?.lua;%s/?/init.lua;", sdir, sdir, lua_dir, lua_dir);
    lua_getfield(L, -2, "path");
    lua_concat(L, 2);
    lua_setfield(L, -2, "path");
    lua_pop(L, 1);
    free(sdir);

    lua_newtable(L);
    lua_pushlightuserdata(L, sc);
    lua_pushcclosure(L, script_ctx_index, 1);
    lua_setfield(L, -2, "__index");
    sc->ctx_mt_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    /* The names in a table of their own, out of the scripts' reach: in the
     * metatable (getmetatable(ctx)), a script's mt[1] = nil made the next
     * record's ctx a C-API error outside any pcall (a PANIC that ended the
     * process with nothing emitted), and mt[2] = "seq" renamed its fields. */
    lua_createtable(L, 8, 0);
    for (int i = 0; script_ctx_keys[i]; i++) { /* (invoke.c: script_push_ctx) */
        lua_pushstring(L, script_ctx_keys[i]);
        lua_rawseti(L, -2, i + 1);
    }
    sc->ctx_keys_ref = luaL_ref(L, LUA_REGISTRYINDEX);

    /* Policy from lua/moonwait/host.lua: os.exit and (when moonwait reads
     * stdin) io.read refused, require's short message for a missing
     * module, then the strict globals. */
    lua_getglobal(L, "require");
    lua_pushliteral(L, "moonwait.host");
    if (script_pcall(L, 1, 1) != 0) {
        *err = fmt_err("cannot load the host's Lua modules: %s", lua_tostring(L, -1));
        return -1;
    }
    *host = lua_gettop(L);
    lua_getfield(L, *host, "guard");
    lua_pushboolean(L, script_stdin_is_input);
    int grc = script_pcall(L, 1, 0);
    if (grc == 0) {
        lua_getfield(L, *host, "short_require");
        grc = script_pcall(L, 0, 0);
    }
    if (grc == 0) {
        lua_getfield(L, *host, "strict");
        lua_pushvalue(L, LUA_GLOBALSINDEX);
        grc = script_pcall(L, 1, 0);
    }
    if (grc != 0) {
        *err = fmt_err("cannot set up the script's VM: %s", lua_tostring(L, -1));
        return -1;
    }
    return 0;
}

int script_take_module(script *sc, int host, int mod, char **err)
{
    lua_State *L = sc->rt.L;
    lua_pushvalue(L, mod);
    sc->module_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushcfunction(L, setup_module);
    lua_pushvalue(L, host);
    lua_pushvalue(L, mod);
    lua_pushlightuserdata(L, sc);
    lua_pushstring(L, sc->path);
    if (script_pcall(L, 4, 1) != 0 || !lua_isnil(L, -1)) {
        const char *m = lua_tostring(L, -1);
        *err = strdup(m ? m : "the script's module could not be checked");
        return -1;
    }
    lua_pop(L, 1);
    return 0;
}

/* Run the script file and take its module (checked by host.check). 0, or
 * -1 with *err (malloc'd; NULL means out of memory). */
static int load_module(script *sc, int host, char **err)
{
    lua_State *L = sc->rt.L;
    if (luaL_loadfile(L, sc->path) != 0) {
        const char *m = lua_tostring(L, -1);
        /* "cannot open x.lua" already names the file. */
        *err = strdup(m ? m : "cannot load script");
        return -1;
    }
    if (script_pcall(L, 0, 1) != 0) {
        *err = strdup(lua_tostring(L, -1));
        return -1;
    }
    return script_take_module(sc, host, lua_gettop(L), err);
}

/* A new VM for the script, set up but not yet loaded, as generation
 * `generation` (its log lines carry it from the first one). */
static int vm_open_gen(script *sc, uv_loop_t *loop, const char *path, const char *lua_dir, int generation, int *host,
                       char **err)
{
    memset(sc, 0, sizeof *sc);
    sc->invoke_ref = sc->timeout_ref = sc->open_ref = sc->close_ref = LUA_NOREF;
    sc->on_result_ref = sc->on_error_ref = sc->batch_ref = LUA_NOREF;
    sc->previous_ref = LUA_NOREF;
    sc->generation = generation;
    *err = NULL;
    if (rt_init(&sc->rt, loop) != 0) {
        *err = strdup("out of memory creating the Lua VM");
        return -1;
    }
    sc->rt.generation = generation;
    script_live_vms++;
    if (!(sc->path = strdup(path)) || setup_vm(sc, lua_dir, host, err) != 0) {
        if (!*err)
            *err = strdup("out of memory");
        return -1;
    }
    return 0;
}

int script_vm_open(script *sc, uv_loop_t *loop, const char *path, const char *lua_dir, int *host, char **err)
{
    return vm_open_gen(sc, loop, path, lua_dir, 1, host, err);
}

int script_load_done(script *sc, char **err)
{
    lua_settop(sc->rt.L, 0);
    /* Until the host says otherwise (script_batch_configure), batches
     * follow M.batch and the defaults. */
    if (script_batches(sc) &&
        script_batch_configure(sc, sc->batch.has_size ? sc->batch.max_size : BATCH_DEFAULT_SIZE,
                               sc->batch.has_wait ? sc->batch.max_wait_ms : BATCH_DEFAULT_WAIT_MS,
                               sc->batch.has_key ? sc->batch.key : NULL) != 0) {
        *err = strdup("out of memory setting up batches");
        return -1;
    }
    return 0;
}

int script_load_gen(script *sc, uv_loop_t *loop, const char *path, const char *lua_dir, int generation, int worker,
                    char **err)
{
    int host;
    if (vm_open_gen(sc, loop, path, lua_dir, generation, &host, err) != 0)
        return -1;
    if (worker > 0)
        script_set_worker(sc, worker); /* before the main chunk: its log lines too */
    if (load_module(sc, host, err) != 0) {
        if (!*err)
            *err = strdup("out of memory");
        return -1;
    }
    return script_load_done(sc, err);
}

int script_load(script *sc, uv_loop_t *loop, const char *path, const char *lua_dir, char **err)
{
    return script_load_gen(sc, loop, path, lua_dir, 1, 0, err);
}

void script_on_done(script *sc, script_record_fn done, void *ud)
{
    sc->record_done = done;
    sc->record_ud = ud;
}

void script_set_tag(script *sc, const char *field, int generation)
{
    free(sc->tag_field);
    sc->tag_field = field ? strdup(field) : NULL;
    sc->generation = generation;
    sc->rt.generation = generation;
}

/* ---- the files to watch ------------------------------------------------------ */

/* The file module `name` would load from dir (dir/name.lua, then
 * dir/name/init.lua: package.searchpath is 5.2, so the script dir's
 * patterns are resolved by hand), malloc'd, or NULL. */
static char *module_file(const char *dir, const char *name)
{
    char rel[512];
    snprintf(rel, sizeof rel, "%s", name);
    for (char *c = rel; *c; c++)
        if (*c == '.')
            *c = '/';
    static const char *const pats[] = { "%s/%s.lua", "%s/%s/init.lua" };
    for (int i = 0; i < 2; i++) {
        char *path = NULL;
        if (asprintf(&path, pats[i], dir, rel) < 0)
            continue;
        FILE *f = fopen(path, "r");
        if (f) {
            fclose(f);
            return path;
        }
        free(path);
    }
    return NULL;
}

char **script_loaded_files(script *sc)
{
    lua_State *L = sc->rt.L;
    int top = lua_gettop(L);
    char *dir = dir_of(sc->path);
    size_t n = 1, cap = 8;
    char **files = calloc(cap, sizeof *files);
    if (!dir || !files || !(files[0] = strdup(sc->path))) {
        free(dir);
        free(files);
        return NULL; /* out of memory: nothing watched */
    }
    /* Raw and type-checked: the script may have replaced package (or
     * package.loaded) with anything, and nothing here is protected. */
    lua_pushliteral(L, "package");
    lua_rawget(L, LUA_GLOBALSINDEX);
    if (lua_istable(L, -1)) {
        lua_pushliteral(L, "loaded");
        lua_rawget(L, -2);
    } else {
        lua_pushnil(L);
    }
    lua_pushnil(L);
    while (lua_istable(L, -2) && lua_next(L, -2)) {
        lua_pop(L, 1);
        char *path = lua_type(L, -1) == LUA_TSTRING ? module_file(dir, lua_tostring(L, -1)) : NULL;
        if (!path)
            continue;
        if (n + 2 > cap) {
            char **more = realloc(files, cap * 2 * sizeof *files);
            if (!more) { /* out of memory: watch what was found */
                free(path);
                continue;
            }
            files = more;
            cap *= 2;
        }
        files[n++] = path;
    }
    files[n] = NULL;
    free(dir);
    lua_settop(L, top);
    return files;
}

void script_free_files(char **files)
{
    for (char **f = files; f && *f; f++)
        free(*f);
    free(files);
}

/* ---- closing ----------------------------------------------------------------- */

void script_close(script *sc, void (*on_closed)(void *ud), void *ud)
{
    script_path_free(sc->ts_path);
    script_path_free(sc->key_path);
    sc->ts_path = sc->key_path = NULL;
    free(sc->path);
    free(sc->tag_field);
    sc->path = sc->tag_field = NULL;
    script_batch_close(sc); /* (pending batches hold docs: before the VM) */
    batch_opts_free(&sc->batch);
    script_live_vms--;
    rt_close(&sc->rt, on_closed, ud);
    codec_close(&sc->codec); /* after the VM: every doc goes, live or pooled */
}

/* ---- a loop thread's end ------------------------------------------------------------- */

void script_thread_free(void)
{
    script_cache_free_all();
    net_pool_close_all();
    dns_cache_clear();
    http_req_free_cached();
}
