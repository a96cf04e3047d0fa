/*
 * checkpoint.h: exactly-once for file input and file output: taking
 * checkpoints periodically, on a signal and at the clean end, and
 * committing them without blocking the loop and without waiting for the
 * queue to drain:
 *   1. FLUSHING: wait until the sinks have written the bytes the snapshot
 *      counts (snapshot.h);
 *   2. WRITING (thread pool): sync the sinks, write a new uniquely named
 *      DIR/checkpoint.tmp.XXXXXX (O_EXCL|O_NOFOLLOW, 0600), fsync it, keep
 *      the current checkpoint as DIR/checkpoint.prev (a hard link), rename
 *      the new one into place, fsync DIR;
 *   3. tell the source its records up to the snapshot's position are
 *      committed (source_commit).
 * A crash at any moment leaves DIR/checkpoint either the old or the new
 * one, and the output's committed prefix on disk. A checkpoint that cannot
 * be built or written fails the run (never a silent gap). A snapshot asked
 * for while another is being committed (a signal's, the final one) waits
 * and is committed right after it (a newer one replaces an older waiting
 * one).
 *
 * Opening the directory and restoring are restore.c's. This file reports
 * to the run only through the cp_host it is given. The cp struct is
 * embedded by the run; its fields are this file's.
 */
#ifndef MW_CHECKPOINT_H
#define MW_CHECKPOINT_H

#include <stdint.h>
#include <uv.h>

#include "snapshot.h"

typedef struct cp_host {
    /* The periodic timer asks: is the run reading normally? */
    int (*may_snapshot)(void *ud);
    /* A checkpoint could not be taken or written: fail the run. */
    void (*failed)(void *ud, const char *msg);
    void *ud;
} cp_host;

typedef struct cp {
    uv_loop_t *loop;
    const char *dir;          /* --checkpoint-dir, or NULL: all of this is off */
    uint64_t interval_ms;
    snap_view view;           /* what a snapshot reads */
    cp_host host;
    uv_timer_t timer;
    int timer_open;
    int state;                /* idle, flushing, writing (checkpoint.c) */
    snap cur;                 /* the one being committed */
    int has_next;
    snap next;                /* the one waiting for it */
    uv_work_t work;
    uint64_t written;         /* checkpoints written so far */
    uint64_t written_at_ms;   /* uv_now when the last was written (0: none yet) */
    int failed;               /* a checkpoint could not be taken or written */
    void (*idle)(void *ud);   /* when none is in progress or queued */
} cp;

/* DIR/name (malloc'd), or NULL when out of memory. */
char *cp_path(const char *dir, const char *name);

/* Set up (nothing runs until cp_start). `dir` NULL: checkpoints are off
 * and every call below is a no-op that calls back at once. */
void cp_init(cp *c, uv_loop_t *loop, const char *dir, uint64_t interval_ms, const snap_view *view,
             const cp_host *host);
/* Start the periodic checkpoints. */
void cp_start(cp *c);
/* The sinks made progress: a checkpoint waiting for its flush may go on. */
void cp_progress(cp *c);
/* Take a checkpoint of this moment now (a signal). 0, or -1 (the run was
 * failed). */
int cp_take_now(cp *c);
/* The clean end: take the final (complete) checkpoint, then idle(ud). */
void cp_finish(cp *c, void (*idle)(void *ud));
/* Call idle(ud) once no checkpoint is being committed or waits to be (at
 * once if none): the sinks must stay open until then. */
void cp_when_idle(cp *c, void (*idle)(void *ud));
/* Nonzero once a checkpoint could not be taken or written. */
int cp_failed(const cp *c);
/* uv_now when the last checkpoint was written, 0 if none was. */
uint64_t cp_last_written_ms(const cp *c);
/* Stop the timer (shutdown). */
void cp_stop(cp *c);
/* Free what is left (after the loop ended). */
void cp_free(cp *c);

#endif
