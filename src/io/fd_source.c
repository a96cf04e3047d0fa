/*
 * fd_source.c: records from a file descriptor (contract in fd_source.h
 * and source.h).
 */
#define _GNU_SOURCE
#include "fd_source.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lines.h"
#include "stream.h"

#define CHUNK (64 * 1024)

typedef struct fd_source {
    mw_source base;        /* first member: the interface */
    uv_loop_t *loop;
    char *name;            /* path as given ("-" for stdin), for messages */
    int fd;                /* owned unless it is stdin */
    int is_file;           /* regular file: uv_fs_read; else a stream */
    io_stream stream;      /* streams only; closed by close */
    int stream_open;
    uv_fs_t req;           /* the file read in flight */
    lines l;               /* the buffer and its framing */
    char *room;            /* where the read in flight lands */
    size_t room_len;
    int64_t file_off;      /* file offset of the next read */
    int reading;           /* a read is in flight */
    int close_pending;     /* close waits for the file read in flight */
    void (*on_closed)(mw_source *s);
} fd_source;

static const source_ops fd_source_ops;

static void fail_open(char **err, const char *path, const char *why)
{
    if (asprintf(err, "--input %s: %s", path, why) < 0)
        *err = NULL;
}

int fd_source_open(mw_source **out, uv_loop_t *loop, const char *path, size_t max_line, char **err)
{
    fd_source *f = calloc(1, sizeof *f);
    *out = f ? &f->base : NULL;
    if (!f) {
        fail_open(err, path, "out of memory");
        return UV_ENOMEM;
    }
    f->base.ops = &fd_source_ops;
    f->loop = loop;
    f->name = strdup(path);
    f->fd = -1;
    if (strcmp(path, "-") == 0) {
        f->fd = 0;
    } else {
        f->fd = open(path, O_RDONLY | O_CLOEXEC);
        if (f->fd < 0) {
            int e = errno;
            fail_open(err, path, strerror(e));
            return -e;
        }
    }
    struct stat st;
    if (fstat(f->fd, &st) == 0 && S_ISDIR(st.st_mode)) {
        fail_open(err, path, "is a directory");
        return UV_EISDIR;
    }
    int rc = io_stream_open(loop, &f->stream, f->fd, 1, f, &f->is_file, &f->stream_open);
    if (rc != 0) {
        fail_open(err, path, uv_strerror(rc));
        return rc;
    }
    f->req.data = f;
    return lines_init(&f->l, max_line, CHUNK) == 0 ? 0 : UV_ENOMEM;
}

static void read_landed(fd_source *f, ssize_t n)
{
    f->reading = 0;
    if (n > 0)
        lines_add(&f->l, (size_t)n);
    else if (n == 0 || n == UV_EOF)
        lines_end(&f->l);
    else
        lines_fail(&f->l, (int)n);
    f->base.on_ready(f->base.ud);
}

static void finish_close(fd_source *f);

static void fs_read_cb(uv_fs_t *req)
{
    fd_source *f = req->data;
    ssize_t n = req->result;
    uv_fs_req_cleanup(req);
    if (f->close_pending) {
        f->reading = 0;
        finish_close(f);
        return;
    }
    if (n > 0)
        f->file_off += n;
    read_landed(f, n);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    fd_source *f = h->data;
    (void)suggested;
    b->base = f->room;
    b->len = f->room_len;
}

static void stream_read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    (void)b;
    if (n == 0)
        return; /* EAGAIN: keep waiting */
    uv_read_stop(s);
    read_landed(s->data, n);
}

/* Start a read if none is in flight and the input has not ended. */
static void want(fd_source *f)
{
    if (f->reading || f->l.eof || f->l.error)
        return;
    int rc = lines_room(&f->l, &f->room, &f->room_len) == 0 ? 0 : UV_ENOMEM;
    if (rc == 0) {
        f->reading = 1;
        if (f->is_file) {
            uv_buf_t b = uv_buf_init(f->room, (unsigned)f->room_len);
            rc = uv_fs_read(f->loop, &f->req, f->fd, &b, 1, f->file_off, fs_read_cb);
        } else {
            rc = uv_read_start(&f->stream.stream, alloc_cb, stream_read_cb);
        }
    }
    if (rc != 0) {
        f->reading = 0;
        lines_fail(&f->l, rc);
        f->base.on_ready(f->base.ud);
    }
}

static int fd_next(mw_source *s, source_record *r)
{
    fd_source *f = (fd_source *)s;
    /* Read ahead (files): the next read starts while the last chunk still
     * has lines to hand out, so its thread-pool round trip overlaps their
     * processing. Waiting until the buffer ran dry left the loop idle for
     * each hop, which under load (the worker thread waiting for a core)
     * starved the operator: 10,000 sleeping records allowed, 800 to 2,500
     * in flight. Here, at the start of a call, the last record handed out
     * is no longer used (source.h), so lines_room may move the buffer; the
     * unread part is under one chunk, so it never grows for this. */
    if (f->is_file && !f->reading && f->l.end - f->l.start < CHUNK)
        want(f);
    *r = (source_record){ 0 }; /* (no entry id, no ticket) */
    int rc = lines_next(&f->l, &r->data, &r->len, &r->line);
    switch (rc) {
    case LINES_LINE:
        return SOURCE_RECORD;
    case LINES_AGAIN:
        want(f);
        return SOURCE_AGAIN;
    case LINES_EOF:
        return SOURCE_END;
    default:
        return SOURCE_ERROR;
    }
}

/* No unread byte left and the end seen. With nothing buffered and the end
 * not seen yet, a read finds out (the bytes it brings wait for next()). */
static int fd_ended(mw_source *s)
{
    fd_source *f = (fd_source *)s;
    if (f->l.error || f->l.start < f->l.end)
        return 0;
    if (f->l.eof)
        return 1;
    want(f);
    return 0;
}

static void fd_strerror(const mw_source *s, char *buf, size_t len)
{
    const fd_source *f = (const fd_source *)s;
    if (f->l.error == LINES_ETOOLONG)
        snprintf(buf, len, "input line %llu: longer than the limit of %zu bytes",
                 (unsigned long long)f->l.lineno, f->l.max_line);
    else
        snprintf(buf, len, "--input %s: read error: %s", f->name, uv_strerror(f->l.error));
}

static source_pos fd_position(const mw_source *s)
{
    const fd_source *f = (const fd_source *)s;
    return (source_pos){ f->l.consumed, f->l.lineno };
}

static int fd_seek(mw_source *s, source_pos pos)
{
    fd_source *f = (fd_source *)s;
    if (!f->is_file)
        return -1; /* a stream cannot be rewound */
    f->file_off = (int64_t)pos.offset;
    f->l.consumed = pos.offset;
    f->l.lineno = pos.line;
    return 0;
}

static void stream_closed(uv_handle_t *h)
{
    fd_source *f = h->data;
    if (f->on_closed)
        f->on_closed(&f->base);
    free(f);
}

static void finish_close(fd_source *f)
{
    lines_free(&f->l);
    free(f->name);
    f->name = NULL;
    if (f->stream_open) {
        f->stream_open = 0;
        /* uv_close on a stream opened from fd 0 closes fd 0 too. */
        uv_close(&f->stream.handle, stream_closed);
        return;
    }
    if (f->fd > 0)
        close(f->fd);
    if (f->on_closed)
        f->on_closed(&f->base);
    free(f);
}

static void fd_close(mw_source *s, void (*on_closed)(mw_source *s))
{
    fd_source *f = (fd_source *)s;
    f->on_closed = on_closed;
    if (f->reading && f->is_file) {
        /* The thread pool is writing into the buffer: finish when it lands. */
        f->close_pending = 1;
        return;
    }
    finish_close(f);
}

/* A regular file's size now (it may still grow); a stream's is unknown. */
static int fd_size(const mw_source *s, uint64_t *size)
{
    const fd_source *f = (const fd_source *)s;
    struct stat st;
    if (!f->is_file || fstat(f->fd, &st) != 0 || !S_ISREG(st.st_mode))
        return -1;
    *size = (uint64_t)st.st_size;
    return 0;
}

/* No commit: a file has nothing to acknowledge. */
static const source_ops fd_source_ops = {
    .kind = "fd", .next = fd_next, .strerror = fd_strerror, .position = fd_position, .seek = fd_seek,
    .commit = NULL, .ended = fd_ended, .close = fd_close, .size = fd_size,
};
