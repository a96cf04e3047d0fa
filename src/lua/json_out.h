/*
 * json_out.h: the host's JSON encoder for output records (keys sorted, so
 * equal values always give equal bytes; see json_out.c for why).
 */
#ifndef MW_JSON_OUT_H
#define MW_JSON_OUT_H

#include <lua.h>
#include <stddef.h>

#include "../util/buf.h"

typedef mw_buf json_buf; /* p is malloc'd; the caller frees it */

/* Append the JSON text of the value at idx to b. `null` is the lightuserdata
 * that stands for JSON null (cjson.null). 0, or -1 with a message in err. */
int json_out_encode(lua_State *L, int idx, const void *null, json_buf *b, char *err, size_t errlen);

/* Append s (n bytes) as a JSON string literal, quotes included. 0 or -1. */
int json_out_string(json_buf *b, const char *s, size_t n);

#endif
