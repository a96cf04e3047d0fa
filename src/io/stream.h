/*
 * stream.h: what fd_source.c and fd_sink.c share: wrapping an fd that is not a
 * regular file in the right libuv stream handle.
 */
#ifndef MW_STREAM_H
#define MW_STREAM_H

#include <uv.h>

typedef union io_stream {
    uv_handle_t handle;
    uv_stream_t stream;
    uv_pipe_t pipe;
    uv_tty_t tty;
} io_stream;

/* Open `fd` as a tty or pipe handle (data = ud), or report a regular file
 * (or other fd read and written through the thread pool) with *is_file = 1.
 * Sets *opened when a handle was initialised: the caller must uv_close it,
 * which also closes the fd. Returns 0 or a uv error. */
int io_stream_open(uv_loop_t *loop, io_stream *s, int fd, int readable, void *ud,
                   int *is_file, int *opened);

#endif
