/* dial.c: resolve and connect, address after address (contract in dial.h). */
#include "dial.h"

#include <stdlib.h>

/* The addresses are held only while dialing: a dial is embedded in every
 * cosocket and request, and most of those take a pooled connection. */
static void release(net_dial *d)
{
    free(d->addrs);
    d->addrs = NULL;
}

/* Keep res as the addresses to try. 0, or -1 out of memory. */
static int hold(net_dial *d, const dns_result *res)
{
    if (!d->addrs && !(d->addrs = malloc(sizeof *d->addrs)))
        return -1;
    *d->addrs = *res;
    d->ix = 0;
    return 0;
}

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
        release(d);
        d->cb(d->ud, NULL);
        return;
    }
    net_conn_close(c);
    *d->slot = NULL;
    if (d->addrs && ++d->ix < d->addrs->n && try_next(status)) {
        attempt(d);
        return;
    }
    release(d);
    d->cb(d->ud, net_strerror(status));
}

static void attempt(net_dial *d)
{
    net_conn *c = net_conn_new(d->loop, d->max_buffer);
    *d->slot = c;
    if (!c) {
        release(d);
        d->cb(d->ud, "out of memory");
        return;
    }
    int rc = net_conn_connect(c, (struct sockaddr *)&d->addrs->addrs[d->ix], on_connected, d);
    if (rc != 0) {
        net_conn_close(c);
        *d->slot = NULL;
        release(d);
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
    if (hold(d, res) != 0) {
        d->cb(d->ud, "out of memory");
        return;
    }
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
    if (hold(d, &now) != 0)
        return UV_ENOMEM;
    attempt(d);
    return 0;
}

void net_dial_cancel(net_dial *d)
{
    if (d->dnsq) {
        dns_cancel(d->dnsq);
        d->dnsq = NULL;
    }
    release(d);
}
