/*
 * io.h: opening sources and sinks by name. The run says what the user
 * gave (--input, --output, --dead-letter) and gets the interface back;
 * which implementation serves a name is decided here and nowhere else.
 * Today every name is a path or "-" (fd_source.c, fd_sink.c); a Redis
 * Streams source and sink would be chosen here by their URL scheme.
 */
#ifndef MW_IO_H
#define MW_IO_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "sink.h"
#include "source.h"

/* Open the source named `name`; records longer than max_line bytes are
 * an error. 0, or a negative uv error with a message in *err (malloc'd).
 * *out is set whenever memory was allocated, even on failure: close it
 * either way (source_close). */
int io_source_open(mw_source **out, uv_loop_t *loop, const char *name, size_t max_line, char **err);

/* Open the sink named `name` at position `keep` (0: empty; a restore keeps
 * the committed prefix). As io_source_open otherwise (sink_close). */
int io_sink_open(mw_sink **out, uv_loop_t *loop, const char *name, uint64_t keep, char **err);

#endif
