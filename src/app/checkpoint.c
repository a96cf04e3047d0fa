/*
 * checkpoint.c: exactly-once for file input and file output.
 *
 * A checkpoint is a snapshot taken on the loop thread in one go (so it is
 * consistent): the input position after the last accepted line, every
 * entry of the operator queue in order (raw line, seq, the attempt to
 * continue at, timeout budget used; watermarks between them), the
 * watermark generator, and how many bytes the output and the dead-letter
 * file have been handed. It is then committed without blocking the loop
 * and without waiting for the queue to drain:
 *   1. FLUSHING: wait until the outputs have written those bytes;
 *   2. WRITING (thread pool): fsync the outputs, write DIR/checkpoint.tmp,
 *      fsync it, keep the current checkpoint as DIR/checkpoint.prev (a hard
 *      link), rename the new one into place, fsync DIR.
 * A crash at any moment leaves DIR/checkpoint either the old or the new
 * one, and the output's committed prefix on disk.
 *
 * Restore (same command, checkpoint present): refuse another pipeline's
 * checkpoint, truncate the outputs to their committed lengths, re-insert
 * the stored entries and re-invoke their records (continuing their attempt
 * count and used budget), and read the input from the stored offset.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../store/ckpt.h"
#include "pipeline_int.h"

static char *path_in(const char *dir, const char *name)
{
    char *p = NULL;
    if (asprintf(&p, "%s/%s", dir, name) < 0)
        p = NULL;
    return p;
}

/* The identity of a file: its absolute path (realpath when it exists). */
static char *identity(const char *path)
{
    if (!path)
        return strdup("");
    char buf[PATH_MAX];
    if (realpath(path, buf))
        return strdup(buf);
    return strdup(path);
}

static int read_file(const char *path, char **buf, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -errno;
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap);
    size_t r;
    while (b && (r = fread(b + n, 1, cap - n, f)) > 0) {
        n += r;
        if (n == cap) {
            cap *= 2;
            char *nb = realloc(b, cap);
            if (!nb) {
                free(b);
                b = NULL;
            }
            b = nb;
        }
    }
    fclose(f);
    if (!b)
        return -ENOMEM;
    *buf = b;
    *len = n;
    return 0;
}

static int is_regular(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

int ckpt_prepare(pipeline *p)
{
    const config *c = p->cfg;
    const char *dir = c->checkpoint_dir;
    if (!dir)
        return 0;
    if (strcmp(c->input, "-") == 0 || strcmp(c->output, "-") == 0 || !is_regular(c->input)) {
        fprintf(stderr, "moonwait: --checkpoint-dir needs a regular input file and an output file: stdin, "
                        "stdout, pipes and FIFOs cannot be rewound or truncated, so a restore could not be "
                        "exactly-once (input %s, output %s)\n", c->input, c->output);
        return -1;
    }
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "moonwait: --checkpoint-dir %s: %s\n", dir, strerror(errno));
        return -1;
    }
    char *file = path_in(dir, "checkpoint");
    char *buf = NULL;
    size_t len = 0;
    int rc = read_file(file, &buf, &len);
    if (rc == -ENOENT) {
        free(file);
        return 0; /* a first run */
    }
    if (rc != 0) {
        fprintf(stderr, "moonwait: %s: %s\n", file, strerror(-rc));
        free(file);
        return -1;
    }
    ckpt *k = calloc(1, sizeof *k);
    char why[256];
    if (ckpt_decode(buf, len, k, why, sizeof why) != 0) {
        fprintf(stderr, "moonwait: checkpoint %s is refused: %s. The previous good checkpoint is kept in "
                        "%s/checkpoint.prev: move it to %s to restore from it (or remove %s to start "
                        "over)\n", file, why, dir, file, dir);
        free(buf);
        free(file);
        free(k);
        return -1;
    }
    free(buf);
    char *in = identity(c->input), *out = identity(c->output), *dl = c->dead_letter ? identity(c->dead_letter) : strdup("");
    const char *mode = c->mode == OP_ORDERED ? "ordered" : "unordered";
    int same = strcmp(k->input, in) == 0 && strcmp(k->output, out) == 0 && strcmp(k->dead_letter, dl) == 0 &&
               strcmp(k->mode, mode) == 0;
    if (!same) {
        fprintf(stderr, "moonwait: checkpoint %s belongs to another pipeline (input %s, output %s, dead letters "
                        "%s, mode %s); this one is (input %s, output %s, dead letters %s, mode %s). Use another "
                        "--checkpoint-dir\n", file, k->input, k->output, *k->dead_letter ? k->dead_letter : "none",
                k->mode, in, out, *dl ? dl : "none", mode);
        free(in), free(out), free(dl), free(file);
        ckpt_free(k);
        free(k);
        return -1;
    }
    free(in), free(out), free(dl);
    if (k->complete) {
        fprintf(stderr, "moonwait: checkpoint %s says this pipeline already completed: nothing to do "
                        "(remove %s to run it again)\n", file, dir);
        free(file);
        ckpt_free(k);
        free(k);
        return 1;
    }
    fprintf(stderr, "moonwait: restoring from %s: %zu entries in flight, input from line %" PRIu64
                    " (byte %" PRIu64 "), output kept to %" PRIu64 " bytes\n",
            file, k->n, k->input_line + 1, k->input_offset, k->output_len);
    free(file);
    p->restore = k;
    p->restore_out_len = k->output_len;
    p->restore_dlq_len = k->dead_letter_len;
    /* A zero committed length still must not keep later bytes. */
    return 0;
}

void ckpt_apply_input(pipeline *p)
{
    ckpt *k = p->restore;
    if (!k)
        return;
    p->in.file_off = (int64_t)k->input_offset;
    p->in.consumed = k->input_offset;
    p->in.lineno = k->input_line;
    if (k->has_wm_current)
        p->wm.current = k->wm_current;
    if (k->has_wm_max)
        p->wm.max_ts = k->wm_max;
    if (k->has_pending_wm) {
        p->have_pending_wm = 1;
        p->pending_wm = k->pending_wm;
    }
}

/* ---- taking and writing ------------------------------------------------------- */

static void ckpt_write(pipeline *p);

static void snapshot(pipeline *p, int complete)
{
    const config *c = p->cfg;
    ckpt k;
    memset(&k, 0, sizeof k);
    k.input = identity(c->input);
    k.output = identity(c->output);
    k.dead_letter = c->dead_letter ? identity(c->dead_letter) : strdup("");
    k.mode = strdup(c->mode == OP_ORDERED ? "ordered" : "unordered");
    k.complete = complete;
    k.input_offset = p->in.consumed;
    k.input_line = p->in.lineno;
    k.next_seq = p->op.next_seq;
    k.has_wm_current = p->wm.current != INT64_MIN;
    k.wm_current = p->wm.current;
    k.has_wm_max = p->wm.max_ts != INT64_MIN;
    k.wm_max = p->wm.max_ts;
    k.has_pending_wm = p->have_pending_wm;
    k.pending_wm = p->pending_wm;
    k.output_len = p->out.base + p->out.accepted;
    k.dead_letter_len = p->dlq_open ? p->dlq.base + p->dlq.accepted : 0;
    uint64_t now = uv_now(p->loop);
    for (op_entry *e = p->op.head; e; e = e->next) {
        ckpt_entry ce;
        memset(&ce, 0, sizeof ce);
        if (e->kind == OP_KIND_WATERMARK) {
            ce.kind = CKPT_WATERMARK;
            ce.watermark = e->watermark;
            ckpt_add(&k, &ce);
            continue;
        }
        task *t = e->udata;
        if (!t) /* a malformed line failing the run: it is re-read */
            continue;
        ce.kind = CKPT_RECORD;
        ce.seq = e->seq;
        ce.line = e->line;
        /* A record in back-off continues at its next attempt; one running
         * (or done but not yet emitted) repeats its current one. */
        ce.attempt = e->attempt + (e->in_backoff ? 1 : 0);
        if (e->deadline != OP_NO_DEADLINE && c->timeout_ms) {
            uint64_t left = e->deadline > now ? e->deadline - now : 0;
            ce.budget_used_ms = c->timeout_ms > left ? c->timeout_ms - left : 0;
        }
        ce.malformed = t->malformed;
        ce.raw = t->line;
        ce.raw_len = t->len;
        ce.last_error = t->last_error;
        ckpt_add(&k, &ce);
    }
    char *buf = NULL;
    size_t len = 0;
    if (ckpt_encode(&k, &buf, &len) != 0) {
        fprintf(stderr, "moonwait: checkpoint skipped: out of memory\n");
        ckpt_free(&k);
        return;
    }
    p->ckpt_out_len = k.output_len;
    p->ckpt_dlq_len = k.dead_letter_len;
    ckpt_free(&k);
    p->ckpt_buf = buf;
    p->ckpt_len = len;
    p->ckpt_final = complete;
    p->ckpt_state = CK_FLUSHING;
    ckpt_output_progress(p);
}

void ckpt_output_progress(pipeline *p)
{
    if (p->ckpt_state != CK_FLUSHING)
        return;
    /* The committed prefix must be written before it is fsynced. The
     * output's prepare handle starts writes every loop turn. */
    if (p->out.base + p->out.written < p->ckpt_out_len)
        return;
    if (p->dlq_open && p->dlq.base + p->dlq.written < p->ckpt_dlq_len)
        return;
    if (p->out.error || (p->dlq_open && p->dlq.error)) {
        p->ckpt_state = CK_IDLE;
        free(p->ckpt_buf);
        p->ckpt_buf = NULL;
        return;
    }
    ckpt_write(p);
}

typedef struct job {
    pipeline *p;
    int out_fd, dlq_fd;
    char *dir;
    int err;
    char what[64];
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

/* In the thread pool: everything that blocks. */
static void work(uv_work_t *w)
{
    job *j = w->data;
    pipeline *p = j->p;
    char *tmp = path_in(j->dir, "checkpoint.tmp"), *cur = path_in(j->dir, "checkpoint"),
         *prev = path_in(j->dir, "checkpoint.prev");
    j->err = 0;
#define FAIL(what_)                                                                                 \
    do {                                                                                            \
        j->err = errno;                                                                             \
        snprintf(j->what, sizeof j->what, "%s", what_);                                            \
        goto out;                                                                                   \
    } while (0)
    if (j->out_fd >= 0 && fsync(j->out_fd) != 0 && errno != EINVAL)
        FAIL("fsync of the output");
    if (j->dlq_fd >= 0 && fsync(j->dlq_fd) != 0 && errno != EINVAL)
        FAIL("fsync of the dead-letter file");
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        FAIL("create checkpoint.tmp");
    if (write_all(fd, p->ckpt_buf, p->ckpt_len) != 0 || fsync(fd) != 0) {
        close(fd);
        FAIL("write checkpoint.tmp");
    }
    close(fd);
    /* Keep the current one as the previous good checkpoint. */
    unlink(prev);
    if (link(cur, prev) != 0 && errno != ENOENT)
        FAIL("keep checkpoint.prev");
    if (rename(tmp, cur) != 0)
        FAIL("rename checkpoint.tmp");
    int dfd = open(j->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
out:
    free(tmp);
    free(cur);
    free(prev);
#undef FAIL
}

static void after_work(uv_work_t *w, int status)
{
    job *j = w->data;
    pipeline *p = j->p;
    free(p->ckpt_buf);
    p->ckpt_buf = NULL;
    p->ckpt_state = CK_IDLE;
    if (status == 0 && j->err == 0)
        p->checkpoints++;
    else
        fprintf(stderr, "moonwait: checkpoint in %s not written: %s: %s\n", j->dir, j->what,
                strerror(j->err ? j->err : EIO));
    int final = p->ckpt_final;
    free(j->dir);
    free(j);
    if (final && p->ckpt_done) {
        void (*done)(pipeline *) = p->ckpt_done;
        p->ckpt_done = NULL;
        done(p);
    }
}

static void ckpt_write(pipeline *p)
{
    job *j = calloc(1, sizeof *j);
    j->p = p;
    j->out_fd = output_fd(&p->out);
    j->dlq_fd = p->dlq_open ? output_fd(&p->dlq) : -1;
    j->dir = strdup(p->cfg->checkpoint_dir);
    p->ckpt_work.data = j;
    p->ckpt_state = CK_WRITING;
    if (uv_queue_work(p->loop, &p->ckpt_work, work, after_work) != 0) {
        free(j->dir);
        free(j);
        free(p->ckpt_buf);
        p->ckpt_buf = NULL;
        p->ckpt_state = CK_IDLE;
    }
}

static void on_ckpt_timer(uv_timer_t *t)
{
    pipeline *p = t->data;
    /* One at a time: a slow disk delays the next, never the stream. */
    if (p->ckpt_state == CK_IDLE && p->phase == RUNNING && !p->stop_reading)
        snapshot(p, 0);
}

void ckpt_start(pipeline *p)
{
    if (!p->cfg->checkpoint_dir)
        return;
    uv_timer_init(p->loop, &p->ckpt_timer);
    p->ckpt_timer.data = p;
    p->ckpt_timer_open = 1;
    uv_timer_start(&p->ckpt_timer, on_ckpt_timer, p->cfg->checkpoint_interval_ms, p->cfg->checkpoint_interval_ms);
    uv_unref((uv_handle_t *)&p->ckpt_timer);
}

void ckpt_stop(pipeline *p)
{
    if (p->ckpt_timer_open) {
        p->ckpt_timer_open = 0;
        uv_close((uv_handle_t *)&p->ckpt_timer, NULL);
    }
}

static void finish_when_idle(pipeline *p);

static void retry_finish(uv_timer_t *t)
{
    finish_when_idle(t->data);
}

static void finish_when_idle(pipeline *p)
{
    if (p->ckpt_state != CK_IDLE) {
        /* The periodic one in progress completes first (a few ms). */
        uv_timer_stop(&p->ckpt_timer);
        uv_timer_start(&p->ckpt_timer, retry_finish, 5, 0);
        uv_ref((uv_handle_t *)&p->ckpt_timer);
        return;
    }
    snapshot(p, 1);
}

void ckpt_finish(pipeline *p, void (*done)(pipeline *p))
{
    if (!p->cfg->checkpoint_dir) {
        done(p);
        return;
    }
    p->ckpt_done = done;
    finish_when_idle(p);
}
