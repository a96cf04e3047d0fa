/*
 * timeouts.c: the deadline timer (contract in timeouts.h).
 */
#include "timeouts.h"

static void on_timer(uv_timer_t *h)
{
    timeouts *t = h->data;
    t->armed = OP_NO_DEADLINE;
    op_expire(t->op);
    t->fired(t->ud);
}

void timeouts_init(timeouts *t, uv_loop_t *loop, op *o, void (*fired)(void *ud), void *ud)
{
    t->op = o;
    t->loop = loop;
    t->armed = OP_NO_DEADLINE;
    t->stopped = 0;
    t->fired = fired;
    t->ud = ud;
    uv_timer_init(loop, &t->timer);
    t->timer.data = t;
}

void timeouts_rearm(timeouts *t)
{
    uint64_t next = op_next_deadline(t->op);
    if (next == t->armed)
        return;
    t->armed = next;
    if (next == OP_NO_DEADLINE || t->stopped) {
        uv_timer_stop(&t->timer);
        t->armed = OP_NO_DEADLINE;
        return;
    }
    uint64_t now = op_now(t->op);
    uv_timer_start(&t->timer, on_timer, next > now ? next - now : 0, 0);
}

void timeouts_stop(timeouts *t)
{
    t->stopped = 1;
    uv_timer_stop(&t->timer);
}

void timeouts_close(timeouts *t, uv_close_cb closed)
{
    uv_close((uv_handle_t *)&t->timer, closed);
}
