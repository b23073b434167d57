/* A minimal streaming JSON writer for the CLI's --json outputs (commas and escaping handled
 * here so subcommands only say what they emit). */
#ifndef SL_TOOLS_JSON_WRITER_H
#define SL_TOOLS_JSON_WRITER_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

struct json_writer {
    FILE *f;
    int depth;
    bool need_comma[32];
};

void json_init(struct json_writer *w, FILE *f);
void json_obj_begin(struct json_writer *w, const char *key); /* key NULL inside arrays/top */
void json_obj_end(struct json_writer *w);
void json_arr_begin(struct json_writer *w, const char *key);
void json_arr_end(struct json_writer *w);
void json_str(struct json_writer *w, const char *key, const char *s);
void json_int(struct json_writer *w, const char *key, int64_t v);
void json_num(struct json_writer *w, const char *key, double v);
void json_bool(struct json_writer *w, const char *key, bool v);
void json_null(struct json_writer *w, const char *key);

#endif
