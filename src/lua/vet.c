/*
 * vet.c: a script loaded check by check for `moonwait check` (contract in
 * script.h, script_vet): the steps of script_load (vm.c) one at a time,
 * each reported as it passes or fails, plus what a load does not look at
 * (globals written inside functions, hooks under near-miss names). The
 * rules themselves are host.lua's (contract, global_writes) and vm.c's
 * (M.batch, M.retry), the same ones a run applies.
 */
#define _GNU_SOURCE
#include "script.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../util/buf.h"
#include "guard.h"
#include "script_int.h"

/* The main chunk failed with m: which check that is. */
static const char *chunk_check(const char *m)
{
    if (strstr(m, guard_message()))
        return "its main chunk returns within the CPU budget";
    if (strstr(m, "assignment to undeclared global"))
        return "its main chunk writes no global";
    if (strstr(m, "module '") && strstr(m, "' not found"))
        return "the modules it requires are found";
    return "its main chunk runs";
}

/* Append list (a host.global_writes list at the top of L) to b as
 * "; path:line: 'name'". */
static void add_names(lua_State *L, const char *path, mw_buf *b)
{
    if (!lua_istable(L, -1))
        return;
    size_t n = lua_objlen(L, -1);
    for (size_t i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, (int)i);
        lua_getfield(L, -1, "name");
        lua_getfield(L, -2, "line");
        char one[512];
        int len = snprintf(one, sizeof one, "%s%s:%d: '%s'", b->len ? "; " : "", path, (int)lua_tointeger(L, -1),
                           lua_tostring(L, -2));
        mw_buf_add(b, one, len > 0 && (size_t)len < sizeof one ? (size_t)len : 0);
        lua_pop(L, 3);
    }
}

/* host.global_writes(chunk) for the chunk at `chunk` of file `path`: the
 * undeclared globals its functions assign, appended to w, and those they
 * read that nothing declares or assigns, appended to r. */
static void global_writes(lua_State *L, int host, int chunk, const char *path, mw_buf *w, mw_buf *r)
{
    int top = lua_gettop(L);
    lua_getfield(L, host, "global_writes");
    lua_pushvalue(L, chunk);
    if (script_pcall(L, 1, 2) == 0) {
        add_names(L, path, r);
        lua_pop(L, 1);
        add_names(L, path, w);
    }
    lua_settop(L, top);
}

/* The undeclared globals assigned by the functions of the script (its
 * compiled chunk at `chunk`) and of the modules it loaded from its own
 * directory, as one detail, or NULL for none (malloc'd); *reads: the same
 * for the undeclared globals they read (a warning). */
static char *all_global_writes(script *sc, int host, int chunk, char **reads)
{
    lua_State *L = sc->rt.L;
    mw_buf b = { 0 }, r = { 0 };
    global_writes(L, host, chunk, sc->path, &b, &r);
    char **files = script_loaded_files(sc);
    for (char **f = files && files[0] ? files + 1 : NULL; f && *f; f++)
        if (luaL_loadfile(L, *f) == 0) {
            global_writes(L, host, lua_gettop(L), *f, &b, &r);
            lua_pop(L, 1);
        } else {
            lua_pop(L, 1);
        }
    script_free_files(files);
    *reads = NULL;
    if (r.len) {
        static const char rtail[] = " (read in a function and nil when it runs, nothing declares or assigns it: "
                                    "a misspelt local? a module used without require? `local time = require "
                                    "\"moonwait.time\"`)";
        mw_buf_add(&r, rtail, sizeof rtail); /* with its NUL */
        *reads = r.p;
    }
    if (!b.len)
        return NULL;
    static const char tail[] = " (assigned in a function, it raises when that runs: declare it local, or "
                               "rawset(_G, name, value) at load)";
    mw_buf_add(&b, tail, sizeof tail); /* with its NUL */
    return b.p;
}

/* Report host.contract(mod, path)'s list. 0 when none failed. */
static int contract(lua_State *L, int host, int mod, const char *path, script_vet_fn report, void *ud)
{
    lua_getfield(L, host, "contract");
    lua_pushvalue(L, mod);
    lua_pushstring(L, path);
    if (script_pcall(L, 2, 1) != 0 || !lua_istable(L, -1)) {
        report(ud, SCRIPT_VET_FAIL, "its module can be checked", lua_tostring(L, -1));
        return -1;
    }
    int failed = 0;
    size_t n = lua_objlen(L, -1);
    for (size_t i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, (int)i);
        lua_getfield(L, -1, "ok");
        lua_getfield(L, -2, "check");
        lua_getfield(L, -3, "detail");
        script_vet_status st = lua_type(L, -3) == LUA_TSTRING ? SCRIPT_VET_WARN
                               : lua_toboolean(L, -3)          ? SCRIPT_VET_OK
                                                               : SCRIPT_VET_FAIL;
        failed |= st == SCRIPT_VET_FAIL;
        report(ud, st, lua_tostring(L, -2), lua_tostring(L, -1));
        lua_pop(L, 4);
    }
    lua_pop(L, 1);
    return failed ? -1 : 0;
}

int script_vet(script *sc, uv_loop_t *loop, const char *path, const char *lua_dir, script_vet_fn report, void *ud)
{
    int host, failed = 0;
    char *err = NULL;
    if (script_vm_open(sc, loop, path, lua_dir, &host, &err) != 0) {
        report(ud, SCRIPT_VET_FAIL, "a VM can be set up for it", err ? err : "out of memory");
        free(err);
        return -1;
    }
    lua_State *L = sc->rt.L;
    FILE *f = fopen(path, "r");
    struct stat st;
    if (!f || fstat(fileno(f), &st) != 0 || S_ISDIR(st.st_mode)) {
        char why[512];
        snprintf(why, sizeof why, "cannot open %s: %s", path, f ? "it is a directory" : strerror(errno));
        if (f)
            fclose(f);
        report(ud, SCRIPT_VET_FAIL, "the file can be read", why);
        return -1;
    }
    fclose(f);
    report(ud, SCRIPT_VET_OK, "the file can be read", NULL);
    if (luaL_loadfile(L, path) != 0) {
        report(ud, SCRIPT_VET_FAIL, "it compiles", lua_tostring(L, -1));
        return -1;
    }
    report(ud, SCRIPT_VET_OK, "it compiles", NULL);
    int chunk = lua_gettop(L);
    lua_pushvalue(L, chunk);
    if (script_pcall(L, 0, 1) != 0) {
        const char *m = lua_tostring(L, -1);
        report(ud, SCRIPT_VET_FAIL, chunk_check(m ? m : ""), m);
        return -1;
    }
    report(ud, SCRIPT_VET_OK, "its main chunk runs", NULL);
    report(ud, SCRIPT_VET_OK, "its main chunk returns within the CPU budget", NULL);
    report(ud, SCRIPT_VET_OK, "its main chunk writes no global", NULL);
    int mod = lua_gettop(L);
    char *reads = NULL;
    char *globals = all_global_writes(sc, host, chunk, &reads);
    report(ud, globals ? SCRIPT_VET_FAIL : SCRIPT_VET_OK, "its functions write no undeclared global", globals);
    if (reads)
        report(ud, SCRIPT_VET_WARN, "its functions read no undeclared global", reads);
    failed |= globals != NULL;
    free(globals);
    free(reads);
    if (contract(L, host, mod, path, report, ud) != 0)
        return -1;
    if (script_take_module(sc, host, mod, &err) != 0) {
        const char *what = !err                      ? "its hooks can be taken"
                           : strstr(err, ": M.batch:") ? "M.batch is valid"
                           : strstr(err, ": M.retry")  ? "M.retry is valid"
                                                       : "its hooks can be taken";
        report(ud, SCRIPT_VET_FAIL, what, err ? err : "out of memory");
        free(err);
        return -1;
    }
    if (sc->batch.has_size || sc->batch.has_wait || sc->batch.has_key)
        report(ud, SCRIPT_VET_OK, "M.batch is valid", NULL);
    if (sc->retry.set)
        report(ud, SCRIPT_VET_OK, "M.retry is valid", NULL);
    if (script_load_done(sc, &err) != 0) {
        report(ud, SCRIPT_VET_FAIL, "its batches can be set up", err ? err : "out of memory");
        free(err);
        return -1;
    }
    return failed ? -1 : 0;
}
