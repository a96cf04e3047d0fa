/*
 * lines.c: newline framing (contract in lines.h).
 */
#include "lines.h"

#include <stdlib.h>
#include <string.h>

int lines_init(lines *l, size_t max_line, size_t chunk)
{
    memset(l, 0, sizeof *l);
    l->max_line = max_line;
    l->chunk = chunk;
    l->cap = chunk * 2;
    l->buf = malloc(l->cap);
    return l->buf ? 0 : -1;
}

void lines_free(lines *l)
{
    free(l->buf);
    l->buf = NULL;
}

static int too_long(lines *l)
{
    l->error = LINES_ETOOLONG;
    l->lineno++; /* the line that was too long is named in the message */
    return LINES_ERROR;
}

int lines_next(lines *l, const char **line, size_t *len, uint64_t *lineno)
{
    if (l->error)
        return LINES_ERROR;
    char *nl = l->scan < l->end ? memchr(l->buf + l->scan, '\n', l->end - l->scan) : NULL;
    size_t n;
    if (nl) {
        n = (size_t)(nl - (l->buf + l->start));
    } else if (l->eof && l->end > l->start) {
        n = l->end - l->start; /* final line without a newline */
    } else {
        l->scan = l->end;
        if (l->end - l->start > l->max_line)
            return too_long(l);
        return l->eof ? LINES_EOF : LINES_AGAIN;
    }
    if (n > l->max_line)
        return too_long(l);
    *line = l->buf + l->start;
    size_t consumed = nl ? n + 1 : n;
    l->start += consumed;
    l->scan = l->start;
    l->consumed += consumed;
    *len = (n > 0 && (*line)[n - 1] == '\r') ? n - 1 : n;
    *lineno = ++l->lineno;
    return LINES_LINE;
}

int lines_room(lines *l, char **p, size_t *n)
{
    if (l->start > 0) {
        memmove(l->buf, l->buf + l->start, l->end - l->start);
        l->end -= l->start;
        l->scan -= l->start;
        l->start = 0;
    }
    size_t cap = l->cap - l->end < l->chunk ? l->cap * 2 : l->cap; /* grow by doubling */
    char *b = cap == l->cap ? l->buf : realloc(l->buf, cap);
    if (!b)
        return -1;
    l->buf = b;
    l->cap = cap;
    *p = l->buf + l->end;
    *n = l->cap - l->end;
    return 0;
}

void lines_add(lines *l, size_t n)
{
    l->end += n;
}

void lines_end(lines *l)
{
    l->eof = 1;
}

void lines_fail(lines *l, int err)
{
    l->error = err;
}
