/*
 * log.h: everything moonwait writes on stderr, one line each: the host's
 * own messages, moonwait.log's, the --stats lines and the live progress
 * line. Every such line goes through here, so one switch (--log-format,
 * MOONWAIT_LOG_FORMAT) changes how all of them look and one threshold
 * (MOONWAIT_LOG_LEVEL) filters all of them. libc only: the JSON form is
 * written by a function the caller installs (mw_log_set_json_writer;
 * src/json/logline.c's json_logline, installed by main.c), since util/ may
 * not include json/.
 */
#ifndef MW_LOG_H
#define MW_LOG_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

typedef enum { MW_LOG_DEBUG = 0, MW_LOG_INFO, MW_LOG_WARN, MW_LOG_ERROR } mw_log_level;

typedef enum { MW_LOG_TEXT = 0, MW_LOG_JSON } mw_log_format;

/* What a message is about, when known; every field may be left 0. The JSON
 * form writes the known ones as fields; the text form shows them only for a
 * script's message (script = 1: "[level] file:line: worker=W: seq=N: "
 * before it, as moonwait.log always wrote, worker= only with --workers
 * N > 1), since a host message names them in its words already. */
typedef struct mw_log_ctx {
    const char *file;  /* the script's file (moonwait.log's caller), or NULL */
    int line;          /* its line, 0 = none */
    uint64_t seq;      /* the record's seq, 0 = none */
    int generation;    /* the script generation, 0 = none */
    int worker;        /* --workers N > 1: the worker whose VM wrote it, 0 = none */
    int script;        /* a message of or about the script's own code */
} mw_log_ctx;

/* A numeric field of a --stats line (JSON: a number; the text form is the
 * caller's). */
typedef struct mw_log_num {
    const char *name;
    double value;      /* integers up to 2^53 are written without a fraction */
} mw_log_num;

/* One line as the JSON writer sees it. */
typedef struct mw_log_rec {
    mw_log_level level;
    int64_t time_ms;        /* Unix time, ms */
    const char *msg;        /* any bytes: NUL, invalid UTF-8, newlines */
    size_t len;
    const mw_log_ctx *ctx;  /* or NULL */
    const mw_log_num *nums; /* n of them, after the others */
    size_t nnums;
} mw_log_rec;

/* Appends one JSON object (no newline) for r to b: 0, or -1 when out of
 * memory. */
typedef int (*mw_log_json_fn)(mw_buf *b, const mw_log_rec *r);

/* "debug", "info", "warn", "error". */
const char *mw_log_level_name(mw_log_level level);

/* Settings. Until they are called: text, level info, no JSON writer (JSON
 * then falls back to text). */
void mw_log_set_format(mw_log_format f);
mw_log_format mw_log_get_format(void);
void mw_log_set_level(mw_log_level min);
void mw_log_set_json_writer(mw_log_json_fn fn);

/* Parse a format name ("text", "json") or a level name: 0 with *out, or -1. */
int mw_log_parse_format(const char *s, mw_log_format *out);
int mw_log_parse_level(const char *s, mw_log_level *out);

/* Whether a message at `level` is written (callers skip building one that
 * is not). */
int mw_log_enabled(mw_log_level level);

/* A host message: text "moonwait: MESSAGE"; JSON {"time", "level", "msg"}.
 * A trailing newline in fmt is not doubled. */
void mw_log(mw_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A host warning: text "moonwait: warning: MESSAGE" (how warnings always
 * read), JSON level "warn" with the message alone. */
void mw_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* A message with what it is about (ctx may be NULL). */
void mw_logx(mw_log_level level, const mw_log_ctx *ctx, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* The same for a message of len bytes, written as they are (text) or
 * escaped (JSON): NUL bytes and invalid UTF-8 neither cut nor break it. */
void mw_log_bytes(mw_log_level level, const mw_log_ctx *ctx, const char *msg, size_t len);

/* A message without the "moonwait: " prefix in text (`moonwait check`'s
 * "file:line: message", the form editors jump to). */
void mw_log_plain(mw_log_level level, const char *msg);

/* A --stats line: text "moonwait: " + text; JSON {"time", "level": "info",
 * "msg": msg, and each of nums}. Written at any level threshold (--stats
 * asked for it). */
void mw_log_stats(const char *msg, const char *text, const mw_log_num *nums, size_t n);

/* The live status line of a terminal (text format only): shown as
 * "moonwait: " + text, rewritten in place with "\r" (cut to the terminal's
 * width so it never wraps); every other line clears it first and redraws
 * it after. NULL clears it for good. */
void mw_log_status(const char *text);

/* unix_ms as RFC 3339 UTC with milliseconds ("2026-12-01T03:04:05.678Z",
 * years 0 to 9999), async-signal-safe (no gmtime_r): its length. */
size_t mw_log_format_time(char out[32], int64_t unix_ms);

/* A fixed message from a signal handler: async-signal-safe (no malloc, no
 * stdio, no locale: clock_gettime, arithmetic and one write(2)), in the
 * current format; clears the status line first. For the second signal's
 * "exiting at once", which cannot wait for the loop. */
void mw_log_from_signal(mw_log_level level, const char *msg);

/* Whether stderr is a terminal (the status line makes sense there). */
int mw_log_is_tty(void);

#endif
