/*
 * stats.c: --stats progress and summary (contract in stats.h). One list of
 * fields makes both the text and the JSON form of a line (util/log.c picks
 * which), and the progress line and the summary share their names and
 * order, so what one says the other says the same way.
 */
#include "stats.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "../util/log.h"

/* The live line's refresh on a terminal, and the shortest span a rate is
 * measured over (a shorter one jitters). */
#define LIVE_MS 250
#define RATE_SPAN_MS 1000

/* A line being built: its text form and its numeric fields. */
typedef struct line {
    char text[2048];
    size_t len;
    mw_log_num nums[40];
    size_t n;
} line;

/* " name=" + the value as `fmt` prints it (%.0f, "%.3f", "%.0f/s"), and the
 * value as a JSON number. */
static void add(line *l, const char *name, double v, const char *fmt)
{
    if (l->n < sizeof l->nums / sizeof l->nums[0])
        l->nums[l->n++] = (mw_log_num){ name, v };
    if (l->len >= sizeof l->text)
        return;
    int k = snprintf(l->text + l->len, sizeof l->text - l->len, " %s=", name);
    if (k > 0)
        l->len += (size_t)k;
    if (l->len < sizeof l->text) {
        k = snprintf(l->text + l->len, sizeof l->text - l->len, fmt, v);
        if (k > 0)
            l->len += (size_t)k;
    }
}

static void add_u(line *l, const char *name, uint64_t v)
{
    add(l, name, (double)v, "%.0f");
}

/* The counters and gauges both lines carry, in one order, then the rate
 * (progress: over the last second; summary: over the run). */
static void common(line *l, const stats_view *v, double rate)
{
    const op_stats *o = v->op;
    add_u(l, "records_in", o->records_in);
    add_u(l, "records_out", o->records_out);
    add_u(l, "outputs", v->outputs);
    add_u(l, "watermarks", o->watermarks_out);
    add_u(l, "attempts", o->attempts);
    add_u(l, "retries", o->retries);
    add_u(l, "timeouts", o->timeouts);
    add_u(l, "errors", o->failures);
    add_u(l, "skipped", v->skipped);
    add_u(l, "dead_lettered", o->dead_lettered);
    add_u(l, "malformed", v->malformed);
    add_u(l, "reloads", (uint64_t)v->reloads);
    add_u(l, "reloads_rejected", (uint64_t)v->rejected);
    add_u(l, "in_flight", v->in_flight);
    add_u(l, "queued", v->queued);
    add_u(l, "backoff", v->backoffs);
    add_u(l, "generation", (uint64_t)v->generation);
    if (v->adaptive) {
        add_u(l, "capacity_limit", v->limit);
        add_u(l, "capacity_min", v->limit_min);
        add_u(l, "capacity_max", v->limit_max);
    }
    add(l, "rate", rate, "%.0f/s");
}

/* With a rate limit: the tokens taken, the times intake paused for one,
 * and the starts of retries (or restored records) it put off. */
static void rate_limit(line *l, const stats_view *v)
{
    if (!v->limited)
        return;
    add_u(l, "rate_tokens", v->limit_tokens);
    add_u(l, "rate_pauses", v->limit_pauses);
    add_u(l, "rate_gated", v->limit_gated);
}

void stats_init(stats *s, uv_loop_t *loop, int enabled, void (*view)(void *ud, stats_view *v), void *ud)
{
    memset(s, 0, sizeof *s);
    s->loop = loop;
    s->enabled = enabled;
    s->view = view;
    s->ud = ud;
    s->start_ms = s->last_ms = uv_now(loop);
}

static void print_summary(stats *s)
{
    stats_view v;
    line l = { .len = 0 };
    s->view(s->ud, &v);
    double secs = (double)(uv_now(s->loop) - s->start_ms) / 1000.0;
    double rate = secs > 0 ? (double)v.op->records_out / secs : 0;
    uv_rusage_t ru;
    long rss_kb = 0;
    double cpu = 0;
    if (uv_getrusage(&ru) == 0) {
        rss_kb = (long)ru.ru_maxrss;
        cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
              (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    }
    l.len = (size_t)snprintf(l.text, sizeof l.text, "summary:");
    common(&l, &v, rate);
    add(&l, "elapsed_s", secs, "%.3f");
    add(&l, "cpu_s", cpu, "%.3f");
    add_u(&l, "peak_rss_kb", (uint64_t)rss_kb);
    if (v.workers > 1) /* (one worker's summary reads as before) */
        add_u(&l, "workers", (uint64_t)v.workers);
    rate_limit(&l, &v);
    mw_log_stats("summary", l.text, l.nums, l.n);
}

/* "1:02:03" or "2:03". */
static void fmt_eta(char *b, size_t n, double secs)
{
    uint64_t t = (uint64_t)(secs + 0.5);
    if (t >= 3600)
        snprintf(b, n, "%" PRIu64 ":%02u:%02u", t / 3600, (unsigned)(t / 60 % 60), (unsigned)(t % 60));
    else
        snprintf(b, n, "%u:%02u", (unsigned)(t / 60), (unsigned)(t % 60));
}

static void on_timer(uv_timer_t *h)
{
    stats *s = h->data;
    stats_view v;
    s->view(s->ud, &v);
    const op_stats *o = v.op;
    uint64_t now = uv_now(s->loop);
    if (!s->live || now - s->last_ms >= RATE_SPAN_MS) {
        double dt = (double)(now - s->last_ms) / 1000.0;
        s->rate = dt > 0 ? (double)(o->records_out - s->last_out) / dt : 0;
        s->last_ms = now;
        s->last_out = o->records_out;
    } else if (s->last_ms == s->start_ms && now > s->start_ms) {
        /* The live line's first second: the rate so far. */
        s->rate = (double)o->records_out / ((double)(now - s->start_ms) / 1000.0);
    }
    /* Percent done and ETA: bytes read against the input's size, the
     * speed measured from where this run started reading. */
    double pct = -1, eta = -1;
    if (v.has_size && v.input_size > 0) {
        pct = 100.0 * (double)v.input_bytes / (double)v.input_size;
        if (pct > 100)
            pct = 100;
        double secs = (double)(now - s->start_ms) / 1000.0;
        uint64_t done = v.input_bytes > s->start_bytes ? v.input_bytes - s->start_bytes : 0;
        if (v.input_bytes >= v.input_size)
            eta = 0;
        else if (done > 0 && secs > 0)
            eta = (double)(v.input_size - v.input_bytes) / ((double)done / secs);
    }
    if (s->live) {
        char text[256], e[32] = "-:--";
        size_t k = 0;
        if (pct >= 0) {
            if (eta >= 0)
                fmt_eta(e, sizeof e, eta);
            k = (size_t)snprintf(text, sizeof text, "%.1f%% ETA %s ", pct, e);
        }
        snprintf(text + k, sizeof text - k,
                 "rate=%.0f/s in_flight=%zu errors=%" PRIu64 " records_out=%" PRIu64 " generation=%d", s->rate,
                 v.in_flight, o->failures, o->records_out, v.generation);
        mw_log_status(text);
        return;
    }
    line l = { .len = 0 };
    l.len = (size_t)snprintf(l.text, sizeof l.text, "stats:");
    common(&l, &v, s->rate);
    rate_limit(&l, &v);
    if (pct >= 0) {
        add_u(&l, "input_bytes", v.input_bytes);
        add_u(&l, "input_size", v.input_size);
        add(&l, "percent", pct, "%.1f");
        if (eta >= 0)
            add(&l, "eta_s", eta, "%.0f");
    }
    mw_log_stats("stats", l.text, l.nums, l.n);
}

void stats_start(stats *s)
{
    uv_timer_init(s->loop, &s->timer);
    s->timer.data = s;
    if (!s->enabled)
        return;
    stats_view v;
    s->view(s->ud, &v);
    s->start_bytes = v.has_size ? v.input_bytes : 0;
    /* A live line only where a person watches and nothing parses it. */
    s->live = mw_log_is_tty() && mw_log_get_format() == MW_LOG_TEXT;
    uint64_t every = s->live ? LIVE_MS : 1000;
    uv_timer_start(&s->timer, on_timer, every, every);
    uv_unref((uv_handle_t *)&s->timer);
}

void stats_stop(stats *s, uv_close_cb closed)
{
    if (s->live)
        mw_log_status(NULL);
    if (s->enabled)
        print_summary(s);
    uv_close((uv_handle_t *)&s->timer, closed);
}
