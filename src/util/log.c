/*
 * log.c: moonwait's own messages (contract in log.h).
 */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void mw_log(mw_log_level level, const char *fmt, ...)
{
    (void)level;
    char msg[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    size_t n = strlen(msg);
    if (n > 0 && msg[n - 1] == '\n')
        msg[--n] = '\0';
    /* One fwrite per line: concurrent writers on the same stderr do not
     * interleave inside it. */
    char line[4200];
    int len = snprintf(line, sizeof line, "moonwait: %s\n", msg);
    if (len > 0)
        fwrite(line, 1, (size_t)len < sizeof line ? (size_t)len : sizeof line - 1, stderr);
}
