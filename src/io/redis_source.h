/*
 * redis_source.h: records from a Redis Streams consumer group: the
 * `redis://` and `redis+cluster://` inputs (URL syntax in redis_url.h; how
 * entries are read, claimed, committed and acked in redis_int.h).
 */
#ifndef MW_REDIS_SOURCE_H
#define MW_REDIS_SOURCE_H

#include <stddef.h>
#include <uv.h>

#include "sink.h"
#include "source.h"

/* Parse `url`, check it against the server (connect, authenticate, create
 * the group), and start reading. As io_source_open (io.h). */
int redis_source_open(mw_source **out, uv_loop_t *loop, const char *url, size_t max_line, char **err);

int redis_source_is(const mw_source *s);

/* Tie the run's sinks to the source (dlq may be NULL): commits are atomic
 * when every sink is a Redis stream on the source's node; otherwise entries
 * are acked once the sinks have written their outputs. 0, or -1 with *err
 * (malloc'd). */
int redis_source_bind(mw_source *s, mw_sink *out, mw_sink *dlq, char **err);

/* The URL as messages show it: the password replaced by ***. malloc'd. */
char *rs_public_name(const char *url);

#endif
