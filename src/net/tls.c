/* tls.c: OpenSSL client contexts (contract in tls.h).
 *
 * One table for the process, under ctx_mu: an SSL_CTX is safe to share
 * between threads once set up (OpenSSL >= 1.1 locks its own reference
 * counts and session cache), so every worker's connections use the same
 * context per CA file, and each is loaded once. */
#include "tls.h"

#include <openssl/err.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_CTX 8

static struct {
    char *ca_file; /* NULL: system store */
    SSL_CTX *ctx;
} ctxs[MAX_CTX];
static int nctx;
static pthread_mutex_t ctx_mu = PTHREAD_MUTEX_INITIALIZER;

void tls_last_error(char *buf, size_t len)
{
    unsigned long e = ERR_get_error();
    if (!e) {
        snprintf(buf, len, "unknown TLS error");
        return;
    }
    ERR_error_string_n(e, buf, len);
    ERR_clear_error();
}

static SSL_CTX *client_ctx(const char *ca_file, char *err, size_t errlen);

SSL_CTX *tls_client_ctx(const char *ca_file, char *err, size_t errlen)
{
    pthread_mutex_lock(&ctx_mu);
    SSL_CTX *ctx = client_ctx(ca_file, err, errlen);
    pthread_mutex_unlock(&ctx_mu);
    return ctx;
}

/* (ctx_mu held) */
static SSL_CTX *client_ctx(const char *ca_file, char *err, size_t errlen)
{
    for (int i = 0; i < nctx; i++) {
        if ((!ca_file && !ctxs[i].ca_file) ||
            (ca_file && ctxs[i].ca_file && strcmp(ca_file, ctxs[i].ca_file) == 0))
            return ctxs[i].ctx;
    }
    if (nctx == MAX_CTX) {
        snprintf(err, errlen, "too many distinct CA files (at most %d)", MAX_CTX);
        return NULL;
    }
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        tls_last_error(err, errlen);
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    int ok = ca_file ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL)
                     : SSL_CTX_set_default_verify_paths(ctx);
    if (!ok) {
        char why[200];
        tls_last_error(why, sizeof why);
        snprintf(err, errlen, "cannot load CA file %s: %s", ca_file ? ca_file : "(system)", why);
        SSL_CTX_free(ctx);
        return NULL;
    }
    ctxs[nctx].ca_file = ca_file ? strdup(ca_file) : NULL;
    ctxs[nctx].ctx = ctx;
    nctx++;
    return ctx;
}

void tls_cleanup(void)
{
    pthread_mutex_lock(&ctx_mu);
    for (int i = 0; i < nctx; i++) {
        SSL_CTX_free(ctxs[i].ctx);
        free(ctxs[i].ca_file);
    }
    nctx = 0;
    pthread_mutex_unlock(&ctx_mu);
}
