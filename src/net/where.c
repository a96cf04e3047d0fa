/* where.c: the where part of an error message (contract in where.h). */
#include "where.h"

#include <stdio.h>
#include <string.h>

/* Text appended to a fixed buffer, cut to fit (always NUL-terminated),
 * and the bytes shown of the current URL or host, within max. */
typedef struct out {
    char *p;
    size_t cap, len;
    size_t used, max;        /* bytes shown of the current text, its limit */
    int cut;                 /* the limit was reached: "..." written */
} out;

static void put(out *o, const char *s, size_t n)
{
    if (o->cap == 0)
        return;
    size_t room = o->cap - 1 - o->len;
    if (n > room)
        n = room;
    memcpy(o->p + o->len, s, n);
    o->len += n;
    o->p[o->len] = '\0';
}

/* Start a shown text of at most max bytes. */
static void begin(out *o, size_t max)
{
    o->used = 0;
    o->max = max;
    o->cut = 0;
}

/* Show s (n bytes): a byte a URL may not hold as %XX; "..." instead of
 * what goes past the limit. */
static void show(out *o, const char *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < n && !o->cut; i++) {
        unsigned char c = (unsigned char)s[i];
        int esc = c <= 0x20 || c >= 0x7f;
        size_t w = esc ? 3 : 1;
        if (o->used + w > o->max) {
            put(o, "...", 3);
            o->cut = 1;
            return;
        }
        if (esc) {
            char e[3] = { '%', hex[c >> 4], hex[c & 15] };
            put(o, e, 3);
        } else {
            put(o, s + i, 1);
        }
        o->used += w;
    }
}

static int scheme_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '+' ||
           c == '-' || c == '.';
}

static size_t where_request(char *buf, size_t cap, const char *method, const char *url, size_t len, int refused)
{
    out o = { .p = buf, .cap = cap };
    put(&o, "", 0);
    begin(&o, NET_WHERE_METHOD);
    show(&o, method, strlen(method));
    put(&o, " ", 1);

    const char *end = url + len, *auth = url, *p = url;
    while (p < end && scheme_char(*p))
        p++;
    if (p > url && end - p >= 3 && memcmp(p, "://", 3) == 0)
        auth = p + 3;
    const char *auth_end = auth, *at = NULL;
    for (; auth_end < end && *auth_end != '/' && *auth_end != '?' && *auth_end != '#'; auth_end++)
        if (*auth_end == '@')
            at = auth_end;
    const char *colon = at ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
    if (!colon && refused) {
        /* A password written without percent-encoding may hold a '/', '?'
         * or '#', which ended the authority above before its '@'
         * ("http://ada:ab/cd@h/": a base64 password), so the rule found no
         * userinfo and showed the password. The client accepts no userinfo
         * at all, so such a URL is always refused: there, what lies between
         * the first ':' and the URL's last '@' is hidden (at worst more
         * than a password, of a URL that is wrong anyway). */
        const char *last = NULL;
        for (const char *q = auth; q < end; q++)
            if (*q == '@')
                last = q;
        colon = last ? memchr(auth, ':', (size_t)(last - auth)) : NULL;
        if (colon)
            at = last;
    }

    begin(&o, NET_WHERE_SHOWN);
    if (colon) {
        show(&o, url, (size_t)(colon + 1 - url));
        show(&o, "***", 3);
        show(&o, at, (size_t)(end - at));
    } else {
        show(&o, url, len);
    }
    return o.len;
}

size_t net_where_request(char *buf, size_t cap, const char *method, const char *url, size_t len)
{
    return where_request(buf, cap, method, url, len, 0);
}

size_t net_where_refused(char *buf, size_t cap, const char *method, const char *url, size_t len)
{
    return where_request(buf, cap, method, url, len, 1);
}

size_t net_where_peer(char *buf, size_t cap, const char *host, int port)
{
    out o = { .p = buf, .cap = cap };
    int v6 = strchr(host, ':') != NULL;
    put(&o, "[", (size_t)v6);
    begin(&o, NET_WHERE_SHOWN);
    show(&o, host, strlen(host));
    char tail[16];
    int n = snprintf(tail, sizeof tail, "%s:%d", v6 ? "]" : "", port);
    put(&o, tail, (size_t)n);
    return o.len;
}

const char *net_where_join(char *buf, size_t cap, const char *err, const char *where)
{
    size_t wl = strlen(where), el = strlen(err);
    size_t room = cap > wl + 4 ? cap - wl - 4 : 0; /* " (", ")" and the NUL */
    if (el > room)
        el = room;
    snprintf(buf, cap, "%.*s (%s)", (int)el, err, where);
    return buf;
}
