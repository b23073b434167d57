/* Uses the installed public API: opens the GGUF given as argv[1] and prints its architecture. */
#include <stdio.h>

#include <spotlight/error.h>
#include <spotlight/gguf.h>

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    sl_gguf *g = NULL;
    int rc = sl_gguf_open(argv[1], &g);
    if (rc) {
        fprintf(stderr, "consumer: %s: %s\n", sl_strerror(rc), sl_error_detail());
        return 1;
    }
    const char *arch = "";
    sl_gguf_get_str(g, "general.architecture", &arch);
    printf("arch=%s tensors=%lld\n", arch, (long long)sl_gguf_tensor_count(g));
    sl_gguf_free(g);
    return 0;
}
