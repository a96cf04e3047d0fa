/* wmgen.c: the source's watermark rule (contract in wmgen.h). */
#include "wmgen.h"

void wmgen_init(wmgen *g, int64_t bound_ms)
{
    g->current = INT64_MIN;
    g->max_ts = INT64_MIN;
    g->bound_ms = bound_ms;
    g->stale = 0;
}

int wmgen_on_event(wmgen *g, int64_t ts, int64_t *wm)
{
    if (ts <= g->max_ts)
        return 0;
    g->max_ts = ts;
    /* Saturate rather than overflow for timestamps near INT64_MIN. */
    int64_t cand = ts < INT64_MIN + g->bound_ms ? INT64_MIN : ts - g->bound_ms;
    if (cand <= g->current)
        return 0;
    g->current = cand;
    *wm = cand;
    return 1;
}

int wmgen_on_watermark(wmgen *g, int64_t wm)
{
    if (wm <= g->current) {
        g->stale++;
        return 0;
    }
    g->current = wm;
    return 1;
}

void wmgen_restore(wmgen *g, int64_t current, int64_t max_ts)
{
    g->current = current;
    g->max_ts = max_ts;
}
