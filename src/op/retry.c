/* retry.c: retry strategies (contract in retry.h). */
#include "retry.h"

#include "../util/str.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

uint64_t op_retry_delay(const op_retry_policy *p, uint32_t done_attempt, double rnd)
{
    double d;
    switch (p->backoff) {
    case RETRY_FIXED:
        d = (double)p->delay_ms;
        break;
    case RETRY_EXPONENTIAL: {
        double exp = done_attempt > 0 ? (double)(done_attempt - 1) : 0;
        d = (double)p->initial_ms * pow(p->multiplier, exp);
        if (d > (double)p->max_ms || !isfinite(d))
            d = (double)p->max_ms;
        break;
    }
    default:
        return 0;
    }
    if (p->jitter_full)
        d = floor(d * (rnd < 0 ? 0 : rnd >= 1 ? 1 : rnd));
    return (uint64_t)d;
}

int op_retry_validate(const op_retry_policy *p, char *err, size_t n)
{
    return retry_policy_check(p, err, n);
}

int op_retry_parse(const char *spec, op_retry_policy *p, char *err, size_t n)
{
    memset(p, 0, sizeof *p);
    p->set = 1;
    p->max_attempts = 1;
    char buf[128];
    if (strlen(spec) >= sizeof buf) {
        snprintf(err, n, "too long");
        return -1;
    }
    strcpy(buf, spec);
    char *parts[7] = { 0 };
    int k = 0;
    for (char *s = buf, *c; k < 7; s = c + 1) {
        parts[k++] = s;
        c = strchr(s, ':');
        if (!c)
            break;
        *c = 0;
    }
    uint64_t a, b, c;
    if (strcmp(parts[0], "none") == 0 && k == 1) {
        p->backoff = RETRY_NONE;
        return 0;
    }
    if (strcmp(parts[0], "fixed") == 0 && k == 3 && mw_str_u64(parts[1], 1000000, &a) == 0 &&
        mw_str_u64(parts[2], (uint64_t)1 << 40, &b) == 0 && a >= 1) {
        p->backoff = RETRY_FIXED;
        p->max_attempts = (uint32_t)a;
        p->delay_ms = b;
        return 0;
    }
    if (strcmp(parts[0], "exponential") == 0 && (k == 5 || k == 6) && mw_str_u64(parts[1], 1000000, &a) == 0 &&
        mw_str_u64(parts[2], (uint64_t)1 << 40, &b) == 0 && mw_str_u64(parts[3], (uint64_t)1 << 40, &c) == 0 && a >= 1) {
        char *end;
        double m = strtod(parts[4], &end);
        if (*end || !(m >= 1.0)) {
            snprintf(err, n, "MULTIPLIER must be a number >= 1, got '%s'", parts[4]);
            return -1;
        }
        if (k == 6 && strcmp(parts[5], "full") != 0 && strcmp(parts[5], "none") != 0) {
            snprintf(err, n, "the jitter must be 'full' or 'none', got '%s'", parts[5]);
            return -1;
        }
        p->backoff = RETRY_EXPONENTIAL;
        p->max_attempts = (uint32_t)a;
        p->initial_ms = b;
        p->max_ms = c;
        p->multiplier = m;
        p->jitter_full = k == 6 && strcmp(parts[5], "full") == 0;
        return op_retry_validate(p, err, n);
    }
    snprintf(err, n, "expected none, fixed:ATTEMPTS:DELAY_MS or "
                     "exponential:ATTEMPTS:INITIAL_MS:MAX_MS:MULTIPLIER[:full], got '%s'", spec);
    return -1;
}
