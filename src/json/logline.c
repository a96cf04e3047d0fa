/*
 * logline.c: a log line as one JSON object (contract in json.h), the JSON
 * form of src/util/log.c's lines. main.c installs it there
 * (mw_log_set_json_writer): util/ may not include json/, and this way the
 * log's strings are escaped by the same writer as the records'.
 *
 * Fields, in this order: time (RFC 3339, UTC, milliseconds), level, msg,
 * then those known: file, line, seq, generation, worker, then the numeric ones of a
 * --stats line. Strings go through json_put_bytes, so a NUL byte, a control
 * character or invalid UTF-8 in a message gives valid JSON on one line.
 */
#include "json.h"

#include <string.h>
#include <time.h>

static int key(mw_buf *b, const char *name)
{
    return mw_buf_add(b, ",\"", 2) || mw_buf_add(b, name, strlen(name)) || mw_buf_add(b, "\":", 2);
}

static int str(mw_buf *b, const char *s, size_t n)
{
    int lossy;
    return json_put_bytes(b, s, n, &lossy);
}

static int num(mw_buf *b, const char *name, double v)
{
    char d[40];
    int n = json_fmt_double(d, v);
    if (n < 0) /* NaN, infinities: not JSON numbers */
        return key(b, name) || mw_buf_add(b, "null", 4);
    return key(b, name) || mw_buf_add(b, d, (size_t)n);
}

static int u64(mw_buf *b, const char *name, uint64_t v)
{
    char d[24];
    int n = json_fmt_u64(d, v);
    return key(b, name) || mw_buf_add(b, d, (size_t)n);
}

int json_format_time(char out[32], int64_t unix_ms)
{
    time_t secs = (time_t)(unix_ms / 1000);
    int ms = (int)(unix_ms % 1000);
    if (ms < 0) {
        ms += 1000;
        secs--;
    }
    struct tm tm;
    if (!gmtime_r(&secs, &tm))
        return -1;
    size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    if (n == 0 || n + 6 > 32)
        return -1;
    out[n++] = '.';
    out[n++] = (char)('0' + ms / 100);
    out[n++] = (char)('0' + ms / 10 % 10);
    out[n++] = (char)('0' + ms % 10);
    out[n++] = 'Z';
    out[n] = 0;
    return (int)n;
}

int json_logline(mw_buf *b, const mw_log_rec *r)
{
    char t[32];
    int tn = json_format_time(t, r->time_ms);
    if (tn < 0)
        tn = 0;
    const char *lvl = mw_log_level_name(r->level);
    if (mw_buf_add(b, "{\"time\":\"", 9) || mw_buf_add(b, t, (size_t)tn) || mw_buf_add(b, "\",\"level\":\"", 11) ||
        mw_buf_add(b, lvl, strlen(lvl)) || mw_buf_add(b, "\"", 1) || key(b, "msg") || str(b, r->msg, r->len))
        return -1;
    const mw_log_ctx *c = r->ctx;
    if (c && c->file && (key(b, "file") || str(b, c->file, strlen(c->file))))
        return -1;
    if (c && c->file && c->line > 0 && u64(b, "line", (uint64_t)c->line))
        return -1;
    if (c && c->seq && u64(b, "seq", c->seq))
        return -1;
    if (c && c->generation > 0 && u64(b, "generation", (uint64_t)c->generation))
        return -1;
    if (c && c->worker > 0 && u64(b, "worker", (uint64_t)c->worker))
        return -1;
    for (size_t i = 0; i < r->nnums; i++)
        if (num(b, r->nums[i].name, r->nums[i].value))
            return -1;
    return mw_buf_add(b, "}", 1);
}
