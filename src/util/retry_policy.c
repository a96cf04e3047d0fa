/* retry_policy.c: the rules of a retry policy's fields (contract in retry_policy.h). */
#include "retry_policy.h"

#include <math.h>
#include <stdio.h>

int retry_policy_check(const retry_policy *p, char *err, size_t n)
{
    if (p->backoff == RETRY_NONE)
        return 0;
    if (p->max_attempts < 1) {
        snprintf(err, n, "max_attempts must be at least 1");
        return -1;
    }
    if (p->backoff == RETRY_EXPONENTIAL) {
        if (!(p->multiplier >= 1.0) || !isfinite(p->multiplier)) {
            snprintf(err, n, "multiplier must be a number >= 1");
            return -1;
        }
        if (p->max_ms < p->initial_ms) {
            snprintf(err, n, "max_delay_ms must be >= initial_delay_ms");
            return -1;
        }
    }
    return 0;
}
