/* Atomic file writes (storage/atomic-file.c): the check creates missing parent folders; the
 * temporary's name is random (a file or link planted at a guessable name is neither written
 * through nor in the way) and stays within the name limit for a target whose name is legal;
 * the early check refuses directories, non-regular targets, names too long and folders that
 * cannot be made, naming the path, and leaves nothing behind. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/test-fs.h"
#include "spotlight/error.h"
#include "storage/atomic-file.h"

static void write_file(const char *path, const char *text) {
    struct sl_atomic_file f;
    cr_assert_eq(sl_atomic_file_open(&f, path), 0, "%s", sl_error_detail());
    cr_assert_eq(sl_atomic_file_write(&f, text, strlen(text)), 0);
    cr_assert_eq(sl_atomic_file_commit(&f), 0, "%s", sl_error_detail());
}

static void expect_text(const char *path, const char *text) {
    char buf[256] = {0};
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "%s missing", path);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    cr_assert_eq(n, strlen(text));
    cr_assert_str_eq(buf, text);
}

Test(atomic_file, creates_missing_folders) {
    char *dir = test_tmpdir("atomic"), path[512];
    snprintf(path, sizeof path, "%s/a/b/c/out.txt", dir);
    cr_assert_eq(sl_atomic_file_check(path), 0, "%s", sl_error_detail());
    write_file(path, "hello");
    expect_text(path, "hello");
    snprintf(path, sizeof path, "%s/x/y/out.txt", dir);
    cr_assert_eq(sl_atomic_file_check(path), 0, "%s", sl_error_detail());
    snprintf(path, sizeof path, "%s/x/y", dir);
    cr_assert_eq(test_dir_entries(path), 0, "the check left a file behind");
    test_rmtree(dir);
}

Test(atomic_file, planted_links_at_guessable_names) {
    char *dir = test_tmpdir("atomic"), path[512], victim[512], link[600];
    snprintf(path, sizeof path, "%s/out.txt", dir);
    snprintf(victim, sizeof victim, "%s/victim", dir);
    FILE *v = fopen(victim, "wb");
    fputs("precious", v);
    fclose(v);
    /* every name the old scheme (TARGET.tmp-PID-N) would try first */
    for (int i = 0; i < 8; i++) {
        snprintf(link, sizeof link, "%s.tmp-%d-%d", path, (int)getpid(), i);
        cr_assert_eq(symlink(victim, link), 0);
    }
    write_file(path, "new");
    expect_text(path, "new");
    expect_text(victim, "precious");
    cr_assert_eq(test_dir_entries(dir), 10, "out.txt, victim and the 8 links");
    test_rmtree(dir);
}

Test(atomic_file, long_names_within_the_limit) {
    char *dir = test_tmpdir("atomic"), path[1024], name[NAME_MAX + 2];
    memset(name, 'n', NAME_MAX);
    name[NAME_MAX] = '\0';
    snprintf(path, sizeof path, "%s/%s", dir, name); /* the longest legal name */
    cr_assert_eq(sl_atomic_file_check(path), 0, "%s", sl_error_detail());
    write_file(path, "long");
    expect_text(path, "long");
    cr_assert_eq(test_dir_entries(dir), 1);
    name[NAME_MAX] = 'n';
    name[NAME_MAX + 1] = '\0';
    snprintf(path, sizeof path, "%s/%s", dir, name); /* one byte too many */
    cr_assert_eq(sl_atomic_file_check(path), -ENAMETOOLONG);
    cr_assert_not_null(strstr(sl_error_detail(), "nnnn"), "%s", sl_error_detail());
    test_rmtree(dir);
}

Test(atomic_file, check_refuses_bad_targets) {
    char *dir = test_tmpdir("atomic"), path[512], file[512];
    snprintf(path, sizeof path, "%s/sub", dir);
    cr_assert_eq(mkdir(path, 0777), 0);
    cr_assert_eq(sl_atomic_file_check(path), -EISDIR); /* a directory */
    cr_assert_not_null(strstr(sl_error_detail(), "sub: it is a directory"), "%s", sl_error_detail());
    snprintf(file, sizeof file, "%s/plain", dir);
    FILE *f = fopen(file, "wb");
    fclose(f);
    snprintf(path, sizeof path, "%s/plain/out.txt", dir); /* a folder that is a file */
    cr_assert_lt(sl_atomic_file_check(path), 0);
    cr_assert_not_null(strstr(sl_error_detail(), "plain"), "%s", sl_error_detail());
    snprintf(path, sizeof path, "%s/fifo", dir);
    cr_assert_eq(mkfifo(path, 0666), 0);
    cr_assert_eq(sl_atomic_file_check(path), SL_EINVAL);
    cr_assert_not_null(strstr(sl_error_detail(), "not a regular file"), "%s", sl_error_detail());
    snprintf(path, sizeof path, "%s/link", dir); /* a link to a file is replaced, not followed */
    cr_assert_eq(symlink(file, path), 0);
    cr_assert_eq(sl_atomic_file_check(path), 0, "%s", sl_error_detail());
    write_file(path, "via");
    struct stat st;
    cr_assert_eq(lstat(path, &st), 0);
    cr_assert(S_ISREG(st.st_mode));
    cr_assert_eq(stat(file, &st), 0);
    cr_assert_eq(st.st_size, 0, "the link's target was written through");
    cr_assert_eq(test_dir_entries(dir), 4);
    test_rmtree(dir);
}
