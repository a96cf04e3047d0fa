/*
 * where.h: how an error names where it happened (issue 13): the text in
 * the parentheses that ends every nil, err of moonwait.http ("GET
 * http://127.0.0.1:8080/user/7") and moonwait.socket ("127.0.0.1:6379",
 * "[::1]:6379"). Plain C, no Lua, no libuv: net/http.c and
 * src/lua/mod_socket.c format with it; spec/c/test_http.c tests it.
 * Public names: net_where_*.
 *
 * What is shown of a URL or a host name: its bytes as given, except that
 * bytes a URL may not hold (controls, space, DEL, non-ASCII) are shown as
 * %XX (so an error is one printable line: a NUL is "%00"), a URL's
 * password as "***" ("http://user:***@host/"), and at most
 * NET_WHERE_SHOWN bytes of it, followed by "..." when it was cut (a 1 MB
 * URL makes a short error). Path and query are kept.
 */
#ifndef MW_WHERE_H
#define MW_WHERE_H

#include <stddef.h>

/* The most bytes shown of a URL or a host name (then "..."). */
#define NET_WHERE_SHOWN 256
/* The most bytes shown of an HTTP method (then "..."). */
#define NET_WHERE_METHOD 32
/* Room for any where text, its NUL included. */
#define NET_WHERE_MAX (NET_WHERE_METHOD + NET_WHERE_SHOWN + 16)

/* "METHOD URL" into out (cap bytes, NUL-terminated, cut to fit): the
 * method (NUL-terminated) and the URL (len bytes, NULs allowed) shown as
 * above. The userinfo is the authority's part before its last '@' (the
 * authority runs from after "scheme://", or from the start when there is
 * no scheme, to the first '/', '?' or '#'); when it holds a ':', what
 * follows the ':' is shown as "***". Returns the length written. */
size_t net_where_request(char *out, size_t cap, const char *method, const char *url, size_t len);

/* The same for a URL the client refused ("bad url"): when the rule above
 * finds no password, but a ':' comes before the URL's last '@', what lies
 * between them is shown as "***" too ("http://ada:ab/cd@h/" is shown
 * "http://ada:***@h/": a password written without percent-encoding, whose
 * '/', '?' or '#' ended the authority early). The client accepts no
 * userinfo, so every URL with a password is refused and goes through here;
 * a URL it accepts keeps an '@' of its path (net_where_request). */
size_t net_where_refused(char *out, size_t cap, const char *method, const char *url, size_t len);

/* "host:port" into out, "[host]:port" when host holds a ':' (IPv6), the
 * host shown as above. Returns the length written. */
size_t net_where_peer(char *out, size_t cap, const char *host, int port);

/* "err (where)" into out (cap bytes): err is cut if it must be, where
 * never (given cap >= NET_WHERE_MAX + 4). Returns out. */
const char *net_where_join(char *out, size_t cap, const char *err, const char *where);

#endif
