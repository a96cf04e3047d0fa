/*
 * triggers.h: what asks for a reload. --watch: uv_fs_event on the
 * directories of a set of files (the script and the modules it loaded
 * from its own directory), debounced so a burst of events (a save by
 * rename, truncate + write, delete and recreate) is one call; watching
 * directories rather than files catches saves by rename and files deleted
 * and recreated. SIGHUP: a libuv signal handle (never work inside a signal
 * handler).
 *
 * Used by reload.c; knows nothing of scripts or generations.
 */
#ifndef MW_TRIGGERS_H
#define MW_TRIGGERS_H

#include <uv.h>

typedef struct trig_dir trig_dir;

typedef struct triggers {
    uv_loop_t *loop;
    const char *script;      /* must exist when the burst ends (not owned) */
    trig_dir *dirs;
    uv_timer_t debounce;
    uv_signal_t sighup;
    int started;
    /* A reload is asked for; `why` is "file change" or "SIGHUP". */
    void (*fire)(void *ud, const char *why);
    void *ud;
} triggers;

/* Start SIGHUP and the debounce timer (no directory watched yet). */
void trig_start(triggers *t, uv_loop_t *loop, const char *script, void (*fire)(void *ud, const char *why),
                void *ud);

/* Watch exactly `files` (a NULL-terminated array; NULL: out of memory
 * listing them), replacing what was watched. Problems are logged. */
void trig_watch(triggers *t, char **files);

/* Stop watching and close the handles (a no-op if not started). */
void trig_stop(triggers *t);

#endif
