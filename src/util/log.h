/*
 * log.h: moonwait's own messages on stderr, one line each. Every message
 * the host writes goes through mw_log, so one switch (--log-format) can
 * change how all of them look.
 */
#ifndef MW_LOG_H
#define MW_LOG_H

typedef enum { MW_LOG_DEBUG = 0, MW_LOG_INFO, MW_LOG_WARN, MW_LOG_ERROR } mw_log_level;

/* Write "moonwait: " and the formatted message as one line on stderr (a
 * trailing newline in fmt is not doubled). */
void mw_log(mw_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
