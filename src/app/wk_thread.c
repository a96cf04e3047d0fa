/*
 * wk_thread.c: a worker thread of --workers N (the contract is in
 * workers.h; what it shares with the main thread's side, workers_int.h).
 *
 * Runs on its own thread and loop and owns its generations' VMs: it loads
 * and opens a generation, runs the attempts the main thread sends on it,
 * answers each with its outcome, and closes the generation when told.
 * It never decides anything about a record: timeouts, retries' schedule,
 * order and output are the main thread's.
 */
#define _GNU_SOURCE
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../lua/guard.h"
#include "../net/pool.h"
#include "../util/log.h"
#include "reload.h"
#include "workers_int.h"

static void answer(worker *wk, int type, int id, void *p, char *err)
{
    wk_mq_push(&wk->w->out, (msg){ type, id, p, err });
}

char *wk_strdup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static wgen *w_find(worker *wk, int id)
{
    for (wgen *g = wk->gens; g; g = g->next)
        if (g->id == id)
            return g;
    return NULL;
}

static void w_unlink(worker *wk, wgen *g)
{
    for (wgen **pp = &wk->gens; *pp; pp = &(*pp)->next)
        if (*pp == g) {
            *pp = g->next;
            return;
        }
}

/* An attempt ended on this worker: its outcome goes back in the job. */
static void w_record_done(void *ud, struct task *t, script_result *r)
{
    worker *wk = ud;
    wk_job *j = (wk_job *)t;
    j->fiber = NULL;
    atomic_fetch_sub_explicit(&wk->pending, 1, memory_order_relaxed);
    j->ok = r->ok;
    j->out = r->out; /* ours now (script_record_fn), the main thread's at DONE */
    j->out_len = r->len;
    j->err = wk_strdup_or_null(r->err);
    j->errmsg = wk_strdup_or_null(r->errmsg);
    j->retry = r->retry;
    j->overloads = r->overloads;
    answer(wk, A_DONE, j->gen_id, j, NULL);
}

static void w_fail_job(worker *wk, wk_job *j, const char *why)
{
    script_result r = { .ok = 0, .err = why, .errmsg = why };
    w_record_done(wk, (struct task *)j, &r);
}

static void w_invoke(worker *wk, wk_job *j)
{
    wgen *g = w_find(wk, j->gen_id);
    if (!g || !script_is_open(&g->sc)) {
        char why[96];
        snprintf(why, sizeof why, "generation %d is not loaded on worker %d", j->gen_id, wk->k + 1);
        w_fail_job(wk, j, why);
        return;
    }
    script_rec *rec;
    int rc = j->tape ? script_rebuild(&g->sc, j->line, j->len, j->tape, &rec)
                     : script_reparse(&g->sc, j->line, j->len, &rec);
    script_tape_free(j->tape);
    j->tape = NULL;
    if (rc != 0) {
        w_fail_job(wk, j, "out of memory decoding the record");
        return;
    }
    j->call.task = (struct task *)j;
    j->call.fiber_slot = &j->fiber;
    j->call.item_slot = &j->item;
    script_invoke(&g->sc, rec, &j->call);
}

static void w_discard(worker *wk, wk_job *j)
{
    if (j->item || j->fiber) /* it had not ended */
        atomic_fetch_sub_explicit(&wk->pending, 1, memory_order_relaxed);
    if (j->item)
        script_batch_leave(j->item); /* (clears j->item) */
    if (j->fiber) {
        rt_fiber_discard(j->fiber);
        j->fiber = NULL;
    }
    answer(wk, A_DISCARDED, j->gen_id, j, NULL);
}

static void w_vm_closed(void *ud)
{
    wgen *g = ud;
    worker *wk = g->wk;
    if (g->close_op)
        answer(wk, A_CLOSED, g->id, g->close_op, g->close_err);
    else
        free(g->close_err);
    free(g);
}

/* Close g's VM; g leaves the list now and is freed when the VM closed. */
static void w_close_vm(wgen *g)
{
    worker *wk = g->wk;
    w_unlink(wk, g);
    if (g->hook) {
        rt_fiber_discard(g->hook);
        g->hook = NULL;
    }
    if (script_is_open(&g->sc))
        script_close(&g->sc, w_vm_closed, g);
    else
        w_vm_closed(g);
}

static void w_hook_done(void *ud, script_result *r)
{
    wgen *g = ud;
    worker *wk = g->wk;
    g->hook = NULL;
    if (g->open_op) {
        genop *op = g->open_op;
        g->open_op = NULL;
        if (r->ok) {
            g->opened = 1;
            wk->latest = g->id;
        }
        answer(wk, A_OPENED, g->id, op, r->ok ? NULL : wk_strdup_or_null(r->err ? r->err : "open failed"));
        return;
    }
    if (!r->ok)
        g->close_err = wk_strdup_or_null(r->err ? r->err : "close failed");
    w_close_vm(g);
}

static void w_open(worker *wk, int id, genop *op)
{
    const workers *w = wk->w;
    wgen *g = calloc(1, sizeof *g);
    if (!g) {
        answer(wk, A_OPENED, id, op, strdup("out of memory"));
        return;
    }
    g->wk = wk;
    g->id = id;
    g->next = wk->gens;
    wk->gens = g;
    char *err = NULL;
    if (gen_prepare(&g->sc, &wk->loop, w->cfg, w->lua_dir, id, wk->k + 1, w->key_seed, &err) != 0) {
        answer(wk, A_OPENED, id, op, err ? err : strdup("cannot load the script"));
        return; /* closed by the M_CLOSE_QUIET the main thread sends */
    }
    script_on_done(&g->sc, w_record_done, wk);
    /* ctx.previous: this worker's newest generation's state, as the main
     * thread hands its own (reload.c); a failing export gives nil. */
    wgen *prev = w_find(wk, wk->latest);
    if (prev && prev != g && script_is_open(&prev->sc)) {
        char *json = NULL;
        if (script_export_state(&prev->sc, &json) != 0) {
            free(json);
            json = NULL;
        }
        script_set_previous(&g->sc, json);
        free(json);
    }
    g->open_op = op;
    if (script_run_hook(&g->sc, "open", &g->hook, w_hook_done, g) != 0) {
        script_result ok = { .ok = 1 };
        w_hook_done(g, &ok);
    }
}

static void w_close(worker *wk, int id, genop *op, int run_close)
{
    wgen *g = w_find(wk, id);
    if (!g) {
        answer(wk, A_CLOSED, id, op, NULL);
        return;
    }
    if (g->open_op) { /* still opening: that open ends here, unanswered by its hook */
        answer(wk, A_OPENED, id, g->open_op, strdup("closed while opening"));
        g->open_op = NULL;
    }
    g->close_op = op;
    if (run_close && g->opened && !g->hook &&
        script_run_hook(&g->sc, "close", &g->hook, w_hook_done, g) == 0)
        return;
    w_close_vm(g);
}

void wk_thread_messages(uv_async_t *a)
{
    worker *wk = a->data;
    size_t n = wk_mq_take(&wk->in, &wk->spare, &wk->spare_cap);
    for (size_t i = 0; i < n; i++) {
        msg m = wk->spare[i];
        wgen *g;
        switch (m.type) {
        case M_INVOKE:
            w_invoke(wk, m.p);
            break;
        case M_DISCARD:
            w_discard(wk, m.p);
            break;
        case M_OPEN:
            w_open(wk, m.id, m.p);
            break;
        case M_CLOSE:
        case M_CLOSE_QUIET:
            w_close(wk, m.id, m.p, m.type == M_CLOSE);
            break;
        case M_FLUSH:
        case M_DRAIN:
            if ((g = w_find(wk, m.id)) && script_is_open(&g->sc)) {
                if (m.type == M_FLUSH)
                    script_batch_flush(&g->sc);
                else
                    script_batch_drain(&g->sc);
            }
            break;
        case M_STOP:
            while (wk->gens) {
                wk->gens->close_op = NULL; /* nobody waits any more */
                w_close_vm(wk->gens);
            }
            /* Idle keep-alive connections read and keep their idle timer
             * running (60 s for moonwait.http): left until the loop ends
             * they kept it from ending, and the run waited that long at
             * its end. After the VMs, as on the main thread (flow.c):
             * nothing can take one any more. */
            net_pool_close_all();
            uv_close((uv_handle_t *)&wk->in.async, NULL);
            break;
        }
    }
}

static void w_close_any(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

void wk_thread_main(void *arg)
{
    worker *wk = arg;
    /* The CPU budget covers this thread's entries into Lua too. */
    int grc = guard_thread_start(wk->k + 1);
    if (grc != 0)
        mw_warn("worker %d: the CPU budget is off on it: %s", wk->k + 1, uv_strerror(grc));
    uv_run(&wk->loop, UV_RUN_DEFAULT);
    /* Its VMs are closed: what the layers below keep for this thread
     * (caches, idle connections, DNS) goes, and its handles close. */
    script_thread_free();
    uv_run(&wk->loop, UV_RUN_DEFAULT);
    while (uv_loop_close(&wk->loop) == UV_EBUSY) {
        uv_walk(&wk->loop, w_close_any, NULL);
        uv_run(&wk->loop, UV_RUN_DEFAULT);
    }
    guard_thread_stop();
}

