/*
 * checkpoint.c: taking and committing checkpoints (contract in
 * checkpoint.h).
 */
#define _GNU_SOURCE
#include "checkpoint.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { CK_IDLE, CK_FLUSHING, CK_WRITING };

char *cp_path(const char *dir, const char *name)
{
    char *p = NULL;
    if (asprintf(&p, "%s/%s", dir, name) < 0)
        p = NULL;
    return p;
}

void cp_init(cp *c, uv_loop_t *loop, const char *dir, uint64_t interval_ms, const snap_view *view,
             const cp_host *host)
{
    *c = (cp){ .loop = loop, .dir = dir, .interval_ms = interval_ms, .view = *view, .host = *host };
}

/* A checkpoint could not be taken or written: the run fails (exit 1). */
static void fail(cp *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(cp *c, const char *fmt, ...)
{
    char msg[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    c->failed = 1;
    c->host.failed(c->host.ud, msg);
}

static void write_cur(cp *c);

/* The checkpoint in progress ended (written or not): start the one that
 * waits, or tell whoever waits for quiet. */
static void settled(cp *c)
{
    if (c->has_next) {
        c->has_next = 0;
        c->cur = c->next;
        c->next.buf = NULL;
        c->state = CK_FLUSHING;
        cp_progress(c);
        return;
    }
    if (c->state == CK_IDLE && c->idle) {
        void (*idle)(void *) = c->idle;
        c->idle = NULL;
        idle(c->host.ud);
    }
}

/* Drop the one in progress. */
static void drop_cur(cp *c)
{
    free(c->cur.buf);
    c->cur.buf = NULL;
    c->state = CK_IDLE;
}

void cp_progress(cp *c)
{
    if (c->state != CK_FLUSHING)
        return;
    const snap_view *v = &c->view;
    if (sink_error(v->out) || (v->dlq && sink_error(v->dlq))) {
        /* The run already fails on the write error; this prefix cannot be
         * committed, and the previous checkpoint stays valid. */
        drop_cur(c);
        settled(c);
        return;
    }
    /* The committed prefix must be written before it is synced. The
     * sinks write what waits within 1 ms (fd_sink.c coalesces) and call
     * this again from on_written. */
    if (sink_written(v->out) < c->cur.out_len)
        return;
    if (v->dlq && sink_written(v->dlq) < c->cur.dlq_len)
        return;
    write_cur(c);
}

/* Capture the state now and commit it (after the one in progress, if
 * any). 0, or -1 (out of memory: the run is failed). */
static int take(cp *c, int complete)
{
    snap s;
    memset(&s, 0, sizeof s);
    if (snap_take(&c->view, complete, op_now(c->view.op), &s) != 0) {
        free(s.buf);
        fail(c, "checkpoint in %s not written: out of memory building the snapshot (%zu entries)", c->dir,
             op_size(c->view.op));
        return -1;
    }
    if (c->state == CK_IDLE) {
        c->cur = s;
        c->state = CK_FLUSHING;
        cp_progress(c);
        return 0;
    }
    /* One is being committed: this one follows it (a newer one replaces
     * an older one still waiting). */
    free(c->next.buf);
    c->has_next = 1;
    c->next = s;
    return 0;
}

/* ---- writing, in the thread pool ----------------------------------------------- */

typedef struct job {
    cp *c;
    mw_sink *out, *dlq;
    const char *buf;
    size_t len;
    char *dir;
    uint64_t seed;
    int err;
    char what[96];
} job;

static int write_all(int fd, const char *b, size_t n)
{
    while (n) {
        ssize_t w = write(fd, b, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        b += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Create DIR/checkpoint.tmp.XXXXXX: a fresh name, never an existing file
 * or a symlink someone planted (O_EXCL|O_NOFOLLOW), readable by the user
 * only. The fd, or -1 with errno set; *tmp is the path (malloc'd). */
static int create_temp(const char *dir, uint64_t seed, char **tmp)
{
    static const char az[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    uint64_t x = seed | 1;
    for (int tries = 0; tries < 100; tries++) {
        char name[32] = "checkpoint.tmp.";
        for (int i = 0; i < 8; i++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            name[15 + i] = az[x % (sizeof az - 1)];
        }
        name[23] = 0;
        *tmp = cp_path(dir, name);
        if (!*tmp) {
            errno = ENOMEM;
            return -1;
        }
        int fd = open(*tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd >= 0)
            return fd;
        int e = errno;
        free(*tmp);
        *tmp = NULL;
        if (e != EEXIST) {
            errno = e;
            return -1;
        }
    }
    errno = EEXIST;
    return -1;
}

/* fsync DIR (the rename's durability). 0, or with errno set -1 (DIR could
 * not be opened) or -2 (the fsync failed): the message names which. */
static int sync_dir(const char *dir)
{
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return -1;
    if (fsync(dfd) != 0 && errno != EINVAL) {
        int e = errno;
        close(dfd);
        errno = e;
        return -2;
    }
    close(dfd);
    return 0;
}

/* In the thread pool: everything that blocks. */
static void work(uv_work_t *w)
{
    job *j = w->data;
    char *tmp = NULL, *cur = cp_path(j->dir, "checkpoint"), *prev = cp_path(j->dir, "checkpoint.prev");
    int fd = -1;
    j->err = 0;
#define FAIL(what_)                                                                                 \
    do {                                                                                            \
        j->err = errno ? errno : EIO;                                                               \
        snprintf(j->what, sizeof j->what, "%s", what_);                                            \
        goto out;                                                                                   \
    } while (0)
    if (!cur || !prev) {
        errno = ENOMEM;
        FAIL("paths");
    }
    if (sink_sync(j->out) != 0)
        FAIL("fsync of the output");
    if (j->dlq && sink_sync(j->dlq) != 0)
        FAIL("fsync of the dead-letter file");
    fd = create_temp(j->dir, j->seed, &tmp);
    if (fd < 0)
        FAIL("create a checkpoint.tmp file");
    if (write_all(fd, j->buf, j->len) != 0 || fsync(fd) != 0)
        FAIL("write the checkpoint");
    if (close(fd) != 0) {
        fd = -1;
        FAIL("write the checkpoint");
    }
    fd = -1;
    /* Keep the current one as the previous good checkpoint. */
    if (unlink(prev) != 0 && errno != ENOENT)
        FAIL("replace checkpoint.prev");
    if (link(cur, prev) != 0 && errno != ENOENT)
        FAIL("keep checkpoint.prev");
    if (rename(tmp, cur) != 0)
        FAIL("rename the new checkpoint into place");
    free(tmp);
    tmp = NULL;
    int src = sync_dir(j->dir);
    if (src == -1)
        FAIL("open the directory to fsync it");
    if (src != 0)
        FAIL("fsync of the directory");
out:
    if (fd >= 0)
        close(fd);
    if (tmp)
        unlink(tmp); /* never leave a partial one behind */
    free(tmp);
    free(cur);
    free(prev);
#undef FAIL
}

static void after_work(uv_work_t *w, int status)
{
    job *j = w->data;
    cp *c = j->c;
    source_pos pos = c->cur.pos;
    drop_cur(c);
    if (status == 0 && j->err == 0) {
        c->written++;
        c->written_at_ms = uv_now(c->loop);
        source_commit((mw_source *)c->view.src, pos);
    } else {
        fail(c, "checkpoint in %s not written: %s: %s", j->dir, j->what[0] ? j->what : "cancelled",
             strerror(j->err ? j->err : EIO));
    }
    free(j->dir);
    free(j);
    settled(c);
}

static void write_cur(cp *c)
{
    job *j = calloc(1, sizeof *j);
    char *dir = j ? strdup(c->dir) : NULL;
    int rc = UV_ENOMEM;
    if (dir) {
        j->c = c;
        j->out = (mw_sink *)c->view.out;
        j->dlq = (mw_sink *)c->view.dlq;
        j->buf = c->cur.buf;
        j->len = c->cur.len;
        j->dir = dir;
        j->seed = uv_hrtime() ^ ((uint64_t)getpid() << 32) ^ (c->written * 0x9E3779B97F4A7C15ull);
        c->work.data = j;
        c->state = CK_WRITING;
        rc = uv_queue_work(c->loop, &c->work, work, after_work);
        if (rc == 0)
            return;
    }
    free(dir);
    free(j);
    drop_cur(c);
    if (rc == UV_ENOMEM)
        fail(c, "checkpoint in %s not written: out of memory", c->dir);
    else
        fail(c, "checkpoint in %s not written: %s", c->dir, uv_strerror(rc));
    settled(c);
}

/* ---- when ---------------------------------------------------------------------- */

static void on_timer(uv_timer_t *t)
{
    cp *c = t->data;
    /* One at a time: a slow disk delays the next, never the stream. */
    if (c->state == CK_IDLE && !c->has_next && c->host.may_snapshot(c->host.ud))
        take(c, 0);
}

void cp_start(cp *c)
{
    if (!c->dir)
        return;
    uv_timer_init(c->loop, &c->timer);
    c->timer.data = c;
    c->timer_open = 1;
    uv_timer_start(&c->timer, on_timer, c->interval_ms, c->interval_ms);
    uv_unref((uv_handle_t *)&c->timer);
}

void cp_stop(cp *c)
{
    if (c->timer_open) {
        c->timer_open = 0;
        uv_close((uv_handle_t *)&c->timer, NULL);
    }
}

int cp_take_now(cp *c)
{
    if (!c->dir)
        return 0;
    return take(c, 0);
}

void cp_when_idle(cp *c, void (*idle)(void *ud))
{
    if (c->state == CK_IDLE && !c->has_next) {
        idle(c->host.ud);
        return;
    }
    c->idle = idle;
}

void cp_finish(cp *c, void (*idle)(void *ud))
{
    if (!c->dir) {
        idle(c->host.ud);
        return;
    }
    take(c, 1); /* committed after the one in progress, if any */
    cp_when_idle(c, idle);
}

int cp_failed(const cp *c)
{
    return c->failed;
}

void cp_free(cp *c)
{
    free(c->next.buf);
    c->next.buf = NULL;
}

uint64_t cp_last_written_ms(const cp *c)
{
    return c->written_at_ms;
}
