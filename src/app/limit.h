/*
 * limit.h: the pipeline's rate limit (`rate_limit`, --rate-limit): a token
 * bucket (util/tbucket.c) on the loop's fine clock (uv_hrtime, ns) that
 * every attempt's start takes one token from: a record's first attempt
 * (the pump asks before it reads a line; task.c takes the token when the
 * attempt starts), a retry (the operator's cb.gate), a record restored from
 * a checkpoint.
 *
 * Waiting for a first attempt's token is not charged to the record: the
 * pump does not read the line until the token is there, so the record's
 * budget has not begun; intake pauses (one timer for the next token) and
 * backpressure does the rest. A retry or a restored record has started, so
 * its wait is charged to its budget. Watermark, blank and malformed lines
 * take no token.
 *
 * Owned by the run (run_int.h); without a limit every call here is a no-op
 * that says "go".
 */
#ifndef MW_LIMIT_H
#define MW_LIMIT_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "../util/tbucket.h"

typedef struct limit {
    int on;                 /* a rate limit is set */
    tbucket b;
    uv_timer_t timer;       /* wakes the pump when the next token arrives */
    int timer_made;
    uint64_t pauses;        /* times intake paused for a token */
    void (*wake)(void *ud); /* the pump */
    void *ud;
} limit;

/* No limit when rps is 0. Makes the timer when there is one. */
void limit_init(limit *l, uv_loop_t *loop, double rps, double burst, void (*wake)(void *ud), void *ud);

/* The pump asks before it reads a line: 1 when a token is there now (not
 * taken), else 0 with the timer armed to call wake when one is. */
int limit_ready(limit *l);

/* A first attempt starts: take its token (into debt if another start took
 * it meanwhile, so a start is never refused). */
void limit_take(limit *l);

/* A started record's next attempt (a retry, a restored record) may start:
 * 0 when a token was taken, else the time on the operator's clock (now_ms)
 * to ask again: the operator's cb.gate. */
uint64_t limit_gate(limit *l, uint64_t now_ms);

/* `room` capped at the tokens there now (at least 1): what a broker may
 * fetch ahead. */
size_t limit_room(limit *l, size_t room);

/* Close the timer (the run's end). */
void limit_close(limit *l);

#endif
