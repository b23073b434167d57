/* Scratch folders for tests that write files: make one, count what is in it, remove it.
 * Header-only, for Criterion tests (a failure fails the test). */
#ifndef SL_TESTS_TEST_FS_H
#define SL_TESTS_TEST_FS_H

#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A new folder /tmp/sl-NAME-XXXXXX; malloc'd, freed by test_rmtree. */
static inline char *test_tmpdir(const char *name) {
    char *d = malloc(strlen(name) + 32);
    cr_assert_not_null(d);
    sprintf(d, "/tmp/sl-%s-XXXXXX", name);
    cr_assert_not_null(mkdtemp(d));
    return d;
}

/* rm -rf of a folder made by test_tmpdir, then frees its name. */
static inline void test_rmtree(char *d) {
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", d);
    cr_assert_eq(system(cmd), 0);
    free(d);
}

/* Entries in a folder besides . and .. */
static inline int test_dir_entries(const char *dir) {
    DIR *d = opendir(dir);
    cr_assert_not_null(d, "cannot open %s", dir);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n;
}

#endif
