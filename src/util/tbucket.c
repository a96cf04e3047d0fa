/*
 * tbucket.c: the token bucket (contract in tbucket.h).
 *
 * The balance is a double brought up to date lazily: each call first adds
 * (now - last) * rate / 1e9 tokens, capped at burst. A double has 53 bits:
 * at 1e6 tokens/s and a burst of 1e6, the error of one refill is about
 * 1e-13 token, so EPS absorbs what rounding loses ("0.9999999999 tokens"
 * counts as one) without ever handing out a token early by more than that.
 */
#include "tbucket.h"

#include <math.h>

#define EPS 1e-11

static void refill(tbucket *b, uint64_t now_ns)
{
    if (now_ns <= b->last_ns) /* (a clock read twice in one instant) */
        return;
    double add = (double)(now_ns - b->last_ns) * b->rate / 1e9;
    b->tokens = b->tokens + add > b->burst ? b->burst : b->tokens + add;
    b->last_ns = now_ns;
}

void tbucket_init(tbucket *b, double rate, double burst, uint64_t now_ns)
{
    b->rate = rate;
    b->burst = burst;
    b->tokens = burst;
    b->last_ns = now_ns;
    b->taken = b->waits = 0;
}

void tbucket_set(tbucket *b, double rate, double burst, uint64_t now_ns)
{
    refill(b, now_ns);
    b->rate = rate;
    b->burst = burst;
    if (b->tokens > burst)
        b->tokens = burst;
}

/* ns until the balance reaches n, from an up-to-date balance. */
static uint64_t until(const tbucket *b, double n)
{
    double need = n - b->tokens;
    if (need <= EPS)
        return 0;
    double ns = ceil(need * 1e9 / b->rate);
    return ns >= 1.8e19 ? UINT64_MAX : (uint64_t)ns;
}

int tbucket_take(tbucket *b, double n, uint64_t now_ns)
{
    refill(b, now_ns);
    if (b->tokens + EPS < n) {
        b->waits++;
        return 0;
    }
    b->tokens -= n;
    b->taken += (uint64_t)n;
    return 1;
}

uint64_t tbucket_wait_ns(tbucket *b, double n, uint64_t now_ns)
{
    refill(b, now_ns);
    return until(b, n);
}

uint64_t tbucket_reserve(tbucket *b, double n, uint64_t now_ns)
{
    refill(b, now_ns);
    uint64_t wait = until(b, n);
    if (wait)
        b->waits++;
    b->tokens -= n;
    b->taken += (uint64_t)n;
    /* Covered when the debt is paid: the time until the balance is 0. */
    return wait ? until(b, 0) : 0;
}

void tbucket_give(tbucket *b, double n, uint64_t now_ns)
{
    refill(b, now_ns);
    b->tokens = b->tokens + n > b->burst ? b->burst : b->tokens + n;
    b->taken -= b->taken >= (uint64_t)n ? (uint64_t)n : b->taken;
}

double tbucket_tokens(tbucket *b, uint64_t now_ns)
{
    refill(b, now_ns);
    return b->tokens;
}
