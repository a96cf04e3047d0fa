/*
 * tls.h: OpenSSL contexts for client connections. One context per CA file
 * (the system trust store when none is given), created on first use and
 * kept for the process; verification of the chain and of the host name is
 * done per connection (conn.c).
 */
#ifndef MW_TLS_H
#define MW_TLS_H

#include <openssl/ssl.h>

/* The client context for `ca_file` (NULL = system store). Returns NULL and
 * a message in err on failure. Owned by tls.c. */
SSL_CTX *tls_client_ctx(const char *ca_file, char *err, size_t errlen);

/* The last OpenSSL error queue entry as text (clears the queue). */
void tls_last_error(char *buf, size_t len);

/* Free all contexts (at exit). */
void tls_cleanup(void);

#endif
