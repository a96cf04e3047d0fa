/*
 * keymap.h: keyed mode's map from a record's key (a 64-bit hash the host
 * computed) to the last queued record of that key. Plain C; used only by
 * op.c, which keeps the per-key chains themselves in the entries.
 *
 * Open addressing with linear probing at a load of at most one half,
 * deletion by backward shift (no tombstones, so a long run does not
 * degrade). A slot comes from the key through splitmix64, so keys that
 * differ only in high bits (or small integers in tests) spread too; keys
 * that are equal are one key (a hash collision of two user keys only joins
 * their order, which is safe). The host's keys are SipHash with a secret
 * per-process key, so input cannot pile keys into one run of slots.
 */
#ifndef MW_KEYMAP_H
#define MW_KEYMAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct keymap {
    struct keymap_slot {
        uint64_t key;
        void *val;          /* NULL: the slot is free */
    } *v;
    size_t cap;             /* a power of two, or 0 before the first put */
    size_t len;             /* keys present */
} keymap;

/* The value of `key`, or NULL. */
void *keymap_get(const keymap *m, uint64_t key);

/* Set `key` to `val` (not NULL), adding it if absent. 0, or -1 when out of
 * memory (the map is unchanged). */
int keymap_put(keymap *m, uint64_t key, void *val);

/* Remove `key` (absent: nothing). */
void keymap_del(keymap *m, uint64_t key);

/* Free the map's memory (it is empty and reusable after). */
void keymap_free(keymap *m);

#endif
