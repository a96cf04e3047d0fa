/*
 * codec_int.h: what the codec's files share (codec.c: the codec and its
 * docs; decode.c: text to Lua values; encode.c: Lua values to text;
 * encode_doc.c: the same, faithful to a decoded record's doc). Not for use
 * outside them: the contract is codec.h.
 */
#ifndef MW_CODEC_INT_H
#define MW_CODEC_INT_H

#include <stdint.h>

#include "codec.h"

/* A doc's anchors array: [1] the key table its cached keys came from
 * (codec_keys.c), [2] the record's root table, then every other value
 * anchored (decode.c). */
#define CODEC_ANCHOR_KEYS 1
#define CODEC_ANCHOR_ROOT 2

/* A key node's anchor with this bit set is its index in the doc's key
 * table, not in its anchors. */
#define CODEC_KEY_CACHED 0x80000000u
/* Keys longer than this are not cached. */
#define CODEC_KEY_MAX_LEN 64

/* A decoded record's bookkeeping: its tape, its text, and its anchors. */
struct codec_doc {
    json_tape t;
    const char *text;    /* the raw text (the caller's; outlives the doc) */
    size_t len;
    int anchors_ref;     /* registry ref of the anchors array (its [1] is the
                          * record's root table), or LUA_NOREF */
    uint32_t *order;     /* container nodes sorted by table address (lazy) */
    uint32_t norder;
    int order_built;
    codec_doc *next, *prev; /* in c->live or c->free_docs */
    codec *owner;        /* the codec it belongs to (codec_doc_owner) */
};

/* ---- codec.c: docs ---- */

/* The pending doc (c->next), taken from the recycled ones or made if
 * there is none. NULL when out of memory. */
codec_doc *codec_doc_take(codec *c);

/* Hand the pending doc out: it moves to the live list (where codec_close
 * finds it even if building its value raises). */
codec_doc *codec_doc_hand_out(codec *c);

/* ---- codec_keys.c: the key cache ---- */

/* Start a fresh, empty key table (the old one stays alive in the docs
 * that used it). 0, or -1 when out of memory (the cache is then not used
 * until a later start succeeds). */
int codec_keys_init(codec *c, lua_State *L);

/* Push the key table a build takes its keys from and return its stack
 * slot, or 0 (nothing pushed) when the cache cannot be used (out of
 * memory). `want`: the keys the build may add; a table without room for
 * them is replaced by a fresh one first (docs keep the old one alive). */
int codec_keys_open(codec *c, lua_State *L, uint32_t want);

/* Push the cached string of key s (n bytes, unescaped; at tape position
 * pos) from the key table at stack slot `keys`, adding it when new: 1
 * with *idx (its index in that table) and *str (its bytes, alive while the
 * table is), or 0 (pushes nothing) when it is not cached (too long, the
 * table full, keys 0). */
int codec_key_push(codec *c, lua_State *L, int keys, uint32_t pos, const char *s, size_t n, uint32_t *idx,
                   const char **str);

/* Free the hash (at codec_close: the Lua side dies with the VM). */
void codec_keys_free(codec *c);

/* ---- encode.c, encode_doc.c: one encoding's state and steps ---- */

typedef struct enc {
    codec *c;
    lua_State *L;
    codec_doc *d;   /* the record's doc, or NULL */
    int anchors;    /* stack slot of d's anchors, or 0 */
    int keys;       /* stack slot of d's key table (anchors[1]), or 0 */
    mw_buf *b;      /* the output */
    char *err;      /* where a failure's message goes */
    size_t errlen;
    const void *counted; /* a doc's top table whose keys were counted, */
    size_t counted_n;    /* ... and their number (see encode_doc.c) */
} enc;

/* Each step appends to e->b and returns 0, or -1 with a message in e->err.
 * `depth` counts the tables entered (0 for the value given to
 * codec_encode). */

/* encode.c */
int enc_value(enc *e, int idx, int depth);      /* any value */
int enc_built(enc *e, int idx, int depth);      /* a table not in the doc */
int enc_put(enc *e, const char *s, size_t n);   /* raw bytes */
int enc_oom(enc *e);                            /* says "out of memory", returns -1 */
int enc_enter_table(enc *e, int depth);         /* depth and stack checks */
int enc_marked_array(enc *e, int idx);          /* has the array metatable */
int enc_array_length(enc *e, int t, size_t *n); /* keys exactly 1..n, or -1 */
int enc_is_sequence(lua_State *L, int t, size_t *n);
size_t enc_count_keys(lua_State *L, int t);
int enc_ptr_cmp(const void *a, const void *b);  /* qsort/bsearch on addresses */
/* Members of t whose key strings are not in `skip` (sorted addresses),
 * sorted by key; `first`: no comma before the first one; `count`: t's
 * keys if the caller has counted them (a walk of t), else 0. */
int enc_members(enc *e, int t, int depth, const char **skip, size_t nskip, int first, size_t count);

/* encode_doc.c */
void enc_push_key(enc *e, const json_node *key); /* an original key's string */
/* Push d's anchors and key table and point e at them (e->d = d). */
void enc_open_doc(enc *e, codec_doc *d);
long enc_find_node(enc *e, const void *table);  /* the doc node of a table, or -1 */
int enc_original(enc *e, int idx, uint32_t node, int depth);
int enc_unchanged(enc *e, int idx, uint32_t node, int depth);
/* Elements 1..n of t; with `orig` (its doc node, elements from `first`),
 * unchanged ones keep their bytes. */
int enc_array(enc *e, int t, size_t n, int depth, const json_node *orig, uint32_t first);

#endif
