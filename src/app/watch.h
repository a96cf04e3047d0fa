/*
 * watch.h: --watch: uv_fs_event on the directories of a set of files (the
 * script and the modules it loaded from its own directory), debounced so a
 * burst of events (a save by rename, truncate + write, delete and
 * recreate) is one call of `changed`. Watching directories rather than
 * files catches saves by rename and files deleted and recreated.
 *
 * Used by reload.c; knows nothing of scripts or generations.
 */
#ifndef MW_WATCH_H
#define MW_WATCH_H

#include <uv.h>

typedef struct watch_dir watch_dir;

typedef struct watch_set {
    uv_loop_t *loop;
    const char *script;      /* must exist when the burst ends (not owned) */
    watch_dir *dirs;
    uv_timer_t debounce;
    void (*changed)(void *ud);
    void *ud;
} watch_set;

/* Start the debounce timer (no directory watched yet). */
void watch_init(watch_set *w, uv_loop_t *loop, const char *script, void (*changed)(void *ud), void *ud);

/* Watch exactly `files` (a NULL-terminated array; NULL: out of memory
 * listing them), replacing what was watched. Problems are logged. */
void watch_files(watch_set *w, char **files);

/* Stop watching and close the handles. */
void watch_stop(watch_set *w);

#endif
