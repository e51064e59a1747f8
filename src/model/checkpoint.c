/* Checkpoints. The model file is a safetensors file with the official lit_gpt parameter names and
 * the config JSON in __metadata__ ("format": "gdn2", "config": {...}); the optimizer file holds the
 * AdamW moments ("adamw.m", "adamw.v", flat, in parameter order), the step and the trainer's state.
 * Each is written atomically (temp file + rename) by gdn2_st_write. fp32 throughout, so a resume
 * continues bit-exactly.
 *
 * A training checkpoint is the pair PATH + PATH.optim, written by two renames. Both files carry the
 * same run record (metadata "train": run id, step, run settings), so a pair torn by a crash between
 * the renames (model at step N+k, optimizer at step N) or mixed from two runs is refused on load
 * instead of resumed silently. Two files rather than one directory: PATH stays an ordinary model
 * file that gdn2 generate / eval / quantize / forward read as before. */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "gdn2_quant_model.h"
#include "model_internal.h"
#include "ops/check.h"
#include "util/internal.h"

/* model file with an optional run record (metadata "train") */
static int model_save_meta(const gdn2_model *m, const char *path, const char *train_json) {
    /* a model on a device saves its device weights: refresh the host copy first (logically const) */
    int sst = gdn2_model_sync_host((gdn2_model *)m);
    if (sst) return sst;
    gdn2_tensor *t = calloc((size_t)m->n_tensors, sizeof *t);
    char *cfg = gdn2_model_config_to_json(&m->cfg);
    if (!t || !cfg) {
        free(t), free(cfg);
        return gdn2_error(GDN2_ERR_NOMEM, "%s: out of memory writing the checkpoint", path);
    }
    for (int i = 0; i < m->n_tensors; i++) {
        const gdn2_model_param *p = &m->tensors[i];
        t[i].name = (char *)p->name;
        t[i].dtype = GDN2_F32;
        t[i].ndim = p->ndim;
        for (int k = 0; k < p->ndim; k++) t[i].shape[k] = p->shape[k];
        t[i].nbytes = p->numel * sizeof(float);
        t[i].data = m->params + p->offset;
    }
    const char *keys[] = {"format", "config", "train"};
    const char *vals[] = {"gdn2", cfg, train_json};
    int st = gdn2_st_write(path, t, m->n_tensors, keys, vals, train_json ? 3 : 2);
    free(t), free(cfg);
    return st;
}

int gdn2_model_save(const gdn2_model *m, const char *path) { return model_save_meta(m, path, NULL); }

int gdn2_model_load_params(gdn2_model *m, const gdn2_st *st, const char *prefix) {
    char nm[256];
    for (int i = 0; i < m->n_tensors; i++) {
        const gdn2_model_param *p = &m->tensors[i];
        snprintf(nm, sizeof nm, "%s%s", prefix, p->name);
        int64_t shape[4];
        for (int k = 0; k < 4; k++) shape[k] = p->shape[k];
        float *buf = NULL;
        char nq[300];
        snprintf(nq, sizeof nq, "%s.q", nm);
        int s;
        if (p->ndim == 2 && !gdn2_st_find(st, nm) && gdn2_st_find(st, nq)) { /* packed (gdn2_model_save_quant) */
            s = gdn2_quant_load_weight(st, nm, p->shape[0], p->shape[1], m->params + p->offset);
        } else {
            s = gdn2_st_get_f32(st, nm, 1, p->ndim, shape, &buf);
            if (!s) memcpy(m->params + p->offset, buf, p->numel * sizeof(float));
            free(buf);
        }
        /* a NaN or inf weight would make every output NaN downstream (and the samplers' draws
         * meaningless): refused here, naming the tensor and the element */
        if (!s) s = gdn2_check_tensor_values(st->path, nm, m->params + p->offset, p->ndim, p->shape, 0, p->numel, 0,
                                             m->n_threads);
        if (s) return s;
    }
    return GDN2_OK;
}

/* Build a model from an open checkpoint file (config from "config" or the fixture's "meta"). */
static int model_from_st(const char *path, const gdn2_st *st, gdn2_model **out) {
    *out = NULL;
    int s = GDN2_OK;
    const char *cfg = gdn2_st_meta(st, "config");
    if (!cfg) cfg = gdn2_st_meta(st, "meta"); /* official fixtures: meta.config */
    gdn2_model_cfg c;
    if (!cfg) s = gdn2_error(GDN2_ERR_FORMAT, "%s: no model config in the metadata ('config' or 'meta')", path);
    else if ((s = gdn2_model_config_from_json(cfg, &c))) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", gdn2_last_error());
        gdn2_error(s, "%s: %s", path, msg);
    }
    if (!s) {
        /* every parameter is stored (4 bytes as F32, at least half a byte packed as int4): a config
         * that asks for more than twice the file's tensor bytes is refused before it is allocated */
        size_t held = 0, need = gdn2_model_param_count(&c);
        for (int i = 0; i < st->n_tensors; i++) held += st->tensors[i].nbytes; /* <= the file size */
        if (need / 2 > held)
            s = gdn2_error(GDN2_ERR_FORMAT,
                           "%s: the config describes %zu parameters but the file holds only %zu bytes of tensors",
                           path, need, held);
    }
    gdn2_model *m = NULL;
    if (!s) s = gdn2_model_create(&c, &m);
    const int bare = gdn2_st_find(st, "transformer.wte.weight") || gdn2_st_find(st, "transformer.wte.weight.q");
    if (!s) s = gdn2_model_load_params(m, st, bare ? "" : "param."); /* official fixtures: "param." */
    if (s) {
        gdn2_model_free(m);
        return s;
    }
    *out = m;
    return GDN2_OK;
}

int gdn2_model_load(const char *path, gdn2_model **out) {
    *out = NULL;
    gdn2_st st;
    int s = gdn2_st_read(path, &st);
    if (s) return s;
    s = model_from_st(path, &st, out);
    gdn2_st_free(&st);
    return s;
}

int gdn2_adamw_save(const gdn2_adamw *o, const char *path, const char *train_json) {
    int sst = gdn2_adamw_sync_host((gdn2_adamw *)o);
    if (sst) return sst;
    gdn2_tensor t[2];
    memset(t, 0, sizeof t);
    const char *names[2] = {"adamw.m", "adamw.v"};
    float *d[2] = {o->m, o->v};
    for (int i = 0; i < 2; i++) {
        t[i].name = (char *)names[i];
        t[i].dtype = GDN2_F32;
        t[i].ndim = 1;
        t[i].shape[0] = (int64_t)o->n;
        t[i].nbytes = o->n * sizeof(float);
        t[i].data = d[i];
    }
    char step[32], hyp[256];
    snprintf(step, sizeof step, "%lld", (long long)o->step);
    snprintf(hyp, sizeof hyp, "{\"beta1\":%.9g,\"beta2\":%.9g,\"eps\":%.9g,\"weight_decay\":%.9g,\"exempt_no_decay\":%d}",
             o->cfg.beta1, o->cfg.beta2, o->cfg.eps, o->cfg.weight_decay, o->cfg.exempt_no_decay);
    const char *keys[] = {"format", "step", "adamw", "train"};
    const char *vals[] = {"gdn2-adamw", step, hyp, train_json ? train_json : "{}"};
    return gdn2_st_write(path, t, 2, keys, vals, 4);
}

int gdn2_adamw_load(gdn2_adamw *o, const char *path, char **train_json) {
    if (train_json) *train_json = NULL;
    gdn2_st st;
    int s = gdn2_st_read(path, &st);
    if (s) return s;
    const char *step = gdn2_st_meta(&st, "step");
    if (!step) s = gdn2_error(GDN2_ERR_FORMAT, "%s: no 'step' in the metadata (not a gdn2 optimizer file)", path);
    float *mv[2] = {NULL, NULL};
    const char *names[2] = {"adamw.m", "adamw.v"};
    for (int i = 0; i < 2 && !s; i++) {
        /* the moments cover the model's flat block, alignment gaps included (gdn2_model.n_flat) */
        const gdn2_tensor *t = gdn2_st_find(&st, names[i]);
        if (t && t->ndim == 1 && t->shape[0] != (int64_t)o->n) {
            s = gdn2_error(GDN2_ERR_FORMAT,
                           "%s: '%s' holds %lld moments but the model's flat parameter block has %zu floats "
                           "(an optimizer file of another model, or one written before the block's tensors were "
                           "aligned to %d floats); refusing to resume from it",
                           path, names[i], (long long)t->shape[0], o->n, GDN2_PARAM_ALIGN);
            break;
        }
        int64_t shape[1] = {(int64_t)o->n};
        s = gdn2_st_get_f32(&st, names[i], 1, 1, shape, &mv[i]);
    }
    long long stepv = 0;
    if (!s) {
        char *end = NULL;
        errno = 0;
        stepv = strtoll(step, &end, 10);
        if (end == step || *end || errno || stepv < 0)
            s = gdn2_error(GDN2_ERR_FORMAT, "%s: metadata 'step' is '%.40s', expected an integer >= 0", path, step);
    }
    const char *tj = s ? NULL : gdn2_st_meta(&st, "train");
    if (train_json && tj && !(*train_json = strdup(tj)))
        s = gdn2_error(GDN2_ERR_NOMEM, "%s: out of memory reading the metadata", path);
    if (!s) {
        memcpy(o->m, mv[0], o->n * sizeof(float));
        memcpy(o->v, mv[1], o->n * sizeof(float));
        o->step = stepv;
    }
    free(mv[0]), free(mv[1]);
    gdn2_st_free(&st);
    return s;
}

/* ---- training checkpoints: the pair PATH + PATH.optim ------------------------------------ */

static int optim_path(const char *path, char *buf, size_t n) {
    if ((size_t)snprintf(buf, n, "%s.optim", path) >= n) return gdn2_error(GDN2_ERR_ARG, "%s: path too long", path);
    return GDN2_OK;
}

int gdn2_checkpoint_save(const gdn2_model *m, const gdn2_adamw *o, const char *path, const char *train_json) {
    if (!m || !o || !path || !train_json)
        return gdn2_error(GDN2_ERR_ARG, "gdn2_checkpoint_save: model, optimizer, path or run record is NULL");
    char op[4096];
    int st = optim_path(path, op, sizeof op);
    if (!st) st = model_save_meta(m, path, train_json); /* rename 1 */
    if (st) return st;
    /* TEST HOOK (tests/test_train.c, kill-between-renames test), not a feature: with the environment
     * variable GDN2_TEST_CRASH_AFTER_FIRST_RENAME=1 the process stops here with _exit(3), after the
     * model file's rename and before the optimizer file's, as a kill or crash at that moment would. */
    const char *hook = getenv("GDN2_TEST_CRASH_AFTER_FIRST_RENAME");
    if (hook && !strcmp(hook, "1")) _exit(3);
    return gdn2_adamw_save(o, op, train_json); /* rename 2 */
}

/* run id (a string) and step of a run record; GDN2_ERR_FORMAT naming the file when malformed */
static int record_id_step(const char *file, const char *json, char *id, size_t idn, long long *step) {
    if (!json)
        return gdn2_error(GDN2_ERR_FORMAT,
                          "%s: no run record (metadata 'train'): not a checkpoint of gdn2 train, or one written "
                          "before run ids; cannot check that it matches its pair, so it cannot be resumed",
                          file);
    cJSON *r = cJSON_Parse(json);
    const cJSON *ji = r ? cJSON_GetObjectItemCaseSensitive(r, "run_id") : NULL;
    const cJSON *js = r ? cJSON_GetObjectItemCaseSensitive(r, "step") : NULL;
    int ok = cJSON_IsString(ji) && strlen(ji->valuestring) < idn && cJSON_IsNumber(js) && js->valuedouble >= 0 &&
             js->valuedouble < 9007199254740992.0 && js->valuedouble == (double)(long long)js->valuedouble;
    if (ok) snprintf(id, idn, "%s", ji->valuestring), *step = (long long)js->valuedouble;
    cJSON_Delete(r);
    if (!ok)
        return gdn2_error(GDN2_ERR_FORMAT, "%s: malformed run record (metadata 'train' needs \"run_id\" and \"step\")",
                          file);
    return GDN2_OK;
}

int gdn2_checkpoint_load(const char *path, const gdn2_adamw_cfg *ac, gdn2_model **m_out, gdn2_adamw *o,
                         char **train_json) {
    *m_out = NULL;
    *train_json = NULL;
    memset(o, 0, sizeof *o);
    char op[4096];
    int s = optim_path(path, op, sizeof op);
    if (s) return s;
    gdn2_st st;
    if ((s = gdn2_st_read(path, &st))) return s;
    gdn2_model *m = NULL;
    char *mj = NULL, *oj = NULL;
    s = model_from_st(path, &st, &m);
    const char *tj = gdn2_st_meta(&st, "train");
    if (!s && tj && !(mj = strdup(tj))) s = gdn2_error(GDN2_ERR_NOMEM, "%s: out of memory reading the metadata", path);
    gdn2_st_free(&st);
    char mid[64], oid[64];
    long long ms = 0, os = 0;
    if (!s) s = record_id_step(path, mj, mid, sizeof mid, &ms);
    if (!s) s = gdn2_adamw_init(o, ac, m->n_flat);
    if (!s) s = gdn2_adamw_load(o, op, &oj);
    if (!s) s = record_id_step(op, oj, oid, sizeof oid, &os);
    if (!s && (strcmp(mid, oid) || ms != os || os != (long long)o->step))
        s = gdn2_error(GDN2_ERR_FORMAT,
                       "checkpoint pair does not match: %s is step %lld of run %s, %s is step %lld of run %s "
                       "(a save interrupted between its two renames, or files of different runs); refusing to "
                       "resume from an inconsistent model/optimizer pair (start the run again without --resume)",
                       path, ms, mid, op, os, oid);
    free(oj);
    if (s) {
        free(mj);
        gdn2_model_free(m);
        gdn2_adamw_free(o);
        return s;
    }
    *m_out = m;
    *train_json = mj;
    return GDN2_OK;
}

/* pid of a temporary file "<base>.tmp.<pid>" of the atomic writers (GDN2_TMP_INFIX), else 0 */
static long tmp_pid(const char *name, const char *base) {
    size_t nb = strlen(base), ni = strlen(GDN2_TMP_INFIX);
    if (strncmp(name, base, nb) || strncmp(name + nb, GDN2_TMP_INFIX, ni)) return 0;
    const char *d = name + nb + ni;
    if (!*d || strlen(d) > 10) return 0;
    for (const char *c = d; *c; c++)
        if (*c < '0' || *c > '9') return 0;
    long long pid = strtoll(d, NULL, 10);
    return pid > 0 && pid <= 2147483647 ? (long)pid : 0; /* a pid_t: never 0 or negative (kill() groups) */
}

int gdn2_checkpoint_clean_tmp(const char *path, FILE *log) {
    if (!path) return 0;
    /* the checkpoint's folder and file name */
    char dir[4096], base[2][1100];
    const char *slash = strrchr(path, '/'), *b = slash ? slash + 1 : path;
    if (!slash) snprintf(dir, sizeof dir, ".");
    else if (slash == path) snprintf(dir, sizeof dir, "/");
    else if ((size_t)snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path) >= sizeof dir) return 0;
    if (!*b || strlen(b) + 8 > sizeof base[0]) return 0;
    snprintf(base[0], sizeof base[0], "%s", b);        /* the model file's temp names    */
    snprintf(base[1], sizeof base[1], "%s.optim", b);  /* the optimizer file's           */
    DIR *dp = opendir(dir);
    if (!dp) return 0;
    int removed = 0;
    struct dirent *e;
    while ((e = readdir(dp))) {
        long pid = 0;
        for (int k = 0; k < 2 && !pid; k++) pid = tmp_pid(e->d_name, base[k]);
        if (pid <= 0 || pid == (long)getpid()) continue;
        char f[4096 + 256];
        if ((size_t)snprintf(f, sizeof f, "%s/%s", dir, e->d_name) >= sizeof f) continue;
        struct stat sb;
        if (lstat(f, &sb) || !S_ISREG(sb.st_mode)) continue; /* regular files only, never a link or folder */
        if (kill((pid_t)pid, 0) == 0 || errno == EPERM) {
            if (log) fprintf(log, "note: leaving %s: its writer (pid %ld) is still running\n", f, pid);
            continue;
        }
        if (unlink(f) == 0) {
            removed++;
            if (log) fprintf(log, "note: removed %s, left by an interrupted checkpoint write (pid %ld)\n", f, pid);
        } else if (log) {
            fprintf(log, "note: could not remove %s (left by an interrupted write): %s\n", f, strerror(errno));
        }
    }
    closedir(dp);
    if (log) fflush(log);
    return removed;
}
