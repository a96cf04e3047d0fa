/*
 * checkpoint.c: exactly-once for file input and file output.
 *
 * A checkpoint is a snapshot taken on the loop thread in one go (so it is
 * consistent): the input position after the last accepted line, every
 * entry of the operator queue in order (raw line, seq, the attempt to
 * continue at, timeout budget used; a record that completed but is held
 * for order or behind a watermark with its result: encoded output and/or
 * dead-letter line; watermarks between them), the watermark generator, and
 * how many bytes the output and the dead-letter file have been handed. It
 * is then committed without blocking the loop and without waiting for the
 * queue to drain:
 *   1. FLUSHING: wait until the outputs have written those bytes;
 *   2. WRITING (thread pool): fsync the outputs, write a new uniquely named
 *      DIR/checkpoint.tmp.XXXXXX (O_EXCL|O_NOFOLLOW, 0600), fsync it, keep
 *      the current checkpoint as DIR/checkpoint.prev (a hard link), rename
 *      the new one into place, fsync DIR.
 * A crash at any moment leaves DIR/checkpoint either the old or the new
 * one, and the output's committed prefix on disk. A checkpoint that cannot
 * be built or written fails the run (never a silent gap). A snapshot asked
 * for while another is being committed (a signal's, the final one) waits
 * and is committed right after it.
 *
 * DIR/lock is flocked for the whole run: a second moonwait on the same
 * DIR is refused, naming the holder's pid.
 *
 * Restore (same command, checkpoint present): refuse another pipeline's
 * checkpoint, an output or dead-letter file shorter than its committed
 * length, an input shorter than the stored offset; truncate the outputs to
 * their committed lengths, re-insert the stored entries (completed ones
 * with their results, not invoked again; the others re-invoked, continuing
 * their attempt count and used budget), and read the input from the
 * stored offset.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
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

/* The identity of a file: its absolute path. realpath when it exists; for
 * a file not there (yet, or any more) its directory's realpath and its
 * name, so a missing output is still recognised as this pipeline's.
 * NULL only when out of memory. Resolved once per run (ckpt_prepare). */
static char *identity(const char *path)
{
    if (!path)
        return strdup("");
    char buf[PATH_MAX];
    if (realpath(path, buf))
        return strdup(buf);
    char *d = strdup(path), *b = strdup(path);
    char *r = NULL;
    if (d && b) {
        char dbuf[PATH_MAX];
        const char *base = basename(b);
        if (realpath(dirname(d), dbuf) && asprintf(&r, "%s/%s", strcmp(dbuf, "/") == 0 ? "" : dbuf, base) < 0)
            r = NULL;
        else if (!r)
            r = strdup(path);
    }
    free(d);
    free(b);
    return r;
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
            if (!nb)
                free(b);
            b = nb;
        }
    }
    int rerr = ferror(f) ? EIO : 0;
    fclose(f);
    if (!b)
        return -ENOMEM;
    if (rerr) {
        free(b);
        return -rerr;
    }
    *buf = b;
    *len = n;
    return 0;
}

static int is_regular(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* An existing FIFO or socket: it cannot be truncated to a committed length. */
static int is_pipe(const char *path)
{
    struct stat st;
    return path && stat(path, &st) == 0 && (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode));
}

/* flock DIR/lock for the whole run and write our pid in it. 0, or -1
 * (message printed): another moonwait holds it, or it cannot be made. */
static int lock_dir(pipeline *p, const char *dir)
{
    char *path = path_in(dir, "lock");
    if (!path) {
        fprintf(stderr, "moonwait: --checkpoint-dir %s: out of memory\n", dir);
        return -1;
    }
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        fprintf(stderr, "moonwait: --checkpoint-dir %s: cannot open its lock file %s: %s\n", dir, path,
                strerror(errno));
        free(path);
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        char pid[32] = "";
        ssize_t n = e == EWOULDBLOCK ? pread(fd, pid, sizeof pid - 1, 0) : -1;
        pid[n > 0 ? n : 0] = 0;
        pid[strcspn(pid, "\n")] = 0;
        if (e == EWOULDBLOCK)
            fprintf(stderr, "moonwait: checkpoint dir %s is in use by another moonwait (pid %s): two runs on one "
                            "checkpoint would tear each other's output. Wait for it to end (or stop it), or use "
                            "another --checkpoint-dir\n", dir, *pid ? pid : "unknown");
        else
            fprintf(stderr, "moonwait: --checkpoint-dir %s: cannot lock %s: %s\n", dir, path, strerror(e));
        close(fd);
        free(path);
        return -1;
    }
    free(path);
    char pid[32];
    int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)n, 0) != n) {
        /* The lock holds; only the pid shown to a second run is missing. */
    }
    p->lock_fd = fd;
    return 0;
}

/* Temp files of checkpoints a crash interrupted (we hold the lock, so no
 * one else is writing one). */
static void remove_stale_temps(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d)))
        if (strncmp(de->d_name, "checkpoint.tmp.", 15) == 0)
            unlinkat(dirfd(d), de->d_name, 0);
    closedir(d);
}

/* A committed file (output or dead letters) must hold at least its
 * committed bytes: a restore truncates to that length and never extends.
 * 0, or -1 with a message. */
static int check_committed(const char *flag, const char *path, uint64_t committed, const char *dir)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        if (errno != ENOENT) {
            fprintf(stderr, "moonwait: %s %s: %s\n", flag, path, strerror(errno));
            return -1;
        }
        if (committed == 0)
            return 0;
        fprintf(stderr, "moonwait: %s %s is gone, but the checkpoint in %s committed %" PRIu64 " bytes of it: "
                        "it was removed or moved after the checkpoint was taken, so a restore cannot be "
                        "exactly-once. Put the file back, or remove %s to start over (the whole input is "
                        "processed again)\n", flag, path, dir, committed, dir);
        return -1;
    }
    if ((uint64_t)st.st_size < committed) {
        fprintf(stderr, "moonwait: %s %s has %" PRIu64 " bytes, shorter than the %" PRIu64 " bytes the "
                        "checkpoint committed: it was truncated or replaced after the checkpoint in %s was "
                        "taken, so a restore cannot be exactly-once. Put the complete file back, or remove %s "
                        "to start over (the whole input is processed again)\n", flag, path,
                (uint64_t)st.st_size, committed, dir, dir);
        return -1;
    }
    return 0;
}

int ckpt_prepare(pipeline *p)
{
    const config *c = p->cfg;
    const char *dir = c->checkpoint_dir;
    if (!dir)
        return 0;
    if (strcmp(c->input, "-") == 0 || strcmp(c->output, "-") == 0 || !is_regular(c->input) ||
        is_pipe(c->output) || is_pipe(c->dead_letter)) {
        fprintf(stderr, "moonwait: --checkpoint-dir needs a regular input file and an output file: stdin, "
                        "stdout, pipes and FIFOs cannot be rewound or truncated, so a restore could not be "
                        "exactly-once (input %s, output %s)\n", c->input, c->output);
        return -1;
    }
    /* Checkpoints hold raw records: private to the user. */
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "moonwait: --checkpoint-dir %s: %s\n", dir, strerror(errno));
        return -1;
    }
    if (lock_dir(p, dir) != 0)
        return -1;
    remove_stale_temps(dir);
    p->id_in = identity(c->input);
    p->id_out = identity(c->output);
    p->id_dl = c->dead_letter ? identity(c->dead_letter) : strdup("");
    if (!p->id_in || !p->id_out || !p->id_dl) {
        fprintf(stderr, "moonwait: --checkpoint-dir %s: out of memory\n", dir);
        return -1;
    }
    char *file = path_in(dir, "checkpoint");
    char *buf = NULL;
    size_t len = 0;
    int rc = file ? read_file(file, &buf, &len) : -ENOMEM;
    if (rc == -ENOENT) {
        free(file);
        return 0; /* a first run */
    }
    if (rc != 0) {
        fprintf(stderr, "moonwait: %s/checkpoint: %s\n", dir, strerror(-rc));
        free(file);
        return -1;
    }
    ckpt *k = calloc(1, sizeof *k);
    char why[256];
    int drc = k ? ckpt_decode(buf, len, k, why, sizeof why) : -1;
    free(buf);
    if (!k) {
        fprintf(stderr, "moonwait: %s: out of memory\n", file);
        free(file);
        return -1;
    }
    if (drc == CKPT_EVERSION) {
        fprintf(stderr, "moonwait: checkpoint %s is refused: %s. Finish that run with the moonwait that "
                        "wrote it, or remove %s to start over\n", file, why, dir);
        free(file);
        free(k);
        return -1;
    }
    if (drc != 0) {
        fprintf(stderr, "moonwait: checkpoint %s is refused: %s. The previous good checkpoint is kept in "
                        "%s/checkpoint.prev: move it to %s to restore from it (or remove %s to start "
                        "over)\n", file, why, dir, file, dir);
        free(file);
        free(k);
        return -1;
    }
    const char *in = p->id_in, *out = p->id_out, *dl = p->id_dl;
    const char *mode = c->mode == OP_ORDERED ? "ordered" : "unordered";
    int same = strcmp(k->input, in) == 0 && strcmp(k->output, out) == 0 && strcmp(k->dead_letter, dl) == 0 &&
               strcmp(k->mode, mode) == 0;
    if (!same) {
        fprintf(stderr, "moonwait: checkpoint %s belongs to another pipeline (input %s, output %s, dead letters "
                        "%s, mode %s); this one is (input %s, output %s, dead letters %s, mode %s). Use another "
                        "--checkpoint-dir\n", file, k->input, k->output, *k->dead_letter ? k->dead_letter : "none",
                k->mode, in, out, *dl ? dl : "none", mode);
        goto refuse;
    }
    /* The files must still hold what the checkpoint says they hold. */
    struct stat st;
    if (stat(c->input, &st) != 0 || (uint64_t)st.st_size < k->input_offset) {
        fprintf(stderr, "moonwait: the input %s has %" PRIu64 " bytes, but the checkpoint read it to byte %" PRIu64
                        " (line %" PRIu64 "): it was truncated or replaced after the checkpoint in %s was taken. "
                        "Put the original input back, or remove %s to start over\n", c->input,
                (uint64_t)st.st_size, k->input_offset, k->input_line, dir, dir);
        goto refuse;
    }
    if (check_committed("--output", c->output, k->output_len, dir) != 0)
        goto refuse;
    if (c->on_error == ON_ERROR_DEAD_LETTER &&
        check_committed("--dead-letter", c->dead_letter, k->dead_letter_len, dir) != 0)
        goto refuse;
    if (k->complete) {
        fprintf(stderr, "moonwait: checkpoint %s says this pipeline already completed: nothing to do "
                        "(remove %s to run it again)\n", file, dir);
        free(file);
        ckpt_free(k);
        free(k);
        return 1;
    }
    size_t held = 0;
    for (size_t i = 0; i < k->n; i++)
        held += k->entries[i].kind == CKPT_RECORD && k->entries[i].done;
    fprintf(stderr, "moonwait: restoring from %s: %zu entries in flight (%zu of them completed and held, "
                    "emitted without calling the script again), input from line %" PRIu64
                    " (byte %" PRIu64 "), output kept to %" PRIu64 " bytes\n",
            file, k->n, held, k->input_line + 1, k->input_offset, k->output_len);
    free(file);
    p->restore = k;
    p->restore_out_len = k->output_len;
    p->restore_dlq_len = k->dead_letter_len;
    /* A zero committed length still must not keep later bytes. */
    return 0;
refuse:
    free(file);
    ckpt_free(k);
    free(k);
    return -1;
}

void ckpt_release(pipeline *p)
{
    if (p->lock_fd > 0) {
        close(p->lock_fd); /* releases the flock */
        p->lock_fd = 0;
    }
    free(p->id_in);
    free(p->id_out);
    free(p->id_dl);
    p->id_in = p->id_out = p->id_dl = NULL;
    free(p->ckpt_next_buf);
    p->ckpt_next_buf = NULL;
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
static void settled(pipeline *p);

/* A checkpoint could not be taken or written: the run fails (exit 1),
 * saying so even when another message came first. */
static void fail_ckpt(pipeline *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail_ckpt(pipeline *p, const char *fmt, ...)
{
    char *msg = NULL;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&msg, fmt, ap) < 0)
        msg = NULL;
    va_end(ap);
    p->ckpt_failed = 1;
    if (p->exit_code != 0)
        fprintf(stderr, "moonwait: %s\n", msg ? msg : "checkpoint not written");
    pipeline_fail(p, 1, "%s", msg ? msg : "checkpoint not written");
    free(msg);
}

/* Start committing buf (FLUSHING, then WRITING). */
static void begin(pipeline *p, char *buf, size_t len, uint64_t out_len, uint64_t dlq_len, int final)
{
    p->ckpt_out_len = out_len;
    p->ckpt_dlq_len = dlq_len;
    p->ckpt_buf = buf;
    p->ckpt_len = len;
    p->ckpt_final = final;
    p->ckpt_state = CK_FLUSHING;
    ckpt_output_progress(p);
}

/* Capture the state now. 0, or -1 (out of memory: the run is failed). The
 * strings are borrowed from the tasks and entries: they do not change
 * while we encode, which is done before returning. */
static int snapshot(pipeline *p, int complete)
{
    const config *c = p->cfg;
    ckpt k;
    memset(&k, 0, sizeof k);
    k.borrowed = 1;
    k.input = p->id_in;
    k.output = p->id_out;
    k.dead_letter = p->id_dl;
    k.mode = (char *)(c->mode == OP_ORDERED ? "ordered" : "unordered");
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
    int oom = 0;
    for (op_entry *e = p->op.head; e && !oom; e = e->next) {
        ckpt_entry ce;
        memset(&ce, 0, sizeof ce);
        if (e->kind == OP_KIND_WATERMARK) {
            ce.kind = CKPT_WATERMARK;
            ce.watermark = e->watermark;
            oom = ckpt_add(&k, &ce) != 0;
            continue;
        }
        task *t = e->udata;
        if (!t) /* a malformed line failing the run: it is re-read */
            continue;
        ce.kind = CKPT_RECORD;
        ce.seq = e->seq;
        ce.line = e->line;
        if (e->state == OP_DONE) {
            /* Completed, held for order or behind a watermark: its result
             * is stored, so a restore emits it without calling the script
             * again (a second call could give another answer, or time out
             * on the budget it spent waiting here). */
            ce.done = 1;
            ce.attempt = e->attempt;
            ce.timed_out = e->timed_out;
            ce.out = e->out;
            ce.out_len = e->out ? e->out_len : 0;
            ce.dlq = e->dlq;
            ce.dlq_len = e->dlq ? e->dlq_len : 0;
        } else {
            /* A record in back-off continues at its next attempt; one
             * running (or failed, with --on-error fail) repeats its current
             * one. Its budget used is the time it ran: since it was
             * accepted, plus what it had used before a restore. */
            ce.attempt = e->attempt + (e->in_backoff ? 1 : 0);
            if (e->deadline != OP_NO_DEADLINE && c->timeout_ms) {
                uint64_t left = e->deadline > now ? e->deadline - now : 0;
                ce.budget_used_ms = left >= c->timeout_ms ? 0 : c->timeout_ms - left;
            }
        }
        ce.malformed = t->malformed;
        ce.raw = t->line;
        ce.raw_len = t->len;
        ce.last_error = t->last_error;
        oom = ckpt_add(&k, &ce) != 0;
    }
    char *buf = NULL;
    size_t len = 0;
    if (oom || ckpt_encode(&k, &buf, &len) != 0) {
        k.input = k.output = k.dead_letter = k.mode = NULL;
        ckpt_free(&k);
        fail_ckpt(p, "checkpoint in %s not written: out of memory building the snapshot (%zu entries)",
                  c->checkpoint_dir, op_size(&p->op));
        return -1;
    }
    uint64_t out_len = k.output_len, dlq_len = k.dead_letter_len;
    k.input = k.output = k.dead_letter = k.mode = NULL;
    ckpt_free(&k);
    if (p->ckpt_state == CK_IDLE) {
        begin(p, buf, len, out_len, dlq_len, complete);
        return 0;
    }
    /* One is being committed: this one follows it (a newer one replaces
     * an older one still waiting). */
    free(p->ckpt_next_buf);
    p->ckpt_has_next = 1;
    p->ckpt_next_buf = buf;
    p->ckpt_next_len = len;
    p->ckpt_next_out_len = out_len;
    p->ckpt_next_dlq_len = dlq_len;
    p->ckpt_next_final = complete;
    return 0;
}

/* The checkpoint in progress ended (written or not): start the one that
 * waits, or tell whoever waits for quiet. */
static void settled(pipeline *p)
{
    if (p->ckpt_has_next) {
        p->ckpt_has_next = 0;
        char *buf = p->ckpt_next_buf;
        p->ckpt_next_buf = NULL;
        begin(p, buf, p->ckpt_next_len, p->ckpt_next_out_len, p->ckpt_next_dlq_len, p->ckpt_next_final);
        return;
    }
    if (p->ckpt_state == CK_IDLE && p->ckpt_done) {
        void (*done)(pipeline *) = p->ckpt_done;
        p->ckpt_done = NULL;
        done(p);
    }
}

void ckpt_output_progress(pipeline *p)
{
    if (p->ckpt_state != CK_FLUSHING)
        return;
    if (p->out.error || (p->dlq_open && p->dlq.error)) {
        /* The run already fails on the write error; this prefix cannot be
         * committed, and the previous checkpoint stays valid. */
        p->ckpt_state = CK_IDLE;
        free(p->ckpt_buf);
        p->ckpt_buf = NULL;
        settled(p);
        return;
    }
    /* The committed prefix must be written before it is fsynced. The
     * output's prepare handle starts writes every loop turn. */
    if (p->out.base + p->out.written < p->ckpt_out_len)
        return;
    if (p->dlq_open && p->dlq.base + p->dlq.written < p->ckpt_dlq_len)
        return;
    ckpt_write(p);
}

typedef struct job {
    pipeline *p;
    int out_fd, dlq_fd;
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
        *tmp = path_in(dir, name);
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

/* In the thread pool: everything that blocks. */
static void work(uv_work_t *w)
{
    job *j = w->data;
    pipeline *p = j->p;
    char *tmp = NULL, *cur = path_in(j->dir, "checkpoint"), *prev = path_in(j->dir, "checkpoint.prev");
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
    if (j->out_fd >= 0 && fsync(j->out_fd) != 0 && errno != EINVAL)
        FAIL("fsync of the output");
    if (j->dlq_fd >= 0 && fsync(j->dlq_fd) != 0 && errno != EINVAL)
        FAIL("fsync of the dead-letter file");
    fd = create_temp(j->dir, j->seed, &tmp);
    if (fd < 0)
        FAIL("create a checkpoint.tmp file");
    if (write_all(fd, p->ckpt_buf, p->ckpt_len) != 0 || fsync(fd) != 0)
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
    int dfd = open(j->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        FAIL("open the directory to fsync it");
    if (fsync(dfd) != 0 && errno != EINVAL) {
        int e = errno;
        close(dfd);
        errno = e;
        FAIL("fsync of the directory");
    }
    close(dfd);
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
    pipeline *p = j->p;
    free(p->ckpt_buf);
    p->ckpt_buf = NULL;
    p->ckpt_state = CK_IDLE;
    if (status == 0 && j->err == 0)
        p->checkpoints++;
    else
        fail_ckpt(p, "checkpoint in %s not written: %s: %s", j->dir, j->what[0] ? j->what : "cancelled",
                  strerror(j->err ? j->err : EIO));
    free(j->dir);
    free(j);
    settled(p);
}

static void ckpt_write(pipeline *p)
{
    job *j = calloc(1, sizeof *j);
    char *dir = j ? strdup(p->cfg->checkpoint_dir) : NULL;
    if (!dir) {
        free(j);
        free(p->ckpt_buf);
        p->ckpt_buf = NULL;
        p->ckpt_state = CK_IDLE;
        fail_ckpt(p, "checkpoint in %s not written: out of memory", p->cfg->checkpoint_dir);
        settled(p);
        return;
    }
    j->p = p;
    j->out_fd = output_fd(&p->out);
    j->dlq_fd = p->dlq_open ? output_fd(&p->dlq) : -1;
    j->dir = dir;
    j->seed = uv_hrtime() ^ ((uint64_t)getpid() << 32) ^ (p->checkpoints * 0x9E3779B97F4A7C15ull);
    p->ckpt_work.data = j;
    p->ckpt_state = CK_WRITING;
    int rc = uv_queue_work(p->loop, &p->ckpt_work, work, after_work);
    if (rc != 0) {
        free(j->dir);
        free(j);
        free(p->ckpt_buf);
        p->ckpt_buf = NULL;
        p->ckpt_state = CK_IDLE;
        fail_ckpt(p, "checkpoint in %s not written: %s", p->cfg->checkpoint_dir, uv_strerror(rc));
        settled(p);
    }
}

static void on_ckpt_timer(uv_timer_t *t)
{
    pipeline *p = t->data;
    /* One at a time: a slow disk delays the next, never the stream. */
    if (p->ckpt_state == CK_IDLE && !p->ckpt_has_next && p->phase == RUNNING && !p->stop_reading && !p->restore)
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

int ckpt_take_now(pipeline *p)
{
    if (!p->cfg->checkpoint_dir)
        return 0;
    return snapshot(p, 0);
}

void ckpt_when_idle(pipeline *p, void (*done)(pipeline *p))
{
    if (p->ckpt_state == CK_IDLE && !p->ckpt_has_next) {
        done(p);
        return;
    }
    p->ckpt_done = done;
}

void ckpt_finish(pipeline *p, void (*done)(pipeline *p))
{
    if (!p->cfg->checkpoint_dir) {
        done(p);
        return;
    }
    snapshot(p, 1); /* committed after the one in progress, if any */
    ckpt_when_idle(p, done);
}
