/*
 * keymap.c: key -> last queued record of that key (contract in keymap.h).
 */
#include "keymap.h"

#include <stdlib.h>

#include "../util/siphash.h"

static size_t home(const keymap *m, uint64_t key)
{
    return (size_t)mw_splitmix64(key) & (m->cap - 1);
}

/* The slot holding `key`, or the free slot ending its probe run. */
static size_t find(const keymap *m, uint64_t key)
{
    size_t i = home(m, key);
    while (m->v[i].val && m->v[i].key != key)
        i = (i + 1) & (m->cap - 1);
    return i;
}

void *keymap_get(const keymap *m, uint64_t key)
{
    return m->cap ? m->v[find(m, key)].val : NULL;
}

static int grow(keymap *m)
{
    size_t cap = m->cap ? m->cap * 2 : 64;
    struct keymap_slot *v = calloc(cap, sizeof *v), *old = m->v;
    if (!v)
        return -1;
    size_t ocap = m->cap;
    m->v = v;
    m->cap = cap;
    for (size_t i = 0; i < ocap; i++)
        if (old[i].val)
            m->v[find(m, old[i].key)] = old[i];
    free(old);
    return 0;
}

int keymap_put(keymap *m, uint64_t key, void *val)
{
    if ((m->len + 1) * 2 > m->cap && grow(m) != 0)
        return -1;
    size_t i = find(m, key);
    if (!m->v[i].val)
        m->len++;
    m->v[i].key = key;
    m->v[i].val = val;
    return 0;
}

void keymap_del(keymap *m, uint64_t key)
{
    if (!m->cap)
        return;
    size_t mask = m->cap - 1, i = find(m, key);
    if (!m->v[i].val)
        return;
    m->len--;
    /* Backward shift: move later members of the probe run into the hole
     * when the hole lies between their home and their slot. */
    for (size_t j = i;;) {
        m->v[i].val = NULL;
        for (;;) {
            j = (j + 1) & mask;
            if (!m->v[j].val)
                return;
            size_t h = home(m, m->v[j].key);
            /* j's home is cyclically in (i, j]: it must stay. */
            if (i <= j ? (i < h && h <= j) : (i < h || h <= j))
                continue;
            break;
        }
        m->v[i] = m->v[j];
        i = j;
    }
}

void keymap_free(keymap *m)
{
    free(m->v);
    m->v = NULL;
    m->cap = m->len = 0;
}
