/*
 * input.h: the line source. Reads a file, a FIFO, a pipe or a tty on the
 * libuv loop and hands out complete lines on demand.
 *
 * Pull-based, for backpressure: the pipeline asks for lines with
 * input_next_line(); when the buffer holds no complete line it calls
 * input_want(), which issues one read (uv_fs_read for files, one read_start
 * ... read_stop for streams) and calls `on_data` when it lands. Nothing is
 * read while the pipeline does not ask, so a full operator stops the
 * producer once the kernel's pipe buffer is full. At most one read is in
 * flight; the buffer holds one chunk plus one partial line, and a line
 * longer than `max_line` is an error rather than unbounded growth.
 */
#ifndef MW_INPUT_H
#define MW_INPUT_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "stream.h"

typedef struct input input;
typedef void (*input_cb)(void *ud);

enum { INPUT_LINE = 1, INPUT_AGAIN = 0, INPUT_EOF = -1, INPUT_ERROR = -2 };

struct input {
    uv_loop_t *loop;
    char *name;            /* path as given ("-" for stdin), for messages */
    int fd;                /* owned unless it is stdin */
    int is_file;           /* regular file: uv_fs_read; else a stream */
    io_stream stream;      /* streams only; closed by input_close */
    int stream_open;
    uv_fs_t req;           /* the file read in flight */
    char *buf;             /* owned; [start, end) is unread data */
    size_t cap, start, end, scan;
    size_t max_line;
    int64_t file_off;      /* file offset of buf[0]'s successor read */
    uint64_t consumed;     /* bytes consumed (end of the last line handed out) */
    uint64_t lineno;       /* number of the last line handed out */
    int reading;           /* a read is in flight */
    int eof;
    int close_pending;     /* input_close waits for the file read in flight */
    int error;             /* a uv error code, or INPUT_ETOOLONG */
    input_cb on_data;
    void *ud;
    void (*on_closed)(input *in);
};

#define INPUT_ETOOLONG 1

/* Open `path` ("-" = stdin). Returns 0, or a negative uv error with a
 * message in *err (malloc'd). */
int input_open(input *in, uv_loop_t *loop, const char *path, size_t max_line,
               input_cb on_data, void *ud, char **err);

/* Next complete line: INPUT_LINE with *line and *len (valid until the next
 * input_want) and *lineno; INPUT_AGAIN when more data must be read;
 * INPUT_EOF at the end; INPUT_ERROR (see input_strerror). A final line
 * without a newline is still a line. CR before LF is dropped. */
int input_next_line(input *in, const char **line, size_t *len, uint64_t *lineno);

/* Start a read if none is in flight and the input has not ended. */
void input_want(input *in);

/* Describe the error that made input_next_line return INPUT_ERROR. */
void input_strerror(const input *in, char *buf, size_t len);

/* Stop reading and close the fd and handles; on_closed (may be NULL) runs
 * once everything is released. A read still blocked in the thread pool
 * is abandoned by the caller exiting; see pipeline.c. */
void input_close(input *in, void (*on_closed)(input *in));

#endif
