/* libFuzzer target: the checkpoint / config loader (src/model/config.c, src/model/checkpoint.c).
 *
 * An input starting with '{' is a model config JSON (what a checkpoint keeps in its metadata):
 * gdn2_model_config_from_json must refuse it or return a config that gdn2_model_check accepts,
 * whose parameter table can be computed, and that survives gdn2_model_config_to_json ->
 * gdn2_model_config_from_json unchanged (a model we can build must load back as the same model).
 * Any other input is a checkpoint file: gdn2_model_load (config from the metadata, every tensor by
 * name, shape and dtype, int8/int4 packed weights) and, when it mentions "adamw", gdn2_adamw_load
 * (an optimizer file for 16 parameters) must refuse it with a message or load it. Seeds: tests/fuzz/corpus/fuzz_checkpoint/. */
#include "fuzz_common.h"

#include <string.h>

#include "gdn2.h"

static void fuzz_config(const uint8_t *data, size_t size) {
    char *json = malloc(size + 1);
    if (!json) abort();
    memcpy(json, data, size);
    json[size] = 0;
    gdn2_model_cfg c, back;
    if (gdn2_model_config_from_json(json, &c) == GDN2_OK) {
        gdn2_model_cfg chk = c;
        if (gdn2_model_check(&chk) != GDN2_OK) abort();
        (void)gdn2_model_param_count(&c);
        char *s = gdn2_model_config_to_json(&c);
        if (!s) abort();
        if (gdn2_model_config_from_json(s, &back) != GDN2_OK) {
            fprintf(stderr, "config %s\n  saved as %s\n  does not load back: %s\n", json, s, gdn2_last_error());
            abort();
        }
        if (memcmp(&c, &back, sizeof c)) {
            fprintf(stderr, "config %s\n  saved as %s\n  loads back different\n", json, s);
            abort();
        }
        free(s);
    } else if (!gdn2_last_error()[0]) {
        abort();
    }
    free(json);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size && data[0] == '{') {
        fuzz_config(data, size);
        return 0;
    }
    const char *path = fuzz_file(data, size);
    gdn2_model *m = NULL;
    if (gdn2_model_load(path, &m) == GDN2_OK) {
        if (!m || !m->params || m->n_params != gdn2_model_param_count(&m->cfg) ||
            m->n_flat != gdn2_model_flat_size(&m->cfg))
            abort();
        gdn2_model_free(m);
    } else if (m || !gdn2_last_error()[0]) {
        abort();
    }
    /* the optimizer loader only on inputs that name its tensors: on others it refuses after the
     * gdn2_st_read that fuzz_safetensors covers (this halves the cost of an execution) */
    if (!memmem(data, size, "adamw", 5)) return 0;
    gdn2_adamw o;
    gdn2_adamw_cfg oc = gdn2_adamw_default();
    if (gdn2_adamw_init(&o, &oc, 16) != GDN2_OK) abort();
    char *train = NULL;
    if (gdn2_adamw_load(&o, path, &train) == GDN2_OK) free(train);
    else if (train) abort();
    gdn2_adamw_free(&o);
    return 0;
}
