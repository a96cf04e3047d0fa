/* stream.c: fd -> libuv stream handle (contract in stream.h). */
#include "stream.h"

int io_stream_open(uv_loop_t *loop, io_stream *s, int fd, int readable, void *ud,
                   int *is_file, int *opened)
{
    *is_file = 0;
    *opened = 0;
    int rc = 0;
    switch (uv_guess_handle(fd)) {
    case UV_TTY:
        rc = uv_tty_init(loop, &s->tty, fd, readable);
        *opened = rc == 0;
        break;
    case UV_NAMED_PIPE:
    case UV_TCP:
        rc = uv_pipe_init(loop, &s->pipe, 0);
        if (rc == 0) {
            *opened = 1;
            rc = uv_pipe_open(&s->pipe, fd);
        }
        break;
    default:
        *is_file = 1;
    }
    s->handle.data = ud;
    return rc;
}
