/*
 * timers.h: every sleep and wait timeout of one VM's fibers in one binary
 * heap, driven by a single uv_timer_t armed for the earliest one.
 *
 * Why: a uv_timer_t per fiber put every wait in libuv's pointer-linked
 * heap, whose nodes live in the fibers (spread over the process heap):
 * with 10,000 records asleep each start and stop chased ~14 pointers
 * through cold cache lines, and the operator's deadline timer, re-armed on
 * almost every completion, paid the same. Here the keys sit in one array
 * (24 bytes a slot), and libuv's heap holds one timer per VM. Most waits
 * of a VM have the same length (one sleep, one HTTP timeout), so they are
 * started in due order: a timer due no earlier than the last one queued
 * goes on a FIFO list instead (O(1) in and out, the head is all a firing
 * pass reads); only the others pay the heap's log n.
 *
 * Same contract as a one-shot uv_timer_t: rt_timer_start on an armed timer
 * re-arms it; rt_timer_stop on an idle one does nothing; a timer is
 * disarmed before its callback runs, which may start it again; timers due
 * at the same ms fire in the order they were started; a timer started
 * while timers fire (even with 0 ms) fires in a later pass, never in the
 * one running (libuv before 1.45 may run that pass in the same loop
 * iteration, as it ran a fiber's own uv_timer_t). The armed driver keeps the loop alive, as the
 * fibers' own timers did; with no timer armed it is stopped.
 *
 * State is per rt_timers (one per VM, on its loop's thread): nothing here
 * is process-wide. rt_timer_start never allocates: whoever owns timers
 * reserves a heap slot for each first (rt_timers_reserve; the runtime does
 * so for each fiber it makes), so arming a wait cannot fail.
 */
#ifndef MW_TIMERS_H
#define MW_TIMERS_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct rt_timer rt_timer;
typedef struct rt_timers rt_timers;
typedef void (*rt_timer_cb)(rt_timer *t);

struct rt_timer {
    rt_timers *ts;  /* where it arms (set by rt_timer_init) */
    rt_timer_cb cb;
    void *data;     /* the owner's */
    uint32_t ix;    /* 1 + its slot in the heap; 0 = not in the heap */
    int queued;     /* on the FIFO list */
    uint64_t due, seq;          /* while queued */
    rt_timer *next, *prev;      /* while queued */
};

typedef struct rt_timer_slot {
    uint64_t due;   /* loop ms (uv_now) */
    uint64_t seq;   /* start order: ties, and the bound of a firing pass */
    rt_timer *t;
} rt_timer_slot;

struct rt_timers {
    uv_timer_t h;        /* the driver; h.data = this */
    rt_timer_slot *v;    /* owned */
    size_t len, cap;
    uint64_t seq;        /* starts so far */
    uint64_t armed;      /* the due h is armed for, or UINT64_MAX */
    rt_timer *head, *tail; /* the FIFO list: (due, seq) ascending */
};

void rt_timers_init(rt_timers *ts, uv_loop_t *loop);
/* Room for `n` armed timers at once. 0, or -1 on out of memory. */
int rt_timers_reserve(rt_timers *ts, size_t n);
/* Close the driver (cb as uv_close's, h.data stays ts). Timers must be
 * stopped before or may not be started after; rt_timers_free then. */
void rt_timers_close(rt_timers *ts, uv_close_cb cb);
void rt_timers_free(rt_timers *ts);

void rt_timer_init(rt_timers *ts, rt_timer *t, void *data);
/* Arm t to call cb(t) in `ms` ms of the loop's cached clock. */
void rt_timer_start(rt_timer *t, rt_timer_cb cb, uint64_t ms);
void rt_timer_stop(rt_timer *t);
static inline int rt_timer_active(const rt_timer *t)
{
    return t->ix != 0 || t->queued;
}

#endif
