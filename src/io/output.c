/*
 * output.c: the line sink (contract in output.h).
 */
#define _GNU_SOURCE
#include "output.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void start_write(output *o);
static void write_chunk(output *o);

/* One write call moves at most this much (uv_buf_t lengths are 32-bit);
 * a larger backlog goes out in several. */
#define CHUNK_MAX ((size_t)1 << 30)
/* A buffer this large or larger is adopted rather than copied, and not
 * kept around once written: one huge record's output (a fan-out of
 * 100 MB) costs its own size once, not three times for the whole run. */
#define BIG_BUF ((size_t)4 << 20)

static void on_prepare(uv_prepare_t *h)
{
    output *o = h->data;
    if (!o->writing && o->fill.len)
        start_write(o);
    /* A write in progress (if any) keeps the loop alive from here. */
    uv_unref((uv_handle_t *)h);
}

int output_fd(const output *o)
{
    return o->fd;
}

int output_open(output *o, uv_loop_t *loop, const char *path, uint64_t keep, void (*on_error)(void *ud),
                void *ud, char **err)
{
    memset(o, 0, sizeof *o);
    o->loop = loop;
    o->name = strdup(path);
    o->on_error = on_error;
    o->ud = ud;
    if (strcmp(path, "-") == 0) {
        o->fd = 1;
    } else {
        o->fd = open(path, O_WRONLY | O_CREAT | (keep ? 0 : O_TRUNC) | O_CLOEXEC, 0644);
        if (o->fd < 0) {
            int e = errno;
            if (asprintf(err, "%s: %s", path, strerror(e)) < 0)
                *err = NULL;
            return -e;
        }
        if (keep) {
            /* Restore: everything after the committed prefix is discarded.
             * A file shorter than that is never extended (that would pad
             * it with NUL bytes): the caller checks first; this holds even
             * if the file shrank in between. */
            struct stat st;
            if (fstat(o->fd, &st) == 0 && (uint64_t)st.st_size < keep) {
                if (asprintf(err, "%s: has %llu bytes, fewer than the committed %llu: refusing to extend it", path,
                             (unsigned long long)st.st_size, (unsigned long long)keep) < 0)
                    *err = NULL;
                return UV_EINVAL;
            }
            if (ftruncate(o->fd, (off_t)keep) != 0 || lseek(o->fd, (off_t)keep, SEEK_SET) < 0) {
                int e = errno;
                if (asprintf(err, "%s: cannot truncate to the committed %llu bytes: %s", path,
                             (unsigned long long)keep, strerror(e)) < 0)
                    *err = NULL;
                return -e;
            }
            o->base = keep;
        }
    }
    int rc = io_stream_open(loop, &o->stream, o->fd, 0, o, &o->is_file, &o->stream_open);
    o->was_stream = o->stream_open;
    if (rc != 0) {
        if (asprintf(err, "%s: %s", path, uv_strerror(rc)) < 0)
            *err = NULL;
        return rc;
    }
    o->fs_req.data = o;
    o->wr_req.data = o;
    uv_prepare_init(loop, &o->prepare);
    o->prepare_open = 1;
    o->prepare.data = o;
    uv_prepare_start(&o->prepare, on_prepare);
    uv_unref((uv_handle_t *)&o->prepare);
    return 0;
}

static void bytes_waiting(output *o);

void output_write(output *o, const char *data, size_t len)
{
    if (o->error || len == 0)
        return;
    o->accepted += len;
    if (mw_buf_add(&o->fill, data, len) != 0) {
        o->error = UV_ENOMEM;
        if (o->on_error)
            o->on_error(o->ud);
        return;
    }
    bytes_waiting(o);
}

int output_write_owned(output *o, char *data, size_t len)
{
    if (o->error || len < BIG_BUF || o->fill.len) {
        output_write(o, data, len);
        free(data);
        return 0;
    }
    o->accepted += len;
    free(o->fill.p);
    o->fill.p = data;
    o->fill.len = o->fill.cap = len;
    bytes_waiting(o);
    return 0;
}

static void bytes_waiting(output *o)
{
    /* Bytes wait for the next loop iteration's prepare: keep the loop
     * alive until then, or a pipeline that stopped reading (more than
     * OUTPUT_HIGH_WATER pending) would see the loop run dry first. */
    if (o->prepare_open)
        uv_ref((uv_handle_t *)&o->prepare);
}

void output_on_written(output *o, void (*cb)(void *ud))
{
    o->on_written = cb;
}

size_t output_backlog(const output *o)
{
    return o->fill.len + o->busy.len - o->busy_off;
}

static void write_done(output *o, int status)
{
    o->writing = 0;
    if (status < 0 && !o->error) {
        o->error = status;
        o->fill.len = 0;
        if (o->on_error)
            o->on_error(o->ud);
    }
    o->busy.len = 0;
    o->busy_off = 0;
    if (o->busy.cap >= BIG_BUF) {
        free(o->busy.p);
        o->busy.p = NULL;
        o->busy.cap = 0;
    }
    if (!o->error && o->fill.len)
        start_write(o);
    if (o->on_written && !o->error)
        o->on_written(o->ud);
    if (o->writing)
        return;
    if (o->draining && (o->error || !o->fill.len)) {
        o->draining = 0;
        if (o->on_drained)
            o->on_drained(o->ud);
    }
}

/* n bytes of the chunk in flight were written: the next chunk, or done. */
static void chunk_written(output *o, size_t n)
{
    o->busy_off += n;
    o->written += (uint64_t)n;
    if (o->busy_off < o->busy.len)
        write_chunk(o);
    else
        write_done(o, 0);
}

static void fs_write_cb(uv_fs_t *req)
{
    output *o = req->data;
    ssize_t n = req->result;
    uv_fs_req_cleanup(req);
    if (n < 0)
        write_done(o, (int)n);
    else
        chunk_written(o, (size_t)n); /* a short write sends the rest */
}

static void stream_write_cb(uv_write_t *req, int status)
{
    output *o = req->data;
    if (status < 0)
        write_done(o, status);
    else
        chunk_written(o, o->chunk);
}

/* Write busy[busy_off..] (at most CHUNK_MAX of it). */
static void write_chunk(output *o)
{
    size_t left = o->busy.len - o->busy_off;
    o->chunk = left < CHUNK_MAX ? left : CHUNK_MAX;
    uv_buf_t b = uv_buf_init(o->busy.p + o->busy_off, (unsigned)o->chunk);
    int rc;
    if (o->is_file)
        rc = uv_fs_write(o->loop, &o->fs_req, o->fd, &b, 1, -1, fs_write_cb);
    else
        rc = uv_write(&o->wr_req, &o->stream.stream, &b, 1, stream_write_cb);
    if (rc != 0)
        write_done(o, rc);
}

static void start_write(output *o)
{
    obuf t = o->busy;
    o->busy = o->fill;
    o->fill = t;
    o->fill.len = 0;
    o->busy_off = 0;
    o->writing = 1;
    write_chunk(o);
}

void output_drain(output *o, void (*done)(void *ud))
{
    o->on_drained = done;
    if (!o->writing && o->fill.len && !o->error)
        start_write(o);
    if (!o->writing) {
        if (done)
            done(o->ud);
        return;
    }
    o->draining = 1;
}

/* Drop one reference taken in output_close; the last frees everything. */
static void unref_close(output *o)
{
    if (--o->handles_open > 0)
        return;
    free(o->fill.p);
    free(o->busy.p);
    o->fill.p = o->busy.p = NULL;
    if (!o->was_stream && o->fd > 1)
        close(o->fd);
    o->fd = -1;
    free(o->name);
    o->name = NULL;
    if (o->on_closed)
        o->on_closed(o);
}

static void handle_closed(uv_handle_t *h)
{
    unref_close(h->data);
}

void output_close(output *o, void (*on_closed)(output *o))
{
    o->on_closed = on_closed;
    /* Also called after a failed output_open: close what exists. One
     * reference per open handle, plus one held until this returns. */
    o->handles_open = 1 + o->stream_open + o->prepare_open;
    if (o->stream_open) {
        o->stream_open = 0;
        uv_close(&o->stream.handle, handle_closed);
    }
    if (o->prepare_open) {
        o->prepare_open = 0;
        uv_close((uv_handle_t *)&o->prepare, handle_closed);
    }
    unref_close(o);
}
