/*
 * lines.h: newline framing of a byte stream, in plain C (no libuv), so the
 * rules are unit-tested on their own (spec/c/test_lines.c). The fd source
 * (fd_source.c) reads into the room this gives and takes lines out.
 *
 * The rules: a line ends at '\n'; one CR before it is dropped; a final line
 * without a newline is still a line (at the end of the data); bytes are
 * bytes (a NUL does not end a line); a line longer than `max_line` bytes
 * (counted before the CR is dropped, without the newline) is an error, as
 * is a partial line that already holds more than `max_line` bytes while
 * more must be read (the buffer never grows without bound). Blank lines
 * are handed out too (the caller decides; line numbers count them).
 */
#ifndef MW_LINES_H
#define MW_LINES_H

#include <stddef.h>
#include <stdint.h>

/* lines_next's results. */
enum { LINES_LINE = 1, LINES_AGAIN = 0, LINES_EOF = -1, LINES_ERROR = -2 };

/* The error a line longer than max_line sets (uv errors are negative). */
#define LINES_ETOOLONG 1

typedef struct lines {
    char *buf;             /* owned; [start, end) is unread data */
    size_t cap, start, end, scan; /* scan: no newline in [start, scan) */
    size_t chunk;          /* the room lines_room makes for one read */
    size_t max_line;
    uint64_t consumed;     /* bytes consumed (end of the last line handed out) */
    uint64_t lineno;       /* number of the last line handed out */
    int eof;               /* the data ended (lines_end) */
    int error;             /* sticky: LINES_ETOOLONG or a reader's negative code */
} lines;

/* Empty framer reading `chunk` bytes at a time. 0, or -1 (out of memory). */
int lines_init(lines *l, size_t max_line, size_t chunk);
void lines_free(lines *l);

/* Next complete line: LINES_LINE with *line, *len (valid until the next
 * lines_room) and *lineno; LINES_AGAIN when more data must be read;
 * LINES_EOF at the end; LINES_ERROR once l->error is set (every call). */
int lines_next(lines *l, const char **line, size_t *len, uint64_t *lineno);

/* Make room for one read after the unread data (moving it to the front,
 * growing the buffer when needed): *p and *n say where. 0, or -1 (out of
 * memory). */
int lines_room(lines *l, char **p, size_t *n);

/* n bytes were read into the room; lines_end: the data ended; lines_fail:
 * the read failed (a negative error code, reported by lines_next). */
void lines_add(lines *l, size_t n);
void lines_end(lines *l);
void lines_fail(lines *l, int err);

#endif
