/*
 * io.c: which source or sink serves a name (contract in io.h).
 */
#include "io.h"

#include "fd_sink.h"
#include "fd_source.h"

int io_source_open(mw_source **out, uv_loop_t *loop, const char *name, size_t max_line, char **err)
{
    return fd_source_open(out, loop, name, max_line, err);
}

int io_sink_open(mw_sink **out, uv_loop_t *loop, const char *name, uint64_t keep, char **err)
{
    return fd_sink_open(out, loop, name, keep, err);
}
