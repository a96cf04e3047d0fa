/*
 * metrics_text.c: the registry as Prometheus's text format 0.0.4 (contract
 * in metrics.h): HELP and TYPE lines, escaped label values, a histogram's
 * cumulative _bucket lines with le="+Inf", _sum and _count.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "metrics_int.h"

size_t metrics_fmt_double(char *b, size_t n, double v)
{
    int len;
    if (isnan(v))
        len = snprintf(b, n, "NaN");
    else if (isinf(v))
        len = snprintf(b, n, v > 0 ? "+Inf" : "-Inf");
    else if (v == floor(v) && fabs(v) < 1e15)
        len = snprintf(b, n, "%.0f", v);
    else {
        /* The shortest of %.15g .. %.17g that reads back the same. */
        len = 0;
        for (int p = 15; p <= 17; p++) {
            len = snprintf(b, n, "%.*g", p, v);
            if (strtod(b, NULL) == v)
                break;
        }
    }
    return len < 0 ? 0 : (size_t)len;
}

static int add_str(mw_buf *o, const char *s)
{
    return mw_buf_add(o, s, strlen(s));
}

/* HELP text: backslash and newline escaped. */
static int add_help(mw_buf *o, const char *s)
{
    for (; *s; s++) {
        int rc = *s == '\\' ? mw_buf_add(o, "\\\\", 2) : *s == '\n' ? mw_buf_add(o, "\\n", 2) : mw_buf_add(o, s, 1);
        if (rc)
            return -1;
    }
    return 0;
}

/* A label value: backslash, double quote and newline escaped. */
static int add_value(mw_buf *o, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int rc = s[i] == '\\' ? mw_buf_add(o, "\\\\", 2)
                 : s[i] == '"' ? mw_buf_add(o, "\\\"", 2)
                 : s[i] == '\n' ? mw_buf_add(o, "\\n", 2)
                                : mw_buf_add(o, s + i, 1);
        if (rc)
            return -1;
    }
    return 0;
}

/* `name{labels[,le="x"]} value\n` */
static int add_sample(mw_buf *o, const metric *f, const metric_series *s, const char *suffix, const char *le,
                      double v)
{
    char num[40];
    int rc = add_str(o, f->name) | add_str(o, suffix);
    if (f->nlabels || le) {
        rc |= mw_buf_add(o, "{", 1);
        for (size_t i = 0; i < f->nlabels; i++) {
            rc |= add_str(o, i ? "," : "") | add_str(o, f->labels[i]) | mw_buf_add(o, "=\"", 2) |
                  add_value(o, s->values[i], s->vlens[i]) | mw_buf_add(o, "\"", 1);
        }
        if (le)
            rc |= add_str(o, f->nlabels ? ",le=\"" : "le=\"") | add_str(o, le) | mw_buf_add(o, "\"", 1);
        rc |= mw_buf_add(o, "}", 1);
    }
    size_t n = metrics_fmt_double(num, sizeof num, v);
    rc |= mw_buf_add(o, " ", 1) | mw_buf_add(o, num, n) | mw_buf_add(o, "\n", 1);
    return rc ? -1 : 0;
}

int metrics_render(const metrics *m, mw_buf *o)
{
    int rc = 0;
    char le[40];
    for (const metric *f = m->first; f && !rc; f = f->next) {
        rc |= add_str(o, "# HELP ") | add_str(o, f->name) | mw_buf_add(o, " ", 1) | add_help(o, f->help) |
              add_str(o, "\n# TYPE ") | add_str(o, f->name) | mw_buf_add(o, " ", 1) | add_str(o, metrics_type_name(f->type)) |
              mw_buf_add(o, "\n", 1);
        for (const metric_series *s = f->first; s && !rc; s = s->next) {
            if (f->type != METRIC_HISTOGRAM) {
                rc |= add_sample(o, f, s, "", NULL, s->value);
                continue;
            }
            uint64_t cum = 0;
            for (size_t i = 0; i < f->nb; i++) {
                cum += s->buckets[i];
                metrics_fmt_double(le, sizeof le, f->bounds[i]);
                rc |= add_sample(o, f, s, "_bucket", le, (double)cum);
            }
            rc |= add_sample(o, f, s, "_bucket", "+Inf", (double)s->count) |
                  add_sample(o, f, s, "_sum", NULL, s->sum) | add_sample(o, f, s, "_count", NULL, (double)s->count);
        }
    }
    return rc ? -1 : 0;
}
