/*
 * tbucket.h: a token bucket on the caller's clock (plain C: no libuv, no
 * Lua). Tokens arrive at `rate` per second, up to `burst`; the bucket
 * starts full. Time is nanoseconds from an arbitrary origin (moonwait
 * passes uv_hrtime; spec/c/test_tbucket.c a manual clock), so very high
 * rates (1e6/s: one token per microsecond) stay exact where whole
 * milliseconds would round them away.
 *
 * Two ways to take:
 *  - tbucket_take: a token now or none (the pump, a retry's start); with
 *    none, tbucket_wait_ns says how long until there is one.
 *  - tbucket_reserve: take now even into debt (the balance goes negative)
 *    and be told how long until the tokens really are there: a waiter
 *    sleeps that long, and waiters are served in the order they came.
 *    tbucket_give undoes a reservation whose waiter was abandoned.
 *
 * Used by src/app/limit.c (the pipeline's rate_limit) and
 * src/lua/mod_limit.c (moonwait.limit).
 */
#ifndef MW_TBUCKET_H
#define MW_TBUCKET_H

#include <stdint.h>

typedef struct tbucket {
    double rate;      /* tokens per second, > 0 */
    double burst;     /* most tokens held, >= 1 */
    double tokens;    /* the balance at last_ns; negative while reserved ahead */
    uint64_t last_ns; /* when tokens was brought up to date */
    uint64_t taken;   /* tokens handed out (reserved ones included) */
    uint64_t waits;   /* takes that found too few tokens */
} tbucket;

/* A full bucket at now_ns. rate > 0, burst >= 1 (the caller checked). */
void tbucket_init(tbucket *b, double rate, double burst, uint64_t now_ns);

/* New rate and burst from now_ns on: what arrived so far at the old rate
 * is kept (capped at the new burst); counters stay. */
void tbucket_set(tbucket *b, double rate, double burst, uint64_t now_ns);

/* Take n tokens if they are there at now_ns: 1, else 0 (nothing taken,
 * `waits` counted). */
int tbucket_take(tbucket *b, double n, uint64_t now_ns);

/* Nanoseconds from now_ns until n tokens are there (0: now). Takes
 * nothing. */
uint64_t tbucket_wait_ns(tbucket *b, double n, uint64_t now_ns);

/* Take n tokens at now_ns, into debt if need be; returns the nanoseconds
 * until they are covered (0: they were there). */
uint64_t tbucket_reserve(tbucket *b, double n, uint64_t now_ns);

/* Give back n tokens of a reservation not used (capped at burst). */
void tbucket_give(tbucket *b, double n, uint64_t now_ns);

/* The balance at now_ns (negative while reserved ahead). */
double tbucket_tokens(tbucket *b, uint64_t now_ns);

#endif
