/*
 * fd_sink.c: output lines to a file descriptor (contract in fd_sink.h and
 * sink.h).
 */
#define _GNU_SOURCE
#include "fd_sink.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../util/buf.h"
#include "stream.h"

/* One write call moves at most this much (uv_buf_t lengths are 32-bit);
 * a larger backlog goes out in several. */
#define CHUNK_MAX ((size_t)1 << 30)
/* A buffer this large or larger is adopted rather than copied, and not
 * kept around once written: one huge record's output (a fan-out of
 * 100 MB) costs its own size once, not three times for the whole run. */
#define BIG_BUF ((size_t)4 << 20)
/* Writes are coalesced: one starts when this much waits, or when the
 * oldest waiting byte has waited COALESCE_MS (as Flink's buffer timeout).
 * A write per loop iteration cost a thread-pool round trip (two futex
 * calls, an eventfd, two context switches) per dozen records at low
 * capacities: ~10% of an HTTP enrichment run's CPU (BENCHMARKS.md). */
#define COALESCE_BYTES ((size_t)64 << 10)
#define COALESCE_MS 1

typedef struct fd_sink {
    mw_sink base;        /* first member: the interface */
    uv_loop_t *loop;
    char *name;          /* path as given ("-" for stdout) */
    int fd;              /* owned unless stdout */
    int is_file;
    io_stream stream;    /* streams only */
    int stream_open;
    int was_stream;      /* the fd belongs to the stream handle (closed with it) */
    int prepare_open;
    uv_prepare_t prepare; /* starts writes once COALESCE_BYTES wait */
    int timer_open;
    uv_timer_t timer;     /* starts them after COALESCE_MS */
    uv_fs_t fs_req;
    uv_write_t wr_req;
    mw_buf fill, busy;   /* both owned */
    size_t busy_off;     /* bytes of busy already written */
    size_t chunk;        /* the write in flight covers busy[busy_off..+chunk) */
    int writing;
    int error;           /* first write error (uv code), sticky */
    uint64_t written;    /* bytes written so far (from base) */
    uint64_t base_len;   /* file length kept at open (restore), 0 otherwise */
    uint64_t accepted;   /* bytes handed to write so far */
    void (*on_drained)(void *ud); /* flush: everything written */
    int draining;
    int handles_open;
    void (*on_closed)(mw_sink *k);
} fd_sink;

static const sink_ops fd_sink_ops;
static void start_write(fd_sink *o);
static void write_chunk(fd_sink *o);

static void on_timer(uv_timer_t *h)
{
    fd_sink *o = h->data;
    if (!o->writing && o->fill.len && !o->error)
        start_write(o);
}

static void on_prepare(uv_prepare_t *h)
{
    fd_sink *o = h->data;
    if (!o->writing && o->fill.len) {
        if (o->fill.len >= COALESCE_BYTES || !o->timer_open)
            start_write(o);
        else if (!uv_is_active((uv_handle_t *)&o->timer))
            uv_timer_start(&o->timer, on_timer, COALESCE_MS, 0);
    }
    /* A write in progress or the armed timer (if any) keeps the loop
     * alive from here. */
    uv_unref((uv_handle_t *)h);
}

static int failed_open(char **err, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int failed_open(char **err, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(err, fmt, ap) < 0)
        *err = NULL;
    va_end(ap);
    return rc;
}

/* Restore: everything after the committed prefix is discarded. A file
 * shorter than that is never extended (that would pad it with NUL bytes):
 * the caller checks first; this holds even if the file shrank in between. */
static int keep_prefix(fd_sink *o, const char *path, uint64_t keep, char **err)
{
    struct stat st;
    if (fstat(o->fd, &st) == 0 && (uint64_t)st.st_size < keep)
        return failed_open(err, UV_EINVAL, "%s: has %llu bytes, fewer than the committed %llu: refusing to extend it",
                           path, (unsigned long long)st.st_size, (unsigned long long)keep);
    if (ftruncate(o->fd, (off_t)keep) != 0 || lseek(o->fd, (off_t)keep, SEEK_SET) < 0) {
        int e = errno;
        return failed_open(err, -e, "%s: cannot truncate to the committed %llu bytes: %s", path,
                           (unsigned long long)keep, strerror(e));
    }
    o->base_len = keep;
    return 0;
}

int fd_sink_open(mw_sink **out, uv_loop_t *loop, const char *path, uint64_t keep, char **err)
{
    fd_sink *o = calloc(1, sizeof *o);
    *out = o ? &o->base : NULL;
    if (!o)
        return failed_open(err, UV_ENOMEM, "%s: out of memory", path);
    o->base.ops = &fd_sink_ops;
    o->loop = loop;
    o->name = strdup(path);
    if (strcmp(path, "-") == 0) {
        o->fd = 1;
    } else {
        o->fd = open(path, O_WRONLY | O_CREAT | (keep ? 0 : O_TRUNC) | O_CLOEXEC, 0644);
        if (o->fd < 0) {
            int e = errno;
            return failed_open(err, -e, "%s: %s", path, strerror(e));
        }
        if (keep == SINK_APPEND) {
            struct stat st;
            keep = fstat(o->fd, &st) == 0 && S_ISREG(st.st_mode) ? (uint64_t)st.st_size : 0;
        }
        int rc = keep ? keep_prefix(o, path, keep, err) : 0;
        if (rc != 0)
            return rc;
    }
    int rc = io_stream_open(loop, &o->stream, o->fd, 0, o, &o->is_file, &o->stream_open);
    o->was_stream = o->stream_open;
    if (rc != 0)
        return failed_open(err, rc, "%s: %s", path, uv_strerror(rc));
    o->fs_req.data = o;
    o->wr_req.data = o;
    uv_prepare_init(loop, &o->prepare);
    o->prepare_open = 1;
    o->prepare.data = o;
    uv_prepare_start(&o->prepare, on_prepare);
    uv_unref((uv_handle_t *)&o->prepare);
    uv_timer_init(loop, &o->timer);
    o->timer_open = 1;
    o->timer.data = o;
    return 0;
}

static void bytes_waiting(fd_sink *o)
{
    /* Bytes wait for the next loop iteration's prepare: keep the loop
     * alive until then, or a run that stopped reading (its backlog above
     * the high-water mark) would see the loop run dry first. */
    if (o->prepare_open)
        uv_ref((uv_handle_t *)&o->prepare);
}

static void fd_write(mw_sink *k, const char *data, size_t len)
{
    fd_sink *o = (fd_sink *)k;
    if (o->error || len == 0)
        return;
    o->accepted += len;
    if (mw_buf_add(&o->fill, data, len) != 0) {
        o->error = UV_ENOMEM;
        if (o->base.on_error)
            o->base.on_error(o->base.ud);
        return;
    }
    bytes_waiting(o);
}

static void fd_write_owned(mw_sink *k, char *data, size_t len)
{
    fd_sink *o = (fd_sink *)k;
    if (o->error || len < BIG_BUF || o->fill.len) {
        fd_write(k, data, len);
        free(data);
        return;
    }
    o->accepted += len;
    free(o->fill.p);
    o->fill.p = data;
    o->fill.len = o->fill.cap = len;
    bytes_waiting(o);
}

static size_t fd_backlog(const mw_sink *k)
{
    const fd_sink *o = (const fd_sink *)k;
    return o->fill.len + o->busy.len - o->busy_off;
}

static void write_done(fd_sink *o, int status)
{
    o->writing = 0;
    if (status < 0 && !o->error) {
        o->error = status;
        o->fill.len = 0;
        if (o->base.on_error)
            o->base.on_error(o->base.ud);
    }
    o->busy.len = 0;
    o->busy_off = 0;
    if (o->busy.cap >= BIG_BUF) {
        free(o->busy.p);
        o->busy.p = NULL;
        o->busy.cap = 0;
    }
    /* The next write now if a flush waits or enough is there; else the
     * prepare and the timer decide. */
    if (!o->error && o->fill.len && (o->draining || o->fill.len >= COALESCE_BYTES))
        start_write(o);
    else if (!o->error && o->fill.len)
        bytes_waiting(o);
    if (o->base.on_written && !o->error)
        o->base.on_written(o->base.ud);
    if (o->writing)
        return;
    if (o->draining && (o->error || !o->fill.len)) {
        o->draining = 0;
        if (o->on_drained)
            o->on_drained(o->base.ud);
    }
}

/* n bytes of the chunk in flight were written: the next chunk, or done. */
static void chunk_written(fd_sink *o, size_t n)
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
    fd_sink *o = req->data;
    ssize_t n = req->result;
    uv_fs_req_cleanup(req);
    if (n < 0)
        write_done(o, (int)n);
    else
        chunk_written(o, (size_t)n); /* a short write sends the rest */
}

static void stream_write_cb(uv_write_t *req, int status)
{
    fd_sink *o = req->data;
    if (status < 0)
        write_done(o, status);
    else
        chunk_written(o, o->chunk);
}

/* Write busy[busy_off..] (at most CHUNK_MAX of it). */
static void write_chunk(fd_sink *o)
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

static void start_write(fd_sink *o)
{
    if (o->timer_open)
        uv_timer_stop(&o->timer);
    mw_buf t = o->busy;
    o->busy = o->fill;
    o->fill = t;
    o->fill.len = 0;
    o->busy_off = 0;
    o->writing = 1;
    write_chunk(o);
}

static void fd_flush(mw_sink *k, void (*done)(void *ud))
{
    fd_sink *o = (fd_sink *)k;
    o->on_drained = done;
    if (!o->writing && o->fill.len && !o->error)
        start_write(o);
    if (!o->writing) {
        if (done)
            done(o->base.ud);
        return;
    }
    o->draining = 1;
}

static uint64_t fd_position(const mw_sink *k)
{
    const fd_sink *o = (const fd_sink *)k;
    return o->base_len + o->accepted;
}

static uint64_t fd_written(const mw_sink *k)
{
    const fd_sink *o = (const fd_sink *)k;
    return o->base_len + o->written;
}

static int fd_sync(mw_sink *k)
{
    const fd_sink *o = (const fd_sink *)k;
    /* EINVAL: an fd that cannot be synced (a pipe): nothing to make durable. */
    if (o->fd >= 0 && fsync(o->fd) != 0 && errno != EINVAL)
        return -1;
    return 0;
}

static int fd_error(const mw_sink *k)
{
    return ((const fd_sink *)k)->error;
}

/* Drop one reference taken in close; the last frees everything. */
static void unref_close(fd_sink *o)
{
    if (--o->handles_open > 0)
        return;
    free(o->fill.p);
    free(o->busy.p);
    if (!o->was_stream && o->fd > 1)
        close(o->fd);
    free(o->name);
    if (o->on_closed)
        o->on_closed(&o->base);
    free(o);
}

static void handle_closed(uv_handle_t *h)
{
    unref_close(h->data);
}

static void fd_close(mw_sink *k, void (*on_closed)(mw_sink *k))
{
    fd_sink *o = (fd_sink *)k;
    o->on_closed = on_closed;
    /* Also called after a failed open: close what exists. One reference
     * per open handle, plus one held until this returns. */
    o->handles_open = 1 + o->stream_open + o->prepare_open + o->timer_open;
    if (o->stream_open) {
        o->stream_open = 0;
        uv_close(&o->stream.handle, handle_closed);
    }
    if (o->prepare_open) {
        o->prepare_open = 0;
        uv_close((uv_handle_t *)&o->prepare, handle_closed);
    }
    if (o->timer_open) {
        o->timer_open = 0;
        uv_close((uv_handle_t *)&o->timer, handle_closed);
    }
    unref_close(o);
}

static const sink_ops fd_sink_ops = {
    .kind = "fd", .write = fd_write, .write_owned = fd_write_owned, .backlog = fd_backlog, .flush = fd_flush,
    .position = fd_position, .written = fd_written, .sync = fd_sync, .error = fd_error, .close = fd_close,
};
