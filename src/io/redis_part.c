/*
 * redis_part.c: a Redis Streams partition's two connections (shared state
 * in redis_int.h): making them, their up and down (the group checked again
 * after each connect, this consumer's own pending entries re-read), the
 * cluster's redirections (MOVED, ASK, TRYAGAIN...) and the slot map read
 * again after a MOVED. What is read over them is redis_read.c.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../net/redis_cluster.h"
#include "../util/log.h"
#include "redis_int.h"

#define MAX_REPLY (256u * 1024 * 1024)

/* ---- the group and the connections ------------------------------------------------- */

static void group_checked(void *ud, const resp_reader *r, const char *d, const char *err)
{
    rs_part *p = ud;
    rs_source *s = p->src;
    p->group_asked = 0;
    if (err || s->closing)
        return;
    if (r->nodes[0].type == RESP_ERROR) {
        rs_reply_error(p, r, d, "XPENDING");
        return;
    }
    p->group_ready = 1;
    rs_claim(p);
    rs_fetch(p);
}

/* After each (re)connect: is the group (made when the source opened)
 * still there? */
static void ensure_group(rs_part *p)
{
    rs_source *s = p->src;
    if (p->group_ready || p->group_asked || !p->cmd_up)
        return;
    const char *argv[] = { "XPENDING", p->key, s->u.group };
    if (redis_commandv(p->cmd, group_checked, p, 3, argv) == 0)
        p->group_asked = 1;
}

static void announce(rs_source *s, int up, const char *why)
{
    if (!up && !s->announced_down && !s->closing) {
        s->announced_down = 1;
        mw_log(MW_LOG_WARN, "--input %s: connection lost (%s); reconnecting, in-flight records kept",
                s->name, why);
    } else if (up && s->announced_down) {
        int all = 1;
        for (uint32_t i = 0; i < s->nparts; i++)
            all &= s->parts[i].rd_up && s->parts[i].cmd_up;
        if (all) {
            s->announced_down = 0;
            mw_log(MW_LOG_INFO, "--input %s: reconnected", s->name);
        }
    }
}

static void rd_state(void *ud, int state, const char *why);
static void cmd_state(void *ud, int state, const char *why);

/* The most bytes one reply may take (256 MiB). MOONWAIT_REDIS_MAX_REPLY
 * lowers it, for the spec that checks a read over it asks for fewer. */
static size_t max_reply(void)
{
    const char *e = getenv("MOONWAIT_REDIS_MAX_REPLY");
    long long v = e ? strtoll(e, NULL, 10) : 0;
    return v >= 4096 && v < (long long)MAX_REPLY ? (size_t)v : MAX_REPLY;
}

/* Connect p's two connections to its node. 0, or -1 (out of memory). */
int rs_part_connect(rs_part *p)
{
    rs_source *s = p->src;
    p->rd = redis_conn_new(s->loop, p->host, p->port, s->u.password, max_reply(), rd_state, p);
    p->cmd = redis_conn_new(s->loop, p->host, p->port, s->u.password, max_reply(), cmd_state, p);
    if (!p->rd || !p->cmd)
        return -1;
    redis_conn_set_asking(p->rd, p->asking);
    redis_conn_set_reply_timeout(p->rd, RS_BLOCK_MS + 30000);
    redis_conn_set_asking(p->cmd, p->asking);
    return 0;
}

/* Drop p's connections (what was out is forgotten: its callbacks never
 * run) and connect to host:port. */
static void move_part(rs_part *p, const char *host, int port, int asking)
{
    rs_source *s = p->src;
    s->slots_asked = 0; /* (a CLUSTER SLOTS on the dropped connection is forgotten) */
    redis_conn_close(p->rd);
    redis_conn_close(p->cmd);
    p->rd = p->cmd = NULL;
    p->rd_up = p->cmd_up = 0;
    p->fetching = p->claiming = p->group_asked = p->group_ready = 0;
    p->requested = p->claim_requested = 0;
    p->claim_due = 1;
    rs_commit_lost(p);
    for (rs_entry *e = p->ready; e; e = e->next)
        if (!e->deliveries)
            e->deliveries = 1; /* (its XPENDING was dropped) */
    p->counts_answered = p->counts_asked;
    snprintf(p->host, sizeof p->host, "%s", host);
    p->port = port;
    p->asking = asking;
    if (rs_part_connect(p) != 0)
        rs_fail(s, "out of memory");
}

void rs_reply_error(rs_part *p, const resp_reader *r, const char *d, const char *what)
{
    char buf[300];
    redis_str(r, d, 0, buf, sizeof buf);
    if (rs_redirected(p, buf))
        return;
    if (!strncmp(buf, "NOGROUP", 7))
        rs_group_gone(p);
    else
        rs_fail(p->src, "%s %s: %s", what, p->key, buf);
}

int rs_redirected(rs_part *p, const char *err)
{
    int ask, port;
    uint16_t slot;
    char host[256];
    if (redis_redirect_parse(err, &ask, &slot, host, sizeof host, &port)) {
        if (!host[0])
            snprintf(host, sizeof host, "%s", p->host); /* (the node asked) */
        mw_log(MW_LOG_INFO, ask ? "--input %s: %s is migrating to %s:%d (ASK)"
                            : "--input %s: %s moved to %s:%d (MOVED)",
                p->src->name, p->key, host, port);
        if (!ask)
            p->src->slots_stale = 1; /* (the map is read again once p is back) */
        move_part(p, host, port, ask);
        return 1;
    }
    if (!strncmp(err, "TRYAGAIN", 8) || !strncmp(err, "CLUSTERDOWN", 11) || !strncmp(err, "LOADING", 7)) {
        /* A slot in migration, a cluster healing, a server loading its
         * data: reconnect after the back-off and go on. */
        if (p->asking)
            move_part(p, p->host, p->port, 0);
        else
            redis_conn_reset(p->cmd, err);
        return 1;
    }
    return 0;
}

/* The connection was dropped because a reply was over the reply limit
 * (entries of megabytes, COUNT entries at once): the same read after the
 * reconnect would be too, for ever. Ask for fewer from now on: half as
 * many, or as many entries of the size of the one that did not fit as
 * half the limit holds, whichever is fewer (each try is a delivery of the
 * entries it took, so few tries); an entry that does not fit alone fails
 * the run. */
static void too_big(rs_part *p, const char *why, const char *what, size_t sent, size_t *cap)
{
    if (!why || !strstr(why, "max_reply_bytes"))
        return;
    if (sent <= 1) {
        rs_fail(p->src, "%s of one entry of %s: %s", what, p->key, why);
        return;
    }
    const char *bulk = strstr(why, "a bulk of ");
    unsigned long long size = bulk ? strtoull(bulk + 10, NULL, 10) : 0;
    size_t fit = size ? (size_t)(max_reply() / 2 / (size + 64)) : sent;
    *cap = sent / 2 < fit ? sent / 2 : fit;
    if (!*cap)
        *cap = 1;
    mw_log(MW_LOG_WARN, "--input %s: %s of %zu entries was over the reply limit; asking for %zu at a time",
            p->src->name, what, sent, *cap);
}

static void rd_state(void *ud, int state, const char *why)
{
    rs_part *p = ud;
    if (state != REDIS_UP)
        too_big(p, why, "XREADGROUP", p->read_sent, &p->read_cap);
    p->rd_up = state == REDIS_UP;
    p->fetching = 0;
    p->requested = 0;
    announce(p->src, p->rd_up, why);
    if (p->rd_up) {
        /* Replies lost with the connection left entries pending on us:
         * read those first. */
        p->pel = 1;
        strcpy(p->pel_cursor, "0");
        p->new_empty = 0;
        rs_fetch(p);
    }
}

/* CLUSTER SLOTS answered after a MOVED: every partition whose slot's
 * master changed moves too, before its own commands find out. */
static void slots_read(void *ud, const resp_reader *r, const char *d, const char *err)
{
    rs_part *p = ud;
    rs_source *s = p->src;
    s->slots_asked = 0;
    redis_slots m;
    if (err || s->closing || redis_slots_parse(&m, r, d, p->host) != 0)
        return; /* (each partition still follows its own MOVED) */
    s->slots_stale = 0;
    for (uint32_t i = 0; i < s->nparts; i++) {
        rs_part *q = &s->parts[i];
        const redis_slot_range *n = redis_slots_find(&m, redis_key_slot(q->key, strlen(q->key)));
        if (n && !q->asking && (strcmp(n->host, q->host) != 0 || n->port != q->port)) {
            mw_log(MW_LOG_INFO, "--input %s: %s moved to %s:%d (CLUSTER SLOTS)", s->name, q->key, n->host,
                    n->port);
            move_part(q, n->host, n->port, 0);
        }
    }
    redis_slots_free(&m);
}

static void cmd_state(void *ud, int state, const char *why)
{
    rs_part *p = ud;
    if (state != REDIS_UP)
        too_big(p, why, "XAUTOCLAIM", p->claim_sent, &p->claim_cap);
    p->cmd_up = state == REDIS_UP;
    p->group_asked = p->claiming = 0;
    announce(p->src, p->cmd_up, why);
    if (p->cmd_up) {
        p->group_ready = 0;
        ensure_group(p);
        rs_commit_kick(p);
        rs_source *s = p->src;
        if (s->u.cluster && s->slots_stale && !s->slots_asked) {
            const char *argv[] = { "CLUSTER", "SLOTS" };
            if (redis_commandv(p->cmd, slots_read, p, 2, argv) == 0)
                s->slots_asked = 1;
        }
    }
}

