/*
 * timeouts.h: the one libuv timer behind the operator's deadlines and
 * back-offs. It is armed at op_next_deadline() (re-armed only when that
 * changes) and fires op_expire(), whose timeout and retry callbacks the
 * run handles; then `fired` lets the run pump and re-check its phase. The
 * operator's clock is the loop's (the run passes uv_now as its cb.now), so
 * a deadline minus op_now() is the timer's delay in the timer's own ms.
 */
#ifndef MW_TIMEOUTS_H
#define MW_TIMEOUTS_H

#include <stdint.h>
#include <uv.h>

#include "../op/op.h"

typedef struct timeouts {
    op *op;
    uv_loop_t *loop;
    uv_timer_t timer;
    uint64_t armed;       /* deadline the timer is armed for */
    int stopped;          /* draining: never armed again */
    void (*fired)(void *ud);
    void *ud;
} timeouts;

void timeouts_init(timeouts *t, uv_loop_t *loop, op *o, void (*fired)(void *ud), void *ud);
/* Arm for the operator's next deadline (or stop when there is none). */
void timeouts_rearm(timeouts *t);
/* Never fire again (the run is draining). */
void timeouts_stop(timeouts *t);
/* Close the timer; `closed` runs when it has. */
void timeouts_close(timeouts *t, uv_close_cb closed);

#endif
