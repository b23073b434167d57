/* KV store durability and ownership: commit points that survive kill -9 at any instant, full
 * disks at every write and sync of a context's ingest (the final sync included), the writer
 * lock, stale temporaries, and what create refuses to replace (non-stores, stores, devices,
 * FIFOs, folders, symlinks planted at the temporary name, names too long for NAME_MAX).
 * The context cases run a tiny generated model (tests/gguf-builder.c) with the K/V in RAM and
 * written through to the store (dense attention: every run computes the same K/V bit for bit,
 * so a reference store made in one go tells whether what a killed run left is right). */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "spotlight/context.h"
#include "spotlight/error.h"
#include "spotlight/kv-store.h"
#include "spotlight/model.h"
#include "tests/gguf-builder.h"
#include "tests/kv-fault-fixture.h"
#include "tests/kv-test-util.h"

enum { VOCAB = 300, CHUNK = 16, TOTAL = 20 * CHUNK, KILLS = 60 };

static sl_model *g_model;
static void load_model(void) {
    const struct gb_model_spec spec = {.arch = "llama", .n_layer = 3, .n_embd = 128, .n_ff = 192, .n_head = 4,
                                       .n_head_kv = 2, .n_vocab = VOCAB, .n_ctx = 1024, .tied = 1};
    OK(gb_load_model(&spec, &g_model));
}
static void unload_model(void) {
    sl_model_free(g_model);
    kvt_cleanup();
}
TestSuite(kv_durable, .init = load_model, .fini = unload_model, .timeout = 120);
TestSuite(kv_owner, .fini = kvt_cleanup);

static int32_t token(int64_t i) { return (int32_t)((i * 37 + i / 7) % VOCAB); }

/* A context on the store at path: dense, K/V in RAM and written through. resume: reopen it. */
static int open_ctx(const char *path, bool resume, struct sl_kv_io_fault *fault, sl_context **out) {
    struct sl_context_params p = sl_context_default_params();
    p.n_ctx = 512, p.n_batch = CHUNK, p.n_threads = 1, p.kv_path = path, p.kv_in_ram = true;
    p.kv_resume = resume, p.kv_overwrite = !resume, p.kv_fault = fault;
    struct sl_attn_params a = sl_attn_default_params(SL_ATTN_DENSE);
    int rc = sl_context_create(g_model, &p, out);
    if (!rc && (rc = sl_context_set_attention(*out, &a))) {
        sl_context_free(*out);
        *out = NULL;
    }
    return rc;
}

/* Ingests tokens [from, to) chunk by chunk. */
static int ingest(sl_context *c, int64_t from, int64_t to, void (*reported)(int64_t n, void *u), void *u) {
    int32_t t[CHUNK];
    for (int64_t p = from; p < to; p += CHUNK) {
        for (int i = 0; i < CHUNK; i++) t[i] = token(p + i);
        int rc = sl_context_eval(c, t, CHUNK, false);
        if (rc) return rc;
        if (reported) reported(sl_context_n_past(c), u);
    }
    return 0;
}

static sl_kv_store_t open_reader(const char *path) {
    struct sl_kv_store_params p = sl_kv_store_default_params();
    p.tier = SL_KV_TIER_FILE, p.path = path, p.read_only = true, p.buffered_io = true;
    cr_assert_eq(sl_model_fingerprint(g_model, p.fingerprint), 0);
    sl_kv_store_t s = NULL;
    int rc = sl_kv_store_open(NULL, &p, &s);
    cr_assert_eq(rc, 0, "%s: %s (%s)", ctx, sl_strerror(rc), sl_error_detail());
    return s;
}

/* The store at path holds exactly n positions, the first n of the token sequence, with the
 * reference store's K/V for the first n_kv (positions evaluated in the same chunks). */
static void expect_prefix_kv(const char *path, sl_kv_store_t ref, int64_t n, int64_t n_kv) {
    sl_kv_store_t s = open_reader(path);
    cr_assert_eq(sl_kv_store_n_tokens(s), n, "%s: %lld positions, expected %lld", ctx,
                 (long long)sl_kv_store_n_tokens(s), (long long)n);
    static uint32_t tags[TOTAL];
    static uint16_t k[2][TOTAL * 32], v[2][TOTAL * 32];
    OK(sl_kv_store_read_tags(s, 0, n, tags));
    for (int64_t i = 0; i < n; i++) cr_assert_eq(tags[i], (uint32_t)token(i), "%s: tag %lld", ctx, (long long)i);
    struct sl_kv_shape sh;
    sl_kv_store_shape(s, &sh);
    for (int32_t l = 0; n_kv && l < sh.n_layer; l++)
        for (int32_t h = 0; h < sh.n_head_kv; h++) {
            OK(sl_kv_store_read_range(s, l, h, 0, n_kv, k[0], v[0]));
            OK(sl_kv_store_read_range(ref, l, h, 0, n_kv, k[1], v[1]));
            cr_assert_arr_eq(k[0], k[1], (size_t)(n_kv * sh.head_dim * 2), "%s: K of layer %d head %d", ctx, l, h);
            cr_assert_arr_eq(v[0], v[1], (size_t)(n_kv * sh.head_dim * 2), "%s: V of layer %d head %d", ctx, l, h);
        }
    sl_kv_store_free(s);
}

static void expect_prefix(const char *path, sl_kv_store_t ref, int64_t n) { expect_prefix_kv(path, ref, n, n); }

static sl_kv_store_t make_reference(const char *dir) {
    char *path = kvt_join(dir, "ref.slkv");
    sl_context *c;
    OK(open_ctx(path, false, NULL, &c));
    OK(ingest(c, 0, TOTAL, NULL, NULL));
    OK(sl_context_close(c));
    sl_context_free(c);
    sl_kv_store_t ref = open_reader(path);
    free(path);
    return ref;
}

static void report_fd(int64_t n, void *u) {
    if (write(*(int *)u, &n, sizeof n) != sizeof n) _exit(3);
}

/* A child ingests the sequence into the store (resuming what is there), writing every commit
 * point it is told of to a pipe; it is killed with SIGKILL at a random instant. After each
 * kill the store opens, holds a whole number of chunks, at least the last reported, at most
 * one chunk more (the one being synced when the kill came), with the right tokens and K/V. */
Test(kv_durable, kill9_at_random_points) {
    char *dir = kvt_tmpdir(), *path = kvt_join(dir, "s.slkv");
    sl_kv_store_t ref = make_reference(dir);
    uint64_t rng = (uint64_t)time(NULL);
    cr_log_info("kill -9 loop seed %llu", (unsigned long long)rng);
    int64_t have = 0, kills_mid = 0;
    for (int it = 0; it < KILLS; it++) {
        int fds[2];
        cr_assert_eq(pipe(fds), 0);
        fflush(NULL);
        pid_t pid = fork();
        cr_assert(pid >= 0);
        if (pid == 0) {
            close(fds[0]);
            sl_context *c;
            int rc = open_ctx(path, have > 0, NULL, &c);
            if (!rc) rc = ingest(c, have, TOTAL, report_fd, &fds[1]);
            if (!rc) rc = sl_context_close(c);
            _exit(rc ? 1 : 0);
        }
        close(fds[1]);
        struct timespec d = {0, (long)kvt_rand_below(&rng, 40) * 1000000L};
        nanosleep(&d, NULL);
        kill(pid, SIGKILL);
        int st;
        waitpid(pid, &st, 0);
        int64_t reported = have, n;
        while (read(fds[0], &n, sizeof n) == sizeof n) reported = n;
        close(fds[0]);
        cr_assert(WIFSIGNALED(st) || (WIFEXITED(st) && WEXITSTATUS(st) == 0), "child failed: status %d", st);
        snprintf(ctx, sizeof ctx, "[kill %d after %lld reported]", it, (long long)reported);
        if (have == 0 && !kvt_exists(path)) continue; /* killed before the store existed */
        sl_kv_store_t s = open_reader(path);
        n = sl_kv_store_n_tokens(s);
        sl_kv_store_free(s);
        cr_assert(n % CHUNK == 0 && n >= reported && n <= reported + CHUNK && n >= have,
                  "%s: the store holds %lld positions", ctx, (long long)n);
        expect_prefix(path, ref, n);
        kills_mid += n > 0 && n < TOTAL;
        have = n;
        if (have == TOTAL) { /* done: start over */
            unlink(path);
            have = 0;
        }
    }
    cr_log_info("%lld of %d kills left a part-ingested store", (long long)kills_mid, KILLS);
    cr_assert_gt(kills_mid, KILLS / 4, "too few kills landed mid-ingest to mean anything");
    /* a killed run leaves no temporaries once the next writer has looked */
    sl_context *c;
    OK(open_ctx(path, kvt_exists(path) && have > 0, NULL, &c));
    sl_context_free(c);
    int entries = kvt_dir_entries(dir);
    cr_assert(entries >= 2 && entries <= 4, "%d entries: stale temporaries or lock files left", entries);
    sl_kv_store_free(ref);
    kvt_rmtree(dir);
    free(dir);
    free(path);
}

struct durable {
    int64_t n;
};
static void note(int64_t n, void *u) { ((struct durable *)u)->n = n; }

/* -ENOSPC at every write and every sync of an ingest of 4 chunks and 3 decode tokens, the
 * final sync included: the call that needed it fails (eval or close), and the store then holds
 * the last durable point or what came after it, never less, with the right data. */
Test(kv_durable, enospc_at_every_write_and_sync) {
    char *dir = kvt_tmpdir(), *path = kvt_join(dir, "s.slkv");
    sl_kv_store_t ref = make_reference(dir);
    const enum sl_kv_io_op ops[] = {SL_KV_IO_WRITE, SL_KV_IO_SYNC};
    for (int o = 0; o < 2; o++) {
        int64_t calls = -1;
        for (int64_t nth = -1; nth == -1 || nth < calls; nth++) {
            snprintf(ctx, sizeof ctx, "[%s fault at call %lld]", o ? "SYNC" : "WRITE", (long long)nth);
            struct sl_kv_io_fault f = {ops[o], nth, -ENOSPC, false, {0}};
            unlink(path); /* each run on its own: what is there after it is its doing */
            sl_context *c;
            int rc = open_ctx(path, false, &f, &c);
            struct durable dp = {0};
            bool failed = rc != 0;
            if (!rc) {
                rc = ingest(c, 0, 4 * CHUNK, note, &dp);
                for (int i = 0; !rc && i < 3; i++) {
                    int32_t t = token(4 * CHUNK + i);
                    rc = sl_context_eval(c, &t, 1, false);
                }
                failed = rc != 0;
                int rc2 = sl_context_close(c);
                if (!rc && !rc2) dp.n = 4 * CHUNK + 3;
                failed = failed || rc2 != 0;
                if (rc2) cr_assert(strstr(sl_error_detail(), path) && !strstr(sl_error_detail(), ".partial"),
                                   "%s: the error names the wrong file: %s", ctx, sl_error_detail());
                sl_context_free(c);
            }
            if (nth < 0) {
                cr_assert(!failed, "%s: the fault-free run failed: %s", ctx, sl_error_detail());
                calls = f.calls[ops[o]];
                cr_log_info("%s calls in the scenario: %lld", o ? "SYNC" : "WRITE", (long long)calls);
                continue;
            }
            cr_assert(failed, "%s: no call reported the failure", ctx);
            if (!kvt_exists(path)) continue; /* the create itself failed */
            sl_kv_store_t s = open_reader(path);
            int64_t n = sl_kv_store_n_tokens(s);
            sl_kv_store_free(s);
            cr_assert(n >= dp.n && n <= 4 * CHUNK + 3, "%s: %lld positions, %lld were durable", ctx,
                      (long long)n, (long long)dp.n);
            /* decode tokens' K/V differ in rounding from a prefill chunk's: their tags only */
            expect_prefix_kv(path, ref, n, n <= 4 * CHUNK ? n : 4 * CHUNK);
        }
    }
    sl_kv_store_free(ref);
    kvt_rmtree(dir);
    free(dir);
    free(path);
}

/* Resuming a store that holds nothing is an error, not a silent fresh start. */
Test(kv_durable, resume_of_nothing_refused) {
    char *dir = kvt_tmpdir(), *path = kvt_join(dir, "s.slkv");
    snprintf(ctx, sizeof ctx, "[empty resume]");
    sl_context *c;
    OK(open_ctx(path, false, NULL, &c));
    OK(sl_context_close(c));
    sl_context_free(c);
    EXPECT_RC(open_ctx(path, true, NULL, &c), SL_EINVAL);
    cr_assert(strstr(sl_error_detail(), "holds no tokens"), "%s", sl_error_detail());
    kvt_rmtree(dir);
    free(dir);
    free(path);
}

/* ---- ownership ------------------------------------------------------------------------------ */

static struct sl_kv_store_params params(const char *path) {
    struct sl_kv_store_params p = kvt_params(&kvt_tiers[KVT_FILE_PREAD], 64, path);
    return p;
}

/* One writer at a time, in this process or another; readers share; the error names the
 * holder's PID; the lock file goes with the last holder. */
Test(kv_owner, one_writer) {
    snprintf(ctx, sizeof ctx, "[lock]");
    char *dir = kvt_tmpdir(), *path = kvt_join(dir, "s.kv");
    struct sl_kv_store_params p = params(path);
    sl_kv_store_t a = NULL, b = NULL;
    OK(sl_kv_store_create(&SH, &p, &a));
    char pid[32];
    snprintf(pid, sizeof pid, "process %ld ", (long)getpid());
    p.overwrite = true;
    EXPECT_RC(sl_kv_store_create(&SH, &p, &b), -EBUSY);
    cr_assert(strstr(sl_error_detail(), pid), "%s", sl_error_detail());
    EXPECT_RC(sl_kv_store_open(&SH, &p, &b), -EBUSY);
    cr_assert(strstr(sl_error_detail(), pid), "%s", sl_error_detail());
    p.read_only = true;
    EXPECT_RC(sl_kv_store_open(&SH, &p, &b), -EBUSY);
    OK(sl_kv_store_close(a));
    sl_kv_store_free(a);
    cr_assert_eq(kvt_dir_entries(dir), 1, "the lock file outlived its writer");
    OK(sl_kv_store_open(&SH, &p, &a));
    OK(sl_kv_store_open(&SH, &p, &b)); /* readers share */
    p.read_only = false;
    sl_kv_store_t w = NULL;
    EXPECT_RC(sl_kv_store_open(&SH, &p, &w), -EBUSY);
    cr_assert(strstr(sl_error_detail(), "a reader"), "%s", sl_error_detail());
    sl_kv_store_free(a);
    sl_kv_store_free(b);
    cr_assert_eq(kvt_dir_entries(dir), 1, "the lock file outlived its readers");
    /* another process holds it: its PID is named; killed, the lock goes with it */
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    fflush(NULL);
    pid_t child = fork();
    if (child == 0) {
        sl_kv_store_t s = NULL;
        char c = sl_kv_store_open(&SH, &p, &s) == 0 ? 'y' : 'n';
        if (write(fds[1], &c, 1) != 1) _exit(1);
        pause();
        _exit(0);
    }
    char c = 0;
    cr_assert(read(fds[0], &c, 1) == 1 && c == 'y');
    snprintf(pid, sizeof pid, "process %ld ", (long)child);
    EXPECT_RC(sl_kv_store_open(&SH, &p, &w), -EBUSY);
    cr_assert(strstr(sl_error_detail(), pid), "%s", sl_error_detail());
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    OK(sl_kv_store_open(&SH, &p, &w));
    sl_kv_store_free(w);
    close(fds[0]);
    close(fds[1]);
    kvt_rmtree(dir);
    free(dir);
    free(path);
}

static pid_t dead_pid(void) {
    pid_t pid = fork();
    if (pid == 0) _exit(0);
    waitpid(pid, NULL, 0);
    return pid;
}

/* Temporaries of processes that died are removed by the next writer; a live one's stay. */
Test(kv_owner, stale_partials_removed) {
    snprintf(ctx, sizeof ctx, "[stale]");
    char *dir = kvt_tmpdir(), *path = kvt_join(dir, "s.kv");
    char name[64];
    snprintf(name, sizeof name, "s.kv.partial-%ld", (long)dead_pid());
    char *dead = kvt_join(dir, name), *live = kvt_join(dir, "s.kv.partial-1"), *other = kvt_join(dir, "t.kv.partial-1");
    const char *files[] = {dead, live, other};
    for (int i = 0; i < 3; i++) {
        FILE *fp = fopen(files[i], "w");
        cr_assert(fp && fclose(fp) == 0);
    }
    struct sl_kv_store_params p = params(path);
    sl_kv_store_t s = NULL;
    OK(sl_kv_store_create(&SH, &p, &s));
    sl_kv_store_free(s);
    cr_assert(!kvt_exists(dead), "a dead process's temporary was left");
    cr_assert(kvt_exists(live) && kvt_exists(other), "a live process's temporary was removed");
    /* open (resume) cleans up as well */
    snprintf(name, sizeof name, "s.kv.partial-%ld", (long)dead_pid());
    char *dead2 = kvt_join(dir, name);
    FILE *fp = fopen(dead2, "w");
    cr_assert(fp && fclose(fp) == 0);
    OK(sl_kv_store_open(&SH, &p, &s));
    sl_kv_store_free(s);
    cr_assert(!kvt_exists(dead2));
    kvt_rmtree(dir);
    free(dir); free(path); free(dead); free(dead2); free(live); free(other);
}

/* What create refuses to replace, and that a refusal changes nothing. */
Test(kv_owner, create_refuses_to_replace) {
    snprintf(ctx, sizeof ctx, "[refuse]");
    char *dir = kvt_tmpdir(), *path = kvt_join(dir, "s.kv"), *text = kvt_join(dir, "notes.txt");
    struct sl_kv_store_params p = params(path);
    sl_kv_store_t s = NULL;
    struct kvt_ref r;
    char *made = make_store(dir, "s.kv", &SH, 64, 20, &r, 5);
    EXPECT_RC(sl_kv_store_create(&SH, &p, &s), -EEXIST); /* a store, without overwrite */
    cr_assert(strstr(sl_error_detail(), path) && strstr(sl_error_detail(), "--kv-overwrite"), "%s", sl_error_detail());
    s = must_open(&SH, &p);
    cr_assert_eq(sl_kv_store_n_tokens(s), 20, "a refused create changed the store");
    sl_kv_store_free(s);
    s = NULL;
    FILE *fp = fopen(text, "w");
    fputs("my notes", fp);
    fclose(fp);
    struct sl_kv_store_params pt = params(text);
    for (int ow = 0; ow < 2; ow++) {
        pt.overwrite = ow;
        EXPECT_RC(sl_kv_store_create(&SH, &pt, &s), -EEXIST); /* not a store: never */
        char buf[9] = {0};
        cr_assert(kvt_read_at(text, 0, buf, 8) == 0 && !strcmp(buf, "my notes"));
    }
    const char *specials[] = {"/dev/null", dir};
    char *fifo = kvt_join(dir, "fifo");
    cr_assert_eq(mkfifo(fifo, 0600), 0);
    for (int i = 0; i < 3; i++) {
        struct sl_kv_store_params ps = params(i < 2 ? specials[i] : fifo);
        ps.overwrite = true;
        snprintf(ctx, sizeof ctx, "[refuse %s]", ps.path);
        cr_assert_lt(sl_kv_store_create(&SH, &ps, &s), 0, "%s: create replaced it", ctx);
        cr_assert_lt(sl_kv_store_open(&SH, &ps, &s), 0, "%s: opened it", ctx); /* a FIFO must not block */
    }
    struct stat st;
    cr_assert(stat("/dev/null", &st) == 0 && S_ISCHR(st.st_mode));
    cr_assert(stat(fifo, &st) == 0 && S_ISFIFO(st.st_mode));
    p.overwrite = true; /* a store, with overwrite: replaced */
    OK(sl_kv_store_create(&SH, &p, &s));
    cr_assert_eq(sl_kv_store_n_tokens(s), 0);
    sl_kv_store_free(s);
    kvt_ref_free(&r);
    kvt_rmtree(dir);
    free(dir); free(path); free(text); free(fifo); free(made);
}

/* A symlink planted at the temporary's name is not followed (the file it points at keeps its
 * bytes); names too long for a temporary are refused before anything is made; missing parent
 * folders are made; errors after the rename name the store, not the temporary. */
Test(kv_owner, temporary_names) {
    snprintf(ctx, sizeof ctx, "[temp names]");
    char *dir = kvt_tmpdir(), *path = kvt_join(dir, "s.kv"), *victim = kvt_join(dir, "victim");
    FILE *fp = fopen(victim, "w");
    fputs("precious", fp);
    fclose(fp);
    char *tmp = NULL;
    cr_assert(asprintf(&tmp, "%s.partial-%ld", path, (long)getpid()) > 0);
    cr_assert_eq(symlink(victim, tmp), 0);
    struct sl_kv_store_params p = params(path);
    sl_kv_store_t s = NULL;
    OK(sl_kv_store_create(&SH, &p, &s));
    sl_kv_store_free(s);
    char buf[9] = {0};
    cr_assert(kvt_read_at(victim, 0, buf, 8) == 0 && !strcmp(buf, "precious"), "the symlink was followed");
    struct stat st;
    cr_assert(lstat(tmp, &st) != 0, "the temporary's name is still taken");
    /* NAME_MAX: the longest name that leaves room for ".partial-" + 10 digits */
    char name[NAME_MAX + 2];
    for (int len = NAME_MAX - 19; len <= NAME_MAX - 18; len++) {
        memset(name, 'n', (size_t)len);
        name[len] = 0;
        char *sub = kvt_tmpdir(), *lp = kvt_join(sub, name);
        struct sl_kv_store_params pl = params(lp);
        int rc = sl_kv_store_create(&SH, &pl, &s);
        if (len <= NAME_MAX - 19) {
            cr_assert_eq(rc, 0, "%d-byte name: %s", len, sl_error_detail());
            sl_kv_store_free(s);
        } else {
            cr_assert_eq(rc, -ENAMETOOLONG, "%d-byte name accepted", len);
            cr_assert(strstr(sl_error_detail(), lp), "the error does not name the path");
            cr_assert_eq(kvt_dir_entries(sub), 0, "a refused name left files");
        }
        kvt_rmtree(sub);
        free(sub);
        free(lp);
    }
    /* parents made */
    char *deep = kvt_join(dir, "a/b/c/s.kv");
    struct sl_kv_store_params pd = params(deep);
    OK(sl_kv_store_create(&SH, &pd, &s));
    sl_kv_store_free(s);
    /* a write error after the rename names the store */
    struct sl_kv_io_fault f = {SL_KV_IO_WRITE, 0, -ENOSPC, true, {0}};
    p.overwrite = true;
    OK(sl_kv_store_create(&SH, &p, &s));
    sl_kv_store_free(s);
    p.fault = &f;
    f.nth = -1;
    s = must_open(&SH, &p);
    f.nth = f.calls[SL_KV_IO_WRITE];
    struct kvt_ref r;
    kvt_ref_init(&r, &SH, 64);
    uint64_t rng = 3;
    int rc = kvt_fill(s, &r, 40, &rng);
    if (!rc) rc = sl_kv_store_sync(s);
    cr_assert_eq(rc, -ENOSPC);
    cr_assert(strstr(sl_error_detail(), path) && !strstr(sl_error_detail(), ".partial"), "%s", sl_error_detail());
    sl_kv_store_free(s);
    kvt_ref_free(&r);
    kvt_rmtree(dir);
    free(dir); free(path); free(victim); free(tmp); free(deep);
}
