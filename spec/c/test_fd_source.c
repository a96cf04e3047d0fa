/*
 * test_fd_source.c: the file source (src/io/fd_source.c) on a real loop:
 * every line comes out once, in order; and it reads ahead: once less than
 * a chunk is left unread, the next read is already under way, so handing
 * out records never waits on a thread-pool round trip it could have
 * overlapped.
 */
#include "../../src/io/fd_source.h"
#include "test.h"

static int readies;
static void on_ready(void *ud)
{
    (void)ud;
    readies++;
}

static char path[64];

static void write_file(int n)
{
    snprintf(path, sizeof path, "/tmp/mw-test-fd-source-%d", (int)getpid());
    FILE *f = fopen(path, "w");
    ASSERT(f != NULL);
    for (int i = 1; i <= n; i++)
        fprintf(f, "{\"id\":%07d,\"pad\":\"%080d\"}\n", i, 0); /* 104 bytes a line */
    fclose(f);
}

static mw_source *open_src(uv_loop_t *loop)
{
    mw_source *s = NULL;
    char *err = NULL;
    ASSERT_INT_EQ(fd_source_open(&s, loop, path, 1 << 20, &err), 0);
    s->on_ready = on_ready;
    s->ud = NULL;
    readies = 0;
    return s;
}

static void close_src(uv_loop_t *loop, mw_source *s)
{
    source_close(s, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    ASSERT_INT_EQ(uv_loop_close(loop), 0);
    unlink(path);
}

static void test_every_line_once_in_order(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    write_file(20000);
    mw_source *s = open_src(&loop);
    int next = 1;
    for (;;) {
        source_record r;
        int rc = source_next(s, &r);
        if (rc == SOURCE_AGAIN) {
            uv_run(&loop, UV_RUN_ONCE);
            continue;
        }
        if (rc == SOURCE_END)
            break;
        ASSERT_INT_EQ(rc, SOURCE_RECORD);
        ASSERT_INT_EQ((int)r.len, 103);
        ASSERT_INT_EQ(atoi(r.data + 6), next);
        ASSERT_INT_EQ((int)r.line, next);
        next++;
    }
    ASSERT_INT_EQ(next, 20001);
    close_src(&loop, s);
}

/* The first read lands; records are taken until little is left unread,
 * without returning to the loop: a read is then already in flight, and
 * running the loop lands it (on_ready) before the buffer ran dry. */
static void test_reads_ahead(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    write_file(20000);
    mw_source *s = open_src(&loop);
    source_record r;
    ASSERT_INT_EQ(source_next(s, &r), SOURCE_AGAIN);
    while (readies == 0)
        ASSERT(uv_run(&loop, UV_RUN_ONCE) || readies);
    ASSERT_INT_EQ(readies, 1);
    /* the first read fills the empty buffer (two chunks: 1260 lines); past
     * 630 less than a chunk is left */
    for (int i = 0; i < 700; i++)
        ASSERT_INT_EQ(source_next(s, &r), SOURCE_RECORD);
    uv_run(&loop, UV_RUN_DEFAULT); /* returns at once with nothing under way */
    ASSERT_INT_EQ(readies, 2);
    close_src(&loop, s);
}

TEST_MAIN("fd_source", T(test_every_line_once_in_order), T(test_reads_ahead))
