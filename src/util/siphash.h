/*
 * siphash.h: SipHash-1-3 (Aumasson and Bernstein; one compression round,
 * three finalization rounds, as Rust's and Python's hash tables use) and
 * splitmix64, the process's keyed hashes for tables whose keys come from
 * input: the LRU store (util/lru.c) and keyed mode's record keys
 * (lua/record.c). With a secret key, input cannot choose collisions.
 */
#ifndef MW_SIPHASH_H
#define MW_SIPHASH_H

#include <stddef.h>
#include <stdint.h>

/* SipHash-1-3 of p[0..n) under the key (k0, k1); the same value on every
 * host (the message is read little-endian). */
uint64_t mw_siphash13(uint64_t k0, uint64_t k1, const void *p, size_t n);

/* splitmix64's finalizer: a bijection that spreads every input bit over the
 * result (a SipHash key from a seed; table slots from already-hashed keys). */
uint64_t mw_splitmix64(uint64_t x);

#endif
