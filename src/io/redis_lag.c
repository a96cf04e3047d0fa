/*
 * redis_lag.c: a Redis Streams source's backlog for --metrics: per
 * partition, its group's `lag` (entries in the stream not yet delivered
 * to the group; Redis 7) and `pending` (delivered, not acked), from XINFO
 * GROUPS on the partition's command connection. Polled at most once a
 * second, when asked (src/app/expose.c asks at each scrape and on its own
 * timer); a reply is parsed in its callback and kept; nothing waits.
 */
#include <stdio.h>
#include <string.h>

#include "redis_int.h"

/* XINFO GROUPS answered: find our group's fields. */
static void got_groups(void *ud, const resp_reader *r, const char *d, const char *err)
{
    rs_part *p = ud;
    p->lag_out = 0;
    if (err || r->nodes[0].type != RESP_ARRAY)
        return; /* (down, or the key is gone: the values stay as they were) */
    const char *group = p->src->u.group;
    size_t glen = strlen(group);
    uint32_t x = 1;
    for (uint32_t i = 0; i < r->nodes[0].n; i++, x = resp_skip(r, x)) {
        if (r->nodes[x].type != RESP_ARRAY)
            continue;
        /* name, value, name, value ... */
        double lag = -1, pending = -1;
        int ours = 0;
        uint32_t f = x + 1;
        for (uint32_t k = 0; k + 1 < r->nodes[x].n; k += 2) {
            const resp_node *name = &r->nodes[f];
            uint32_t v = resp_skip(r, f);
            const resp_node *val = &r->nodes[v];
            f = resp_skip(r, v);
            if (name->type != RESP_BULK)
                continue;
            const char *n = resp_str(name, d);
            if (name->n == 4 && memcmp(n, "name", 4) == 0)
                ours = val->type == RESP_BULK && val->n == glen && memcmp(resp_str(val, d), group, glen) == 0;
            else if (name->n == 3 && memcmp(n, "lag", 3) == 0 && val->type == RESP_INT)
                lag = (double)val->i;
            else if (name->n == 7 && memcmp(n, "pending", 7) == 0 && val->type == RESP_INT)
                pending = (double)val->i;
        }
        if (ours) {
            p->lag = lag;
            p->pending = pending;
            return;
        }
    }
}

void rs_lag(mw_source *b, void (*each)(void *ud, const char *stream, const char *group, double lag, double pending),
            void *ud)
{
    rs_source *s = (rs_source *)b;
    uint64_t now = uv_now(s->loop);
    int poll = !s->closing && (!s->lag_polled_ms || now - s->lag_polled_ms >= 1000);
    if (poll)
        s->lag_polled_ms = now;
    for (uint32_t i = 0; i < s->nparts; i++) {
        rs_part *p = &s->parts[i];
        if (each)
            each(ud, p->key, s->u.group, p->lag, p->pending);
        if (poll && !p->lag_out && p->cmd && p->cmd_up) {
            const char *argv[] = { "XINFO", "GROUPS", p->key };
            p->lag_out = redis_commandv(p->cmd, got_groups, p, 3, argv) == 0;
        }
    }
}
