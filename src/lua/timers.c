/*
 * timers.c: one VM's wait timers in an array heap (contract in timers.h).
 */
#include "timers.h"

#include <stdlib.h>

#include "../util/list.h"

#define NONE UINT64_MAX

static int before(const rt_timer_slot *a, const rt_timer_slot *b)
{
    return a->due < b->due || (a->due == b->due && a->seq < b->seq);
}

static void put(rt_timers *ts, size_t i, rt_timer_slot s)
{
    ts->v[i] = s;
    s.t->ix = (uint32_t)i + 1;
}

static void sift_up(rt_timers *ts, size_t i)
{
    rt_timer_slot s = ts->v[i];
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!before(&s, &ts->v[p]))
            break;
        put(ts, i, ts->v[p]);
        i = p;
    }
    put(ts, i, s);
}

static void sift_down(rt_timers *ts, size_t i)
{
    rt_timer_slot s = ts->v[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= ts->len)
            break;
        if (c + 1 < ts->len && before(&ts->v[c + 1], &ts->v[c]))
            c++;
        if (!before(&ts->v[c], &s))
            break;
        put(ts, i, ts->v[c]);
        i = c;
    }
    put(ts, i, s);
}

static void take(rt_timers *ts, size_t i)
{
    ts->v[i].t->ix = 0;
    if (--ts->len == i)
        return;
    ts->v[i] = ts->v[ts->len];
    if (i > 0 && before(&ts->v[i], &ts->v[(i - 1) / 2]))
        sift_up(ts, i);
    else
        sift_down(ts, i);
}

/* ---- the FIFO list ---- */

static void unqueue(rt_timers *ts, rt_timer *t)
{
    MW_QUEUE_UNLINK(ts->head, ts->tail, t, prev, next);
    t->queued = 0;
}

static int empty(const rt_timers *ts)
{
    return !ts->len && !ts->head;
}

/* The earliest armed timer's (due, seq): the list's head or the heap's top. */
static rt_timer_slot first(const rt_timers *ts)
{
    rt_timer *h = ts->head;
    if (h && (!ts->len || h->due < ts->v[0].due || (h->due == ts->v[0].due && h->seq < ts->v[0].seq)))
        return (rt_timer_slot){ h->due, h->seq, h };
    return ts->v[0];
}

static void disarm(rt_timer *t)
{
    if (t->queued)
        unqueue(t->ts, t);
    else if (t->ix)
        take(t->ts, t->ix - 1);
}

static void fire(uv_timer_t *h);

/* Point the driver at the earliest due (or stop it: an empty heap must not
 * keep the loop alive). */
static void arm(rt_timers *ts)
{
    if (empty(ts)) {
        if (ts->armed != NONE)
            uv_timer_stop(&ts->h);
        ts->armed = NONE;
        return;
    }
    uint64_t due = first(ts).due;
    if (due == ts->armed)
        return;
    uint64_t now = uv_now(ts->h.loop);
    ts->armed = due;
    uv_timer_start(&ts->h, fire, due > now ? due - now : 0, 0);
}

static void fire(uv_timer_t *h)
{
    rt_timers *ts = h->data;
    uint64_t now = uv_now(h->loop), bound = ts->seq;
    ts->armed = NONE;
    /* Only timers started before this pass: one re-armed with 0 ms by its
     * callback waits for the next pass, so a pass always ends. */
    while (!empty(ts)) {
        rt_timer_slot s = first(ts);
        if (s.due > now || s.seq >= bound)
            break;
        disarm(s.t);
        s.t->cb(s.t);
    }
    arm(ts);
}

void rt_timers_init(rt_timers *ts, uv_loop_t *loop)
{
    ts->v = NULL;
    ts->len = ts->cap = 0;
    ts->seq = 0;
    ts->armed = NONE;
    ts->head = ts->tail = NULL;
    uv_timer_init(loop, &ts->h);
    ts->h.data = ts;
}

int rt_timers_reserve(rt_timers *ts, size_t n)
{
    if (n <= ts->cap)
        return 0;
    size_t cap = ts->cap ? ts->cap : 64;
    while (cap < n)
        cap *= 2;
    rt_timer_slot *v = realloc(ts->v, cap * sizeof *v);
    if (!v)
        return -1;
    ts->v = v;
    ts->cap = cap;
    return 0;
}

void rt_timers_close(rt_timers *ts, uv_close_cb cb)
{
    ts->armed = NONE;
    uv_close((uv_handle_t *)&ts->h, cb);
}

void rt_timers_free(rt_timers *ts)
{
    free(ts->v);
    ts->v = NULL;
    ts->len = ts->cap = 0;
}

void rt_timer_init(rt_timers *ts, rt_timer *t, void *data)
{
    t->ts = ts;
    t->cb = NULL;
    t->data = data;
    t->ix = 0;
    t->queued = 0;
    t->next = t->prev = NULL;
}

void rt_timer_start(rt_timer *t, rt_timer_cb cb, uint64_t ms)
{
    rt_timers *ts = t->ts;
    disarm(t);
    uint64_t now = uv_now(ts->h.loop);
    uint64_t due = ms > UINT64_MAX - now ? UINT64_MAX - 1 : now + ms;
    t->cb = cb;
    if (!ts->tail || due >= ts->tail->due) {
        t->due = due;
        t->seq = ts->seq++;
        t->queued = 1;
        MW_QUEUE_APPEND(ts->head, ts->tail, t, prev, next);
    } else {
        /* (reserved: see timers.h; the guard keeps a broken promise from
         * writing past the array) */
        if (ts->len == ts->cap && rt_timers_reserve(ts, ts->len + 1) != 0)
            abort();
        size_t i = ts->len++;
        ts->v[i] = (rt_timer_slot){ due, ts->seq++, t };
        sift_up(ts, i);
    }
    if (due < ts->armed && !uv_is_closing((uv_handle_t *)&ts->h))
        arm(ts);
}

void rt_timer_stop(rt_timer *t)
{
    if (!rt_timer_active(t))
        return;
    rt_timers *ts = t->ts;
    disarm(t);
    /* A later due left on top only makes the driver fire early, find
     * nothing due and re-arm; an empty heap must let the loop end. */
    if (empty(ts) && ts->armed != NONE) {
        uv_timer_stop(&ts->h);
        ts->armed = NONE;
    }
}
