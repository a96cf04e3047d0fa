/* recv.c: receive patterns over a connection's buffer (contract in recv.h). */
#define _GNU_SOURCE
#include "recv.h"

#include <string.h>

int net_recv_pattern(net_recv *p, const char *s, size_t n)
{
    if (n == 2 && (memcmp(s, "*l", 2) == 0 || memcmp(s, "*L", 2) == 0))
        p->kind = NET_RECV_LINE;
    else if (n == 2 && memcmp(s, "*a", 2) == 0)
        p->kind = NET_RECV_ALL;
    else
        return -1;
    return 0;
}

static int found(net_recv *p, const char *d, size_t len, size_t used)
{
    p->data = d;
    p->len = len;
    p->used = used;
    return NET_RECV_DATA;
}

void net_recv_rest(net_recv *p, const net_conn *c)
{
    found(p, net_conn_data(c), net_conn_buffered(c), net_conn_buffered(c));
}

int net_recv_match(net_recv *p, const net_conn *c)
{
    size_t have = net_conn_buffered(c);
    const char *d = net_conn_data(c);
    p->err = NULL;
    switch (p->kind) {
    case NET_RECV_LINE: {
        const char *nl = have ? memchr(d, '\n', have) : NULL;
        if (nl) {
            size_t l = (size_t)(nl - d);
            return found(p, d, l > 0 && d[l - 1] == '\r' ? l - 1 : l, l + 1);
        }
        break;
    }
    case NET_RECV_REPLY:
        /* (the end, too, is left for the receive that reads it: it stays) */
        if ((have && memchr(d, '\n', have)) || c->eof || c->rerr)
            return found(p, d, have, 0);
        break;
    case NET_RECV_COUNT:
        if (have >= p->want)
            return found(p, d, p->want, p->want);
        break;
    case NET_RECV_UNTIL: {
        const char *m = p->dlen && have >= p->dlen ? memmem(d, have, p->delim, p->dlen) : NULL;
        if (m)
            return found(p, d, (size_t)(m - d), (size_t)(m - d) + p->dlen);
        break;
    }
    case NET_RECV_ALL:
        if (c->eof)
            return found(p, d, have, have);
        break;
    }
    if (!c->eof && !c->rerr)
        return NET_RECV_MORE;
    /* Nothing more will come: what is there is a partial result. */
    net_recv_rest(p, c);
    p->err = net_conn_error(c);
    return NET_RECV_END;
}
