/*
 * limit.c: the pipeline's rate limit (contract in limit.h).
 */
#include "limit.h"

static void on_timer(uv_timer_t *t)
{
    limit *l = t->data;
    l->wake(l->ud);
}

void limit_init(limit *l, uv_loop_t *loop, double rps, double burst, void (*wake)(void *ud), void *ud)
{
    l->on = rps > 0;
    l->wake = wake;
    l->ud = ud;
    l->pauses = 0;
    l->timer_made = 0;
    if (!l->on)
        return;
    tbucket_init(&l->b, rps, burst, uv_hrtime());
    uv_timer_init(loop, &l->timer);
    l->timer.data = l;
    l->timer_made = 1;
}

/* Whole ms from ns, rounded up: a timer that fires early would find no
 * token and wait again. */
static uint64_t ms_up(uint64_t ns)
{
    return ns / 1000000 + (ns % 1000000 != 0);
}

int limit_ready(limit *l)
{
    if (!l->on)
        return 1;
    uint64_t wait = tbucket_wait_ns(&l->b, 1, uv_hrtime());
    if (wait == 0)
        return 1;
    if (!uv_is_active((uv_handle_t *)&l->timer)) {
        l->pauses++;
        uv_timer_start(&l->timer, on_timer, ms_up(wait), 0);
    }
    return 0;
}

void limit_take(limit *l)
{
    if (l->on)
        tbucket_reserve(&l->b, 1, uv_hrtime());
}

uint64_t limit_gate(limit *l, uint64_t now_ms)
{
    if (!l->on)
        return 0;
    uint64_t now = uv_hrtime();
    if (tbucket_take(&l->b, 1, now))
        return 0;
    return now_ms + ms_up(tbucket_wait_ns(&l->b, 1, now));
}

size_t limit_room(limit *l, size_t room)
{
    if (!l->on || room == 0)
        return room;
    double t = tbucket_tokens(&l->b, uv_hrtime());
    size_t n = t >= 1 ? (size_t)t : 1;
    return n < room ? n : room;
}

void limit_close(limit *l)
{
    if (l->timer_made) {
        uv_close((uv_handle_t *)&l->timer, NULL);
        l->timer_made = 0;
    }
}
