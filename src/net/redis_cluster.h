/*
 * redis_cluster.h: what a Redis Cluster client needs besides a connection
 * (plain C: spec/c/test_redis_url.c tests it): the slot of a key (CRC16 of
 * its hash tag, as the cluster spec defines it), the slot map from CLUSTER
 * SLOTS, and the MOVED / ASK redirections.
 */
#ifndef MW_REDIS_CLUSTER_H
#define MW_REDIS_CLUSTER_H

#include <stddef.h>
#include <stdint.h>

#include "resp.h"

#define REDIS_SLOTS 16384

/* The slot of key[0..len): of its {hash tag} when it has a non-empty one. */
uint16_t redis_key_slot(const char *key, size_t len);

typedef struct redis_slot_range {
    uint16_t lo, hi;
    char host[256];
    int port;
} redis_slot_range;

typedef struct redis_slots {
    redis_slot_range *r; /* owned */
    size_t n;
} redis_slots;

/* Read a CLUSTER SLOTS reply; an empty host means the one asked
 * (`asked_host`). 0, or -1 (not such a reply, or out of memory). */
int redis_slots_parse(redis_slots *m, const resp_reader *r, const char *d, const char *asked_host);

/* The master serving `slot`, or NULL. */
const redis_slot_range *redis_slots_find(const redis_slots *m, uint16_t slot);

void redis_slots_free(redis_slots *m);

/* A redirection: "MOVED 3999 127.0.0.1:6381" or "ASK ...". 1 with *ask,
 * *slot, host and *port set (host "" for Redis 7's "MOVED 3999 :6381":
 * the host that was asked); 0 when err is not one. */
int redis_redirect_parse(const char *err, int *ask, uint16_t *slot, char *host, size_t hostlen, int *port);

#endif
