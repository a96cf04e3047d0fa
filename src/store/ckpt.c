/*
 * ckpt.c: the checkpoint file format (contract and layout in ckpt.h):
 * CRC-32, building a checkpoint (ckpt_add), encoding it into an mw_buf, and
 * decoding a file strictly (anything moonwait would not have written is
 * refused). Plain C; called by the host's src/app/checkpoint.c and fuzzed
 * on its own (spec/fuzz/fuzz_ckpt.c).
 */
#define _GNU_SOURCE
#include "ckpt.h"

#include "../util/buf.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

uint32_t ckpt_crc32(const void *data, size_t len)
{
    static uint32_t table[256];
    static int ready;
    if (!ready) {
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++)
                c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            table[i] = c;
        }
        ready = 1;
    }
    uint32_t c = 0xFFFFFFFFu;
    const unsigned char *p = data;
    for (size_t i = 0; i < len; i++)
        c = table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

static char *dupn(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (d) {
        if (n)
            memcpy(d, s, n);
        d[n] = 0;
    }
    return d;
}

/* Free the strings an entry owns. */
static void entry_free(ckpt_entry *e)
{
    free(e->raw);
    free(e->last_error);
    free(e->out);
    free(e->dlq);
}

/* Make room for one more entry. 0 or -1. */
static int grow(ckpt *c)
{
    if (c->n < c->cap)
        return 0;
    size_t cap = c->cap ? c->cap * 2 : 64;
    ckpt_entry *v = realloc(c->entries, cap * sizeof *v);
    if (!v)
        return -1;
    c->entries = v;
    c->cap = cap;
    return 0;
}

int ckpt_add(ckpt *c, const ckpt_entry *e)
{
    if (grow(c))
        return -1;
    ckpt_entry *d = &c->entries[c->n];
    *d = *e;
    if (!c->borrowed) {
        d->raw = e->raw ? dupn(e->raw, e->raw_len) : NULL;
        d->last_error = e->last_error ? strdup(e->last_error) : NULL;
        d->out = e->out ? dupn(e->out, e->out_len) : NULL;
        d->dlq = e->dlq ? dupn(e->dlq, e->dlq_len) : NULL;
        if ((e->raw && !d->raw) || (e->last_error && !d->last_error) || (e->out && !d->out) ||
            (e->dlq && !d->dlq)) {
            entry_free(d);
            return -1;
        }
    }
    c->n++;
    return 0;
}

void ckpt_free(ckpt *c)
{
    for (size_t i = 0; i < c->n && !c->borrowed; i++)
        entry_free(&c->entries[i]);
    free(c->entries);
    free(c->input);
    free(c->output);
    free(c->dead_letter);
    free(c->mode);
    memset(c, 0, sizeof *c);
}

/* ---- encode ----------------------------------------------------------------- */

/* The helpers return 0, or -1 when out of memory (mw_buf's convention), so
 * the encoder chains them with ||. */
static int putf(mw_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int putf(mw_buf *b, const char *fmt, ...)
{
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    return mw_buf_add(b, tmp, (size_t)n);
}

/* "<n>:<bytes>" */
static int putlen(mw_buf *b, const char *s, size_t n)
{
    return putf(b, "%zu:", n) || mw_buf_add(b, s ? s : "", n);
}

static int putstr(mw_buf *b, const char *key, const char *s)
{
    return putf(b, "%s ", key) || putlen(b, s, s ? strlen(s) : 0) || mw_buf_add(b, "\n", 1);
}

static int putopt(mw_buf *b, const char *key, int has, int64_t v)
{
    if (has)
        return putf(b, "%s %" PRId64 "\n", key, v);
    return putf(b, "%s none\n", key);
}

/* One "R ..." or "W ..." line. */
static int put_entry(mw_buf *b, const ckpt_entry *e)
{
    if (e->kind == CKPT_WATERMARK)
        return putf(b, "W %" PRId64 "\n", e->watermark);
    return putf(b, "R %" PRIu64 " %" PRIu64 " %u %" PRIu64 " %d ", e->seq, e->line, e->attempt, e->budget_used_ms,
                e->malformed) ||
           putlen(b, e->raw, e->raw_len) || mw_buf_add(b, " ", 1) ||
           putlen(b, e->last_error, e->last_error ? strlen(e->last_error) : 0) ||
           putf(b, " %d %d ", e->done ? 1 : 0, e->timed_out ? 1 : 0) ||
           putlen(b, e->out, e->done && e->out ? e->out_len : 0) || mw_buf_add(b, " ", 1) ||
           putlen(b, e->dlq, e->done && e->dlq ? e->dlq_len : 0) || mw_buf_add(b, "\n", 1);
}

int ckpt_encode(const ckpt *c, char **buf, size_t *len)
{
    mw_buf b = { NULL, 0, 0 };
    if (putf(&b, "moonwait-checkpoint %d\n", CKPT_VERSION) || putstr(&b, "input", c->input) ||
        putstr(&b, "output", c->output) || putstr(&b, "dead_letter", c->dead_letter) ||
        putstr(&b, "mode", c->mode) || putf(&b, "complete %d\n", c->complete) ||
        putf(&b, "input_offset %" PRIu64 "\ninput_line %" PRIu64 "\nnext_seq %" PRIu64 "\n", c->input_offset,
             c->input_line, c->next_seq) ||
        putopt(&b, "wm_current", c->has_wm_current, c->wm_current) ||
        putopt(&b, "wm_max", c->has_wm_max, c->wm_max) ||
        putopt(&b, "pending_wm", c->has_pending_wm, c->pending_wm) ||
        putf(&b, "output_len %" PRIu64 "\ndead_letter_len %" PRIu64 "\n", c->output_len, c->dead_letter_len) ||
        putf(&b, "entries %zu\n", c->n))
        goto oom;
    for (size_t i = 0; i < c->n; i++)
        if (put_entry(&b, &c->entries[i]))
            goto oom;
    if (putf(&b, "crc32 %08x\n", ckpt_crc32(b.p, b.len)))
        goto oom;
    *buf = b.p;
    *len = b.len;
    return 0;
oom:
    free(b.p);
    return -1;
}

/* ---- decode ------------------------------------------------------------------- */

typedef struct cur {
    const char *p, *end;
    int bad;
} cur;

static int expect(cur *k, const char *word)
{
    size_t n = strlen(word);
    if (k->bad || (size_t)(k->end - k->p) < n + 1 || memcmp(k->p, word, n) != 0 || k->p[n] != ' ') {
        k->bad = 1;
        return -1;
    }
    k->p += n + 1;
    return 0;
}

static uint64_t getu(cur *k)
{
    uint64_t v = 0;
    int digits = 0;
    while (k->p < k->end && *k->p >= '0' && *k->p <= '9') {
        uint64_t d = (uint64_t)(*k->p++ - '0');
        if (v > (UINT64_MAX - d) / 10)
            k->bad = 1; /* more than 64 bits: not a value we wrote */
        v = v * 10 + d;
        digits++;
    }
    if (!digits)
        k->bad = 1;
    return v;
}

static int64_t geti(cur *k)
{
    int neg = 0;
    if (k->p < k->end && *k->p == '-') {
        neg = 1;
        k->p++;
    }
    uint64_t v = getu(k);
    /* Never negate INT64_MIN in int64_t (undefined): -2^63 is spelled
     * with a magnitude one past INT64_MAX. */
    if (v > (uint64_t)INT64_MAX + (neg ? 1u : 0u)) {
        k->bad = 1;
        return 0;
    }
    if (neg)
        return v == (uint64_t)INT64_MAX + 1u ? INT64_MIN : -(int64_t)v;
    return (int64_t)v;
}

static void sep(cur *k, char c)
{
    if (k->p < k->end && *k->p == c)
        k->p++;
    else
        k->bad = 1;
}

static char *getlen(cur *k, size_t *out)
{
    size_t n = (size_t)getu(k);
    sep(k, ':');
    if (k->bad || (size_t)(k->end - k->p) < n) {
        k->bad = 1;
        return NULL;
    }
    char *s = dupn(k->p, n);
    k->p += n;
    if (out)
        *out = n;
    return s;
}

/* The strings read as C strings (the identity, last_error) were written
 * with strlen: a NUL byte in one is not a file moonwait wrote, and would
 * not survive a re-encode (fuzz_ckpt). */
static int has_nul_n(const char *s, size_t n)
{
    return s && memchr(s, '\0', n) != NULL;
}

static char *getstr(cur *k, const char *key)
{
    if (expect(k, key))
        return NULL;
    size_t n = 0;
    char *s = getlen(k, &n);
    if (has_nul_n(s, n))
        k->bad = 1;
    sep(k, '\n');
    return s;
}

static void getopt_(cur *k, const char *key, int *has, int64_t *v)
{
    if (expect(k, key))
        return;
    if ((size_t)(k->end - k->p) >= 5 && memcmp(k->p, "none\n", 5) == 0) {
        *has = 0;
        k->p += 5;
        return;
    }
    *has = 1;
    *v = geti(k);
    sep(k, '\n');
}

static uint64_t getkeyu(cur *k, const char *key)
{
    if (expect(k, key))
        return 0;
    uint64_t v = getu(k);
    sep(k, '\n');
    return v;
}

/* One "R ..." line (after "R "), into e (its strings owned). Sets k->bad
 * when it is not one moonwait wrote. */
static void get_record(cur *k, ckpt_entry *e)
{
    e->kind = CKPT_RECORD;
    e->seq = getu(k);
    sep(k, ' ');
    e->line = getu(k);
    sep(k, ' ');
    uint64_t attempt = getu(k);
    e->attempt = (uint32_t)attempt;
    if (attempt > UINT32_MAX) /* written from a uint32_t: never wrap it */
        k->bad = 1;
    sep(k, ' ');
    e->budget_used_ms = getu(k);
    sep(k, ' ');
    uint64_t malformed = getu(k);
    e->malformed = malformed == 1;
    if (malformed > 1) /* a flag, like done and timed_out */
        k->bad = 1;
    sep(k, ' ');
    e->raw = getlen(k, &e->raw_len);
    sep(k, ' ');
    size_t elen = 0;
    char *le = getlen(k, &elen);
    if (has_nul_n(le, elen))
        k->bad = 1;
    sep(k, ' ');
    e->last_error = elen ? le : NULL;
    if (!elen)
        free(le);
    uint64_t done = getu(k);
    sep(k, ' ');
    uint64_t timed_out = getu(k);
    sep(k, ' ');
    e->done = done == 1;
    e->timed_out = timed_out == 1;
    if (done > 1 || timed_out > 1)
        k->bad = 1;
    e->out = getlen(k, &e->out_len);
    sep(k, ' ');
    e->dlq = getlen(k, &e->dlq_len);
    sep(k, '\n');
    if (e->attempt == 0 || (!e->done && (e->out_len || e->dlq_len)))
        k->bad = 1;
}

/* The entries: "W <wm>" or "R ..." lines, appended to c (which takes their
 * strings). Stops at the first bad one (k->bad). */
static void get_entries(cur *k, ckpt *c, uint64_t n)
{
    for (uint64_t i = 0; i < n && !k->bad; i++) {
        ckpt_entry e;
        memset(&e, 0, sizeof e);
        if (k->p < k->end && *k->p == 'W') {
            k->p++;
            sep(k, ' ');
            e.kind = CKPT_WATERMARK;
            e.watermark = geti(k);
            sep(k, '\n');
        } else if (expect(k, "R") == 0) {
            get_record(k, &e);
        }
        if (k->bad || grow(c)) {
            entry_free(&e);
            k->bad = 1;
            return;
        }
        c->entries[c->n++] = e; /* takes ownership without copying */
    }
}

/* The checksum line: the last line, covering every byte before it. Sets
 * *body_end to its start. 0, or -1 with err. */
static int check_crc(const char *buf, size_t len, const char **body_end, char *err, size_t errlen)
{
    if (len < 16 || buf[len - 1] != '\n') {
        snprintf(err, errlen, "truncated (no checksum line)");
        return -1;
    }
    const char *last = buf + len - 1;
    while (last > buf && last[-1] != '\n')
        last--;
    /* "crc32 XXXXXXXX\n", parsed by hand: buf need not be NUL-terminated. */
    uint32_t crc_file = 0;
    int ok = (size_t)(buf + len - last) == 15 && memcmp(last, "crc32 ", 6) == 0;
    for (int i = 0; ok && i < 8; i++) {
        char ch = last[6 + i];
        int v = ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
        if (v < 0)
            ok = 0;
        crc_file = crc_file << 4 | (uint32_t)(v < 0 ? 0 : v);
    }
    if (!ok) {
        snprintf(err, errlen, "truncated (no checksum line)");
        return -1;
    }
    uint32_t crc = ckpt_crc32(buf, (size_t)(last - buf));
    if (crc != crc_file) {
        snprintf(err, errlen, "checksum mismatch (the file is corrupt)");
        return -1;
    }
    *body_end = last;
    return 0;
}

int ckpt_decode(const char *buf, size_t len, ckpt *c, char *err, size_t errlen)
{
    memset(c, 0, sizeof *c);
    const char *last;
    if (check_crc(buf, len, &last, err, errlen))
        return -1;
    cur k = { buf, last, 0 };
    if (expect(&k, "moonwait-checkpoint"))
        goto bad;
    uint64_t version = getu(&k);
    sep(&k, '\n');
    if (k.bad)
        goto bad;
    if (version != CKPT_VERSION) {
        snprintf(err, errlen, "it is in format version %" PRIu64 "%s, and this moonwait reads only version %d",
                 version, version < CKPT_VERSION ? " (written by an older moonwait)" : " (written by a newer moonwait)",
                 CKPT_VERSION);
        return CKPT_EVERSION;
    }
    c->input = getstr(&k, "input");
    c->output = getstr(&k, "output");
    c->dead_letter = getstr(&k, "dead_letter");
    c->mode = getstr(&k, "mode");
    uint64_t complete = getkeyu(&k, "complete");
    c->complete = complete == 1;
    if (complete > 1) /* a flag: 0 or 1 (an int cast would re-encode as another number) */
        k.bad = 1;
    c->input_offset = getkeyu(&k, "input_offset");
    c->input_line = getkeyu(&k, "input_line");
    c->next_seq = getkeyu(&k, "next_seq");
    getopt_(&k, "wm_current", &c->has_wm_current, &c->wm_current);
    getopt_(&k, "wm_max", &c->has_wm_max, &c->wm_max);
    getopt_(&k, "pending_wm", &c->has_pending_wm, &c->pending_wm);
    c->output_len = getkeyu(&k, "output_len");
    c->dead_letter_len = getkeyu(&k, "dead_letter_len");
    get_entries(&k, c, getkeyu(&k, "entries"));
    if (k.bad || k.p != k.end || !c->input || !c->output || !c->mode)
        goto bad;
    return 0;
bad:
    ckpt_free(c);
    snprintf(err, errlen, "malformed contents (the checksum matched, but the layout is not a checkpoint's)");
    return -1;
}
