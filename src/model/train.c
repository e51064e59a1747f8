/* The training loop behind `gdn2 train` and `gdn2 demo`: AdamW, warmup + cosine, clipping,
 * gradient accumulation, periodic eval, atomic checkpoints and bit-exact resume.
 *
 * Checkpoints (gdn2_checkpoint_save/load): both files carry the run record {run id, step, the run's
 * settings}. The run id is drawn at a run's first start and kept across resumes; --resume refuses a
 * torn pair and any setting that differs from the saved run, unless opts.allow_change names it.
 *
 * Determinism: every batch is a pure function of (seed, step, micro-step) (task tokens: of the token
 * stream's position, which the run record keeps as data_state), the optimizer state is
 * saved in fp32, and all reductions run in a fixed order for a fixed thread count, so "N steps" and
 * "k steps, save, resume, N-k steps" produce identical losses (tests/test_train.c). */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "data/rng.h"
#include "gdn2_data.h"
#include "gdn2_text.h"
#include "gdn2_cuda.h"
#include "gdn2_tokens.h"
#include "../dist/comm.h"
#include "model_internal.h"
#include "util/internal.h"
#include "util/rng.h"

void gdn2_train_defaults(gdn2_train_opts *o) {
    memset(o, 0, sizeof *o);
    o->model = "tiny";
    o->task = "text";
    o->batch = 16;
    o->seq_len = 64;
    o->steps = 1000;
    o->accum = 1;
    o->warmup = -1; /* -1: 5% of the steps */
    o->lr = 3e-3f;
    o->min_lr = -1.0f; /* -1: lr / 10 */
    o->weight_decay = 0.1f;
    o->clip = 1.0f;
    o->seed = 3407;
    o->log_every = 50;
    o->eval_every = 0;
    o->eval_batches = 20;
    o->eval_samples = 500;
    o->mqar_vocab = 256;
    o->mqar_pairs = 4;
}

static uint64_t batch_seed(uint64_t seed, int64_t step, int64_t micro) {
    return gdn2_mix64(gdn2_mix64(seed * 0x100000001B3ULL + (uint64_t)step) ^ ((uint64_t)micro * 0x9E3779B97F4A7C15ULL));
}

typedef struct {
    int is_mqar;
    gdn2_text text;
    gdn2_mqar_cfg mq;
    gdn2_tokens *tok; /* task tokens: sequential streams whose position the run record keeps */
} data_src;

/* one [B,T] batch of the train (split 0) or eval (split 1) stream */
static int get_batch(const data_src *ds, int split, uint64_t seed, int64_t B, int64_t T, int32_t *tok, int32_t *tgt) {
    if (ds->tok) return gdn2_tokens_next(ds->tok, split, B, T, tok, tgt);
    if (!ds->is_mqar) return gdn2_text_batch(&ds->text, split, seed, B, T, tok, tgt);
    for (int64_t b = 0; b < B; b++) {
        int st = gdn2_mqar_sample(&ds->mq, gdn2_mix64(seed + (uint64_t)b), split, tok + b * T, tgt + b * T);
        if (st) return st;
    }
    return GDN2_OK;
}

/* eval: mean CE and argmax accuracy over the labelled positions of the eval stream */
static int evaluate(gdn2_model *m, const data_src *ds, const gdn2_train_opts *o, float *loss, float *acc) {
    const int64_t T = o->seq_len, Vp = m->cfg.padded_vocab;
    int64_t B = o->batch, n_batches;
    if (ds->is_mqar) n_batches = (o->eval_samples + B - 1) / B;
    else n_batches = o->eval_batches;
    int32_t *tok = malloc((size_t)B * T * sizeof(int32_t)), *tgt = malloc((size_t)B * T * sizeof(int32_t));
    float *lg = malloc((size_t)B * T * Vp * sizeof(float));
    if (!tok || !tgt || !lg) {
        free(tok), free(tgt), free(lg);
        return gdn2_error(GDN2_ERR_NOMEM, "out of memory for evaluation");
    }
    double lsum = 0.0;
    int64_t nlab = 0, ncorrect = 0;
    int st = GDN2_OK;
    if (ds->tok) { /* fixed eval set: the validation stream's first batches */
        const gdn2_tokens_state start = {0, 0, 0};
        st = gdn2_tokens_set_state(ds->tok, 1, &start);
    }
    for (int64_t i = 0; i < n_batches && !st; i++) {
        /* fixed eval set: seeds independent of the step */
        st = get_batch(ds, 1, batch_seed(o->seed ^ 0xE7A1ULL, i, 0) + (uint64_t)(i * B), B, T, tok, tgt);
        float l = 0.0f;
        if (!st) st = gdn2_model_forward(m, tok, tgt, B, T, lg, &l, 0);
        if (st) break;
        int64_t nv = 0;
        for (int64_t r = 0; r < B * T; r++) {
            if (tgt[r] == GDN2_IGNORE) continue;
            nv++;
            const float *z = lg + r * Vp;
            int64_t am = 0;
            for (int64_t v = 1; v < m->cfg.vocab_size; v++)
                if (z[v] > z[am]) am = v;
            ncorrect += am == tgt[r];
        }
        lsum += (double)l * nv;
        nlab += nv;
    }
    free(tok), free(tgt), free(lg);
    *loss = nlab ? (float)(lsum / nlab) : 0.0f;
    *acc = nlab ? (float)ncorrect / (float)nlab : 0.0f;
    return st;
}

static void fmt_time(double s, char *buf, size_t n) {
    if (s < 0 || !isfinite(s)) s = 0;
    int64_t t = (int64_t)(s + 0.5);
    if (t >= 3600) snprintf(buf, n, "%lldh%02lldm", (long long)(t / 3600), (long long)(t % 3600 / 60));
    else snprintf(buf, n, "%lldm%02llds", (long long)(t / 60), (long long)(t % 60));
}

/* ---- the run record: run id, step and settings, in both checkpoint files ------------------ */

/* One run setting as recorded and compared by --resume: its name (the CLI option without the
 * dashes, as --allow-change takes it) and its value as text (floats: fmt_float, so equal text
 * = equal float). fixed: the model's architecture, which a resume takes from the checkpoint, so no flag can
 * change it. A setting absent from a saved record (e.g. mqar-pairs of a text run) is not compared. */
typedef struct {
    const char *name;
    char val[96];
    int fixed;
} run_setting;
enum { MAX_SETTINGS = 28 };

/* shortest decimal that reads back as the same float (so equal text <=> equal float, and 3e-3 prints
 * as 0.003 rather than 0.00300000003) */
static void fmt_float(char *buf, size_t n, float x) {
    for (int p = 1; p <= 9; p++) {
        snprintf(buf, n, "%.*g", p, x);
        if (strtof(buf, NULL) == x) return;
    }
}

/* the settings of opts (as given: warmup -1 = 5% of steps, min-lr -1 = lr/10); data_id: the text
 * file's size and content hash (task text), the shards' identity (task tokens, with val_id and the
 * data vocabulary) */
static int run_settings(const gdn2_train_opts *o, const char *data_id, const char *val_id, int64_t vocab,
                        run_setting *s) {
    int n = 0;
    char fb[32];
#define SET(nm, fx, ...) (s[n].name = nm, s[n].fixed = fx, snprintf(s[n].val, sizeof s[n].val, __VA_ARGS__), n++)
    SET("task", 0, "%s", o->task ? o->task : "text");
    SET("model", 1, "%s", o->model ? o->model : "tiny");
    SET("layout", 1, "%s", o->layout ? o->layout : "(config default)");
    SET("gdn-heads", 1, "%lld", (long long)o->gdn_heads);
    SET("gdn-head-dim", 1, "%lld", (long long)o->gdn_head_dim);
    SET("steps", 0, "%lld", (long long)o->steps);
    SET("seed", 0, "%llu", (unsigned long long)o->seed);
    SET("lr", 0, "%s", (fmt_float(fb, sizeof fb, o->lr), fb));
    SET("min-lr", 0, "%s", (fmt_float(fb, sizeof fb, o->min_lr), fb));
    SET("warmup", 0, "%lld", (long long)o->warmup);
    SET("batch", 0, "%lld", (long long)o->batch);
    SET("seq-len", 0, "%lld", (long long)o->seq_len);
    SET("accum", 0, "%lld", (long long)(o->accum < 1 ? 1 : o->accum));
    SET("wd", 0, "%s", (fmt_float(fb, sizeof fb, o->weight_decay), fb));
    SET("clip", 0, "%s", (fmt_float(fb, sizeof fb, o->clip), fb));
    SET("exempt-no-decay", 0, "%d", o->exempt_no_decay);
    if (o->dropout > 0) SET("dropout", 0, "%s", (fmt_float(fb, sizeof fb, o->dropout), fb));
    if (o->emb_dropout > 0) SET("emb-dropout", 0, "%s", (fmt_float(fb, sizeof fb, o->emb_dropout), fb));
    if (o->task && !strcmp(o->task, "mqar")) {
        SET("mqar-vocab", 0, "%d", o->mqar_vocab);
        SET("mqar-pairs", 0, "%d", o->mqar_pairs);
        SET("mqar-no-fill", 0, "%d", o->mqar_no_fill);
    } else {
        SET("data", 0, "%s", data_id);
    }
    if (o->task && !strcmp(o->task, "tokens")) {
        SET("val-data", 0, "%s", val_id);
        SET("vocab", 1, "%lld", (long long)vocab);
        SET("shuffle-shards", 0, "%d", o->shuffle_shards);
    }
#undef SET
    return n;
}

/* the names --allow-change accepts, and those it refuses (the architecture) */
static const char *const changeable[] = {"task", "steps", "seed", "lr", "min-lr", "warmup", "batch", "seq-len",
                                         "accum", "wd", "clip", "exempt-no-decay", "data", "mqar-vocab",
                                         "mqar-pairs", "mqar-no-fill", "val-data", "shuffle-shards", "dropout",
                                         "emb-dropout", NULL};
static const char *const fixed_settings[] = {"model", "layout", "gdn-heads", "gdn-head-dim", "vocab", NULL};
static int in_list(const char *const *l, const char *name) {
    for (; *l; l++)
        if (!strcmp(*l, name)) return 1;
    return 0;
}

/* the run record as JSON (malloc'ed): {"run_id":"<16 hex>","step":N,"settings":{...},"data_path":...
 * [,"data_state":{...}]} (data_state: the token stream's position, task tokens) */
static char *run_record(uint64_t run_id, int64_t step, const run_setting *s, int n, const char *data_path,
                        const char *data_state) {
    char id[24], stp[24];
    snprintf(id, sizeof id, "%016llx", (unsigned long long)run_id);
    snprintf(stp, sizeof stp, "%lld", (long long)step);
    cJSON *r = cJSON_CreateObject(), *set = cJSON_CreateObject();
    char *out = NULL;
    int ok = r && set && cJSON_AddStringToObject(r, "run_id", id) && cJSON_AddRawToObject(r, "step", stp);
    for (int i = 0; i < n && ok; i++) ok = cJSON_AddStringToObject(set, s[i].name, s[i].val) != NULL;
    if (ok && cJSON_AddItemToObject(r, "settings", set)) set = NULL;
    else ok = 0;
    if (ok && data_path) ok = cJSON_AddStringToObject(r, "data_path", data_path) != NULL;
    if (ok && data_state) ok = cJSON_AddRawToObject(r, "data_state", data_state) != NULL;
    if (ok) out = cJSON_PrintUnformatted(r);
    cJSON_Delete(set);
    cJSON_Delete(r);
    return out;
}

/* a fresh run id: 64 random bits (/dev/urandom; else clock, pid and an address, mixed) */
static uint64_t new_run_id(void) {
    uint64_t id = 0;
    FILE *f = fopen("/dev/urandom", "rb");
    if (f) {
        if (fread(&id, sizeof id, 1, f) != 1) id = 0;
        fclose(f);
    }
    if (!id) id = gdn2_mix64((uint64_t)time(NULL) ^ gdn2_mix64((uint64_t)(gdn2_now() * 1e9)) ^ ((uint64_t)getpid() << 32) ^
                      (uint64_t)(uintptr_t)&id);
    return id ? id : 1;
}

/* --resume: the saved record's run id, and its settings against the current ones. A difference is
 * refused (GDN2_ERR_ARG naming each setting with the saved and the new value) unless `allow` (comma
 * list) names it; an allowed one is reported on log. */
static int check_resume(const char *ck, const char *record, const run_setting *cur, int n, const char *allow,
                        FILE *log, uint64_t *run_id) {
    /* every name in the list must be a changeable setting */
    char al[512] = ",", names[600] = "";
    if (allow && (size_t)snprintf(al, sizeof al, ",%s,", allow) >= sizeof al)
        return gdn2_error(GDN2_ERR_ARG, "train: --allow-change list too long");
    for (const char *p = al + 1; *p; p = strchr(p, ',') + 1) {
        char t[64];
        size_t len = strcspn(p, ",");
        if (!len) continue;
        snprintf(t, sizeof t, "%.*s", (int)(len < sizeof t ? len : sizeof t - 1), p);
        if (in_list(fixed_settings, t))
            return gdn2_error(GDN2_ERR_ARG,
                              "train: --allow-change %s: the model's architecture comes from the checkpoint and "
                              "cannot change on --resume",
                              t);
        if (!in_list(changeable, t)) {
            for (int k = 0; changeable[k]; k++)
                snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", k ? ", " : "", changeable[k]);
            return gdn2_error(GDN2_ERR_ARG, "train: --allow-change: unknown setting '%s' (one of: %s)", t, names);
        }
    }
    cJSON *r = cJSON_Parse(record);
    const cJSON *set = r ? cJSON_GetObjectItemCaseSensitive(r, "settings") : NULL;
    const cJSON *id = r ? cJSON_GetObjectItemCaseSensitive(r, "run_id") : NULL;
    if (!cJSON_IsObject(set) || !cJSON_IsString(id)) {
        cJSON_Delete(r);
        return gdn2_error(GDN2_ERR_FORMAT, "%s: the run record (metadata 'train') has no settings or run id", ck);
    }
    *run_id = strtoull(id->valuestring, NULL, 16);
    char msg[900] = "";
    size_t len = 0;
    int bad = 0;
    for (int k = 0; k < n; k++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(set, cur[k].name);
        if (!v) continue; /* not a setting of the saved run */
        const char *sv = cJSON_IsString(v) ? v->valuestring : "(not text)";
        if (!strcmp(sv, cur[k].val)) continue;
        char key[40];
        snprintf(key, sizeof key, ",%s,", cur[k].name);
        if (strstr(al, key)) {
            if (log) fprintf(log, "resume: %s changes from %s to %s (--allow-change)\n", cur[k].name, sv, cur[k].val);
            continue;
        }
        if (len < sizeof msg)
            len += (size_t)snprintf(msg + len, sizeof msg - len, "%s%s: saved %s, now %s%s", bad ? "; " : "",
                                    cur[k].name, sv, cur[k].val,
                                    cur[k].fixed ? " (architecture: only the saved value can resume)" : "");
        bad++;
    }
    cJSON_Delete(r);
    if (bad)
        return gdn2_error(GDN2_ERR_ARG,
                          "train: --resume %s: %d setting%s differ%s from the saved run (%s); rerun with the saved "
                          "value%s, or name %s in --allow-change to continue with the new one%s",
                          ck, bad, bad > 1 ? "s" : "", bad > 1 ? "" : "s", msg, bad > 1 ? "s" : "",
                          bad > 1 ? "them" : "it", bad > 1 ? "s" : "");
    return GDN2_OK;
}

typedef struct {
    uint64_t run_id;
    run_setting set[MAX_SETTINGS];
    int n_set;
    const char *data_path;
    gdn2_tokens *tok; /* task tokens: its train position goes into the record */
} run_info;

static int save_all(const gdn2_model *m, const gdn2_adamw *opt, const gdn2_train_opts *o, const run_info *ri) {
    if (!o->out) return GDN2_OK;
    char *dst = ri->tok ? gdn2_tokens_state_json(ri->tok, 0) : NULL;
    char *rec = (!ri->tok || dst) ? run_record(ri->run_id, opt->step, ri->set, ri->n_set, ri->data_path, dst) : NULL;
    free(dst);
    if (!rec) return gdn2_error(GDN2_ERR_NOMEM, "%s: out of memory writing the checkpoint", o->out);
    int st = gdn2_checkpoint_save(m, opt, o->out, rec);
    free(rec);
    return st;
}

/* data parallel: the ZeRO-1 moments are gathered (every rank takes part), then rank 0 writes the
 * pair: the same files as one process, loadable by any number of ranks */
static int save_ranked(gdn2_model *m, gdn2_adamw *opt, const gdn2_train_opts *o, const run_info *ri, gdn2_dist *d,
                       int rank) {
    if (!o->out) return GDN2_OK;
    int st = d ? gdn2_dist_gather_moments(d, opt, m) : GDN2_OK;
    if (!st && rank == 0) st = save_all(m, opt, o, ri);
    return st;
}

/* Fault injection for the tests of rank failure: GDN2_DIST_FAIL="RANK:STEP" makes that rank's
 * process exit (status 7) at the start of that step. Read by data-parallel ranks only. */
static int dist_fail_here(int rank, int64_t step) {
    const char *e = getenv("GDN2_DIST_FAIL");
    int r = -1;
    long long s = -1;
    return e && sscanf(e, "%d:%lld", &r, &s) == 2 && r == rank && s == step;
}

int gdn2_train(const gdn2_train_opts *oin, gdn2_train_result *res, gdn2_model **model_out) {
    gdn2_train_opts o = *oin;
    gdn2_train_result r;
    memset(&r, 0, sizeof r);
    if (model_out) *model_out = NULL;
    FILE *log = o.log ? o.log : stderr;
    if (o.warmup < 0) o.warmup = o.steps / 20;
    if (o.min_lr < 0) o.min_lr = o.lr / 10.0f;
    if (o.accum < 1) o.accum = 1;
    if (o.batch < 1 || o.seq_len < 2 || o.steps < 1)
        return gdn2_error(GDN2_ERR_ARG, "train: batch %lld, seq_len %lld, steps %lld must be >= 1, 2, 1",
                          (long long)o.batch, (long long)o.seq_len, (long long)o.steps);
    /* settings that would silently mean something else than they say */
    if (o.min_lr > o.lr)
        return gdn2_error(GDN2_ERR_ARG, "train: --min-lr %g is above --lr %g (the schedule decays from lr to min-lr)",
                          (double)o.min_lr, (double)o.lr);
    if (o.warmup > o.steps)
        return gdn2_error(GDN2_ERR_ARG, "train: --warmup %lld is longer than --steps %lld", (long long)o.warmup,
                          (long long)o.steps);
    if (o.stop_at > o.steps)
        return gdn2_error(GDN2_ERR_ARG, "train: --stop-at %lld is beyond --steps %lld", (long long)o.stop_at,
                          (long long)o.steps);
    /* data parallel: this process is rank R of W; --batch is the global micro-batch */
    const int W = o.world > 1 ? o.world : 1, R = W > 1 ? o.rank : 0;
    if (W > 1 && (R < 0 || R >= W || (!o.comm && !o.nccl_id)))
        return gdn2_error(GDN2_ERR_ARG, "train: rank %d of %d without a communicator", R, W);
    if (o.batch % W)
        return gdn2_error(GDN2_ERR_ARG, "train: --batch %lld must be a multiple of the %d ranks (the global batch is split)",
                          (long long)o.batch, W);
    gdn2_comm *comm = o.comm, *comm_owned = NULL;
    gdn2_dist *dist = NULL;
    data_src ds;
    memset(&ds, 0, sizeof ds);
    int st = GDN2_OK;
    int64_t vocab = GDN2_BYTE_VOCAB;
    if (!strcmp(o.task, "mqar")) {
        ds.is_mqar = 1;
        ds.mq.vocab_size = o.mqar_vocab;
        ds.mq.seq_len = (int)o.seq_len;
        ds.mq.n_pairs = o.mqar_pairs;
        ds.mq.no_fill = o.mqar_no_fill;
        if ((st = gdn2_mqar_check(&ds.mq))) return st;
        vocab = o.mqar_vocab;
    } else if (!strcmp(o.task, "text")) {
        const char *path = o.data ? o.data : GDN2_DEFAULT_TEXT;
        FILE *probe = o.data ? NULL : fopen(path, "rb"); /* the default is not shipped: say how to get it */
        if (!o.data && !probe)
            return gdn2_error(GDN2_ERR_IO, "train: the default text %s cannot be opened (%s); %s, or pass --data FILE",
                              path, strerror(errno), GDN2_DEFAULT_TEXT_HINT);
        if (probe) fclose(probe);
        if ((st = gdn2_text_load(path, 0.1, &ds.text))) return st;
    } else if (!strcmp(o.task, "tokens")) {
        if (!o.data) return gdn2_error(GDN2_ERR_ARG, "train: --task tokens needs --data PATTERN (token shards)");
        if (o.vocab > 0) vocab = o.vocab;
        else {
            gdn2_model_cfg c; /* the model config's vocabulary (on --resume the saved model must match) */
            if ((st = gdn2_model_config(o.model, &c))) return st;
            vocab = c.vocab_size;
        }
        gdn2_tokens_cfg tc = {vocab, o.shuffle_shards, o.seed};
        if ((st = gdn2_tokens_open(o.data, o.val_data, &tc, &ds.tok))) return st;
        if ((st = gdn2_tokens_check_batch(ds.tok, o.batch, o.seq_len)) || (o.scan_data && (st = gdn2_tokens_scan(ds.tok)))) {
            gdn2_tokens_close(ds.tok);
            return st;
        }
    } else {
        return gdn2_error(GDN2_ERR_ARG, "train: unknown task '%s' (text, mqar or tokens)", o.task);
    }
    if (!ds.tok && (o.val_data || o.vocab || o.shuffle_shards || o.scan_data))
        st = gdn2_error(GDN2_ERR_ARG, "train: --val-data, --vocab, --shuffle-shards and --scan-data apply only to --task tokens");
    else if (o.allow_change && !o.resume)
        st = gdn2_error(GDN2_ERR_ARG, "train: --allow-change applies only with --resume");
    if (st) {
        if (!ds.is_mqar) gdn2_text_free(&ds.text);
        gdn2_tokens_close(ds.tok);
        return st;
    }
    /* the run's settings as given (oin: warmup and min-lr before their defaults are filled in) */
    run_info ri;
    memset(&ri, 0, sizeof ri);
    {
        char data_id[96] = "", val_id[96] = "";
        if (ds.tok) {
            ri.data_path = o.data;
            ri.tok = ds.tok;
            gdn2_tokens_identity(ds.tok, 0, data_id, sizeof data_id);
            if (o.val_data) gdn2_tokens_identity(ds.tok, 1, val_id, sizeof val_id);
            else snprintf(val_id, sizeof val_id, "(from --data)");
        } else if (!ds.is_mqar) {
            ri.data_path = o.data ? o.data : "data/tinyshakespeare.txt";
            snprintf(data_id, sizeof data_id, "%lld bytes, fnv1a64+mix64 %016llx", (long long)ds.text.n,
                     (unsigned long long)gdn2_hash_bytes(ds.text.data, (size_t)ds.text.n));
        }
        ri.n_set = run_settings(oin, data_id, val_id, vocab, ri.set);
    }
    /* temp files of a writer killed before its rename (a crash or a full disk mid-save) */
    if (o.out) gdn2_checkpoint_clean_tmp(o.out, log);

    gdn2_model *m = NULL;
    gdn2_adamw opt;
    memset(&opt, 0, sizeof opt);
    gdn2_adamw_cfg ac = gdn2_adamw_default();
    ac.weight_decay = o.weight_decay;
    ac.exempt_no_decay = o.exempt_no_decay;
    if (o.resume) {
        if (!o.out) {
            st = gdn2_error(GDN2_ERR_ARG, "train: --resume needs the checkpoint path (--out)");
            goto done;
        }
        char *rec = NULL;
        if ((st = gdn2_checkpoint_load(o.out, &ac, &m, &opt, &rec))) goto done;
        st = check_resume(o.out, rec, ri.set, ri.n_set, o.allow_change, log, &ri.run_id);
        if (!st && ds.tok) { /* continue the token stream where the saved run left it */
            cJSON *r = cJSON_Parse(rec);
            const cJSON *p = r ? cJSON_GetObjectItemCaseSensitive(r, "data_state") : NULL;
            char *pj = p ? cJSON_PrintUnformatted(p) : NULL;
            gdn2_tokens_state ts;
            if (!p) {
                if (log) fprintf(log, "resume: %s has no token data position; the token stream starts at its beginning\n", o.out);
            } else if (!pj) {
                st = gdn2_error(GDN2_ERR_NOMEM, "out of memory");
            } else if ((st = gdn2_tokens_state_parse(pj, &ts)) || (st = gdn2_tokens_set_state(ds.tok, 0, &ts))) {
                char why[512];
                snprintf(why, sizeof why, "%s", gdn2_last_error());
                st = gdn2_error(st, "train: --resume %s: the saved data_state: %s", o.out, why);
            }
            free(pj);
            cJSON_Delete(r);
        }
        free(rec);
        if (st) goto done;
    } else {
        ri.run_id = new_run_id();
        gdn2_model_cfg c;
        if ((st = gdn2_model_config(o.model, &c))) goto done;
        if (o.layout && (st = gdn2_model_set_layout(&c, o.layout))) goto done;
        c.vocab_size = vocab;
        if (o.gdn_heads > 0) c.gdn_heads = c.gdn_v_heads = o.gdn_heads;
        if (o.gdn_head_dim > 0) c.gdn_head_dim = o.gdn_head_dim;
        if ((st = gdn2_model_check(&c))) goto done;
        if ((st = gdn2_model_create(&c, &m))) goto done;
        gdn2_model_init(m, o.seed);
        if ((st = gdn2_adamw_init(&opt, &ac, m->n_flat))) goto done;
    }
    if (m->cfg.vocab_size < vocab) {
        st = gdn2_error(GDN2_ERR_ARG, "train: model vocab %lld < data vocab %lld", (long long)m->cfg.vocab_size,
                        (long long)vocab);
        goto done;
    }
    m->n_threads = o.n_threads;
    m->recompute = o.recompute;
    m->keep_chunk = o.keep_chunk;
    m->dropout = o.dropout;
    m->emb_dropout = o.emb_dropout;
    if (o.device && (st = gdn2_model_set_device(m, o.device))) goto done;
    if (W > 1 && !comm && (st = gdn2_comm_nccl(o.nccl_id, R, W, m->be->stream, &comm_owned))) goto done;
    if (W > 1 && !comm) comm = comm_owned;
    if (W > 1 && (st = gdn2_dist_create(comm, o.zero1, m, &opt, &dist))) goto done;
    r.n_params = m->n_params;
    if (ds.tok && !o.quiet) {
        const gdn2_tokens_state ts = gdn2_tokens_get_state(ds.tok, 0);
        fprintf(log, "data %s: %lld shard%s, %lld tokens train; %lld shard%s, %lld tokens validation; at epoch %lld shard %lld token %lld\n",
                o.data, (long long)gdn2_tokens_n_shards(ds.tok, 0), gdn2_tokens_n_shards(ds.tok, 0) == 1 ? "" : "s",
                (long long)gdn2_tokens_n_tokens(ds.tok, 0), (long long)gdn2_tokens_n_shards(ds.tok, 1),
                gdn2_tokens_n_shards(ds.tok, 1) == 1 ? "" : "s", (long long)gdn2_tokens_n_tokens(ds.tok, 1),
                (long long)ts.epoch, (long long)ts.shard, (long long)ts.pos);
    }
    if (!o.quiet)
        fprintf(log, "model %s layout %s: %zu parameters (%.3fM); task %s, batch %lld x %lld, accum %lld, %lld steps%s\n",
                m->cfg.name, m->cfg.layout, m->n_params, m->n_params / 1e6, o.task, (long long)o.batch,
                (long long)o.seq_len, (long long)o.accum, (long long)o.steps,
                opt.step ? " (resumed)" : "");
    {
        const int64_t B = o.batch, T = o.seq_len;
        int32_t *tok = malloc((size_t)B * T * sizeof(int32_t)), *tgt = malloc((size_t)B * T * sizeof(int32_t));
        if (!tok || !tgt) {
            free(tok), free(tgt);
            st = gdn2_error(GDN2_ERR_NOMEM, "out of memory for batches");
            goto done;
        }
        int64_t stop = o.stop_at > 0 && o.stop_at < o.steps ? o.stop_at : o.steps;
        double t0 = gdn2_now(), tlast = t0;
        int64_t tok_done = 0, tok_last = 0, step0 = opt.step;
        /* on the GPU the progress line adds MFU (the official harness's FLOP count, of the H100/H200
         * dense bf16 peak 989 TFLOP/s) and the device memory in use */
        const int on_gpu = !strcmp(gdn2_model_device(m), "cuda");
        const double flops_tok = gdn2_model_flops_per_token(&m->cfg, T, NULL);
        float vl = NAN, va = NAN;
        while (opt.step < stop && !st) {
            int64_t step = opt.step;
            if ((st = gdn2_model_zero_grad(m))) break;
            if (W > 1 && dist_fail_here(R, step)) {
                fprintf(stderr, "rank %d: GDN2_DIST_FAIL: exiting at step %lld (fault injection)\n", R, (long long)step);
                fflush(NULL);
                _exit(7);
            }
            double lsum = 0.0;
            for (int64_t k = 0; k < o.accum && !st; k++) {
                float l = 0.0f; /* read only when the forward succeeded (st == 0) */
                st = get_batch(&ds, 0, batch_seed(o.seed, step, k), B, T, tok, tgt);
                if (st) break;
                /* dropout masks: a pure function of (seed, step, micro-batch, rank) */
                m->dropout_seed = batch_seed(o.seed ^ 0xD0D0ULL, step, k) ^ (uint64_t)R;
                if (W == 1) {
                    st = gdn2_model_forward_backward(m, tok, tgt, B, T, &l, 1.0f / (float)o.accum);
                    if (!st) lsum += l;
                    continue;
                }
                /* rank R: rows [R Bl, (R+1) Bl) of the global batch; the loss is the mean over the
                 * global batch's targets, so each rank's gradient is weighted by its share of them */
                const int64_t Bl = B / W;
                const int32_t *lt = tok + (size_t)R * Bl * T, *lg = tgt + (size_t)R * Bl * T;
                int64_t ng = 0, nl = 0;
                for (int64_t i = 0; i < B * T; i++) ng += tgt[i] != GDN2_IGNORE;
                for (int64_t i = 0; i < Bl * T; i++) nl += lg[i] != GDN2_IGNORE;
                st = nl ? gdn2_model_forward_backward(m, lt, lg, Bl, T, &l,
                                                      (float)(1.0 / (double)o.accum * (double)nl / (double)ng))
                        : gdn2_model_forward(m, lt, lg, Bl, T, NULL, &l, 1);
                double part = (double)l * (double)nl;
                if (!st) st = comm->all_reduce_host(comm, &part, 1);
                if (!st) lsum += ng ? part / (double)ng : 0.0;
            }
            if (!st && W > 1) st = gdn2_dist_reduce_grads(dist, m);
            if (st) break;
            float loss = (float)(lsum / o.accum);
            if (!isfinite(loss)) {
                st = gdn2_error(GDN2_ERR_ARG, "train: loss is %g at step %lld (diverged; lower --lr)", loss,
                                (long long)step);
                break;
            }
            /* clip_grad_norm_: the factor is applied as AdamW reads the gradient (no pass of its own).
             * The error slot is cleared first, so that a message below is this norm's, not an older one */
            gdn2_clear_error();
            const float gnorm = W > 1 ? gdn2_dist_grad_norm(dist, m) : gdn2_model_grad_norm(m);
            if (!isfinite(gnorm)) {
                /* the backend's message, if it failed, is copied out first: gdn2_error writes the buffer
                 * that gdn2_last_error returns */
                char why[512];
                snprintf(why, sizeof why, "%s", gdn2_last_error());
                st = gdn2_error(GDN2_ERR_ARG, "train: gradient norm is %g at step %lld (non-finite gradients%s%s)", gnorm,
                                (long long)step, why[0] ? "; last error: " : "", why);
                break;
            }
            const float gk = gdn2_clip_factor(gnorm, o.clip);
            float lr = gdn2_lr_at(step, o.warmup, o.steps, o.lr, o.min_lr);
            if ((st = W > 1 ? gdn2_dist_adamw(dist, &opt, m, lr, gk) : gdn2_adamw_step_scaled(&opt, m, lr, gk))) break;
            if (o.loss_trace) o.loss_trace[step] = loss;
            if (o.gnorm_trace) o.gnorm_trace[step] = gnorm;
            r.train_loss = loss;
            tok_done += B * T * o.accum;
            int last = opt.step == stop;
            int do_eval = last || (o.eval_every > 0 && opt.step % o.eval_every == 0);
            if (do_eval) {
                if ((st = evaluate(m, &ds, &o, &vl, &va))) break;
                r.val_loss = vl, r.val_acc = va;
            }
            if (!o.quiet && (last || (o.log_every > 0 && opt.step % o.log_every == 0) || do_eval)) {
                double now = gdn2_now();
                double tps = (now - tlast) > 0 ? (tok_done - tok_last) / (now - tlast) : 0;
                double avg = (tok_done) / (now - t0 > 0 ? now - t0 : 1);
                char eta[32];
                fmt_time((double)(stop - opt.step) * B * T * o.accum / (avg > 0 ? avg : 1), eta, sizeof eta);
                fprintf(log, "step %lld/%lld | loss %.4f | lr %.2e | %.0f tok/s | ETA %s", (long long)opt.step,
                        (long long)o.steps, loss, lr, tps, eta);
                if (on_gpu) {
                    size_t fr = 0, tot = 0;
                    gdn2_cuda_mem_info(&fr, &tot);
                    fprintf(log, " | MFU %.1f%% | GPU mem %.1f/%.1f GB", 100.0 * flops_tok * tps / 989e12,
                            (double)(tot - fr) / 1e9, (double)tot / 1e9);
                }
                if (do_eval) fprintf(log, " | val loss %.4f acc %.4f", vl, va);
                fprintf(log, "\n");
                fflush(log);
                tlast = now, tok_last = tok_done;
            }
            if (o.out && o.save_every > 0 && opt.step % o.save_every == 0 && !last)
                st = save_ranked(m, &opt, &o, &ri, dist, R);
            if (do_eval && ds.is_mqar && o.target_acc > 0 && va >= o.target_acc) break;
            if (do_eval && !ds.is_mqar && o.target_loss > 0 && vl <= o.target_loss) break;
            int over = o.time_limit_s > 0 && gdn2_now() - t0 > o.time_limit_s;
            if (W > 1 && o.time_limit_s > 0) { /* every rank stops at the same step */
                double f = over;
                if ((st = comm->all_reduce_host(comm, &f, 1))) break;
                over = f > 0;
            }
            if (over) {
                if (!do_eval && !(st = evaluate(m, &ds, &o, &vl, &va))) r.val_loss = vl, r.val_acc = va;
                break;
            }
        }
        free(tok), free(tgt);
        r.steps = opt.step;
        r.wall_s = gdn2_now() - t0;
        r.tokens_per_s = r.wall_s > 0 ? (double)tok_done / r.wall_s : 0;
        (void)step0;
        if (!st) st = save_ranked(m, &opt, &o, &ri, dist, R);
    }
done:
    if (st && comm) gdn2_comm_local_fail(comm); /* the other ranks stop at their next collective */
    if (!st && !o.quiet)
        fprintf(log,
                "{\"steps\":%lld,\"train_loss\":%.6f,\"val_loss\":%.6f,\"val_acc\":%.6f,\"wall_s\":%.2f,"
                "\"tokens_per_s\":%.0f,\"params\":%zu,\"model\":\"%s\",\"layout\":\"%s\",\"task\":\"%s\"}\n",
                (long long)r.steps, r.train_loss, r.val_loss, r.val_acc, r.wall_s, r.tokens_per_s, r.n_params,
                m ? m->cfg.name : "", m ? m->cfg.layout : "", o.task);
    if (res) *res = r;
    if (dist) gdn2_dist_free(dist, m);
    if (comm_owned) comm_owned->destroy(comm_owned);
    gdn2_adamw_free(&opt);
    if (!ds.is_mqar) gdn2_text_free(&ds.text);
    gdn2_tokens_close(ds.tok);
    /* the model goes back to the caller on the CPU (generation and evaluation run there) */
    if (model_out && !st && m && (st = gdn2_model_set_device(m, "cpu")))
        fprintf(stderr, "gdn2 train: moving the model back to the CPU: %s\n", gdn2_last_error());
    if (model_out && !st) *model_out = m;
    else gdn2_model_free(m);
    return st;
}
