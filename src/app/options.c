/*
 * options.c: the table of `moonwait run` settings and their setters
 * (contract in options.h): each setter validates one value's text form and
 * stores it in a config, with the message a user sees when it is refused.
 */
#define _GNU_SOURCE
#include "options.h"

#include <arpa/inet.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../util/str.h"

static int set_str(char **dst, const char *v, char *why, size_t whylen)
{
    if (!*v) {
        snprintf(why, whylen, "expected a non-empty string");
        return -1;
    }
    free(*dst);
    *dst = strdup(v);
    return 0;
}

static int s_script(config *c, const char *v, char *w, size_t n) { return set_str(&c->script, v, w, n); }
static int s_input(config *c, const char *v, char *w, size_t n) { return set_str(&c->input, v, w, n); }
static int s_output(config *c, const char *v, char *w, size_t n) { return set_str(&c->output, v, w, n); }
/* A field path: a name, or names joined by dots ("a.b" for nested). */
static int set_field(char **dst, const char *v, char *w, size_t n)
{
    if (*v && (*v == '.' || v[strlen(v) - 1] == '.' || strstr(v, ".."))) {
        snprintf(w, n, "expected a field name or a dotted path like 'a.b', got '%s'", v);
        return -1;
    }
    return set_str(dst, v, w, n);
}

static int s_event(config *c, const char *v, char *w, size_t n) { return set_field(&c->event_time, v, w, n); }
static int s_key(config *c, const char *v, char *w, size_t n) { return set_field(&c->key, v, w, n); }

/* One of `names` (NULL-terminated): its index in *out. Else the message
 * lists them ("expected 'a', 'b' or 'c', got 'v'"). */
static int choose(const char *v, const char *const *names, int *out, char *w, size_t n)
{
    int k = 0;
    for (; names[k]; k++)
        if (strcmp(v, names[k]) == 0) {
            *out = k;
            return 0;
        }
    size_t len = (size_t)snprintf(w, n, "expected ");
    for (int i = 0; i < k && len < n; i++)
        len += (size_t)snprintf(w + len, n - len, "%s'%s'", i == 0 ? "" : i == k - 1 ? " or " : ", ", names[i]);
    if (len < n)
        snprintf(w + len, n - len, ", got '%s'", v);
    return -1;
}

static int s_mode(config *c, const char *v, char *w, size_t n)
{
    static const char *const names[] = { "ordered", "unordered", "keyed", NULL }; /* op_mode order */
    int k;
    if (choose(v, names, &k, w, n) != 0)
        return -1;
    c->mode = (op_mode)k;
    return 0;
}

/* "N" (fixed) or "MIN..MAX" (adaptive between them, from MIN). */
static int s_capacity(config *c, const char *v, char *w, size_t n)
{
    uint64_t x, lo, hi;
    const char *dots = strstr(v, "..");
    if (!dots) {
        if (mw_str_u64(v, 10000000, &x) != 0 || x == 0) {
            snprintf(w, n, "expected an integer from 1 to 10000000, or MIN..MAX for adaptive capacity, got '%s'", v);
            return -1;
        }
        c->capacity = (size_t)x;
        c->adaptive = 0;
        return 0;
    }
    char min[32];
    size_t ml = (size_t)(dots - v);
    snprintf(min, sizeof min, "%.*s", (int)(ml < sizeof min ? ml : sizeof min - 1), v);
    if (ml >= sizeof min || mw_str_u64(min, 10000000, &lo) != 0 || mw_str_u64(dots + 2, 10000000, &hi) != 0) {
        snprintf(w, n, "expected MIN..MAX with integers from 1 to 10000000 (adaptive capacity, e.g. 8..1000), got '%s'",
                 v);
        return -1;
    }
    if (lo == 0) {
        snprintf(w, n, "adaptive capacity's min must be at least 1, got '%s'", v);
        return -1;
    }
    if (lo > hi) {
        snprintf(w, n, "adaptive capacity's min (%llu) is above its max (%llu)", (unsigned long long)lo,
                 (unsigned long long)hi);
        return -1;
    }
    c->adaptive = 1;
    c->cap_min = c->capacity = (size_t)lo;
    c->cap_max = (size_t)hi;
    return 0;
}

static int parse_ms(const char *v, uint64_t max, uint64_t *out, char *w, size_t n, const char *extra)
{
    if (mw_str_u64(v, max, out) != 0) {
        snprintf(w, n, "expected milliseconds as a non-negative integer%s, got '%s'", extra, v);
        return -1;
    }
    return 0;
}

static int s_timeout(config *c, const char *v, char *w, size_t n)
{
    return parse_ms(v, (uint64_t)1 << 40, &c->timeout_ms, w, n, " (0 = no timeout)");
}

static int s_workers(config *c, const char *v, char *w, size_t n)
{
    uint64_t x;
    if (mw_str_u64(v, WORKERS_MAX, &x) != 0 || x < 1) {
        snprintf(w, n, "expected an integer from 1 to %d (threads running the script), got '%s'", WORKERS_MAX, v);
        return -1;
    }
    c->workers = (int)x;
    return 0;
}

static int s_cpu_budget(config *c, const char *v, char *w, size_t n)
{
    return parse_ms(v, 24 * 3600 * 1000, &c->cpu_budget_ms, w, n, " (0 = off)");
}

static int s_ooo(config *c, const char *v, char *w, size_t n)
{
    uint64_t x;
    if (parse_ms(v, (uint64_t)1 << 50, &x, w, n, "") != 0)
        return -1;
    c->max_ooo_ms = (int64_t)x;
    c->has_max_ooo = 1;
    return 0;
}

static int parse_bool(const char *v, int *out, char *w, size_t n)
{
    if (strcmp(v, "true") == 0)
        *out = 1;
    else if (strcmp(v, "false") == 0)
        *out = 0;
    else {
        snprintf(w, n, "expected true or false, got '%s'", v);
        return -1;
    }
    return 0;
}

static int s_stats(config *c, const char *v, char *w, size_t n)
{
    return parse_bool(v, &c->stats, w, n);
}

static int s_maxline(config *c, const char *v, char *w, size_t n)
{
    uint64_t x;
    if (mw_str_u64(v, (uint64_t)1 << 32, &x) != 0 || x < 16) {
        snprintf(w, n, "expected a byte count from 16 to 4294967296, got '%s'", v);
        return -1;
    }
    c->max_line = (size_t)x;
    return 0;
}

static int s_retry(config *c, const char *v, char *w, size_t n)
{
    return op_retry_parse(v, &c->retry, w, n);
}

static int s_on_error(config *c, const char *v, char *w, size_t n)
{
    static const char *const names[] = { "fail", "skip", "dead-letter", NULL }; /* on_error_mode order */
    int k;
    if (choose(v, names, &k, w, n) != 0)
        return -1;
    c->on_error = (on_error_mode)k;
    return 0;
}

static int s_dead_letter(config *c, const char *v, char *w, size_t n) { return set_str(&c->dead_letter, v, w, n); }
static int s_tag_gen(config *c, const char *v, char *w, size_t n) { return set_str(&c->tag_generation, v, w, n); }

static int s_watch(config *c, const char *v, char *w, size_t n)
{
    return parse_bool(v, &c->watch, w, n);
}

static int parse_positive_ms(const char *v, uint64_t *out, char *w, size_t n)
{
    if (parse_ms(v, (uint64_t)1 << 40, out, w, n, "") != 0)
        return -1;
    if (*out == 0) {
        snprintf(w, n, "expected a positive number of milliseconds");
        return -1;
    }
    return 0;
}

static int s_open_timeout(config *c, const char *v, char *w, size_t n)
{
    return parse_positive_ms(v, &c->reload_open_timeout_ms, w, n);
}

static int s_ckpt_dir(config *c, const char *v, char *w, size_t n) { return set_str(&c->checkpoint_dir, v, w, n); }

static int s_ckpt_interval(config *c, const char *v, char *w, size_t n)
{
    return parse_positive_ms(v, &c->checkpoint_interval_ms, w, n);
}

/* --rate-limit N[:B]: N attempts started per second (fractional allowed),
 * B at once. Without B, 10 ms worth of tokens (at least 1): the pump is
 * woken by a timer of whole ms, so a smaller burst could not keep a high
 * rate, and a larger one lets more through at once than a strict service
 * (nginx's limit_req without a burst) accepts. README: "Rate limits". */
#define RATE_MAX 10000000.0
static int s_rate(config *c, const char *v, char *w, size_t n)
{
    char *end;
    double rps = strtod(v, &end), burst = 0;
    int ok = end != v && (*end == 0 || *end == ':') && rps > 0 && rps <= RATE_MAX;
    if (ok && *end == ':') {
        const char *b = end + 1;
        uint64_t x;
        ok = mw_str_u64(b, (uint64_t)RATE_MAX, &x) == 0 && x >= 1;
        burst = (double)x;
    }
    if (!ok) {
        snprintf(w, n, "expected RPS[:BURST]: RPS a number above 0 and at most 10000000 (fractional allowed), "
                       "BURST an integer from 1 to 10000000, got '%s'", v);
        return -1;
    }
    if (burst == 0) {
        burst = ceil(rps / 100);
        if (burst < 1)
            burst = 1;
    }
    c->rate_rps = rps;
    c->rate_burst = burst;
    return 0;
}

static int s_batch_size(config *c, const char *v, char *w, size_t n)
{
    uint64_t x;
    if (mw_str_u64(v, BATCH_MAX_SIZE, &x) != 0 || x == 0) {
        snprintf(w, n, "expected an integer from 1 to %d, got '%s'", BATCH_MAX_SIZE, v);
        return -1;
    }
    c->batch.max_size = (uint32_t)x;
    c->batch.has_size = 1;
    return 0;
}

static int s_batch_wait(config *c, const char *v, char *w, size_t n)
{
    if (parse_ms(v, BATCH_MAX_WAIT_MS, &c->batch.max_wait_ms, w, n, " up to 3600000") != 0)
        return -1;
    c->batch.has_wait = 1;
    return 0;
}

static int s_batch_key(config *c, const char *v, char *w, size_t n)
{
    if (batch_key_check(v, w, n) != 0 || set_str(&c->batch.key, v, w, n) != 0)
        return -1;
    c->batch.has_key = 1;
    return 0;
}

static int s_log_format(config *c, const char *v, char *w, size_t n)
{
    static const char *const names[] = { "text", "json", NULL }; /* mw_log_format order */
    int k;
    if (choose(v, names, &k, w, n) != 0)
        return -1;
    c->log_format = 1 + k;
    return 0;
}

/* --metrics HOST:PORT: a numeric IPv4 address, [IPv6] in brackets, or
 * localhost (127.0.0.1); port 0 to 65535 (0: any free one, said at start).
 * Names are refused: resolving one would block, and an endpoint on an
 * address that moves is not what a scrape config expects. */
static int s_metrics(config *c, const char *v, char *w, size_t n)
{
    const char *given = v;
    char host[64];
    const char *colon = NULL;
    size_t hl = 0;
    int bracketed = v[0] == '[';
    if (bracketed) {
        const char *end = strchr(v, ']');
        if (end && end[1] == ':') {
            colon = end + 1;
            hl = (size_t)(end - v - 1);
            v++;
        }
    } else if ((colon = strrchr(v, ':')) && memchr(v, ':', (size_t)(colon - v))) {
        colon = NULL; /* an IPv6 address without brackets */
    }
    if (colon && !bracketed) /* (":9090": colon is v itself, hl 0, refused) */
        hl = (size_t)(colon - v);
    uint64_t port;
    unsigned char addr[16];
    int ok = colon && hl > 0 && hl < sizeof host && mw_str_u64(colon + 1, 65535, &port) == 0;
    if (ok) {
        memcpy(host, v, hl);
        host[hl] = 0;
        if (strcmp(host, "localhost") == 0)
            strcpy(host, "127.0.0.1");
        ok = inet_pton(AF_INET, host, addr) == 1 || inet_pton(AF_INET6, host, addr) == 1;
    }
    if (!ok) {
        snprintf(w, n, "expected HOST:PORT with HOST a numeric address (127.0.0.1, [::1], 0.0.0.0) or localhost "
                       "and PORT from 0 to 65535 (0: any free port), got '%s'", given);
        return -1;
    }
    if (set_str(&c->metrics_host, host, w, n) != 0)
        return -1;
    c->metrics_port = (int)port;
    return set_str(&c->metrics, given, w, n);
}

static const option settings[] = {
    { "script", "script", OPTION_PATH, s_script, "FILE",
      "The Lua script: a module whose async_invoke(record, ctx) (or batch_invoke(records, ctxs)) handles "
      "each record. Required." },
    { "input", "input", OPTION_PATH, s_input, "FILE|-|URL",
      "Where JSON lines are read: a file, a FIFO, a pipe, - for stdin, or a Redis stream's consumer group, "
      "redis://HOST:PORT?stream=KEY&group=GROUP (README \"Redis Streams\"). Default: -." },
    { "output", "output", OPTION_PATH, s_output, "FILE|-|URL",
      "Where output lines are written: a file (truncated), - for stdout, or a Redis stream, "
      "redis://HOST:PORT?stream=KEY. Default: -." },
    { "mode", "mode", OPTION_STRING, s_mode, "ordered|unordered|keyed",
      "The order records leave in: input order; as they complete (watermarks stay barriers); or input order "
      "among records with the same --key. Default: ordered." },
    { "capacity", "capacity", OPTION_CAPACITY, s_capacity, "N|MIN..MAX",
      "Most records in flight at once, 1 to 10000000; MIN..MAX: adaptive, the limit moves with latency and "
      "overloads (pipeline: { min =, max =, adaptive = true }; README \"Adaptive capacity\"). Default: 100." },
    { "timeout", "timeout_ms", OPTION_INT, s_timeout, "MS",
      "Each record's time budget in milliseconds, its retries included; when it runs out, "
      "on_timeout(record, ctx) answers for it, else it fails. 0 = none. Default: 10000." },
    { "event-time", "event_time", OPTION_STRING, s_event, "FIELD",
      "Generate watermarks from this record field, milliseconds since the epoch ('a.b' for nested)." },
    { "max-out-of-orderness", "max_out_of_orderness_ms", OPTION_INT, s_ooo, "MS",
      "How far behind the highest event time seen the watermark stays; needs --event-time. Default: 0." },
    { "stats", "stats", OPTION_BOOL, s_stats, NULL,
      "Progress on stderr (a live line with percent done and ETA on a terminal, a line a second "
      "elsewhere) and a summary at the end (README \"--stats\"). Default: off." },
    { "max-line-bytes", "max_line_bytes", OPTION_INT, s_maxline, "N",
      "Longest accepted input line, 16 to 4294967296 bytes. Default: 16777216 (16 MiB)." },
    { "retry", "retry", OPTION_RETRY, s_retry, "SPEC",
      "The retry strategy: none, fixed:ATTEMPTS:DELAY_MS or "
      "exponential:ATTEMPTS:INITIAL_MS:MAX_MS:MULTIPLIER[:full]; the script's retry_on_error and "
      "retry_on_result decide what is retried (pipeline: the string or a table; README \"Retries and "
      "failures\"). Default: the script's M.retry, else none." },
    { "on-error", "on_error", OPTION_STRING, s_on_error, "fail|skip|dead-letter",
      "What happens to a record that failed for good: the run fails, it is dropped, or it is written to "
      "--dead-letter. Default: fail." },
    { "dead-letter", "dead_letter", OPTION_PATH, s_dead_letter, "FILE|-|URL",
      "Where --on-error dead-letter writes failed records with their error: a file, - for stdout, or a "
      "Redis stream." },
    { "watch", "watch", OPTION_BOOL, s_watch, NULL,
      "Reload the script when it or a module next to it changes; SIGHUP reloads too (README \"Hot "
      "reload\"). Default: off." },
    { "tag-generation", "tag_generation", OPTION_STRING, s_tag_gen, "FIELD",
      "Set the top-level field FIELD of every output record to the generation (reload) of the script that "
      "made it." },
    { "reload-open-timeout", "reload_open_timeout_ms", OPTION_INT, s_open_timeout, "MS",
      "Time limit for a reloaded script's open(ctx); past it the reload is rejected. Default: 10000." },
    { "checkpoint-dir", "checkpoint", OPTION_CKPT, s_ckpt_dir, "DIR",
      "Exactly-once: take checkpoints in DIR and continue from the last one after a crash or a signal "
      "(pipeline: checkpoint = { dir =, interval_ms = }; README \"Exactly-once\")." },
    { "checkpoint-interval", "checkpoint_interval_ms", OPTION_INT, s_ckpt_interval, "MS",
      "How often a checkpoint is taken (pipeline: also checkpoint.interval_ms). Default: 1000." },
    { "cpu-budget", "cpu_budget_ms", OPTION_INT, s_cpu_budget, "MS",
      "Longest CPU time script code may run without yielding or returning; past it that call fails. 0 = off "
      "(README \"Runaway scripts\"). Default: 1000." },
    { "key", "key", OPTION_STRING, s_key, "FIELD",
      "With --mode keyed: records with the same value of FIELD ('a.b' for nested) leave in input order; "
      "others overtake them." },
    { "rate-limit", "rate_limit", OPTION_RATE, s_rate, "RPS[:BURST]",
      "At most RPS record attempts started per second (fractional allowed), BURST at once; default BURST: "
      "10 ms worth, at least 1 (pipeline: { rps =, burst = }; README \"Rate limits\")." },
    { "batch-size", "batch", OPTION_BATCH, s_batch_size, "N",
      "A batch_invoke script: most records in one batch, 1 to 100000 (pipeline: batch = { max_size = }; "
      "README \"Batching\"). Default: 100." },
    { "batch-wait", NULL, OPTION_INT, s_batch_wait, "MS",
      "Longest a batch waits to fill after its first record, 0 to 3600000; 0 = until the end of the loop "
      "turn (pipeline: batch.max_wait_ms). Default: 5." },
    { "batch-key", NULL, OPTION_STRING, s_batch_key, "FIELD",
      "Batch together only records with the same value of FIELD (pipeline: batch.key)." },
    { "log-format", "log_format", OPTION_STRING, s_log_format, "text|json",
      "How moonwait writes its messages, moonwait.log's lines and the --stats lines on stderr: 'text' or "
      "'json', one JSON object per line. Overrides MOONWAIT_LOG_FORMAT (README \"Logs\"). Default: text." },
    { "metrics", "metrics", OPTION_STRING, s_metrics, "HOST:PORT",
      "Serve Prometheus metrics at http://HOST:PORT/metrics and a health check at /healthz while the run runs "
      "(HOST a numeric address or localhost; PORT 0 picks a free one, said on stderr; README \"Metrics\": "
      "every metric, what to watch)." },
    { "workers", "workers", OPTION_INT, s_workers, "N",
      "Run the script in N threads (1 to 64), each with its own event loop and Lua VM per generation, fed "
      "by one reader and merged by one writer: every ordering, timeout and checkpoint rule holds as with "
      "one. Module-level Lua state, open/close and moonwait.cache are per worker (ctx.worker says which); "
      "moonwait.limit, moonwait.metrics and --rate-limit are shared. Pays for CPU spent in the script per "
      "record, on free cores; a passthrough or a script that waits on I/O gains nothing (README "
      "\"Workers\"). Default: 1." },
};
#define NSETTINGS (sizeof settings / sizeof settings[0])

const option *options_at(size_t i)
{
    return i < NSETTINGS ? &settings[i] : NULL;
}

const option *options_by_flag(const char *name, size_t n)
{
    const option *s = NULL;
    for (size_t k = 0; k < NSETTINGS; k++)
        if (strlen(settings[k].flag) == n && strncmp(settings[k].flag, name, n) == 0)
            s = &settings[k];
    return s;
}

const option *options_by_key(const char *key)
{
    const option *s = NULL;
    for (size_t i = 0; i < NSETTINGS; i++)
        if (settings[i].key && strcmp(settings[i].key, key) == 0)
            s = &settings[i];
    return s;
}

/* The nearest of the table's flags (keys: 0) or keys (1) to name[0..n):
 * a flag is also near through its pipeline key's spelling. */
static const char *suggest(const char *name, size_t n, int keys)
{
    size_t best = n / 3 > 1 ? n / 3 : 1;
    const char *hit = NULL;
    for (size_t i = 0; i < NSETTINGS; i++) {
        const char *cand[2] = { settings[i].flag, settings[i].key };
        for (int k = 0; k < 2; k++) {
            if (!cand[k])
                continue;
            size_t d = mw_str_distance(name, n, cand[k], strlen(cand[k]));
            const char *give = keys ? settings[i].key : settings[i].flag;
            if (give && d <= best && (!hit || d < best)) {
                best = d;
                hit = give;
            }
        }
    }
    return hit;
}

const char *options_suggest_flag(const char *name, size_t n)
{
    return suggest(name, n, 0);
}

const char *options_suggest_key(const char *name)
{
    return suggest(name, strlen(name), 1);
}

void options_keys(char *out, size_t n)
{
    size_t len = 0;
    out[0] = 0;
    for (size_t i = 0; i < NSETTINGS && len < n; i++)
        if (settings[i].key)
            len += (size_t)snprintf(out + len, n - len, "%s%s", i ? ", " : "", settings[i].key);
}

const char *options_want(option_type t)
{
    static const char *const want[] = { "a string", "a path string", "an integer", "a boolean",
                                        "a retry table or string", "a table { dir =, interval_ms = }",
                                        "an integer or a table { min =, max =, adaptive = true }",
                                        "a table { rps = N, burst = B }, a number or a string 'N:B'",
                                        "a table { max_size =, max_wait_ms =, key = }" };
    return want[t];
}
