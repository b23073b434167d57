/* A small, defensive reader for one-line JSON objects (JSONL manifests, job logs): it pulls
 * the string values of a few keys out of an object and checks, then skips, everything else.
 * Strings are decoded to UTF-8 (escapes, \uXXXX and surrogate pairs included). Not a general
 * JSON library: no numbers or nested values are returned, only validated. */
#ifndef SL_TOOLS_JSON_READ_H
#define SL_TOOLS_JSON_READ_H

#include <stddef.h>

/* Parses the object in s[0..len) (whitespace around it allowed, nothing else). For each of the
 * n keys, vals[i] receives a malloc'd NUL-terminated copy of its string value (the caller
 * frees it), or NULL when the key is absent or null; a key given twice keeps the last value.
 * Returns 0, or -1 with a short reason ("expected ':' at column 7", "\"id\" is not a string")
 * in err, every vals[i] NULL then. Strings holding U+0000, lone surrogates, raw control
 * characters or invalid UTF-8 are refused; nesting deeper than 64 is refused. One exception:
 * a lone \udc80..\udcff escape is the raw byte 0x80..0xff (Python's "surrogateescape", as
 * json-writer.c writes bytes that are not UTF-8), so a file name that is not UTF-8 reads back
 * as it was written; a value may then hold such bytes. */
int json_read_object(const char *s, size_t len, const char *const *keys, int n, char **vals, char *err,
                     size_t errcap);

/* The length of the longest valid UTF-8 prefix of s[0..n) (n when all of it is valid): strict,
 * no overlong forms, surrogates or code points past U+10FFFF. */
size_t utf8_valid_prefix(const char *s, size_t n);

#endif
