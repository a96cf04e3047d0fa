/*
 * expose.c: --metrics (contract in expose.h). Owns the run's registry
 * (util/metrics.c) and the endpoint (net/httpd.c); a scrape copies the
 * run's counters into the registry, renders it and then the scripts'
 * registry (lua/mod_metrics.c: moonwait.metrics and the HTTP client's).
 */
#define _GNU_SOURCE
#include "expose.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../lua/script.h"
#include "../net/httpd.h"
#include "../util/log.h"
#include "../util/metrics.h"

/* The counters, in the order they are rendered, and where each comes from. */
enum {
    C_IN, C_OUT, C_OUTPUTS, C_WATERMARKS, C_ATTEMPTS, C_RETRIES, C_TIMEOUTS, C_ERRORS, C_SKIPPED, C_DEAD,
    C_MALFORMED, C_RELOADS, C_REJECTED, NCOUNTERS
};
enum { G_IN_FLIGHT, G_QUEUED, G_BACKOFF, G_CAPACITY, G_GENERATION, G_LIVE, G_CKPT_AGE, G_WORKERS, NGAUGES };
enum { H_ATTEMPT, H_RECORD, H_HOL, NHISTS };

static const struct {
    const char *name, *help;
} counters[NCOUNTERS] = {
    { "moonwait_records_in_total", "Records taken into the operator (every input line but watermarks and blank "
      "lines, malformed ones included)." },
    { "moonwait_records_out_total", "Records that left the operator, whatever their outcome." },
    { "moonwait_outputs_total", "Output lines written (a record has 0..N)." },
    { "moonwait_watermarks_total", "Watermarks that left the operator." },
    { "moonwait_attempts_total", "Attempts started, first attempts included." },
    { "moonwait_retries_total", "Attempts after the first." },
    { "moonwait_timeouts_total", "Records whose total timeout fired." },
    { "moonwait_errors_total", "Records failed for good under --on-error fail (the run failed)." },
    { "moonwait_skipped_total", "Records (and malformed lines) that failed and were skipped (--on-error skip)." },
    { "moonwait_dead_lettered_total", "Records written to the dead-letter file." },
    { "moonwait_malformed_total", "Input lines that were not a JSON object, skipped or dead-lettered (under "
      "--on-error fail the first one ends the run and counts in moonwait_errors_total)." },
    { "moonwait_reloads_total", "Hot reloads that became current." },
    { "moonwait_reloads_rejected_total", "Hot reloads rejected (the running generation kept)." },
}, gauges[NGAUGES] = {
    { "moonwait_in_flight", "Records in the operator: running, waiting to retry or finished and queued." },
    { "moonwait_queued", "Records finished and waiting behind earlier records to leave." },
    { "moonwait_backoff", "Records waiting to retry." },
    { "moonwait_capacity_limit", "The operator's capacity now (adaptive capacity: its limit)." },
    { "moonwait_generation", "The newest script generation." },
    { "moonwait_generations_live", "Script generations alive (the current one and those draining)." },
    { "moonwait_checkpoint_age_seconds", "Seconds since the last checkpoint was written (with --checkpoint-dir)." },
    { "moonwait_workers", "Threads running the script (--workers)." },
}, hists[NHISTS] = {
    { "moonwait_attempt_duration_seconds", "Duration of an attempt, from its start to its outcome or timeout." },
    { "moonwait_record_duration_seconds", "Time from a record's read to its leaving the operator." },
    { "moonwait_hol_blocking_seconds",
      "Time a finished record waited behind earlier ones to leave (head-of-line blocking; a record that left "
      "at once is not counted)." },
};

struct expose {
    httpd *srv;
    uv_timer_t poll;          /* asks the source for its backlog every second */
    int closing;              /* the server and the timer: 2 to close */
    metric *lag, *pending;    /* moonwait_source_lag / _pending, made on the first value */
    metric *wattempts;        /* moonwait_worker_attempts{worker}, with --workers 2 or more */
    metrics *reg;
    metric_series *c[NCOUNTERS], *g[NGAUGES], *h[NHISTS];
    void (*view)(void *ud, expose_view *v);
    void *ud;
    const void *completing;
};

static metric_series *family(expose *x, metric_type t, const char *name, const char *help)
{
    char err[200];
    metric *f = metrics_family(x->reg, t, name, help, 0, NULL, 0, NULL, err, sizeof err);
    return f ? metrics_series(f, 0, NULL, NULL, err, sizeof err) : NULL;
}

/* --workers: the attempts running on each worker, which shows one that
 * lags behind (a key that hashes to it, a slow shard of the script). */
static void per_worker(expose *x, const expose_view *v)
{
    char err[200];
    if (v->workers < 2)
        return;
    if (!x->wattempts) {
        static const char *const labels[] = { "worker" };
        x->wattempts = metrics_family(x->reg, METRIC_GAUGE, "moonwait_worker_attempts",
                                      "Attempts running on each worker now (--workers; 1 is the main thread).",
                                      1, labels, 0, NULL, err, sizeof err);
        if (!x->wattempts)
            return;
    }
    for (int k = 0; k < v->workers && k < 64; k++) {
        char name[12]; /* any int: gcc -O1 (the ASan build) proves no bound on k and refuses 8 */
        snprintf(name, sizeof name, "%d", k + 1);
        const char *lv[1] = { name };
        size_t ll[1] = { strlen(name) };
        metric_series *s = metrics_series(x->wattempts, 1, lv, ll, err, sizeof err);
        if (s)
            metrics_set(s, (double)v->worker_attempts[k]);
    }
}

/* Copy the run's counters into the registry. */
static void refresh(expose *x, expose_view *v)
{
    const op_stats *o = v->op;
    double c[NCOUNTERS] = { [C_IN] = (double)o->records_in, [C_OUT] = (double)o->records_out,
                            [C_OUTPUTS] = (double)v->outputs, [C_WATERMARKS] = (double)o->watermarks_out,
                            [C_ATTEMPTS] = (double)o->attempts, [C_RETRIES] = (double)o->retries,
                            [C_TIMEOUTS] = (double)o->timeouts, [C_ERRORS] = (double)o->failures,
                            [C_SKIPPED] = (double)v->skipped, [C_DEAD] = (double)o->dead_lettered,
                            [C_MALFORMED] = (double)v->malformed, [C_RELOADS] = (double)v->reloads,
                            [C_REJECTED] = (double)v->rejected };
    double g[NGAUGES] = { [G_IN_FLIGHT] = (double)v->in_flight, [G_QUEUED] = (double)v->queued,
                          [G_BACKOFF] = (double)v->backoffs, [G_CAPACITY] = (double)v->capacity,
                          [G_GENERATION] = v->generation, [G_LIVE] = v->generations_live,
                          [G_CKPT_AGE] = v->checkpoint_age_s, [G_WORKERS] = v->workers };
    for (int i = 0; i < NCOUNTERS; i++)
        metrics_set(x->c[i], c[i]);
    for (int i = 0; i < NGAUGES; i++)
        metrics_set(x->g[i], g[i]);
    per_worker(x, v);
}

/* A partition's backlog (source_lag's each). */
static void on_lag(void *ud, const char *stream, const char *group, double lag, double pending)
{
    expose *x = ud;
    char err[200];
    if (!x->lag) {
        static const char *const labels[] = { "stream", "group" };
        x->lag = metrics_family(x->reg, METRIC_GAUGE, "moonwait_source_lag",
                                "Entries of the input stream not yet delivered to the consumer group (Redis 7's "
                                "XINFO GROUPS lag), as of the last poll (at most a second old).",
                                2, labels, 0, NULL, err, sizeof err);
        x->pending = metrics_family(x->reg, METRIC_GAUGE, "moonwait_source_pending",
                                    "Entries delivered to the consumer group and not yet acknowledged (XINFO "
                                    "GROUPS pending), as of the last poll.",
                                    2, labels, 0, NULL, err, sizeof err);
        if (!x->lag || !x->pending)
            return;
    }
    const char *v[2] = { stream, group };
    size_t l[2] = { strlen(stream), strlen(group) };
    metric_series *s;
    if (lag >= 0 && (s = metrics_series(x->lag, 2, v, l, err, sizeof err)))
        metrics_set(s, lag);
    if (pending >= 0 && (s = metrics_series(x->pending, 2, v, l, err, sizeof err)))
        metrics_set(s, pending);
}

static void on_poll(uv_timer_t *t)
{
    expose *x = t->data;
    expose_view v = { 0 };
    x->view(x->ud, &v);
    if (v.src)
        source_lag(v.src, NULL, NULL);
}

static void handle(void *ud, const char *path, httpd_response *res)
{
    expose *x = ud;
    expose_view v = { 0 };
    x->view(x->ud, &v);
    if (strcmp(path, "/metrics") == 0) {
        refresh(x, &v);
        if (v.src)
            source_lag(v.src, on_lag, x);
        res->content_type = "text/plain; version=0.0.4; charset=utf-8";
        if (metrics_render(x->reg, res->body) != 0 || script_metrics_render(res->body) != 0) {
            res->status = 503;
            res->body->len = 0;
        }
    } else if (strcmp(path, "/healthz") == 0) {
        res->status = v.healthy ? 200 : 503;
        mw_buf_add(res->body, v.state, strlen(v.state));
        mw_buf_add(res->body, "\n", 1);
    } else {
        res->status = 404;
        mw_buf_add(res->body, "not found: try /metrics or /healthz\n", 36);
    }
}

int expose_start(expose **out, uv_loop_t *loop, const char *flag_value, const char *host, int port,
                 void (*view)(void *ud, expose_view *v), void *ud)
{
    *out = NULL;
    expose *x = calloc(1, sizeof *x);
    /* Label sets per family: one for the run's own; a worker each for
     * moonwait_worker_attempts, a partition each for the source's lag
     * (a Redis cluster's streams), so enough for both. */
    if (!x || !(x->reg = metrics_new(1024))) {
        free(x);
        mw_log(MW_LOG_ERROR, "--metrics %s: out of memory", flag_value);
        return -1;
    }
    x->view = view;
    x->ud = ud;
    int ok = 1;
    for (int i = 0; i < NCOUNTERS; i++)
        ok &= (x->c[i] = family(x, METRIC_COUNTER, counters[i].name, counters[i].help)) != NULL;
    for (int i = 0; i < NGAUGES; i++)
        ok &= (x->g[i] = family(x, METRIC_GAUGE, gauges[i].name, gauges[i].help)) != NULL;
    for (int i = 0; i < NHISTS; i++)
        ok &= (x->h[i] = family(x, METRIC_HISTOGRAM, hists[i].name, hists[i].help)) != NULL;
    int bound = port;
    int rc = ok ? httpd_start(&x->srv, loop, host, port, handle, x, &bound) : UV_ENOMEM;
    if (rc != 0) {
        mw_log(MW_LOG_ERROR, "--metrics %s: cannot listen on it: %s", flag_value, uv_strerror(rc));
        metrics_free(x->reg);
        free(x);
        return -1;
    }
    uv_timer_init(loop, &x->poll);
    x->poll.data = x;
    uv_timer_start(&x->poll, on_poll, 1000, 1000);
    uv_unref((uv_handle_t *)&x->poll);
    int v6 = strchr(host, ':') != NULL;
    mw_log(MW_LOG_INFO, "metrics on http://%s%s%s:%d/metrics", v6 ? "[" : "", host, v6 ? "]" : "", bound);
    script_metrics_enable(1);
    *out = x;
    return 0;
}

static void freed(void *ud)
{
    expose *x = ud;
    if (--x->closing)
        return;
    metrics_free(x->reg);
    free(x);
}

static void poll_closed(uv_handle_t *h)
{
    freed(h->data);
}

void expose_close(expose *x)
{
    if (!x)
        return;
    script_metrics_enable(0);
    x->closing = 2;
    uv_close((uv_handle_t *)&x->poll, poll_closed);
    httpd_close(x->srv, freed, x);
}

void expose_attempt(expose *x, uint64_t start_ns, uint64_t now_ns)
{
    if (start_ns)
        metrics_observe(x->h[H_ATTEMPT], (double)(now_ns - start_ns) / 1e9);
}

void expose_emit(expose *x, uint64_t read_ns, uint64_t done_ns, int at_once, uint64_t now_ns)
{
    if (read_ns)
        metrics_observe(x->h[H_RECORD], (double)(now_ns - read_ns) / 1e9);
    if (done_ns && !at_once)
        metrics_observe(x->h[H_HOL], (double)(now_ns - done_ns) / 1e9);
}

void expose_completing(expose *x, const void *task)
{
    x->completing = task;
}

const void *expose_completing_task(const expose *x)
{
    return x->completing;
}
