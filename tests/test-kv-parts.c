/* Building blocks of the KV store: the CRC32C checksum (published vectors, hardware against
 * table path, chaining) and host memory (mapping, NUMA node, mlock and register fallbacks). */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/capability.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "core/internal.h"
#include "spotlight/device.h"
#include "spotlight/kv-store.h"
#include "spotlight/error.h"
#include "storage/crc32c.h"
#include "storage/host-mem.h"

/* ---- CRC32C -------------------------------------------------------------------------------- */

/* Bit at a time straight from the definition: the reference both fast paths must match. */
static uint32_t crc_bitwise(uint32_t crc, const uint8_t *p, size_t n) {
    crc = ~crc;
    while (n--) {
        crc ^= *p++;
        for (int i = 0; i < 8; i++) crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1)));
    }
    return ~crc;
}

static void check_all(const void *data, size_t n, uint32_t want, const char *what) {
    cr_assert_eq(sl_crc32c(0, data, n), want, "%s: sl_crc32c %08x want %08x", what,
                 sl_crc32c(0, data, n), want);
    cr_assert_eq(sl_crc32c_sw(0, data, n), want, "%s: sl_crc32c_sw %08x want %08x", what,
                 sl_crc32c_sw(0, data, n), want);
    cr_assert_eq(crc_bitwise(0, data, n), want, "%s: bitwise reference", what);
}

Test(crc32c, known_vectors) {
    cr_log_info("sl_crc32c uses %s", sl_crc32c_hw() ? "SSE4.2" : "the table path");
    check_all("123456789", 9, 0xE3069283u, "123456789");
    check_all("", 0, 0, "empty");
    cr_assert_eq(sl_crc32c(0, NULL, 0), 0);
    cr_assert_eq(sl_crc32c(0x12345678u, NULL, 0), 0x12345678u, "no bytes, no change");

    /* RFC 3720 appendix B.4 (iSCSI). */
    uint8_t buf[48];
    memset(buf, 0, 32);
    check_all(buf, 32, 0x8A9136AAu, "32 zeros");
    memset(buf, 0xff, 32);
    check_all(buf, 32, 0x62A8AB43u, "32 x 0xff");
    for (int i = 0; i < 32; i++) buf[i] = (uint8_t)i;
    check_all(buf, 32, 0x46DD794Eu, "ascending");
    for (int i = 0; i < 32; i++) buf[i] = (uint8_t)(31 - i);
    check_all(buf, 32, 0x113FDB5Cu, "descending");
    static const uint8_t read10[48] = {
        0x01, 0xc0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00,
        0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x18, 0x28, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    };
    check_all(read10, sizeof read10, 0xD9963A56u, "iSCSI read(10) PDU");
}

static void fill_random(uint8_t *p, size_t n, unsigned *seed) {
    for (size_t i = 0; i < n; i++) p[i] = (uint8_t)(rand_r(seed) >> 7);
}

Test(crc32c, hw_matches_sw_every_length_and_alignment) {
    unsigned seed = 1234;
    enum { MAXN = 1100 };
    uint8_t *buf = malloc(MAXN + 64);
    cr_assert(buf);
    fill_random(buf, MAXN + 64, &seed);
    for (size_t n = 0; n <= MAXN; n++) {
        size_t off = (size_t)rand_r(&seed) % 64;
        uint32_t init = n % 3 == 0 ? 0 : (uint32_t)rand_r(&seed) * 2654435761u;
        uint32_t want = crc_bitwise(init, buf + off, n);
        cr_assert_eq(sl_crc32c_sw(init, buf + off, n), want, "sw n=%zu off=%zu", n, off);
        cr_assert_eq(sl_crc32c(init, buf + off, n), want, "n=%zu off=%zu", n, off);
    }
    free(buf);
}

/* Lengths around the three-stream block sizes (3 x 256 and 3 x 8192), where the join happens. */
Test(crc32c, hw_matches_sw_long_buffers) {
    unsigned seed = 99;
    size_t max = 3 * 8192 * 4 + 4096;
    uint8_t *buf = malloc(max + 16);
    cr_assert(buf);
    fill_random(buf, max + 16, &seed);
    static const size_t base[] = {768, 1536, 3 * 8192, 2 * 3 * 8192, 3 * 3 * 8192 + 768};
    for (size_t b = 0; b < sizeof base / sizeof base[0]; b++)
        for (int d = -9; d <= 9; d++)
            for (size_t off = 0; off < 16; off += 5) {
                size_t n = (size_t)((long)base[b] + d);
                uint32_t sw = sl_crc32c_sw(7, buf + off, n);
                cr_assert_eq(sl_crc32c(7, buf + off, n), sw, "n=%zu off=%zu", n, off);
            }
    for (int i = 0; i < 40; i++) {
        size_t n = (size_t)rand_r(&seed) % max, off = (size_t)rand_r(&seed) % 16;
        cr_assert_eq(sl_crc32c(0, buf + off, n), sl_crc32c_sw(0, buf + off, n), "n=%zu", n);
    }
    cr_assert_eq(sl_crc32c_sw(0, buf, 100000), crc_bitwise(0, buf, 100000));
    free(buf);
}

Test(crc32c, chaining_equals_concatenation) {
    unsigned seed = 5;
    enum { N = 600 };
    uint8_t buf[N];
    fill_random(buf, N, &seed);
    uint32_t whole = sl_crc32c(0, buf, N);
    for (size_t cut = 0; cut <= N; cut++) {
        cr_assert_eq(sl_crc32c(sl_crc32c(0, buf, cut), buf + cut, N - cut), whole, "cut %zu", cut);
        cr_assert_eq(sl_crc32c_sw(sl_crc32c_sw(0, buf, cut), buf + cut, N - cut), whole,
                     "sw cut %zu", cut);
    }
    /* Mixed paths and a long tail. */
    size_t big = 200000;
    uint8_t *b = malloc(big);
    cr_assert(b);
    fill_random(b, big, &seed);
    uint32_t all = sl_crc32c_sw(0, b, big);
    cr_assert_eq(sl_crc32c(sl_crc32c_sw(0, b, 12345), b + 12345, big - 12345), all);
    cr_assert_eq(sl_crc32c_sw(sl_crc32c(0, b, 77777), b + 77777, big - 77777), all);
    free(b);
    cr_assert_eq(sl_crc32c(sl_crc32c(0, "1234", 4), "56789", 5), 0xE3069283u);
}

/* ---- host memory --------------------------------------------------------------------------- */

struct logs {
    int n;
    char last[512];
};

static void capture(enum sl_log_level level, const char *msg, void *user) {
    struct logs *l = user;
    l->n++;
    snprintf(l->last, sizeof l->last, "%s", msg);
}

static bool any_log_contains(struct logs *l, const char *word) {
    return l->n > 0 && strstr(l->last, word) != NULL;
}

static bool all_zero(const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (p[i]) return false;
    return true;
}

Test(host_mem, alloc_is_zeroed_aligned_writable) {
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    struct sl_host_mem_params p = {.numa_node = -1};
    struct sl_host_mem m;
    cr_assert_eq(sl_host_mem_alloc(&m, 100000, &p), 0, "%s", sl_error_detail());
    cr_assert(m.ptr);
    cr_assert_eq((uintptr_t)m.ptr % page, 0);
    cr_assert_eq(m.bytes, (100000 + page - 1) / page * page);
    cr_assert(all_zero(m.ptr, m.bytes));
    memset(m.ptr, 0xab, m.bytes);
    cr_assert_eq(((uint8_t *)m.ptr)[m.bytes - 1], 0xab);
    cr_assert(!m.locked && !m.registered);
    sl_host_mem_free(&m);
    cr_assert_null(m.ptr);

    /* NULL params mean the defaults; zero bytes is an empty, successful allocation. */
    cr_assert_eq(sl_host_mem_alloc(&m, page, NULL), 0);
    cr_assert_eq(m.bytes, page);
    sl_host_mem_free(&m);
    cr_assert_eq(sl_host_mem_alloc(&m, 0, &p), 0);
    cr_assert_null(m.ptr);
    cr_assert_eq(m.bytes, 0);
    sl_host_mem_free(&m);
}

Test(host_mem, numa_node_is_unbound_or_valid) {
    int32_t local = sl_host_mem_local_node();
    cr_log_info("local NUMA node: %d", (int)local);
    cr_assert(local >= -1);
    struct sl_host_mem_params p = {.numa_node = -1};
    struct sl_host_mem m;
    cr_assert_eq(sl_host_mem_alloc(&m, 1 << 20, &p), 0, "%s", sl_error_detail());
    cr_assert(m.numa_node == -1 || m.numa_node == local, "node %d local %d", (int)m.numa_node,
              (int)local);
    sl_host_mem_free(&m);
    if (local >= 0) {
        p.numa_node = local;
        cr_assert_eq(sl_host_mem_alloc(&m, 1 << 20, &p), 0, "%s", sl_error_detail());
        cr_assert(m.numa_node == -1 || m.numa_node == local);
        memset(m.ptr, 1, m.bytes);
        sl_host_mem_free(&m);
    }
}

Test(host_mem, invalid_node_is_einval) {
    struct sl_host_mem_params p = {.numa_node = 100000};
    struct sl_host_mem m;
    memset(&m, 0x5a, sizeof m);
    cr_assert_eq(sl_host_mem_alloc(&m, 4096, &p), SL_EINVAL);
    cr_assert(strstr(sl_error_detail(), "100000"), "%s", sl_error_detail());
    cr_assert_null(m.ptr);
    cr_assert_eq(m.bytes, 0);
    p.numa_node = -2;
    cr_assert_eq(sl_host_mem_alloc(&m, 4096, &p), SL_EINVAL);
    cr_assert_null(m.ptr);
}

/* AddressSanitizer replaces mlock/munlock with no-ops that return 0, so the kernel's count
 * cannot confirm them there. */
#if defined(__SANITIZE_ADDRESS__)
#define SL_MLOCK_IS_REAL 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SL_MLOCK_IS_REAL 0
#endif
#endif
#ifndef SL_MLOCK_IS_REAL
#define SL_MLOCK_IS_REAL 1
#endif

/* kB locked by this process, from /proc (the kernel's own account), or -1. */
static long vm_locked_kb(void) {
    if (!SL_MLOCK_IS_REAL) return -1;
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    long kb = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmLck: %ld kB", &kb) == 1) break;
    fclose(f);
    return kb;
}

static void check_mlock(size_t bytes) {
    struct logs l = {0};
    sl_log_set(capture, &l);
    long before = vm_locked_kb();
    struct sl_host_mem_params p = {.numa_node = -1, .mlock = true};
    struct sl_host_mem m;
    cr_assert_eq(sl_host_mem_alloc(&m, bytes, &p), 0, "%s", sl_error_detail());
    long during = vm_locked_kb();
    cr_log_info("mlock %zu bytes: %s", bytes, m.locked ? "locked" : l.last);
    if (m.locked) {
        if (before >= 0) cr_assert_geq(during - before, (long)(m.bytes / 1024));
        cr_assert(all_zero(m.ptr, m.bytes));
    } else {
        cr_assert(any_log_contains(&l, "mlock"), "unlocked without a warning");
        if (before >= 0) cr_assert_eq(during, before);
    }
    memset(m.ptr, 3, m.bytes);
    sl_host_mem_free(&m);
    if (before >= 0) cr_assert_eq(vm_locked_kb(), before, "munlock on free");
    sl_log_set(NULL, NULL);
}

Test(host_mem, mlock_small) {
    check_mlock(64 << 10);
}

/* Drops CAP_IPC_LOCK from this (forked) test process, so a root runner still meets the
 * RLIMIT_MEMLOCK limit. Best effort: without it the test checks the locked branch instead. */
static void drop_ipc_lock(void) {
    struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3};
    struct __user_cap_data_struct data[2];
    if (syscall(SYS_capget, &hdr, data) != 0) return;
    data[CAP_TO_INDEX(CAP_IPC_LOCK)].effective &= ~CAP_TO_MASK(CAP_IPC_LOCK);
    syscall(SYS_capset, &hdr, data);
}

/* With no lock allowance mlock fails (unless the capability could not be dropped); either way
 * the struct must say what happened. */
Test(host_mem, mlock_without_allowance) {
    struct rlimit rl = {0, 0};
    setrlimit(RLIMIT_MEMLOCK, &rl);
    drop_ipc_lock();
    check_mlock(1 << 20);
}

struct hook {
    int reg_calls, unreg_calls;
    void *ptr, *unreg_ptr;
    size_t bytes;
    int fail_with;
};

static int fake_reg(void *ptr, size_t bytes, void *user) {
    struct hook *h = user;
    h->reg_calls++;
    h->ptr = ptr;
    h->bytes = bytes;
    return h->fail_with;
}

static void fake_unreg(void *ptr, void *user) {
    struct hook *h = user;
    h->unreg_calls++;
    h->unreg_ptr = ptr;
}

Test(host_mem, register_hook) {
    struct hook h = {0};
    struct sl_host_mem_params p = {.numa_node = -1, .reg = fake_reg, .unreg = fake_unreg,
                                   .user = &h};
    struct sl_host_mem m;
    cr_assert_eq(sl_host_mem_alloc(&m, 10000, &p), 0, "%s", sl_error_detail());
    cr_assert_eq(h.reg_calls, 1);
    cr_assert_eq(h.ptr, m.ptr);
    cr_assert_eq(h.bytes, m.bytes);
    cr_assert(m.registered);
    cr_assert_eq(h.unreg_calls, 0);
    sl_host_mem_free(&m);
    cr_assert_eq(h.unreg_calls, 1);
    cr_assert_eq(h.unreg_ptr, h.ptr);
    sl_host_mem_free(&m); /* now zeroed: a no-op */
    cr_assert_eq(h.unreg_calls, 1);
}

Test(host_mem, failing_register_hook_falls_back) {
    struct logs l = {0};
    sl_log_set(capture, &l);
    struct hook h = {.fail_with = SL_EDEVICE};
    struct sl_host_mem_params p = {.numa_node = -1, .reg = fake_reg, .unreg = fake_unreg,
                                   .user = &h};
    struct sl_host_mem m;
    cr_assert_eq(sl_host_mem_alloc(&m, 10000, &p), 0, "%s", sl_error_detail());
    cr_assert_eq(h.reg_calls, 1);
    cr_assert(!m.registered);
    cr_assert(any_log_contains(&l, "regist"), "warned: '%s'", l.last);
    int logged = l.n;
    memset(m.ptr, 7, m.bytes);
    cr_assert_eq(((uint8_t *)m.ptr)[m.bytes - 1], 7);
    sl_host_mem_free(&m);
    cr_assert_eq(h.unreg_calls, 0, "never unregister what was not registered");

    /* The same failure again is not repeated in the log. */
    cr_assert_eq(sl_host_mem_alloc(&m, 10000, &p), 0);
    cr_assert_eq(h.reg_calls, 2);
    cr_assert_eq(l.n, logged);
    sl_host_mem_free(&m);
    sl_log_set(NULL, NULL);
}

Test(host_mem, register_without_unregister_is_einval) {
    struct hook h = {0};
    struct sl_host_mem_params p = {.numa_node = -1, .reg = fake_reg, .user = &h};
    struct sl_host_mem m;
    cr_assert_eq(sl_host_mem_alloc(&m, 4096, &p), SL_EINVAL);
    cr_assert_eq(h.reg_calls, 0);
    cr_assert_null(m.ptr);
}

Test(host_mem, free_of_zeroed_struct_is_noop) {
    struct sl_host_mem m;
    memset(&m, 0, sizeof m);
    sl_host_mem_free(&m);
    sl_host_mem_free(NULL);
    cr_assert_null(m.ptr);
}

/* Without a usable device the params stay as they were: pageable memory near the caller. */
Test(kv_params, for_device_without_gpu_leaves_params_alone) {
    if (sl_cuda_device_count() > 0) cr_skip_test("a CUDA device is present (tests/test-gpu-kv.c)");
    struct sl_kv_store_params p = sl_kv_store_default_params();
    struct sl_kv_store_params before = p;
    cr_assert_eq(sl_kv_store_params_for_device(&p, 0), SL_ENODEV);
    cr_assert(memcmp(&p, &before, sizeof p) == 0);
    cr_assert_eq(sl_kv_store_params_for_device(NULL, 0), SL_EINVAL);
}
