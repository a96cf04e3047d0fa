/*
 * log.c: the lines moonwait writes on stderr (contract in log.h). Owns the
 * format, the level threshold and the terminal's status line; each line
 * goes out in one fwrite, so concurrent writers on the same stderr do not
 * interleave inside it.
 *
 * Threads (--workers N): any loop thread logs. The settings are atomics
 * (set at start-up, read everywhere); the status line and every write to
 * stderr are under out_mu, so a line and the status redrawn after it go
 * out together and two threads' lines never mix. A line is formatted
 * before the lock is taken. The signal handler's line takes no lock (it
 * cannot): it reads only `shown` and the format, and exits right after.
 */
#define _GNU_SOURCE
#include "log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

static _Atomic mw_log_format format = MW_LOG_TEXT;
static _Atomic mw_log_level threshold = MW_LOG_INFO;
static _Atomic(mw_log_json_fn) json_writer;
static pthread_mutex_t out_mu = PTHREAD_MUTEX_INITIALIZER;
static char *status;      /* the live line's text (owned), or NULL; under out_mu */
static atomic_int shown;  /* status is set (for the signal handler) */
static atomic_int tty = -1; /* stderr is a terminal: -1 not asked yet */

/* How a host line reads in text. */
enum { STYLE_HOST, STYLE_WARN, STYLE_PLAIN };

static const char *const level_names[] = { "debug", "info", "warn", "error" };

const char *mw_log_level_name(mw_log_level level)
{
    return level >= MW_LOG_DEBUG && level <= MW_LOG_ERROR ? level_names[level] : "info";
}

void mw_log_set_format(mw_log_format f) { atomic_store_explicit(&format, f, memory_order_relaxed); }
mw_log_format mw_log_get_format(void) { return atomic_load_explicit(&format, memory_order_relaxed); }
void mw_log_set_level(mw_log_level min) { atomic_store_explicit(&threshold, min, memory_order_relaxed); }
void mw_log_set_json_writer(mw_log_json_fn fn) { atomic_store(&json_writer, fn); }

int mw_log_parse_format(const char *s, mw_log_format *out)
{
    if (strcmp(s, "text") == 0)
        *out = MW_LOG_TEXT;
    else if (strcmp(s, "json") == 0)
        *out = MW_LOG_JSON;
    else
        return -1;
    return 0;
}

int mw_log_parse_level(const char *s, mw_log_level *out)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(s, level_names[i]) == 0) {
            *out = (mw_log_level)i;
            return 0;
        }
    return -1;
}

int mw_log_enabled(mw_log_level level)
{
    return level >= atomic_load_explicit(&threshold, memory_order_relaxed);
}

int mw_log_is_tty(void)
{
    int t = atomic_load_explicit(&tty, memory_order_relaxed);
    if (t < 0) {
        t = isatty(2); /* (two threads asking at once both get the same answer) */
        atomic_store_explicit(&tty, t, memory_order_relaxed);
    }
    return t;
}

static int json_on(void)
{
    return mw_log_get_format() == MW_LOG_JSON && atomic_load(&json_writer);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The terminal's width, or 0 when unknown. */
static size_t columns(void)
{
    struct winsize ws;
    return ioctl(2, TIOCGWINSZ, &ws) == 0 ? ws.ws_col : 0;
}

static const char erase[] = "\r\033[K";

/* Append the status line as shown: "moonwait: " + text, cut to the width. */
static void add_status(mw_buf *b)
{
    size_t cols = columns(), len = strlen(status), pre = strlen("moonwait: ");
    if (cols > pre + 1 && pre + len > cols - 1)
        len = cols - 1 - pre; /* the last column would wrap on some terminals */
    mw_buf_add(b, "moonwait: ", pre);
    mw_buf_add(b, status, len);
}

/* Write b's line (without its newline yet), keeping the status line
 * below it. Frees nothing: b is the caller's. Takes out_mu. */
static void put_line(mw_buf *b)
{
    pthread_mutex_lock(&out_mu);
    if (status) {
        /* The line first, over the status line; then the status again. */
        mw_buf out = { 0 };
        mw_buf_add(&out, erase, sizeof erase - 1);
        mw_buf_add(&out, b->p, b->len);
        mw_buf_add(&out, "\n", 1);
        add_status(&out);
        if (out.p)
            fwrite(out.p, 1, out.len, stderr);
        pthread_mutex_unlock(&out_mu);
        free(out.p);
        return;
    }
    if (mw_buf_add(b, "\n", 1) == 0)
        fwrite(b->p, 1, b->len, stderr);
    pthread_mutex_unlock(&out_mu);
}

static void emit(mw_log_level level, int style, const mw_log_ctx *ctx, const char *msg, size_t len,
                 const mw_log_num *nums, size_t nnums)
{
    mw_buf b = { 0 };
    if (json_on()) {
        mw_log_rec r = { level, now_ms(), msg, len, ctx, nums, nnums };
        if (atomic_load(&json_writer)(&b, &r) != 0) {
            free(b.p);
            return;
        }
    } else {
        char pre[96];
        int n = 0;
        if (ctx && ctx->script) {
            /* moonwait.log's own form: "[warn] file:line: seq=N: ". */
            n = snprintf(pre, sizeof pre, "moonwait: [%s] ", mw_log_level_name(level));
            mw_buf_add(&b, pre, (size_t)n);
            if (ctx->file && ctx->line > 0) {
                mw_buf_add(&b, ctx->file, strlen(ctx->file));
                n = snprintf(pre, sizeof pre, ":%d: ", ctx->line);
                mw_buf_add(&b, pre, (size_t)n);
            }
            if (ctx->worker > 0) {
                /* --workers N: open/close and module state run once per
                 * worker, so their lines would otherwise read alike. */
                n = snprintf(pre, sizeof pre, "worker=%d: ", ctx->worker);
                mw_buf_add(&b, pre, (size_t)n);
            }
            if (ctx->seq) {
                n = snprintf(pre, sizeof pre, "seq=%llu: ", (unsigned long long)ctx->seq);
                mw_buf_add(&b, pre, (size_t)n);
            }
        } else if (style == STYLE_WARN) {
            mw_buf_add(&b, "moonwait: warning: ", 19);
        } else if (style == STYLE_HOST) {
            mw_buf_add(&b, "moonwait: ", 10);
        }
        mw_buf_add(&b, msg, len);
    }
    put_line(&b);
    free(b.p);
}

/* Format into a buffer of the right size: a long message is not cut. The
 * trailing newline is dropped. NULL when out of memory. */
static char *format_msg(const char *fmt, va_list ap, size_t *len)
{
    char *s = NULL;
    int n = vasprintf(&s, fmt, ap);
    if (n < 0)
        return NULL;
    *len = (size_t)n;
    if (*len > 0 && s[*len - 1] == '\n')
        s[--*len] = '\0';
    return s;
}

static void vlog(mw_log_level level, int style, const mw_log_ctx *ctx, const char *fmt, va_list ap)
{
    if (!mw_log_enabled(level))
        return;
    size_t len;
    char *msg = format_msg(fmt, ap, &len);
    if (msg)
        emit(level, style, ctx, msg, len, NULL, 0);
    else
        emit(level, style, ctx, "out of memory formatting a message", 34, NULL, 0);
    free(msg);
}

void mw_log(mw_log_level level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog(level, STYLE_HOST, NULL, fmt, ap);
    va_end(ap);
}

void mw_warn(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog(MW_LOG_WARN, STYLE_WARN, NULL, fmt, ap);
    va_end(ap);
}

void mw_logx(mw_log_level level, const mw_log_ctx *ctx, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog(level, STYLE_HOST, ctx, fmt, ap);
    va_end(ap);
}

void mw_log_bytes(mw_log_level level, const mw_log_ctx *ctx, const char *msg, size_t len)
{
    if (mw_log_enabled(level))
        emit(level, STYLE_HOST, ctx, msg, len, NULL, 0);
}

void mw_log_plain(mw_log_level level, const char *msg)
{
    if (mw_log_enabled(level))
        emit(level, STYLE_PLAIN, NULL, msg, strlen(msg), NULL, 0);
}

void mw_log_stats(const char *msg, const char *text, const mw_log_num *nums, size_t n)
{
    if (json_on())
        emit(MW_LOG_INFO, STYLE_HOST, NULL, msg, strlen(msg), nums, n);
    else
        emit(MW_LOG_INFO, STYLE_HOST, NULL, text, strlen(text), NULL, 0);
}

/* ---- from a signal handler -------------------------------------------------- */

/* Append s to b[*n .. cap), cut at cap. */
static void sput(char *b, size_t *n, size_t cap, const char *s)
{
    while (*s && *n < cap)
        b[(*n)++] = *s++;
}

/* Append v with at least `width` digits. */
static void sput_u(char *b, size_t *n, size_t cap, uint64_t v, int width)
{
    char d[24];
    int k = 0;
    do {
        d[k++] = (char)('0' + v % 10);
        v /= 10;
    } while (v || k < width);
    while (k && *n < cap)
        b[(*n)++] = d[--k];
}

size_t mw_log_format_time(char out[32], int64_t unix_ms)
{
    int64_t secs = unix_ms / 1000, ms = unix_ms % 1000;
    if (ms < 0)
        ms += 1000, secs--;
    int64_t days = secs / 86400, sod = secs % 86400;
    if (sod < 0)
        sod += 86400, days--;
    /* The civil date of a day count (H. Hinnant's civil_from_days): gmtime_r
     * is not async-signal-safe. */
    int64_t z = days + 719468, era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097, yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100), mp = (5 * doy + 2) / 153;
    int64_t d = doy - (153 * mp + 2) / 5 + 1, m = mp < 10 ? mp + 3 : mp - 9, y = yoe + era * 400 + (m <= 2);
    size_t n = 0, cap = 31;
    sput_u(out, &n, cap, (uint64_t)y, 4);
    sput(out, &n, cap, "-");
    sput_u(out, &n, cap, (uint64_t)m, 2);
    sput(out, &n, cap, "-");
    sput_u(out, &n, cap, (uint64_t)d, 2);
    sput(out, &n, cap, "T");
    sput_u(out, &n, cap, (uint64_t)(sod / 3600), 2);
    sput(out, &n, cap, ":");
    sput_u(out, &n, cap, (uint64_t)(sod / 60 % 60), 2);
    sput(out, &n, cap, ":");
    sput_u(out, &n, cap, (uint64_t)(sod % 60), 2);
    sput(out, &n, cap, ".");
    sput_u(out, &n, cap, (uint64_t)ms, 3);
    sput(out, &n, cap, "Z");
    out[n] = 0;
    return n;
}

void mw_log_from_signal(mw_log_level level, const char *msg)
{
    char b[1024];
    size_t n = 0, cap = sizeof b - 1;
    if (atomic_load_explicit(&shown, memory_order_relaxed))
        sput(b, &n, cap, erase);
    if (mw_log_get_format() == MW_LOG_JSON) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        char t[32];
        mw_log_format_time(t, (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
        sput(b, &n, cap, "{\"time\":\"");
        sput(b, &n, cap, t);
        sput(b, &n, cap, "\",\"level\":\"");
        sput(b, &n, cap, mw_log_level_name(level));
        sput(b, &n, cap, "\",\"msg\":\"");
        /* A fixed message of the host's: printable ASCII; '"' and '\\'
         * escaped, anything else below 0x20 or above 0x7e dropped. */
        for (const char *s = msg; *s && n + 2 < cap; s++) {
            unsigned char c = (unsigned char)*s;
            if (c == '"' || c == '\\')
                b[n++] = '\\';
            if (c >= 0x20 && c < 0x7f)
                b[n++] = (char)c;
        }
        sput(b, &n, cap, "\"}");
    } else {
        sput(b, &n, cap, "moonwait: ");
        sput(b, &n, cap, msg);
    }
    b[n++] = '\n';
    ssize_t w = write(2, b, n);
    (void)w;
}

void mw_log_status(const char *text)
{
    mw_buf b = { 0 };
    char *s = text ? strdup(text) : NULL;
    if (text && !s)
        return;
    pthread_mutex_lock(&out_mu);
    if (!text) {
        if (status)
            mw_buf_add(&b, erase, sizeof erase - 1);
        free(status);
        status = NULL;
    } else {
        free(status);
        status = s;
        mw_buf_add(&b, erase, sizeof erase - 1);
        add_status(&b);
    }
    atomic_store_explicit(&shown, status != NULL, memory_order_relaxed);
    if (b.p)
        fwrite(b.p, 1, b.len, stderr);
    pthread_mutex_unlock(&out_mu);
    free(b.p);
}
