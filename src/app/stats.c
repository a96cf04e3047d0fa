/*
 * stats.c: --stats lines (contract in stats.h).
 */
#include "stats.h"

#include <inttypes.h>
#include <stdio.h>

void stats_init(stats *s, uv_loop_t *loop, int enabled, void (*view)(void *ud, stats_view *v), void *ud)
{
    s->loop = loop;
    s->enabled = enabled;
    s->view = view;
    s->ud = ud;
    s->start_ms = s->last_ms = uv_now(loop);
    s->last_out = 0;
}

/* " limit=N limit_min=N limit_max=N" with adaptive capacity, else "". */
static const char *capacity_text(const stats_view *v, char *b, size_t n)
{
    if (!v->adaptive)
        return "";
    snprintf(b, n, " limit=%zu limit_min=%zu limit_max=%zu", v->limit, v->limit_min, v->limit_max);
    return b;
}

/* With a rate limit: the tokens taken, the times intake paused for one,
 * and the starts of retries (or restored records) it put off. */
static const char *limit_text(const stats_view *v, char *b, size_t n)
{
    if (!v->limited)
        return "";
    snprintf(b, n, " rate_tokens=%" PRIu64 " rate_pauses=%" PRIu64 " rate_gated=%" PRIu64, v->limit_tokens,
             v->limit_pauses, v->limit_gated);
    return b;
}

static void print_summary(stats *s)
{
    stats_view v;
    char lim[96], lb[128];
    s->view(s->ud, &v);
    const op_stats *o = v.op;
    double secs = (double)(uv_now(s->loop) - s->start_ms) / 1000.0;
    double rate = secs > 0 ? (double)o->records_out / secs : 0;
    uv_rusage_t ru;
    long rss_kb = 0;
    double cpu = 0;
    if (uv_getrusage(&ru) == 0) {
        rss_kb = (long)ru.ru_maxrss;
        cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
              (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    }
    fprintf(stderr,
            "moonwait: summary: records_in=%" PRIu64 " records_out=%" PRIu64 " outputs=%" PRIu64
            " watermarks=%" PRIu64 " attempts=%" PRIu64 " retries=%" PRIu64 " timeouts=%" PRIu64
            " errors=%" PRIu64 " skipped=%" PRIu64 " dead_lettered=%" PRIu64 " malformed=%" PRIu64
            " generation=%d reloads=%d rejected=%d elapsed_s=%.3f rate=%.0f/s cpu_s=%.3f peak_rss_kb=%ld%s%s\n",
            o->records_in, o->records_out, v.outputs, o->watermarks_out, o->attempts, o->retries, o->timeouts,
            o->failures, v.skipped, o->dead_lettered, v.malformed, v.generation, v.reloads, v.rejected, secs,
            rate, cpu, rss_kb, capacity_text(&v, lim, sizeof lim), limit_text(&v, lb, sizeof lb));
}

static void on_timer(uv_timer_t *h)
{
    stats *s = h->data;
    stats_view v;
    char lim[96], lb[128];
    s->view(s->ud, &v);
    const op_stats *o = v.op;
    uint64_t now = uv_now(s->loop);
    double dt = (double)(now - s->last_ms) / 1000.0;
    double rate = dt > 0 ? (double)(o->records_out - s->last_out) / dt : 0;
    s->last_ms = now;
    s->last_out = o->records_out;
    fprintf(stderr,
            "moonwait: stats: in=%" PRIu64 " out=%" PRIu64 " in_flight=%zu backoff=%zu rate=%.0f/s attempts=%" PRIu64
            " retries=%" PRIu64 " timeouts=%" PRIu64 " errors=%" PRIu64 " skipped=%" PRIu64
            " dead_lettered=%" PRIu64 " generation=%d%s%s\n",
            o->records_in, o->records_out, v.in_flight, v.backoffs, rate, o->attempts, o->retries, o->timeouts,
            o->failures, v.skipped, o->dead_lettered, v.generation, capacity_text(&v, lim, sizeof lim),
            limit_text(&v, lb, sizeof lb));
}

void stats_start(stats *s)
{
    uv_timer_init(s->loop, &s->timer);
    s->timer.data = s;
    if (!s->enabled)
        return;
    uv_timer_start(&s->timer, on_timer, 1000, 1000);
    uv_unref((uv_handle_t *)&s->timer);
}

void stats_stop(stats *s, uv_close_cb closed)
{
    if (s->enabled)
        print_summary(s);
    uv_close((uv_handle_t *)&s->timer, closed);
}
