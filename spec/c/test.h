/*
 * test.h: a tiny C test harness. Each TEST runs in its own forked process
 * (a crash fails that test only, as in libuv's runner); typed asserts print
 * both sides. main() comes from TEST_MAIN(), which runs every test named on
 * the command line (or all) and prints "c:<suite>: N passed, N failed".
 */
#ifndef MW_TEST_H
#define MW_TEST_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct test_case {
    const char *name;
    void (*fn)(void);
} test_case;

#define FAILF(...)                                                              \
    do {                                                                        \
        fprintf(stderr, "  %s:%d: ", __FILE__, __LINE__);                       \
        fprintf(stderr, __VA_ARGS__);                                           \
        fputc('\n', stderr);                                                    \
        exit(1);                                                                \
    } while (0)

#define ASSERT(c)                                                               \
    do { if (!(c)) FAILF("assertion failed: %s", #c); } while (0)
#define ASSERT_INT_EQ(a, b)                                                     \
    do { long long a_ = (long long)(a), b_ = (long long)(b);                    \
         if (a_ != b_) FAILF("%s == %s: %lld != %lld", #a, #b, a_, b_); } while (0)
#define ASSERT_UINT_EQ(a, b)                                                    \
    do { unsigned long long a_ = (unsigned long long)(a), b_ = (unsigned long long)(b); \
         if (a_ != b_) FAILF("%s == %s: %llu != %llu", #a, #b, a_, b_); } while (0)
#define ASSERT_STR_EQ(a, b)                                                     \
    do { const char *a_ = (a), *b_ = (b);                                       \
         if (!a_ || !b_ || strcmp(a_, b_) != 0)                                 \
             FAILF("%s == %s: \"%s\" != \"%s\"", #a, #b, a_ ? a_ : "(null)", b_ ? b_ : "(null)"); } while (0)

static inline int test_run_all(const char *suite, const test_case *tests, int argc, char **argv)
{
    int passed = 0, failed = 0;
    for (const test_case *t = tests; t->name; t++) {
        if (argc > 1) {
            int wanted = 0;
            for (int i = 1; i < argc; i++)
                if (strcmp(argv[i], t->name) == 0)
                    wanted = 1;
            if (!wanted)
                continue;
        }
        fflush(NULL);
        pid_t pid = fork();
        if (pid == 0) {
            t->fn();
            fflush(NULL);
            _exit(0);
        }
        int st = 0;
        waitpid(pid, &st, 0);
        if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
            passed++;
            printf("ok - %s: %s\n", suite, t->name);
        } else {
            failed++;
            printf("not ok - %s: %s%s\n", suite, t->name,
                   WIFSIGNALED(st) ? " (crashed)" : "");
        }
    }
    printf("c:%s: %d passed, %d failed\n", suite, passed, failed);
    return failed ? 1 : 0;
}

#define TEST_MAIN(suite, ...)                                                   \
    int main(int argc, char **argv)                                             \
    {                                                                           \
        static const test_case tests_[] = { __VA_ARGS__, { NULL, NULL } };      \
        return test_run_all(suite, tests_, argc, argv);                         \
    }
#define T(fn) { #fn, fn }

#endif
