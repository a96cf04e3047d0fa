/*
 * input.c: the line source (contract in input.h).
 */
#define _GNU_SOURCE
#include "input.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CHUNK (64 * 1024)

int input_open(input *in, uv_loop_t *loop, const char *path, size_t max_line,
               input_cb on_data, void *ud, char **err)
{
    memset(in, 0, sizeof *in);
    in->loop = loop;
    in->name = strdup(path);
    in->max_line = max_line;
    in->on_data = on_data;
    in->ud = ud;
    in->fd = -1;
    if (strcmp(path, "-") == 0) {
        in->fd = 0;
    } else {
        /* Opening happens before the loop runs; a FIFO waits here for its
         * writer, which is what a reader of a FIFO expects. */
        in->fd = open(path, O_RDONLY | O_CLOEXEC);
        if (in->fd < 0) {
            int e = errno;
            if (asprintf(err, "--input %s: %s", path, strerror(e)) < 0)
                *err = NULL;
            return -e;
        }
    }
    struct stat st;
    if (fstat(in->fd, &st) == 0 && S_ISDIR(st.st_mode)) {
        if (asprintf(err, "--input %s: is a directory", path) < 0)
            *err = NULL;
        return UV_EISDIR;
    }
    int rc = io_stream_open(loop, &in->stream, in->fd, 1, in, &in->is_file, &in->stream_open);
    if (rc != 0) {
        if (asprintf(err, "--input %s: %s", path, uv_strerror(rc)) < 0)
            *err = NULL;
        return rc;
    }
    in->req.data = in;
    in->cap = CHUNK * 2;
    in->buf = malloc(in->cap);
    return in->buf ? 0 : UV_ENOMEM;
}

int input_next_line(input *in, const char **line, size_t *len, uint64_t *lineno)
{
    if (in->error)
        return INPUT_ERROR;
    char *nl = in->scan < in->end ? memchr(in->buf + in->scan, '\n', in->end - in->scan) : NULL;
    size_t l;
    if (nl) {
        l = (size_t)(nl - (in->buf + in->start));
    } else if (in->eof && in->end > in->start) {
        l = in->end - in->start; /* final line without a newline */
    } else {
        in->scan = in->end;
        if (in->end - in->start > in->max_line) {
            in->error = INPUT_ETOOLONG;
            in->lineno++;
            return INPUT_ERROR;
        }
        return in->eof ? INPUT_EOF : INPUT_AGAIN;
    }
    if (l > in->max_line) {
        in->error = INPUT_ETOOLONG;
        in->lineno++;
        return INPUT_ERROR;
    }
    *line = in->buf + in->start;
    size_t consumed = nl ? l + 1 : l;
    in->start += consumed;
    in->scan = in->start;
    in->consumed += consumed;
    *len = (l > 0 && (*line)[l - 1] == '\r') ? l - 1 : l;
    *lineno = ++in->lineno;
    return INPUT_LINE;
}

/* Make room for one more chunk after the unread data. */
static int make_room(input *in)
{
    if (in->start > 0) {
        memmove(in->buf, in->buf + in->start, in->end - in->start);
        in->end -= in->start;
        in->scan -= in->start;
        in->start = 0;
    }
    if (in->cap - in->end < CHUNK) {
        size_t cap = in->cap * 2;
        char *b = realloc(in->buf, cap);
        if (!b)
            return UV_ENOMEM;
        in->buf = b;
        in->cap = cap;
    }
    return 0;
}

static void read_landed(input *in, ssize_t n)
{
    in->reading = 0;
    if (n > 0)
        in->end += (size_t)n;
    else if (n == 0 || n == UV_EOF)
        in->eof = 1;
    else
        in->error = (int)n;
    in->on_data(in->ud);
}

static void finish_close(input *in);

static void fs_read_cb(uv_fs_t *req)
{
    input *in = req->data;
    ssize_t n = req->result;
    uv_fs_req_cleanup(req);
    if (in->close_pending) {
        in->reading = 0;
        finish_close(in);
        return;
    }
    if (n > 0)
        in->file_off += n;
    read_landed(in, n);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    input *in = h->data;
    (void)suggested;
    b->base = in->buf + in->end;
    b->len = in->cap - in->end;
}

static void stream_read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    (void)b;
    if (n == 0)
        return; /* EAGAIN: keep waiting */
    uv_read_stop(s);
    read_landed(s->data, n);
}

void input_want(input *in)
{
    if (in->reading || in->eof || in->error)
        return;
    int rc = make_room(in);
    if (rc == 0) {
        in->reading = 1;
        if (in->is_file) {
            uv_buf_t b = uv_buf_init(in->buf + in->end, (unsigned)(in->cap - in->end));
            rc = uv_fs_read(in->loop, &in->req, in->fd, &b, 1, in->file_off, fs_read_cb);
        } else {
            rc = uv_read_start(&in->stream.stream, alloc_cb, stream_read_cb);
        }
    }
    if (rc != 0) {
        in->reading = 0;
        in->error = rc;
        in->on_data(in->ud);
    }
}

void input_strerror(const input *in, char *buf, size_t len)
{
    if (in->error == INPUT_ETOOLONG)
        snprintf(buf, len, "input line %llu: longer than the limit of %zu bytes",
                 (unsigned long long)in->lineno, in->max_line);
    else
        snprintf(buf, len, "--input %s: read error: %s", in->name, uv_strerror(in->error));
}

static void stream_closed(uv_handle_t *h)
{
    input *in = h->data;
    if (in->on_closed)
        in->on_closed(in);
}

void input_close(input *in, void (*on_closed)(input *in))
{
    in->on_closed = on_closed;
    if (in->reading && in->is_file) {
        /* The thread pool is writing into buf: finish when it lands. */
        in->close_pending = 1;
        return;
    }
    finish_close(in);
}

static void finish_close(input *in)
{
    void (*on_closed)(input *in) = in->on_closed;
    free(in->buf);
    in->buf = NULL;
    free(in->name);
    in->name = NULL;
    if (in->stream_open) {
        in->stream_open = 0;
        /* uv_close on a stream opened from fd 0 closes fd 0 too. */
        uv_close(&in->stream.handle, stream_closed);
        return;
    }
    if (in->fd > 0)
        close(in->fd);
    in->fd = -1;
    if (on_closed)
        on_closed(in);
}
