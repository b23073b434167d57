/* The inputs of `spotlight summarize` (tools/doc-input.c, tools/json-read.c): the JSON reader
 * decodes escapes and surrogate pairs and refuses malformed lines with a column; HTML becomes
 * text (tags, scripts, styles, comments gone, entities decoded, whitespace collapsed); bad
 * documents get one-line reasons; manifests report malformed lines by number; directories
 * are listed sorted, without hidden files or the job's own output. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/test-fs.h"
#include "tools/doc-input.h"
#include "tools/json-read.h"
#include "tools/json-writer.h"

static const char *const KEYS[] = {"id", "path", "text"};

static int read_obj(const char *s, char **v, char *err) {
    return json_read_object(s, strlen(s), KEYS, 3, v, err, 160);
}

static void free3(char **v) {
    for (int i = 0; i < 3; i++) free(v[i]);
}

Test(json_read, strings_and_escapes) {
    char *v[3], err[160];
    cr_assert_eq(read_obj(" {\"id\": \"a\\\"b\\\\c\\/\\n\\t\", \"n\": [1, -2.5e3, {\"x\": null}], \"ok\": true,"
                          " \"text\": \"caf\\u00e9 \\ud83d\\ude00 \xe2\x82\xac\"} ", v, err), 0, "%s", err);
    cr_assert_str_eq(v[0], "a\"b\\c/\n\t");
    cr_assert_null(v[1]);
    cr_assert_str_eq(v[2], "caf\xc3\xa9 \xf0\x9f\x98\x80 \xe2\x82\xac");
    free3(v);
    cr_assert_eq(read_obj("{\"id\": \"x\", \"id\": \"y\", \"path\": null}", v, err), 0);
    cr_assert_str_eq(v[0], "y");
    cr_assert_null(v[1]);
    free3(v);
    cr_assert_eq(read_obj("{}", v, err), 0);
    cr_assert(!v[0] && !v[1] && !v[2]);
}

Test(json_read, malformed) {
    static const struct {
        const char *in, *why;
    } cases[] = {
        {"", "not a JSON object at column 1"},
        {"[1]", "not a JSON object"},
        {"{\"id\": \"x\"", "expected ',' or '}' at column 11"},
        {"{\"id\" \"x\"}", "expected ':' at column 7"},
        {"{\"id\": \"x}", "unterminated string"},
        {"{\"id\": 3}", "\"id\" is not a string"},
        {"{\"id\": \"\\q\"}", "bad escape"},
        {"{\"id\": \"\\ud83d\"}", "unpaired surrogate"},
        {"{\"id\": \"\\ude00x\"}", "unpaired surrogate"},
        {"{\"id\": \"\\u12\"}", "bad \\u escape"},
        {"{\"id\": \"\\u0000\"}", "\\u0000"},
        {"{\"id\": \"a\tb\"}", "control character"},
        {"{\"id\": \"\xff\"}", "invalid UTF-8"},
        {"{\"id\": \"x\"} extra", "text after the object"},
        {"{\"n\": 01}", "expected ',' or '}'"},
        {"{\"n\": -}", "bad value"},
        {"{\"n\": 1.}", "bad number"},
        {"{\"n\": tru}", "bad value"},
        {"{\"id\": \"x\",}", "expected a key"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char *v[3] = {(char *)1, (char *)1, (char *)1}, err[160] = "";
        cr_assert_eq(read_obj(cases[i].in, v, err), -1, "accepted %s", cases[i].in);
        cr_assert(!v[0] && !v[1] && !v[2]);
        cr_assert(strstr(err, cases[i].why), "%s: '%s' lacks '%s'", cases[i].in, err, cases[i].why);
    }
    /* nesting is bounded, not recursed without limit */
    char deep[400] = "{\"a\":";
    for (int i = 0; i < 100; i++) strcat(deep, "[");
    char *v[3], err[160];
    cr_assert_eq(read_obj(deep, v, err), -1);
    cr_assert(strstr(err, "nested too deeply"), "%s", err);
}

Test(json_read, utf8_prefix) {
    cr_assert_eq(utf8_valid_prefix("abc", 3), 3);
    cr_assert_eq(utf8_valid_prefix("a\xc3\xa9z", 4), 4);
    cr_assert_eq(utf8_valid_prefix("ab\xff\xfe", 4), 2);
    cr_assert_eq(utf8_valid_prefix("a\xc0\xaf", 3), 1);         /* overlong */
    cr_assert_eq(utf8_valid_prefix("a\xed\xa0\x80", 4), 1);     /* surrogate */
    cr_assert_eq(utf8_valid_prefix("a\xf4\x90\x80\x80", 5), 1); /* past U+10FFFF */
    cr_assert_eq(utf8_valid_prefix("a\xe2\x82", 3), 1);         /* cut short */
}

/* Bytes that are not UTF-8 (file names) are written as lone \udc80..\udcff and read back as
 * the bytes: any C string survives json-writer.c then json-read.c. */
Test(json_read, names_that_are_not_utf8_round_trip) {
    static const char *const names[] = {"plain", "caf\xe9.txt", "\xff\xfe", "a\xed\xa0\x80" "b", "\xc3\xa9\xc3",
                                        "tab\there\x01\x7f", "q\"\\/\xf0\x9f\x98", "\xc3\xa9 ok \xf0\x9f\x98\x80"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        char *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);
        struct json_writer w;
        json_init(&w, f);
        json_obj_begin(&w, NULL);
        json_str(&w, "id", names[i]);
        json_obj_end(&w);
        fclose(f);
        cr_assert_eq(utf8_valid_prefix(buf, len), len, "the record is not UTF-8: %s", buf);
        char *v[3], err[160];
        cr_assert_eq(read_obj(buf, v, err), 0, "%s: %s", buf, err);
        cr_assert_str_eq(v[0], names[i], "%s", buf);
        free3(v);
        free(buf);
    }
    char *v[3], err[160];
    cr_assert_eq(read_obj("{\"id\": \"a\\udcffb\\udc80\"}", v, err), 0, "%s", err);
    cr_assert_str_eq(v[0], "a\xff" "b\x80");
    free3(v);
    /* below 0x80 a byte is ASCII, never escaped this way */
    cr_assert_eq(read_obj("{\"id\": \"\\udc41\"}", v, err), -1);
    cr_assert(strstr(err, "unpaired surrogate"), "%s", err);
}

static void html_is(const char *in, const char *want) {
    char *s = strdup(in);
    size_t n = html_to_text(s, strlen(s));
    cr_assert_eq(n, strlen(s));
    cr_assert_str_eq(s, want, "from %s", in);
    free(s);
}

Test(html, to_text) {
    html_is("<html><head><title>T</title><style>p{color:red}</style><script type=\"x\">if (a<b) "
            "document.write('<p>no</p>');</script></head><body><p>One &amp; two &lt;3&gt; &quot;q&quot; &#39;s&#39;"
            "</p><!-- a <p> comment --><p>caf&#233; &#x1F600; &nbsp;&nbsp; x&nbsp;y &bogus; &#;</p></body></html>",
            "T\nOne & two <3> \"q\" 's'\ncaf\xc3\xa9 \xf0\x9f\x98\x80 x y &bogus; &#;");
    html_is("  a\n\n  <b>bold</b>\t<a href=\"x>y\">link</a>  ", "a bold link");
    html_is("<SCRIPT>x</SCRIPT>after<br/>line", "after\nline");
    html_is("<scripts>kept</scripts>", "kept");
    html_is("&#0;&#xD800;&#99999999;", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
    html_is("<p>unclosed <script>never closed", "unclosed");
}

static void put(const char *dir, const char *name, const char *bytes, size_t n) {
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(bytes, 1, n, f), n);
    fclose(f);
}

static void load_fails(const char *dir, const char *name, int64_t max, const char *why) {
    char p[512], err[256];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    struct doc d = {.id = p, .path = p, .open = p};
    size_t n;
    char *t = doc_load(&d, max, &n, err, sizeof err);
    cr_assert_null(t, "%s loaded", name);
    cr_assert(strstr(err, why), "%s: '%s' lacks '%s'", name, err, why);
}

Test(doc, load_and_reasons) {
    char *dir = test_tmpdir("docinput");
    put(dir, "ok.txt", "\xef\xbb\xbf  hello\r\n world \n\n", 20);
    put(dir, "page.htm", "<p>a&amp;b</p>", 14);
    put(dir, "sniff.txt", "\n <!DOCTYPE html><p>x</p>", 25);
    put(dir, "empty.txt", "", 0);
    put(dir, "blank.html", "<p> &nbsp; </p><script>x</script>", 33);
    put(dir, "bin.dat", "abc\0def", 7);
    put(dir, "bad.txt", "ab\xff\xfe", 4);
    put(dir, "big.txt", "0123456789", 10);
    char p[512], err[256];
    size_t n;
    snprintf(p, sizeof p, "%s/ok.txt", dir);
    struct doc d = {.id = p, .path = p, .open = p};
    char *t = doc_load(&d, 100, &n, err, sizeof err);
    cr_assert_not_null(t, "%s", err);
    cr_assert_str_eq(t, "hello\r\n world");
    cr_assert_eq(n, 13);
    free(t);
    snprintf(p, sizeof p, "%s/page.htm", dir);
    t = doc_load(&d, 100, &n, err, sizeof err);
    cr_assert_str_eq(t, "a&b");
    free(t);
    snprintf(p, sizeof p, "%s/sniff.txt", dir);
    t = doc_load(&d, 100, &n, err, sizeof err);
    cr_assert_str_eq(t, "x");
    free(t);
    struct doc inline_doc = {.id = "x", .text = "<html><body>hi &gt; there</body></html>"};
    t = doc_load(&inline_doc, 100, &n, err, sizeof err);
    cr_assert_str_eq(t, "hi > there");
    free(t);
    load_fails(dir, "empty.txt", 100, "empty document");
    load_fails(dir, "blank.html", 100, "empty document");
    load_fails(dir, "bin.dat", 100, "binary file (NUL byte at byte 3)");
    load_fails(dir, "bad.txt", 100, "not valid UTF-8 at byte 2");
    load_fails(dir, "big.txt", 9, "larger than --max-bytes (10 > 9 bytes)");
    load_fails(dir, "nope.txt", 100, "cannot open: No such file");
    load_fails(dir, ".", 100, "not a regular file");
    struct doc bad = {.id = "x", .error = "manifest line 3: bad"};
    cr_assert_null(doc_load(&bad, 100, &n, err, sizeof err));
    cr_assert_str_eq(err, "manifest line 3: bad");
    test_rmtree(dir);
}

Test(doc, directories_sorted_without_own_files) {
    char *dir = test_tmpdir("docinput"), p[512], skip[600];
    snprintf(p, sizeof p, "%s/sub", dir);
    cr_assert_eq(mkdir(p, 0777), 0);
    put(dir, "b.txt", "b", 1);
    put(dir, "a.txt", "a", 1);
    put(dir, "sub/c.md", "c", 1);
    put(dir, ".hidden", "h", 1);
    put(dir, "out.jsonl", "o", 1);
    put(dir, "out.jsonl.log", "o", 1);
    snprintf(p, sizeof p, "%s/link", dir);
    cr_assert_eq(symlink(dir, p), 0); /* a loop, were links followed */
    char real[512];
    cr_assert_not_null(realpath(dir, real));
    snprintf(skip, sizeof skip, "%s/out.jsonl", real);
    struct doc_list l = {.skip_prefix = skip};
    cr_assert_eq(doc_list_add_path(&l, dir), 0);
    cr_assert_eq(l.n, 3);
    const char *want[] = {"a.txt", "b.txt", "sub/c.md"};
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, want[i]);
        cr_assert_str_eq(l.v[i].id, p);
        cr_assert_str_eq(l.v[i].path, p);
        cr_assert_eq(l.v[i].size, 1);
    }
    doc_list_free(&l);
    test_rmtree(dir);
}

Test(doc, manifest_lines) {
    char *dir = test_tmpdir("docinput");
    const char m[] = "{\"id\": \"t1\", \"text\": \"hello \\u00e9\"}\n"
                     "\n"
                     "{\"id\": \"m2\", \"path\": 3}\n"
                     "not json\n"
                     "{\"path\": \"rel.txt\", \"extra\": [1, 2]}\r\n"
                     "{\"text\": \"no id\"}\n"
                     "{\"id\": \"both\", \"path\": \"x\", \"text\": \"y\"}\n"
                     "{\"id\": \"abs\", \"path\": \"/etc/hostname\"}";
    put(dir, "jobs.jsonl", m, sizeof m - 1);
    char p[512];
    snprintf(p, sizeof p, "%s/jobs.jsonl", dir);
    struct doc_list l = {0};
    char *msgs = NULL;
    size_t msgs_len = 0;
    FILE *err = open_memstream(&msgs, &msgs_len);
    cr_assert_eq(doc_list_add_manifest(&l, p, err), 0);
    fclose(err);
    cr_assert_str_eq(msgs, "manifest:3: \"path\" is not a string\n"
                           "manifest:4: not a JSON object at column 1\n"
                           "manifest:6: a \"text\" entry needs an \"id\"\n"
                           "manifest:7: has both \"path\" and \"text\"\n");
    free(msgs);
    cr_assert_eq(l.n, 7);
    cr_assert_str_eq(l.v[0].id, "t1");
    cr_assert_str_eq(l.v[0].text, "hello \xc3\xa9");
    cr_assert_null(l.v[0].path);
    cr_assert_str_eq(l.v[1].id, "m2"); /* the id of a malformed line, when readable */
    cr_assert_str_eq(l.v[1].error, "manifest line 3: \"path\" is not a string");
    cr_assert_str_eq(l.v[2].id, "line-4");
    cr_assert_not_null(l.v[2].error);
    cr_assert_str_eq(l.v[3].id, "rel.txt"); /* no id: the path as given */
    cr_assert_str_eq(l.v[3].path, "rel.txt");
    snprintf(p, sizeof p, "%s/rel.txt", dir);
    cr_assert_str_eq(l.v[3].open, p); /* relative to the manifest */
    cr_assert_null(l.v[3].error);
    cr_assert_str_eq(l.v[4].id, "line-6");
    cr_assert_str_eq(l.v[5].id, "both");
    cr_assert_str_eq(l.v[6].open, "/etc/hostname");
    doc_list_free(&l);
    cr_assert_eq(doc_list_add_manifest(&l, "/nonexistent/jobs.jsonl", stderr), -1);
    test_rmtree(dir);
}

/* A FIFO, a device or /dev/zero given as a document or manifest is refused at once: opening a
 * FIFO for reading would wait for a writer forever, and /dev/zero never ends. */
Test(doc, fifos_and_devices_refused, .timeout = 10) {
    char *dir = test_tmpdir("docinput"), p[512], err[256];
    snprintf(p, sizeof p, "%s/pipe.txt", dir);
    cr_assert_eq(mkfifo(p, 0666), 0);
    size_t n;
    struct doc d = {.id = p, .path = p, .open = p};
    cr_assert_null(doc_load(&d, 100, &n, err, sizeof err));
    cr_assert_str_eq(err, "not a regular file");
    d.open = "/dev/zero";
    cr_assert_null(doc_load(&d, 100, &n, err, sizeof err));
    cr_assert_str_eq(err, "not a regular file");
    struct doc_list l = {0};
    FILE *e = tmpfile();
    cr_assert_eq(doc_list_add_manifest(&l, p, e), -1);
    cr_assert_eq(doc_list_add_manifest(&l, "/dev/zero", e), -1);
    cr_assert_eq(l.n, 0);
    fclose(e);
    doc_list_free(&l);
    test_rmtree(dir);
}
