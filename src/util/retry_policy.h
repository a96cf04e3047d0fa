/*
 * retry_policy.h: what a retry strategy is (Flink's AsyncRetryStrategy),
 * as plain data, and the rules its fields obey. Shared by the operator
 * (src/op/retry.c schedules the attempts) and the Lua adapter
 * (src/lua/retry_table.c reads one from a table), neither of which
 * includes the other.
 *
 * max_attempts counts every call, the first included: max_attempts = 3 means
 * at most 3 calls.
 */
#ifndef MW_RETRY_POLICY_H
#define MW_RETRY_POLICY_H

#include <stddef.h>
#include <stdint.h>

typedef enum { RETRY_NONE = 0, RETRY_FIXED, RETRY_EXPONENTIAL } retry_backoff;

typedef struct retry_policy {
    int set;                /* configured at all (so "none" can override) */
    retry_backoff backoff;
    uint32_t max_attempts;  /* >= 1; 1 = no retries */
    uint64_t delay_ms;      /* fixed */
    uint64_t initial_ms;    /* exponential */
    uint64_t max_ms;
    double multiplier;      /* >= 1 */
    int jitter_full;
} retry_policy;

/* Check the fields of a policy (max_attempts >= 1; for exponential, a
 * finite multiplier >= 1 and max_ms >= initial_ms). 0, or -1 with a
 * message naming the field in err. */
int retry_policy_check(const retry_policy *p, char *err, size_t errlen);

#endif
