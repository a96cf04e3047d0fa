/*
 * test_op.c: the operator core's rules, driven by a manual clock. Each
 * emitted event is appended to a log string ("r3" record 3, "w100"
 * watermark 100, "F2" failure of record 2, "x" release), so a test states
 * the exact observable sequence.
 */
#include "../../src/op/op.h"
#include "../../src/op/wmgen.h"
#include "test.h"

typedef struct harness {
    op o;
    uint64_t clock;
    char log[4096];
    op_entry *by_seq[256];
    int timeout_policy; /* 0: fail, 1: complete with "T" output */
    int released;
    int retries_started;
    double rnd;
    const op_retry_policy *policy; /* set on each pushed record, as the host does */
    uint64_t *emitted;  /* when set: the seq of every emitted record, instead of the log */
    size_t nemitted;
    uint64_t complete_on_release; /* keyed re-entrancy: complete this seq from cb.release */
    uint64_t token_at;  /* the gate: a start may go when clock >= token_at (each takes it) */
    uint64_t token_every; /* ... and the next token comes this many ms later */
    int gate_calls;
} harness;

static void logf_(harness *h, const char *s)
{
    if (h->log[0])
        strcat(h->log, " ");
    strcat(h->log, s);
}

static uint64_t cb_now(void *ud) { return ((harness *)ud)->clock; }

static void cb_emit(void *ud, op_entry *e)
{
    harness *h = ud;
    if (h->emitted) {
        h->emitted[h->nemitted++] = e->seq;
        return;
    }
    char b[64];
    snprintf(b, sizeof b, "r%" PRIu64 "%.*s", e->seq, (int)e->out_len, e->out ? e->out : "");
    logf_(ud, b);
}

static void cb_wm(void *ud, int64_t wm)
{
    char b[64];
    snprintf(b, sizeof b, "w%" PRId64, wm);
    logf_(ud, b);
}

static void cb_timeout(void *ud, op_entry *e)
{
    harness *h = ud;
    if (h->timeout_policy == 1)
        ASSERT_INT_EQ(op_complete(&h->o, e, strdup("T"), 1), 0);
    else if (h->timeout_policy == 0)
        ASSERT_INT_EQ(op_fail(&h->o, e, "timeout"), 0);
    /* policy 2: decide nothing (the core must fail it itself) */
}

static void cb_failure(void *ud, op_entry *e)
{
    char b[128];
    snprintf(b, sizeof b, "F%" PRIu64 ":%s", e->seq, e->err);
    logf_(ud, b);
}

static void cb_release(void *ud, op_entry *e)
{
    harness *h = ud;
    h->released++;
    if (e->kind == OP_KIND_RECORD && h->complete_on_release && e->seq != h->complete_on_release) {
        uint64_t s = h->complete_on_release;
        h->complete_on_release = 0;
        ASSERT_INT_EQ(op_complete(&h->o, h->by_seq[s], NULL, 0), 0);
    }
}

static void cb_retry(void *ud, op_entry *e)
{
    harness *h = ud;
    char b[64];
    snprintf(b, sizeof b, "a%" PRIu64 ".%u", e->seq, e->attempt);
    logf_(ud, b);
    h->retries_started++;
}

static double cb_random(void *ud)
{
    return ((harness *)ud)->rnd;
}

/* A rate limit of one token per token_every ms, on the manual clock. */
static uint64_t cb_gate(void *ud)
{
    harness *h = ud;
    h->gate_calls++;
    if (h->clock < h->token_at)
        return h->token_at;
    h->token_at = h->clock + h->token_every;
    return 0;
}

static void setup(harness *h, op_mode mode, size_t cap, uint64_t timeout)
{
    memset(h, 0, sizeof *h);
    op_config cfg = { mode, cap, timeout };
    op_callbacks cb = { cb_now, cb_emit, cb_wm, cb_timeout, cb_failure, cb_release, cb_retry, cb_random, NULL };
    ASSERT_INT_EQ(op_init(&h->o, &cfg, &cb, h), 0);
}

static op_entry *push(harness *h)
{
    op_entry *e = NULL;
    ASSERT_INT_EQ(op_push_record(&h->o, h->o.next_seq, 0, NULL, &e), 0);
    e->policy = h->policy;
    h->by_seq[e->seq] = e;
    return e;
}

static void done(harness *h, uint64_t seq)
{
    ASSERT_INT_EQ(op_complete(&h->o, h->by_seq[seq], NULL, 0), 0);
}

static void test_ordered_emits_in_input_order(void)
{
    harness h;
    setup(&h, OP_ORDERED, 10, 0);
    for (int i = 0; i < 4; i++)
        push(&h);
    done(&h, 3);
    done(&h, 2);
    ASSERT_STR_EQ(h.log, "");
    done(&h, 1);
    ASSERT_STR_EQ(h.log, "r1 r2 r3");
    done(&h, 4);
    ASSERT_STR_EQ(h.log, "r1 r2 r3 r4");
    ASSERT_INT_EQ(op_size(&h.o), 0);
    ASSERT_INT_EQ(h.released, 4);
    op_free(&h.o);
}

static void test_ordered_watermark_between_neighbours(void)
{
    harness h;
    setup(&h, OP_ORDERED, 10, 0);
    push(&h);
    ASSERT_INT_EQ(op_push_watermark(&h.o, 100), 0);
    push(&h);
    done(&h, 2);
    ASSERT_STR_EQ(h.log, "");
    done(&h, 1);
    ASSERT_STR_EQ(h.log, "r1 w100 r2");
    op_free(&h.o);
}

static void test_watermark_with_nothing_pending_leaves_at_once(void)
{
    for (int m = 0; m < 2; m++) {
        harness h;
        setup(&h, m ? OP_UNORDERED : OP_ORDERED, 10, 0);
        ASSERT_INT_EQ(op_push_watermark(&h.o, 5), 0);
        ASSERT_STR_EQ(h.log, "w5");
        ASSERT_INT_EQ(op_size(&h.o), 0);
        op_free(&h.o);
    }
}

static void test_unordered_emits_on_completion(void)
{
    harness h;
    setup(&h, OP_UNORDERED, 10, 0);
    for (int i = 0; i < 3; i++)
        push(&h);
    done(&h, 3);
    ASSERT_STR_EQ(h.log, "r3");
    done(&h, 1);
    done(&h, 2);
    ASSERT_STR_EQ(h.log, "r3 r1 r2");
    op_free(&h.o);
}

static void test_unordered_watermark_is_a_barrier_both_ways(void)
{
    harness h;
    setup(&h, OP_UNORDERED, 10, 0);
    push(&h);                              /* 1: segment 0 */
    push(&h);                              /* 2: segment 0 */
    ASSERT_INT_EQ(op_push_watermark(&h.o, 10), 0);
    push(&h);                              /* 3: segment 1 */
    ASSERT_INT_EQ(op_push_watermark(&h.o, 20), 0);
    push(&h);                              /* 4: segment 2 */
    done(&h, 4);                           /* may not cross w10 or w20 */
    done(&h, 3);                           /* may not cross w10 */
    ASSERT_STR_EQ(h.log, "");
    done(&h, 2);
    ASSERT_STR_EQ(h.log, "r2");
    done(&h, 1);
    ASSERT_STR_EQ(h.log, "r2 r1 w10 r3 w20 r4");
    ASSERT_INT_EQ(op_size(&h.o), 0);
    op_free(&h.o);
}

static void test_unordered_segment_completion_order_within_segment(void)
{
    harness h;
    setup(&h, OP_UNORDERED, 10, 0);
    push(&h);                              /* 1 */
    ASSERT_INT_EQ(op_push_watermark(&h.o, 1), 0);
    push(&h);                              /* 2 */
    push(&h);                              /* 3 */
    push(&h);                              /* 4 */
    done(&h, 4);
    done(&h, 2);
    done(&h, 1);                           /* releases w1, then 4 and 2 held */
    ASSERT_STR_EQ(h.log, "r1 w1 r2 r4");
    done(&h, 3);
    ASSERT_STR_EQ(h.log, "r1 w1 r2 r4 r3");
    op_free(&h.o);
}

static void test_capacity_counts_records_watermarks_and_held(void)
{
    harness h;
    setup(&h, OP_ORDERED, 3, 0);
    push(&h);
    ASSERT_INT_EQ(op_push_watermark(&h.o, 1), 0);
    push(&h);
    ASSERT(op_full(&h.o));
    op_entry *e;
    ASSERT_INT_EQ(op_push_record(&h.o, 9, 0, NULL, &e), OP_EFULL);
    ASSERT_INT_EQ(op_push_watermark(&h.o, 2), OP_EFULL);
    done(&h, 2);                           /* held behind 1: still counts */
    ASSERT(op_full(&h.o));
    done(&h, 1);
    ASSERT_STR_EQ(h.log, "r1 w1 r2");
    ASSERT(!op_full(&h.o));
    ASSERT_INT_EQ(op_size(&h.o), 0);
    op_free(&h.o);
}

static void test_unordered_capacity_held_behind_watermark(void)
{
    harness h;
    setup(&h, OP_UNORDERED, 3, 0);
    push(&h);
    ASSERT_INT_EQ(op_push_watermark(&h.o, 1), 0);
    push(&h);
    done(&h, 2);                           /* held behind w1 */
    ASSERT_STR_EQ(h.log, "");
    ASSERT(op_full(&h.o));
    done(&h, 1);
    ASSERT_STR_EQ(h.log, "r1 w1 r2");
    ASSERT_INT_EQ(op_size(&h.o), 0);
    op_free(&h.o);
}

static void test_timeout_fires_at_deadline_and_fails(void)
{
    harness h;
    setup(&h, OP_ORDERED, 10, 100);
    push(&h);
    h.clock = 50;
    push(&h);
    ASSERT_UINT_EQ(op_next_deadline(&h.o), 100);
    h.clock = 99;
    ASSERT_INT_EQ(op_expire(&h.o), 0);
    h.clock = 100;
    ASSERT_INT_EQ(op_expire(&h.o), 1);
    ASSERT_STR_EQ(h.log, "F1:timeout");
    ASSERT(op_failed(&h.o));
    /* Nothing after a failure is emitted. */
    done(&h, 2);
    ASSERT_STR_EQ(h.log, "F1:timeout");
    op_free(&h.o);
}

static void test_timeout_handler_result_is_emitted(void)
{
    harness h;
    setup(&h, OP_ORDERED, 10, 100);
    h.timeout_policy = 1;
    push(&h);
    push(&h);
    done(&h, 2);
    h.clock = 100;
    ASSERT_INT_EQ(op_expire(&h.o), 1);
    ASSERT_STR_EQ(h.log, "r1T r2");
    ASSERT_INT_EQ(h.o.stats.timeouts, 1);
    op_free(&h.o);
}

static void test_first_completion_wins_over_timeout(void)
{
    harness h;
    setup(&h, OP_ORDERED, 10, 100);
    h.timeout_policy = 1;
    op_entry *e1 = push(&h);
    push(&h);
    /* Completion first: the deadline no longer exists. */
    done(&h, 2);
    ASSERT_UINT_EQ(op_next_deadline(&h.o), 100);
    ASSERT_INT_EQ(op_complete(&h.o, e1, NULL, 0), 0);
    ASSERT_STR_EQ(h.log, "r1 r2");
    ASSERT_UINT_EQ(op_next_deadline(&h.o), OP_NO_DEADLINE);
    h.clock = 1000;
    ASSERT_INT_EQ(op_expire(&h.o), 0);
    op_free(&h.o);
}

static void test_late_result_after_timeout_is_ignored(void)
{
    /* Record 2 times out (its handler completes it with "T") while record 1
     * is still pending, so it stays queued, held for order: a late result
     * for it must be refused and must not replace the timeout's outcome. */
    harness h;
    setup(&h, OP_ORDERED, 10, 100);
    h.timeout_policy = 1;
    op_entry *e1 = push(&h);
    op_entry *e2 = NULL;
    ASSERT_INT_EQ(op_push_record(&h.o, 2, 60, NULL, &e2), 0); /* deadline 40 */
    h.clock = 40;
    ASSERT_INT_EQ(op_expire(&h.o), 1);
    ASSERT(e2->timed_out);
    ASSERT_INT_EQ(e2->state, OP_DONE);
    ASSERT_INT_EQ(h.o.stats.timeouts, 1);
    ASSERT_STR_EQ(h.log, "");              /* held behind record 1 */
    char *late = strdup("L");
    ASSERT_INT_EQ(op_complete(&h.o, e2, late, 1), OP_ELATE);
    free(late);                            /* OP_ELATE: the caller keeps it */
    ASSERT_INT_EQ(op_fail(&h.o, e2, "late"), OP_ELATE);
    ASSERT_INT_EQ(op_complete_dead(&h.o, e2, NULL, 0), OP_ELATE);
    ASSERT_INT_EQ(e2->state, OP_DONE);
    ASSERT(!op_failed(&h.o));
    ASSERT_INT_EQ(h.o.stats.failures, 0);
    ASSERT_INT_EQ(h.o.stats.dead_lettered, 0);
    h.clock = 50;
    ASSERT_INT_EQ(op_complete(&h.o, e1, NULL, 0), 0);
    ASSERT_STR_EQ(h.log, "r1 r2T");        /* the timeout's result, not "L" */
    ASSERT_INT_EQ(op_size(&h.o), 0);
    ASSERT_UINT_EQ(op_next_deadline(&h.o), OP_NO_DEADLINE);
    h.clock = 1000;
    ASSERT_INT_EQ(op_expire(&h.o), 0);     /* no second timeout */
    ASSERT_INT_EQ(h.o.stats.timeouts, 1);
    op_free(&h.o);
}

static void test_timeout_without_decision_fails_record(void)
{
    harness h;
    setup(&h, OP_ORDERED, 10, 10);
    h.timeout_policy = 2;
    push(&h);
    h.clock = 10;
    ASSERT_INT_EQ(op_expire(&h.o), 1);
    ASSERT(op_failed(&h.o));
    op_free(&h.o);
}

static void test_timeouts_fire_in_deadline_order_with_used_budget(void)
{
    harness h;
    setup(&h, OP_UNORDERED, 10, 100);
    h.timeout_policy = 1;
    op_entry *e;
    ASSERT_INT_EQ(op_push_record(&h.o, 1, 0, NULL, &e), 0);    /* deadline 100 */
    ASSERT_INT_EQ(op_push_record(&h.o, 2, 70, NULL, &e), 0);   /* deadline 30 */
    ASSERT_INT_EQ(op_push_record(&h.o, 3, 500, NULL, &e), 0);  /* deadline 0 */
    ASSERT_UINT_EQ(op_next_deadline(&h.o), 0);
    ASSERT_INT_EQ(op_expire(&h.o), 1);
    h.clock = 30;
    ASSERT_INT_EQ(op_expire(&h.o), 1);
    ASSERT_STR_EQ(h.log, "r3T r2T");
    h.clock = 100;
    ASSERT_INT_EQ(op_expire(&h.o), 1);
    ASSERT_STR_EQ(h.log, "r3T r2T r1T");
    op_free(&h.o);
}

static void test_timeout_races_completion_same_tick(void)
{
    /* Completion delivered before expire at the deadline instant wins. */
    harness h;
    setup(&h, OP_UNORDERED, 10, 100);
    h.timeout_policy = 1;
    push(&h);
    push(&h);
    h.clock = 100;
    done(&h, 2);
    ASSERT_INT_EQ(op_expire(&h.o), 1);
    ASSERT_STR_EQ(h.log, "r2 r1T");
    ASSERT_INT_EQ(h.o.stats.timeouts, 1);
    op_free(&h.o);
}

static void test_failure_reported_after_earlier_records(void)
{
    harness h;
    setup(&h, OP_ORDERED, 10, 0);
    op_entry *e1 = push(&h);
    op_entry *e2 = push(&h);
    push(&h);
    ASSERT_INT_EQ(op_fail(&h.o, e2, "boom"), 0);
    ASSERT_STR_EQ(h.log, "");
    ASSERT_INT_EQ(op_complete(&h.o, e1, NULL, 0), 0);
    ASSERT_STR_EQ(h.log, "r1 F2:boom");
    done(&h, 3);
    ASSERT_STR_EQ(h.log, "r1 F2:boom");
    ASSERT_INT_EQ(op_push_watermark(&h.o, 3), OP_ESTATE);
    op_free(&h.o);
    ASSERT_INT_EQ(h.released, 3);
}

static void test_unordered_failure_waits_for_earlier_but_not_later(void)
{
    harness h;
    setup(&h, OP_UNORDERED, 10, 0);
    op_entry *e1 = push(&h);
    op_entry *e2 = push(&h);
    push(&h);
    ASSERT_INT_EQ(op_fail(&h.o, e2, "x"), 0);
    done(&h, 3);                           /* later record, same segment */
    ASSERT_STR_EQ(h.log, "r3");
    ASSERT_INT_EQ(op_complete(&h.o, e1, NULL, 0), 0);
    ASSERT_STR_EQ(h.log, "r3 r1 F2:x");
    op_free(&h.o);
}

static void test_push_failed_is_reported_in_turn(void)
{
    harness h;
    setup(&h, OP_ORDERED, 10, 0);
    push(&h);
    ASSERT_INT_EQ(op_push_failed(&h.o, 7, "malformed", NULL), 0);
    ASSERT_STR_EQ(h.log, "");
    done(&h, 1);
    ASSERT_STR_EQ(h.log, "r1 F2:malformed");
    op_free(&h.o);
}

static void test_emit_callback_may_complete_others(void)
{
    /* Re-entrancy: completing inside a callback does not recurse or lose. */
    harness h;
    setup(&h, OP_ORDERED, 10, 100);
    h.timeout_policy = 1;
    push(&h);
    push(&h);
    push(&h);
    done(&h, 3);
    h.clock = 100;                          /* 1 and 2 time out together */
    ASSERT_INT_EQ(op_expire(&h.o), 2);
    ASSERT_STR_EQ(h.log, "r1T r2T r3");
    op_free(&h.o);
}

static void test_many_records_random_completion_ordered(void)
{
    harness h;
    setup(&h, OP_ORDERED, 200, 0);
    for (int i = 0; i < 200; i++)
        push(&h);
    /* complete in a scrambled order (37 is prime to 200: each once); after
     * each completion exactly the completed prefix has left */
    int completed[201] = { 0 };
    int prefix = 0;
    for (int i = 0; i < 200; i++) {
        int s = (i * 37 + 3) % 200 + 1;
        done(&h, (uint64_t)s);
        completed[s] = 1;
        while (prefix < 200 && completed[prefix + 1])
            prefix++;
        ASSERT_INT_EQ(h.o.stats.records_out, prefix);
    }
    ASSERT_INT_EQ(h.o.stats.records_out, 200);
    ASSERT_INT_EQ(op_size(&h.o), 0);
    /* all 200 emitted, each once, in input order: "r1 r2 ... r200" */
    char want[4096] = "";
    for (int i = 1; i <= 200; i++) {
        char b[16];
        snprintf(b, sizeof b, i == 1 ? "r%d" : " r%d", i);
        strcat(want, b);
    }
    ASSERT_STR_EQ(h.log, want);
    op_free(&h.o);
}

static void test_op_free_releases_everything(void)
{
    harness h;
    setup(&h, OP_UNORDERED, 10, 50);
    push(&h);
    ASSERT_INT_EQ(op_push_watermark(&h.o, 1), 0);
    push(&h);
    done(&h, 2);
    op_free(&h.o);
    ASSERT_INT_EQ(h.released, 3); /* two records and the watermark */
}

static void test_wmgen_event_time_rule(void)
{
    wmgen g;
    wmgen_init(&g, 100);
    int64_t wm = 0;
    ASSERT_INT_EQ(wmgen_on_event(&g, 1000, &wm), 1);
    ASSERT_INT_EQ(wm, 900);
    ASSERT_INT_EQ(wmgen_on_event(&g, 950, &wm), 0);  /* out of order: no advance */
    ASSERT_INT_EQ(wmgen_on_event(&g, 1000, &wm), 0); /* equal max: no advance */
    ASSERT_INT_EQ(wmgen_on_event(&g, 1001, &wm), 1);
    ASSERT_INT_EQ(wm, 901);
    ASSERT_INT_EQ(wmgen_on_watermark(&g, 500), 0);   /* stale explicit watermark */
    ASSERT_INT_EQ(g.stale, 1);
    ASSERT_INT_EQ(wmgen_on_watermark(&g, 2000), 1);
    ASSERT_INT_EQ(wmgen_on_event(&g, 2050, &wm), 0); /* 1950 < 2000 */
    ASSERT_INT_EQ(wmgen_on_event(&g, 2101, &wm), 1);
    ASSERT_INT_EQ(wm, 2001);
}

static op_retry_policy fixed(uint32_t attempts, uint64_t delay)
{
    op_retry_policy p = { 1, RETRY_FIXED, attempts, delay, 0, 0, 0, 0 };
    return p;
}

static void test_retry_delay_schedules(void)
{
    op_retry_policy f = fixed(5, 100);
    ASSERT_UINT_EQ(op_retry_delay(&f, 1, 0.5), 100);
    ASSERT_UINT_EQ(op_retry_delay(&f, 4, 0.5), 100);
    op_retry_policy x = { 1, RETRY_EXPONENTIAL, 10, 0, 10, 1000, 2.0, 0 };
    ASSERT_UINT_EQ(op_retry_delay(&x, 1, 0.5), 10);   /* before attempt 2: initial */
    ASSERT_UINT_EQ(op_retry_delay(&x, 2, 0.5), 20);
    ASSERT_UINT_EQ(op_retry_delay(&x, 3, 0.5), 40);
    ASSERT_UINT_EQ(op_retry_delay(&x, 7, 0.5), 640);
    ASSERT_UINT_EQ(op_retry_delay(&x, 8, 0.5), 1000); /* capped: 1280 > 1000 */
    ASSERT_UINT_EQ(op_retry_delay(&x, 60, 0.5), 1000);
    x.jitter_full = 1;
    for (int i = 0; i < 100; i++) {
        double r = i / 100.0;
        uint64_t d = op_retry_delay(&x, 3, r);
        ASSERT(d <= 40);
        ASSERT_UINT_EQ(d, (uint64_t)(40 * r));
    }
    ASSERT_UINT_EQ(op_retry_delay(&x, 3, 0.0), 0);
}

static void test_retry_parse_flag_forms(void)
{
    op_retry_policy p;
    char err[256];
    ASSERT_INT_EQ(op_retry_parse("none", &p, err, sizeof err), 0);
    ASSERT_INT_EQ(p.backoff, RETRY_NONE);
    ASSERT_INT_EQ(op_retry_parse("fixed:3:250", &p, err, sizeof err), 0);
    ASSERT_INT_EQ(p.backoff, RETRY_FIXED);
    ASSERT_INT_EQ(p.max_attempts, 3);
    ASSERT_UINT_EQ(p.delay_ms, 250);
    ASSERT_INT_EQ(op_retry_parse("exponential:5:10:1000:2", &p, err, sizeof err), 0);
    ASSERT_INT_EQ(p.backoff, RETRY_EXPONENTIAL);
    ASSERT_UINT_EQ(p.initial_ms, 10);
    ASSERT_UINT_EQ(p.max_ms, 1000);
    ASSERT(p.multiplier == 2.0 && !p.jitter_full);
    ASSERT_INT_EQ(op_retry_parse("exponential:5:10:1000:1.5:full", &p, err, sizeof err), 0);
    ASSERT(p.jitter_full && p.multiplier == 1.5);
    ASSERT_INT_EQ(op_retry_parse("fixed:0:10", &p, err, sizeof err), -1);
    ASSERT_INT_EQ(op_retry_parse("fixed:3", &p, err, sizeof err), -1);
    ASSERT_INT_EQ(op_retry_parse("exponential:5:100:10:2", &p, err, sizeof err), -1);
    ASSERT(strstr(err, "max_delay_ms") != NULL);
    ASSERT_INT_EQ(op_retry_parse("exponential:5:10:100:0.5", &p, err, sizeof err), -1);
    ASSERT_INT_EQ(op_retry_parse("sometimes", &p, err, sizeof err), -1);
}

static void test_retry_keeps_slot_and_order(void)
{
    harness h;
    setup(&h, OP_ORDERED, 2, 0);
    op_retry_policy p = fixed(3, 100);
    h.policy = &p;
    op_entry *e1 = push(&h);
    push(&h);
    ASSERT_INT_EQ(op_retry(&h.o, e1), 0);  /* attempt 1 asks for a retry */
    done(&h, 2);                            /* held behind the retried head */
    ASSERT_STR_EQ(h.log, "");
    ASSERT(op_full(&h.o));                  /* it keeps its slot */
    ASSERT_UINT_EQ(op_next_deadline(&h.o), 100);
    h.clock = 99;
    op_expire(&h.o);
    ASSERT_STR_EQ(h.log, "");
    h.clock = 100;
    op_expire(&h.o);
    ASSERT_STR_EQ(h.log, "a1.2");
    ASSERT_INT_EQ(op_retry(&h.o, e1), 0);  /* attempt 2 too */
    h.clock = 200;
    op_expire(&h.o);
    ASSERT_STR_EQ(h.log, "a1.2 a1.3");
    ASSERT_INT_EQ(op_retry(&h.o, e1), OP_EEXHAUSTED); /* 3 calls made */
    done(&h, 1);
    ASSERT_STR_EQ(h.log, "a1.2 a1.3 r1 r2");
    ASSERT_INT_EQ(h.o.stats.attempts, 4);
    ASSERT_INT_EQ(h.o.stats.retries, 2);
    op_free(&h.o);
}

static void test_retry_no_strategy_is_exhausted(void)
{
    harness h;
    setup(&h, OP_ORDERED, 2, 0);
    op_entry *e = push(&h);
    ASSERT_INT_EQ(op_retry(&h.o, e), OP_EEXHAUSTED);
    op_free(&h.o);
}

static void test_timeout_during_backoff_wins(void)
{
    /* deadline 150 falls inside the back-off [100, 300): the retry never starts */
    harness h;
    setup(&h, OP_ORDERED, 4, 150);
    h.timeout_policy = 1;
    op_retry_policy p = fixed(5, 200);
    h.policy = &p;
    op_entry *e = push(&h);
    h.clock = 100;
    ASSERT_INT_EQ(op_retry(&h.o, e), 0);
    ASSERT_UINT_EQ(op_next_deadline(&h.o), 150);
    h.clock = 400;                          /* both are due: deadline first */
    op_expire(&h.o);
    ASSERT_STR_EQ(h.log, "r1T");
    ASSERT_INT_EQ(h.retries_started, 0);
    ASSERT_INT_EQ(op_backoffs(&h.o), 0);
    op_free(&h.o);
}

static void test_retry_due_at_the_deadline_instant_loses(void)
{
    harness h;
    setup(&h, OP_ORDERED, 4, 200);
    op_retry_policy p = fixed(5, 100);
    h.policy = &p;
    op_entry *e = push(&h);
    h.clock = 100;
    ASSERT_INT_EQ(op_retry(&h.o, e), 0);    /* retry_at 200 == deadline 200 */
    h.clock = 200;
    op_expire(&h.o);
    ASSERT_STR_EQ(h.log, "F1:timeout");
    ASSERT_INT_EQ(h.retries_started, 0);
    op_free(&h.o);
}

static void test_retry_then_timeout_during_attempt(void)
{
    harness h;
    setup(&h, OP_ORDERED, 4, 500);
    h.timeout_policy = 1;
    op_retry_policy p = fixed(5, 100);
    h.policy = &p;
    op_entry *e = push(&h);
    h.clock = 50;
    ASSERT_INT_EQ(op_retry(&h.o, e), 0);
    h.clock = 150;
    op_expire(&h.o);
    ASSERT_STR_EQ(h.log, "a1.2");
    h.clock = 500;                          /* the second attempt hangs */
    op_expire(&h.o);
    ASSERT_STR_EQ(h.log, "a1.2 r1T");
    op_free(&h.o);
}

static void test_no_retry_after_the_deadline(void)
{
    harness h;
    setup(&h, OP_ORDERED, 4, 100);
    op_retry_policy p = fixed(5, 10);
    h.policy = &p;
    op_entry *e = push(&h);
    h.clock = 100;                          /* the attempt ended exactly at the deadline */
    ASSERT_INT_EQ(op_retry(&h.o, e), OP_EEXHAUSTED);
    op_free(&h.o);
}

static void test_retry_all_now_at_end_of_input(void)
{
    harness h;
    setup(&h, OP_UNORDERED, 4, 0);
    op_retry_policy p = fixed(3, 60000);
    h.policy = &p;
    op_entry *e1 = push(&h);
    op_entry *e2 = push(&h);
    ASSERT_INT_EQ(op_retry(&h.o, e1), 0);
    ASSERT_INT_EQ(op_retry(&h.o, e2), 0);
    ASSERT_INT_EQ(op_backoffs(&h.o), 2);
    op_retry_all_now(&h.o);                 /* no 60 s wait */
    ASSERT_INT_EQ(op_backoffs(&h.o), 0);
    ASSERT_INT_EQ(h.retries_started, 2);
    ASSERT_UINT_EQ(op_next_deadline(&h.o), OP_NO_DEADLINE);
    op_free(&h.o);
}

static harness *reschedule_h;
static void cb_retry_fails_again(void *ud, op_entry *e)
{
    cb_retry(ud, e);
    ASSERT_INT_EQ(op_retry(&reschedule_h->o, e), 0); /* the early attempt fails at once */
}

static void test_retry_all_now_leaves_new_backoffs_waiting(void)
{
    harness h;
    setup(&h, OP_ORDERED, 4, 0);
    h.o.cb.retry = cb_retry_fails_again;
    reschedule_h = &h;
    op_retry_policy p = fixed(5, 1000);
    h.policy = &p;
    op_entry *e = push(&h);
    ASSERT_INT_EQ(op_retry(&h.o, e), 0);
    op_retry_all_now(&h.o);
    ASSERT_STR_EQ(h.log, "a1.2");            /* one early attempt, not five */
    ASSERT_INT_EQ(op_backoffs(&h.o), 1);
    ASSERT_UINT_EQ(op_next_deadline(&h.o), 1000);
    op_free(&h.o);
}

static void test_unordered_watermark_waits_for_retried_record(void)
{
    harness h;
    setup(&h, OP_UNORDERED, 8, 0);
    op_retry_policy p = fixed(3, 10);
    h.policy = &p;
    op_entry *e1 = push(&h);
    ASSERT_INT_EQ(op_push_watermark(&h.o, 5), 0);
    push(&h);
    ASSERT_INT_EQ(op_retry(&h.o, e1), 0);
    done(&h, 2);
    ASSERT_STR_EQ(h.log, "");
    h.clock = 10;
    op_expire(&h.o);
    done(&h, 1);
    ASSERT_STR_EQ(h.log, "a1.2 r1 w5 r2");
    op_free(&h.o);
}

static void test_dead_letter_completion_leaves_in_turn(void)
{
    harness h;
    setup(&h, OP_ORDERED, 8, 0);
    push(&h);
    op_entry *e2 = push(&h);
    ASSERT_INT_EQ(op_complete_dead(&h.o, e2, strdup("{}"), 2), 0);
    ASSERT_STR_EQ(h.log, "");
    done(&h, 1);
    ASSERT_STR_EQ(h.log, "r1 r2");
    ASSERT(!op_failed(&h.o));
    ASSERT_INT_EQ(h.o.stats.dead_lettered, 1);
    op_free(&h.o);
}

/* Issue 10: a restore re-inserts completed-but-held records with their
 * results; they leave in their turn and are never pending (no deadline, no
 * timeout, no retry). In-flight ones keep the budget they had used. */
static void test_restore_completed_emits_in_turn_without_invoking(void)
{
    harness h;
    setup(&h, OP_ORDERED, 3, 300);
    h.clock = 1000;
    op_entry *e1, *e2, *e3;
    /* the slow head, still running, had used 297 of its 300 ms */
    ASSERT_INT_EQ(op_restore_record(&h.o, 7, 70, 1, 297, NULL, &e1), 0);
    ASSERT_INT_EQ(op_restore_completed(&h.o, 8, 71, 1, 0, strdup("A"), 1, NULL, 0, NULL, &e2), 0);
    ASSERT_INT_EQ(op_restore_completed(&h.o, 9, 72, 2, 1, NULL, 0, strdup("D"), 1, NULL, &e3), 0);
    op_restore_done(&h.o, 10);
    ASSERT_STR_EQ(h.log, "");
    ASSERT_INT_EQ(h.o.pending, 1);
    ASSERT_UINT_EQ(op_next_deadline(&h.o), 1003);
    ASSERT_UINT_EQ(e1->budget_prior_ms, 297);
    ASSERT(e2->state == OP_DONE && e3->state == OP_DONE && e3->timed_out && e3->attempt == 2);
    /* held results do not time out, however long the head takes */
    h.timeout_policy = 1;
    h.clock = 1003;
    ASSERT_INT_EQ((int)op_expire(&h.o), 1);
    ASSERT_STR_EQ(h.log, "r7T r8A r9");
    ASSERT_INT_EQ(h.o.stats.dead_lettered, 1);
    ASSERT_INT_EQ(op_size(&h.o), 0);
    op_free(&h.o);
}

static void test_restore_completed_at_the_head_leaves_at_once(void)
{
    harness h;
    setup(&h, OP_UNORDERED, 4, 0);
    ASSERT_INT_EQ(op_restore_record(&h.o, 1, 1, 1, 0, NULL, NULL), 0);
    ASSERT_INT_EQ(op_restore_watermark(&h.o, 50), 0);
    op_entry *e;
    ASSERT_INT_EQ(op_restore_completed(&h.o, 2, 2, 1, 0, strdup("B"), 1, NULL, 0, NULL, &e), 0);
    /* held behind the watermark: record 1 is still pending */
    ASSERT_STR_EQ(h.log, "");
    h.by_seq[1] = h.o.head;
    done(&h, 1);
    ASSERT_STR_EQ(h.log, "r1 w50 r2B");
    op_free(&h.o);
}

/* First completion wins (op.h): a record that completed and is held for
 * order keeps its result; a second op_complete is OP_ELATE (the caller keeps
 * its buffer) and changes nothing. */
static void test_second_completion_of_held_record_is_late(void)
{
    harness h;
    setup(&h, OP_ORDERED, 10, 0);
    push(&h);
    op_entry *e2 = push(&h);
    ASSERT_INT_EQ(op_complete(&h.o, e2, strdup("A"), 1), 0);
    ASSERT_STR_EQ(h.log, "");               /* held behind record 1 */
    char *b = strdup("B");
    ASSERT_INT_EQ(op_complete(&h.o, e2, b, 1), OP_ELATE);
    free(b);
    ASSERT_INT_EQ(h.o.pending, 1);
    ASSERT(e2->state == OP_DONE);
    done(&h, 1);
    ASSERT_STR_EQ(h.log, "r1 r2A");
    ASSERT(!op_failed(&h.o));
    op_free(&h.o);
}

/* First completion wins: op_fail after op_complete is OP_ELATE; the held
 * record is emitted with its result and the run does not fail. */
static void test_fail_after_completion_of_held_record_is_late(void)
{
    harness h;
    setup(&h, OP_ORDERED, 10, 0);
    push(&h);
    op_entry *e2 = push(&h);
    ASSERT_INT_EQ(op_complete(&h.o, e2, strdup("A"), 1), 0);
    ASSERT_INT_EQ(op_fail(&h.o, e2, "late"), OP_ELATE);
    ASSERT_INT_EQ(h.o.pending, 1);
    ASSERT_INT_EQ(h.o.stats.failures, 0);
    ASSERT(e2->state == OP_DONE);
    done(&h, 1);
    ASSERT_STR_EQ(h.log, "r1 r2A");
    ASSERT(!op_failed(&h.o));
    op_free(&h.o);
}

/* First completion wins the other way round: a failure held behind an
 * earlier record is not turned into a success by a later op_complete. */
static void test_completion_after_failure_of_held_record_is_late(void)
{
    harness h;
    setup(&h, OP_ORDERED, 10, 0);
    push(&h);
    op_entry *e2 = push(&h);
    ASSERT_INT_EQ(op_fail(&h.o, e2, "boom"), 0);
    char *b = strdup("B");
    ASSERT_INT_EQ(op_complete(&h.o, e2, b, 1), OP_ELATE);
    free(b);
    ASSERT_INT_EQ(h.o.pending, 1);
    ASSERT(e2->state == OP_FAILED);
    done(&h, 1);
    ASSERT_STR_EQ(h.log, "r1 F2:boom");
    op_free(&h.o);
}

/* op_expire (op.h): a record in back-off whose deadline passes times out
 * and "its retry is dropped" -- already when the timeout callback, which
 * decides the outcome, runs: no back-off is left scheduled for it. */
static size_t probe_backoffs;
static uint64_t probe_next;
static int probe_in_backoff;
static void cb_timeout_probe(void *ud, op_entry *e)
{
    harness *h = ud;
    probe_backoffs = op_backoffs(&h->o);
    probe_next = op_next_deadline(&h->o);
    probe_in_backoff = e->in_backoff;
    ASSERT_INT_EQ(op_complete(&h->o, e, strdup("T"), 1), 0);
}

static void test_timeout_during_backoff_drops_the_retry_before_the_callback(void)
{
    harness h;
    setup(&h, OP_ORDERED, 4, 150);
    h.o.cb.timeout = cb_timeout_probe;
    op_retry_policy p = fixed(5, 200);
    h.policy = &p;
    op_entry *e = push(&h);
    h.clock = 100;
    ASSERT_INT_EQ(op_retry(&h.o, e), 0);    /* retry_at 300, deadline 150 */
    ASSERT_INT_EQ(op_backoffs(&h.o), 1);
    h.clock = 150;
    ASSERT_INT_EQ(op_expire(&h.o), 1);
    ASSERT_INT_EQ(probe_backoffs, 0);
    ASSERT_UINT_EQ(probe_next, OP_NO_DEADLINE);
    ASSERT_INT_EQ(probe_in_backoff, 0);
    ASSERT_STR_EQ(h.log, "r1T");
    h.clock = 400;
    ASSERT_INT_EQ(op_expire(&h.o), 0);
    ASSERT_INT_EQ(h.retries_started, 0);
    op_free(&h.o);
}

/* The clock (op.h): every time the core keeps or reports is a reading of
 * cb.now, so a host derives each deadline from one clock. */
static void test_times_are_readings_of_the_callers_clock(void)
{
    harness h;
    setup(&h, OP_ORDERED, 4, 100);
    h.clock = 1000;
    ASSERT_UINT_EQ(op_now(&h.o), 1000);
    op_retry_policy p = fixed(3, 40);
    h.policy = &p;
    op_entry *e1 = push(&h);
    ASSERT_UINT_EQ(e1->accepted_at, 1000);
    ASSERT_UINT_EQ(e1->deadline, 1100);
    h.clock = 1010;
    op_entry *e2 = NULL;
    ASSERT_INT_EQ(op_push_record(&h.o, 2, 30, NULL, &e2), 0); /* 30 ms used before */
    ASSERT_UINT_EQ(e2->deadline, 1080);
    ASSERT_UINT_EQ(op_next_deadline(&h.o), 1080);
    h.clock = 1020;
    ASSERT_UINT_EQ(op_now(&h.o), 1020);
    ASSERT_INT_EQ(op_retry(&h.o, e1), 0);
    ASSERT_UINT_EQ(e1->retry_at, 1060);
    ASSERT_UINT_EQ(op_next_deadline(&h.o), 1060);
    op_free(&h.o);
}

/* After a failure is reported nothing more is accepted. */
static void test_failed_operator_accepts_nothing(void)
{
    harness h;
    setup(&h, OP_ORDERED, 4, 0);
    op_entry *e = push(&h);
    ASSERT_INT_EQ(op_fail(&h.o, e, "boom"), 0);
    ASSERT_STR_EQ(h.log, "F1:boom");
    ASSERT(op_failed(&h.o));
    op_entry *x = NULL;
    ASSERT_INT_EQ(op_push_record(&h.o, 2, 0, NULL, &x), OP_ESTATE);
    ASSERT_INT_EQ(op_push_failed(&h.o, 3, "bad", NULL), OP_ESTATE);
    ASSERT_INT_EQ(op_push_watermark(&h.o, 9), OP_ESTATE);
    ASSERT_INT_EQ(op_size(&h.o), 1);
    op_free(&h.o);
}

/* op_retry on a record no longer pending, or already in back-off, is late. */
static void test_retry_of_completed_or_waiting_record_is_late(void)
{
    harness h;
    setup(&h, OP_ORDERED, 4, 0);
    op_retry_policy p = fixed(5, 10);
    h.policy = &p;
    op_entry *e1 = push(&h);
    op_entry *e2 = push(&h);
    ASSERT_INT_EQ(op_retry(&h.o, e1), 0);
    ASSERT_INT_EQ(op_retry(&h.o, e1), OP_ELATE);
    ASSERT_INT_EQ(op_backoffs(&h.o), 1);
    done(&h, 2);
    ASSERT_INT_EQ(op_retry(&h.o, e2), OP_ELATE);
    op_free(&h.o);
}

/* No attempt follows under "none", nor for a record whose timeout fired
 * (the timeout callback decides its outcome). */
static int exhausted_in_timeout;
static void cb_timeout_tries_retry(void *ud, op_entry *e)
{
    harness *h = ud;
    exhausted_in_timeout = op_retry(&h->o, e) == OP_EEXHAUSTED;
    ASSERT_INT_EQ(op_fail(&h->o, e, "timeout"), 0);
}

static void test_retry_none_or_after_timeout_is_exhausted(void)
{
    harness h;
    setup(&h, OP_ORDERED, 4, 50);
    op_retry_policy none = { 1, RETRY_NONE, 5, 10, 0, 0, 0, 0 };
    h.policy = &none;
    op_entry *e = push(&h);
    ASSERT_INT_EQ(op_retry(&h.o, e), OP_EEXHAUSTED);
    op_retry_policy p = fixed(5, 10);
    e->policy = &p;
    h.o.cb.timeout = cb_timeout_tries_retry;
    h.clock = 50;
    ASSERT_INT_EQ(op_expire(&h.o), 1);
    ASSERT(exhausted_in_timeout);
    ASSERT_STR_EQ(h.log, "F1:timeout");
    op_free(&h.o);
}

/* A capacity of 0 is taken as 1. */
static void test_capacity_zero_is_one(void)
{
    harness h;
    setup(&h, OP_ORDERED, 0, 0);
    ASSERT(!op_full(&h.o));
    push(&h);
    ASSERT(op_full(&h.o));
    op_free(&h.o);
}

/* ---- keyed mode ------------------------------------------------------- */

static op_entry *pushk(harness *h, uint64_t key)
{
    op_entry *e = NULL;
    ASSERT_INT_EQ(op_push_keyed(&h->o, key, h->o.next_seq, 0, NULL, &e), 0);
    e->policy = h->policy;
    h->by_seq[e->seq] = e;
    return e;
}

static void test_keyed_same_key_leaves_in_input_order(void)
{
    harness h;
    setup(&h, OP_KEYED, 10, 0);
    pushk(&h, 7);                          /* 1 */
    pushk(&h, 7);                          /* 2 */
    pushk(&h, 7);                          /* 3 */
    done(&h, 3);
    done(&h, 2);
    ASSERT_STR_EQ(h.log, "");              /* both wait for 1, their key's first */
    done(&h, 1);
    ASSERT_STR_EQ(h.log, "r1 r2 r3");
    ASSERT_INT_EQ(op_size(&h.o), 0);
    ASSERT_INT_EQ(h.o.keys.len, 0);        /* the key left the map with its last record */
    op_free(&h.o);
}

static void test_keyed_different_keys_overtake(void)
{
    harness h;
    setup(&h, OP_KEYED, 10, 0);
    pushk(&h, 1);                          /* 1: a */
    pushk(&h, 2);                          /* 2: b */
    pushk(&h, 1);                          /* 3: a */
    pushk(&h, 2);                          /* 4: b */
    pushk(&h, 3);                          /* 5: c */
    done(&h, 5);
    ASSERT_STR_EQ(h.log, "r5");            /* c overtakes everything */
    done(&h, 4);
    ASSERT_STR_EQ(h.log, "r5");            /* b's 4 waits for b's 2 */
    done(&h, 2);
    ASSERT_STR_EQ(h.log, "r5 r2 r4");      /* 2 leaves before 1 (another key), then 4 */
    done(&h, 3);
    ASSERT_STR_EQ(h.log, "r5 r2 r4");
    done(&h, 1);
    ASSERT_STR_EQ(h.log, "r5 r2 r4 r1 r3");
    ASSERT_INT_EQ(h.o.keys.len, 0);
    op_free(&h.o);
}

static void test_keyed_watermark_is_a_barrier_both_ways(void)
{
    harness h;
    setup(&h, OP_KEYED, 10, 0);
    pushk(&h, 1);                          /* 1: a, segment 0 */
    pushk(&h, 2);                          /* 2: b, segment 0 */
    ASSERT_INT_EQ(op_push_watermark(&h.o, 10), 0);
    pushk(&h, 3);                          /* 3: c, segment 1, a key new after w10 */
    pushk(&h, 2);                          /* 4: b, segment 1 */
    done(&h, 3);                           /* may not cross w10 */
    done(&h, 4);
    ASSERT_STR_EQ(h.log, "");
    done(&h, 2);                           /* b's 4 is now first of b, but behind w10 */
    ASSERT_STR_EQ(h.log, "r2");
    done(&h, 1);                           /* w10 leaves only after both before it */
    ASSERT_STR_EQ(h.log, "r2 r1 w10 r3 r4");
    ASSERT_INT_EQ(op_size(&h.o), 0);
    op_free(&h.o);
}

/* When a watermark leaves, the next segment's completed records leave if
 * they are first of their key; the others wait for their key. */
static void test_keyed_watermark_releases_only_firsts_of_their_key(void)
{
    harness h;
    setup(&h, OP_KEYED, 10, 0);
    pushk(&h, 9);                          /* 1: segment 0 */
    ASSERT_INT_EQ(op_push_watermark(&h.o, 5), 0);
    pushk(&h, 1);                          /* 2: a, pending */
    pushk(&h, 1);                          /* 3: a, done: waits for 2 */
    pushk(&h, 2);                          /* 4: b, done: first of b */
    done(&h, 3);
    done(&h, 4);
    ASSERT_STR_EQ(h.log, "");
    done(&h, 1);
    ASSERT_STR_EQ(h.log, "r1 w5 r4");
    done(&h, 2);
    ASSERT_STR_EQ(h.log, "r1 w5 r4 r2 r3");
    op_free(&h.o);
}

/* A key's records on both sides of a watermark: the later one waits for
 * the watermark even when its key's earlier record has left. */
static void test_keyed_key_across_a_watermark_waits_for_it(void)
{
    harness h;
    setup(&h, OP_KEYED, 10, 0);
    pushk(&h, 1);                          /* 1: a */
    pushk(&h, 2);                          /* 2: b, slow */
    ASSERT_INT_EQ(op_push_watermark(&h.o, 5), 0);
    pushk(&h, 1);                          /* 3: a */
    done(&h, 3);
    done(&h, 1);
    ASSERT_STR_EQ(h.log, "r1");            /* 3 is first of a now, but behind w5 */
    done(&h, 2);
    ASSERT_STR_EQ(h.log, "r1 r2 w5 r3");
    op_free(&h.o);
}

static void test_keyed_capacity_counts_held_records_and_watermarks(void)
{
    harness h;
    setup(&h, OP_KEYED, 3, 0);
    pushk(&h, 1);
    pushk(&h, 1);
    ASSERT_INT_EQ(op_push_watermark(&h.o, 1), 0);
    ASSERT(op_full(&h.o));
    op_entry *e;
    ASSERT_INT_EQ(op_push_keyed(&h.o, 2, 9, 0, NULL, &e), OP_EFULL);
    ASSERT_INT_EQ(op_push_watermark(&h.o, 2), OP_EFULL);
    done(&h, 2);                           /* held behind its key's 1: keeps its slot */
    ASSERT(op_full(&h.o));
    done(&h, 1);
    ASSERT_STR_EQ(h.log, "r1 r2 w1");
    ASSERT(!op_full(&h.o));
    op_free(&h.o);
}

static void test_keyed_capacity_one(void)
{
    harness h;
    setup(&h, OP_KEYED, 1, 0);
    pushk(&h, 1);
    ASSERT(op_full(&h.o));
    done(&h, 1);
    pushk(&h, 2);
    done(&h, 2);
    ASSERT_STR_EQ(h.log, "r1 r2");
    op_free(&h.o);
}

/* The timeout of a key's first record releases its successors, in order;
 * other keys are not held by it. */
static void test_keyed_timeout_of_a_keys_head_releases_its_successors(void)
{
    harness h;
    setup(&h, OP_KEYED, 10, 100);
    h.timeout_policy = 1;
    pushk(&h, 1);                          /* 1: a, will time out */
    h.clock = 10;
    pushk(&h, 1);                          /* 2: a */
    pushk(&h, 2);                          /* 3: b */
    pushk(&h, 1);                          /* 4: a */
    done(&h, 4);
    done(&h, 3);
    done(&h, 2);
    ASSERT_STR_EQ(h.log, "r3");
    h.clock = 100;
    ASSERT_INT_EQ(op_expire(&h.o), 1);
    ASSERT_STR_EQ(h.log, "r3 r1T r2 r4");
    op_free(&h.o);
}

/* A record in back-off keeps its place in its key's order. */
static void test_keyed_retry_keeps_key_order(void)
{
    harness h;
    setup(&h, OP_KEYED, 10, 0);
    op_retry_policy p = fixed(3, 50);
    h.policy = &p;
    op_entry *e1 = pushk(&h, 1);           /* 1: a */
    pushk(&h, 1);                          /* 2: a */
    pushk(&h, 2);                          /* 3: b */
    ASSERT_INT_EQ(op_retry(&h.o, e1), 0);
    done(&h, 2);
    done(&h, 3);
    ASSERT_STR_EQ(h.log, "r3");            /* b does not wait for a's retry */
    h.clock = 50;
    op_expire(&h.o);
    ASSERT_STR_EQ(h.log, "r3 a1.2");
    done(&h, 1);
    ASSERT_STR_EQ(h.log, "r3 a1.2 r1 r2");
    op_free(&h.o);
}

/* A failed record is reported when it reaches the head of the queue; its
 * key's later records wait, other keys overtake it meanwhile. */
static void test_keyed_failure_reported_at_the_head(void)
{
    harness h;
    setup(&h, OP_KEYED, 10, 0);
    pushk(&h, 1);                          /* 1: a, slow */
    op_entry *e2 = pushk(&h, 2);           /* 2: b, fails */
    pushk(&h, 2);                          /* 3: b */
    pushk(&h, 3);                          /* 4: c */
    ASSERT_INT_EQ(op_fail(&h.o, e2, "boom"), 0);
    done(&h, 3);
    done(&h, 4);
    ASSERT_STR_EQ(h.log, "r4");
    done(&h, 1);
    ASSERT_STR_EQ(h.log, "r4 r1 F2:boom");
    ASSERT(op_failed(&h.o));
    op_free(&h.o);
    ASSERT_INT_EQ(h.released, 4);
}

/* Restored entries keep their keys: a completed one waits for its key's
 * earlier pending one, and leaves at once when first of its key. */
static void test_keyed_restore_completed_and_pending(void)
{
    harness h;
    setup(&h, OP_KEYED, 3, 0);
    op_entry *e;
    ASSERT_INT_EQ(op_restore_keyed(&h.o, 1, 4, 40, 2, 0, NULL, &e), 0);          /* a, pending */
    h.by_seq[4] = e;
    ASSERT_INT_EQ(op_restore_completed_keyed(&h.o, 1, 5, 50, 1, 0, strdup("A"), 1, NULL, 0, NULL, NULL), 0);
    ASSERT_INT_EQ(op_restore_completed_keyed(&h.o, 2, 6, 60, 1, 0, strdup("B"), 1, NULL, 0, NULL, NULL), 0);
    ASSERT_STR_EQ(h.log, "r6B");           /* b is first of its key: leaves at once */
    op_restore_done(&h.o, 7);
    ASSERT_INT_EQ(e->attempt, 2);
    ASSERT_INT_EQ(op_size(&h.o), 2);       /* 4 and 5 */
    ASSERT_UINT_EQ(pushk(&h, 1)->seq, 7); /* a, after the restored ones */
    done(&h, 7);
    ASSERT_STR_EQ(h.log, "r6B");
    done(&h, 4);
    ASSERT_STR_EQ(h.log, "r6B r4 r5A r7");
    op_free(&h.o);
}

/* Two keys whose hashes collide are one key: their order is joined, never
 * lost. */
static void test_keyed_hash_collision_only_adds_order(void)
{
    harness h;
    setup(&h, OP_KEYED, 10, 0);
    pushk(&h, 42);                         /* 1: "x", hash 42 */
    pushk(&h, 42);                         /* 2: "y", also hash 42 */
    done(&h, 2);
    ASSERT_STR_EQ(h.log, "");
    done(&h, 1);
    ASSERT_STR_EQ(h.log, "r1 r2");
    op_free(&h.o);
}

/* Re-entrancy: completing a key's next record from the callbacks of its
 * predecessor's emission emits it once, in order. */
static void test_keyed_successor_completed_during_emission_leaves_once(void)
{
    harness h;
    setup(&h, OP_KEYED, 10, 0);
    pushk(&h, 1);
    pushk(&h, 1);
    pushk(&h, 1);
    h.complete_on_release = 2;             /* record 1's release completes 2 */
    done(&h, 1);
    ASSERT_STR_EQ(h.log, "r1 r2");
    done(&h, 3);
    ASSERT_STR_EQ(h.log, "r1 r2 r3");
    ASSERT_INT_EQ(h.o.stats.records_out, 3);
    op_free(&h.o);
}

/* A record pushed without a key (a malformed line) shares the one "no key"
 * key with them. */
static void test_keyed_records_without_key_share_one_key(void)
{
    harness h;
    setup(&h, OP_KEYED, 10, 0);
    push(&h);                              /* 1: no key */
    pushk(&h, OP_NO_KEY);                  /* 2: no key */
    pushk(&h, 5);                          /* 3 */
    done(&h, 2);
    done(&h, 3);
    ASSERT_STR_EQ(h.log, "r3");
    done(&h, 1);
    ASSERT_STR_EQ(h.log, "r3 r1 r2");
    op_free(&h.o);
}

static uint64_t lcg(uint64_t *s)
{
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return *s >> 33;
}

/* 10,000 keys, 50,000 records with watermarks among them, completed in a
 * scrambled order: every record leaves exactly once, per key in input
 * order, never across a watermark; the key map ends empty. */
static void test_keyed_many_keys_random_completion(void)
{
    enum { N = 50000, KEYS = 10000, WM_EVERY = 997 };
    harness h;
    setup(&h, OP_KEYED, N + N / WM_EVERY + 1, 0);
    uint64_t *emitted = calloc(N, sizeof *emitted), *keyof = calloc(N + 1, sizeof *keyof);
    uint64_t *order = calloc(N, sizeof *order), *segof = calloc(N + 1, sizeof *segof);
    op_entry **by = calloc(N + 1, sizeof *by);
    ASSERT(emitted && keyof && order && by && segof);
    h.emitted = emitted;
    uint64_t rs = 1, seg = 0;
    for (uint64_t i = 1; i <= N; i++) {
        /* keys that differ in their high bits only: the map must spread them */
        keyof[i] = (lcg(&rs) % KEYS) << 40;
        ASSERT_INT_EQ(op_push_keyed(&h.o, keyof[i], i, 0, NULL, &by[i]), 0);
        segof[i] = seg;
        if (i % WM_EVERY == 0) {
            ASSERT_INT_EQ(op_push_watermark(&h.o, (int64_t)i), 0);
            seg++;
        }
    }
    for (uint64_t i = 0; i < N; i++)
        order[i] = i + 1;
    for (uint64_t i = N - 1; i > 0; i--) {
        uint64_t j = lcg(&rs) % (i + 1), t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    for (uint64_t i = 0; i < N; i++)
        ASSERT_INT_EQ(op_complete(&h.o, by[order[i]], NULL, 0), 0);
    ASSERT_INT_EQ(h.nemitted, N);
    ASSERT_INT_EQ(op_size(&h.o), 0);
    ASSERT_INT_EQ(h.o.keys.len, 0);
    uint64_t *last = calloc(KEYS, sizeof *last);
    char *seen = calloc(N + 1, 1);
    int overtook = 0;
    for (size_t i = 0; i < N; i++) {
        uint64_t s = emitted[i], k = keyof[s] >> 40;
        ASSERT(!seen[s]);
        seen[s] = 1;
        ASSERT(last[k] < s);               /* per key: input order */
        last[k] = s;
        if (i > 0)
            ASSERT(segof[emitted[i - 1]] <= segof[s]); /* never across a watermark */
        overtook |= s != i + 1;
    }
    ASSERT(overtook);
    free(last);
    free(seen);
    free(emitted);
    free(keyof);
    free(order);
    free(segof);
    free(by);
    op_free(&h.o);
}

/* The key map itself: random puts and deletes against a reference, many
 * keys sharing a home slot (backward-shift deletion must keep each one
 * reachable). */
static void test_keymap_matches_a_reference(void)
{
    enum { K = 4096 };
    keymap m = { 0 };
    static void *ref[K];
    uint64_t rs = 7;
    for (int round = 0; round < 200000; round++) {
        uint64_t k = lcg(&rs) % K;
        if (lcg(&rs) % 3) {
            void *v = (void *)(uintptr_t)(round + 1);
            ASSERT_INT_EQ(keymap_put(&m, k, v), 0);
            ref[k] = v;
        } else {
            keymap_del(&m, k);
            ref[k] = NULL;
        }
    }
    size_t n = 0;
    for (uint64_t k = 0; k < K; k++) {
        ASSERT(keymap_get(&m, k) == ref[k]);
        n += ref[k] != NULL;
    }
    ASSERT_INT_EQ(m.len, n);
    ASSERT(m.cap >= 2 * m.len);
    keymap_free(&m);
}

/* Capacity set at run time (adaptive capacity): lowering it below the
 * queue's size cancels nothing and only stops intake until enough have
 * left; raising it lets more in at once; a restore still goes beyond. */
static void test_capacity_changes_at_run_time(void)
{
    harness h;
    setup(&h, OP_UNORDERED, 4, 0);
    for (int i = 0; i < 4; i++)
        push(&h);
    op_set_capacity(&h.o, 2);
    ASSERT_UINT_EQ(op_capacity(&h.o), 2);
    ASSERT(op_full(&h.o));
    ASSERT_INT_EQ(op_size(&h.o), 4); /* nothing cancelled */
    done(&h, 1);
    done(&h, 2);
    ASSERT(op_full(&h.o));           /* 2 queued, capacity 2 */
    done(&h, 3);
    ASSERT(!op_full(&h.o));
    push(&h);
    ASSERT(op_full(&h.o));
    op_set_capacity(&h.o, 5);
    for (int i = 0; i < 3; i++)
        push(&h);
    ASSERT(op_full(&h.o));
    ASSERT_INT_EQ(op_size(&h.o), 5);
    ASSERT_STR_EQ(h.log, "r1 r2 r3");
    op_set_capacity(&h.o, 0);
    ASSERT_UINT_EQ(op_capacity(&h.o), 1);
    ASSERT_INT_EQ(op_restore_record(&h.o, 99, 99, 1, 0, NULL, NULL), 0);
    ASSERT_INT_EQ(op_size(&h.o), 6);
    op_free(&h.o);
}

static void setup_gated(harness *h, op_mode mode, size_t cap, uint64_t timeout, uint64_t every)
{
    setup(h, mode, cap, timeout);
    h->o.cb.gate = cb_gate;
    h->token_every = every;
}

/* Two back-offs end at 100 with one token there: the second waits for
 * the next token (at 150), keeping its slot; attempts are counted when
 * they start, not when they are refused. */
static void test_gate_puts_off_a_retry_until_a_token(void)
{
    harness h;
    setup_gated(&h, OP_ORDERED, 4, 0, 50);
    op_retry_policy p = fixed(3, 100);
    h.policy = &p;
    op_entry *e1 = push(&h), *e2 = push(&h);
    ASSERT_INT_EQ(op_retry(&h.o, e1), 0);
    ASSERT_INT_EQ(op_retry(&h.o, e2), 0);
    h.clock = 100;
    op_expire(&h.o);
    ASSERT_STR_EQ(h.log, "a1.2");
    ASSERT_UINT_EQ(op_next_deadline(&h.o), 150);
    ASSERT_INT_EQ(h.o.stats.gated, 1);
    ASSERT_INT_EQ(h.o.stats.attempts, 3);
    ASSERT_INT_EQ(e2->in_backoff, 1);
    h.clock = 149;
    op_expire(&h.o);
    ASSERT_STR_EQ(h.log, "a1.2");
    h.clock = 150;
    op_expire(&h.o);
    ASSERT_STR_EQ(h.log, "a1.2 a2.2");
    ASSERT_INT_EQ(op_backoffs(&h.o), 0);
    op_free(&h.o);
}

/* Waiting for a token is charged to a started record's budget: the
 * deadline comes first, the timeout fires, no attempt starts. */
static void test_gate_wait_is_charged_and_timeout_wins(void)
{
    harness h;
    setup_gated(&h, OP_ORDERED, 4, 120, 1000);
    h.timeout_policy = 1;
    op_retry_policy p = fixed(5, 10);
    h.policy = &p;
    h.token_at = 500; /* no token before 500 */
    op_entry *e = push(&h);
    ASSERT_INT_EQ(op_retry(&h.o, e), 0);
    h.clock = 10;
    op_expire(&h.o);
    ASSERT_STR_EQ(h.log, "");
    ASSERT_UINT_EQ(op_next_deadline(&h.o), 120); /* the deadline, before the token at 500 */
    h.clock = 120;
    op_expire(&h.o);
    ASSERT_STR_EQ(h.log, "r1T");
    ASSERT_INT_EQ(h.o.stats.retries, 0);
    op_free(&h.o);
}

/* End of input starts waiting back-offs at once, but not past the gate. */
static void test_gate_holds_retry_all_now(void)
{
    harness h;
    setup_gated(&h, OP_ORDERED, 4, 0, 100);
    op_retry_policy p = fixed(3, 1000);
    h.policy = &p;
    op_entry *e1 = push(&h), *e2 = push(&h);
    ASSERT_INT_EQ(op_retry(&h.o, e1), 0);
    ASSERT_INT_EQ(op_retry(&h.o, e2), 0);
    h.clock = 5;
    op_retry_all_now(&h.o);
    ASSERT_INT_EQ(h.retries_started, 1);
    ASSERT_UINT_EQ(op_next_deadline(&h.o), 105);
    h.clock = 105;
    op_expire(&h.o);
    ASSERT_INT_EQ(h.retries_started, 2);
    op_free(&h.o);
}

/* A gate that answers "now" for a refusal does not spin op_expire: the
 * record is put off to the next ms. */
static uint64_t cb_gate_now(void *ud)
{
    harness *h = ud;
    if (++h->gate_calls > 100)
        FAILF("op_expire asked the gate 100 times for one due back-off (it spins)");
    return h->clock;
}

static void test_gate_refusal_moves_at_least_a_ms(void)
{
    harness h;
    setup(&h, OP_ORDERED, 4, 0);
    h.o.cb.gate = cb_gate_now;
    op_retry_policy p = fixed(3, 10);
    h.policy = &p;
    op_entry *e = push(&h);
    ASSERT_INT_EQ(op_retry(&h.o, e), 0);
    h.clock = 10;
    op_expire(&h.o);
    ASSERT_INT_EQ(h.gate_calls, 1);
    ASSERT_UINT_EQ(op_next_deadline(&h.o), 11);
    op_free(&h.o);
}

/* A restored record that found no token waits at its own attempt: it
 * starts as attempt 2 (not 3), and a checkpoint meanwhile stores 2. */
static void test_delay_start_keeps_the_attempt(void)
{
    harness h;
    setup_gated(&h, OP_ORDERED, 4, 0, 100);
    h.token_at = 40;
    op_entry *e = NULL;
    ASSERT_INT_EQ(op_restore_record(&h.o, 1, 1, 2, 0, NULL, &e), 0);
    ASSERT_INT_EQ(op_delay_start(&h.o, e, 40), 0);
    ASSERT_INT_EQ(op_resume_attempt(e), 2);
    ASSERT_INT_EQ(op_delay_start(&h.o, e, 40), OP_ELATE);
    h.clock = 40;
    op_expire(&h.o);
    ASSERT_STR_EQ(h.log, "a1.2");
    ASSERT_INT_EQ(h.o.stats.retries, 0);
    ASSERT_INT_EQ(h.o.stats.attempts, 2);
    /* And a real back-off after it resumes at the next attempt. */
    op_retry_policy p = fixed(3, 10);
    e->policy = &p;
    ASSERT_INT_EQ(op_retry(&h.o, e), 0);
    ASSERT_INT_EQ(op_resume_attempt(e), 3);
    op_free(&h.o);
}

/* Many back-offs held by the gate: one refusal holds them all (the gate is
 * asked once per op_expire, not once per record), and they start in the
 * order their back-offs ended, one per token. */
static void test_gate_holds_many_and_keeps_their_order(void)
{
    harness h;
    setup_gated(&h, OP_UNORDERED, 300, 0, 50);
    op_retry_policy p = fixed(3, 100);
    h.policy = &p;
    h.token_at = 1000; /* no token before 1000 */
    op_entry *e[201];
    for (int i = 1; i <= 200; i++)
        e[i] = push(&h);
    /* Back-offs end in the order 200, 199, ..., 1. */
    for (int i = 200; i >= 1; i--) {
        ASSERT_INT_EQ(op_retry(&h.o, e[i]), 0);
        h.clock++;
    }
    h.clock = 999;
    op_expire(&h.o);
    ASSERT_INT_EQ(h.gate_calls, 1);
    ASSERT_UINT_EQ(op_next_deadline(&h.o), 1000);
    op_expire(&h.o); /* still held: the gate is not asked again */
    ASSERT_INT_EQ(h.gate_calls, 1);
    h.clock = 1000;
    op_expire(&h.o);
    h.clock = 1050;
    op_expire(&h.o);
    h.clock = 1100;
    op_expire(&h.o);
    ASSERT_STR_EQ(h.log, "a200.2 a199.2 a198.2");
    ASSERT_INT_EQ(h.gate_calls, 7); /* 1 + (a token, a refusal) x 3 */
    ASSERT_UINT_EQ(op_next_deadline(&h.o), 1150);
    ASSERT_INT_EQ(op_backoffs(&h.o), 197);
    op_free(&h.o);
}

/* Without a gate nothing changes (the NULL callback). */
static void test_no_gate_starts_every_due_retry(void)
{
    harness h;
    setup(&h, OP_UNORDERED, 4, 0);
    op_retry_policy p = fixed(3, 10);
    h.policy = &p;
    op_entry *e1 = push(&h), *e2 = push(&h);
    ASSERT_INT_EQ(op_retry(&h.o, e1), 0);
    ASSERT_INT_EQ(op_retry(&h.o, e2), 0);
    h.clock = 10;
    op_expire(&h.o);
    ASSERT_STR_EQ(h.log, "a1.2 a2.2");
    ASSERT_INT_EQ(h.o.stats.gated, 0);
    op_free(&h.o);
}

TEST_MAIN("op",
          T(test_capacity_changes_at_run_time),
          T(test_ordered_emits_in_input_order),
          T(test_ordered_watermark_between_neighbours),
          T(test_watermark_with_nothing_pending_leaves_at_once),
          T(test_unordered_emits_on_completion),
          T(test_unordered_watermark_is_a_barrier_both_ways),
          T(test_unordered_segment_completion_order_within_segment),
          T(test_capacity_counts_records_watermarks_and_held),
          T(test_unordered_capacity_held_behind_watermark),
          T(test_timeout_fires_at_deadline_and_fails),
          T(test_timeout_handler_result_is_emitted),
          T(test_first_completion_wins_over_timeout),
          T(test_late_result_after_timeout_is_ignored),
          T(test_timeout_without_decision_fails_record),
          T(test_timeouts_fire_in_deadline_order_with_used_budget),
          T(test_timeout_races_completion_same_tick),
          T(test_failure_reported_after_earlier_records),
          T(test_unordered_failure_waits_for_earlier_but_not_later),
          T(test_push_failed_is_reported_in_turn),
          T(test_emit_callback_may_complete_others),
          T(test_many_records_random_completion_ordered),
          T(test_op_free_releases_everything),
          T(test_wmgen_event_time_rule),
          T(test_retry_delay_schedules),
          T(test_retry_parse_flag_forms),
          T(test_retry_keeps_slot_and_order),
          T(test_retry_no_strategy_is_exhausted),
          T(test_timeout_during_backoff_wins),
          T(test_retry_due_at_the_deadline_instant_loses),
          T(test_retry_then_timeout_during_attempt),
          T(test_no_retry_after_the_deadline),
          T(test_retry_all_now_at_end_of_input),
          T(test_retry_all_now_leaves_new_backoffs_waiting),
          T(test_unordered_watermark_waits_for_retried_record),
          T(test_dead_letter_completion_leaves_in_turn),
          T(test_restore_completed_emits_in_turn_without_invoking),
          T(test_restore_completed_at_the_head_leaves_at_once),
          T(test_second_completion_of_held_record_is_late),
          T(test_fail_after_completion_of_held_record_is_late),
          T(test_completion_after_failure_of_held_record_is_late),
          T(test_timeout_during_backoff_drops_the_retry_before_the_callback),
          T(test_times_are_readings_of_the_callers_clock),
          T(test_failed_operator_accepts_nothing),
          T(test_retry_of_completed_or_waiting_record_is_late),
          T(test_retry_none_or_after_timeout_is_exhausted),
          T(test_capacity_zero_is_one),
          T(test_keyed_same_key_leaves_in_input_order),
          T(test_keyed_different_keys_overtake),
          T(test_keyed_watermark_is_a_barrier_both_ways),
          T(test_keyed_watermark_releases_only_firsts_of_their_key),
          T(test_keyed_key_across_a_watermark_waits_for_it),
          T(test_keyed_capacity_counts_held_records_and_watermarks),
          T(test_keyed_capacity_one),
          T(test_keyed_timeout_of_a_keys_head_releases_its_successors),
          T(test_keyed_retry_keeps_key_order),
          T(test_keyed_failure_reported_at_the_head),
          T(test_keyed_restore_completed_and_pending),
          T(test_keyed_hash_collision_only_adds_order),
          T(test_keyed_successor_completed_during_emission_leaves_once),
          T(test_keyed_records_without_key_share_one_key),
          T(test_keyed_many_keys_random_completion),
          T(test_keymap_matches_a_reference),
          T(test_gate_puts_off_a_retry_until_a_token),
          T(test_gate_wait_is_charged_and_timeout_wins),
          T(test_gate_holds_retry_all_now),
          T(test_gate_refusal_moves_at_least_a_ms),
          T(test_delay_start_keeps_the_attempt),
          T(test_gate_holds_many_and_keeps_their_order),
          T(test_no_gate_starts_every_due_retry))
