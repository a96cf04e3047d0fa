/*
 * dns.c: asynchronous resolution with a small cache (contract in dns.h).
 *
 * The cache is a fixed array with round-robin replacement: enough for the
 * handful of services a pipeline talks to, and no unbounded growth. One per
 * loop thread (--workers N): its expiry is on that loop's clock, and a
 * lookup stays a few compares with no lock; a name is resolved once per
 * worker.
 */
#define _GNU_SOURCE
#include "dns.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>

#define DNS_TTL_MS 30000
#define CACHE_SLOTS 32

typedef struct cache_entry {
    char *host;
    dns_result res; /* port 0 */
    uint64_t expires;
} cache_entry;

static _Thread_local cache_entry cache[CACHE_SLOTS];
static _Thread_local size_t cache_next;

struct dns_query {
    uv_getaddrinfo_t req;
    dns_cb cb;
    void *ud;
    char *host;
    int port;
    int cancelled;
};

static void set_port(dns_result *r, int port)
{
    for (size_t i = 0; i < r->n; i++) {
        if (r->addrs[i].ss_family == AF_INET)
            ((struct sockaddr_in *)&r->addrs[i])->sin_port = htons((uint16_t)port);
        else
            ((struct sockaddr_in6 *)&r->addrs[i])->sin6_port = htons((uint16_t)port);
    }
}

static int lookup_cache(uv_loop_t *loop, const char *host, int port, dns_result *out)
{
    uint64_t now = uv_now(loop);
    for (size_t i = 0; i < CACHE_SLOTS; i++) {
        if (cache[i].host && strcmp(cache[i].host, host) == 0 && cache[i].expires > now) {
            *out = cache[i].res;
            set_port(out, port);
            return 1;
        }
    }
    return 0;
}

static void store_cache(uv_loop_t *loop, const char *host, const dns_result *r)
{
    cache_entry *e = NULL;
    for (size_t i = 0; i < CACHE_SLOTS && !e; i++)
        if (cache[i].host && strcmp(cache[i].host, host) == 0)
            e = &cache[i];
    if (!e) {
        e = &cache[cache_next];
        cache_next = (cache_next + 1) % CACHE_SLOTS;
        free(e->host);
        e->host = strdup(host);
    }
    e->res = *r;
    e->expires = uv_now(loop) + DNS_TTL_MS;
}

void dns_cache_clear(void)
{
    for (size_t i = 0; i < CACHE_SLOTS; i++) {
        free(cache[i].host);
        cache[i].host = NULL;
    }
}

static void resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *ai)
{
    dns_query *q = req->data;
    dns_result r;
    memset(&r, 0, sizeof r);
    if (status == 0) {
        /* IPv4 first: servers on loopback most often listen there, and a
         * refused ::1 costs a round trip before the fallback. */
        for (int pass = 0; pass < 2; pass++)
            for (struct addrinfo *p = ai; p && r.n < DNS_MAX_ADDRS; p = p->ai_next) {
                int want = pass == 0 ? AF_INET : AF_INET6;
                if (p->ai_family != want || p->ai_addrlen > sizeof r.addrs[0])
                    continue;
                memcpy(&r.addrs[r.n++], p->ai_addr, p->ai_addrlen);
            }
        if (r.n == 0)
            status = UV_EAI_NONAME;
        else
            store_cache(req->loop, q->host, &r);
    }
    uv_freeaddrinfo(ai);
    if (!q->cancelled) {
        set_port(&r, q->port);
        q->cb(q->ud, status, &r);
    }
    free(q->host);
    free(q);
}

int dns_resolve(uv_loop_t *loop, const char *host, int port, dns_result *now,
                dns_cb cb, void *ud, dns_query **qout)
{
    memset(now, 0, sizeof *now);
    *qout = NULL;
    struct sockaddr_in a4;
    struct sockaddr_in6 a6;
    if (uv_ip4_addr(host, port, &a4) == 0) {
        memcpy(&now->addrs[0], &a4, sizeof a4);
        now->n = 1;
        return 1;
    }
    if (uv_ip6_addr(host, port, &a6) == 0) {
        memcpy(&now->addrs[0], &a6, sizeof a6);
        now->n = 1;
        return 1;
    }
    if (lookup_cache(loop, host, port, now))
        return 1;
    dns_query *q = calloc(1, sizeof *q);
    if (!q)
        return UV_ENOMEM;
    q->cb = cb;
    q->ud = ud;
    q->host = strdup(host);
    q->port = port;
    q->req.data = q;
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int rc = uv_getaddrinfo(loop, &q->req, resolved, host, NULL, &hints);
    if (rc != 0) {
        free(q->host);
        free(q);
        return rc;
    }
    *qout = q;
    return 0;
}

void dns_cancel(dns_query *q)
{
    if (!q)
        return;
    q->cancelled = 1;
    /* If the pool has not started it, the callback runs with UV_ECANCELED
     * and frees q; if it has, it runs when done and frees q. */
    uv_cancel((uv_req_t *)&q->req);
}
