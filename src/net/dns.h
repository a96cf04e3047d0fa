/*
 * dns.h: name resolution that never blocks the loop. Numeric addresses
 * are parsed at once; names go through uv_getaddrinfo (the thread pool)
 * and are cached for DNS_TTL_MS. IPv4 and IPv6.
 */
#ifndef MW_DNS_H
#define MW_DNS_H

#include <netinet/in.h>
#include <stddef.h>
#include <uv.h>

#define DNS_MAX_ADDRS 8

typedef struct dns_result {
    struct sockaddr_storage addrs[DNS_MAX_ADDRS]; /* port already set */
    size_t n;
} dns_result;

typedef struct dns_query dns_query;

/* status 0 with res, or a uv error (UV_EAI_NONAME, ...). */
typedef void (*dns_cb)(void *ud, int status, const dns_result *res);

/* Resolve host:port. Answers synchronously (returns 1 and fills *now) for
 * numeric addresses and cache hits; otherwise returns 0 and calls cb later
 * unless dns_cancel() is called first. *q receives the query handle for
 * dns_cancel. Returns a negative uv error if the query cannot start. */
int dns_resolve(uv_loop_t *loop, const char *host, int port, dns_result *now,
                dns_cb cb, void *ud, dns_query **q);

/* The callback will not be called; memory is released when the thread
 * pool lets go of the request. */
void dns_cancel(dns_query *q);

/* Drop the calling thread's cache (at its exit). */
void dns_cache_clear(void);

#endif
