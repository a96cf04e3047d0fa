/*
 * pool.h: idle keep-alive connections, shared by the cosocket and the HTTP
 * client, keyed by a string ("host:port", or what the user named). One
 * pool per process (one loop).
 *
 * An idle connection is watched: any byte or EOF from the peer, or
 * `idle_ms` without use, closes it and drops it from the pool. A key holds
 * at most `size` idle connections; putting one more closes the oldest.
 * A connection taken from the pool belongs to the taker.
 */
#ifndef MW_POOL_H
#define MW_POOL_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "conn.h"

/* An idle connection for `key`, or NULL. Ownership passes to the caller. */
net_conn *net_pool_get(const char *key);

/* Hand `c` (connected, nothing unread) to the pool. Ownership passes. */
void net_pool_put(net_conn *c, const char *key, uint64_t idle_ms, size_t size);

/* Idle connections held for `key` (NULL: all keys). */
size_t net_pool_count(const char *key);

/* Close every idle connection of the calling thread's pool (at its exit,
 * before its loop closes). */
void net_pool_close_all(void);

#endif
