/*
 * redis_probe.c: the open-time check of a Redis URL (contract in
 * redis_int.h). It runs before the run starts, on a private loop, so a
 * wrong host, password or key is refused at once (exit 2) with the
 * server's words, rather than found by a reconnect loop later. In a
 * cluster it first reads the slot map (CLUSTER SLOTS, from the first seed
 * that answers) and checks each partition's key on its master.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../net/redis_cluster.h"
#include "redis_int.h"

typedef struct probe {
    const redis_url *u;
    int role;                 /* REDIS_URL_SOURCE, _SINK, or -1: CLUSTER SLOTS */
    const char *key;
    const char *host;
    redis_slots *slots;       /* role -1: the answer */
    redis_conn *c;
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
    if (p->role < 0) {
        if (redis_slots_parse(p->slots, r, d, p->host) != 0)
            finish(p, "CLUSTER SLOTS: %s%s", r->nodes[0].type == RESP_ERROR ? buf : "unexpected reply", "");
        else
            finish(p, NULL, NULL, NULL);
        return;
    }
    if (r->nodes[0].type == RESP_ERROR && !(p->role == REDIS_URL_SOURCE && !strncmp(buf, "BUSYGROUP", 9))) {
        finish(p, "%s%s", buf, "");
        return;
    }
    if (p->role == REDIS_URL_SINK && strcmp(buf, "stream") != 0 && strcmp(buf, "none") != 0) {
        finish(p, "key \"%s\" holds a %s, not a stream", p->key, buf);
        return;
    }
    finish(p, NULL, NULL, NULL);
}

static void state(void *ud, int st, const char *why)
{
    probe *p = ud;
    if (st == REDIS_DOWN) {
        finish(p, "cannot connect: %s%s", why, "");
        return;
    }
    const char *slots[] = { "CLUSTER", "SLOTS" };
    const char *src[] = { "XGROUP", "CREATE", p->key, p->u->group, p->u->start, "MKSTREAM" };
    const char *snk[] = { "TYPE", p->key };
    int rc = p->role < 0 ? redis_commandv(p->c, answered, p, 2, slots)
             : p->role == REDIS_URL_SOURCE ? redis_commandv(p->c, answered, p, 6, src)
                                           : redis_commandv(p->c, answered, p, 2, snk);
    if (rc != 0)
        finish(p, "cannot send a command%s%s", "", "");
}

/* One question to host:port. 0, or -1 with err. */
static int ask(probe *p, const char *host, int port)
{
    uv_loop_t loop;
    if (uv_loop_init(&loop) != 0) {
        snprintf(p->err, p->errlen, "cannot start a loop");
        return -1;
    }
    p->host = host;
    p->c = redis_conn_new(&loop, host, port, p->u->password, 64u << 20, state, p);
    if (!p->c)
        finish(p, "out of memory%s%s", "", "");
    else
        redis_conn_set_reply_timeout(p->c, 5000); /* (a peer that is not Redis) */
    while (!p->done)
        uv_run(&loop, UV_RUN_ONCE);
    redis_conn_close(p->c);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    return p->failed ? -1 : 0;
}

int rs_probe_slots(const redis_url *u, redis_slots *slots, char *err, size_t errlen)
{
    for (size_t i = 0; i < u->nhosts; i++) {
        probe p = { .u = u, .role = -1, .slots = slots, .err = err, .errlen = errlen };
        if (ask(&p, u->hosts[i].host, u->hosts[i].port) == 0)
            return 0;
    }
    return -1; /* (the last seed's reason) */
}

int rs_probe(const redis_url *u, int role, char *err, size_t errlen)
{
    if (!u->cluster) {
        probe p = { .u = u, .role = role, .key = u->stream, .err = err, .errlen = errlen };
        return ask(&p, u->hosts[0].host, u->hosts[0].port);
    }
    redis_slots slots;
    if (rs_probe_slots(u, &slots, err, errlen) != 0)
        return -1;
    int rc = 0;
    for (uint32_t i = 0; i < u->partitions && rc == 0; i++) {
        char *key = redis_url_key(u, i);
        const redis_slot_range *node = key ? redis_slots_find(&slots, redis_key_slot(key, strlen(key))) : NULL;
        if (!node) {
            snprintf(err, errlen, key ? "no master serves the slot of \"%s\"" : "out of memory", key);
            rc = -1;
        } else {
            probe p = { .u = u, .role = role, .key = key, .err = err, .errlen = errlen };
            rc = ask(&p, node->host, node->port);
        }
        free(key);
    }
    redis_slots_free(&slots);
    return rc;
}
