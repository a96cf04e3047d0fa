/*
 * restore.c: a checkpoint directory's lock, validation and restore
 * (contract in restore.h).
 */
#define _GNU_SOURCE
#include "restore.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../util/log.h"
#include "checkpoint.h"

/* The identity of a file: its absolute path. realpath when it exists; for
 * a file not there (yet, or any more) its directory's realpath and its
 * name, so a missing output is still recognised as this pipeline's.
 * NULL only when out of memory. Resolved once per run. */
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
static int lock_dir(restore *r, const char *dir)
{
    char *path = cp_path(dir, "lock");
    if (!path) {
        mw_log(MW_LOG_ERROR, "--checkpoint-dir %s: out of memory", dir);
        return -1;
    }
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        mw_log(MW_LOG_ERROR, "--checkpoint-dir %s: cannot open its lock file %s: %s", dir, path,
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
            mw_log(MW_LOG_ERROR, "checkpoint dir %s is in use by another moonwait (pid %s): two runs on one "
                            "checkpoint would tear each other's output. Wait for it to end (or stop it), or use "
                            "another --checkpoint-dir", dir, *pid ? pid : "unknown");
        else
            mw_log(MW_LOG_ERROR, "--checkpoint-dir %s: cannot lock %s: %s", dir, path, strerror(e));
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
    r->lock_fd = fd;
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
            mw_log(MW_LOG_ERROR, "%s %s: %s", flag, path, strerror(errno));
            return -1;
        }
        if (committed == 0)
            return 0;
        mw_log(MW_LOG_ERROR, "%s %s is gone, but the checkpoint in %s committed %" PRIu64 " bytes of it: "
                        "it was removed or moved after the checkpoint was taken, so a restore cannot be "
                        "exactly-once. Put the file back, or remove %s to start over (the whole input is "
                        "processed again)", flag, path, dir, committed, dir);
        return -1;
    }
    if ((uint64_t)st.st_size < committed) {
        mw_log(MW_LOG_ERROR, "%s %s has %" PRIu64 " bytes, shorter than the %" PRIu64 " bytes the "
                        "checkpoint committed: it was truncated or replaced after the checkpoint in %s was "
                        "taken, so a restore cannot be exactly-once. Put the complete file back, or remove %s "
                        "to start over (the whole input is processed again)", flag, path,
                (uint64_t)st.st_size, committed, dir, dir);
        return -1;
    }
    return 0;
}

/* Lock the directory and resolve the identity. 0, or -1 (printed). */
static int open_dir(restore *r, const config *c, const char *dir)
{
    if (strcmp(c->input, "-") == 0 || strcmp(c->output, "-") == 0 || !is_regular(c->input) ||
        is_pipe(c->output) || is_pipe(c->dead_letter)) {
        mw_log(MW_LOG_ERROR, "--checkpoint-dir needs a regular input file and an output file: stdin, "
                        "stdout, pipes and FIFOs cannot be rewound or truncated, so a restore could not be "
                        "exactly-once (input %s, output %s)", c->input, c->output);
        return -1;
    }
    /* Checkpoints hold raw records: private to the user. */
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        mw_log(MW_LOG_ERROR, "--checkpoint-dir %s: %s", dir, strerror(errno));
        return -1;
    }
    if (lock_dir(r, dir) != 0)
        return -1;
    remove_stale_temps(dir);
    r->id_in = identity(c->input);
    r->id_out = identity(c->output);
    r->id_dl = c->dead_letter ? identity(c->dead_letter) : strdup("");
    if (!r->id_in || !r->id_out || !r->id_dl) {
        mw_log(MW_LOG_ERROR, "--checkpoint-dir %s: out of memory", dir);
        return -1;
    }
    return 0;
}

/* Read and decode `file`. 0 with *out (NULL: there is none, a first run),
 * or -1 (printed). */
static int read_checkpoint(const char *dir, const char *file, ckpt **out)
{
    *out = NULL;
    char *buf = NULL;
    size_t len = 0;
    int rc = read_file(file, &buf, &len);
    if (rc == -ENOENT)
        return 0;
    if (rc != 0) {
        mw_log(MW_LOG_ERROR, "%s/checkpoint: %s", dir, strerror(-rc));
        return -1;
    }
    ckpt *k = calloc(1, sizeof *k);
    char why[256];
    int drc = k ? ckpt_decode(buf, len, k, why, sizeof why) : -1;
    free(buf);
    if (!k) {
        mw_log(MW_LOG_ERROR, "%s: out of memory", file);
        return -1;
    }
    if (drc == CKPT_EVERSION)
        mw_log(MW_LOG_ERROR, "checkpoint %s is refused: %s. Finish that run with the moonwait that "
                        "wrote it, or remove %s to start over", file, why, dir);
    else if (drc != 0)
        mw_log(MW_LOG_ERROR, "checkpoint %s is refused: %s. The previous good checkpoint is kept in "
                        "%s/checkpoint.prev: move it to %s to restore from it (or remove %s to start "
                        "over)", file, why, dir, file, dir);
    if (drc != 0) {
        free(k);
        return -1;
    }
    *out = k;
    return 0;
}

/* The checkpoint is this pipeline's and its files still hold what it
 * says. 0, or -1 (printed). */
static int validate(const restore *r, const ckpt *k, const char *file)
{
    const config *c = r->cfg;
    const char *dir = c->checkpoint_dir;
    const char *in = r->id_in, *out = r->id_out, *dl = r->id_dl;
    char mode[320];
    snap_mode_name(c->mode, c->key, mode, sizeof mode);
    if (strcmp(k->input, in) != 0 || strcmp(k->output, out) != 0 || strcmp(k->dead_letter, dl) != 0 ||
        strcmp(k->mode, mode) != 0) {
        mw_log(MW_LOG_ERROR, "checkpoint %s belongs to another pipeline (input %s, output %s, dead letters "
                        "%s, mode %s); this one is (input %s, output %s, dead letters %s, mode %s). Use another "
                        "--checkpoint-dir", file, k->input, k->output, *k->dead_letter ? k->dead_letter : "none",
                k->mode, in, out, *dl ? dl : "none", mode);
        return -1;
    }
    struct stat st;
    if (stat(c->input, &st) != 0 || (uint64_t)st.st_size < k->input_offset) {
        mw_log(MW_LOG_ERROR, "the input %s has %" PRIu64 " bytes, but the checkpoint read it to byte %" PRIu64
                        " (line %" PRIu64 "): it was truncated or replaced after the checkpoint in %s was taken. "
                        "Put the original input back, or remove %s to start over", c->input,
                (uint64_t)st.st_size, k->input_offset, k->input_line, dir, dir);
        return -1;
    }
    if (check_committed("--output", c->output, k->output_len, dir) != 0)
        return -1;
    if (c->on_error == ON_ERROR_DEAD_LETTER &&
        check_committed("--dead-letter", c->dead_letter, k->dead_letter_len, dir) != 0)
        return -1;
    return 0;
}

static void free_ckpt(ckpt *k)
{
    ckpt_free(k);
    free(k);
}

int restore_prepare(restore *r, const config *c)
{
    memset(r, 0, sizeof *r);
    r->cfg = c;
    r->lock_fd = -1;
    const char *dir = c->checkpoint_dir;
    if (!dir)
        return 0;
    if (open_dir(r, c, dir) != 0)
        return -1;
    char *file = cp_path(dir, "checkpoint");
    ckpt *k = NULL;
    if (!file) {
        mw_log(MW_LOG_ERROR, "%s/checkpoint: %s", dir, strerror(ENOMEM));
        return -1;
    }
    int rc = read_checkpoint(dir, file, &k);
    if (rc == 0 && k && validate(r, k, file) != 0)
        rc = -1;
    if (rc == 0 && k && k->complete) {
        mw_log(MW_LOG_INFO, "checkpoint %s says this pipeline already completed: nothing to do "
                        "(remove %s to run it again)", file, dir);
        rc = 1;
    }
    if (rc == 0 && k) {
        size_t held = 0;
        for (size_t i = 0; i < k->n; i++)
            held += k->entries[i].kind == CKPT_RECORD && k->entries[i].done;
        mw_log(MW_LOG_INFO, "restoring from %s: %zu entries in flight (%zu of them completed and held, "
                        "emitted without calling the script again), input from line %" PRIu64
                        " (byte %" PRIu64 "), output kept to %" PRIu64 " bytes",
                file, k->n, held, k->input_line + 1, k->input_offset, k->output_len);
        r->k = k;
        k = NULL;
    }
    if (k)
        free_ckpt(k);
    free(file);
    return rc;
}

void restore_identity(const restore *r, const char **in, const char **out, const char **dl)
{
    *in = r->id_in;
    *out = r->id_out;
    *dl = r->id_dl;
}

int restore_pending(const restore *r)
{
    return r->k != NULL;
}

void restore_keep(const restore *r, uint64_t *out, uint64_t *dlq)
{
    /* A zero committed length still must not keep later bytes. */
    *out = r->k ? r->k->output_len : 0;
    *dlq = r->k ? r->k->dead_letter_len : 0;
}

int restore_apply(restore *r, mw_source *src, evtime *ev)
{
    const ckpt *k = r->k;
    if (!k)
        return 0;
    evtime_load(ev, k);
    return source_seek(src, (source_pos){ k->input_offset, k->input_line });
}

int restore_inject(restore *r, const task_env *env, const int *aborting, char *msg, size_t msglen)
{
    ckpt *k = r->k;
    r->k = NULL;
    int rc = 0;
    for (size_t i = 0; i < k->n && rc == 0 && !*aborting && !op_failed(env->op); i++) {
        ckpt_entry *ce = &k->entries[i];
        if (ce->kind == CKPT_WATERMARK) {
            if (op_restore_watermark(env->op, ce->watermark) != 0) {
                snprintf(msg, msglen, "restoring from the checkpoint: out of memory");
                rc = -1;
            }
            continue;
        }
        rc = task_restore(env, ce, msg, msglen);
    }
    op_restore_done(env->op, k->next_seq);
    free_ckpt(k);
    return rc;
}

void restore_release(restore *r)
{
    if (r->lock_fd >= 0) {
        close(r->lock_fd); /* releases the flock */
        r->lock_fd = -1;
    }
    free(r->id_in);
    free(r->id_out);
    free(r->id_dl);
    r->id_in = r->id_out = r->id_dl = NULL;
    if (r->k) {
        free_ckpt(r->k);
        r->k = NULL;
    }
}
