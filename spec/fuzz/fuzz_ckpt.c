/*
 * fuzz_ckpt.c: libFuzzer target for the checkpoint decoder
 * (src/store/ckpt.c: ckpt_decode, and ckpt_encode on what it accepts).
 *
 * Each input is decoded twice:
 *  - as it is (the checksum line, the CRC, then the fields);
 *  - sealed: its last line dropped when it is a "crc32 XXXXXXXX" line, and
 *    a correct one appended, so mutations reach the field parsing past
 *    the CRC.
 * Checks: no crash, no leak, no sanitizer report; a refusal is -1 or
 * CKPT_EVERSION with a message and an empty ckpt; an accepted checkpoint
 * re-encodes, the encoding decodes, to the same content (as moonwait
 * reads it: the identity strings and last_error as C strings, raw, out
 * and dlq with their lengths), and encodes again to the same bytes.
 */
#include "../../src/store/ckpt.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond, ...)                                                                \
    do {                                                                                \
        if (!(cond)) {                                                                  \
            fprintf(stderr, "fuzz_ckpt: %s:%d: check failed: %s\n  ", __FILE__, __LINE__, \
                    #cond);                                                             \
            fprintf(stderr, __VA_ARGS__);                                               \
            fputc('\n', stderr);                                                        \
            abort();                                                                    \
        }                                                                               \
    } while (0)

static int same_cstr(const char *a, const char *b)
{
    if (!a || !b)
        return a == b;
    return strcmp(a, b) == 0;
}

static int same_bytes(const char *a, size_t an, const char *b, size_t bn)
{
    if (!a || !b)
        return a == b;
    return an == bn && (an == 0 || memcmp(a, b, an) == 0);
}

static void same_ckpt(const ckpt *a, const ckpt *b)
{
    CHECK(same_cstr(a->input, b->input) && same_cstr(a->output, b->output) &&
              same_cstr(a->dead_letter, b->dead_letter) && same_cstr(a->mode, b->mode),
          "identity differs");
    CHECK(a->complete == b->complete && a->input_offset == b->input_offset && a->input_line == b->input_line &&
              a->next_seq == b->next_seq && a->output_len == b->output_len &&
              a->dead_letter_len == b->dead_letter_len,
          "counters differ");
    CHECK(a->has_wm_current == b->has_wm_current && a->has_wm_max == b->has_wm_max &&
              a->has_pending_wm == b->has_pending_wm &&
              (!a->has_wm_current || a->wm_current == b->wm_current) && (!a->has_wm_max || a->wm_max == b->wm_max) &&
              (!a->has_pending_wm || a->pending_wm == b->pending_wm),
          "watermarks differ");
    CHECK(a->n == b->n, "%zu entries, then %zu", a->n, b->n);
    for (size_t i = 0; i < a->n; i++) {
        const ckpt_entry *x = &a->entries[i], *y = &b->entries[i];
        CHECK(x->kind == y->kind, "entry %zu: kind", i);
        if (x->kind == CKPT_WATERMARK) {
            CHECK(x->watermark == y->watermark, "entry %zu: watermark", i);
            continue;
        }
        CHECK(x->seq == y->seq && x->line == y->line && x->attempt == y->attempt &&
                  x->budget_used_ms == y->budget_used_ms && x->malformed == y->malformed && x->done == y->done &&
                  x->timed_out == y->timed_out,
              "entry %zu: numbers differ", i);
        CHECK(x->attempt > 0, "entry %zu: attempt 0 accepted", i);
        CHECK(same_bytes(x->raw, x->raw_len, y->raw, y->raw_len), "entry %zu: raw differs", i);
        CHECK(same_cstr(x->last_error, y->last_error), "entry %zu: last_error '%s' then '%s'", i,
              x->last_error ? x->last_error : "(null)", y->last_error ? y->last_error : "(null)");
        CHECK(x->done || (!x->out_len && !x->dlq_len), "entry %zu: a result on a record not done", i);
        if (x->done) {
            CHECK(x->out_len == y->out_len && (!x->out_len || memcmp(x->out, y->out, x->out_len) == 0),
                  "entry %zu: out differs", i);
            CHECK(x->dlq_len == y->dlq_len && (!x->dlq_len || memcmp(x->dlq, y->dlq, x->dlq_len) == 0),
                  "entry %zu: dlq differs", i);
        }
    }
}

static int empty(const ckpt *c)
{
    return !c->input && !c->output && !c->dead_letter && !c->mode && !c->entries && c->n == 0;
}

static void one(const char *buf, size_t len)
{
    ckpt d1, d2;
    char err[256];
    err[0] = 0;
    int rc = ckpt_decode(buf, len, &d1, err, sizeof err);
    if (rc != 0) {
        CHECK(rc == -1 || rc == CKPT_EVERSION, "ckpt_decode returned %d", rc);
        CHECK(err[0] != 0, "a refusal without a message");
        CHECK(empty(&d1), "a refusal left content behind");
        return;
    }
    char *e1, *e2;
    size_t l1, l2;
    CHECK(ckpt_encode(&d1, &e1, &l1) == 0, "encode failed");
    rc = ckpt_decode(e1, l1, &d2, err, sizeof err);
    CHECK(rc == 0, "the re-encoded checkpoint is refused: %s\n%.*s", err, (int)(l1 > 2000 ? 2000 : l1), e1);
    same_ckpt(&d1, &d2);
    CHECK(ckpt_encode(&d2, &e2, &l2) == 0, "encode failed");
    CHECK(l1 == l2 && memcmp(e1, e2, l1) == 0, "encode -> decode -> encode changed the bytes");
    free(e1);
    free(e2);
    ckpt_free(&d1);
    ckpt_free(&d2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    one((const char *)data, size);
    /* sealed: drop a last "crc32 ..." line, append a correct one */
    size_t body = size;
    if (size >= 15 && data[size - 1] == '\n' && memcmp(data + size - 15, "crc32 ", 6) == 0 &&
        (size == 15 || data[size - 16] == '\n'))
        body = size - 15;
    char *b = malloc(body + 16);
    if (!b)
        return 0;
    if (body)
        memcpy(b, data, body);
    snprintf(b + body, 16, "crc32 %08x\n", ckpt_crc32(b, body));
    one(b, body + 15);
    free(b);
    return 0;
}
