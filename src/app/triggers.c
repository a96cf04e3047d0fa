/*
 * triggers.c: --watch and SIGHUP (contract in triggers.h).
 */
#define _GNU_SOURCE
#include "triggers.h"

#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../util/log.h"

#define DEBOUNCE_MS 100

struct trig_dir {
    uv_fs_event_t h;
    triggers *set;
    char *dir;
    char **names;         /* basenames watched in dir */
    trig_dir *next;
};

static void on_debounced(uv_timer_t *t)
{
    triggers *w = t->data;
    /* An editor that deletes and recreates: wait for the file to be back
     * (its creation is another event) instead of rejecting a reload. */
    if (access(w->script, R_OK) != 0) {
        mw_log(MW_LOG_WARN, "--watch: %s is gone; reloading when it reappears", w->script);
        return;
    }
    w->fire(w->ud, "file change");
}

static void on_sighup(uv_signal_t *h, int signum)
{
    triggers *w = h->data;
    (void)signum;
    w->fire(w->ud, "SIGHUP");
}

void trig_start(triggers *w, uv_loop_t *loop, const char *script, void (*fire)(void *ud, const char *why),
                void *ud)
{
    memset(w, 0, sizeof *w);
    w->loop = loop;
    w->script = script;
    w->fire = fire;
    w->ud = ud;
    uv_timer_init(loop, &w->debounce);
    w->debounce.data = w;
    uv_signal_init(loop, &w->sighup);
    w->sighup.data = w;
    uv_signal_start(&w->sighup, on_sighup, SIGHUP);
    uv_unref((uv_handle_t *)&w->sighup);
    w->started = 1;
}

static void dir_closed(uv_handle_t *h)
{
    trig_dir *d = h->data;
    for (char **n = d->names; n && *n; n++)
        free(*n);
    free(d->names);
    free(d->dir);
    free(d);
}

static void unwatch(triggers *w)
{
    while (w->dirs) {
        trig_dir *d = w->dirs;
        w->dirs = d->next;
        uv_close((uv_handle_t *)&d->h, dir_closed);
    }
}

static void on_fs_event(uv_fs_event_t *h, const char *filename, int events, int status)
{
    trig_dir *d = h->data;
    (void)events;
    if (status < 0 || !filename)
        return;
    for (char **n = d->names; *n; n++)
        if (strcmp(*n, filename) == 0) {
            /* Restart: a burst of events (rename, truncate + write) is one reload. */
            uv_timer_start(&d->set->debounce, on_debounced, DEBOUNCE_MS, 0);
            return;
        }
}

/* The watch on `dir`, started if new; NULL (logged) when it cannot be. */
static trig_dir *dir_for(triggers *w, const char *dir)
{
    for (trig_dir *x = w->dirs; x; x = x->next)
        if (strcmp(x->dir, dir) == 0)
            return x;
    trig_dir *d = calloc(1, sizeof *d);
    char *wdir = d ? strdup(dir) : NULL;
    char **names = wdir ? calloc(1, sizeof *names) : NULL;
    if (!names || uv_fs_event_init(w->loop, &d->h) != 0) {
        if (!names)
            mw_log(MW_LOG_WARN, "--watch: out of memory; not watching %s", dir);
        free(names);
        free(wdir);
        free(d);
        return NULL;
    }
    d->set = w;
    d->dir = wdir;
    d->names = names;
    d->h.data = d;
    int rc = uv_fs_event_start(&d->h, on_fs_event, d->dir, 0);
    if (rc != 0)
        mw_log(MW_LOG_WARN, "--watch: cannot watch %s: %s", d->dir, uv_strerror(rc));
    uv_unref((uv_handle_t *)&d->h);
    d->next = w->dirs;
    w->dirs = d;
    return d;
}

/* Add `name` to d's names. 0, or -1 (out of memory). */
static int add_name(trig_dir *d, const char *name)
{
    size_t n = 0;
    while (d->names[n])
        n++;
    char **names = realloc(d->names, (n + 2) * sizeof *d->names);
    char *copy = names ? strdup(name) : NULL;
    if (names)
        d->names = names;
    if (!copy)
        return -1;
    d->names[n] = copy;
    d->names[n + 1] = NULL;
    return 0;
}

void trig_watch(triggers *w, char **files)
{
    unwatch(w);
    if (!files)
        mw_log(MW_LOG_WARN, "--watch: out of memory listing the script's files; not watching");
    for (char **f = files; f && *f; f++) {
        char *d1 = strdup(*f), *b1 = strdup(*f);
        if (!d1 || !b1) {
            mw_log(MW_LOG_WARN, "--watch: out of memory; not watching %s", *f);
        } else {
            trig_dir *d = dir_for(w, dirname(d1));
            if (d && add_name(d, basename(b1)) != 0)
                mw_log(MW_LOG_WARN, "--watch: out of memory; not watching %s", *f);
        }
        free(d1);
        free(b1);
    }
}

void trig_stop(triggers *w)
{
    if (!w->started)
        return;
    w->started = 0;
    unwatch(w);
    uv_close((uv_handle_t *)&w->debounce, NULL);
    uv_close((uv_handle_t *)&w->sighup, NULL);
    /* libuv puts back the default action (the end of the process) when its
     * last handle of a signal closes: the run is ending, a reload asked for
     * now has nothing to do (run.c ignores it until the handle is in, too). */
    signal(SIGHUP, SIG_IGN);
}
