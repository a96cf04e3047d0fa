/* dial.c: resolve and connect, address after address (contract in dial.h). */
#include "dial.h"

static void attempt(net_dial *d);

/* A refused or unreachable address: the name's next one may answer. */
static int try_next(int status)
{
    return status == UV_ECONNREFUSED || status == UV_EHOSTUNREACH || status == UV_ENETUNREACH ||
           status == UV_EADDRNOTAVAIL;
}

static void on_connected(net_conn *c, int status, void *ud)
{
    net_dial *d = ud;
    if (status == 0) {
        d->cb(d->ud, NULL);
        return;
    }
    net_conn_close(c);
    *d->slot = NULL;
    if (++d->ix < d->addrs.n && try_next(status)) {
        attempt(d);
        return;
    }
    d->cb(d->ud, net_strerror(status));
}

static void attempt(net_dial *d)
{
    net_conn *c = net_conn_new(d->loop, d->max_buffer);
    *d->slot = c;
    if (!c) {
        d->cb(d->ud, "out of memory");
        return;
    }
    int rc = net_conn_connect(c, (struct sockaddr *)&d->addrs.addrs[d->ix], on_connected, d);
    if (rc != 0) {
        net_conn_close(c);
        *d->slot = NULL;
        d->cb(d->ud, net_strerror(rc));
    }
}

static void on_resolved(void *ud, int status, const dns_result *res)
{
    net_dial *d = ud;
    d->dnsq = NULL;
    if (status != 0) {
        d->cb(d->ud, net_strerror(status));
        return;
    }
    d->addrs = *res;
    d->ix = 0;
    attempt(d);
}

void net_dial_init(net_dial *d, uv_loop_t *loop, net_conn **slot, size_t max_buffer,
                   net_dial_cb cb, void *ud)
{
    *d = (net_dial){ .loop = loop, .slot = slot, .max_buffer = max_buffer, .cb = cb, .ud = ud };
}

int net_dial_start(net_dial *d, const char *host, int port, int cached_only)
{
    dns_result now;
    int rc = dns_resolve(d->loop, host, port, &now, on_resolved, d, &d->dnsq);
    if (rc < 0)
        return rc;
    if (rc == 0) {
        if (!cached_only)
            return 0;
        net_dial_cancel(d);
        return UV_EAGAIN;
    }
    d->addrs = now;
    d->ix = 0;
    attempt(d);
    return 0;
}

void net_dial_cancel(net_dial *d)
{
    if (d->dnsq) {
        dns_cancel(d->dnsq);
        d->dnsq = NULL;
    }
}
