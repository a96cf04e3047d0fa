/* redis_url.c: Redis Streams names (contract in redis_url.h). */
#define _GNU_SOURCE
#include "redis_url.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_CLAIM_IDLE_MS 30000
#define DEFAULT_MAX_DELIVERIES 5

int redis_url_is(const char *name)
{
    /* (rediss://, redis+sentinel://... too: refused by the parser with a
     * message, rather than opened as a file of that name) */
    const char *sep = strstr(name, "://");
    return strncmp(name, "redis", 5) == 0 && sep && sep - name <= 16 && !memchr(name, '/', (size_t)(sep - name));
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* s[0..n) percent-decoded, malloc'd; NULL on a bad escape, a NUL byte, or
 * out of memory (*bad set for the first two). */
static char *decode(const char *s, size_t n, int *bad)
{
    char *o = malloc(n + 1);
    size_t k = 0;
    *bad = 0;
    if (!o)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%') {
            int a = i + 1 < n ? hexval(s[i + 1]) : -1, b = i + 2 < n ? hexval(s[i + 2]) : -1;
            int h = a < 0 || b < 0 ? -1 : a * 16 + b;
            if (h <= 0) {
                free(o);
                *bad = 1;
                return NULL;
            }
            o[k++] = (char)h;
            i += 2;
        } else {
            o[k++] = s[i];
        }
    }
    o[k] = 0;
    return o;
}

static int fail(redis_url *u, char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail(redis_url *u, char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    redis_url_free(u);
    return -1;
}

/* A whole decimal number in [min, max]: digits only (strtoull would skip
 * leading white space and take a sign). */
static int number(const char *v, uint64_t min, uint64_t max, uint64_t *out)
{
    if (*v < '0' || *v > '9')
        return -1;
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (errno || *end || x < min || x > max)
        return -1;
    *out = x;
    return 0;
}

/* HOST:PORT (or [V6]:PORT) of length n into h. */
static int parse_host(redis_host *h, const char *s, size_t n)
{
    const char *colon;
    const char *hs = s;
    size_t hn;
    if (n && s[0] == '[') {
        const char *close = memchr(s, ']', n);
        if (!close || close + 1 >= s + n || close[1] != ':')
            return -1;
        hs = s + 1;
        hn = (size_t)(close - s - 1);
        colon = close + 1;
    } else {
        colon = memrchr(s, ':', n);
        if (!colon)
            return -1;
        hn = (size_t)(colon - s);
    }
    if (!hn)
        return -1;
    char port[8];
    size_t pn = (size_t)(s + n - colon - 1);
    if (!pn || pn >= sizeof port)
        return -1;
    memcpy(port, colon + 1, pn);
    port[pn] = 0;
    uint64_t p;
    if (number(port, 1, 65535, &p) != 0)
        return -1;
    h->host = strndup(hs, hn);
    h->port = (int)p;
    return h->host ? 0 : -1;
}

static const char *const SOURCE_PARAMS[] = { "stream", "group", "consumer", "field", "count", "claim_idle_ms",
                                              "max_deliveries", "start", "until", "partitions", NULL };
static const char *const SINK_PARAMS[] = { "stream", "field", "maxlen", "partitions", NULL };

static int known(const char *const *list, const char *k)
{
    for (; *list; list++)
        if (strcmp(*list, k) == 0)
            return 1;
    return 0;
}

/* One key=value: store it in u. 0, or -1 with err. */
static int param(redis_url *u, int role, const char *k, const char *v, char *err, size_t errlen)
{
    const char *const *list = role == REDIS_URL_SOURCE ? SOURCE_PARAMS : SINK_PARAMS;
    if (!known(list, k)) {
        int other = known(role == REDIS_URL_SOURCE ? SINK_PARAMS : SOURCE_PARAMS, k);
        if (other)
            snprintf(err, errlen, "parameter \"%s\" is for %s, not %s", k,
                     role == REDIS_URL_SOURCE ? "an output" : "an input",
                     role == REDIS_URL_SOURCE ? "an input" : "an output");
        else
            snprintf(err, errlen, "unknown parameter \"%s\" (known: %s)", k,
                     role == REDIS_URL_SOURCE
                         ? "stream, group, consumer, field, count, claim_idle_ms, max_deliveries, start, until, "
                           "partitions"
                         : "stream, field, maxlen, partitions");
        return -1;
    }
    char **slot = NULL;
    if (!strcmp(k, "stream"))
        slot = &u->stream;
    else if (!strcmp(k, "group"))
        slot = &u->group;
    else if (!strcmp(k, "consumer"))
        slot = &u->consumer;
    else if (!strcmp(k, "field"))
        slot = &u->field;
    else if (!strcmp(k, "start"))
        slot = &u->start;
    if (slot) {
        if (!*v) {
            snprintf(err, errlen, "parameter \"%s\" is empty", k);
            return -1;
        }
        if (*slot) {
            snprintf(err, errlen, "parameter \"%s\" is given twice", k);
            return -1;
        }
        char *copy = strdup(v);
        if (!copy) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        free(*slot);
        *slot = copy;
        return 0;
    }
    uint64_t x;
    if (!strcmp(k, "until")) {
        if (strcmp(v, "empty") != 0) {
            snprintf(err, errlen, "parameter \"until\" must be \"empty\", not \"%s\"", v);
            return -1;
        }
        u->until_empty = 1;
        return 0;
    }
    struct {
        const char *name;
        uint64_t min, max;
    } nums[] = { { "count", 1, 100000 }, { "claim_idle_ms", 1, 86400000ull * 365 }, { "max_deliveries", 1, 1000000 },
                 { "maxlen", 1, UINT64_MAX / 2 }, { "partitions", 1, REDIS_URL_MAX_PARTITIONS } };
    for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++) {
        if (strcmp(k, nums[i].name) != 0)
            continue;
        if (number(v, nums[i].min, nums[i].max, &x) != 0) {
            snprintf(err, errlen, "parameter \"%s\" must be a whole number from %llu to %llu, not \"%s\"", k,
                     (unsigned long long)nums[i].min, (unsigned long long)nums[i].max, v);
            return -1;
        }
        if (!strcmp(k, "count"))
            u->count = (uint32_t)x;
        else if (!strcmp(k, "claim_idle_ms"))
            u->claim_idle_ms = x;
        else if (!strcmp(k, "max_deliveries"))
            u->max_deliveries = (uint32_t)x;
        else if (!strcmp(k, "maxlen"))
            u->maxlen = x;
        else
            u->partitions = (uint32_t)x;
        return 0;
    }
    return 0;
}

int redis_url_parse(redis_url *u, const char *s, int role, char *err, size_t errlen)
{
    memset(u, 0, sizeof *u);
    u->claim_idle_ms = DEFAULT_CLAIM_IDLE_MS;
    u->max_deliveries = DEFAULT_MAX_DELIVERIES;
    const char *p;
    if (strncmp(s, "redis://", 8) == 0) {
        p = s + 8;
    } else if (strncmp(s, "redis+cluster://", 16) == 0) {
        u->cluster = 1;
        p = s + 16;
    } else if (strncmp(s, "rediss://", 9) == 0) {
        return fail(u, err, errlen, "TLS to Redis (rediss://) is not supported: use redis:// on a trusted network");
    } else {
        return fail(u, err, errlen, "not a redis:// or redis+cluster:// URL");
    }
    const char *q = strchr(p, '?');
    /* (the last '@': a password may hold one) */
    const char *auth_end = memrchr(p, '@', q ? (size_t)(q - p) : strlen(p));
    int bad;
    if (!auth_end && p[0] == ':')
        return fail(u, err, errlen, "expected :PASSWORD@HOST:PORT (%%-escape an @, ?, /, # or %% in the password: "
                                    "%%40, %%3F, %%2F, %%23, %%25)");
    if (auth_end) {
        /* [:PASSWORD@] (a user name is not supported: Redis 6 ACL users
         * would need "user:password"; say so rather than guess). */
        if (p[0] != ':')
            return fail(u, err, errlen, "the password goes as :PASSWORD@ (a user name is not supported)");
        u->password = decode(p + 1, (size_t)(auth_end - p - 1), &bad);
        if (!u->password)
            return fail(u, err, errlen, bad ? "bad %%-escape in the password" : "out of memory");
        if (!u->password[0])
            return fail(u, err, errlen, "the password is empty");
        p = auth_end + 1;
    }
    const char *hosts_end = q ? q : p + strlen(p);
    if (hosts_end > p && hosts_end[-1] == '/')
        hosts_end--;
    while (p < hosts_end) {
        const char *comma = memchr(p, ',', (size_t)(hosts_end - p));
        const char *e = comma ? comma : hosts_end;
        if (!u->cluster && comma)
            return fail(u, err, errlen, "several hosts need redis+cluster://");
        if (u->nhosts == REDIS_URL_MAX_HOSTS)
            return fail(u, err, errlen, "more than %d hosts", REDIS_URL_MAX_HOSTS);
        if (parse_host(&u->hosts[u->nhosts], p, (size_t)(e - p)) != 0) {
            if (u->password) /* (what is there may be the rest of a password with an @ in it) */
                return fail(u, err, errlen, "bad host: expected HOST:PORT after the password (%%-escape an @, ?, "
                                            "/, # or %% in it: %%40, %%3F, %%2F, %%23, %%25)");
            return fail(u, err, errlen, "bad host \"%.*s\": expected HOST:PORT", (int)(e - p), p);
        }
        u->nhosts++;
        p = comma ? comma + 1 : e;
    }
    if (!u->nhosts)
        return fail(u, err, errlen, "no HOST:PORT");
    if (!q)
        return fail(u, err, errlen, "parameter \"stream\" is required");
    for (p = q + 1; *p;) {
        const char *amp = strchr(p, '&');
        const char *e = amp ? amp : p + strlen(p);
        const char *eq = memchr(p, '=', (size_t)(e - p));
        if (e == p) {
            p = amp ? amp + 1 : e;
            continue;
        }
        if (!eq)
            return fail(u, err, errlen, "parameter \"%.*s\" has no value (expected name=value)", (int)(e - p), p);
        char *k = decode(p, (size_t)(eq - p), &bad);
        char *v = k ? decode(eq + 1, (size_t)(e - eq - 1), &bad) : NULL;
        if (!k || !v) {
            free(k);
            return fail(u, err, errlen, bad ? "bad %%-escape in \"%.*s\"" : "out of memory", (int)(e - p), p);
        }
        int rc = param(u, role, k, v, err, errlen);
        free(k);
        free(v);
        if (rc != 0) {
            redis_url_free(u);
            return -1;
        }
        p = amp ? amp + 1 : e;
    }
    if (!u->stream)
        return fail(u, err, errlen, "parameter \"stream\" is required");
    if (role == REDIS_URL_SOURCE && !u->group)
        return fail(u, err, errlen, "parameter \"group\" is required for an input");
    if (u->cluster && !u->partitions)
        return fail(u, err, errlen, "parameter \"partitions\" is required with redis+cluster://");
    if (!u->cluster && u->partitions)
        return fail(u, err, errlen, "parameter \"partitions\" needs redis+cluster://");
    if (u->cluster && (strchr(u->stream, '{') || strchr(u->stream, '}')))
        return fail(u, err, errlen, "parameter \"stream\": the partitions add the {i} hash tag themselves");
    if (!u->field && !(u->field = strdup("data")))
        return fail(u, err, errlen, "out of memory");
    if (!u->start && !(u->start = strdup("0")))
        return fail(u, err, errlen, "out of memory");
    if (strcmp(u->start, "$") != 0) {
        /* an entry id: MS or MS-SEQ */
        const char *c = u->start;
        int ok = *c >= '0' && *c <= '9';
        while (*c >= '0' && *c <= '9')
            c++;
        if (*c == '-') {
            c++;
            ok &= *c >= '0' && *c <= '9';
            while (*c >= '0' && *c <= '9')
                c++;
        }
        if (!ok || *c)
            return fail(u, err, errlen, "parameter \"start\" must be 0, $ or an entry id (MS-SEQ), not \"%s\"",
                        u->start);
    }
    return 0;
}

void redis_url_free(redis_url *u)
{
    free(u->password);
    for (size_t i = 0; i < u->nhosts; i++)
        free(u->hosts[i].host);
    free(u->stream);
    free(u->field);
    free(u->group);
    free(u->consumer);
    free(u->start);
    memset(u, 0, sizeof *u);
}

int redis_url_same_node(const redis_url *a, const redis_url *b)
{
    if (a->cluster || b->cluster)
        return a->cluster && b->cluster && a->partitions == b->partitions;
    return strcmp(a->hosts[0].host, b->hosts[0].host) == 0 && a->hosts[0].port == b->hosts[0].port &&
           ((!a->password && !b->password) || (a->password && b->password && !strcmp(a->password, b->password)));
}

char *redis_url_key(const redis_url *u, uint32_t i)
{
    char *k = NULL;
    if (u->cluster ? asprintf(&k, "%s{%u}", u->stream, i) < 0 : !(k = strdup(u->stream)))
        return NULL;
    return k;
}

int redis_url_same_stream(const char *in, const char *out)
{
    if (!in || !out || !redis_url_is(in) || !redis_url_is(out))
        return 0;
    redis_url a, b;
    char msg[400];
    if (redis_url_parse(&a, in, REDIS_URL_SOURCE, msg, sizeof msg) != 0)
        return 0;
    int same = 0;
    if (redis_url_parse(&b, out, REDIS_URL_SINK, msg, sizeof msg) == 0) {
        same = redis_url_same_node(&a, &b) && !strcmp(a.stream, b.stream);
        redis_url_free(&b);
    }
    redis_url_free(&a);
    return same;
}
