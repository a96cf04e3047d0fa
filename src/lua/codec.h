/*
 * codec.h: records between JSON text and Lua values, faithfully.
 *
 * Decoding turns a strict JSON text (src/json) into plain Lua tables:
 * objects are tables, arrays are tables with the array metatable (so an
 * empty one stays []), integers beyond 2^53 are LuaJIT int64_t/uint64_t
 * cdata (exact), null is moonwait.null. A decoded record also keeps a doc:
 * its tape (the byte span of every value) and anchors for the values it
 * needs to recognise later. Encoding with that doc writes, for every value
 * the script did not change, the bytes it came with, keeps the input's key
 * order, and puts keys the script added after the original ones, sorted.
 * Tables without a doc are written with sorted keys, so the same values
 * always give the same bytes (checkpoint restores compare output bytes).
 *
 * One codec per VM (the script's: vm.c sets it up). Docs are recycled: a
 * doc's tape arrays are reused by the next record.
 *
 * Implemented by codec.c (the codec, its docs), decode.c, encode.c and
 * encode_doc.c; codec_int.h is what they share.
 */
#ifndef MW_CODEC_H
#define MW_CODEC_H

#include <lua.h>
#include <stddef.h>

#include "../json/json.h"
#include "../util/buf.h"

typedef struct codec_doc codec_doc;

#define CODEC_KEY_HINTS 64 /* tape positions whose key slot is remembered */

typedef struct codec {
    lua_State *L;
    int array_mt_ref;        /* the array metatable */
    const void *array_mt;    /* ... and its address, for a quick check */
    int mk_i64_ref, mk_u64_ref, cdata_kind_ref; /* small FFI helpers */
    codec_doc *next;         /* the doc the next parse fills */
    codec_doc *free_docs;    /* recycled docs */
    codec_doc *live;         /* docs handed out and not yet freed */
    mw_buf scratch;          /* unescaped strings while building */
    /* More docs codec_encode recognises tables of (codec_encode_also), or
     * NULL: batch_invoke may return another record's table. */
    codec_doc *const *also;
    size_t nalso;
    /* The key cache (codec_keys.c): the key table's registry ref (or
     * LUA_NOREF), the keys in it, and the hash that finds them. */
    int keys_ref;
    uint32_t nkeys;
    uint32_t key_basis;      /* the hash's random start (per VM: crafted keys cannot
                              * be made to collide ahead of time) */
    uint32_t key_hits;       /* keys found in the current table */
    uint32_t keys_off;       /* keys still to build uncached (a stream of new keys) */
    struct codec_key *key_slots;
    uint16_t key_hint[CODEC_KEY_HINTS]; /* the slot last found at a tape position */
} codec;

/* Set up the codec for the VM L. 0, or -1 (out of memory). */
int codec_init(codec *c, lua_State *L);

/* Free every doc and buffer (the VM is closing; refs die with it). */
void codec_close(codec *c);

/* Parse text (a record: one JSON object) into the codec's pending tape.
 * text must stay valid and unchanged until the doc built from it is freed.
 * 0, or -1 with a message ("invalid JSON at byte N: ...") in err. */
int codec_parse(codec *c, const char *text, size_t len, char *err, size_t errlen);

/* codec_parse without parsing: text's tape is t (what parsing text gave,
 * in this VM or another: a copy). 0, or -1 (out of memory). */
int codec_adopt(codec *c, const char *text, size_t len, const json_tape *t);

/* The pending tape (after codec_parse), to read fields without Lua. */
const json_tape *codec_pending(const codec *c);

/* Build the Lua value of the pending tape (after a codec_parse that
 * succeeded) on L (pushes one value) and hand out its doc; the caller owns
 * it (codec_doc_free). Raises a Lua error when out of memory (the doc is
 * then freed by codec_close). */
codec_doc *codec_build(codec *c, lua_State *L);

/* Push the value a doc was built for (codec_build): the doc carries it,
 * as the first of its anchors, for as long as it lives. */
void codec_doc_push(const codec_doc *d, lua_State *L);

/* The codec a doc came from (without codec_of's registry lookup). */
codec *codec_doc_owner(const codec_doc *d);

/* Release a doc (its anchors are unreferenced; its memory recycled). */
void codec_doc_free(codec *c, codec_doc *d);

/* Decode any JSON value (not only an object) and push it, without a doc
 * (moonwait.json.decode, export_state). 0, or -1 with err. */
int codec_decode(codec *c, lua_State *L, const char *text, size_t len, char *err, size_t errlen);

/* Append the JSON text of the value at idx to b. With a doc, its tables
 * keep their original bytes, order and shape where unchanged. 0, or -1
 * with a message in err. */
int codec_encode(codec *c, lua_State *L, int idx, codec_doc *doc, mw_buf *b, char *err, size_t errlen);

/* From now on codec_encode also writes the tables of these n docs (NULL
 * entries skipped) faithfully, as their own doc's: a batch's results may
 * hold any of its records. The docs must outlive the encodes; call with
 * NULL, 0 after them. */
void codec_encode_also(codec *c, codec_doc *const *docs, size_t n);

/* Push the array metatable (moonwait.json.array_mt). */
void codec_push_array_mt(codec *c, lua_State *L);

/* The codec of a VM set up with codec_init (kept in its registry). */
codec *codec_of(lua_State *L);

#endif
