/*
 * test_lines.c: the fd source's line framing (src/io/lines.c), pinned:
 * lines across read boundaries, CR before LF, no final newline, the
 * max-line limit (with and without a newline in sight), NUL bytes, blank
 * lines, offsets for checkpoints, sticky errors.
 */
#include "../../src/io/lines.h"
#include "test.h"

/* Feed `s` in reads of at most `step` bytes (each limited by the room). */
static void feed(lines *l, const char *s, size_t n, size_t step)
{
    while (n) {
        char *p;
        size_t room;
        ASSERT_INT_EQ(lines_room(l, &p, &room), 0);
        size_t k = n < step ? n : step;
        if (k > room)
            k = room;
        memcpy(p, s, k);
        lines_add(l, k);
        s += k;
        n -= k;
    }
}

/* The next result must be a line equal to want[0..wn) numbered `no`. */
static void expect_line(lines *l, const char *want, size_t wn, uint64_t no)
{
    const char *line;
    size_t len;
    uint64_t lineno;
    ASSERT_INT_EQ(lines_next(l, &line, &len, &lineno), LINES_LINE);
    ASSERT_UINT_EQ(len, wn);
    ASSERT(memcmp(line, want, wn) == 0);
    ASSERT_UINT_EQ(lineno, no);
}

static int next_rc(lines *l)
{
    const char *line;
    size_t len;
    uint64_t lineno;
    return lines_next(l, &line, &len, &lineno);
}

static void test_lines_across_read_boundaries(void)
{
    lines l;
    ASSERT_INT_EQ(lines_init(&l, 1024, 4), 0);
    ASSERT_INT_EQ(next_rc(&l), LINES_AGAIN);
    feed(&l, "ab", 2, 2);
    ASSERT_INT_EQ(next_rc(&l), LINES_AGAIN);
    feed(&l, "c\nde", 4, 3);
    expect_line(&l, "abc", 3, 1);
    ASSERT_INT_EQ(next_rc(&l), LINES_AGAIN);
    feed(&l, "f\n\nghi\n", 7, 1);
    expect_line(&l, "def", 3, 2);
    expect_line(&l, "", 0, 3); /* a blank line is a line, and counted */
    expect_line(&l, "ghi", 3, 4);
    ASSERT_INT_EQ(next_rc(&l), LINES_AGAIN);
    lines_end(&l);
    ASSERT_INT_EQ(next_rc(&l), LINES_EOF);
    ASSERT_UINT_EQ(l.consumed, 13);
    lines_free(&l);
}

static void test_a_line_longer_than_the_buffer_grows_it(void)
{
    lines l;
    ASSERT_INT_EQ(lines_init(&l, 1 << 20, 8), 0);
    char big[1000];
    memset(big, 'x', sizeof big);
    feed(&l, big, sizeof big, 7);
    feed(&l, "\n", 1, 1);
    expect_line(&l, big, sizeof big, 1);
    lines_free(&l);
}

static void test_one_cr_before_lf_is_dropped(void)
{
    lines l;
    ASSERT_INT_EQ(lines_init(&l, 1024, 64), 0);
    const char in[] = "a\r\nb\r\r\nc\rd\n\r\n";
    feed(&l, in, sizeof in - 1, 64);
    expect_line(&l, "a", 1, 1);
    expect_line(&l, "b\r", 2, 2);      /* only the last CR goes */
    expect_line(&l, "c\rd", 3, 3);     /* a CR inside stays */
    expect_line(&l, "", 0, 4);         /* a lone CR line is blank */
    ASSERT_UINT_EQ(l.consumed, sizeof in - 1); /* offsets count the CRs */
    lines_free(&l);
}

static void test_final_line_without_newline(void)
{
    lines l;
    ASSERT_INT_EQ(lines_init(&l, 1024, 64), 0);
    feed(&l, "a\nlast\r", 7, 64);
    expect_line(&l, "a", 1, 1);
    ASSERT_INT_EQ(next_rc(&l), LINES_AGAIN); /* not a line until the end */
    lines_end(&l);
    expect_line(&l, "last", 4, 2);           /* its CR is dropped too */
    ASSERT_INT_EQ(next_rc(&l), LINES_EOF);
    ASSERT_INT_EQ(next_rc(&l), LINES_EOF);
    ASSERT_UINT_EQ(l.consumed, 7);
    lines_free(&l);
}

static void test_empty_input_is_eof(void)
{
    lines l;
    ASSERT_INT_EQ(lines_init(&l, 1024, 64), 0);
    lines_end(&l);
    ASSERT_INT_EQ(next_rc(&l), LINES_EOF);
    ASSERT_UINT_EQ(l.lineno, 0);
    lines_free(&l);
}

static void test_nul_bytes_are_data(void)
{
    lines l;
    ASSERT_INT_EQ(lines_init(&l, 1024, 64), 0);
    feed(&l, "a\0b\n\0\n", 6, 64);
    expect_line(&l, "a\0b", 3, 1);
    expect_line(&l, "\0", 1, 2);
    lines_free(&l);
}

static void test_max_line_bytes(void)
{
    lines l;
    ASSERT_INT_EQ(lines_init(&l, 3, 64), 0);
    feed(&l, "abc\nabcd\nz\n", 11, 64);
    expect_line(&l, "abc", 3, 1);            /* exactly the limit: fine */
    ASSERT_INT_EQ(next_rc(&l), LINES_ERROR); /* one more: an error */
    ASSERT_INT_EQ(l.error, LINES_ETOOLONG);
    ASSERT_UINT_EQ(l.lineno, 2);             /* the line it names */
    ASSERT_INT_EQ(next_rc(&l), LINES_ERROR); /* sticky: z is never read */
    ASSERT_UINT_EQ(l.consumed, 4);
    lines_free(&l);
}

static void test_max_line_counts_the_cr(void)
{
    lines l;
    ASSERT_INT_EQ(lines_init(&l, 3, 64), 0);
    feed(&l, "abc\r\n", 5, 64);
    ASSERT_INT_EQ(next_rc(&l), LINES_ERROR);
    ASSERT_UINT_EQ(l.lineno, 1);
    lines_free(&l);
}

static void test_max_line_without_a_newline_in_sight(void)
{
    lines l;
    ASSERT_INT_EQ(lines_init(&l, 4, 2), 0);
    feed(&l, "abcd", 4, 2);
    ASSERT_INT_EQ(next_rc(&l), LINES_AGAIN); /* 4 bytes: may still end here */
    feed(&l, "e", 1, 1);
    ASSERT_INT_EQ(next_rc(&l), LINES_ERROR); /* 5 and no newline: stop reading */
    ASSERT_UINT_EQ(l.lineno, 1);
    lines_free(&l);
}

static void test_a_read_error_is_sticky(void)
{
    lines l;
    ASSERT_INT_EQ(lines_init(&l, 1024, 64), 0);
    feed(&l, "a\nb\n", 4, 64);
    lines_fail(&l, -5);
    ASSERT_INT_EQ(next_rc(&l), LINES_ERROR); /* even with lines buffered */
    ASSERT_INT_EQ(l.error, -5);
    ASSERT_UINT_EQ(l.lineno, 0);
    lines_free(&l);
}

static void test_restored_counts_continue(void)
{
    lines l;
    ASSERT_INT_EQ(lines_init(&l, 1024, 64), 0);
    l.consumed = 100; /* as fd_source's seek sets them */
    l.lineno = 9;
    feed(&l, "xy\n", 3, 64);
    expect_line(&l, "xy", 2, 10);
    ASSERT_UINT_EQ(l.consumed, 103);
    lines_free(&l);
}

TEST_MAIN("lines", T(test_lines_across_read_boundaries), T(test_a_line_longer_than_the_buffer_grows_it),
          T(test_one_cr_before_lf_is_dropped), T(test_final_line_without_newline), T(test_empty_input_is_eof),
          T(test_nul_bytes_are_data), T(test_max_line_bytes), T(test_max_line_counts_the_cr),
          T(test_max_line_without_a_newline_in_sight), T(test_a_read_error_is_sticky),
          T(test_restored_counts_continue))
