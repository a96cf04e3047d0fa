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
    char *run_id;             /* the server's run_id (INFO server), 48 bytes */
    redis_conn *c;
    int step, steps;          /* answers taken, answers expected */
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

/* What a server's refusal means here, in a user's words where we know. */
static void refused(probe *p, const char *what, const char *why)
{
    if (!strncmp(why, "NOAUTH", 6))
        finish(p, "%s (give the password as redis://:PASSWORD@HOST:PORT)%s", why, "");
    else if (!strncmp(why, "WRONGPASS", 9) || strstr(why, "invalid password"))
        finish(p, "%s (check the :PASSWORD@ part of the URL)%s", why, "");
    else
        finish(p, what, why, "");
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
    int step = p->step++;
    if (p->role < 0) {
        if (redis_slots_parse(p->slots, r, d, p->host) != 0)
            refused(p, "CLUSTER SLOTS: %s%s", r->nodes[0].type == RESP_ERROR ? buf : "unexpected reply");
        else
            finish(p, NULL, NULL, NULL);
        return;
    }
    if (step == 0) { /* TYPE key */
        if (r->nodes[0].type == RESP_ERROR) {
            refused(p, "%s%s", buf);
        } else if (strcmp(buf, "stream") != 0 && strcmp(buf, "none") != 0) {
            char why[700];
            snprintf(why, sizeof why, "key \"%s\" holds a %s, not a stream", p->key, buf);
            finish(p, "%s%s", why, "");
        }
    } else if (step == 1 && p->role == REDIS_URL_SOURCE) { /* XGROUP CREATE */
        if (r->nodes[0].type == RESP_ERROR && strncmp(buf, "BUSYGROUP", 9) != 0) {
            char why[400];
            snprintf(why, sizeof why, "XGROUP CREATE %s %s %s (parameter \"start\"): %s", p->key, p->u->group,
                     p->u->start, buf);
            finish(p, "%s%s", why, "");
        }
    } else if (r->nodes[0].type == RESP_BULK && p->run_id) { /* INFO server */
        const char *info = resp_str(&r->nodes[0], d);
        size_t n = r->nodes[0].n;
        const char *k = memmem(info, n, "run_id:", 7);
        if (k) {
            size_t i = 0;
            for (k += 7; k < info + n && *k != '\r' && *k != '\n' && i < 47; k++)
                p->run_id[i++] = *k;
            p->run_id[i] = 0;
        }
    }
    if (p->step == p->steps)
        finish(p, NULL, NULL, NULL);
}

static void state(void *ud, int st, const char *why)
{
    probe *p = ud;
    if (st == REDIS_DOWN) {
        if (!strncmp(why, "AUTH: ", 6))
            refused(p, "%s%s", why + 6);
        else
            finish(p, "cannot connect: %s%s", why, "");
        return;
    }
    int rc;
    if (p->role < 0) {
        const char *slots[] = { "CLUSTER", "SLOTS" };
        p->steps = 1;
        rc = redis_commandv(p->c, answered, p, 2, slots);
    } else {
        const char *type[] = { "TYPE", p->key };
        const char *group[] = { "XGROUP", "CREATE", p->key, p->u->group, p->u->start, "MKSTREAM" };
        const char *info[] = { "INFO", "server" };
        p->steps = p->role == REDIS_URL_SOURCE ? 3 : 2;
        rc = redis_commandv(p->c, answered, p, 2, type);
        if (!rc && p->role == REDIS_URL_SOURCE)
            rc = redis_commandv(p->c, answered, p, 6, group);
        if (!rc)
            rc = redis_commandv(p->c, answered, p, 2, info);
    }
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

int rs_probe(const redis_url *u, int role, char run_id[48], char *err, size_t errlen)
{
    run_id[0] = 0;
    if (!u->cluster) {
        probe p = { .u = u, .role = role, .key = u->stream, .run_id = run_id, .err = err, .errlen = errlen };
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
            /* (a cluster's identity: the run_id of partition 0's master,
             * whose slot a paired output's partition 0 shares) */
            probe p = { .u = u, .role = role, .key = key, .run_id = i == 0 ? run_id : NULL, .err = err,
                        .errlen = errlen };
            rc = ask(&p, node->host, node->port);
        }
        free(key);
    }
    redis_slots_free(&slots);
    return rc;
}
