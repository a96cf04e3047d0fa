/* pool.c: idle keep-alive connections (contract in pool.h).
 *
 * Per loop thread: a connection's handles belong to the loop that opened
 * it, so each thread (--workers N) pools its own, and nothing here is
 * shared or locked. */
#define _GNU_SOURCE
#include "pool.h"

#include <stdlib.h>
#include <string.h>

typedef struct bucket {
    char *key;
    net_conn *head; /* most recently put first */
    size_t n;
    struct bucket *next;
} bucket;

static _Thread_local bucket *buckets;

static bucket *find(const char *key, int create)
{
    for (bucket *b = buckets; b; b = b->next)
        if (strcmp(b->key, key) == 0)
            return b;
    if (!create)
        return NULL;
    bucket *b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    b->key = strdup(key);
    b->next = buckets;
    buckets = b;
    return b;
}

static void unlink_conn(bucket *b, net_conn *c)
{
    for (net_conn **pp = &b->head; *pp; pp = &(*pp)->pool_next) {
        if (*pp == c) {
            *pp = c->pool_next;
            c->pool_next = NULL;
            b->n--;
            return;
        }
    }
}

static void drop(net_conn *c)
{
    bucket *b = c->pool;
    if (b)
        unlink_conn(b, c);
    c->pool = NULL;
    uv_timer_stop(&c->timer);
    net_conn_close(c);
}

/* The peer spoke or hung up while the connection was idle: unusable. */
static void idle_read(net_conn *c, void *ud)
{
    (void)ud;
    drop(c);
}

/* The idle timer is left running while a connection is lent out (a stop
 * and a start per request cost ~450 instructions in libuv's heap): when it
 * fires, a connection in use is left alone, and one pooled again since is
 * given the rest of its new idle time. */
static void idle_expired(uv_timer_t *t)
{
    net_conn *c = t->data;
    if (!c->pool || !c->idle_deadline)
        return;
    uint64_t now = uv_now(c->loop);
    if (now >= c->idle_deadline)
        drop(c);
    else
        uv_timer_start(&c->timer, idle_expired, c->idle_deadline - now, 0);
}

net_conn *net_pool_get(const char *key)
{
    bucket *b = find(key, 0);
    while (b && b->head) {
        net_conn *c = b->head;
        unlink_conn(b, c);
        c->pool = NULL; /* (its idle timer may still fire: idle_expired ignores it) */
        net_conn_read_detach(c); /* the taker sets its own reader */
        if (c->eof || c->rerr || net_conn_buffered(c)) {
            net_conn_close(c);
            continue;
        }
        c->reuses++;
        return c;
    }
    return NULL;
}

void net_pool_put(net_conn *c, const char *key, uint64_t idle_ms, size_t size)
{
    bucket *b = find(key, 1);
    if (!b || size == 0) {
        net_conn_close(c);
        return;
    }
    if (b->n >= size) {
        /* Close the least recently used (the tail). */
        net_conn *last = b->head;
        while (last && last->pool_next)
            last = last->pool_next;
        if (last)
            drop(last);
    }
    c->pool = b;
    c->pool_next = b->head;
    b->head = c;
    b->n++;
    if (net_conn_read_start(c, idle_read, NULL) != 0) {
        drop(c);
        return;
    }
    c->idle_deadline = idle_ms ? uv_now(c->loop) + idle_ms : 0;
    /* (a timer still running from an earlier, longer idle time is moved
     * earlier; a shorter one is re-armed when it fires) */
    if (idle_ms && (!uv_is_active((uv_handle_t *)&c->timer) || uv_timer_get_due_in(&c->timer) > idle_ms))
        uv_timer_start(&c->timer, idle_expired, idle_ms, 0);
}

size_t net_pool_count(const char *key)
{
    size_t n = 0;
    for (bucket *b = buckets; b; b = b->next)
        if (!key || strcmp(b->key, key) == 0)
            n += b->n;
    return n;
}

void net_pool_close_all(void)
{
    while (buckets) {
        bucket *b = buckets;
        buckets = b->next;
        while (b->head)
            drop(b->head);
        free(b->key);
        free(b);
    }
}
