/* Error codes, per-thread details and the log callback. */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <string.h>

#include "core/internal.h"
#include "spotlight/error.h"

Test(error, every_code_has_distinct_text) {
    for (int e = SL_EINVAL; e < SL_E_LAST_; e++) {
        const char *t = sl_strerror(e);
        cr_assert(t && *t && strcmp(t, "unknown error") != 0, "code %d", e);
        for (int f = SL_EINVAL; f < e; f++) cr_assert_str_neq(t, sl_strerror(f));
    }
    cr_assert_str_eq(sl_strerror(0), "success");
    cr_assert_str_eq(sl_strerror(-ENOENT), strerror(ENOENT));
    cr_assert_str_eq(sl_strerror(-5000), "unknown error");
    cr_assert_str_eq(sl_strerror(7), "unknown error");
}

static void *other_thread(void *arg) {
    (void)arg;
    cr_assert_str_eq(sl_error_detail(), "", "details are per thread");
    sl_fail(SL_EIO, "thread detail");
    return NULL;
}

Test(error, details_are_per_thread) {
    sl_error_clear();
    cr_assert_eq(sl_fail(SL_EBOUNDS, "offset %d past %s", 12, "end"), SL_EBOUNDS);
    cr_assert_str_eq(sl_error_detail(), "offset 12 past end");
    pthread_t t;
    pthread_create(&t, NULL, other_thread, NULL);
    pthread_join(t, NULL);
    cr_assert_str_eq(sl_error_detail(), "offset 12 past end");
    sl_error_clear();
    cr_assert_str_eq(sl_error_detail(), "");
}

struct captured {
    int n;
    enum sl_log_level level;
    char msg[256];
};

static void capture(enum sl_log_level level, const char *msg, void *user) {
    struct captured *c = user;
    c->n++;
    c->level = level;
    snprintf(c->msg, sizeof c->msg, "%s", msg);
}

Test(error, log_callback_and_level) {
    struct captured c = {0};
    sl_log_set(capture, &c);
    sl_log(SL_LOG_INFO, "hidden %d", 1); /* below the default WARN threshold */
    cr_assert_eq(c.n, 0);
    sl_log(SL_LOG_WARN, "shown %d", 2);
    cr_assert_eq(c.n, 1);
    cr_assert_eq(c.level, SL_LOG_WARN);
    cr_assert_str_eq(c.msg, "shown 2");
    sl_log_set_level(SL_LOG_DEBUG);
    sl_log(SL_LOG_DEBUG, "debug");
    cr_assert_eq(c.n, 2);
    cr_assert_str_eq(c.msg, "debug");
    sl_log_set_level(SL_LOG_WARN);
    sl_log_set(NULL, NULL); /* back to stderr */
    sl_log(SL_LOG_ERROR, "to stderr");
    cr_assert_eq(c.n, 2);
}

/* Wrapping the previous detail in a new one is a common pattern; it must not read the buffer
 * it is writing. */
Test(error, detail_can_wrap_the_previous_detail) {
    sl_fail(SL_EIO, "inner %d", 7);
    cr_assert_eq(sl_fail(SL_EBOUNDS, "outer: %s (again: %s)", sl_error_detail(), sl_error_detail()), SL_EBOUNDS);
    cr_assert_str_eq(sl_error_detail(), "outer: inner 7 (again: inner 7)");
}
