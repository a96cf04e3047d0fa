/*
 * buf.h: the one growable byte buffer type (header only; libc only). Used
 * wherever bytes are assembled: HTTP requests and headers, encoded output
 * records, JSON strings (src/json), checkpoint files (src/store). Use
 * mw_buf itself rather than a typedef of it. The memory is the holder's:
 * free(b->p) when done (or keep it for reuse, resetting len).
 */
#ifndef MW_BUF_H
#define MW_BUF_H

#include <stdlib.h>
#include <string.h>

typedef struct mw_buf {
    char *p;
    size_t len, cap;
} mw_buf;

/* Make room for n more bytes. 0, or -1 when out of memory (b unchanged). */
static inline int mw_buf_reserve(mw_buf *b, size_t n)
{
    if (b->cap - b->len < n) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap - b->len < n)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p)
            return -1;
        b->p = p;
        b->cap = cap;
    }
    return 0;
}

/* Append n bytes. 0, or -1 when out of memory (b unchanged). */
static inline int mw_buf_add(mw_buf *b, const void *s, size_t n)
{
    if (mw_buf_reserve(b, n))
        return -1;
    if (n)
        memcpy(b->p + b->len, s, n);
    b->len += n;
    return 0;
}

#endif
