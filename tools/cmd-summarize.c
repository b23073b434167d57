/* `spotlight summarize`: an offline job that summarizes many long documents into JSONL, one
 * record per document, resumable after a crash or kill at any point.
 *
 *   inputs (doc-input.c) -> per document: read + clean -> a direct or map-reduce summary with
 *   one model and one context (summarizer.c) -> a record appended to this process's log and
 *   fsynced (job-log.c) -> once every document has one, OUT written atomically.
 *
 * Greedy decoding by default, so a rerun gives the same summaries.
 *
 * Scaled out, each process summarizes one shard (shard.c: documents balanced by size) into its
 * own log, and the job's records are merged into OUT once every document has one (job-log.h):
 *   mpirun -np N   shards = ranks, over the documents without a record when the job starts
 *                  (every rank reads the same records before any rank appends: the first
 *                  collective); rank 0 merges after the last one (shard-mpi.h).
 *   Slurm array    shards = array tasks (SLURM_ARRAY_TASK_ID / _COUNT), over all documents,
 *                  since tasks start at unrelated times and never talk; each task tries the
 *                  merge when done, and the one that finds every record writes OUT. */
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "spotlight/error.h"
#include "tools/attn-opts.h"
#include "tools/cli.h"
#include "tools/commands.h"
#include "tools/doc-input.h"
#include "tools/job-log.h"
#include "tools/json-writer.h"
#include "tools/out-file.h"
#include "tools/shard-mpi.h"
#include "tools/shard.h"
#include "tools/summarizer.h"

#define CMD "spotlight summarize"
#define DEFAULT_INSTRUCTION "Summarize the following text in a few sentences."

/* How the process was started, from the environment: read once, in parse_args. */
struct launch {
    bool mpi;           /* by an MPI launcher (mpirun, srun --mpi): its variables are set */
    int64_t mpi_procs;  /* the process count the launcher gives (0: not said) */
    bool array;         /* a Slurm array task */
    int32_t task_shard; /* its shard: (SLURM_ARRAY_TASK_ID - _MIN) / _STEP */
    int32_t task_count; /* SLURM_ARRAY_TASK_COUNT */
};

struct sum_opts {
    const char *model, *manifest, *out, *instruction;
    char **inputs;
    int n_inputs;
    int64_t n_predict, n_ctx, chunk_tokens, max_bytes;
    int32_t n_threads;
    float temp;
    uint64_t seed;
    bool quiet;
    struct attn_opts attn;
    struct launch launch;
};

static void usage(FILE *f) {
    fprintf(f,
            "usage: spotlight summarize [-m MODEL] (FILE|DIR)... | --manifest JOBS.jsonl  -o OUT.jsonl [options]\n"
            "  Summarizes every document into OUT.jsonl, one JSON record per line and document:\n"
            "  {\"id\", \"path\", \"summary\", \"method\", \"calls\", \"tokens_in\", \"tokens_out\", \"seconds\", \"error\"}.\n"
            "  method: direct, or map-reduce for documents longer than the context; calls: model calls;\n"
            "  tokens_in/out: the document's and the summary's tokens; error: null, or why it has no summary.\n"
            "  Records go to OUT.jsonl.log first (fsynced one by one); rerunning the same command after\n"
            "  a crash or kill skips the documents that have one. OUT.jsonl appears when all do.\n"
            "  FILE|DIR                text, markdown or HTML files; directories are recursed (sorted)\n"
            "      --manifest FILE     JSONL, one {\"id\": ..., \"path\": ...} or {\"id\": ..., \"text\": ...} per line\n"
            "                          (relative paths are taken from the manifest's directory)\n"
            "  -o, --output FILE       the JSONL output\n"
            "  -m, --model FILE        GGUF model (default: the default model in the cache)\n"
            "  -n, --n-predict N       most tokens per summary (default 128)\n"
            "  -c, --ctx-size N        context length (default: the model's trained context)\n"
            "      --chunk-tokens N    map-reduce chunk (default: what fits beside the prompt and summary)\n"
            "      --max-bytes N       larger documents get an error record (default 16 MiB)\n"
            "      --instruction TEXT  what the model is asked (default \"" DEFAULT_INSTRUCTION "\")\n"
            "  -t, --threads N         threads (default: physical cores)\n"
            "      --temp T            temperature (default 0: greedy, the same summary every run)\n"
            "  -s, --seed S            RNG seed with --temp > 0 (default 0)\n"
            "  -q, --quiet             no progress or summary lines\n"
            "  Scaled out (see README): under mpirun each rank summarizes a share of the documents,\n"
            "  balanced by size, into OUT.jsonl.shard-RANK.log and rank 0 writes OUT.jsonl; in a Slurm\n"
            "  array (SLURM_ARRAY_TASK_ID, SLURM_ARRAY_TASK_COUNT) each task does one share, and the\n"
            "  last to finish writes OUT.jsonl. Rerunning with any number of processes resumes.\n");
    attn_opts_usage(f);
}

/* The launcher's variables (CONVENTIONS 6: read here and nowhere else): 0, or 2 after one line. */
static int read_launch(struct launch *l) {
    memset(l, 0, sizeof *l);
    const char *procs = getenv("OMPI_COMM_WORLD_SIZE");
    if (!procs) procs = getenv("PMI_SIZE");
    l->mpi = procs || getenv("PMIX_RANK");
    if (procs && cli_parse_i64("summarize", "the launcher's process count", procs, 1, INT32_MAX, &l->mpi_procs)) return 2;
    const char *id = getenv("SLURM_ARRAY_TASK_ID"), *count = getenv("SLURM_ARRAY_TASK_COUNT");
    if (!id) return 0;
    const char *min = getenv("SLURM_ARRAY_TASK_MIN"), *step = getenv("SLURM_ARRAY_TASK_STEP");
    int64_t vid, vcount, vmin = 0, vstep = 1;
    if (!count) {
        fprintf(stderr, CMD ": SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not (Slurm 18.08 or later sets both)\n");
        return 2;
    }
    if (cli_parse_i64("summarize", "SLURM_ARRAY_TASK_ID", id, 0, INT32_MAX, &vid) ||
        cli_parse_i64("summarize", "SLURM_ARRAY_TASK_COUNT", count, 1, INT32_MAX, &vcount) ||
        (min && cli_parse_i64("summarize", "SLURM_ARRAY_TASK_MIN", min, 0, INT32_MAX, &vmin)) ||
        (step && cli_parse_i64("summarize", "SLURM_ARRAY_TASK_STEP", step, 1, INT32_MAX, &vstep)))
        return 2;
    if (shard_of_array_task(vid, vmin, vstep, vcount, &l->task_shard)) {
        fprintf(stderr, CMD ": Slurm array task %" PRId64 " is not one of %" PRId64 " tasks from %" PRId64 " in steps of %" PRId64
                        " (give sbatch a range: --array=0-%" PRId64 ")\n",
                vid, vcount, vmin, vstep, vcount - 1);
        return 2;
    }
    l->array = true;
    l->task_count = (int32_t)vcount;
    return 0;
}

static int parse_args(int argc, char **argv, struct sum_opts *o) {
    enum { O_MANIFEST = 256, O_CHUNK, O_MAXB, O_INSTR, O_TEMP };
    static const struct option base[] = {
        {"model", required_argument, 0, 'm'},      {"output", required_argument, 0, 'o'},
        {"manifest", required_argument, 0, O_MANIFEST}, {"n-predict", required_argument, 0, 'n'},
        {"ctx-size", required_argument, 0, 'c'},   {"chunk-tokens", required_argument, 0, O_CHUNK},
        {"max-bytes", required_argument, 0, O_MAXB}, {"instruction", required_argument, 0, O_INSTR},
        {"threads", required_argument, 0, 't'},    {"temp", required_argument, 0, O_TEMP},
        {"seed", required_argument, 0, 's'},       {"quiet", no_argument, 0, 'q'},
        {"help", no_argument, 0, 'h'}};
    struct option opts[sizeof base / sizeof *base + ATTN_OPT_COUNT + 1];
    attn_opts_table(base, (int)(sizeof base / sizeof *base), opts);
    memset(o, 0, sizeof *o);
    attn_opts_init(&o->attn);
    o->n_predict = 128;
    o->max_bytes = 16 << 20;
    o->instruction = DEFAULT_INSTRUCTION;
    optind = 1;
    opterr = 0;
    int c;
    int64_t v;
    while ((c = getopt_long(argc, argv, "m:o:n:c:t:s:qh", opts, NULL)) != -1) {
        switch (c) {
        case 'm': o->model = optarg; break;
        case 'o': o->out = optarg; break;
        case O_MANIFEST: o->manifest = optarg; break;
        case O_INSTR: o->instruction = optarg; break;
        case 'q': o->quiet = true; break;
        case 'n': if (cli_parse_i64("summarize", "-n", optarg, 1, 1 << 20, &o->n_predict)) return 2; break;
        case 'c': if (cli_parse_i64("summarize", "-c", optarg, 64, INT32_MAX, &o->n_ctx)) return 2; break;
        case O_CHUNK: if (cli_parse_i64("summarize", "--chunk-tokens", optarg, SUMMARIZER_MIN_CHUNK, INT32_MAX, &o->chunk_tokens)) return 2; break;
        case O_MAXB: if (cli_parse_i64("summarize", "--max-bytes", optarg, 1, INT64_C(1) << 40, &o->max_bytes)) return 2; break;
        case 't': if (cli_parse_i64("summarize", "-t", optarg, 1, 1024, &v)) return 2; o->n_threads = (int32_t)v; break;
        case 's': if (cli_parse_i64("summarize", "--seed", optarg, 0, INT64_MAX, &v)) return 2; o->seed = (uint64_t)v; break;
        case O_TEMP: if (cli_parse_f32("summarize", "--temp", optarg, 0, 100, &o->temp)) return 2; break;
        case 'h': usage(stdout); return 1;
        default: {
            int r = attn_opts_parse("summarize", c, optarg, &o->attn);
            if (r >= 0) {
                if (r) return r;
                break;
            }
            fprintf(stderr, CMD ": unknown or incomplete option '%s' (see --help)\n", argv[optind - 1]);
            return 2;
        }
        }
    }
    o->inputs = argv + optind;
    o->n_inputs = argc - optind;
    if (!o->n_inputs && !o->manifest) {
        fprintf(stderr, CMD ": give documents (FILE|DIR ...) or --manifest JOBS.jsonl (see --help)\n");
        return 2;
    }
    if (o->n_inputs && o->manifest) {
        fprintf(stderr, CMD ": give documents or --manifest, not both\n");
        return 2;
    }
    if (!o->out) {
        fprintf(stderr, CMD ": give the output file with -o OUT.jsonl\n");
        return 2;
    }
    if (o->attn.kv_resume) {
        fprintf(stderr, CMD ": --resume does not apply (every document starts from an empty context)\n");
        return 2;
    }
    return read_launch(&o->launch);
}

/* ---- the job -------------------------------------------------------------------------- */

enum job_mode {
    JOB_ONE,   /* one process: OUT.log, then OUT */
    JOB_MPI,   /* a rank of an MPI job */
    JOB_ARRAY, /* a task of a Slurm array */
};

/* Where this process stands in the job. */
struct plan {
    enum job_mode mode;
    int32_t shard, n_shards; /* this process's shard of n (-1 of 1 for JOB_ONE) */
    int32_t rank, size;      /* MPI (0 of 1 without) */
};

struct job {
    struct sum_opts *o;
    struct plan pl;
    struct doc_list docs;
    struct job_log log;
    struct summarizer s;
    bool loaded;
    bool show;        /* this process draws the progress line (rank 0 alone in an MPI job) */
    int64_t *rec_of;  /* (docs.n) each document's record, or -1 */
    int32_t *mine;    /* (docs.n) 1: this process summarizes the document if it has no record */
    char **ids;       /* (docs.n) the documents' ids, borrowed from docs */
    char *skip;       /* the absolute prefix of the job's own files (output_prefix) */
    size_t earlier;   /* documents of the whole job with a record when it started */
    size_t done, total, ok, failed, had; /* over this process's share; had: a record at the start */
    int64_t bytes_left, bytes_done, tok_in, tok_out;
    double t0;
    bool line_open; /* a progress line waits for its newline */
    size_t cur;     /* the document in progress */
};

static void end_line(struct job *jb) {
    if (jb->line_open) fputc('\n', stderr);
    jb->line_open = false;
}

static void show_progress(void *user, int64_t call, int64_t calls) {
    struct job *jb = user;
    if (!jb->show) return;
    double el = cli_now() - jb->t0, tps = jb->loaded && el > 0 ? (double)jb->s.n_tok / el : 0;
    char eta[32] = "?";
    if (jb->bytes_done > 0 && el > 0) {
        double left = el * (double)jb->bytes_left / (double)jb->bytes_done;
        snprintf(eta, sizeof eta, "%.0f s", left);
    }
    if (jb->pl.n_shards > 1)
        fprintf(stderr, "\rsummarize: shard %" PRId32 "/%" PRId32 ": %zu / %zu documents  %.0f tok/s  ETA %s", jb->pl.shard,
                jb->pl.n_shards, jb->done, jb->total, tps, eta);
    else
        fprintf(stderr, "\rsummarize: %zu / %zu documents  %.0f tok/s  ETA %s", jb->done, jb->total, tps, eta);
    if (calls > 1) fprintf(stderr, "  (document %zu: chunk %" PRId64 " / %" PRId64 ")", jb->cur + 1, call + 1, calls);
    fputs("    ", stderr);
    jb->line_open = true;
}

/* One JSON record line (ending in a newline) into a malloc'd buffer. */
static char *format_record(const struct doc *d, const struct doc_result *r, const char *summary, double seconds,
                           size_t *len) {
    char *buf = NULL;
    FILE *f = open_memstream(&buf, len);
    if (!f) return NULL;
    struct json_writer w;
    json_init(&w, f);
    json_obj_begin(&w, NULL);
    json_str(&w, "id", d->id);
    if (d->path) json_str(&w, "path", d->path);
    if (r->error[0]) json_null(&w, "summary");
    else json_str(&w, "summary", summary);
    if (r->error[0]) json_null(&w, "method");
    else json_str(&w, "method", r->method);
    json_int(&w, "calls", r->calls);
    json_int(&w, "tokens_in", r->tokens_in);
    json_int(&w, "tokens_out", r->tokens_out);
    json_num(&w, "seconds", round(seconds * 1000) / 1000);
    if (r->error[0]) json_str(&w, "error", r->error);
    else json_null(&w, "error");
    json_obj_end(&w);
    if (fclose(f) != 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

/* Summarizes document i and appends its record: 0, or -1 when the job must stop. */
static int run_doc(struct job *jb, size_t i) {
    const struct doc *d = &jb->docs.v[i];
    struct doc_result r = {0};
    double t0 = cli_now();
    size_t len = 0;
    char *text = doc_load(d, jb->o->max_bytes, &len, r.error, sizeof r.error);
    int rc = 0;
    if (text) {
        rc = summarize_doc(&jb->s, text, len, &r, show_progress, jb);
        free(text);
        if (rc) {
            end_line(jb);
            cli_report(d->id, rc);
            return -1;
        }
    }
    size_t n = 0;
    char *line = format_record(d, &r, r.error[0] ? NULL : jb->s.text, cli_now() - t0, &n);
    if (!line) {
        fprintf(stderr, CMD ": out of memory\n");
        return -1;
    }
    int64_t at = job_log_append(&jb->log, d->id, line, n, r.error[0] != 0);
    free(line);
    if (at < 0) return -1;
    jb->rec_of[i] = at;
    if (r.error[0]) {
        jb->failed++;
        if (!jb->o->quiet) {
            end_line(jb);
            fprintf(stderr, CMD ": %s: %s\n", d->id, r.error);
        }
    } else {
        jb->ok++;
    }
    jb->tok_in += r.tokens_in;
    jb->tok_out += r.tokens_out;
    return 0;
}

/* The absolute path of OUT, malloc'd (NULL when it cannot be resolved): the prefix of every
 * file of the job (OUT, its logs, their temporaries), which are never its documents. */
static char *output_prefix(const char *out) {
    char real[PATH_MAX], *skip = NULL, *dir = strdup(out);
    if (!dir) return NULL;
    char *slash = strrchr(dir, '/');
    const char *base = slash ? slash + 1 : out;
    if (slash) *slash = '\0';
    if (realpath(slash ? (dir[0] ? dir : "/") : ".", real)) {
        size_t sl = strlen(real) + strlen(base) + 2;
        if ((skip = malloc(sl))) snprintf(skip, sl, "%s/%s", strcmp(real, "/") ? real : "", base);
    }
    free(dir);
    return skip;
}

struct ident {
    dev_t dev;
    ino_t ino;
    const char *path;
};

static int cmp_ident(const void *a, const void *b) {
    const struct ident *x = a, *y = b;
    if (x->dev != y->dev) return x->dev < y->dev ? -1 : 1;
    return x->ino < y->ino ? -1 : x->ino > y->ino;
}

/* The job's output and logs are written, cut and removed: none may be an input (`-o DOC`
 * would replace the document). 0, or -1 after one error line naming both. */
static int refuse_own_inputs(struct job *jb) {
    char **files = NULL;
    size_t n_files = 0, n = 0;
    if (job_log_files(jb->o->out, jb->pl.shard, &files, &n_files)) return -1;
    struct ident *v = malloc((n_files + 1) * sizeof *v);
    int rc = v ? 0 : -1;
    if (!v) fprintf(stderr, CMD ": out of memory\n");
    for (size_t i = 0; v && i < n_files; i++) {
        struct stat st; /* lstat: a link at OUT is replaced, never written through */
        if (lstat(files[i], &st) == 0 && S_ISREG(st.st_mode)) v[n++] = (struct ident){st.st_dev, st.st_ino, files[i]};
    }
    if (n > 1) qsort(v, n, sizeof *v, cmp_ident);
    struct stat ms;
    if (!rc && n && jb->o->manifest && stat(jb->o->manifest, &ms) == 0) {
        struct ident key = {ms.st_dev, ms.st_ino, NULL}, *hit = bsearch(&key, v, n, sizeof *v, cmp_ident);
        if (hit) {
            fprintf(stderr, CMD ": the manifest %s is also %s, which this job writes (its output or a log); choose another -o\n",
                    jb->o->manifest, hit->path);
            rc = -1;
        }
    }
    for (size_t i = 0; !rc && n && i < jb->docs.n; i++) {
        const struct doc *d = &jb->docs.v[i];
        if (!d->dev && !d->ino) continue;
        struct ident key = {d->dev, d->ino, NULL}, *hit = bsearch(&key, v, n, sizeof *v, cmp_ident);
        if (hit) {
            fprintf(stderr, CMD ": the input %s is also %s, which this job writes (its output or a log); choose another -o\n",
                    d->open, hit->path);
            rc = -1;
        }
    }
    free(v);
    job_log_free_files(files, n_files);
    return rc;
}

/* Checks the output can be written (its directory made), lists the documents, refuses an
 * output or log that is one of them, opens this process's log and matches every record found
 * (OUT, every log) to them: 0, or -1 after the error. All before any model is loaded. */
static int job_prepare(struct job *jb) {
    struct sum_opts *o = jb->o;
    if (out_file_check("summarize", o->out)) return -1;
    jb->docs.skip_prefix = jb->skip = output_prefix(o->out); /* its directory exists now */
    if (o->manifest) {
        if (doc_list_add_manifest(&jb->docs, o->manifest, stderr)) return -1;
    } else {
        for (int i = 0; i < o->n_inputs; i++)
            if (doc_list_add_path(&jb->docs, o->inputs[i])) return -1;
    }
    if (refuse_own_inputs(jb) || job_log_open(&jb->log, o->out, jb->pl.shard)) return -1;
    size_t n = jb->docs.n;
    jb->ids = malloc((n + 1) * sizeof *jb->ids);
    jb->rec_of = malloc((n + 1) * sizeof *jb->rec_of);
    jb->mine = malloc((n + 1) * sizeof *jb->mine);
    if (!jb->ids || !jb->rec_of || !jb->mine) {
        fprintf(stderr, CMD ": out of memory\n");
        return -1;
    }
    for (size_t i = 0; i < n; i++) jb->ids[i] = jb->docs.v[i].id;
    if (job_log_match(&jb->log, jb->ids, n, jb->rec_of)) return -1;
    for (size_t i = 0; i < n; i++) jb->earlier += jb->rec_of[i] >= 0;
    return 0;
}

/* FNV-1a of what the shards are computed from; every rank of an MPI job must see the same.
 * Never 0, which stands for a rank that could not start. */
static uint64_t job_digest(const struct job *jb) {
    uint64_t h = 14695981039346656037ull;
    for (size_t i = 0; i < jb->docs.n; i++) {
        for (const char *c = jb->docs.v[i].id; *c; c++) h = (h ^ (unsigned char)*c) * 1099511628211ull;
        h = (h ^ (uint64_t)jb->docs.v[i].size) * 1099511628211ull;
        h = (h ^ (uint64_t)(jb->rec_of[i] >= 0)) * 1099511628211ull;
    }
    return h | 1;
}

/* Which documents this process summarizes (when they have no record): all of them, or its
 * shard. MPI ranks share the documents without a record, all having read the same records;
 * array tasks, which cannot know what the others have done, share all documents. 0 or -1. */
static int job_assign(struct job *jb) {
    size_t n = jb->docs.n;
    if (jb->pl.n_shards == 1) {
        for (size_t i = 0; i < n; i++) jb->mine[i] = 1;
        return 0;
    }
    int64_t *w = malloc((n + 1) * sizeof *w);
    if (!w) {
        fprintf(stderr, CMD ": out of memory\n");
        return -1;
    }
    /* the work of a document: its bytes, plus the prompt and the summary's decode, which cost
     * the same for any document (a generated token about what eight prefilled ones of ~4
     * bytes do); an empty or unreadable document still costs a record */
    int64_t fixed = 32 * jb->o->n_predict;
    for (size_t i = 0; i < n; i++) {
        int64_t size = jb->docs.v[i].size > 0 ? jb->docs.v[i].size : 0;
        w[i] = jb->pl.mode == JOB_MPI && jb->rec_of[i] >= 0 ? -1 : size + fixed;
    }
    int rc = shard_assign(w, n, jb->pl.n_shards, jb->mine);
    free(w);
    if (rc) {
        cli_report("shard assignment", rc);
        return -1;
    }
    for (size_t i = 0; i < n; i++) jb->mine[i] = jb->mine[i] == jb->pl.shard;
    return 0;
}

/* Summarizes this process's documents that have no record: 0, or -1 when it must stop. */
static int job_work(struct job *jb, bool talk) {
    struct sum_opts *o = jb->o;
    for (size_t i = 0; i < jb->docs.n; i++) {
        if (!jb->mine[i]) continue;
        jb->total++;
        if (jb->rec_of[i] >= 0) {
            jb->done++;
            jb->had++;
            if (jb->log.v[jb->rec_of[i]].failed) jb->failed++;
            else jb->ok++;
        } else {
            jb->bytes_left += jb->docs.v[i].size;
        }
    }
    if (talk && jb->log.n > jb->earlier)
        fprintf(stderr, CMD ": ignoring %zu earlier records that match no document of this job (or repeat one)\n",
                jb->log.n - jb->earlier);
    if (talk && jb->earlier && jb->earlier < jb->docs.n)
        fprintf(stderr, CMD ": resuming: %zu of %zu documents already have a record\n", jb->earlier, jb->docs.n);
    /* the model is loaded up front, even if the documents left turn out unreadable: a bad
     * model or too small a context is one error line before any work */
    if (jb->total > jb->had) {
        struct summarizer_params sp = {o->model, o->instruction, o->n_ctx, o->n_predict, o->chunk_tokens,
                                       o->n_threads, o->temp, o->seed, &o->attn};
        if (summarizer_open(&jb->s, &sp)) return -1;
        jb->loaded = true;
    }
    jb->t0 = cli_now();
    for (size_t i = 0; i < jb->docs.n; i++) {
        if (jb->rec_of[i] >= 0 || !jb->mine[i]) continue;
        jb->cur = i;
        show_progress(jb, 0, 1);
        if (run_doc(jb, i)) return -1;
        jb->done++;
        jb->bytes_done += jb->docs.v[i].size;
        jb->bytes_left -= jb->docs.v[i].size;
    }
    if (jb->total > jb->had) show_progress(jb, 0, 1);
    end_line(jb);
    return 0;
}

/* "id1, id2, ... (and N more)" of the documents without a record, on stderr. */
static void print_missing(const struct job *jb) {
    size_t shown = 0, more = 0;
    for (size_t i = 0; i < jb->docs.n; i++) {
        if (jb->rec_of[i] >= 0) continue;
        if (shown < 5) fprintf(stderr, "%s%s", shown++ ? ", " : "", jb->ids[i]);
        else more++;
    }
    if (more) fprintf(stderr, " (and %zu more)", more);
}

/* Counts the records of the merged job. */
static void count_merged(const struct job *jb, size_t *ok, size_t *failed) {
    *ok = *failed = 0;
    for (size_t i = 0; i < jb->docs.n; i++) {
        if (jb->log.v[jb->rec_of[i]].failed) (*failed)++;
        else (*ok)++;
    }
}

/* Rank 0's merge after every rank is done: 0, or 1 after naming the documents without a
 * record (and the ranks that failed, all[r] == 0). */
static int merge_rank0(struct job *jb, const uint64_t *all, double t_job) {
    const struct plan *pl = &jb->pl;
    int64_t missing = job_log_merge(&jb->log, jb->ids, jb->docs.n, jb->rec_of);
    if (missing < 0) return 1;
    if (missing > 0) {
        fprintf(stderr, CMD ": %" PRId64 " of %zu documents have no record: ", missing, jb->docs.n);
        print_missing(jb);
        const char *sep = " (failed ranks: ";
        for (int32_t r = 0; r < pl->size; r++)
            if (!all[r]) fprintf(stderr, "%s%" PRId32, sep, r), sep = ", ";
        if (sep[0] == ',') fputc(')', stderr);
        fprintf(stderr, "; %s not written: rerun the same command to summarize them\n", jb->o->out);
        return 1;
    }
    if (!jb->o->quiet) {
        size_t n_ok, n_failed;
        count_merged(jb, &n_ok, &n_failed);
        fprintf(stderr, CMD ": %zu documents: %zu ok, %zu failed (%zu from an earlier run); %" PRId32 " ranks, %.1f s -> %s\n",
                jb->docs.n, n_ok, n_failed, jb->earlier, pl->size, cli_now() - t_job, jb->o->out);
    }
    for (int32_t r = 0; r < pl->size; r++)
        if (!all[r]) return 1; /* every record is in, yet a rank failed: say so by the exit status */
    return 0;
}

/* The end of a rank of an MPI job. The second collective: every rank is done and has closed
 * its log, so rank 0 merges. The third: no rank leaves before rank 0 has merged or reported,
 * since mpirun ends the whole job as soon as one rank exits non-zero. Exit status. */
static int job_end_mpi(struct job *jb, bool ok, bool prepared, uint64_t *all, double t_job) {
    const struct plan *pl = &jb->pl;
    if (pl->rank != 0) job_log_close(&jb->log); /* rank 0's merge locks every log */
    int status = ok ? 0 : 1;
    if (shard_mpi_allgather_u64(ok, all)) {
        fprintf(stderr, CMD ": rank %" PRId32 ": MPI failed\n", pl->rank);
        return 1;
    }
    if (pl->rank == 0) status = prepared ? merge_rank0(jb, all, t_job) : 1;
    if (shard_mpi_allgather_u64((uint64_t)status, all)) {
        fprintf(stderr, CMD ": rank %" PRId32 ": MPI failed\n", pl->rank);
        return 1;
    }
    return status;
}

/* The end of one process, or of a Slurm array task: merge if every document has a record. */
static int job_end_local(struct job *jb) {
    const char *out = jb->o->out;
    bool array = jb->pl.mode == JOB_ARRAY;
    int64_t missing = job_log_merge(&jb->log, jb->ids, jb->docs.n, jb->rec_of);
    if (missing < 0) return 1;
    if (missing > 0 && !array) {
        fprintf(stderr, CMD ": %" PRId64 " documents still have no record (", missing);
        print_missing(jb);
        fprintf(stderr, "); is another job writing %s? Rerun to finish\n", out);
        return 1;
    }
    if (jb->o->quiet) return 0;
    if (missing > 0) {
        fprintf(stderr, CMD ": %s waits for %" PRId64 " documents of other shards (tasks still running, or failed): the last "
                        "task to finish writes it, or run the command again without SLURM_ARRAY_* to merge\n", out, missing);
    } else if (array) {
        size_t n_ok, n_failed;
        count_merged(jb, &n_ok, &n_failed);
        fprintf(stderr, CMD ": %zu documents: %zu ok, %zu failed; every shard is done: merged -> %s\n", jb->docs.n, n_ok,
                n_failed, out);
    } else {
        fprintf(stderr, CMD ": %zu documents: %zu ok, %zu failed (%zu from an earlier run); this run %" PRId64
                        " tokens in, %" PRId64 " out, %.1f s -> %s\n",
                jb->total, jb->ok, jb->failed, jb->had, jb->tok_in, jb->tok_out, cli_now() - jb->t0, out);
    }
    return 0;
}

static int run_job(struct job *jb) {
    struct sum_opts *o = jb->o;
    const struct plan *pl = &jb->pl;
    bool talk = !o->quiet && (pl->mode != JOB_MPI || pl->rank == 0);
    jb->show = talk;
    double t_job = cli_now();
    uint64_t *all = calloc((size_t)pl->size, sizeof *all);
    if (!all) {
        fprintf(stderr, CMD ": out of memory\n");
        return -1; /* an MPI rank leaves without finalizing: mpirun ends the job */
    }
    bool prepared = job_prepare(jb) == 0, ok = prepared;
    if (pl->mode == JOB_MPI) {
        /* the first collective: no rank appends a record before every rank has read them all,
         * so every rank assigns the same documents */
        if (shard_mpi_allgather_u64(ok ? job_digest(jb) : 0, all)) {
            fprintf(stderr, CMD ": rank %" PRId32 ": MPI failed\n", pl->rank);
            ok = false;
        }
        uint64_t first = 0;
        bool differ = false, down = false;
        for (int32_t r = 0; r < pl->size; r++) {
            if (!all[r]) down = true;
            else if (!first) first = all[r];
            else differ |= all[r] != first;
        }
        if (differ && pl->rank == 0)
            fprintf(stderr, CMD ": the ranks found different documents or records (files changed as the job started?); "
                            "rerun\n");
        if (down && ok && pl->rank == 0) fprintf(stderr, CMD ": a rank could not start (see its error); stopping\n");
        ok = ok && !differ && !down;
    }
    if (ok) ok = job_assign(jb) == 0 && job_work(jb, talk) == 0;
    end_line(jb);
    if (ok && pl->n_shards > 1 && !o->quiet)
        fprintf(stderr, CMD ": shard %" PRId32 "/%" PRId32 ": %zu documents: %zu ok, %zu failed (%zu from an earlier run); "
                        "this run %" PRId64 " tokens in, %" PRId64 " out, %.1f s\n",
                pl->shard, pl->n_shards, jb->total, jb->ok, jb->failed, jb->had, jb->tok_in, jb->tok_out, cli_now() - jb->t0);
    int status = pl->mode == JOB_MPI ? job_end_mpi(jb, ok, prepared, all, t_job) : ok ? job_end_local(jb) : 1;
    free(all);
    free(jb->skip);
    free(jb->ids);
    free(jb->rec_of);
    free(jb->mine);
    summarizer_free(&jb->s);
    job_log_close(&jb->log);
    doc_list_free(&jb->docs);
    return status;
}

int cmd_summarize(int argc, char **argv) {
    struct sum_opts o;
    int rc = parse_args(argc, argv, &o);
    if (rc) return rc == 1 ? 0 : rc;
    cli_check_threads("summarize", o.n_threads);
    struct job jb = {.o = &o, .pl = {JOB_ONE, -1, 1, 0, 1}};
    bool mpi = false;
    if (o.launch.mpi) {
        rc = shard_mpi_init(&jb.pl.rank, &jb.pl.size);
        if (rc == SL_EUNSUPPORTED && o.launch.mpi_procs > 1) {
            fprintf(stderr, CMD ": started by an MPI launcher with %" PRId64 " processes, but this build has no MPI "
                            "(install libopenmpi-dev and rebuild, or run without mpirun)\n", o.launch.mpi_procs);
            return 1;
        }
        if (rc && rc != SL_EUNSUPPORTED) {
            fprintf(stderr, CMD ": cannot initialise MPI\n");
            return 1;
        }
        mpi = rc == 0;
    }
    int status;
    if (o.launch.array && jb.pl.size > 1) {
        if (jb.pl.rank == 0)
            fprintf(stderr, CMD ": a Slurm array task started by mpirun with %" PRId32 " ranks: scale out with one or the "
                            "other\n", jb.pl.size);
        status = 2;
    } else {
        if (o.launch.array) jb.pl = (struct plan){JOB_ARRAY, o.launch.task_shard, o.launch.task_count, 0, 1};
        else if (jb.pl.size > 1) jb.pl.mode = JOB_MPI, jb.pl.shard = jb.pl.rank, jb.pl.n_shards = jb.pl.size;
        status = run_job(&jb);
        if (status < 0) return 1; /* see run_job: no finalize */
    }
    if (mpi) shard_mpi_finalize();
    return status;
}
