/*
 * lex.h: what the files of the JSON parser share (internal to src/json; not
 * for other layers, which use json.h).
 *
 * parse.c builds the tape and owns the parser state and its error messages;
 * string.c reads string tokens (and UTF-8), number.c number tokens, keys.c
 * marks repeated object keys. Every error names the 1-based byte where the
 * text went wrong: "malformed JSON at byte N: ...".
 */
#ifndef MW_JSON_LEX_H
#define MW_JSON_LEX_H

#include "json.h"

typedef struct json_parser {
    const unsigned char *s;     /* the text */
    size_t len, i;              /* its length; the next byte to read */
    json_tape *t;
    char *err;                  /* the caller's message buffer */
    size_t errlen;
    unsigned depth;             /* open containers */
    uint32_t stack[JSON_MAX_DEPTH + 1]; /* their tape indexes, outermost first */
} json_parser;

/* Write "malformed JSON at byte <at+1>: <fmt with arg>" to p->err; returns
 * -1 (parse.c). */
int json_fail(json_parser *p, size_t at, const char *fmt, const char *arg);

/* The string token starting at the '"' at p->i, into x (its length, and
 * JSON_ESCAPED); leaves p->i after the closing quote. 0 or -1 (string.c). */
int json_lex_string(json_parser *p, json_node *x);

/* The number token at p->i, into x (its length, value and flags; bigints
 * are counted in the tape); leaves p->i after it. 0 or -1 (number.c). */
int json_lex_number(json_parser *p, json_node *x);

/* Mark the members of object node `obj` whose name repeats an earlier one
 * (JSON_DUP, and the earlier key's `n`). 0 or -1 (out of memory; keys.c). */
int json_mark_duplicates(json_parser *p, uint32_t obj);

#endif
