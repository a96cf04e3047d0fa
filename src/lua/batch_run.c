/*
 * batch_run.c: a batch's run (contract in batch_int.h): the fiber calling
 * batch_invoke(records, ctxs) with the records' ctxs, and splitting its
 * results back into one outcome per record, reported through the same
 * path as async_invoke's (script_attempt_ended: the retry predicates per
 * record, then the record callback). Ownership as batch.c says: a running
 * batch is its fiber's.
 */
#define _GNU_SOURCE
#include "script.h"

#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../util/str.h"
#include "batch_int.h"
#include "script_int.h"

/* ---- the batch's fiber --------------------------------------------------------- */

/* The fiber's attachment: the records' docs, after its end hooks ran. A
 * batch whose fiber was discarded goes with them. */
static void free_attached(rt_fiber *f)
{
    batch *b = f->attach;
    codec *c = codec_of(f->rt->L);
    for (size_t i = 0; i < b->n; i++) {
        codec_doc_free(c, b->items[i]->doc);
        b->items[i]->doc = NULL;
    }
    if (b->abandoned)
        batch_free(b);
}

/* The fiber was discarded mid-run: every record left (or the VM closes,
 * when those still in it are forgotten: the run abandons them too). */
static void batch_abandoned(void *ud)
{
    batch *b = ud;
    b->abandoned = 1;
    b->fiber = NULL;
    for (size_t i = 0; i < b->n; i++) {
        script_item *it = b->items[i];
        if (it->state == IT_RUNNING) {
            it->state = IT_SETTLED;
            *it->a.item_slot = NULL;
        }
    }
}

static void set_failed(script_item *it, char *err)
{
    it->ok = 0;
    it->err = err;
    it->errmsg = err ? strdup(err) : NULL;
}

/* Every record still in the batch fails with the same message. */
static void fail_all(batch *b, const char *err, const char *errmsg)
{
    for (size_t i = 0; i < b->n; i++) {
        script_item *it = b->items[i];
        if (it->state != IT_RUNNING)
            continue;
        it->ok = 0;
        it->err = err ? strdup(err) : NULL;
        it->errmsg = errmsg ? strdup(errmsg) : NULL;
    }
}

/* One record's entry of the results (results[i] at the top of L's stack,
 * popped; errs at index errs, or 0). */
static void take_one(batch *b, lua_State *L, size_t i, int errs, script_item *it)
{
    script *sc = b->sc;
    int t = lua_type(L, -1);
    if (t == LUA_TTABLE) {
        if (sc->on_result_ref != LUA_NOREF) {
            lua_pushvalue(L, -1);
            it->outputs_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        }
        char what[64];
        snprintf(what, sizeof what, "batch_invoke (results[%zu])", i);
        char *err = NULL;
        if (script_encode_results(sc, what, lua_gettop(L), it->doc, &it->out, &it->len, &err) == 0) {
            it->ok = 1;
        } else {
            set_failed(it, err);
            if (it->outputs_ref != LUA_NOREF) {
                luaL_unref(L, LUA_REGISTRYINDEX, it->outputs_ref);
                it->outputs_ref = LUA_NOREF;
            }
        }
        return;
    }
    lua_pop(L, 1);
    if (t != LUA_TNIL) {
        set_failed(it, mw_str_fmt("batch_invoke: results[%zu] is a %s; expected an array of output records ({} for none)",
                           i, lua_typename(L, t)));
        return;
    }
    char *err = NULL;
    if (errs) {
        lua_rawgeti(L, errs, (int)i);
        if (!lua_isnil(L, -1))
            err = rt_strdup_value(L, -1);
        lua_pop(L, 1);
    }
    set_failed(it, err ? err
                       : mw_str_fmt("batch_invoke returned no result for records[%zu] (results[%zu] is nil and errs[%zu] "
                             "is not set)",
                             i, i, i));
}

/* batch_invoke returned the n values at base of L: each record's outcome. */
static void take_results(batch *b, lua_State *L, int base, int n)
{
    int res = base, errs = n >= 2 && lua_type(L, base + 1) == LUA_TTABLE ? base + 1 : 0;
    char *all = NULL;
    if (n == 0 || lua_isnil(L, res)) {
        all = n >= 2 && !lua_isnil(L, base + 1)
                  ? rt_strdup_value(L, base + 1)
                  : strdup("batch_invoke returned nil without an error message; expected an array with one "
                           "output array per record (results[i] for records[i])");
    } else if (lua_type(L, res) != LUA_TTABLE) {
        all = mw_str_fmt("batch_invoke returned a %s; expected an array with one output array per record (results[i] "
                  "for records[i])",
                  luaL_typename(L, res));
    } else if (lua_objlen(L, res) > b->n) {
        all = mw_str_fmt("batch_invoke returned %zu results for %zu records; expected one per record (results[i] for "
                  "records[i])",
                  (size_t)lua_objlen(L, res), b->n);
    }
    if (all || n == 0 || lua_type(L, res) != LUA_TTABLE) {
        fail_all(b, all ? all : "out of memory", all ? all : "out of memory");
        free(all);
        return;
    }
    /* results[i] may hold records[j] (sorted, grouped, one record's
     * outputs for another): every record of the batch is written as it
     * came where unchanged, not only records[i]. (Without the array, out of
     * memory, only records[i] is.) */
    codec_doc **docs = malloc(b->n * sizeof *docs);
    if (docs) {
        for (size_t i = 0; i < b->n; i++)
            docs[i] = b->items[i]->doc;
        codec_encode_also(&b->sc->codec, docs, b->n);
    }
    for (size_t i = 0; i < b->n; i++) {
        script_item *it = b->items[i];
        if (it->state != IT_RUNNING)
            continue;
        lua_rawgeti(L, res, (int)(i + 1));
        take_one(b, L, i + 1, errs, it);
    }
    codec_encode_also(&b->sc->codec, NULL, 0);
    free(docs);
}

/* batch_invoke ended: read every record's outcome off the fiber (nothing
 * is reported meanwhile, so the VM's stack is ours), release the fiber,
 * then report each record still in the batch (which may run the whole
 * run's machinery, down to closing this VM). */
static void batch_done(void *ud, rt_fiber *f, int status)
{
    batch *b = ud;
    script *sc = b->sc;
    lua_State *L = sc->rt.L;
    b->ending = 1;
    b->fiber = NULL;
    b->overloads = f->overloads;
    if (status == RT_OK) {
        int n = lua_gettop(f->co);
        int base = lua_gettop(L) + 1;
        lua_xmove(f->co, L, n);
        take_results(b, L, base, n);
        lua_settop(L, base - 1);
        rt_fiber_release(f);
    } else {
        fail_all(b, f->err, f->errmsg);
        rt_fiber_discard(f);
    }
    for (size_t i = 0; i < b->n; i++) {
        script_item *it = b->items[i];
        int ref = it->outputs_ref;
        it->outputs_ref = LUA_NOREF;
        if (it->state != IT_RUNNING) {
            if (ref != LUA_NOREF && sc->rt.L)
                luaL_unref(sc->rt.L, LUA_REGISTRYINDEX, ref);
            continue;
        }
        it->state = IT_DONE;
        *it->a.item_slot = NULL;
        char *out = it->out, *err = it->err, *msg = it->errmsg;
        it->out = it->err = it->errmsg = NULL;
        script_attempt_ended(sc, &it->a, it->ok, out, it->len, err, msg, ref, b->overloads);
    }
    batch_free(b);
}

/* Run b: unlink it from the pending list and start batch_invoke on its
 * records in a fiber. b may be gone when this returns. */
void batch_start(batch *b)
{
    script *sc = b->sc;
    batch_unlink_pending(b);
    b->running = 1;
    b->live = b->n;
    uint64_t deadline = 0;
    int unbounded = 0;
    for (size_t i = 0; i < b->n; i++) {
        script_item *it = b->items[i];
        it->state = IT_RUNNING;
        if (!it->a.deadline_ms)
            unbounded = 1;
        else if (it->a.deadline_ms > deadline)
            deadline = it->a.deadline_ms;
    }
    rt_fiber *f = rt_fiber_get(&sc->rt);
    if (!f) {
        b->ending = 1;
        for (size_t i = 0; i < b->n; i++) {
            codec_doc_free(&sc->codec, b->items[i]->doc);
            b->items[i]->doc = NULL;
        }
        /* (each report may make the others leave: a failed run abandons all) */
        for (size_t i = 0; i < b->n; i++) {
            script_item *it = b->items[i];
            if (it->state != IT_RUNNING)
                continue;
            it->state = IT_DONE;
            *it->a.item_slot = NULL;
            script_attempt_ended(sc, &it->a, 0, NULL, 0, strdup("out of memory starting a coroutine"),
                                 strdup("out of memory"), LUA_NOREF, 0);
        }
        batch_free(b);
        return;
    }
    lua_State *co = f->co;
    lua_rawgeti(co, LUA_REGISTRYINDEX, sc->batch_ref);
    lua_createtable(co, (int)b->n, 0);
    for (size_t i = 0; i < b->n; i++) {
        codec_doc_push(b->items[i]->doc, co);
        lua_rawseti(co, -2, (int)(i + 1));
    }
    lua_createtable(co, (int)b->n, 0);
    for (size_t i = 0; i < b->n; i++) {
        script_item *it = b->items[i];
        script_push_ctx(sc, co, &it->a);
        /* Each record's own deadline (the fiber's is the batch's latest). */
        script_push_remaining_ms(co, it->a.deadline_ms);
        lua_setfield(co, -2, "remaining_ms");
        lua_rawseti(co, -2, (int)(i + 1));
    }
    /* The batch's I/O waits end at its latest record's deadline: the
     * records due earlier time out on their own timers meanwhile. */
    f->deadline_ms = unbounded ? 0 : deadline;
    f->seq = 0;
    f->task = NULL;
    b->fiber = f;
    f->slot = &b->fiber;
    f->attach = b;
    f->attach_free = free_attached;
    f->abandoned = batch_abandoned;
    rt_fiber_start(f, 2, batch_done, b);
}
