/*
 * script.c: load a user script into a fresh VM and adapt its functions to
 * the pipeline (contract in script.h). This file is the one boundary where
 * Lua values become bytes and error strings.
 */
#define _GNU_SOURCE
#include "script.h"

#include <lauxlib.h>
#include <lualib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../net/pool.h"
#include "guard.h"
#include "modules.h"
#include "retry_table.h"

#define WRONG_RETURN_HINT "expected an array of output records (did you mean `return { record }`?)"

int script_live_vms;
int script_stdin_is_input;

/* ---- VM setup ---------------------------------------------------------------- */

static int traceback_handler(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (!msg)
        msg = luaL_typename(L, 1);
    luaL_traceback(L, L, msg, 1);
    return 1;
}

/* pcall the function below `nargs` args with a traceback handler. */
static int pcall_tb(lua_State *L, int nargs, int nres)
{
    int base = lua_gettop(L) - nargs;
    lua_pushcfunction(L, traceback_handler);
    lua_insert(L, base);
    guard_mark gm;
    guard_enter(L, &gm);
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

/* Active handles (running timers, reading sockets, signals...): what a
 * leaked request or connection leaves behind. Idle handles of pooled
 * fibers are not counted (`fibers` covers those). */
static void count_handle(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h) && uv_is_active(h))
        (*(size_t *)arg)++;
}

/* moonwait.runtime_stats() -> { handles, fibers, pooled, vms }: active
 * libuv handles, fibers running or waiting (not idle in the pool), idle
 * keep-alive connections, and live script VMs (generations). For leak
 * checks in tests and diagnostics. */
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
    static const char *const subs[] = { "time", "json", "log", "socket", "http" };
    for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++) {
        lua_getglobal(L, "require");
        lua_pushfstring(L, "moonwait.%s", subs[i]);
        lua_call(L, 1, 1);
        lua_setfield(L, -2, subs[i]);
    }
    return 1;
}

static void preload(lua_State *L, const char *name, lua_CFunction fn, void *up)
{
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "preload");
    if (up) {
        lua_pushlightuserdata(L, up);
        lua_pushcclosure(L, fn, 1);
    } else {
        lua_pushcfunction(L, fn);
    }
    lua_setfield(L, -2, name);
    lua_pop(L, 2);
}

static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return strdup(".");
    if (slash == path)
        return strdup("/");
    return strndup(path, (size_t)(slash - path));
}

/* ctx's __index: remaining_ms and log are built on first access, so a
 * record that never reads them pays nothing. */
static int l_remaining_ms(lua_State *L)
{
    double deadline = lua_tonumber(L, lua_upvalueindex(1));
    if (deadline <= 0) {
        lua_pushnumber(L, HUGE_VAL);
        return 1;
    }
    /* On the loop's whole-ms clock, as the record's timer counts: the
     * deadline in seconds back to its exact ms (deadline - epoch0 is
     * deadline_ms / 1000 up to rounding), so a call given remaining_ms()
     * as its timeout ends exactly at the record's deadline, not 1 ms
     * before it. */
    rt *r = rt_of(L);
    double deadline_ms = floor((deadline - r->epoch0) * 1000.0 + 0.5);
    double left = deadline_ms - (double)uv_now(r->loop);
    lua_pushnumber(L, left > 0 ? left : 0);
    return 1;
}

static int ctx_index(lua_State *L)
{
    const char *k = lua_tostring(L, 2);
    if (k && strcmp(k, "remaining_ms") == 0) {
        lua_getfield(L, 1, "deadline");
        lua_pushcclosure(L, l_remaining_ms, 1);
        return 1;
    }
    if (k && strcmp(k, "log") == 0) {
        lua_getglobal(L, "require");
        lua_pushliteral(L, "moonwait.log");
        lua_call(L, 1, 1);
        return 1;
    }
    return 0;
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
 * called through pcall_tb, so nothing here can abort the process.
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

static char *fail_load(script *sc, const char *fmt, const char *a)
{
    char *m = NULL;
    if (asprintf(&m, fmt, a) < 0)
        m = NULL;
    (void)sc;
    return m;
}

int script_load(script *sc, uv_loop_t *loop, const char *path, const char *lua_dir, char **err)
{
    memset(sc, 0, sizeof *sc);
    sc->invoke_ref = sc->timeout_ref = sc->open_ref = sc->close_ref = LUA_NOREF;
    sc->on_result_ref = sc->on_error_ref = LUA_NOREF;
    sc->previous_ref = LUA_NOREF;
    sc->generation = 1;
    *err = NULL;
    if (rt_init(&sc->rt, loop) != 0) {
        *err = strdup("out of memory creating the Lua VM");
        return -1;
    }
    script_live_vms++;
    sc->path = strdup(path);
    lua_State *L = sc->rt.L;
    if (!sc->path)
        goto fail;

    if (codec_init(&sc->codec, L) != 0) {
        *err = strdup("cannot set up the JSON codec (LuaJIT's ffi module missing?)");
        goto fail;
    }

    preload(L, "moonwait", open_moonwait, NULL);
    preload(L, "moonwait.time", mod_time_open, NULL);
    preload(L, "moonwait.json", mod_json_open, NULL);
    preload(L, "moonwait.log", mod_log_open, NULL);
    preload(L, "moonwait.socket", mod_socket_open, NULL);
    preload(L, "moonwait.http", mod_http_open, NULL);

    /* Modules: the script's directory first, then the shipped lua/ dir. */
    char *sdir = dir_of(path);
    if (!sdir)
        goto fail;
    lua_getglobal(L, "package");
    lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;%s/?.lua;%s/?/init.lua;", sdir, sdir, lua_dir, lua_dir);
    lua_getfield(L, -2, "path");
    lua_concat(L, 2);
    lua_setfield(L, -2, "path");
    lua_pop(L, 1);
    free(sdir);

    /* ctx metatable */
    lua_newtable(L);
    lua_pushcfunction(L, ctx_index);
    lua_setfield(L, -2, "__index");
    sc->ctx_mt_ref = luaL_ref(L, LUA_REGISTRYINDEX);

    /* Policy from lua/moonwait/host.lua: strict globals, then load. */
    lua_getglobal(L, "require");
    lua_pushliteral(L, "moonwait.host");
    if (pcall_tb(L, 1, 1) != 0) {
        *err = fail_load(sc, "cannot load the host's Lua modules: %s", lua_tostring(L, -1));
        goto fail;
    }
    int host = lua_gettop(L);
    /* os.exit and (when moonwait reads stdin) io.read refused, then the
     * strict globals. */
    lua_getfield(L, host, "guard");
    lua_pushboolean(L, script_stdin_is_input);
    int grc = pcall_tb(L, 1, 0);
    if (grc == 0) {
        lua_getfield(L, host, "strict");
        lua_pushvalue(L, LUA_GLOBALSINDEX);
        grc = pcall_tb(L, 1, 0);
    }
    if (grc != 0) {
        *err = fail_load(sc, "cannot set up the script's VM: %s", lua_tostring(L, -1));
        goto fail;
    }

    if (luaL_loadfile(L, path) != 0) {
        const char *m = lua_tostring(L, -1);
        /* "cannot open x.lua" already names the file. */
        *err = strdup(m ? m : "cannot load script");
        goto fail;
    }
    if (pcall_tb(L, 0, 1) != 0) {
        *err = strdup(lua_tostring(L, -1));
        goto fail;
    }
    int mod = lua_gettop(L);
    lua_pushvalue(L, mod);
    sc->module_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushcfunction(L, setup_module);
    lua_pushvalue(L, host);
    lua_pushvalue(L, mod);
    lua_pushlightuserdata(L, sc);
    lua_pushstring(L, path);
    if (pcall_tb(L, 4, 1) != 0 || !lua_isnil(L, -1)) {
        const char *m = lua_tostring(L, -1);
        *err = strdup(m ? m : "the script's module could not be checked");
        goto fail;
    }
    lua_settop(L, 0);
    return 0;

fail:
    if (!*err)
        *err = strdup("out of memory");
    return -1;
}

int script_set_event_time(script *sc, const char *field)
{
    size_t n = 1;
    for (const char *p = field; *p; p++)
        n += *p == '.';
    sc->ts_path = calloc(n + 1, sizeof *sc->ts_path);
    char *copy = strdup(field), *save = NULL;
    if (!sc->ts_path || !copy) {
        free(copy);
        return -1;
    }
    size_t i = 0;
    for (char *tok = strtok_r(copy, ".", &save); tok && i < n; tok = strtok_r(NULL, ".", &save)) {
        if (!(sc->ts_path[i] = strdup(tok)))
            break; /* out of memory: refused below */
        i++;
    }
    free(copy);
    return i == n && i > 0 ? 0 : -1;
}

void script_on_done(script *sc, script_done_fn done, void *ud)
{
    sc->done = done;
    sc->done_ud = ud;
}

/* ---- input ------------------------------------------------------------------- */

/* The event-time field's value in the parsed tape: 0 with *ms, or -1. */
static int read_event_time(script *sc, const json_tape *t, const char *text, int64_t *ms)
{
    int node = 0;
    for (char **k = sc->ts_path; *k && node >= 0; k++)
        node = json_member(t, text, (uint32_t)node, *k, strlen(*k));
    if (node < 0)
        return -1;
    const json_node *x = &t->nodes[node];
    if (x->type != JSON_NUMBER || (x->flags & (JSON_I64 | JSON_U64)) || !isfinite(x->v.d) ||
        fabs(x->v.d) >= 9.0e15)
        return -1;
    *ms = (int64_t)floor(x->v.d);
    return 0;
}

int script_parse(script *sc, const char *line, size_t len, script_parsed *p, char *err, size_t errlen)
{
    memset(p, 0, sizeof *p);
    if (codec_parse(&sc->codec, line, len, err, errlen) != 0)
        return -1;
    /* Watermarks and the event time are read off the tape: no Lua. */
    const json_tape *t = codec_pending(&sc->codec);
    int wm = json_member(t, line, 0, "$watermark", 10);
    if (wm >= 0) {
        const json_node *x = &t->nodes[wm];
        if (t->nodes[0].n != 1 || x->type != JSON_NUMBER || (x->flags & (JSON_I64 | JSON_U64)) ||
            x->v.d != floor(x->v.d) || fabs(x->v.d) > 9.0e15) {
            snprintf(err, errlen, "a watermark line must be exactly {\"$watermark\": N} with N an integer (ms)");
            return -1;
        }
        p->is_watermark = 1;
        p->watermark = (int64_t)x->v.d;
        return 0;
    }
    if (sc->ts_path) {
        if (read_event_time(sc, t, line, &p->ts) != 0) {
            char field[256] = "";
            for (char **k = sc->ts_path; *k; k++) {
                if (k != sc->ts_path)
                    strncat(field, ".", sizeof field - strlen(field) - 1);
                strncat(field, *k, sizeof field - strlen(field) - 1);
            }
            snprintf(err, errlen, "event-time field '%s' is missing or not a number (ms)", field);
            return -1;
        }
        p->has_ts = 1;
    }
    sc->parsed_doc = codec_build(&sc->codec, sc->rt.L);
    sc->parsed_on_stack = 1;
    return 0;
}

void script_drop_parsed(script *sc)
{
    if (sc->parsed_on_stack) {
        lua_pop(sc->rt.L, 1);
        sc->parsed_on_stack = 0;
        codec_doc_free(&sc->codec, sc->parsed_doc);
        sc->parsed_doc = NULL;
    }
}

/* ---- output ------------------------------------------------------------------ */

/* Turn `what`'s results (values from index base to top of L) into encoded
 * lines; tables of the record's `doc` keep their original bytes where
 * unchanged. Returns 0 with *out and *len, or -1 with *err (malloc'd).
 * Pops them. */
static int encode_results(script *sc, const char *what, int base, codec_doc *doc, char **out, size_t *outlen,
                          char **err)
{
    lua_State *L = sc->rt.L;
    int n = lua_gettop(L) - base + 1;
    *out = NULL;
    *outlen = 0;
    *err = NULL;
    int rc = -1;
    if (n <= 0) {
        if (asprintf(err, "%s returned nothing; " WRONG_RETURN_HINT, what) < 0)
            *err = NULL;
        goto done;
    }
    if (lua_isnil(L, base)) {
        if (n >= 2 && !lua_isnil(L, base + 1))
            *err = rt_strdup_value(L, base + 1);
        else if (asprintf(err, "%s returned nil without an error message; " WRONG_RETURN_HINT, what) < 0)
            *err = NULL;
        goto done;
    }
    if (lua_type(L, base) != LUA_TTABLE) {
        if (asprintf(err, "%s returned a %s; " WRONG_RETURN_HINT, what, luaL_typename(L, base)) < 0)
            *err = NULL;
        goto done;
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
        if (asprintf(err, "%s returned a table that is not an array; " WRONG_RETURN_HINT, what) < 0)
            *err = NULL;
        goto done;
    }
    if (count == 0) {
        rc = 0;
        goto done;
    }
    /* Encode every element into one buffer. */
    mw_buf jb = { NULL, 0, 0 };
    for (size_t i = 1; i <= count; i++) {
        lua_rawgeti(L, base, (int)i);
        if (sc->tag_field && lua_type(L, -1) == LUA_TTABLE) {
            lua_pushstring(L, sc->tag_field);
            lua_pushinteger(L, sc->generation);
            lua_rawset(L, -3);
        }
        char why[256];
        int erc = codec_encode(&sc->codec, L, -1, doc, &jb, why, sizeof why);
        lua_pop(L, 1);
        if (erc != 0 || mw_buf_add(&jb, "\n", 1) != 0) {
            free(jb.p);
            if (asprintf(err, "%s: cannot encode output record %zu as JSON: %s", what, i, erc ? why : "out of memory") < 0)
                *err = NULL;
            goto done;
        }
    }
    char *buf = jb.p;
    size_t total = jb.len;
    *out = buf;
    *outlen = total;
    rc = 0;
done:
    lua_settop(L, base - 1);
    if (rc != 0 && !*err)
        *err = strdup("out of memory");
    return rc;
}

/* ---- calls ------------------------------------------------------------------- */

static void push_ctx(script *sc, lua_State *L, uint64_t seq, uint64_t line, int attempt, double deadline,
                     const char *last_error)
{
    lua_createtable(L, 0, 5);
    lua_pushnumber(L, (lua_Number)seq);
    lua_setfield(L, -2, "seq");
    lua_pushnumber(L, (lua_Number)line);
    lua_setfield(L, -2, "line");
    lua_pushinteger(L, attempt);
    lua_setfield(L, -2, "attempt");
    if (deadline > 0) {
        lua_pushnumber(L, deadline);
        lua_setfield(L, -2, "deadline");
    }
    if (last_error) {
        lua_pushstring(L, last_error);
        lua_setfield(L, -2, "last_error");
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, sc->ctx_mt_ref);
    lua_setmetatable(L, -2);
}

/* Tags that mark a fiber running a hook rather than a record's task. */
static char hook_open_tag, hook_close_tag;
#define IS_HOOK(t) ((t) == (void *)&hook_open_tag || (t) == (void *)&hook_close_tag)

/* One attempt of a record whose script has a retry predicate: what the
 * predicate's ctx needs, and the attempt's outcome while it runs. Owned by
 * the running fiber's done/abandoned callbacks. */
typedef struct call {
    script *sc;
    void *task;
    rt_fiber **slot;
    uint64_t seq, line, deadline_ms;
    int attempt;
    double deadline;
    char *last_error;
    script_result r;
    char *out, *err, *errmsg; /* owned copies behind r */
} call;

static void call_free(call *c)
{
    free(c->last_error);
    free(c->out);
    free(c->err);
    free(c->errmsg);
    free(c);
}

static void call_abandoned(void *ud)
{
    call_free(ud);
}

/* Read async_invoke's outcome off f into r, with owned strings in *err and
 * *msg. With keep_outputs, a successful attempt leaves its outputs table
 * on top of the main stack (for retry_on_result). Releases f. */
static void attempt_outcome(script *sc, rt_fiber *f, int status, script_result *r, char **err, char **msg,
                            int keep_outputs)
{
    memset(r, 0, sizeof *r);
    *err = *msg = NULL;
    if (status == RT_OK) {
        lua_State *L = sc->rt.L;
        int n = lua_gettop(f->co);
        int base = lua_gettop(L) + 1;
        lua_xmove(f->co, L, n);
        if (keep_outputs && n > 0) {
            lua_pushvalue(L, base);
            lua_insert(L, base);
            base++;
        }
        r->ok = encode_results(sc, "async_invoke", base, f->attach, &r->out, &r->len, err) == 0;
        if (keep_outputs && n > 0 && !r->ok)
            lua_pop(L, 1);
        if (!r->ok && *err)
            *msg = strdup(*err);
        rt_fiber_release(f);
    } else {
        r->ok = 0;
        *err = f->err;
        *msg = f->errmsg;
        f->err = f->errmsg = NULL;
        rt_fiber_discard(f);
    }
    r->err = *err;
    r->errmsg = *msg;
}

static void pred_done(void *ud, rt_fiber *f, int status)
{
    call *c = ud;
    script *sc = c->sc;
    const char *which = c->r.ok ? "retry_on_result" : "retry_on_error";
    char *perr = NULL;
    if (status == RT_OK) {
        c->r.retry = lua_toboolean(f->co, 1);
        rt_fiber_release(f);
    } else {
        /* The predicate itself failed: the record fails, saying so. */
        if (asprintf(&perr, "%s raised an error: %s", which, f->err) < 0)
            perr = NULL;
        rt_fiber_discard(f);
        free(c->out);
        c->out = NULL;
        c->r.ok = 0;
        c->r.out = NULL;
        c->r.len = 0;
        c->r.retry = 0;
        c->r.err = c->r.errmsg = perr ? perr : "retry predicate failed";
    }
    c->r.out = c->out;
    c->out = NULL; /* the callee takes it */
    sc->done(sc->done_ud, c->task, &c->r);
    free(perr);
    call_free(c);
}

static void fiber_done(void *ud, rt_fiber *f, int status)
{
    script *sc = ud;
    void *task = f->task;
    script_result r;
    memset(&r, 0, sizeof r);
    char *err = NULL, *msg = NULL;
    if (IS_HOOK(task)) {
        if (status == RT_OK) {
            /* Hooks: `return nil, err` fails; anything else succeeds. */
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
        sc->done(sc->done_ud, sc, &r);
        free(err);
        return;
    }
    attempt_outcome(sc, f, status, &r, &err, &msg, 0);
    sc->done(sc->done_ud, task, &r);
    free(err);
    free(msg);
}

/* async_invoke ended for a record whose script has retry predicates: run
 * the one that applies, in a fiber of its own, before reporting. */
static void attempt_done(void *ud, rt_fiber *f, int status)
{
    call *c = ud;
    script *sc = c->sc;
    int keep = sc->on_result_ref != LUA_NOREF;
    attempt_outcome(sc, f, status, &c->r, &c->err, &c->errmsg, keep);
    c->out = c->r.out;
    int ref = c->r.ok ? sc->on_result_ref : sc->on_error_ref;
    rt_fiber *pf = ref != LUA_NOREF ? rt_fiber_get(&sc->rt) : NULL;
    if (!pf) {
        if (c->r.ok && keep)
            lua_pop(sc->rt.L, 1);
        c->out = NULL;
        sc->done(sc->done_ud, c->task, &c->r);
        call_free(c);
        return;
    }
    lua_rawgeti(pf->co, LUA_REGISTRYINDEX, ref);
    if (c->r.ok)
        lua_xmove(sc->rt.L, pf->co, 1); /* the outputs table */
    else
        lua_pushstring(pf->co, c->errmsg);
    push_ctx(sc, pf->co, c->seq, c->line, c->attempt, c->deadline, c->last_error);
    pf->task = c->task;
    pf->seq = c->seq;
    pf->deadline = c->deadline;
    pf->deadline_ms = c->deadline_ms;
    pf->abandoned = call_abandoned;
    *c->slot = pf;
    pf->slot = c->slot;
    rt_fiber_start(pf, 2, pred_done, c);
}

/* The record's doc lives as long as its attempt's fiber. */
static void free_attached_doc(rt_fiber *f)
{
    codec_doc_free(codec_of(f->rt->L), f->attach);
}

void script_invoke(script *sc, void *task, rt_fiber **fiber_slot, uint64_t seq, uint64_t line,
                   int attempt, uint64_t deadline_ms, const char *last_error)
{
    double deadline = deadline_ms ? sc->rt.epoch0 + (double)deadline_ms / 1000.0 : 0;
    lua_State *L = sc->rt.L;
    rt_fiber *f = rt_fiber_get(&sc->rt);
    if (!f) {
        script_drop_parsed(sc);
        script_result r = { 0, NULL, 0, "out of memory starting a coroutine", "out of memory", 0 };
        sc->done(sc->done_ud, task, &r);
        return;
    }
    lua_State *co = f->co;
    lua_rawgeti(co, LUA_REGISTRYINDEX, sc->invoke_ref);
    lua_xmove(L, co, 1); /* the parsed record */
    sc->parsed_on_stack = 0;
    f->attach = sc->parsed_doc;
    f->attach_free = free_attached_doc;
    sc->parsed_doc = NULL;
    push_ctx(sc, co, seq, line, attempt, deadline, last_error);
    f->task = task;
    f->seq = seq;
    f->deadline = deadline;
    f->deadline_ms = deadline_ms;
    *fiber_slot = f;
    f->slot = fiber_slot;
    if (sc->on_result_ref == LUA_NOREF && sc->on_error_ref == LUA_NOREF) {
        rt_fiber_start(f, 2, fiber_done, sc); /* the common, allocation-free path */
        return;
    }
    call *c = calloc(1, sizeof *c);
    if (!c) {
        lua_settop(co, 0);
        rt_fiber_release(f);
        script_result r = { 0, NULL, 0, "out of memory", "out of memory", 0 };
        sc->done(sc->done_ud, task, &r);
        return;
    }
    c->sc = sc;
    c->task = task;
    c->slot = fiber_slot;
    c->seq = seq;
    c->line = line;
    c->attempt = attempt;
    c->deadline = deadline;
    c->deadline_ms = deadline_ms;
    c->last_error = last_error ? strdup(last_error) : NULL;
    f->abandoned = call_abandoned;
    rt_fiber_start(f, 2, attempt_done, c);
}

int script_reparse(script *sc, const char *line, size_t len)
{
    char err[256];
    if (codec_parse(&sc->codec, line, len, err, sizeof err) != 0)
        return -1;
    sc->parsed_doc = codec_build(&sc->codec, sc->rt.L);
    sc->parsed_on_stack = 1;
    return 0;
}

int script_on_timeout(script *sc, const char *line, size_t len, uint64_t seq, uint64_t lineno,
                      int attempt, double deadline, char **out, size_t *outlen, char **err)
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
    push_ctx(sc, L, seq, lineno, attempt, deadline, NULL);
    if (pcall_tb(L, 2, LUA_MULTRET) != 0) {
        *err = rt_strdup_value(L, -1);
        lua_settop(L, base);
        codec_doc_free(&sc->codec, doc);
        return -1;
    }
    int rc = encode_results(sc, "on_timeout", base + 1, doc, out, outlen, err) == 0 ? 1 : -1;
    codec_doc_free(&sc->codec, doc);
    return rc;
}

int script_run_hook(script *sc, const char *which, rt_fiber **fiber_slot)
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
    f->task = is_open ? (void *)&hook_open_tag : (void *)&hook_close_tag;
    f->seq = 0;
    *fiber_slot = f;
    f->slot = fiber_slot;
    rt_fiber_start(f, 1, fiber_done, sc);
    return 0;
}

void script_set_tag(script *sc, const char *field, int generation)
{
    free(sc->tag_field);
    sc->tag_field = field ? strdup(field) : NULL;
    sc->generation = generation;
}

/* mod -> has, state: whether the module has export_state, and what it
 * returned. Run through pcall_tb: the module's __index may raise too. */
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
    if (pcall_tb(L, 1, 2) != 0) {
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
    char why[256];
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
    /* package.searchpath is 5.2; resolve names with the script dir's
     * patterns by hand: dir/name.lua and dir/name/init.lua. */
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
        if (lua_type(L, -1) != LUA_TSTRING)
            continue;
        const char *name = lua_tostring(L, -1);
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
                if (n + 2 > cap) {
                    char **more = realloc(files, cap * 2 * sizeof *files);
                    if (!more) { /* out of memory: watch what was found */
                        free(path);
                        break;
                    }
                    files = more;
                    cap *= 2;
                }
                files[n++] = path;
                break;
            }
            free(path);
        }
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

void script_close(script *sc, void (*on_closed)(rt *r))
{
    if (sc->ts_path) {
        for (char **k = sc->ts_path; *k; k++)
            free(*k);
        free(sc->ts_path);
        sc->ts_path = NULL;
    }
    free(sc->path);
    free(sc->tag_field);
    sc->path = sc->tag_field = NULL;
    script_live_vms--;
    if (sc->parsed_on_stack) {
        sc->parsed_on_stack = 0;
        sc->parsed_doc = NULL; /* freed with the codec below */
    }
    rt_close(&sc->rt, on_closed);
    codec_close(&sc->codec); /* after the VM: every doc goes, live or pooled */
}
