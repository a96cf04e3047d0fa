/*
 * resp.h: a RESP2 reply reader in plain C (no libuv, no Lua), for the
 * host's own Redis connections (the Redis Streams source and sink; the
 * Lua client, lua/moonwait/redis.lua, has its own reader on the cosocket).
 *
 * A reply is read into a *tape*: a flat array of nodes in document order,
 * like src/json's, so a reply of any shape costs one growing array, not a
 * tree of mallocs, and a string is a span of the bytes the caller holds.
 *
 *   resp_init(r, max_bytes, max_elements, max_depth)
 *   resp_feed(r, d, n, &used)   d: every byte received since the reply's
 *       first one (the caller appends to its buffer and calls again with
 *       the longer prefix; parsing resumes where it stopped, so a reply that
 *       arrives in pieces is scanned once, apart from a partial line)
 *       RESP_MORE: not complete yet; RESP_DONE: r->nodes[0..r->len) is the
 *       reply, which took `used` bytes of d; RESP_BAD: r->err says why
 *       (the connection must be dropped: the stream is out of step).
 *   resp_next_reply(r)   after RESP_DONE, before feeding the next reply
 *       (its bytes start at d + used).
 *   resp_free(r)
 *
 * Limits, per reply (a hostile or broken server cannot make the host hold
 * more): the reply's bytes on the wire (max_bytes; a bulk over 512 MiB,
 * Redis's proto-max-bulk-len, is refused whatever the limit), the elements
 * of all its arrays together (max_elements: "*999999999" is refused on
 * sight) and how deep arrays nest (max_depth). Messages are the Lua
 * client's ("not an integer: ':abc'", ...).
 */
#ifndef MW_RESP_H
#define MW_RESP_H

#include <stddef.h>
#include <stdint.h>

enum { RESP_STATUS = 1, RESP_ERROR, RESP_INT, RESP_BULK, RESP_NIL, RESP_ARRAY };
enum { RESP_MORE = 0, RESP_DONE = 1, RESP_BAD = -1 };

#define RESP_MAX_BULK (512u * 1024 * 1024)

typedef struct resp_node {
    uint8_t type;   /* RESP_* */
    uint32_t n;     /* ARRAY: its elements; STATUS, ERROR, BULK: bytes */
    uint32_t end;   /* ARRAY: the index just after its subtree */
    size_t off;     /* STATUS, ERROR, BULK: where the bytes are in the reply */
    int64_t i;      /* INT */
} resp_node;

typedef struct resp_frame {
    uint32_t node;  /* the open array */
    uint32_t left;  /* elements still to come */
} resp_frame;

typedef struct resp_reader {
    size_t max_bytes, max_elements, max_depth; /* set by resp_init */
    resp_node *nodes;   /* the tape (owned) */
    size_t len, cap;
    resp_frame *stack;  /* the open arrays (owned) */
    size_t depth, stack_cap;
    size_t pos;         /* bytes of this reply read so far */
    size_t scanned;     /* searched for the end of the line at pos up to here */
    size_t elements;    /* array elements announced so far */
    char err[160];
} resp_reader;

void resp_init(resp_reader *r, size_t max_bytes, size_t max_elements, size_t max_depth);
int resp_feed(resp_reader *r, const char *d, size_t n, size_t *used);
void resp_next_reply(resp_reader *r);
void resp_free(resp_reader *r);

/* A node's bytes (STATUS, ERROR, BULK) in the reply that starts at d. */
static inline const char *resp_str(const resp_node *x, const char *d) { return d + x->off; }

/* The index of the node after x (its subtree skipped). */
static inline uint32_t resp_skip(const resp_reader *r, uint32_t x)
{
    return r->nodes[x].type == RESP_ARRAY ? r->nodes[x].end : x + 1;
}

#endif
