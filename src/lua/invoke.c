/*
 * invoke.c: one attempt of a record (contract in script.h): push the
 * record its handle carries onto a fiber with its ctx and start
 * async_invoke(record, ctx); when the script has retry predicates, hand
 * the outcome to retry_on_result or retry_on_error in a fiber of their
 * own; report the outcome once through the script's record callback.
 *
 * Without predicates an attempt allocates nothing here (the fiber is
 * pooled, the record's doc is recycled). With them a `call` carries what
 * the predicate needs from one fiber to the next, and the task's fiber
 * slot follows whichever fiber runs, so a timeout abandons that one.
 *
 * Called by src/app for every attempt.
 */
#define _GNU_SOURCE
#include "script.h"

#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "script_int.h"

/* ctx's field names, interned once: [i] of the names table (vm.c,
 * sc->ctx_keys_ref, out of the scripts' reach) holds ctx_keys[i - 1].
 * lua_setfield hashed and looked up each name again for every record
 * (strlen, lj_str_new), a third of script_push_ctx's cost. */
enum { K_SEQ = 1, K_LINE, K_ATTEMPT, K_DEADLINE, K_LAST_ERROR, K_SOURCE_ID, K_DELIVERIES };
const char *const script_ctx_keys[] = { "seq", "line", "attempt", "deadline", "last_error", "source_id",
                                        "deliveries", NULL };

/* t[key k] = the value on top (popped); keys: the names table's slot. */
static void set_key(lua_State *L, int t, int keys, int k)
{
    lua_rawgeti(L, keys, k);
    lua_insert(L, -2);
    lua_rawset(L, t);
}

void script_push_ctx(script *sc, lua_State *L, const script_call *a)
{
    /* Sized to the fields set (a hash part of 4, not 8, for the usual
     * seq, line, attempt, deadline): 96 bytes less per record in flight. */
    int n = 3 + (a->deadline_ms != 0) + (a->last_error != NULL) + (a->source_id ? 2 : 0);
    lua_rawgeti(L, LUA_REGISTRYINDEX, sc->ctx_keys_ref);
    int keys = lua_gettop(L);
    lua_createtable(L, 0, n);
    int t = keys + 1;
    lua_pushnumber(L, (lua_Number)a->seq);
    set_key(L, t, keys, K_SEQ);
    lua_pushnumber(L, (lua_Number)a->line);
    set_key(L, t, keys, K_LINE);
    lua_pushinteger(L, a->attempt);
    set_key(L, t, keys, K_ATTEMPT);
    if (a->deadline_ms) {
        lua_pushnumber(L, rt_wall_secs(&sc->rt, a->deadline_ms));
        set_key(L, t, keys, K_DEADLINE);
    }
    if (a->last_error) {
        lua_pushstring(L, a->last_error);
        set_key(L, t, keys, K_LAST_ERROR);
    }
    if (a->source_id) {
        lua_pushstring(L, a->source_id);
        set_key(L, t, keys, K_SOURCE_ID);
        lua_pushinteger(L, (lua_Integer)a->deliveries);
        set_key(L, t, keys, K_DELIVERIES);
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, sc->ctx_mt_ref);
    lua_setmetatable(L, t);
    lua_remove(L, keys); /* the ctx is on top */
}

/* One attempt of a record whose script has a retry predicate: what the
 * predicate's ctx needs (the attempt's script_call, with its own copy of
 * last_error), and the attempt's outcome while it runs. Owned by the
 * running fiber's done/abandoned callbacks. */
typedef struct call {
    script *sc;
    script_call a;
    char *last_error; /* owned; a.last_error points at it */
    script_result r;
    char *out, *err, *errmsg; /* owned copies behind r */
    int outputs_ref;          /* the outputs table for retry_on_result, or LUA_NOREF */
} call;

static void call_free(call *c)
{
    if (c->outputs_ref != LUA_NOREF && c->sc->rt.L)
        luaL_unref(c->sc->rt.L, LUA_REGISTRYINDEX, c->outputs_ref);
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
    r->overloads = f->overloads;
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
        r->ok = script_encode_results(sc, "async_invoke", base, f->attach, &r->out, &r->len, err) == 0;
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

/* async_invoke ended for a record whose script has no retry predicate
 * (f->task is the call's task, set by script_invoke). */
static void attempt_done(void *ud, rt_fiber *f, int status)
{
    script *sc = ud;
    struct task *task = f->task;
    script_result r;
    char *err = NULL, *msg = NULL;
    attempt_outcome(sc, f, status, &r, &err, &msg, 0);
    sc->record_done(sc->record_ud, task, &r);
    free(err);
    free(msg);
}

/* The predicate ended: its answer is r.retry; if it raised, the record
 * fails, saying so. Reports the outcome and frees c. */
static void pred_done(void *ud, rt_fiber *f, int status)
{
    call *c = ud;
    script *sc = c->sc;
    const char *which = c->r.ok ? "retry_on_result" : "retry_on_error";
    char *perr = NULL;
    c->r.overloads += f->overloads; /* (a predicate may call ctx.overloaded too) */
    if (status == RT_OK) {
        c->r.retry = lua_toboolean(f->co, 1);
        rt_fiber_release(f);
    } else {
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
    sc->record_done(sc->record_ud, c->a.task, &c->r);
    free(perr);
    call_free(c);
}

/* Make f run the attempt `a` (its task, deadline, slot). */
static void bind_fiber(rt_fiber *f, const script_call *a)
{
    f->task = a->task;
    f->seq = a->seq;
    f->deadline_ms = a->deadline_ms;
    *a->fiber_slot = f;
    f->slot = a->fiber_slot;
}

/* The attempt's outcome is in c: run the predicate that applies, in a
 * fiber of its own, before reporting (or report at once when none does). */
static void run_predicate(call *c)
{
    script *sc = c->sc;
    int ref = c->r.ok ? sc->on_result_ref : sc->on_error_ref;
    rt_fiber *pf = ref != LUA_NOREF ? rt_fiber_get(&sc->rt) : NULL;
    if (!pf) {
        c->out = NULL;
        sc->record_done(sc->record_ud, c->a.task, &c->r);
        call_free(c);
        return;
    }
    lua_rawgeti(pf->co, LUA_REGISTRYINDEX, ref);
    if (c->r.ok) {
        lua_rawgeti(pf->co, LUA_REGISTRYINDEX, c->outputs_ref); /* the outputs table */
        luaL_unref(sc->rt.L, LUA_REGISTRYINDEX, c->outputs_ref);
        c->outputs_ref = LUA_NOREF;
    } else {
        lua_pushstring(pf->co, c->errmsg);
    }
    script_push_ctx(sc, pf->co, &c->a);
    bind_fiber(pf, &c->a);
    pf->abandoned = call_abandoned;
    rt_fiber_start(pf, 2, pred_done, c);
}

/* async_invoke ended for a record whose script has retry predicates. */
static void attempt_done_pred(void *ud, rt_fiber *f, int status)
{
    call *c = ud;
    script *sc = c->sc;
    int keep = sc->on_result_ref != LUA_NOREF;
    attempt_outcome(sc, f, status, &c->r, &c->err, &c->errmsg, keep);
    c->out = c->r.out;
    if (c->r.ok && keep)
        c->outputs_ref = luaL_ref(sc->rt.L, LUA_REGISTRYINDEX);
    run_predicate(c);
}

void script_attempt_ended(script *sc, const script_call *a, int ok, char *out, size_t len, char *err, char *errmsg,
                          int outputs_ref, uint32_t overloads)
{
    int ref = ok ? sc->on_result_ref : sc->on_error_ref;
    call *c = ref != LUA_NOREF ? calloc(1, sizeof *c) : NULL;
    char *last = c && a->last_error ? strdup(a->last_error) : NULL;
    if (!c || (a->last_error && !last)) {
        if (outputs_ref != LUA_NOREF)
            luaL_unref(sc->rt.L, LUA_REGISTRYINDEX, outputs_ref);
        script_result r = { ok, out, len, err, errmsg, 0, overloads };
        if (ref != LUA_NOREF) { /* out of memory: no predicate can run */
            free(out);
            r = (script_result){ 0, NULL, 0, "out of memory", "out of memory", 0, overloads };
        }
        free(c);
        sc->record_done(sc->record_ud, a->task, &r);
        free(err);
        free(errmsg);
        return;
    }
    c->sc = sc;
    c->a = *a;
    c->last_error = last;
    c->a.last_error = last;
    c->r = (script_result){ ok, out, len, err, errmsg, 0, overloads };
    c->out = out;
    c->err = err;
    c->errmsg = errmsg;
    c->outputs_ref = outputs_ref;
    run_predicate(c);
}

/* The record's doc lives as long as its attempt's fiber. */
static void free_attached_doc(rt_fiber *f)
{
    codec_doc *d = f->attach;
    if (d)
        codec_doc_free(codec_doc_owner(d), d);
}

/* Start f (async_invoke, the record and its ctx on it) with a call for the
 * predicates; out of memory fails the attempt. */
static void start_with_predicates(script *sc, rt_fiber *f, const script_call *a)
{
    call *c = calloc(1, sizeof *c);
    char *last = c && a->last_error ? strdup(a->last_error) : NULL;
    if (!c || (a->last_error && !last)) {
        free(c);
        lua_settop(f->co, 0);
        *a->fiber_slot = NULL;
        rt_fiber_release(f);
        script_result r = { 0, NULL, 0, "out of memory", "out of memory", 0, 0 };
        sc->record_done(sc->record_ud, a->task, &r);
        return;
    }
    c->sc = sc;
    c->a = *a;
    c->last_error = last;
    c->a.last_error = last;
    c->outputs_ref = LUA_NOREF;
    f->abandoned = call_abandoned;
    rt_fiber_start(f, 2, attempt_done_pred, c);
}

void script_invoke(script *sc, script_rec *rec, const script_call *a)
{
    if (script_batches(sc)) {
        script_batch_add(sc, rec, a);
        return;
    }
    rt_fiber *f = rt_fiber_get(&sc->rt);
    if (!f) {
        script_rec_free(sc, rec);
        script_result r = { 0, NULL, 0, "out of memory starting a coroutine", "out of memory", 0, 0 };
        sc->record_done(sc->record_ud, a->task, &r);
        return;
    }
    lua_State *co = f->co;
    lua_rawgeti(co, LUA_REGISTRYINDEX, sc->invoke_ref);
    codec_doc_push(rec, co);
    f->attach = rec;
    f->attach_free = free_attached_doc;
    script_push_ctx(sc, co, a);
    bind_fiber(f, a);
    if (sc->on_result_ref == LUA_NOREF && sc->on_error_ref == LUA_NOREF)
        rt_fiber_start(f, 2, attempt_done, sc); /* the common, allocation-free path */
    else
        start_with_predicates(sc, f, a);
}
