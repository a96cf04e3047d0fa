/*
 * spectest.h: `moonwait test SPEC.lua...`, a user's unit tests of a script
 * with fake services, run in the real runtime (spectest.c,
 * lua/moonwait/test.lua). README.md, "Testing a script".
 */
#ifndef MW_SPECTEST_H
#define MW_SPECTEST_H

/* argv[0] is "test"; the spec files follow. Returns the exit status: 0
 * every test passed, 1 a test failed or a spec did not load, 2 bad usage. */
int spectest_main(int argc, char **argv, const char *lua_dir);

#endif
