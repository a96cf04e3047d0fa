/*
 * reload.c: script generations and hot reload.
 *
 * Every load of the script is a generation with its own VM. A reload is a
 * transaction: load the new version into a fresh VM, check its contract,
 * hand it the previous generation's export_state(), and run its open()
 * under a time limit. Any failure rejects it (its VM is closed, the
 * current generation keeps running, the error is logged with file:line).
 * On success new records go to the new generation; records already
 * accepted finish on theirs (task->g never changes). A generation with no
 * records left after it stopped being current runs close() and its VM is
 * closed. At most MAX_GENERATIONS live at once; a reload asked for beyond
 * that waits until one has drained.
 *
 * Triggers: --watch (uv_fs_event on the directories of the script and of
 * the modules it loaded from its own directory, debounced so a burst of
 * events is one reload; watching directories catches saves by rename and
 * files deleted and recreated) and SIGHUP (a libuv signal handle: never
 * inside a signal handler).
 *
 * Ownership: a gen is allocated here and freed when its VM and timer have
 * closed and no task points at it any more (maybe_free).
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pipeline_int.h"

#define DEBOUNCE_MS 100

static void rewatch(pipeline *p);
static void gen_close(gen *g);

/* Generations unlinked from p->gens whose memory is still in use. */
static gen *dead;

static void unlink_gen(gen **list, gen *g)
{
    for (gen **pp = list; *pp; pp = &(*pp)->next)
        if (*pp == g) {
            *pp = g->next;
            g->next = NULL;
            return;
        }
}

static size_t live_count(pipeline *p)
{
    size_t n = 0;
    for (gen *g = p->gens; g; g = g->next)
        n++;
    return n;
}

static void maybe_free(gen *g)
{
    if (g->state == G_CLOSED && g->handles == 0 && g->records == 0) {
        unlink_gen(&dead, g);
        free(g);
    }
}

static void vm_closed(rt *r)
{
    gen *g = (gen *)(void *)r; /* rt is the first member of script, script of gen */
    g->handles--;
    maybe_free(g);
}

static void timer_closed(uv_handle_t *h)
{
    gen *g = h->data;
    g->handles--;
    maybe_free(g);
}

static gen *gen_alloc(pipeline *p)
{
    gen *g = calloc(1, sizeof *g);
    if (!g)
        return NULL;
    g->p = p;
    g->id = ++p->next_gen_id;
    g->state = G_OPENING;
    uv_timer_init(p->loop, &g->open_timer);
    g->open_timer.data = g;
    g->timer_open = 1;
    g->handles = 1;
    return g;
}

/* Close g's VM and timer; it leaves the live list. Its memory goes when
 * the handles have closed and no task points at it. */
static void gen_dispose(gen *g)
{
    pipeline *p = g->p;
    if (g->state == G_CLOSED)
        return;
    g->state = G_CLOSED;
    unlink_gen(&p->gens, g);
    g->next = dead;
    dead = g;
    if (p->cur == g)
        p->cur = NULL;
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
        script_close(&g->sc, vm_closed);
    }
    if (p->phase == CLOSING && !p->gens)
        pipeline_all_gens_closed(p);
    else if (p->reload_pending && p->phase == RUNNING && live_count(p) < MAX_GENERATIONS) {
        p->reload_pending = 0;
        gen_trigger_reload(p, "a waiting reload");
    }
    maybe_free(g);
}

/* Load the configured script into g. 0, or -1 with *err (malloc'd). */
static int gen_load(gen *g, char **err)
{
    pipeline *p = g->p;
    const config *c = p->cfg;
    if (script_load(&g->sc, p->loop, c->script, p->lua_dir, err) != 0)
        return -1;
    if (c->event_time && script_set_event_time(&g->sc, c->event_time) != 0) {
        if (asprintf(err, "option '--event-time': bad field path '%s'", c->event_time) < 0)
            *err = NULL;
        return -1;
    }
    script_set_tag(&g->sc, c->tag_generation, g->id);
    /* Precedence: flag over pipeline (both in c->retry) over the script. */
    if (c->retry.set)
        g->policy = c->retry;
    else if (g->sc.retry.set)
        g->policy = g->sc.retry;
    script_on_done(&g->sc, pipeline_script_done, g);
    return 0;
}

int gen_first(pipeline *p)
{
    gen *g = gen_alloc(p);
    char *err = NULL;
    if (!g) {
        fprintf(stderr, "moonwait: out of memory\n");
        return -1;
    }
    g->next = p->gens;
    p->gens = g;
    p->cur = g;
    if (gen_load(g, &err) != 0) {
        fprintf(stderr, "moonwait: %s\n", err ? err : "cannot load the script");
        free(err);
        gen_dispose(g);
        return -1;
    }
    return 0;
}

static double ms_since(uint64_t t0)
{
    return (double)(uv_hrtime() - t0) / 1e6;
}

static void reject(gen *g, const char *why)
{
    pipeline *p = g->p;
    p->rejected++;
    fprintf(stderr, "moonwait: reload rejected (generation %d; generation %d keeps running): %s\n", g->id,
            p->cur ? p->cur->id : 0, why);
    gen_dispose(g);
}

static void after_reload(pipeline *p)
{
    if (p->reload_pending && p->phase == RUNNING) {
        p->reload_pending = 0;
        gen_trigger_reload(p, "a waiting reload");
    }
}

static void switch_to(gen *g)
{
    pipeline *p = g->p;
    gen *old = p->cur;
    p->cur = g;
    g->state = G_CURRENT;
    p->reloads++;
    size_t draining = 0;
    for (gen *o = p->gens; o; o = o->next)
        if (o != g)
            draining += o->records;
    fprintf(stderr, "moonwait: reload: generation %d loaded in %.1f ms; %zu records still draining on "
                    "older generations\n", g->id, ms_since(g->load_started), draining);
    if (old) {
        old->state = G_DRAINING;
        if (old->records == 0)
            gen_close(old);
    }
    rewatch(p);
    after_reload(p);
}

static void open_timed_out(uv_timer_t *t)
{
    gen *g = t->data;
    char why[160];
    snprintf(why, sizeof why, "%s: open did not finish within %" PRIu64 " ms", g->p->cfg->script,
             g->p->cfg->reload_open_timeout_ms);
    pipeline *p = g->p;
    reject(g, why);
    after_reload(p);
}

static void do_reload(pipeline *p, const char *trigger)
{
    gen *g = gen_alloc(p);
    if (!g) {
        p->rejected++;
        fprintf(stderr, "moonwait: reload (%s) rejected: out of memory; generation %d keeps running\n", trigger,
                p->cur ? p->cur->id : 0);
        return;
    }
    g->load_started = uv_hrtime();
    g->next = p->gens;
    p->gens = g;
    fprintf(stderr, "moonwait: reload (%s): loading %s as generation %d\n", trigger, p->cfg->script, g->id);
    char *err = NULL;
    if (gen_load(g, &err) != 0) {
        reject(g, err ? err : "cannot load the script");
        free(err);
        return;
    }
    /* ctx.previous: the running generation's export_state(), copied. A
     * failing export does not block the reload (the old code may be what
     * is being fixed): open() then sees no previous state. */
    char *json = NULL;
    if (p->cur && script_export_state(&p->cur->sc, &json) != 0) {
        fprintf(stderr, "moonwait: reload: generation %d: %s (ctx.previous will be nil)\n", p->cur->id,
                json ? json : "export_state failed");
        free(json);
        json = NULL;
    }
    if (script_set_previous(&g->sc, json) != 0)
        fprintf(stderr, "moonwait: reload: generation %d: the previous generation's state could not be "
                        "copied (out of memory); ctx.previous will be nil\n", g->id);
    free(json);
    if (script_run_hook(&g->sc, "open", &g->hook_fiber) != 0) {
        switch_to(g);
        return;
    }
    if (g->state == G_OPENING && g->hook_fiber)
        uv_timer_start(&g->open_timer, open_timed_out, p->cfg->reload_open_timeout_ms, 0);
}

void gen_trigger_reload(pipeline *p, const char *trigger)
{
    if (p->phase == OPENING) {
        p->reload_pending = 1;
        return;
    }
    if (p->phase != RUNNING)
        return;
    for (gen *g = p->gens; g; g = g->next)
        if (g->state == G_OPENING) {
            p->reload_pending = 1; /* one reload at a time; this one follows */
            return;
        }
    size_t n = live_count(p);
    if (n >= MAX_GENERATIONS) {
        fprintf(stderr, "moonwait: reload (%s) waits: %zu generations are live (at most %d); it "
                        "starts when an older one has drained\n", trigger, n, MAX_GENERATIONS);
        p->reload_pending = 1;
        return;
    }
    do_reload(p, trigger);
}

void gen_hook_done(gen *g, script_result *r)
{
    pipeline *p = g->p;
    g->hook_fiber = NULL;
    if (g->state == G_OPENING && p->phase == OPENING && g == p->cur) {
        /* The first generation's open. */
        p->phase = RUNNING;
        if (!r->ok) {
            pipeline_fail(p, 1, "%s: open failed: %s", p->cfg->script, r->err);
            return;
        }
        g->state = G_CURRENT;
        after_reload(p);
        pipeline_pump(p);
        return;
    }
    if (g->state == G_OPENING) {
        if (g->timer_open)
            uv_timer_stop(&g->open_timer);
        if (!r->ok) {
            char *why = NULL;
            if (asprintf(&why, "%s: open failed: %s", p->cfg->script, r->err) < 0)
                why = NULL;
            reject(g, why ? why : "open failed");
            free(why);
            after_reload(p);
            return;
        }
        switch_to(g);
        return;
    }
    if (g->state == G_CLOSING) {
        if (!r->ok) {
            if (p->phase >= CLOSING && g == p->cur)
                pipeline_fail(p, 1, "%s: close failed: %s", p->cfg->script, r->err);
            else
                fprintf(stderr, "moonwait: generation %d: close failed: %s\n", g->id, r->err);
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
    if (script_run_hook(&g->sc, "close", &g->hook_fiber) != 0)
        gen_dispose(g);
}

void gen_record_released(gen *g)
{
    g->records--;
    if (g->state == G_DRAINING && g->records == 0)
        gen_close(g);
    else if (g->state == G_CLOSED)
        maybe_free(g);
}

void gen_close_all(pipeline *p)
{
    if (!p->gens) {
        pipeline_all_gens_closed(p);
        return;
    }
    /* gen_close may unlink synchronously: work from a snapshot. */
    gen *snap[MAX_GENERATIONS + 2];
    size_t n = 0;
    for (gen *g = p->gens; g && n < sizeof snap / sizeof snap[0]; g = g->next)
        snap[n++] = g;
    for (size_t i = 0; i < n; i++)
        gen_close(snap[i]);
}

void gen_free_all(pipeline *p)
{
    (void)p;
    while (dead) {
        gen *g = dead;
        dead = g->next;
        free(g);
    }
}

/* ---- triggers --------------------------------------------------------------- */

static void watch_closed(uv_handle_t *h)
{
    watch *w = h->data;
    for (char **n = w->names; n && *n; n++)
        free(*n);
    free(w->names);
    free(w->dir);
    free(w);
}

static void unwatch(pipeline *p)
{
    while (p->watches) {
        watch *w = p->watches;
        p->watches = w->next;
        uv_close((uv_handle_t *)&w->h, watch_closed);
    }
}

static void on_debounced(uv_timer_t *t)
{
    pipeline *p = t->data;
    /* An editor that deletes and recreates: wait for the file to be back
     * (its creation is another event) instead of rejecting a reload. */
    if (access(p->cfg->script, R_OK) != 0) {
        fprintf(stderr, "moonwait: --watch: %s is gone; reloading when it reappears\n", p->cfg->script);
        return;
    }
    gen_trigger_reload(p, "file change");
}

static void on_fs_event(uv_fs_event_t *h, const char *filename, int events, int status)
{
    watch *w = h->data;
    pipeline *p = h->loop->data;
    (void)events;
    if (status < 0 || !filename)
        return;
    for (char **n = w->names; *n; n++)
        if (strcmp(*n, filename) == 0) {
            /* Restart: a burst of events (rename, truncate + write) is one reload. */
            uv_timer_start(&p->debounce, on_debounced, DEBOUNCE_MS, 0);
            return;
        }
}

static void rewatch(pipeline *p)
{
    if (!p->cfg->watch || !p->cur)
        return;
    unwatch(p);
    char **files = script_loaded_files(&p->cur->sc);
    if (!files)
        fprintf(stderr, "moonwait: --watch: out of memory listing the script's files; not watching\n");
    for (char **f = files; f && *f; f++) {
        char *d1 = strdup(*f), *b1 = strdup(*f);
        if (!d1 || !b1) {
            free(d1);
            free(b1);
            fprintf(stderr, "moonwait: --watch: out of memory; not watching %s\n", *f);
            continue;
        }
        const char *dir = dirname(d1), *base = basename(b1);
        watch *w = NULL;
        for (watch *x = p->watches; x; x = x->next)
            if (strcmp(x->dir, dir) == 0)
                w = x;
        if (!w) {
            w = calloc(1, sizeof *w);
            char *wdir = w ? strdup(dir) : NULL;
            char **names = wdir ? calloc(1, sizeof *names) : NULL;
            if (!names || uv_fs_event_init(p->loop, &w->h) != 0) {
                if (!names)
                    fprintf(stderr, "moonwait: --watch: out of memory; not watching %s\n", dir);
                free(names);
                free(wdir);
                free(w);
                free(d1);
                free(b1);
                continue;
            }
            w->dir = wdir;
            w->names = names;
            w->h.data = w;
            int rc = uv_fs_event_start(&w->h, on_fs_event, w->dir, 0);
            if (rc != 0)
                fprintf(stderr, "moonwait: --watch: cannot watch %s: %s\n", w->dir, uv_strerror(rc));
            uv_unref((uv_handle_t *)&w->h);
            w->next = p->watches;
            p->watches = w;
        }
        size_t n = 0;
        while (w->names[n])
            n++;
        char **names = realloc(w->names, (n + 2) * sizeof *w->names);
        char *name = names ? strdup(base) : NULL;
        if (names)
            w->names = names;
        if (name) {
            w->names[n] = name;
            w->names[n + 1] = NULL;
        } else {
            fprintf(stderr, "moonwait: --watch: out of memory; not watching %s\n", *f);
        }
        free(d1);
        free(b1);
    }
    script_free_files(files);
}

static void on_sighup(uv_signal_t *h, int signum)
{
    (void)signum;
    gen_trigger_reload(h->data, "SIGHUP");
}

static int triggers_started;

void gen_start_triggers(pipeline *p)
{
    p->loop->data = p;
    uv_timer_init(p->loop, &p->debounce);
    p->debounce.data = p;
    uv_signal_init(p->loop, &p->sighup);
    p->sighup.data = p;
    uv_signal_start(&p->sighup, on_sighup, SIGHUP);
    uv_unref((uv_handle_t *)&p->sighup);
    triggers_started = 1;
    rewatch(p);
}

void gen_stop_triggers(pipeline *p)
{
    if (!triggers_started)
        return;
    triggers_started = 0;
    unwatch(p);
    uv_close((uv_handle_t *)&p->debounce, NULL);
    uv_close((uv_handle_t *)&p->sighup, NULL);
}
