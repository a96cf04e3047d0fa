/* test_ckpt.c: the checkpoint format round-trips and refuses damage. */
#include "../../src/store/ckpt.h"
#include "test.h"

static void make(ckpt *c)
{
    memset(c, 0, sizeof *c);
    c->input = strdup("/data/in put.jsonl");
    c->output = strdup("/data/out.jsonl");
    c->dead_letter = strdup("");
    c->mode = strdup("ordered");
    c->input_offset = 12345;
    c->input_line = 678;
    c->next_seq = 600;
    c->has_wm_current = 1;
    c->wm_current = -5;
    c->has_pending_wm = 1;
    c->pending_wm = 1700000000000LL;
    c->output_len = 99999;
    c->dead_letter_len = 7;
    ckpt_entry e = { CKPT_RECORD, 598, 676, 2, 150, 0, (char *)"{\"a\":\"x\\ny\"}", 12, (char *)"boom\nline 2", 0 };
    ASSERT_INT_EQ(ckpt_add(c, &e), 0);
    ckpt_entry w = { CKPT_WATERMARK, 0, 0, 0, 0, 0, NULL, 0, NULL, 42 };
    ASSERT_INT_EQ(ckpt_add(c, &w), 0);
    ckpt_entry m = { CKPT_RECORD, 599, 677, 1, 0, 1, (char *)"{oops 1:2 ", 10, NULL, 0 };
    ASSERT_INT_EQ(ckpt_add(c, &m), 0);
}

static void test_round_trip(void)
{
    ckpt c, d;
    make(&c);
    char *buf;
    size_t len;
    ASSERT_INT_EQ(ckpt_encode(&c, &buf, &len), 0);
    char err[256];
    ASSERT_INT_EQ(ckpt_decode(buf, len, &d, err, sizeof err), 0);
    ASSERT_STR_EQ(d.input, "/data/in put.jsonl");
    ASSERT_STR_EQ(d.mode, "ordered");
    ASSERT_STR_EQ(d.dead_letter, "");
    ASSERT_UINT_EQ(d.input_offset, 12345);
    ASSERT_UINT_EQ(d.next_seq, 600);
    ASSERT(d.has_wm_current && d.wm_current == -5 && !d.has_wm_max);
    ASSERT(d.has_pending_wm && d.pending_wm == 1700000000000LL);
    ASSERT_UINT_EQ(d.output_len, 99999);
    ASSERT_UINT_EQ(d.n, 3);
    ASSERT_INT_EQ(d.entries[0].kind, CKPT_RECORD);
    ASSERT_UINT_EQ(d.entries[0].seq, 598);
    ASSERT_INT_EQ(d.entries[0].attempt, 2);
    ASSERT_UINT_EQ(d.entries[0].budget_used_ms, 150);
    ASSERT_UINT_EQ(d.entries[0].raw_len, 12);
    ASSERT(memcmp(d.entries[0].raw, "{\"a\":\"x\\ny\"}", 12) == 0);
    ASSERT_STR_EQ(d.entries[0].last_error, "boom\nline 2");
    ASSERT_INT_EQ(d.entries[1].kind, CKPT_WATERMARK);
    ASSERT_INT_EQ(d.entries[1].watermark, 42);
    ASSERT_INT_EQ(d.entries[2].malformed, 1);
    ASSERT(d.entries[2].last_error == NULL);
    free(buf);
    ckpt_free(&c);
    ckpt_free(&d);
}

static void test_detects_corruption_and_truncation(void)
{
    ckpt c, d;
    make(&c);
    char *buf;
    size_t len;
    ASSERT_INT_EQ(ckpt_encode(&c, &buf, &len), 0);
    char err[256];
    buf[40] ^= 0x20;
    ASSERT_INT_EQ(ckpt_decode(buf, len, &d, err, sizeof err), -1);
    ASSERT(strstr(err, "checksum mismatch") != NULL);
    buf[40] ^= 0x20;
    for (size_t cut = 1; cut < len; cut += 7) {
        ASSERT_INT_EQ(ckpt_decode(buf, len - cut, &d, err, sizeof err), -1);
    }
    ASSERT_INT_EQ(ckpt_decode("", 0, &d, err, sizeof err), -1);
    free(buf);
    ckpt_free(&c);
}

TEST_MAIN("ckpt", T(test_round_trip), T(test_detects_corruption_and_truncation))
