/* Error text, per-thread failure details and the log callback. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core/internal.h"

static _Thread_local char tl_detail[512];

static const char *const k_error_text[] = {
    [SL_EINVAL - SL_EINVAL] = "invalid argument",
    [SL_ENOMEM - SL_EINVAL] = "out of memory",
    [SL_EIO - SL_EINVAL] = "I/O error",
    [SL_EBADMAGIC - SL_EINVAL] = "bad magic (not a file of the expected format)",
    [SL_EVERSION - SL_EINVAL] = "unsupported format version",
    [SL_ETRUNCATED - SL_EINVAL] = "file is truncated",
    [SL_EBADTYPE - SL_EINVAL] = "unknown type",
    [SL_EBOUNDS - SL_EINVAL] = "out of bounds",
    [SL_EDUPLICATE - SL_EINVAL] = "duplicate entry",
    [SL_ENOTFOUND - SL_EINVAL] = "not found",
    [SL_EFORMAT - SL_EINVAL] = "malformed content",
    [SL_EUNSUPPORTED - SL_EINVAL] = "not supported",
    [SL_ESHAPE - SL_EINVAL] = "tensor shape mismatch",
    [SL_ENODEV - SL_EINVAL] = "no usable device",
    [SL_EDEVICE - SL_EINVAL] = "device error",
    [SL_ECORRUPT - SL_EINVAL] = "data corrupted (checksum mismatch)",
    [SL_EMISMATCH - SL_EINVAL] = "stored data belongs to a different model",
    [SL_ECLOSED - SL_EINVAL] = "already closed",
};

const char *sl_strerror(int err) {
    if (err == 0) return "success";
    if (err >= SL_EINVAL && err < SL_E_LAST_) return k_error_text[err - SL_EINVAL];
    if (err < 0 && err > -4096) return strerror(-err);
    return "unknown error";
}

const char *sl_error_detail(void) { return tl_detail; }

void sl_error_clear(void) { tl_detail[0] = '\0'; }

int sl_fail(int err, const char *fmt, ...) {
    /* Format aside first: callers may pass sl_error_detail() to wrap the previous detail. */
    char buf[sizeof tl_detail];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    memcpy(tl_detail, buf, sizeof buf);
    return err;
}

static void default_log(enum sl_log_level level, const char *msg, void *user) {
    static const char *const names[] = {"debug", "info", "warning", "error"};
    (void)user;
    fprintf(stderr, "spotlight: %s: %s\n", names[level], msg);
}

static sl_log_fn g_log_fn = default_log;
static void *g_log_user;
static enum sl_log_level g_log_level = SL_LOG_WARN;

void sl_log_set(sl_log_fn fn, void *user) {
    g_log_fn = fn ? fn : default_log;
    g_log_user = fn ? user : NULL;
}

void sl_log_set_level(enum sl_log_level level) { g_log_level = level; }

void sl_log(enum sl_log_level level, const char *fmt, ...) {
    if (level < g_log_level) return;
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    g_log_fn(level, buf, g_log_user);
}
