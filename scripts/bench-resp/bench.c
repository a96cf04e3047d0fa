/* scripts/bench-resp/bench.c: RESP reader comparison: our resp.c vs hiredis 0.14's redisReader, on an
 * XREADGROUP-like reply (one stream, 100 entries of one field each). */
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include "resp.h"

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }

int main(void)
{
    static char buf[1 << 16];
    size_t n = 0;
    n += sprintf(buf + n, "*1\r\n*2\r\n$5\r\nevent\r\n*100\r\n");
    for (int i = 0; i < 100; i++) {
        char id[32], val[160];
        int il = sprintf(id, "17000000000%02d-0", i);
        int vl = sprintf(val, "{\"user\":%d,\"page\":\"/products/%d\",\"ts\":17000000000%02d,\"ref\":\"https://example.com/a/b\"}", i, i * 7, i);
        n += sprintf(buf + n, "*2\r\n$%d\r\n%s\r\n*2\r\n$4\r\ndata\r\n$%d\r\n%s\r\n", il, id, vl, val);
    }
    int reps = 20000;
    double t0 = now();
    size_t nodes = 0;
    resp_reader r;
    resp_init(&r, 64u << 20, 1u << 20, 64);
    for (int k = 0; k < reps; k++) {
        size_t used;
        if (resp_feed(&r, buf, n, &used) != RESP_DONE) return 1;
        nodes += r.len;
        resp_next_reply(&r);
    }
    double t1 = now();
    size_t elems = 0;
    redisReader *rd = redisReaderCreate();
    for (int k = 0; k < reps; k++) {
        redisReaderFeed(rd, buf, n);
        void *rep;
        if (redisReaderGetReply(rd, &rep) != REDIS_OK || !rep) return 1;
        elems += ((redisReply *)rep)->elements;
        freeReplyObject(rep);
    }
    redisReaderFree(rd);
    double t2 = now();
    printf("reply %zu bytes, %zu nodes\n", n, nodes / reps);
    printf("resp.c:  %.2f us/reply  %.1f ns/byte\n", (t1 - t0) / reps * 1e6, (t1 - t0) / reps / n * 1e9);
    printf("hiredis: %.2f us/reply  %.1f ns/byte (%zu)\n", (t2 - t1) / reps * 1e6, (t2 - t1) / reps / n * 1e9, elems / reps);
    return 0;
}
