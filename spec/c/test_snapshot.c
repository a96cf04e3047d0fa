/*
 * test_snapshot.c: a checkpoint's contents (src/app/snapshot.c), built from
 * a known state (a real operator on a manual clock, an event-time state,
 * a fake source and fake sinks behind their interfaces, records hung on
 * the entries) and decoded with src/store/ckpt.c: every field checked.
 */
#include "../../src/app/snapshot.h"
#include "../../src/store/ckpt.h"
#include "test.h"

static uint64_t clock_ms;
static uint64_t now_cb(void *ud) { (void)ud; return clock_ms; }
static void emit_cb(void *ud, op_entry *e) { (void)ud; (void)e; }
static void wm_cb(void *ud, int64_t wm) { (void)ud; (void)wm; }
static void timeout_cb(void *ud, op_entry *e) { (void)ud; (void)e; } /* never due here */
static void failure_cb(void *ud, op_entry *e) { (void)ud; (void)e; }

/* A fake source at a fixed position. */
static source_pos fake_position(const mw_source *s) { (void)s; return (source_pos){ 1234, 17 }; }
static const source_ops fake_source_ops = { .kind = "fake", .position = fake_position };

/* Fake sinks: position is what was "accepted". */
typedef struct fake_sink { mw_sink base; uint64_t pos; } fake_sink;
static uint64_t fake_sink_position(const mw_sink *k) { return ((const fake_sink *)k)->pos; }
static const sink_ops fake_sink_ops = { .kind = "fake", .position = fake_sink_position };

/* The run's record on an entry: here a snap_rec hung on udata. */
static int record_cb(const op_entry *e, snap_rec *r)
{
    if (!e->udata)
        return -1;
    *r = *(const snap_rec *)e->udata;
    return 0;
}

static snap_rec rec1 = { "{\"a\":1}", 7, 0, NULL };
static snap_rec rec2 = { "{\"b\":2}", 7, 0, "boom" };
static snap_rec rec3 = { "{\"c\":3}", 7, 0, "flaky" };
static snap_rec rec4 = { "not json\0x", 10, 1, NULL };

static char *copy_of(const char *s, size_t n)
{
    char *p = malloc(n);
    memcpy(p, s, n);
    return p;
}

static void check_record(const ckpt_entry *ce, uint64_t seq, uint64_t line, uint32_t attempt, const snap_rec *r)
{
    ASSERT_INT_EQ(ce->kind, CKPT_RECORD);
    ASSERT_UINT_EQ(ce->seq, seq);
    ASSERT_UINT_EQ(ce->line, line);
    ASSERT_UINT_EQ(ce->attempt, attempt);
    ASSERT_INT_EQ(ce->malformed, r->malformed);
    ASSERT_UINT_EQ(ce->raw_len, r->len);
    ASSERT(memcmp(ce->raw, r->line, r->len) == 0);
    if (r->last_error)
        ASSERT_STR_EQ(ce->last_error, r->last_error);
    else
        ASSERT(!ce->last_error || !*ce->last_error);
}

/* Ordered, timeout 1000 ms, dead letters on, event time with bound 10:
 *   r1 (line 3) running, accepted at 0, now 400: budget used 400
 *   W 990
 *   r2 (line 5) completed, held behind r1: output stored
 *   r3 (line 6) in back-off after attempt 1: continues at attempt 2
 *   r4 (line 8) malformed, dead-lettered, held: its dead letter stored
 *   a failed entry without a record (not stored: its line is read again) */
static void test_every_field_of_a_snapshot(void)
{
    op o;
    op_config oc = { OP_ORDERED, 10, 1000 };
    op_callbacks cb = { now_cb, emit_cb, wm_cb, timeout_cb, failure_cb, NULL, NULL, NULL, NULL };
    clock_ms = 0;
    op_init(&o, &oc, &cb, NULL);
    static const op_retry_policy pol = { 1, RETRY_FIXED, 3, 5000, 0, 0, 1.0, 0 };
    op_entry *e1, *e2, *e3, *e4;
    ASSERT_INT_EQ(op_push_record(&o, 3, 0, &rec1, &e1), 0);
    ASSERT_INT_EQ(op_push_watermark(&o, 990), 0);
    clock_ms = 100;
    ASSERT_INT_EQ(op_push_record(&o, 5, 0, &rec2, &e2), 0);
    ASSERT_INT_EQ(op_complete(&o, e2, copy_of("{\"b\":2}\n", 8), 8), 0);
    ASSERT_INT_EQ(op_push_record(&o, 6, 0, &rec3, &e3), 0);
    e3->policy = &pol;
    ASSERT_INT_EQ(op_retry(&o, e3), 0);
    ASSERT_INT_EQ(op_push_record(&o, 8, 0, &rec4, &e4), 0);
    ASSERT_INT_EQ(op_complete_dead(&o, e4, copy_of("{\"line\":8}\n", 11), 11), 0);
    ASSERT_INT_EQ(op_push_failed(&o, 9, "input line 9: too long", NULL), 0);
    clock_ms = 400;

    evtime ev;
    evtime_init(&ev, 10);
    evtime_on_event(&ev, 1000); /* current 990, max 1000, 990 waiting */
    mw_source src = { &fake_source_ops, NULL, NULL, 0 };
    fake_sink out = { { &fake_sink_ops, NULL, NULL, NULL }, 100 }, dlq = { { &fake_sink_ops, NULL, NULL, NULL }, 50 };
    snap_view v = { "/in", "/out", "/dl", OP_ORDERED, 1000, &o, &ev, &src, &out.base, &dlq.base, record_cb, NULL };
    snap s;
    ASSERT_INT_EQ(snap_take(&v, 0, clock_ms, &s), 0);
    ASSERT_UINT_EQ(s.out_len, 100);
    ASSERT_UINT_EQ(s.dlq_len, 50);
    ASSERT_UINT_EQ(s.pos.offset, 1234);
    ASSERT_UINT_EQ(s.pos.line, 17);
    ASSERT_INT_EQ(s.final, 0);

    ckpt k;
    char why[256];
    ASSERT_INT_EQ(ckpt_decode(s.buf, s.len, &k, why, sizeof why), 0);
    ASSERT_STR_EQ(k.input, "/in");
    ASSERT_STR_EQ(k.output, "/out");
    ASSERT_STR_EQ(k.dead_letter, "/dl");
    ASSERT_STR_EQ(k.mode, "ordered");
    ASSERT_INT_EQ(k.complete, 0);
    ASSERT_UINT_EQ(k.input_offset, 1234);
    ASSERT_UINT_EQ(k.input_line, 17);
    ASSERT_UINT_EQ(k.next_seq, 6); /* five records pushed */
    ASSERT_INT_EQ(k.has_wm_current, 1);
    ASSERT_INT_EQ(k.wm_current, 990);
    ASSERT_INT_EQ(k.has_wm_max, 1);
    ASSERT_INT_EQ(k.wm_max, 1000);
    ASSERT_INT_EQ(k.has_pending_wm, 1);
    ASSERT_INT_EQ(k.pending_wm, 990);
    ASSERT_UINT_EQ(k.output_len, 100);
    ASSERT_UINT_EQ(k.dead_letter_len, 50);
    ASSERT_UINT_EQ(k.n, 5);

    check_record(&k.entries[0], 1, 3, 1, &rec1);
    ASSERT_INT_EQ(k.entries[0].done, 0);
    ASSERT_UINT_EQ(k.entries[0].budget_used_ms, 400);

    ASSERT_INT_EQ(k.entries[1].kind, CKPT_WATERMARK);
    ASSERT_INT_EQ(k.entries[1].watermark, 990);

    check_record(&k.entries[2], 2, 5, 1, &rec2);
    ASSERT_INT_EQ(k.entries[2].done, 1);
    ASSERT_INT_EQ(k.entries[2].timed_out, 0);
    ASSERT_UINT_EQ(k.entries[2].out_len, 8);
    ASSERT(memcmp(k.entries[2].out, "{\"b\":2}\n", 8) == 0);
    ASSERT_UINT_EQ(k.entries[2].dlq_len, 0);

    check_record(&k.entries[3], 3, 6, 2, &rec3);
    ASSERT_INT_EQ(k.entries[3].done, 0);
    ASSERT_UINT_EQ(k.entries[3].budget_used_ms, 300); /* accepted at 100 */

    check_record(&k.entries[4], 4, 8, 1, &rec4);
    ASSERT_INT_EQ(k.entries[4].done, 1);
    ASSERT_UINT_EQ(k.entries[4].out_len, 0);
    ASSERT_UINT_EQ(k.entries[4].dlq_len, 11);
    ASSERT(memcmp(k.entries[4].dlq, "{\"line\":8}\n", 11) == 0);
    ckpt_free(&k);
    free(s.buf);
    op_free(&o);
}

/* The final one: complete, unordered, no dead letters, no event time, no
 * timeout (no budget), nothing queued. */
static void test_a_final_snapshot_of_an_idle_run(void)
{
    op o;
    op_config oc = { OP_UNORDERED, 4, 0 };
    op_callbacks cb = { now_cb, emit_cb, wm_cb, timeout_cb, failure_cb, NULL, NULL, NULL, NULL };
    clock_ms = 0;
    op_init(&o, &oc, &cb, NULL);
    op_entry *e;
    ASSERT_INT_EQ(op_push_record(&o, 1, 0, &rec1, &e), 0);
    ASSERT_INT_EQ(op_complete(&o, e, NULL, 0), 0); /* leaves at once */
    evtime ev;
    evtime_init(&ev, 0);
    mw_source src = { &fake_source_ops, NULL, NULL, 0 };
    fake_sink out = { { &fake_sink_ops, NULL, NULL, NULL }, 7 };
    snap_view v = { "/in", "/out", "", OP_UNORDERED, 0, &o, &ev, &src, &out.base, NULL, record_cb, NULL };
    snap s;
    ASSERT_INT_EQ(snap_take(&v, 1, clock_ms, &s), 0);
    ASSERT_INT_EQ(s.final, 1);
    ASSERT_UINT_EQ(s.dlq_len, 0);
    ckpt k;
    char why[256];
    ASSERT_INT_EQ(ckpt_decode(s.buf, s.len, &k, why, sizeof why), 0);
    ASSERT_STR_EQ(k.mode, "unordered");
    ASSERT_STR_EQ(k.dead_letter, "");
    ASSERT_INT_EQ(k.complete, 1);
    ASSERT_UINT_EQ(k.next_seq, 2);
    ASSERT_INT_EQ(k.has_wm_current, 0);
    ASSERT_INT_EQ(k.has_wm_max, 0);
    ASSERT_INT_EQ(k.has_pending_wm, 0);
    ASSERT_UINT_EQ(k.output_len, 7);
    ASSERT_UINT_EQ(k.dead_letter_len, 0);
    ASSERT_UINT_EQ(k.n, 0);
    ckpt_free(&k);
    free(s.buf);
    op_free(&o);
}

TEST_MAIN("snapshot", T(test_every_field_of_a_snapshot), T(test_a_final_snapshot_of_an_idle_run))
