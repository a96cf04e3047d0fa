/*
 * wmgen.h: the source's watermark rule, in plain C (no libuv, no Lua).
 *
 * The current watermark only moves forward. An explicit watermark line is
 * forwarded only if it advances it; with event time configured, after each
 * record whose event time t makes (max t seen) - bound exceed the current
 * watermark, a watermark of exactly (max t seen) - bound follows that record.
 */
#ifndef MW_WMGEN_H
#define MW_WMGEN_H

#include <stdint.h>

typedef struct wmgen {
    int64_t current;   /* last watermark forwarded; INT64_MIN before any */
    int64_t max_ts;    /* largest event time seen; INT64_MIN before any */
    int64_t bound_ms;  /* max out-of-orderness */
    uint64_t stale;    /* explicit watermarks dropped for not advancing */
} wmgen;

void wmgen_init(wmgen *g, int64_t bound_ms);

/* A record with event time `ts` was read. Returns 1 and sets *wm when a
 * watermark must follow it, else 0. */
int wmgen_on_event(wmgen *g, int64_t ts, int64_t *wm);

/* An explicit watermark line was read. Returns 1 if it must be forwarded
 * (it advances the watermark), 0 if it is dropped as stale. */
int wmgen_on_watermark(wmgen *g, int64_t wm);

/* Its state, for a checkpoint: the last watermark forwarded and the
 * largest event time seen (each INT64_MIN before any). */
static inline int64_t wmgen_current(const wmgen *g) { return g->current; }
static inline int64_t wmgen_max_ts(const wmgen *g) { return g->max_ts; }

/* Continue from a checkpoint's state (values as wmgen_current and
 * wmgen_max_ts gave them). */
void wmgen_restore(wmgen *g, int64_t current, int64_t max_ts);

#endif
