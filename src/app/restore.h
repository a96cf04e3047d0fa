/*
 * restore.h: opening a --checkpoint-dir and restoring from it.
 *
 * Before anything is opened: lock DIR/lock for the whole run (a second
 * moonwait on the same DIR is refused, naming the holder's pid), remove
 * temp files a crash left, resolve the pipeline's identity (the absolute
 * paths of input, output and dead letters), and read DIR/checkpoint if
 * there is one. Refused: another pipeline's checkpoint, one of another
 * format version, a corrupt one (checkpoint.prev is named), an output or
 * dead-letter file shorter than its committed length, an input shorter
 * than the stored offset; a checkpoint of a completed run makes the run a
 * no-op. Then: the sinks are opened at their committed lengths
 * (restore_keep), the source starts at the stored position and the
 * event-time state is loaded (restore_apply), and the stored entries are
 * re-inserted before the first new record is read (restore_inject).
 */
#ifndef MW_RESTORE_H
#define MW_RESTORE_H

#include <stddef.h>
#include <stdint.h>

#include "../io/source.h"
#include "../store/ckpt.h"
#include "config.h"
#include "evtime.h"
#include "task.h"

typedef struct restore {
    const config *cfg;
    ckpt *k;                  /* the checkpoint being restored, until injected */
    int lock_fd;              /* DIR/lock, flocked for the whole run (-1 = none) */
    char *id_in, *id_out, *id_dl; /* the pipeline's identity, resolved once */
} restore;

/* Validate and read (nothing when there is no --checkpoint-dir). Returns
 * 0 (run; restoring if restore_pending), 1 (the run already completed:
 * a no-op), or -1 (refused; message printed, exit 2). */
int restore_prepare(restore *r, const config *c);

/* The identity strings a snapshot stores ("" for none). */
void restore_identity(const restore *r, const char **in, const char **out, const char **dl);

/* Nonzero while stored entries wait to be re-inserted. */
int restore_pending(const restore *r);

/* The committed lengths the sinks are opened at (0 without a restore). */
void restore_keep(const restore *r, uint64_t *out, uint64_t *dlq);

/* Start the fresh source at the stored position and load the event-time
 * state. 0, or -1 (the source cannot seek). */
int restore_apply(restore *r, mw_source *src, evtime *ev);

/* Re-insert the stored entries in stored order (stopping early once
 * *aborting is set), then forget the checkpoint. 0, or -1 with msg. */
int restore_inject(restore *r, const task_env *env, const int *aborting, char *msg, size_t msglen);

/* Release the lock and what restore_prepare kept (after the loop ended). */
void restore_release(restore *r);

#endif
