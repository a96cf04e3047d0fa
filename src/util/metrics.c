/*
 * metrics.c: the metrics registry (contract in metrics.h; its text
 * format is metrics_text.c). Families are a list in registration order; a family's series
 * are a list in creation order (the text is stable from scrape to scrape)
 * and a chained hash table on their label values (FNV-1a: the cap on
 * series bounds every chain's worst case, and values come from the
 * script, not from input a stranger controls).
 */
#include "metrics.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const double metrics_default_buckets[] = { 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                           0.25,   0.5,   1,      2.5,   5,    10,    30,    60 };
const size_t metrics_default_nbuckets = sizeof metrics_default_buckets / sizeof metrics_default_buckets[0];

#include "metrics_int.h"


int metrics_valid_name(const char *s)
{
    if (!s || !*s || (*s >= '0' && *s <= '9'))
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '_' ||
              *s == ':'))
            return 0;
    return 1;
}

/* Is s[0..n) UTF-8 (no overlongs, surrogates or code points past
 * U+10FFFF)? Prometheus refuses a scrape with a label value or HELP text
 * that is not, so none gets in. */
static int utf8_ok(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t k = c >= 0xC2 && c <= 0xDF ? 1 : c >= 0xE0 && c <= 0xEF ? 2 : c >= 0xF0 && c <= 0xF4 ? 3 : 0;
        if (!k || i + k >= n)
            return 0;
        for (size_t j = 1; j <= k; j++)
            if ((s[i + j] & 0xC0) != 0x80)
                return 0;
        if ((c == 0xE0 && s[i + 1] < 0xA0) || (c == 0xED && s[i + 1] > 0x9F) || (c == 0xF0 && s[i + 1] < 0x90) ||
            (c == 0xF4 && s[i + 1] > 0x8F))
            return 0;
        i += k + 1;
    }
    return 1;
}

static int valid_label(const char *s)
{
    return metrics_valid_name(s) && !strchr(s, ':') && strncmp(s, "__", 2) != 0;
}

metrics *metrics_new(size_t max_series)
{
    metrics *m = calloc(1, sizeof *m);
    if (m)
        m->max_series = max_series ? max_series : 1;
    return m;
}

static void free_series(metric_series *s, size_t nlabels)
{
    for (size_t i = 0; i < nlabels; i++)
        free(s->values[i]);
    free(s->values);
    free(s->vlens);
    free(s->buckets);
    free(s);
}

static void free_family(metric *f)
{
    for (metric_series *s = f->first, *n; s; s = n) {
        n = s->next;
        free_series(s, f->nlabels);
    }
    for (size_t i = 0; i < f->nlabels; i++)
        free(f->labels[i]);
    free(f->table);
    free(f->bounds);
    free(f->name);
    free(f->help);
    free(f);
}

void metrics_free(metrics *m)
{
    if (!m)
        return;
    for (metric *f = m->first, *n; f; f = n) {
        n = f->next;
        free_family(f);
    }
    free(m);
}

metric *metrics_find(const metrics *m, const char *name)
{
    for (metric *f = m->first; f; f = f->next)
        if (strcmp(f->name, name) == 0)
            return f;
    return NULL;
}

metric_type metrics_type(const metric *f) { return f->type; }
size_t metrics_nlabels(const metric *f) { return f->nlabels; }
const char *metrics_name(const metric *f) { return f->name; }

/* Does f have exactly these labels and bounds? */
static int same_shape(const metric *f, size_t nlabels, const char *const *labels, size_t nb, const double *b)
{
    if (f->nlabels != nlabels || f->nb != nb)
        return 0;
    for (size_t i = 0; i < nlabels; i++)
        if (strcmp(f->labels[i], labels[i]) != 0)
            return 0;
    for (size_t i = 0; i < nb; i++)
        if (f->bounds[i] != b[i])
            return 0;
    return 1;
}

static metric_series *new_series(metric *f);

/* A histogram's samples are named name_bucket, name_count and name_sum:
 * another family of one of those names makes the text ambiguous, and
 * Prometheus's parser (promtool check metrics) refuses the whole scrape
 * ("second HELP line for metric name"). The family that would collide
 * with a new one of type t named `name`, or NULL; *suffix says how. */
static const metric *collision(const metrics *m, metric_type t, const char *name, const char **suffix)
{
    static const char *const sfx[] = { "_bucket", "_count", "_sum" };
    size_t n = strlen(name);
    char other[512];
    for (size_t i = 0; i < sizeof sfx / sizeof sfx[0]; i++) {
        size_t k = strlen(sfx[i]);
        *suffix = sfx[i];
        /* a new histogram whose samples take an existing family's name */
        if (t == METRIC_HISTOGRAM && n + k < sizeof other) {
            memcpy(other, name, n);
            memcpy(other + n, sfx[i], k + 1);
            const metric *f = metrics_find(m, other);
            if (f)
                return f;
        }
        /* a new family named as an existing histogram's samples */
        if (n > k && n - k < sizeof other && strcmp(name + n - k, sfx[i]) == 0) {
            memcpy(other, name, n - k);
            other[n - k] = 0;
            const metric *f = metrics_find(m, other);
            if (f && f->type == METRIC_HISTOGRAM)
                return f;
        }
    }
    return NULL;
}

metric *metrics_family(metrics *m, metric_type t, const char *name, const char *help, size_t nlabels,
                       const char *const *labels, size_t nbuckets, const double *buckets, char *err, size_t errlen)
{
    if (!metrics_valid_name(name)) {
        snprintf(err, errlen, "bad metric name '%s': expected letters, digits, '_' or ':', not starting with a digit",
                 name ? name : "");
        return NULL;
    }
    if (nlabels > METRICS_MAX_LABELS) {
        snprintf(err, errlen, "metric '%s': at most %d labels", name, METRICS_MAX_LABELS);
        return NULL;
    }
    for (size_t i = 0; i < nlabels; i++) {
        if (!valid_label(labels[i])) {
            snprintf(err, errlen, "metric '%s': bad label name '%s': expected letters, digits or '_', not starting "
                                  "with a digit or '__'", name, labels[i] ? labels[i] : "");
            return NULL;
        }
        if (t == METRIC_HISTOGRAM && strcmp(labels[i], "le") == 0) {
            snprintf(err, errlen, "metric '%s': the label 'le' is reserved for a histogram's buckets", name);
            return NULL;
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp(labels[i], labels[j]) == 0) {
                snprintf(err, errlen, "metric '%s': label '%s' given twice", name, labels[i]);
                return NULL;
            }
    }
    if (t != METRIC_HISTOGRAM) {
        nbuckets = 0;
    } else if (nbuckets == 0 || !buckets) {
        buckets = metrics_default_buckets;
        nbuckets = metrics_default_nbuckets;
    }
    if (nbuckets > METRICS_MAX_BUCKETS) {
        snprintf(err, errlen, "metric '%s': at most %d buckets", name, METRICS_MAX_BUCKETS);
        return NULL;
    }
    for (size_t i = 0; i < nbuckets; i++)
        if (!isfinite(buckets[i]) || (i > 0 && !(buckets[i] > buckets[i - 1]))) {
            snprintf(err, errlen, "metric '%s': buckets must be finite numbers in increasing order", name);
            return NULL;
        }
    if (help && !utf8_ok((const unsigned char *)help, strlen(help))) {
        snprintf(err, errlen, "metric '%s': its help text is not UTF-8", name);
        return NULL;
    }
    metric *f = metrics_find(m, name);
    if (f) {
        if (f->type != t) {
            snprintf(err, errlen, "metric '%s' is already registered as a %s", name, metrics_type_name(f->type));
            return NULL;
        }
        if (!same_shape(f, nlabels, labels, nbuckets, buckets)) {
            snprintf(err, errlen, "metric '%s' is already registered with other %s", name,
                     f->nb != nbuckets || nlabels == f->nlabels ? "labels or buckets" : "labels");
            return NULL;
        }
        return f;
    }
    const char *sfx;
    const metric *other = collision(m, t, name, &sfx);
    if (other) {
        snprintf(err, errlen,
                 "metric '%s' collides with the %s '%s' (a histogram's samples are named with _bucket, _count "
                 "and _sum after its name)", name, metrics_type_name(other->type), other->name);
        return NULL;
    }
    if (m->nfamilies >= METRICS_MAX_FAMILIES) {
        snprintf(err, errlen, "metric '%s': the registry has reached its limit of %d metrics", name,
                 METRICS_MAX_FAMILIES);
        return NULL;
    }
    f = calloc(1, sizeof *f);
    if (!f)
        goto oom;
    f->type = t;
    f->max_series = m->max_series;
    f->name = strdup(name);
    f->help = strdup(help ? help : "");
    f->nlabels = nlabels;
    f->nb = nbuckets;
    int ok = f->name && f->help;
    for (size_t i = 0; i < nlabels; i++)
        ok = ok && (f->labels[i] = strdup(labels[i])) != NULL;
    if (ok && nbuckets) {
        ok = (f->bounds = malloc(nbuckets * sizeof *f->bounds)) != NULL;
        if (ok)
            memcpy(f->bounds, buckets, nbuckets * sizeof *f->bounds);
    }
    /* Without labels, its one series exists from the start. */
    if (!ok || (nlabels == 0 && !new_series(f))) {
        free_family(f);
        goto oom;
    }
    if (m->last)
        m->last->next = f;
    else
        m->first = f;
    m->last = f;
    m->nfamilies++;
    return f;
oom:
    snprintf(err, errlen, "metric '%s': out of memory", name);
    return NULL;
}

/* ---- series ------------------------------------------------------------- */

static uint64_t hash_values(size_t n, const char *const *v, const size_t *lens)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        for (size_t k = 0; k < lens[i]; k++)
            h = (h ^ (unsigned char)v[i][k]) * 1099511628211ull;
        h = (h ^ 0xff) * 1099511628211ull; /* ("a","" ) and ("", "a") differ */
    }
    return h;
}

static int grow_table(metric *f)
{
    size_t n = f->ntable ? f->ntable * 2 : 8;
    metric_series **t = calloc(n, sizeof *t);
    if (!t)
        return -1;
    for (metric_series *s = f->first; s; s = s->next) {
        size_t i = s->hash & (n - 1);
        s->hnext = t[i];
        t[i] = s;
    }
    free(f->table);
    f->table = t;
    f->ntable = n;
    return 0;
}

/* A new series at the end of f's list (its label values still unset). */
static metric_series *new_series(metric *f)
{
    metric_series *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->fam = f;
    if ((f->nlabels && (!(s->values = calloc(f->nlabels, sizeof *s->values)) ||
                        !(s->vlens = calloc(f->nlabels, sizeof *s->vlens)))) ||
        (f->type == METRIC_HISTOGRAM && !(s->buckets = calloc(f->nb + 1, sizeof *s->buckets)))) {
        free_series(s, 0);
        return NULL;
    }
    if (f->last)
        f->last->next = s;
    else
        f->first = s;
    f->last = s;
    f->nseries++;
    return s;
}

metric_series *metrics_series(metric *f, size_t n, const char *const *values, const size_t *lens, char *err,
                              size_t errlen)
{
    if (n != f->nlabels) {
        snprintf(err, errlen, "metric '%s' has %zu label%s, got %zu value%s", f->name, f->nlabels,
                 f->nlabels == 1 ? "" : "s", n, n == 1 ? "" : "s");
        return NULL;
    }
    if (n == 0)
        return f->first;
    uint64_t h = hash_values(n, values, lens);
    if (f->ntable)
        for (metric_series *s = f->table[h & (f->ntable - 1)]; s; s = s->hnext) {
            if (s->hash != h)
                continue;
            size_t i = 0;
            while (i < n && s->vlens[i] == lens[i] && memcmp(s->values[i], values[i], lens[i]) == 0)
                i++;
            if (i == n)
                return s;
        }
    for (size_t i = 0; i < n; i++)
        if (!utf8_ok((const unsigned char *)values[i], lens[i])) {
            snprintf(err, errlen, "metric '%s': label value %zu is not UTF-8", f->name, i + 1);
            return NULL;
        }
    if (f->nseries >= f->max_series) {
        snprintf(err, errlen, "metric '%s' has reached its limit of %zu label sets", f->name, f->max_series);
        return NULL;
    }
    if (f->nseries + 1 > f->ntable && grow_table(f) != 0)
        goto oom;
    metric_series *s = new_series(f);
    if (!s)
        goto oom;
    s->hash = h;
    for (size_t i = 0; i < n; i++) {
        if (!(s->values[i] = malloc(lens[i] + 1))) {
            /* unlink the half-made one (it is the last) */
            metric_series **pp = &f->first;
            while (*pp != s)
                pp = &(*pp)->next;
            *pp = NULL;
            f->last = NULL;
            for (metric_series *p = f->first; p; p = p->next)
                f->last = p;
            f->nseries--;
            free_series(s, n);
            goto oom;
        }
        memcpy(s->values[i], values[i], lens[i]);
        s->values[i][lens[i]] = 0;
        s->vlens[i] = lens[i];
    }
    size_t i = h & (f->ntable - 1);
    s->hnext = f->table[i];
    f->table[i] = s;
    return s;
oom:
    snprintf(err, errlen, "metric '%s': out of memory", f->name);
    return NULL;
}

void metrics_add(metric_series *s, double v)
{
    s->value += v;
}

void metrics_set(metric_series *s, double v)
{
    s->value = v;
}

void metrics_observe(metric_series *s, double v)
{
    const metric *f = s->fam;
    /* The first bound >= v (le: less or equal), or +Inf. NaN counts in +Inf. */
    size_t lo = 0, hi = f->nb;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (v <= f->bounds[mid])
            hi = mid;
        else
            lo = mid + 1;
    }
    s->buckets[lo]++;
    s->sum += v;
    s->count++;
}

double metrics_value(const metric_series *s)
{
    return s->fam->type == METRIC_HISTOGRAM ? (double)s->count : s->value;
}
