/*
 * snapshot.h: what a checkpoint captures, taken on the loop thread in one
 * go (so it is consistent), without libuv: the source's position after
 * the last accepted record, every entry of the operator queue in order
 * (raw line, seq, the attempt to continue at, timeout budget used; a record
 * that completed but is held for order or behind a watermark with its
 * result: encoded output and/or dead-letter line; watermarks between
 * them), the event-time state, and the positions of the output and the
 * dead-letter sinks. Everything is read through interfaces and accessors
 * (source.h, sink.h, op.h's accessors, evtime.h, the `record` callback), so
 * spec/c/test_snapshot.c builds one from a known state and decodes it.
 */
#ifndef MW_SNAPSHOT_H
#define MW_SNAPSHOT_H

#include <stddef.h>
#include <stdint.h>

#include "../io/sink.h"
#include "../io/source.h"
#include "../op/op.h"
#include "evtime.h"

/* What the run keeps of a record (borrowed). */
typedef struct snap_rec {
    const char *line;
    size_t len;
    int malformed;
    const char *last_error;
} snap_rec;

typedef struct snap_view {
    const char *id_in, *id_out, *id_dl; /* the pipeline's identity ("" = none) */
    op_mode mode;
    uint64_t timeout_ms;
    const op *op;
    const evtime *ev;
    const mw_source *src;
    const mw_sink *out, *dlq;           /* dlq NULL when there is none */
    /* The record hung on entry e: 0 with *r, or -1 when it has none (a
     * malformed line failing the run: it is read again on restore). */
    int (*record)(const op_entry *e, snap_rec *r);
    const char *key;                    /* keyed mode: the key field; else NULL */
} snap_view;

/* One encoded snapshot and what committing it means. */
typedef struct snap {
    char *buf;          /* the checkpoint file's bytes (malloc'd) */
    size_t len;
    uint64_t out_len, dlq_len; /* the sinks' positions it commits */
    source_pos pos;     /* the source's position it commits */
    int final;          /* it marks the run complete */
} snap;

/* Capture the state now (`now` on the operator's clock). `complete`: the
 * input ended and everything was emitted. 0 with *s, or -1 (out of
 * memory). */
int snap_take(const snap_view *v, int complete, uint64_t now, snap *s);

/* The mode as a checkpoint records it ("ordered", "unordered", "keyed by
 * user.id"): a restore refuses a checkpoint of another mode or key field,
 * as it refuses another input. Written into out (n bytes). */
void snap_mode_name(op_mode mode, const char *key, char *out, size_t n);

#endif
