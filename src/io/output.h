/*
 * output.h: the line sink. Buffers emitted bytes and writes them to a file
 * (uv_fs_write in the thread pool), a pipe or a tty (uv_write), without
 * blocking the loop.
 *
 * Two buffers: `fill` collects what the operator emits; when no write is
 * in flight a uv_prepare handle (run just before the loop would block)
 * swaps it with `busy` and writes it, so everything emitted in one loop
 * turn goes out in one write. The pipeline stops reading input while
 * output_backlog() is above its high-water mark, so a slow consumer
 * bounds memory instead of growing it.
 */
#ifndef MW_OUTPUT_H
#define MW_OUTPUT_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "stream.h"

typedef struct output output;

#include "../util/buf.h"

typedef mw_buf obuf;

struct output {
    uv_loop_t *loop;
    char *name;          /* path as given ("-" for stdout) */
    int fd;              /* owned unless stdout */
    int is_file;
    io_stream stream;    /* streams only */
    int stream_open;
    int was_stream;      /* the fd belongs to the stream handle (closed with it) */
    int prepare_open;
    uv_prepare_t prepare; /* starts writes */
    uv_fs_t fs_req;
    uv_write_t wr_req;
    obuf fill, busy;     /* both owned */
    size_t busy_off;     /* bytes of busy already written */
    size_t chunk;        /* the write in flight covers busy[busy_off..+chunk) */
    int writing;
    int error;           /* first write error (uv code), sticky */
    uint64_t written;    /* bytes written so far (from base) */
    uint64_t base;       /* file length kept at open (restore), 0 otherwise */
    uint64_t accepted;   /* bytes handed to output_write so far */
    void (*on_error)(void *ud);   /* first write error */
    void (*on_written)(void *ud); /* a write finished: the backlog shrank */
    void (*on_drained)(void *ud); /* output_drain: everything written */
    void *ud;
    int draining;
    int handles_open;
    void (*on_closed)(output *o);
};

/* Open `path` ("-" = stdout), truncating a file to `keep` bytes (0: empty;
 * a restore keeps the committed prefix and appends after it). Returns 0 or
 * a negative uv error with a message in *err (malloc'd). */
int output_open(output *o, uv_loop_t *loop, const char *path, uint64_t keep, void (*on_error)(void *ud),
                void *ud, char **err);

/* The fd (for fsync by a checkpoint), or -1. */
int output_fd(const output *o);

/* Append bytes (copied). */
void output_write(output *o, const char *data, size_t len);

/* Append a malloc'd buffer and take it: a large one is adopted when
 * nothing else waits (no copy), otherwise copied and freed. Returns 0. */
int output_write_owned(output *o, char *data, size_t len);

/* Be told whenever a write finishes (to resume reading once the backlog
 * is small again). */
void output_on_written(output *o, void (*cb)(void *ud));

/* Bytes accepted and not yet written. */
size_t output_backlog(const output *o);

/* Call `done` once everything appended so far is written (or failed). */
void output_drain(output *o, void (*done)(void *ud));

/* Close handles and the fd; on_closed runs when all are released. */
void output_close(output *o, void (*on_closed)(output *o));

#endif
