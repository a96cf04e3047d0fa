/*
 * test_http.c: the HTTP client's protocol in src/net without a network:
 * URL parsing, the request's exact bytes and pool key (net/http.c), the
 * response parser fed bytes in pieces (net/http_resp.c), the
 * cosocket's receive patterns over a connection's buffer (net/recv.c),
 * and the where part of their errors (net/where.c).
 */
#include "../../src/net/http.h"
#include "../../src/net/recv.h"
#include "../../src/net/where.h"
#include "test.h"

#define UA "User-Agent: moonwait/" MW_VERSION "\r\n"

/* A span equals a C string. */
#define ASSERT_SPAN_EQ(p, n, s)                                                        \
    do { char b_[256]; snprintf(b_, sizeof b_, "%.*s", (int)(n), (p)); ASSERT_STR_EQ(b_, s); } while (0)

static const http_opts DEFAULTS = {
    .keepalive = 1, .verify = 1, .ca_file = NULL, .pool_size = HTTP_DEFAULT_POOL_SIZE,
    .max_body = HTTP_DEFAULT_MAX_BODY, .max_header_bytes = HTTP_DEFAULT_MAX_HEADER_BYTES,
    .max_headers = HTTP_DEFAULT_MAX_HEADERS,
};

/* ---- URLs ---------------------------------------------------------------------------- */

static void t_url_plain(void)
{
    http_url u;
    ASSERT_INT_EQ(http_url_parse("http://example.com", &u), 0);
    ASSERT_INT_EQ(u.https, 0);
    ASSERT_INT_EQ(u.port, 80);
    ASSERT_SPAN_EQ(u.host, u.host_len, "example.com");
    ASSERT_SPAN_EQ(u.authority, u.authority_len, "example.com");
    ASSERT_UINT_EQ(u.prefix_len, strlen("http://example.com"));
    ASSERT_SPAN_EQ(u.path, u.path_len, "/");
}

static void t_url_port_path_query_fragment(void)
{
    http_url u;
    const char *url = "https://api.example.com:8443/v1/items?id=7&x=%20#top";
    ASSERT_INT_EQ(http_url_parse(url, &u), 0);
    ASSERT_INT_EQ(u.https, 1);
    ASSERT_INT_EQ(u.port, 8443);
    ASSERT_SPAN_EQ(u.host, u.host_len, "api.example.com");
    ASSERT_SPAN_EQ(u.authority, u.authority_len, "api.example.com:8443");
    ASSERT_SPAN_EQ(url, u.prefix_len, "https://api.example.com:8443");
    ASSERT_SPAN_EQ(u.path, u.path_len, "/v1/items?id=7&x=%20");
    ASSERT_INT_EQ(http_url_parse("https://h/", &u), 0);
    ASSERT_INT_EQ(u.port, 443);
    /* a query straight after the authority */
    ASSERT_INT_EQ(http_url_parse("http://h:81?q=1", &u), 0);
    ASSERT_INT_EQ(u.port, 81);
    ASSERT_SPAN_EQ(u.path, u.path_len, "?q=1");
    /* what follows the '#' is never checked: it is not sent */
    ASSERT_INT_EQ(http_url_parse("http://h/a#b c", &u), 0);
    ASSERT_SPAN_EQ(u.path, u.path_len, "/a");
}

static void t_url_ports(void)
{
    http_url u;
    ASSERT_INT_EQ(http_url_parse("http://h:1/", &u), 0);
    ASSERT_INT_EQ(u.port, 1);
    ASSERT_INT_EQ(http_url_parse("http://h:65535/", &u), 0);
    ASSERT_INT_EQ(u.port, 65535);
    ASSERT_INT_EQ(http_url_parse("http://h:0/", &u), -1);
    ASSERT_INT_EQ(http_url_parse("http://h:65536/", &u), -1);
    ASSERT_INT_EQ(http_url_parse("http://h:99999999999999999999/", &u), -1);
    ASSERT_INT_EQ(http_url_parse("http://h:/", &u), -1);
    ASSERT_INT_EQ(http_url_parse("http://h:abc/", &u), -1);
    ASSERT_INT_EQ(http_url_parse("http://h:80x/", &u), -1);
    /* digits only (strtol took a sign and leading blanks) */
    ASSERT_INT_EQ(http_url_parse("http://h:+80/", &u), -1);
    ASSERT_INT_EQ(http_url_parse("http://h: 80/", &u), -1);
    ASSERT_INT_EQ(http_url_parse("http://h:-80/", &u), -1);
    ASSERT_INT_EQ(http_url_parse("http://h:080/", &u), 0);
    ASSERT_INT_EQ(u.port, 80);
}

static void t_url_ipv6_literal(void)
{
    http_url u;
    ASSERT_INT_EQ(http_url_parse("http://[::1]:8080/x", &u), 0);
    ASSERT_SPAN_EQ(u.host, u.host_len, "::1");
    ASSERT_SPAN_EQ(u.authority, u.authority_len, "[::1]:8080");
    ASSERT_INT_EQ(u.port, 8080);
    ASSERT_INT_EQ(http_url_parse("https://[2001:db8::1]", &u), 0);
    ASSERT_SPAN_EQ(u.host, u.host_len, "2001:db8::1");
    ASSERT_INT_EQ(u.port, 443);
    ASSERT_SPAN_EQ(u.path, u.path_len, "/");
    ASSERT_INT_EQ(http_url_parse("http://[::1/", &u), -1);  /* no ']' */
    ASSERT_INT_EQ(http_url_parse("http://[]/", &u), -1);    /* empty */
    ASSERT_INT_EQ(http_url_parse("http://[::1]x/", &u), -1);
}

static void t_url_userinfo(void)
{
    http_url u;
    /* Userinfo is not supported: with a password the ':' reads as a bad
     * port; without one, "user@host" is taken as the host name (and will
     * not resolve). */
    ASSERT_INT_EQ(http_url_parse("http://user:secret@h/", &u), -1);
    ASSERT_INT_EQ(http_url_parse("http://user@h/", &u), 0);
    ASSERT_SPAN_EQ(u.host, u.host_len, "user@h");
}

static void t_url_bad(void)
{
    http_url u;
    const char *bad[] = {
        "", "example.com", "ftp://h/", "HTTP://h/", "http:/h", "http://", "http:///x", "http://:80/",
        "http://h#frag", "http://h/a b", "http://h/a\r\nX: y", "http://h/\n", "http://h?a b",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        if (http_url_parse(bad[i], &u) != -1)
            FAILF("accepted \"%s\"", bad[i]);
}

static void t_method_and_header_checks(void)
{
    ASSERT(http_method_ok("GET", 3));
    ASSERT(http_method_ok("MKCOL", 5));
    ASSERT(!http_method_ok("", 0));
    ASSERT(!http_method_ok("get", 3));
    ASSERT(!http_method_ok("GE T", 4));
    ASSERT(!http_method_ok("GET\0", 4));
    ASSERT(http_header_ok("X-A", 3, "b c", 3));
    ASSERT(http_header_ok("X-A", 3, "", 0));
    ASSERT(!http_header_ok("", 0, "v", 1));
    ASSERT(!http_header_ok("X:A", 3, "v", 1));
    ASSERT(!http_header_ok("X\rA", 3, "v", 1));
    ASSERT(!http_header_ok("XA", 2, "v\n", 2));
    ASSERT(!http_header_ok("X\0A", 3, "v", 1));
    ASSERT(!http_header_ok("XA", 2, "v\0w", 3));
}

/* ---- the request's bytes ------------------------------------------------------------- */

/* The bytes of a request: url, method, headers ("name", "value", ... NULL), body. */
static http_req *build(const char *url, const char *method, const http_opts *o, const char **hdrs,
                       const char *body)
{
    http_req *r = http_req_new();
    ASSERT(r);
    ASSERT_INT_EQ(http_req_prepare(r, url, method, o), 0);
    for (size_t i = 0; hdrs && hdrs[i]; i += 2)
        http_req_header(r, hdrs[i], strlen(hdrs[i]), hdrs[i + 1], strlen(hdrs[i + 1]));
    http_req_end(r, body, body ? strlen(body) : 0);
    return r;
}

#define ASSERT_BYTES(r, s)                                                             \
    do { ASSERT_UINT_EQ((r)->req.len, strlen(s)); ASSERT(memcmp((r)->req.p, (s), strlen(s)) == 0); } while (0)

static void t_request_get(void)
{
    http_req *r = build("http://h:8080/a/b?x=1#frag", "GET", &DEFAULTS, NULL, NULL);
    ASSERT_BYTES(r, "GET /a/b?x=1 HTTP/1.1\r\nHost: h:8080\r\n" UA "\r\n");
    ASSERT_STR_EQ(r->pool_key, "http://h:8080");
    ASSERT_STR_EQ(r->host, "h");
    ASSERT_INT_EQ(r->port, 8080);
    ASSERT_INT_EQ(r->idempotent, 1);
    ASSERT_INT_EQ(r->is_head, 0);
    http_req_free(r);
    /* no path: "/"; only a query: "/?..." */
    r = build("http://h", "HEAD", &DEFAULTS, NULL, NULL);
    ASSERT_BYTES(r, "HEAD / HTTP/1.1\r\nHost: h\r\n" UA "\r\n");
    ASSERT_INT_EQ(r->is_head, 1);
    ASSERT_INT_EQ(r->resp.is_head, 1);
    http_req_free(r);
    r = build("http://[::1]:9?q", "GET", &DEFAULTS, NULL, NULL);
    ASSERT_BYTES(r, "GET /?q HTTP/1.1\r\nHost: [::1]:9\r\n" UA "\r\n");
    ASSERT_STR_EQ(r->host, "::1");
    http_req_free(r);
}

static void t_request_body_and_length(void)
{
    http_req *r = build("http://h/p", "POST", &DEFAULTS, NULL, "{\"a\":1}");
    ASSERT_BYTES(r, "POST /p HTTP/1.1\r\nHost: h\r\n" UA "Content-Length: 7\r\n\r\n{\"a\":1}");
    ASSERT_INT_EQ(r->idempotent, 0);
    http_req_free(r);
    /* POST and PUT say their length even without a body; GET does not */
    r = build("http://h/p", "PUT", &DEFAULTS, NULL, NULL);
    ASSERT_BYTES(r, "PUT /p HTTP/1.1\r\nHost: h\r\n" UA "Content-Length: 0\r\n\r\n");
    ASSERT_INT_EQ(r->idempotent, 1);
    http_req_free(r);
    /* an empty body is a body */
    r = build("http://h/p", "DELETE", &DEFAULTS, NULL, "");
    ASSERT_BYTES(r, "DELETE /p HTTP/1.1\r\nHost: h\r\n" UA "Content-Length: 0\r\n\r\n");
    http_req_free(r);
    r = build("http://h/p", "PATCH", &DEFAULTS, NULL, "0123456789");
    ASSERT_BYTES(r, "PATCH /p HTTP/1.1\r\nHost: h\r\n" UA "Content-Length: 10\r\n\r\n0123456789");
    ASSERT_INT_EQ(r->idempotent, 0);
    http_req_free(r);
}

static void t_request_headers_replace_defaults(void)
{
    const char *hdrs[] = { "X-Id", "42", "HOST", "other", "user-agent", "me", "Content-Length", "3",
                           "connection", "keep-alive", NULL };
    http_opts o = DEFAULTS;
    o.keepalive = 0;
    http_req *r = build("http://h/", "POST", &o, hdrs, "abc");
    ASSERT_BYTES(r, "POST / HTTP/1.1\r\nX-Id: 42\r\nHOST: other\r\nuser-agent: me\r\nContent-Length: 3\r\n"
                    "connection: keep-alive\r\n\r\nabc");
    http_req_free(r);
    /* without keepalive, and no Connection header of the caller's */
    r = build("http://h/", "GET", &o, NULL, NULL);
    ASSERT_BYTES(r, "GET / HTTP/1.1\r\nHost: h\r\n" UA "Connection: close\r\n\r\n");
    http_req_free(r);
}

static void t_pool_key_tls_settings(void)
{
    http_opts o = DEFAULTS;
    http_req *r = build("https://h:8443/x", "GET", &o, NULL, NULL);
    ASSERT_STR_EQ(r->pool_key, "https://h:8443|verify|");
    http_req_free(r);
    o.verify = 0;
    o.ca_file = "/etc/ca.pem";
    r = build("https://h/x", "GET", &o, NULL, NULL);
    ASSERT_STR_EQ(r->pool_key, "https://h|noverify|/etc/ca.pem");
    ASSERT_STR_EQ(r->ca_file, "/etc/ca.pem");
    http_req_free(r);
}

static void t_bad_url_and_recycling(void)
{
    http_req *r = http_req_new();
    ASSERT_INT_EQ(http_req_prepare(r, "http://h/a b", "GET", &DEFAULTS), -1);
    ASSERT_STR_EQ(r->url, "http://h/a b"); /* kept for the message */
    http_req_free(r);
    /* a recycled request starts clean */
    r = build("http://h/", "GET", &DEFAULTS, (const char *[]){ "Host", "x", NULL }, NULL);
    http_req_free(r);
    http_req *r2 = http_req_new();
    ASSERT(r2 == r);
    ASSERT_UINT_EQ(r2->req.len, 0);
    ASSERT_INT_EQ(r2->have_host, 0);
    ASSERT(r2->url == NULL && r2->pool_key == NULL && r2->conn == NULL);
    http_req_free(r2);
}

/* ---- where an error happened (net/where.c) ------------------------------------------- */

static const char *where_req(const char *method, const char *url, size_t len)
{
    static char b[NET_WHERE_MAX];
    net_where_request(b, sizeof b, method, url, len);
    return b;
}
#define WHERE_REQ(m, lit) where_req((m), (lit), sizeof(lit) - 1)

static void t_where_request_plain_and_redacted(void)
{
    ASSERT_STR_EQ(WHERE_REQ("GET", "http://127.0.0.1:8080/user/7?x=1#f"), "GET http://127.0.0.1:8080/user/7?x=1#f");
    ASSERT_STR_EQ(WHERE_REQ("POST", "https://[::1]/x"), "POST https://[::1]/x");
    /* a password is ***; the user, path and query stay */
    ASSERT_STR_EQ(WHERE_REQ("GET", "http://ada:s3cret@h:81/p?q=1"), "GET http://ada:***@h:81/p?q=1");
    ASSERT_STR_EQ(WHERE_REQ("GET", "http://ada:p@ss:w@h/"), "GET http://ada:***@h/"); /* the last '@' */
    ASSERT_STR_EQ(WHERE_REQ("GET", "http://:pw@h/"), "GET http://:***@h/");
    ASSERT_STR_EQ(WHERE_REQ("GET", "http://ada@h/"), "GET http://ada@h/");      /* no password */
    ASSERT_STR_EQ(WHERE_REQ("GET", "ftp://ada:pw@h/"), "GET ftp://ada:***@h/"); /* any scheme */
    ASSERT_STR_EQ(WHERE_REQ("GET", "ada:pw@h/x"), "GET ada:***@h/x");         /* none at all */
    /* an '@' after the authority is not userinfo */
    ASSERT_STR_EQ(WHERE_REQ("GET", "http://h:80/a:b@c"), "GET http://h:80/a:b@c");
    ASSERT_STR_EQ(WHERE_REQ("GET", "http://h?u=a:b@c"), "GET http://h?u=a:b@c");
    /* bytes a URL may not hold: one printable line */
    ASSERT_STR_EQ(WHERE_REQ("GET", "http://h/a b\0c\r\n\x7f\xc3\xa9"), "GET http://h/a%20b%00c%0D%0A%7F%C3%A9");
    ASSERT_STR_EQ(WHERE_REQ("GET", ""), "GET ");
}

/* A refused URL ("bad url") hides a password even when it was written
 * without percent-encoding and its '/', '?' or '#' ended the authority
 * early (a base64 password): the plain rule showed it whole. */
static const char *where_refused(const char *url)
{
    static char b[NET_WHERE_MAX];
    net_where_refused(b, sizeof b, "GET", url, strlen(url));
    return b;
}

static void t_where_refused_hides_a_raw_password(void)
{
    ASSERT_STR_EQ(where_refused("http://ada:ab/cd+e=@h:81/p?q=1"), "GET http://ada:***@h:81/p?q=1");
    ASSERT_STR_EQ(where_refused("http://ada:a?b@h/"), "GET http://ada:***@h/");
    ASSERT_STR_EQ(where_refused("http://ada:a#b@h/"), "GET http://ada:***@h/");
    ASSERT_STR_EQ(where_refused("https://ada:x/y@h/a@b"), "GET https://ada:***@b"); /* the last '@' */
    /* as the plain rule otherwise */
    ASSERT_STR_EQ(where_refused("http://ada:s3cret@h/p@q"), "GET http://ada:***@h/p@q");
    ASSERT_STR_EQ(where_refused("ftp://h/x"), "GET ftp://h/x");
    ASSERT_STR_EQ(where_refused("http://h/a@b"), "GET http://h/a@b"); /* no ':' before it */
    ASSERT_STR_EQ(where_refused("http://h:0/"), "GET http://h:0/");
    /* the plain rule, for URLs the client takes: an '@' of the path stays */
    ASSERT_STR_EQ(WHERE_REQ("GET", "http://ada:ab/cd@h/"), "GET http://ada:ab/cd@h/");
}

static void t_where_request_capped(void)
{
    /* 256 bytes shown, then "..."; a URL of exactly 256 is whole */
    char url[2000];
    memset(url, 'a', sizeof url);
    memcpy(url, "http://h/", 9);
    char want[NET_WHERE_MAX];
    snprintf(want, sizeof want, "GET %.256s", url);
    ASSERT_STR_EQ(where_req("GET", url, 256), want);
    snprintf(want, sizeof want, "GET %.256s...", url);
    ASSERT_STR_EQ(where_req("GET", url, 257), want);
    ASSERT_STR_EQ(where_req("GET", url, sizeof url), want);
    /* an escape is never cut in two: 255 bytes, then one that takes 3 */
    url[255] = '\n';
    snprintf(want, sizeof want, "GET %.255s...", url);
    ASSERT_STR_EQ(where_req("GET", url, sizeof url), want);
    /* a password past the cut is never shown either */
    memcpy(url, "http://ada:", 11);
    memset(url + 11, 'p', 600);
    memcpy(url + 611, "@h/", 3);
    snprintf(want, sizeof want, "GET http://ada:***@h/%.*s...", 256 - 17, url + 614);
    ASSERT_STR_EQ(where_req("GET", url, sizeof url), want);
    /* a long method: 32 bytes, then "..." */
    ASSERT_STR_EQ(WHERE_REQ("ABCDEFGHIJKLMNOPQRSTUVWXYZABCDEFGHIJ", "http://h/"),
                  "ABCDEFGHIJKLMNOPQRSTUVWXYZABCDEF... http://h/");
}

static void t_where_peer_and_join(void)
{
    char b[NET_WHERE_MAX];
    net_where_peer(b, sizeof b, "127.0.0.1", 6379);
    ASSERT_STR_EQ(b, "127.0.0.1:6379");
    net_where_peer(b, sizeof b, "::1", 6379);
    ASSERT_STR_EQ(b, "[::1]:6379");
    net_where_peer(b, sizeof b, "localhost", 1);
    ASSERT_STR_EQ(b, "localhost:1");
    net_where_peer(b, sizeof b, "a b\tc", 80);
    ASSERT_STR_EQ(b, "a%20b%09c:80");
    char host[1000];
    memset(host, 'h', sizeof host - 1);
    host[sizeof host - 1] = '\0';
    net_where_peer(b, sizeof b, host, 65535);
    char want[NET_WHERE_MAX];
    snprintf(want, sizeof want, "%.256s...:65535", host);
    ASSERT_STR_EQ(b, want);
    /* the where part is kept whole; the error is cut to make room */
    char j[64];
    ASSERT_STR_EQ(net_where_join(j, sizeof j, "timeout", "127.0.0.1:6379"), "timeout (127.0.0.1:6379)");
    char longerr[200];
    memset(longerr, 'e', sizeof longerr - 1);
    longerr[sizeof longerr - 1] = '\0';
    net_where_join(j, sizeof j, longerr, "h:1");
    ASSERT_UINT_EQ(strlen(j), sizeof j - 1);
    ASSERT(strcmp(j + sizeof j - 1 - 6, " (h:1)") == 0);
}

/* The message a request's failure carries: its method and URL, as shown. */
static void t_request_error_names_it(void)
{
    http_req *r = http_req_new();
    ASSERT_INT_EQ(http_req_prepare(r, "http://ada:pw@h/", "DELETE", &DEFAULTS), -1);
    ASSERT_STR_EQ(http_req_error(r, "bad url"), "bad url (DELETE http://ada:***@h/)");
    http_req_free(r);
    r = build("http://127.0.0.1:1/x?y=2", "GET", &DEFAULTS, NULL, NULL);
    ASSERT_STR_EQ(http_req_error(r, "timeout"), "timeout (GET http://127.0.0.1:1/x?y=2)");
    http_req_free(r);
}

/* ---- the response, fed in pieces ------------------------------------------------------ */

static http_resp *resp_new(int is_head)
{
    static http_resp h;
    memset(&h, 0, sizeof h);
    h.max_body = 1024;
    h.max_header_bytes = 256;
    h.max_headers = 4;
    http_resp_init(&h, is_head);
    return &h;
}

/* Feed s in pieces of `step` bytes; the result of the last feed. */
static int feed(http_resp *h, const char *s, size_t step, size_t *total_used)
{
    size_t n = strlen(s), off = 0;
    int e = HTTP_RESP_OK;
    *total_used = 0;
    while (off < n && e == HTTP_RESP_OK && !h->complete) {
        size_t k = n - off < step ? n - off : step, used;
        e = http_resp_feed(h, s + off, k, &used);
        *total_used += used;
        off += k;
    }
    return e;
}

static void t_response_in_any_split(void)
{
    const char *wire = "HTTP/1.1 201 Created\r\nContent-Type: text/plain\r\nX-A: 1\r\nx-a: 2\r\n"
                       "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\nHTTP/1.1 200";
    for (size_t step = 1; step <= strlen(wire); step++) {
        http_resp *h = resp_new(0);
        size_t used;
        ASSERT_INT_EQ(feed(h, wire, step, &used), HTTP_RESP_OK);
        ASSERT_INT_EQ(h->complete, 1);
        ASSERT_UINT_EQ(used, strlen(wire) - strlen("HTTP/1.1 200")); /* the next response is not this one's */
        ASSERT_INT_EQ(h->status, 201);
        ASSERT_SPAN_EQ(h->body.p, h->body.len, "abcde");
        const char hdrs[] = "content-type\0text/plain\0x-a\0" "1\0x-a\0" "2\0transfer-encoding\0chunked";
        ASSERT_UINT_EQ(h->hdrs.len, sizeof hdrs);
        ASSERT(memcmp(h->hdrs.p, hdrs, sizeof hdrs) == 0);
        ASSERT_INT_EQ(http_resp_keep_alive(h), 1);
    }
}

/* Issue 16: a whole plain Content-Length response takes the fast path
 * (no llhttp); what it keeps and says is what llhttp gives for the same
 * bytes one at a time; anything else goes to llhttp. */
static void t_response_fast_path(void)
{
    static const struct {
        const char *wire;
        int fast, keep_alive, status;
        const char *body;
    } cases[] = {
        { "HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nokNEXT", 1, 1, 200, "ok" },
        { "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nConnection: Close\r\n\r\n", 1, 0, 404, "" },
        { "HTTP/1.1 200 OK\r\nX-Y:z\r\nContent-Length: 3\r\n\r\nabc", 1, 1, 200, "abc" },
        /* llhttp's: chunked, no length, HTTP/1.0, two lengths, 204, a value with blanks around it */
        { "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n", 0, 1, 200, "ab" },
        { "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nab", 0, 0, 200, "ab" },
        { "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: upgrade\r\nUpgrade: x\r\n\r\nab", 0, -1, 200, "ab" },
        { "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n", 0, 1, 204, "" },
        { "HTTP/1.1 200 OK\r\nA:  b \r\nContent-Length: 1\r\n\r\nx", 0, 1, 200, "x" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        http_resp *h = resp_new(0);
        size_t used, used1;
        const char *wire = cases[i].wire;
        ASSERT_INT_EQ(http_resp_feed(h, wire, strlen(wire), &used), HTTP_RESP_OK);
        ASSERT_INT_EQ(h->complete, 1);
        ASSERT_INT_EQ(h->fast, cases[i].fast);
        ASSERT_INT_EQ(h->status, cases[i].status);
        ASSERT_SPAN_EQ(h->body.p, h->body.len, cases[i].body);
        int keep = http_resp_keep_alive(h);
        if (cases[i].keep_alive >= 0)
            ASSERT_INT_EQ(keep, cases[i].keep_alive);
        char hdrs[256];
        size_t hl = h->hdrs.len, nh = h->nheaders;
        memcpy(hdrs, h->hdrs.p, hl);
        /* the same bytes one at a time: llhttp alone */
        h = resp_new(0);
        ASSERT_INT_EQ(feed(h, wire, 1, &used1), HTTP_RESP_OK);
        ASSERT_INT_EQ(h->fast, 0);
        ASSERT_UINT_EQ(used1, used);
        ASSERT_UINT_EQ(h->nheaders, nh);
        ASSERT_UINT_EQ(h->hdrs.len, hl);
        ASSERT(memcmp(h->hdrs.p, hdrs, hl) == 0);
        ASSERT_INT_EQ(http_resp_keep_alive(h), keep);
    }
    /* a length with chunked: llhttp's to judge, whole or in pieces alike */
    const char *both = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n2\r\nab\r\n0\r\n\r\n";
    http_resp *w = resp_new(0);
    size_t wu;
    int we = http_resp_feed(w, both, strlen(both), &wu);
    ASSERT_INT_EQ(w->fast, 0);
    int wc = w->complete;
    w = resp_new(0);
    ASSERT_INT_EQ(feed(w, both, 1, &wu), we);
    ASSERT_INT_EQ(w->complete, wc);
    /* a cap passed: llhttp refuses it, as before */
    http_resp *h = resp_new(0);
    size_t used;
    const char *big = "HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nContent-Length: 0\r\n\r\n";
    ASSERT_INT_EQ(http_resp_feed(h, big, strlen(big), &used), HTTP_RESP_HEADERS_TOO_LARGE);
}

/* The fast path scans 8 bytes at a time for the end of the reason and of
 * each value: a byte that is not visible ASCII or a space, at any place of
 * a word, sends the response to llhttp, which answers the same whole as one
 * byte at a time; the same response with a plain byte there stays fast. */
static void t_response_fast_path_odd_bytes(void)
{
    static const unsigned char odd[] = { 0x00, 0x01, 0x09, 0x0a, 0x0d, 0x1f, 0x7f, 0x80, 0xfe, 0xff };
    /* the reason; a value with more after it; the last value (its end in
     * the scan's byte-at-a-time tail) */
    static const char *const layouts[] = {
        "HTTP/1.1 200 %s\r\nX-Long: v\r\nContent-Length: 2\r\n\r\nok",
        "HTTP/1.1 200 OK\r\nX-Long: %s\r\nContent-Length: 2\r\n\r\nok",
        "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Long: %s\r\n\r\n",
    };
    for (size_t l = 0; l < sizeof layouts / sizeof layouts[0]; l++)
        for (size_t k = 0; k < 19; k++)
            for (size_t o = 0; o <= sizeof odd; o++) {
                char text[20], wire[256];
                memset(text, 'v', 19);
                text[19] = '\0';
                text[k] = '#';
                int n = snprintf(wire, sizeof wire, layouts[l], text);
                char *at = memchr(wire, '#', (size_t)n);
                *at = o < sizeof odd ? (char)odd[o] : 'v';
                http_resp *h = resp_new(0);
                size_t used;
                int e = http_resp_feed(h, wire, (size_t)n, &used);
                ASSERT_INT_EQ(h->fast, o == sizeof odd);
                int complete = h->complete, status = h->status;
                size_t hl = h->hdrs.len, bl = h->body.len;
                char hdrs[256], body[8];
                if (e == HTTP_RESP_OK && complete) {
                    memcpy(hdrs, h->hdrs.p, hl);
                    if (bl)
                        memcpy(body, h->body.p, bl);
                }
                h = resp_new(0);
                int e1 = HTTP_RESP_OK;
                size_t used1 = 0;
                for (int i = 0; i < n && e1 == HTTP_RESP_OK && !h->complete; i++) {
                    size_t u;
                    e1 = http_resp_feed(h, wire + i, 1, &u);
                    used1 += u;
                }
                ASSERT_INT_EQ(e1, e);
                ASSERT_INT_EQ(h->complete, complete);
                if (e == HTTP_RESP_OK && complete) {
                    ASSERT_UINT_EQ(used1, used);
                    ASSERT_INT_EQ(h->status, status);
                    ASSERT_UINT_EQ(h->hdrs.len, hl);
                    ASSERT(memcmp(h->hdrs.p, hdrs, hl) == 0);
                    ASSERT_UINT_EQ(h->body.len, bl);
                    ASSERT(bl == 0 || memcmp(h->body.p, body, bl) == 0);
                }
            }
}

static void t_response_caps(void)
{
    size_t used;
    http_resp *h = resp_new(0);
    ASSERT_INT_EQ(feed(h, "HTTP/1.1 200 OK\r\nContent-Length: 2000\r\n\r\n", 7, &used), HTTP_RESP_OK);
    char body[1100];
    memset(body, 'x', sizeof body - 1);
    body[sizeof body - 1] = '\0';
    ASSERT_INT_EQ(feed(h, body, 100, &used), HTTP_RESP_BODY_TOO_LARGE);
    h = resp_new(0);
    ASSERT_INT_EQ(feed(h, "HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\n\r\n", 5, &used),
                  HTTP_RESP_HEADERS_TOO_LARGE);
    h = resp_new(0);
    char head[400] = "HTTP/1.1 200 OK\r\nX: ";
    memset(head + strlen(head), 'v', 300);
    ASSERT_INT_EQ(feed(h, head, 1000, &used), HTTP_RESP_HEADERS_TOO_LARGE);
    h = resp_new(0);
    ASSERT_INT_EQ(feed(h, "HTTQ/1.1 200 OK\r\n\r\n", 3, &used), HTTP_RESP_BAD);
    ASSERT(strlen(http_resp_reason(h)) > 0);
}

static void t_response_interim_head_and_eof(void)
{
    size_t used;
    http_resp *h = resp_new(0);
    ASSERT_INT_EQ(feed(h, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nX: y\r\n\r\n", 9, &used),
                  HTTP_RESP_OK);
    ASSERT_INT_EQ(h->complete, 1);
    ASSERT_INT_EQ(h->status, 204);
    ASSERT_SPAN_EQ(h->hdrs.p, h->hdrs.len, "x"); /* the interim head's headers are forgotten */
    /* HEAD: a Content-Length but no body */
    h = resp_new(1);
    ASSERT_INT_EQ(feed(h, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", 4, &used), HTTP_RESP_OK);
    ASSERT_INT_EQ(h->complete, 1);
    ASSERT_UINT_EQ(h->body.len, 0);
    /* a body delimited by the close ends at EOF; a chunked one cut is truncated */
    h = resp_new(0);
    ASSERT_INT_EQ(feed(h, "HTTP/1.1 200 OK\r\n\r\nhello", 6, &used), HTTP_RESP_OK);
    ASSERT_INT_EQ(h->complete, 0);
    ASSERT_INT_EQ(http_resp_eof(h), 1);
    ASSERT_INT_EQ(h->complete, 1);
    ASSERT_SPAN_EQ(h->body.p, h->body.len, "hello");
    h = resp_new(0);
    ASSERT_INT_EQ(feed(h, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", 6, &used), HTTP_RESP_OK);
    ASSERT_INT_EQ(http_resp_eof(h), 0);
}

/* Interim responses (with a body llhttp reads for a 1xx Content-Length)
 * followed by the final head: every byte before the final head's end
 * counts against max_header_bytes, in any split (a one-piece feed once
 * skipped the count after the first head; the 1xx body leaked into the
 * final body). */
static void t_response_interim_bytes_in_any_split(void)
{
    const char *wire = "HTTP/1.1 103 Early Hints\r\nContent-Length: 5\r\n\r\nhints"
                       "HTTP/1.1 100 Continue\r\n\r\n"
                       "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    size_t head = strlen(wire) - 2, n = strlen(wire); /* everything but the final body */
    for (size_t cap = head - 2; cap <= head + 1; cap++)
        for (size_t step = 1; step <= n; step++) {
            http_resp *h = resp_new(0);
            h->max_header_bytes = cap;
            size_t used;
            int e = feed(h, wire, step, &used);
            if (cap < head) {
                if (e != HTTP_RESP_HEADERS_TOO_LARGE)
                    FAILF("cap %zu step %zu: %d, not 'headers too large'", cap, step, e);
            } else {
                if (e != HTTP_RESP_OK || !h->complete)
                    FAILF("cap %zu step %zu: %d, complete %d", cap, step, e, h->complete);
                ASSERT_INT_EQ(h->status, 200);
                ASSERT_SPAN_EQ(h->body.p, h->body.len, "ok");
            }
        }
}

/* ---- receive patterns (net/recv.c) ---------------------------------------------------- */

/* A connection with `s` buffered, as conn.c leaves it: no loop needed. */
static net_conn *fake_conn(const char *s, int eof)
{
    static net_conn c;
    memset(&c, 0, sizeof c);
    c.rbuf = strdup(s);
    c.rend = strlen(s);
    c.eof = eof;
    return &c;
}

static void t_recv_patterns(void)
{
    net_recv p = { .kind = NET_RECV_LINE };
    net_conn *c = fake_conn("one\r\ntwo\nthr", 0);
    ASSERT_INT_EQ(net_recv_match(&p, c), NET_RECV_DATA);
    ASSERT_SPAN_EQ(p.data, p.len, "one"); /* the CR goes with the LF */
    ASSERT_UINT_EQ(p.used, 5);
    c->rstart += p.used;
    ASSERT_INT_EQ(net_recv_match(&p, c), NET_RECV_DATA);
    ASSERT_SPAN_EQ(p.data, p.len, "two");
    c->rstart += p.used;
    ASSERT_INT_EQ(net_recv_match(&p, c), NET_RECV_MORE);
    c->eof = 1;
    ASSERT_INT_EQ(net_recv_match(&p, c), NET_RECV_END);
    ASSERT_SPAN_EQ(p.data, p.len, "thr"); /* partial */
    ASSERT_STR_EQ(p.err, "closed");

    p = (net_recv){ .kind = NET_RECV_COUNT, .want = 4 };
    c = fake_conn("abcd", 0);
    ASSERT_INT_EQ(net_recv_match(&p, c), NET_RECV_DATA);
    ASSERT_SPAN_EQ(p.data, p.len, "abcd");
    p.want = 5;
    ASSERT_INT_EQ(net_recv_match(&p, c), NET_RECV_MORE);

    p = (net_recv){ .kind = NET_RECV_UNTIL, .delim = "--x", .dlen = 3 };
    c = fake_conn("ab--cd--x--xtail", 0);
    ASSERT_INT_EQ(net_recv_match(&p, c), NET_RECV_DATA);
    ASSERT_SPAN_EQ(p.data, p.len, "ab--cd");
    ASSERT_UINT_EQ(p.used, 9); /* the delimiter is consumed too */

    p = (net_recv){ .kind = NET_RECV_ALL };
    c = fake_conn("all of it", 0);
    ASSERT_INT_EQ(net_recv_match(&p, c), NET_RECV_MORE);
    c->eof = 1;
    ASSERT_INT_EQ(net_recv_match(&p, c), NET_RECV_DATA);
    ASSERT_SPAN_EQ(p.data, p.len, "all of it");
    c->rerr = UV_ECONNRESET;
    p.kind = NET_RECV_LINE;
    ASSERT_INT_EQ(net_recv_match(&p, c), NET_RECV_END);
    ASSERT_STR_EQ(p.err, "connection reset");
}

static void t_recv_pattern_strings(void)
{
    net_recv p = { 0 };
    ASSERT_INT_EQ(net_recv_pattern(&p, "*a", 2), 0);
    ASSERT_INT_EQ(p.kind, NET_RECV_ALL);
    ASSERT_INT_EQ(net_recv_pattern(&p, "*L", 2), 0);
    ASSERT_INT_EQ(p.kind, NET_RECV_LINE);
    ASSERT_INT_EQ(net_recv_pattern(&p, "*l", 2), 0);
    ASSERT_INT_EQ(net_recv_pattern(&p, "*b", 2), -1);
    ASSERT_INT_EQ(net_recv_pattern(&p, "*a\0", 3), -1);
}

TEST_MAIN("http", T(t_url_plain), T(t_url_port_path_query_fragment), T(t_url_ports), T(t_url_ipv6_literal),
          T(t_url_userinfo), T(t_url_bad), T(t_method_and_header_checks), T(t_request_get),
          T(t_request_body_and_length), T(t_request_headers_replace_defaults), T(t_pool_key_tls_settings),
          T(t_bad_url_and_recycling), T(t_where_request_plain_and_redacted), T(t_where_refused_hides_a_raw_password),
          T(t_where_request_capped),
          T(t_where_peer_and_join), T(t_request_error_names_it), T(t_response_in_any_split), T(t_response_fast_path), T(t_response_fast_path_odd_bytes),
          T(t_response_caps),
          T(t_response_interim_head_and_eof), T(t_response_interim_bytes_in_any_split), T(t_recv_patterns), T(t_recv_pattern_strings))
