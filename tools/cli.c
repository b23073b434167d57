/* Shared CLI helpers: configuration from the environment is read here, at the edge. */
#include "tools/cli.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/internal.h"
#include "storage/regular-file.h"
#include "spotlight/error.h"

int cli_model_dir(char *buf, size_t cap) {
    const char *dir = getenv("SPOTLIGHT_MODELS");
    int n;
    if (dir && *dir)
        n = snprintf(buf, cap, "%s", dir);
    else if ((dir = getenv("XDG_CACHE_HOME")) && *dir)
        n = snprintf(buf, cap, "%s/spotlight", dir);
    else if ((dir = getenv("HOME")) && *dir)
        n = snprintf(buf, cap, "%s/.cache/spotlight", dir);
    else
        return -1;
    return n > 0 && (size_t)n < cap ? 0 : -1;
}

int cli_model_path(const char *given, char *buf, size_t cap) {
    if (given) {
        if (snprintf(buf, cap, "%s", given) >= (int)cap) {
            fprintf(stderr, "spotlight: model path is too long\n");
            return -1;
        }
        return 0;
    }
    char dir[4096];
    if (cli_model_dir(dir, sizeof dir) != 0) {
        fprintf(stderr, "spotlight: no model given (-m) and no cache directory (set SPOTLIGHT_MODELS)\n");
        return -1;
    }
    if (snprintf(buf, cap, "%s/%s", dir, SL_DEFAULT_MODEL_FILE) >= (int)cap) {
        fprintf(stderr, "spotlight: model path is too long\n");
        return -1;
    }
    if (access(buf, R_OK) != 0) {
        fprintf(stderr, "spotlight: default model %s not found; run tools/fetch-model.sh, or pass -m MODEL.gguf\n", buf);
        return -1;
    }
    return 0;
}

void cli_report(const char *what, int rc) {
    const char *detail = sl_error_detail();
    if (detail[0])
        fprintf(stderr, "spotlight: %s: %s: %s\n", what, sl_strerror(rc), detail);
    else
        fprintf(stderr, "spotlight: %s: %s\n", what, sl_strerror(rc));
}

int cli_cores(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

void cli_check_threads(const char *cmd, int64_t n_threads) {
    int cores = cli_cores();
    if (n_threads > cores)
        fprintf(stderr, "spotlight %s: warning: -t %" PRId64 " is more than the %d cores this process may use; threads will "
                        "share cores (slower)\n", cmd, n_threads, cores);
}

static void on_sigbus(int sig) {
    (void)sig;
    static const char msg[] = "spotlight: a mapped file was truncated or became unreadable while in use (SIGBUS)\n";
    ssize_t w = write(STDERR_FILENO, msg, sizeof msg - 1);
    (void)w;
    _exit(CLI_EXIT_SIGBUS);
}

void cli_catch_sigbus(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigbus;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, NULL);
}

double cli_now(void) { return sl_now_s(); }

int cli_parse_i64(const char *cmd, const char *opt, const char *s, int64_t lo, int64_t hi, int64_t *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (*s == '\0' || *end != '\0' || errno || v < lo || v > hi) {
        fprintf(stderr, "spotlight %s: %s must be an integer in [%" PRId64 ", %" PRId64 "], got '%s'\n", cmd, opt, lo, hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

int cli_parse_f32(const char *cmd, const char *opt, const char *s, float lo, float hi, float *out) {
    char *end;
    float v = strtof(s, &end);
    if (*s == '\0' || *end != '\0' || !(v >= lo && v <= hi)) {
        fprintf(stderr, "spotlight %s: %s must be a number in [%g, %g], got '%s'\n", cmd, opt, (double)lo, (double)hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

int cli_open_input(const char *cmd, const char *path) {
    struct stat st;
    int fd = sl_open_regular(path, O_RDONLY, 0, &st);
    if (fd == SL_EINVAL)
        fprintf(stderr, "spotlight %s: cannot read %s: %s\n", cmd, path,
                S_ISDIR(st.st_mode) ? "it is a directory" : "not a regular file");
    else if (fd < 0)
        fprintf(stderr, "spotlight %s: cannot open %s: %s\n", cmd, path, strerror(-fd));
    return fd < 0 ? -1 : fd;
}

char *cli_read_file_max(const char *cmd, const char *path, int64_t max, size_t *len) {
    int fd = cli_open_input(cmd, path);
    if (fd < 0) return NULL;
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_size > max || (uint64_t)st.st_size >= SIZE_MAX) {
        fprintf(stderr, "spotlight %s: %s is larger than the %" PRId64 " bytes read at most\n", cmd, path, max);
        close(fd);
        return NULL;
    }
    /* the size as of now, plus a byte to see whether the file grew past the limit meanwhile */
    size_t cap = (size_t)st.st_size + 1, n = 0;
    char *buf = malloc(cap + 1);
    int err = buf ? 0 : ENOMEM;
    while (!err) {
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) err = errno;
        if (r <= 0) break;
        n += (size_t)r;
        if ((int64_t)n > max) {
            fprintf(stderr, "spotlight %s: %s is larger than the %" PRId64 " bytes read at most\n", cmd, path, max);
            free(buf);
            close(fd);
            return NULL;
        }
        if (n == cap) { /* growing while read: follow it, up to the limit */
            size_t nc = cap * 2 < (size_t)max + 1 ? cap * 2 : (size_t)max + 1;
            char *nb = realloc(buf, nc + 1);
            if (!nb) err = ENOMEM;
            else buf = nb, cap = nc;
        }
    }
    close(fd);
    if (err) {
        free(buf);
        fprintf(stderr, "spotlight %s: cannot read %s: %s\n", cmd, path, strerror(err));
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

char *cli_read_file(const char *cmd, const char *path, size_t *len) {
    return cli_read_file_max(cmd, path, CLI_MAX_TEXT_BYTES, len);
}
