/*
 * io.h: opening sources and sinks by name. The run says what the user
 * gave (--input, --output, --dead-letter) and gets the interface back;
 * which implementation serves a name is decided here and nowhere else.
 * A path or "-" is a file descriptor (fd_source.c, fd_sink.c); redis:// and
 * redis+cluster:// are Redis Streams (redis_source.c, redis_sink.c).
 */
#ifndef MW_IO_H
#define MW_IO_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "redis_url.h"
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

 /* Tie the opened source and sinks together (dlq may be NULL), before the
 * first record: a broker source acks through them, a broker sink starts
 * its connection. 0, or -1 with a message in *err (malloc'd). */
int io_bind(mw_source *src, mw_sink *out, mw_sink *dlq, char **err);

/* Does the output `out` name the very stream the input `in` reads (the
 * same server, or cluster, and key)? Its outputs would be read again as
 * input, for ever. 1 or 0 (0 also when either is not a valid URL: opening
 * it says why). */
static inline int io_same_stream(const char *in, const char *out)
{
    return redis_url_same_stream(in, out);
}

/* Is `name` a broker (positions are the broker's: no --checkpoint-dir)? */
static inline int io_is_broker(const char *name)
{
    return redis_url_is(name);
}

#endif
