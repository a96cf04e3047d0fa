/*
 * redis_url.h: the Redis Streams source and sink names, parsed and checked
 * (plain C, no libuv: spec/c/test_redis_url.c).
 *
 *   redis://[:PASSWORD@]HOST:PORT?stream=KEY&group=GROUP[&consumer=NAME]
 *       [&field=data][&count=N][&claim_idle_ms=30000][&max_deliveries=5]
 *       [&start=0|$][&until=empty]                          (a source)
 *   redis://[:PASSWORD@]HOST:PORT?stream=KEY[&field=data][&maxlen=N]
 *                                                           (a sink)
 *   redis+cluster://HOST:PORT[,HOST:PORT...]?stream=KEY&partitions=P&...
 *
 * Values are percent-decoded. Every mistake is refused with a message that
 * names the parameter ("unknown parameter \"strem\"", "\"group\" is
 * required", ...): the caller prefixes the flag and exits 2.
 */
#ifndef MW_REDIS_URL_H
#define MW_REDIS_URL_H

#include <stddef.h>
#include <stdint.h>

#define REDIS_URL_MAX_HOSTS 16
#define REDIS_URL_MAX_PARTITIONS 1024

typedef struct redis_host {
    char *host;  /* owned */
    int port;
} redis_host;

typedef struct redis_url {
    int cluster;              /* redis+cluster:// */
    char *password;           /* owned, or NULL */
    redis_host hosts[REDIS_URL_MAX_HOSTS];
    size_t nhosts;            /* 1 for redis:// */
    char *stream;             /* owned */
    char *field;              /* owned; "data" by default */
    /* source */
    char *group, *consumer;   /* owned; consumer NULL: HOSTNAME-PID */
    uint32_t count;           /* 0: free capacity */
    uint64_t claim_idle_ms;
    uint32_t max_deliveries;
    char *start;              /* owned: "0", "$" or an id */
    int until_empty;
    /* sink */
    uint64_t maxlen;          /* 0: none */
    /* cluster */
    uint32_t partitions;      /* 0 for redis:// */
} redis_url;

enum { REDIS_URL_SOURCE, REDIS_URL_SINK };

/* Is `name` a Redis URL (either scheme)? */
int redis_url_is(const char *name);

/* Parse `s` for use as `role`. 0, or -1 with a message in err (u freed). */
int redis_url_parse(redis_url *u, const char *s, int role, char *err, size_t errlen);

void redis_url_free(redis_url *u);

/* Do a and b name the same server (first host, port, password)? */
int redis_url_same_node(const redis_url *a, const redis_url *b);

/* Does the output URL `out` name the stream the input URL `in` reads (the
 * same node, or cluster, and stream)? 0 also when either is not a valid
 * URL (opening it says why). */
int redis_url_same_stream(const char *in, const char *out);

/* The stream key of partition i: KEY, or KEY{i} in a cluster. malloc'd. */
char *redis_url_key(const redis_url *u, uint32_t i);

#endif
