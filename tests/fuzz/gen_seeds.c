/* Writes the seed corpus of the fuzz targets (tests/fuzz/corpus/<target>/) with the library itself:
 * small safetensors files of every dtype, rank and metadata shape the reader supports, and small
 * checkpoints (float, int8, int4, an optimizer file, the fixtures' "meta" + "param." form) of a
 * 2-layer gdn2,swa model of ~1.6k parameters, plus the config JSONs. Built by `make fuzz`;
 * run from the project root: build-fuzz/fuzz/gen_seeds. Deterministic (fixed seeds). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "gdn2.h"
#include "gdn2_quant.h"

#define ST_DIR "tests/fuzz/corpus/fuzz_safetensors"
#define CK_DIR "tests/fuzz/corpus/fuzz_checkpoint"

static void die(const char *what) {
    fprintf(stderr, "gen_seeds: %s: %s\n", what, gdn2_last_error());
    exit(1);
}

static void put(const char *path, const char *text) {
    if (gdn2_write_file_atomic(path, text, strlen(text))) die(path);
}

static const char *k_micro =
    "{\"name\":\"micro\",\"n_layer\":2,\"n_embd\":8,\"n_head\":2,\"n_query_groups\":1,\"head_size\":4,"
    "\"vocab_size\":10,\"padding_multiple\":8,\"intermediate_size\":12,\"block_size\":16,\"local_window\":4,"
    "\"norm_eps\":1e-05,\"rope_base\":10000,\"gdn2_num_heads\":1,\"gdn2_num_v_heads\":2,\"gdn2_head_dim\":4,"
    "\"gdn2_expand_v\":1,\"gdn2_conv_size\":2,\"gdn2_allow_neg_eigval\":1,\"gdn2_layout\":\"gdn2,swa\"}";
/* the fixtures' lit_gpt form: layout from gdn2_per_layer, wrapped in "config" */
static const char *k_litgpt =
    "{\"config\":{\"name\":\"lit\",\"n_layer\":2,\"n_embd\":8,\"n_head\":2,\"vocab_size\":10,\"padding_multiple\":8,"
    "\"intermediate_size\":12,\"local_window\":0,\"gdn2_per_layer\":2,\"gdn2_num_heads\":2,\"gdn2_head_dim\":4}}";

int main(void) {
    mkdir("tests/fuzz/corpus", 0755);
    mkdir(ST_DIR, 0755);
    mkdir(CK_DIR, 0755);

    /* ---- safetensors: one tensor of each dtype, ranks 0..3, an empty tensor, metadata ---- */
    unsigned char bytes[256];
    for (int i = 0; i < 256; i++) bytes[i] = (unsigned char)(i * 37 + 11);
    float f32[6] = {1.5f, -2.0f, 0.0f, 3.25f, 1e-3f, -7.0f};
    gdn2_tensor t[9];
    memset(t, 0, sizeof t);
    const char *names[9] = {"f32", "f64", "bf16", "f16", "i32", "i64", "i8", "u8", "empty"};
    gdn2_dtype dts[9] = {GDN2_F32, GDN2_F64, GDN2_BF16, GDN2_F16, GDN2_I32, GDN2_I64, GDN2_I8, GDN2_U8, GDN2_F32};
    for (int i = 0; i < 9; i++) {
        t[i].name = (char *)names[i];
        t[i].dtype = dts[i];
        t[i].ndim = i % 4;
        for (int k = 0; k < t[i].ndim; k++) t[i].shape[k] = k == 0 ? 2 : 1;
        if (i == 8) t[i].ndim = 2, t[i].shape[0] = 0, t[i].shape[1] = 5;
        size_t n = 1;
        for (int k = 0; k < t[i].ndim; k++) n *= (size_t)t[i].shape[k];
        t[i].nbytes = n * gdn2_dtype_size(dts[i]);
        t[i].data = i == 0 ? (void *)f32 : (void *)bytes;
    }
    const char *mk[2] = {"format", "note"}, *mv[2] = {"pt", "seed"};
    if (gdn2_st_write(ST_DIR "/all_dtypes.safetensors", t, 9, mk, mv, 2)) die("all_dtypes");
    if (gdn2_st_write(ST_DIR "/one_f32.safetensors", t, 1, NULL, NULL, 0)) die("one_f32");
    if (gdn2_st_write(ST_DIR "/meta_only.safetensors", NULL, 0, mk, mv, 2)) die("meta_only");

    /* ---- checkpoints of the micro model ---- */
    gdn2_model_cfg c;
    gdn2_model *m = NULL;
    if (gdn2_model_config_from_json(k_micro, &c) || gdn2_model_create(&c, &m)) die("micro model");
    gdn2_model_init(m, 1);
    if (gdn2_model_save(m, CK_DIR "/micro.safetensors")) die("micro.safetensors");
    if (gdn2_model_save_quant(m, CK_DIR "/micro_int8.safetensors", 8, 0, GDN2_QSET_PROJ | GDN2_QSET_GATES | GDN2_QSET_HEAD)) die("int8");
    if (gdn2_model_save_quant(m, CK_DIR "/micro_int4.safetensors", 4, 4, GDN2_QSET_PROJ | GDN2_QSET_GATES | GDN2_QSET_HEAD)) die("int4");
    gdn2_adamw o;
    gdn2_adamw_cfg oc = gdn2_adamw_default();
    if (gdn2_adamw_init(&o, &oc, 16)) die("adamw");
    for (int i = 0; i < 16; i++) o.m[i] = 0.01f * (float)i, o.v[i] = 1e-4f * (float)i;
    o.step = 20;
    if (gdn2_adamw_save(&o, CK_DIR "/adamw16.safetensors", "{\"task\":\"mqar\"}")) die("adamw16");
    gdn2_adamw_free(&o);
    gdn2_model_free(m);

    /* the fixtures' form: metadata "meta" = {"config": {...}}, tensors "param.<name>" */
    if (gdn2_model_config_from_json(k_litgpt, &c) || gdn2_model_create(&c, &m)) die("lit model");
    gdn2_model_init(m, 2);
    gdn2_tensor *pt = calloc((size_t)m->n_tensors, sizeof *pt);
    char(*pn)[160] = calloc((size_t)m->n_tensors, sizeof *pn);
    if (!pt || !pn) die("out of memory");
    for (int i = 0; i < m->n_tensors; i++) {
        const gdn2_model_param *p = &m->tensors[i];
        snprintf(pn[i], sizeof pn[i], "param.%s", p->name);
        pt[i].name = pn[i];
        pt[i].dtype = GDN2_F32;
        pt[i].ndim = p->ndim;
        for (int k = 0; k < p->ndim; k++) pt[i].shape[k] = p->shape[k];
        pt[i].nbytes = p->numel * sizeof(float);
        pt[i].data = m->params + p->offset;
    }
    const char *lk[1] = {"meta"}, *lv[1] = {k_litgpt};
    if (gdn2_st_write(CK_DIR "/litgpt_meta.safetensors", pt, m->n_tensors, lk, lv, 1)) die("litgpt_meta");
    free(pt), free(pn);
    gdn2_model_free(m);

    put(CK_DIR "/config_micro.json", k_micro);
    put(CK_DIR "/config_litgpt.json", k_litgpt);
    put(CK_DIR "/config_tiny.json",
        "{\"name\":\"tiny\",\"n_layer\":2,\"n_embd\":64,\"n_head\":2,\"head_size\":32,\"vocab_size\":256,"
        "\"intermediate_size\":128,\"local_window\":128,\"gdn2_num_heads\":1,\"gdn2_head_dim\":64,"
        "\"gdn2_layout\":\"gdn2,kda,gdn,swa,attn\"}");
    return 0;
}
