/*
 * redis_probe.c: the open-time check of a Redis URL (contract in
 * redis_int.h). It runs before the run starts, on a private loop, so a
 * wrong host, password or key is refused at once (exit 2) with the
 * server's words, rather than found by a reconnect loop later.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "redis_int.h"

typedef struct probe {
    const redis_url *u;
    int role;
    redis_conn *c;
    uint32_t next, answered, total;
    int done, failed;
    char *err;
    size_t errlen;
} probe;

static void finish(probe *p, const char *fmt, const char *a, const char *b)
{
    if (p->done)
        return;
    p->done = 1;
    if (fmt) {
        p->failed = 1;
        snprintf(p->err, p->errlen, fmt, a, b);
    }
}

static void answered(void *ud, const resp_reader *r, const char *d, const char *err)
{
    probe *p = ud;
    if (err) {
        finish(p, "%s%s", err, "");
        return;
    }
    char buf[300];
    redis_str(r, d, 0, buf, sizeof buf);
    if (r->nodes[0].type == RESP_ERROR && !(p->role == REDIS_URL_SOURCE && !strncmp(buf, "BUSYGROUP", 9))) {
        finish(p, "%s%s", buf, "");
        return;
    }
    if (p->role == REDIS_URL_SINK && strcmp(buf, "stream") != 0 && strcmp(buf, "none") != 0) {
        char *key = redis_url_key(p->u, p->answered);
        finish(p, "key \"%s\" holds a %s, not a stream", key ? key : "?", buf);
        free(key);
        return;
    }
    if (++p->answered == p->total)
        finish(p, NULL, NULL, NULL);
}

static void state(void *ud, int st, const char *why)
{
    probe *p = ud;
    if (st == REDIS_DOWN) {
        finish(p, "cannot connect: %s%s", why, "");
        return;
    }
    for (uint32_t i = 0; i < p->total; i++) {
        char *key = redis_url_key(p->u, i);
        if (!key) {
            finish(p, "out of memory%s%s", "", "");
            return;
        }
        const char *src[] = { "XGROUP", "CREATE", key, p->u->group, p->u->start, "MKSTREAM" };
        const char *snk[] = { "TYPE", key };
        int rc = p->role == REDIS_URL_SOURCE ? redis_commandv(p->c, answered, p, 6, src)
                                             : redis_commandv(p->c, answered, p, 2, snk);
        free(key);
        if (rc != 0) {
            finish(p, "cannot send a command%s%s", "", "");
            return;
        }
    }
}

int rs_probe(const redis_url *u, int role, char *err, size_t errlen)
{
    uv_loop_t loop;
    if (uv_loop_init(&loop) != 0) {
        snprintf(err, errlen, "cannot start a loop");
        return -1;
    }
    probe p = { .u = u, .role = role, .err = err, .errlen = errlen, .total = u->cluster ? u->partitions : 1 };
    p.c = redis_conn_new(&loop, u->hosts[0].host, u->hosts[0].port, u->password, 1u << 20, state, &p);
    if (!p.c)
        finish(&p, "out of memory%s%s", "", "");
    while (!p.done)
        uv_run(&loop, UV_RUN_ONCE);
    redis_conn_close(p.c);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    return p.failed ? -1 : 0;
}
