/*
 * io.c: which source or sink serves a name, and how a source and its sinks
 * are tied (contract in io.h).
 */
#define _GNU_SOURCE
#include "io.h"

#include <stdio.h>

#include "fd_sink.h"
#include "fd_source.h"
#include "redis_sink.h"
#include "redis_source.h"
#include "redis_url.h"

int io_source_open(mw_source **out, uv_loop_t *loop, const char *name, size_t max_line, char **err)
{
    if (redis_url_is(name))
        return redis_source_open(out, loop, name, max_line, err);
    return fd_source_open(out, loop, name, max_line, err);
}

int io_sink_open(mw_sink **out, uv_loop_t *loop, const char *name, uint64_t keep, char **err)
{
    if (redis_url_is(name))
        return redis_sink_open(out, loop, name, keep, err);
    return fd_sink_open(out, loop, name, keep, err);
}

int io_bind(mw_source *src, mw_sink *out, mw_sink *dlq, char **err)
{
    if (redis_source_is(src))
        return redis_source_bind(src, out, dlq, err);
    if (redis_sink_is(out) && redis_sink_start(out, 0, err) != 0)
        return -1;
    if (dlq && redis_sink_is(dlq) && redis_sink_start(dlq, 1, err) != 0)
        return -1;
    return 0;
}

void sink_strerror(const mw_sink *k, char *buf, size_t len)
{
    if (k->ops->strerror) {
        k->ops->strerror(k, buf, len);
        return;
    }
    snprintf(buf, len, "%s", uv_strerror(sink_error(k)));
}
