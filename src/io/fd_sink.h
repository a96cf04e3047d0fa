/*
 * fd_sink.h: the sink writing to a file descriptor: a regular file
 * (uv_fs_write in the thread pool), a pipe or a tty (uv_write), or stdout
 * ("-"), without blocking the loop.
 *
 * Two buffers: `fill` collects what is written; when no write is in flight
 * a uv_prepare handle (run just before the loop would block) swaps it with
 * `busy` and writes it, so everything written in one loop turn goes out in
 * one write call (at most 1 GiB per call; a larger backlog goes in several).
 * A buffer of 4 MiB or more handed over with write_owned is adopted rather
 * than copied when nothing else waits.
 */
#ifndef MW_FD_SINK_H
#define MW_FD_SINK_H

#include <stdint.h>
#include <uv.h>

#include "sink.h"

/* Open `path` ("-" = stdout), truncating a file to `keep` bytes (0: empty;
 * a restore keeps the committed prefix and appends after it; a file
 * shorter than `keep` is refused, never extended). Returns 0 or a negative
 * uv error with a message in *err (malloc'd). *out is set whenever memory
 * was allocated, even on failure: close it either way. */
int fd_sink_open(mw_sink **out, uv_loop_t *loop, const char *path, uint64_t keep, char **err);

#endif
