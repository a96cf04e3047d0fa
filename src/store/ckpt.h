/*
 * ckpt.h: the checkpoint file format, in plain C (no libuv, no Lua), so it
 * is unit-tested on its own (spec/c/test_ckpt.c).
 *
 * A checkpoint is a text file of "key value" lines; every variable-length
 * value is length-prefixed ("<n>:<bytes>"), so raw input lines and paths
 * need no escaping. The last line is "crc32 XXXXXXXX", the CRC-32 of every
 * byte before it: a truncated or corrupted file is detected and refused.
 *
 *   moonwait-checkpoint 2
 *   input 11:/data/in.jsonl          (identity: input, output, dead-letter, mode)
 *   ...
 *   entries 3
 *   R <seq> <line> <attempt> <budget_ms> <malformed> <n>:<raw> <n>:<last_error> <done> <timed_out> <n>:<out> <n>:<dlq>
 *   W <watermark>
 *   crc32 1a2b3c4d
 *
 * Version 2 added the last four fields of R: a record that had completed
 * but was held for order (or behind a watermark) is stored with its result
 * (the encoded output lines and/or its dead-letter line), so a restore
 * emits it in its turn without calling the script again. Version 1 files
 * are refused (CKPT_EVERSION), never misread.
 */
#ifndef MW_CKPT_H
#define MW_CKPT_H

#include <stddef.h>
#include <stdint.h>

#define CKPT_VERSION 2

/* ckpt_decode's result for a file of another format version. */
#define CKPT_EVERSION (-2)

enum { CKPT_RECORD = 0, CKPT_WATERMARK = 1 };

typedef struct ckpt_entry {
    int kind;
    uint64_t seq, line;
    uint32_t attempt;         /* the attempt to run on restore (continues the count) */
    uint64_t budget_used_ms;  /* timeout budget already spent */
    int malformed;            /* a line that did not parse (routed on restore again) */
    char *raw;                /* the raw input line (owned) */
    size_t raw_len;
    char *last_error;         /* owned, or NULL */
    int64_t watermark;        /* CKPT_WATERMARK */
    /* version 2: a completed record held in the queue */
    int done;                 /* completed: emit out/dlq on restore, never re-invoke */
    int timed_out;            /* its outcome came from its timeout */
    char *out;                /* done: its encoded output lines (owned), or NULL */
    size_t out_len;
    char *dlq;                /* done: its dead-letter line (owned), or NULL */
    size_t dlq_len;
} ckpt_entry;

typedef struct ckpt {
    char *input, *output, *dead_letter, *mode; /* the pipeline's identity (owned) */
    int complete;             /* the input ended and everything was emitted */
    uint64_t input_offset;    /* byte offset just after the last accepted line */
    uint64_t input_line;      /* its line number */
    uint64_t next_seq;        /* the seq the next record read gets */
    int has_wm_current, has_wm_max, has_pending_wm;
    int64_t wm_current, wm_max, pending_wm;
    uint64_t output_len;      /* committed (fsynced) output bytes */
    uint64_t dead_letter_len;
    ckpt_entry *entries;      /* queue order (owned) */
    size_t n, cap;
    int borrowed;             /* entries' strings are borrowed (see ckpt_add) */
} ckpt;

uint32_t ckpt_crc32(const void *data, size_t len);

/* Append an entry: copies raw, last_error, out and dlq, or, when
 * c->borrowed is set, keeps the pointers (the caller keeps them alive until
 * ckpt_free, which then frees only the array). 0 or -1 (out of memory). */
int ckpt_add(ckpt *c, const ckpt_entry *e);

/* Serialise. *buf is malloc'd. 0 or -1. */
int ckpt_encode(const ckpt *c, char **buf, size_t *len);

/* Parse and verify. 0, or -1 with a message in err (c is then empty), or
 * CKPT_EVERSION for a file of another format version (err says which). */
int ckpt_decode(const char *buf, size_t len, ckpt *c, char *err, size_t errlen);

void ckpt_free(ckpt *c);

#endif
