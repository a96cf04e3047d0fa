/*
 * reload.c: script generations and hot reload (contract in reload.h).
 *
 * Ownership: a gen is allocated here and freed when its VM and timer have
 * closed and no task points at it any more (maybe_free).
 */
#define _GNU_SOURCE
#include "reload.h"

#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../util/log.h"

/* The generations' phase, following the run's: before the first open()
 * ended, running, closing (gen_close_all). */
enum { GS_OPENING, GS_RUNNING, GS_CLOSING };

/* A generation's own state. */
enum { G_OPENING, G_CURRENT, G_DRAINING, G_CLOSING, G_CLOSED };

struct gen {
    script sc;               /* its VM */
    gens *gs;
    int id;
    int state;               /* G_* */
    size_t records;          /* tasks pointing at it (accepted, not yet released) */
    const op_retry_policy *policy; /* its records' strategy (config_retry), or NULL */
    rt_fiber *hook_fiber;    /* open or close while it runs */
    uv_timer_t open_timer;   /* a reload's time limit for open() */
    int timer_open;
    int handles;             /* open handles: VM + timer; freed at 0 with records == 0 */
    uint64_t load_started;   /* uv_hrtime() when the reload began */
    int parts;               /* open or close: parts still running (this
                              * thread's hook, and the other workers' as one) */
    char *part_err;          /* ... the first one's error (owned) */
    int remote;              /* --workers: the other workers load it too */
    int remote_closing;      /* ... and were told to close it */
    gen *next;
};

static void rewatch(gens *gs);
static void hook_done(void *ud, script_result *r);
static void gen_close(gen *g);
static void after_reload(gens *gs);
static void remote_closed(void *ud, const char *err);

static void unlink_gen(gen **list, gen *g)
{
    for (gen **pp = list; *pp; pp = &(*pp)->next)
        if (*pp == g) {
            *pp = g->next;
            g->next = NULL;
            return;
        }
}

static size_t live_count(const gens *gs)
{
    size_t n = 0;
    for (gen *g = gs->live; g; g = g->next)
        n++;
    return n;
}

static void maybe_free(gen *g)
{
    if (g->state == G_CLOSED && g->handles == 0 && g->records == 0) {
        unlink_gen(&g->gs->dead, g);
        free(g);
    }
}

static void vm_closed(void *ud)
{
    gen *g = ud;
    g->handles--;
    maybe_free(g);
}

static void timer_closed(uv_handle_t *h)
{
    gen *g = h->data;
    g->handles--;
    maybe_free(g);
}

static gen *gen_alloc(gens *gs)
{
    gen *g = calloc(1, sizeof *g);
    if (!g)
        return NULL;
    g->gs = gs;
    g->id = ++gs->next_id;
    g->state = G_OPENING;
    uv_timer_init(gs->loop, &g->open_timer);
    g->open_timer.data = g;
    g->timer_open = 1;
    g->handles = 1;
    g->next = gs->live;
    gs->live = g;
    return g;
}

/* Close g's VM and timer; it leaves the live list. Its memory goes when
 * the handles have closed and no task points at it. */
static void gen_dispose(gen *g)
{
    gens *gs = g->gs;
    if (g->state == G_CLOSED)
        return;
    g->state = G_CLOSED;
    unlink_gen(&gs->live, g);
    g->next = gs->dead;
    gs->dead = g;
    if (gs->cur == g)
        gs->cur = NULL;
    if (g->hook_fiber) {
        rt_fiber_discard(g->hook_fiber);
        g->hook_fiber = NULL;
    }
    if (g->timer_open) {
        g->timer_open = 0;
        uv_close((uv_handle_t *)&g->open_timer, timer_closed);
    }
    if (script_is_open(&g->sc)) {
        g->handles++;
        script_close(&g->sc, vm_closed, g);
    }
    if (g->remote && !g->remote_closing) {
        g->remote_closing = 1;
        g->handles++;
        wk_gen_close(gs->wk, g->id, 0, remote_closed, g);
    }
    free(g->part_err);
    g->part_err = NULL;
    if (gs->phase == GS_CLOSING && !gs->live)
        gs->ev.all_closed(gs->ev.ud);
    else if (gs->pending && gs->phase == GS_RUNNING && live_count(gs) < GEN_MAX) {
        gs->pending = 0;
        gen_trigger_reload(gs, "a waiting reload");
    }
    maybe_free(g);
}

/* Load the configured script into g. 0, or -1 with *err (malloc'd). */
static int gen_load(gen *g, char **err)
{
    gens *gs = g->gs;
    const config *c = gs->cfg;
    /* --workers N: the main thread's VMs are worker 1 (its log lines say
     * so; the other workers' VMs are 2..N, in wk_thread.c). */
    if (gen_prepare(&g->sc, gs->loop, c, gs->lua_dir, g->id, c->workers > 1 ? 1 : 0, gs->key_seed, err) != 0)
        return -1;
    g->policy = config_retry(c, &g->sc.retry);
    /* Said, not silent: without a predicate nothing is retried. */
    const char *unused = config_retry_unused(
        g->policy, g->sc.on_result_ref != LUA_NOREF || g->sc.on_error_ref != LUA_NOREF);
    if (unused)
        mw_warn("%s: %s", c->script, unused);
    /* Records' attempts end at the run; hooks at hook_done. */
    script_on_done(&g->sc, gs->ev.record_done, gs->ev.ud);
    return 0;
}

/* ---- parts: this thread's hook and the other workers' ------------------- */

static void phase_done(gen *g, script_result *r);

/* A part of g's open or close ended (err: why it failed, or NULL); the
 * last one decides, with the first error. */
static void part_done(gen *g, const char *err)
{
    if (err && !g->part_err)
        g->part_err = strdup(err);
    if (--g->parts > 0)
        return;
    char *e = g->part_err;
    g->part_err = NULL;
    script_result r = { .ok = !e, .err = e ? e : NULL };
    phase_done(g, &r);
    free(e);
}

/* The other workers answered an open or a close of g. */
static void remote_part(void *ud, const char *err)
{
    gen *g = ud;
    g->handles--;
    if (g->state == G_CLOSED) {
        maybe_free(g);
        return;
    }
    part_done(g, err);
}

static void remote_closed(void *ud, const char *err)
{
    (void)err; /* a close without close(): nothing can fail */
    gen *g = ud;
    g->handles--;
    maybe_free(g);
}

/* Start g's open() here and on the other workers; phase_done follows once
 * both ended (maybe now). */
static void start_open(gen *g)
{
    gens *gs = g->gs;
    g->parts = 1 + (gs->wk != NULL);
    if (gs->wk) {
        g->remote = 1;
        g->handles++;
        wk_gen_open(gs->wk, g->id, remote_part, g);
    }
    if (script_run_hook(&g->sc, "open", &g->hook_fiber, hook_done, g) != 0)
        part_done(g, NULL);
}

int gen_init(gens *gs, uv_loop_t *loop, const config *c, const char *lua_dir, int stdin_is_input,
             const gen_events *ev)
{
    memset(gs, 0, sizeof *gs);
    gs->loop = loop;
    gs->cfg = c;
    gs->lua_dir = lua_dir;
    gs->ev = *ev;
    /* A secret per run, so input cannot choose keys that collide; a
     * restore recomputes every key from its line. */
    if (uv_random(NULL, NULL, &gs->key_seed, sizeof gs->key_seed, 0, NULL) != 0)
        gs->key_seed = uv_hrtime() ^ ((uint64_t)getpid() << 32);
    script_stdin_is_input = stdin_is_input;
    gen *g = gen_alloc(gs);
    char *err = NULL;
    if (!g) {
        mw_log(MW_LOG_ERROR, "out of memory");
        return -1;
    }
    gs->cur = g;
    gs->last_id = g->id;
    if (gen_load(g, &err) != 0) {
        mw_log(MW_LOG_ERROR, "%s", err ? err : "cannot load the script");
        free(err);
        gen_dispose(g);
        return -1;
    }
    return 0;
}

void gen_set_workers(gens *gs, workers *wk)
{
    gs->wk = wk;
}

void gen_open_first(gens *gs)
{
    start_open(gs->cur);
}

static double ms_since(uint64_t t0)
{
    return (double)(uv_hrtime() - t0) / 1e6;
}

static void reject(gen *g, const char *why)
{
    gens *gs = g->gs;
    gs->rejected++;
    mw_logx(MW_LOG_WARN, &(mw_log_ctx){ .generation = g->id }, "reload rejected (generation %d; generation %d keeps running): %s", g->id,
            gen_current_id(gs), why);
    gen_dispose(g);
}

static void after_reload(gens *gs)
{
    if (gs->pending && gs->phase == GS_RUNNING) {
        gs->pending = 0;
        gen_trigger_reload(gs, "a waiting reload");
    }
}

static void switch_to(gen *g)
{
    gens *gs = g->gs;
    gen *old = gs->cur;
    gs->cur = g;
    gs->last_id = g->id;
    g->state = G_CURRENT;
    gs->reloads++;
    size_t draining = 0;
    for (gen *o = gs->live; o; o = o->next)
        if (o != g)
            draining += o->records;
    mw_logx(MW_LOG_INFO, &(mw_log_ctx){ .generation = g->id }, "reload: generation %d loaded in %.1f ms; %zu records still draining on "
                    "older generations", g->id, ms_since(g->load_started), draining);
    if (old) {
        old->state = G_DRAINING;
        /* Its pending batches can get no new record: they go now, not
         * max_wait_ms after their first one. */
        if (script_is_open(&old->sc)) {
            script_batch_drain(&old->sc);
            if (old->remote && script_batches(&old->sc))
                wk_gen_drain(gs->wk, old->id);
        }
        if (old->records == 0)
            gen_close(old);
    }
    rewatch(gs);
    after_reload(gs);
}

static void open_timed_out(uv_timer_t *t)
{
    gen *g = t->data;
    gens *gs = g->gs;
    char why[160];
    snprintf(why, sizeof why, "%s: open did not finish within %" PRIu64 " ms", gs->cfg->script,
             gs->cfg->reload_open_timeout_ms);
    reject(g, why);
    after_reload(gs);
}

/* ctx.previous for g: the running generation's export_state(), copied. A
 * failing export does not block the reload (the old code may be what is
 * being fixed): open() then sees no previous state. */
static void hand_over_state(gens *gs, gen *g)
{
    char *json = NULL;
    if (gs->cur && script_export_state(&gs->cur->sc, &json) != 0) {
        mw_log(MW_LOG_WARN, "reload: generation %d: %s (ctx.previous will be nil)", gs->cur->id,
                json ? json : "export_state failed");
        free(json);
        json = NULL;
    }
    if (script_set_previous(&g->sc, json) != 0)
        mw_log(MW_LOG_WARN, "reload: generation %d: the previous generation's state could not be "
                        "copied (out of memory); ctx.previous will be nil", g->id);
    free(json);
}

static void do_reload(gens *gs, const char *trigger)
{
    gen *g = gen_alloc(gs);
    if (!g) {
        gs->rejected++;
        mw_log(MW_LOG_WARN, "reload (%s) rejected: out of memory; generation %d keeps running", trigger,
                gen_current_id(gs));
        return;
    }
    g->load_started = uv_hrtime();
    mw_logx(MW_LOG_INFO, &(mw_log_ctx){ .generation = g->id }, "reload (%s): loading %s as generation %d", trigger, gs->cfg->script, g->id);
    char *err = NULL;
    if (gen_load(g, &err) != 0) {
        reject(g, err ? err : "cannot load the script");
        free(err);
        return;
    }
    hand_over_state(gs, g);
    start_open(g);
    if (g->state == G_OPENING)
        uv_timer_start(&g->open_timer, open_timed_out, gs->cfg->reload_open_timeout_ms, 0);
}

void gen_trigger_reload(gens *gs, const char *trigger)
{
    if (gs->phase == GS_OPENING) {
        gs->pending = 1;
        return;
    }
    if (gs->phase != GS_RUNNING)
        return;
    for (gen *g = gs->live; g; g = g->next)
        if (g->state == G_OPENING) {
            gs->pending = 1; /* one reload at a time; this one follows */
            return;
        }
    size_t n = live_count(gs);
    if (n >= GEN_MAX) {
        mw_log(MW_LOG_INFO, "reload (%s) waits: %zu generations are live (at most %d); it "
                        "starts when an older one has drained", trigger, n, GEN_MAX);
        gs->pending = 1;
        return;
    }
    do_reload(gs, trigger);
}

/* "SCRIPT: open failed: ERR" (malloc'd, or NULL when out of memory). */
static char *hook_failed(const gens *gs, const char *hook, const char *err)
{
    char *m = NULL;
    if (asprintf(&m, "%s: %s failed: %s", gs->cfg->script, hook, err) < 0)
        m = NULL;
    return m;
}

/* The first generation's open() ended. */
static void first_opened(gen *g, script_result *r)
{
    gens *gs = g->gs;
    gs->phase = GS_RUNNING;
    if (!r->ok) {
        char *msg = hook_failed(gs, "open", r->err);
        gs->ev.opened(gs->ev.ud, msg ? msg : "open failed");
        free(msg);
        return;
    }
    g->state = G_CURRENT;
    after_reload(gs);
    gs->ev.opened(gs->ev.ud, NULL);
}

/* This thread's hook of g finished (open or close). */
static void hook_done(void *ud, script_result *r)
{
    gen *g = ud;
    g->hook_fiber = NULL;
    part_done(g, r->ok ? NULL : r->err ? r->err : "failed");
}

/* g's open or close ended here and on every worker. */
static void phase_done(gen *g, script_result *r)
{
    gens *gs = g->gs;
    if (g->state == G_OPENING && gs->phase == GS_OPENING && g == gs->cur) {
        first_opened(g, r);
        return;
    }
    if (g->state == G_OPENING) {
        if (g->timer_open)
            uv_timer_stop(&g->open_timer);
        if (!r->ok) {
            char *why = hook_failed(gs, "open", r->err);
            reject(g, why ? why : "open failed");
            free(why);
            after_reload(gs);
            return;
        }
        switch_to(g);
        return;
    }
    if (g->state == G_CLOSING) {
        if (!r->ok) {
            if (gs->phase == GS_CLOSING && g == gs->cur) {
                char *msg = hook_failed(gs, "close", r->err);
                gs->ev.failed(gs->ev.ud, msg ? msg : "close failed");
                free(msg);
            } else {
                mw_logx(MW_LOG_WARN, &(mw_log_ctx){ .generation = g->id }, "generation %d: close failed: %s", g->id, r->err);
            }
        }
        gen_dispose(g);
    }
}

/* No record is left on g (or the run ends): run close(), then dispose. */
static void gen_close(gen *g)
{
    if (g->state == G_CLOSING || g->state == G_CLOSED)
        return;
    if (g->state == G_OPENING) {
        gen_dispose(g); /* a reload still opening when the run ends */
        return;
    }
    g->state = G_CLOSING;
    gens *gs = g->gs;
    g->parts = 1 + g->remote;
    if (g->remote) {
        g->remote_closing = 1;
        g->handles++;
        wk_gen_close(gs->wk, g->id, 1, remote_part, g);
    }
    if (script_run_hook(&g->sc, "close", &g->hook_fiber, hook_done, g) != 0)
        part_done(g, NULL);
}

gen *gen_current(const gens *gs)
{
    return gs->cur;
}

int gen_current_id(const gens *gs)
{
    return gs->cur ? gs->cur->id : 0;
}

int gen_last_id(const gens *gs)
{
    return gs->last_id;
}

int gen_live_count(const gens *gs)
{
    return (int)live_count(gs);
}

void gen_counts(const gens *gs, int *reloads, int *rejected)
{
    *reloads = gs->reloads;
    *rejected = gs->rejected;
}

void gen_retain(gen *g)
{
    g->records++;
}

void gen_release(gen *g)
{
    g->records--;
    if (g->state == G_DRAINING && g->records == 0)
        gen_close(g);
    else if (g->state == G_CLOSED)
        maybe_free(g);
}

script *gen_script(gen *g)
{
    return &g->sc;
}

const op_retry_policy *gen_policy(const gen *g)
{
    return g->policy;
}

void gen_flush_batches(gens *gs)
{
    for (gen *g = gs->live; g; g = g->next)
        if (script_is_open(&g->sc)) {
            script_batch_flush(&g->sc);
            if (g->remote && script_batches(&g->sc))
                wk_gen_flush(gs->wk, g->id);
        }
}

void gen_close_all(gens *gs)
{
    gs->phase = GS_CLOSING;
    if (!gs->live) {
        gs->ev.all_closed(gs->ev.ud);
        return;
    }
    /* gen_close may unlink synchronously: work from a snapshot. */
    gen *snap[GEN_MAX + 2];
    size_t n = 0;
    for (gen *g = gs->live; g && n < sizeof snap / sizeof snap[0]; g = g->next)
        snap[n++] = g;
    for (size_t i = 0; i < n; i++)
        gen_close(snap[i]);
}

void gen_free_all(gens *gs)
{
    while (gs->dead) {
        gen *g = gs->dead;
        gs->dead = g->next;
        free(g);
    }
}

/* ---- triggers --------------------------------------------------------------- */

static void rewatch(gens *gs)
{
    if (!gs->cfg->watch || !gs->cur)
        return;
    char **files = script_loaded_files(&gs->cur->sc);
    trig_watch(&gs->trig, files);
    script_free_files(files);
}

static void on_trigger(void *ud, const char *why)
{
    gen_trigger_reload(ud, why);
}

void gen_start_triggers(gens *gs)
{
    trig_start(&gs->trig, gs->loop, gs->cfg->script, on_trigger, gs);
    rewatch(gs);
}

void gen_stop_triggers(gens *gs)
{
    trig_stop(&gs->trig);
}
