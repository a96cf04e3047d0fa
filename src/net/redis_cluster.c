/* redis_cluster.c: slots, the slot map and redirections (contract in
 * redis_cluster.h). */
#include "redis_cluster.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* CRC16-CCITT (XMODEM: polynomial 0x1021, initial 0), bit by bit: a key
 * is short and this runs once per partition, not per record. */
static uint16_t crc16(const char *s, size_t n)
{
    uint16_t crc = 0;
    for (size_t i = 0; i < n; i++) {
        crc ^= (uint16_t)((unsigned char)s[i] << 8);
        for (int b = 0; b < 8; b++)
            crc = crc & 0x8000 ? (uint16_t)((crc << 1) ^ 0x1021) : (uint16_t)(crc << 1);
    }
    return crc;
}

uint16_t redis_key_slot(const char *key, size_t len)
{
    const char *open = memchr(key, '{', len);
    if (open) {
        const char *close = memchr(open + 1, '}', len - (size_t)(open + 1 - key));
        if (close && close > open + 1)
            return crc16(open + 1, (size_t)(close - open - 1)) % REDIS_SLOTS;
    }
    return crc16(key, len) % REDIS_SLOTS;
}

int redis_slots_parse(redis_slots *m, const resp_reader *r, const char *d, const char *asked_host)
{
    memset(m, 0, sizeof *m);
    const resp_node *top = &r->nodes[0];
    if (top->type != RESP_ARRAY || !top->n)
        return -1;
    m->r = calloc(top->n, sizeof *m->r);
    if (!m->r)
        return -1;
    uint32_t x = 1;
    for (uint32_t i = 0; i < top->n; i++, x = resp_skip(r, x)) {
        const resp_node *e = &r->nodes[x];
        /* [lo, hi, [host, port, id...], replicas...] */
        if (e->type != RESP_ARRAY || e->n < 3 || r->nodes[x + 1].type != RESP_INT ||
            r->nodes[x + 2].type != RESP_INT || r->nodes[x + 3].type != RESP_ARRAY || r->nodes[x + 3].n < 2)
            goto bad;
        const resp_node *h = &r->nodes[x + 4], *p = &r->nodes[x + 5];
        int64_t lo = r->nodes[x + 1].i, hi = r->nodes[x + 2].i;
        /* slots and port as Redis gives them, not cut to 16 bits */
        if (lo < 0 || lo > hi || hi >= REDIS_SLOTS)
            goto bad;
        redis_slot_range *s = &m->r[m->n++];
        s->lo = (uint16_t)lo;
        s->hi = (uint16_t)hi;
        if (h->type != RESP_BULK || p->type != RESP_INT || h->n >= sizeof s->host || p->i < 1 || p->i > 65535)
            goto bad;
        memcpy(s->host, resp_str(h, d), h->n);
        s->host[h->n] = 0;
        if (!s->host[0] || !strcmp(s->host, "?"))
            snprintf(s->host, sizeof s->host, "%s", asked_host);
        s->port = (int)p->i;
    }
    return 0;
bad:
    redis_slots_free(m);
    return -1;
}

const redis_slot_range *redis_slots_find(const redis_slots *m, uint16_t slot)
{
    for (size_t i = 0; i < m->n; i++)
        if (slot >= m->r[i].lo && slot <= m->r[i].hi)
            return &m->r[i];
    return NULL;
}

void redis_slots_free(redis_slots *m)
{
    free(m->r);
    m->r = NULL;
    m->n = 0;
}

int redis_redirect_parse(const char *err, int *ask, uint16_t *slot, char *host, size_t hostlen, int *port)
{
    if (!strncmp(err, "MOVED ", 6))
        *ask = 0;
    else if (!strncmp(err, "ASK ", 4))
        *ask = 1;
    else
        return 0;
    const char *s = strchr(err, ' ') + 1;
    char *end;
    long sl = strtol(s, &end, 10);
    if (end == s || *end != ' ' || sl < 0 || sl >= REDIS_SLOTS)
        return 0;
    const char *addr = end + 1;
    const char *colon = strrchr(addr, ':');
    if (!colon || (size_t)(colon - addr) >= hostlen)
        return 0;
    long p = strtol(colon + 1, &end, 10);
    if (end == colon + 1 || p <= 0 || p > 65535)
        return 0;
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = 0;
    *slot = (uint16_t)sl;
    *port = (int)p;
    return 1;
}
