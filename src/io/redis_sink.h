/*
 * redis_sink.h: output lines as Redis Streams entries: the `redis://`
 * outputs and dead-letter routes (URL syntax in redis_url.h). Opened
 * unbound; io_bind then pairs it with a Redis source on the same node
 * (atomic commits, redis_commit.c) or starts its own connection.
 */
#ifndef MW_REDIS_SINK_H
#define MW_REDIS_SINK_H

#include <stdint.h>
#include <uv.h>

#include "redis_url.h"
#include "sink.h"

/* As io_sink_open (io.h); `keep` must be 0 (no restore into a stream). */
int redis_sink_open(mw_sink **out, uv_loop_t *loop, const char *url, uint64_t keep, char **err);

int redis_sink_is(const mw_sink *k);
const redis_url *redis_sink_url(const mw_sink *k);
/* The server's run_id (a cluster: partition 0's master's): one server
 * whatever its name. */
const char *redis_sink_run_id(const mw_sink *k);

/* Alone: connect and write (which: 0 output, 1 dead letter). 0, or -1
 * with *err. */
int redis_sink_start(mw_sink *k, int which, char **err);

/* Paired: stage lines with the source (takes a reference on it). */
struct rs_source;
void redis_sink_pair(mw_sink *k, int which, struct rs_source *s);

#endif
