/*
 * fd_source.h: the source of newline-delimited records from a file
 * descriptor: a regular file (uv_fs_read in the thread pool, at an offset
 * a checkpoint can store), or a FIFO, pipe or tty (one read_start ...
 * read_stop per fetch), or stdin ("-"). Framing is lines.c's; at most one
 * read is in flight; the buffer holds one chunk plus one partial line.
 */
#ifndef MW_FD_SOURCE_H
#define MW_FD_SOURCE_H

#include <stddef.h>
#include <uv.h>

#include "source.h"

/* Open `path` ("-" = stdin). Returns 0, or a negative uv error with a
 * message in *err (malloc'd). *out is set whenever memory was allocated,
 * even on failure: close it either way. A FIFO blocks here until it has
 * a writer (what a reader of a FIFO expects). */
int fd_source_open(mw_source **out, uv_loop_t *loop, const char *path, size_t max_line, char **err);

#endif
