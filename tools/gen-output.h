/* Generated text as it streams: accumulates decoded bytes, ends generation at a stop string
 * (which is never printed), and prints only text that cannot turn out to be the start of a
 * stop string. */
#ifndef SL_TOOLS_GEN_OUTPUT_H
#define SL_TOOLS_GEN_OUTPUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

struct gen_output {
    char *text;
    size_t len, cap, printed;
    const char *const *stops;
    int n_stops;
    FILE *stream; /* NULL: collect only */
};

void gen_output_init(struct gen_output *o, const char *const *stops, int n_stops, FILE *stream);
/* Appends n bytes; returns 1 when a stop string completed (text is cut before it), 0 to go
 * on, -1 when out of memory. */
int gen_output_append(struct gen_output *o, const char *bytes, size_t n);
/* Prints whatever is still held back. */
void gen_output_finish(struct gen_output *o);
void gen_output_free(struct gen_output *o);

#endif
