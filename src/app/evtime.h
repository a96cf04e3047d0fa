/*
 * evtime.h: a run's event-time state: the watermark generator (op/wmgen)
 * and the generated watermark waiting for a free slot in the operator.
 * task.c feeds it records' event times, run.c pushes the waiting
 * watermark, a checkpoint saves it (evtime_save) and a restore loads it
 * (evtime_load) through wmgen's accessors; nothing else reads its fields.
 */
#ifndef MW_EVTIME_H
#define MW_EVTIME_H

#include <stdint.h>

#include "../op/wmgen.h"
#include "../store/ckpt.h"

typedef struct evtime {
    wmgen gen;
    int has_pending;     /* a generated watermark waits for room */
    int64_t pending;
} evtime;

static inline void evtime_init(evtime *ev, int64_t bound_ms)
{
    wmgen_init(&ev->gen, bound_ms);
    ev->has_pending = 0;
    ev->pending = 0;
}

/* A record with event time ts was read: a watermark may have to follow. */
static inline void evtime_on_event(evtime *ev, int64_t ts)
{
    int64_t wm;
    if (wmgen_on_event(&ev->gen, ts, &wm)) {
        ev->has_pending = 1;
        ev->pending = wm;
    }
}

/* An explicit watermark line: 1 if it advances the watermark (forward
 * it), 0 if it is stale. */
static inline int evtime_on_watermark(evtime *ev, int64_t wm)
{
    return wmgen_on_watermark(&ev->gen, wm);
}

/* Nonzero while a generated watermark waits for room. */
static inline int evtime_pending(const evtime *ev)
{
    return ev->has_pending;
}

/* The waiting watermark, taken: 1 with *wm, or 0. */
static inline int evtime_take(evtime *ev, int64_t *wm)
{
    if (!ev->has_pending)
        return 0;
    ev->has_pending = 0;
    *wm = ev->pending;
    return 1;
}

static inline void evtime_save(const evtime *ev, ckpt *k)
{
    k->has_wm_current = wmgen_current(&ev->gen) != INT64_MIN;
    k->wm_current = wmgen_current(&ev->gen);
    k->has_wm_max = wmgen_max_ts(&ev->gen) != INT64_MIN;
    k->wm_max = wmgen_max_ts(&ev->gen);
    k->has_pending_wm = ev->has_pending;
    k->pending_wm = ev->pending;
}

static inline void evtime_load(evtime *ev, const ckpt *k)
{
    wmgen_restore(&ev->gen, k->has_wm_current ? k->wm_current : INT64_MIN,
                  k->has_wm_max ? k->wm_max : INT64_MIN);
    if (k->has_pending_wm) {
        ev->has_pending = 1;
        ev->pending = k->pending_wm;
    }
}

#endif
