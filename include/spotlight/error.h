/* Spotlight error codes and logging.
 *
 * Every fallible library call returns 0 (or a non-negative count) on success and a negative
 * value on failure: either -errno for operating-system failures, or one of the SL_E* codes
 * below, which sit far below any errno value so the two never collide. sl_strerror() turns
 * either kind into text; sl_error_detail() gives the one-line specifics of the last failure
 * on the calling thread ("tensor 'x' ends at byte 123 past file size 100"). */
#ifndef SPOTLIGHT_ERROR_H
#define SPOTLIGHT_ERROR_H

#include <stdarg.h>

#ifdef __cplusplus
extern "C" {
#endif

enum sl_error {
    SL_OK = 0,
    SL_EINVAL = -1000,  /* invalid argument from the caller */
    SL_ENOMEM,          /* allocation failed */
    SL_EIO,             /* read/write failed or short */
    SL_EBADMAGIC,       /* not a file of the expected kind */
    SL_EVERSION,        /* format version not supported */
    SL_ETRUNCATED,      /* file ends before the structure it declares */
    SL_EBADTYPE,        /* unknown value or tensor type */
    SL_EBOUNDS,         /* offset, size or position outside the file, store or limit */
    SL_EDUPLICATE,      /* duplicate key or tensor name */
    SL_ENOTFOUND,       /* required key or tensor missing */
    SL_EFORMAT,         /* structurally invalid content (bad count, alignment, shape) */
    SL_EUNSUPPORTED,    /* valid input that this build does not handle (architecture, type) */
    SL_ESHAPE,          /* tensor shape does not match the model configuration */
    SL_ENODEV,          /* no usable device (GPU) */
    SL_EDEVICE,         /* device runtime (CUDA, cuBLAS) call failed */
    SL_ECORRUPT,        /* checksum mismatch */
    SL_EMISMATCH,       /* stored data belongs to another owner (model fingerprint) */
    SL_ECLOSED,         /* object already closed */
    SL_E_LAST_          /* sentinel, not an error */
};

/* Text for an error code (SL_E* or -errno). Never NULL; static storage. */
const char *sl_strerror(int err);

/* Details of the most recent failure recorded on this thread, or "" if none.
 * Valid until the next failing call on the same thread. */
const char *sl_error_detail(void);

/* Clears this thread's error detail. */
void sl_error_clear(void);

enum sl_log_level {
    SL_LOG_DEBUG = 0,
    SL_LOG_INFO = 1,
    SL_LOG_WARN = 2,
    SL_LOG_ERROR = 3,
};

/* Log callback: msg is one line without a trailing newline. */
typedef void (*sl_log_fn)(enum sl_log_level level, const char *msg, void *user);

/* Installs a log callback (NULL restores the default, which writes WARN and above to stderr).
 * Not thread-safe against concurrent logging: call it during start-up. */
void sl_log_set(sl_log_fn fn, void *user);

/* Minimum level passed to the callback (default SL_LOG_WARN). */
void sl_log_set_level(enum sl_log_level level);

#ifdef __cplusplus
}
#endif
#endif
