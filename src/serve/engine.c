/* The generation engine (include/gdn2_serve.h, docs/SERVING.md): state slots, continuous
 * batching over gdn2_model_step_slots, per-request sampling, stop sequences, max_tokens. */
#include <stdlib.h>
#include <string.h>

#include "gdn2_serve.h"
#include "util/internal.h"

typedef struct {
    int in_use, finish;
    int64_t max_tokens, n_gen, n_commit, n_prompt, n_prefix;
    int32_t *out;      /* [max_tokens]                              */
    gdn2_sampling sp;
    uint64_t rng;
    int32_t next;      /* the token drawn for the slot's next position */
    int n_stop;
    int32_t **stop;    /* copies                                     */
    int64_t *stop_len;
} slot_t;

struct gdn2_engine {
    gdn2_model *m;
    gdn2_model_state *pool;
    int64_t n_slots, max_len, Vp;
    int has_full_attn;
    slot_t *slot;
    float *logits;     /* [n_slots, Vp]: each slot's logits after its prompt (prefix files) */
    int32_t *ids, *toks, *next; /* [n_slots]: the step's slots, their tokens, the tokens drawn */
    gdn2_sampling *sp;  /* [n_slots]: the step's settings and streams                      */
    uint64_t *rng;
};

int gdn2_engine_create(gdn2_model *m, int64_t n_slots, int64_t max_len, gdn2_engine **out) {
    *out = NULL;
    if (n_slots < 1 || n_slots > 65536)
        return gdn2_error(GDN2_ERR_ARG, "engine: %lld slots outside [1, 65536]", (long long)n_slots);
    if (max_len < 2) return gdn2_error(GDN2_ERR_ARG, "engine: max_len %lld < 2", (long long)max_len);
    gdn2_engine *e = calloc(1, sizeof *e);
    if (!e) return gdn2_error(GDN2_ERR_NOMEM, "out of memory for the engine");
    e->m = m, e->n_slots = n_slots, e->max_len = max_len, e->Vp = m->cfg.padded_vocab;
    for (int l = 0; l < m->cfg.n_layer; l++) e->has_full_attn |= m->cfg.kind[l] == GDN2_LAYER_ATTN;
    int st = gdn2_model_state_create(m, n_slots, max_len, &e->pool);
    size_t lg;
    if (!st && !gdn2_mul_sz((size_t)n_slots, (size_t)e->Vp * sizeof(float), &lg))
        st = gdn2_error(GDN2_ERR_NOMEM, "engine: logits of %lld slots overflow", (long long)n_slots);
    if (!st) {
        e->slot = calloc((size_t)n_slots, sizeof *e->slot);
        e->logits = gdn2_malloc(lg, "engine logits");
        e->ids = gdn2_malloc((size_t)n_slots * sizeof(int32_t), "engine slot ids");
        e->toks = gdn2_malloc((size_t)n_slots * sizeof(int32_t), "engine step tokens");
        e->next = gdn2_malloc((size_t)n_slots * sizeof(int32_t), "engine drawn tokens");
        e->sp = gdn2_malloc((size_t)n_slots * sizeof *e->sp, "engine step settings");
        e->rng = gdn2_malloc((size_t)n_slots * sizeof *e->rng, "engine step streams");
        if (!e->slot || !e->logits || !e->ids || !e->toks || !e->next || !e->sp || !e->rng)
            st = gdn2_error(GDN2_ERR_NOMEM, "out of memory for the engine's %lld slots", (long long)n_slots);
    }
    if (st) {
        gdn2_engine_free(e);
        return st;
    }
    *out = e;
    return GDN2_OK;
}

static void slot_clear(slot_t *s) {
    free(s->out);
    for (int i = 0; i < s->n_stop; i++) free(s->stop[i]);
    free(s->stop), free(s->stop_len);
    memset(s, 0, sizeof *s);
}

void gdn2_engine_free(gdn2_engine *e) {
    if (!e) return;
    for (int64_t i = 0; e->slot && i < e->n_slots; i++) slot_clear(&e->slot[i]);
    free(e->slot), free(e->logits), free(e->ids), free(e->toks), free(e->next), free(e->sp), free(e->rng);
    gdn2_model_state_free(e->pool);
    free(e);
}

int64_t gdn2_engine_slots(const gdn2_engine *e) { return e->n_slots; }
int64_t gdn2_engine_max_len(const gdn2_engine *e) { return e->max_len; }
const gdn2_model_state *gdn2_engine_pool(const gdn2_engine *e) { return e->pool; }

int64_t gdn2_engine_free_slots(const gdn2_engine *e) {
    int64_t n = 0;
    for (int64_t i = 0; i < e->n_slots; i++) n += !e->slot[i].in_use;
    return n;
}

int64_t gdn2_engine_running(const gdn2_engine *e) {
    int64_t n = 0;
    for (int64_t i = 0; i < e->n_slots; i++) n += e->slot[i].in_use && e->slot[i].finish == GDN2_FINISH_NONE;
    return n;
}

static int check_request(const gdn2_engine *e, const gdn2_request *r) {
    const int64_t V = e->m->cfg.vocab_size;
    if (r->n_prompt < 0 || (r->n_prompt > 0 && !r->prompt))
        return gdn2_error(GDN2_ERR_ARG, "request: bad prompt (%lld tokens)", (long long)r->n_prompt);
    if (r->n_prompt == 0 && !(r->prefix && r->prefix_logits))
        return gdn2_error(GDN2_ERR_ARG, "request: the prompt is empty (at least one token, or a prefix with logits)");
    if (r->max_tokens < 1) return gdn2_error(GDN2_ERR_ARG, "request: max_tokens %lld < 1", (long long)r->max_tokens);
    for (int64_t i = 0; i < r->n_prompt; i++)
        if (r->prompt[i] < 0 || r->prompt[i] >= V)
            return gdn2_error(GDN2_ERR_ARG, "request: prompt token %lld = %d outside [0, %lld)", (long long)i,
                              r->prompt[i], (long long)V);
    if (r->n_stop < 0 || (r->n_stop > 0 && (!r->stop || !r->stop_len)))
        return gdn2_error(GDN2_ERR_ARG, "request: bad stop list");
    for (int i = 0; i < r->n_stop; i++)
        if (r->stop_len[i] < 1 || !r->stop[i])
            return gdn2_error(GDN2_ERR_ARG, "request: stop sequence %d is empty", i);
    if (r->prefix && (r->prefix_slot < 0 || r->prefix_slot >= r->prefix->n))
        return gdn2_error(GDN2_ERR_ARG, "request: prefix slot %lld outside the prefix pool", (long long)r->prefix_slot);
    const int64_t pre = r->prefix ? r->prefix->slot_pos[r->prefix_slot] : 0;
    if (e->has_full_attn && pre + r->n_prompt + r->max_tokens > e->max_len)
        return gdn2_error(GDN2_ERR_ARG,
                          "request: prefix %lld + prompt %lld + max_tokens %lld exceed the context of %lld tokens a "
                          "slot holds (full attention)",
                          (long long)pre, (long long)r->n_prompt, (long long)r->max_tokens, (long long)e->max_len);
    const gdn2_sampling *sp = &r->sampling;
    if (!(sp->temperature >= 0) || sp->top_k < 0 || !(sp->top_p >= 0))
        return gdn2_error(GDN2_ERR_ARG, "request: temperature %g, top_k %d, top_p %g: each must be >= 0",
                          (double)sp->temperature, sp->top_k, (double)sp->top_p);
    return GDN2_OK;
}

int gdn2_engine_submit(gdn2_engine *e, const gdn2_request *r, int64_t *slot_out) {
    *slot_out = -1;
    int st = check_request(e, r);
    if (st) return st;
    int64_t k = 0;
    while (k < e->n_slots && e->slot[k].in_use) k++;
    if (k == e->n_slots) return gdn2_error(GDN2_ERR_ARG, "engine: all %lld slots are busy", (long long)e->n_slots);
    slot_t *s = &e->slot[k];
    memset(s, 0, sizeof *s);
    s->out = gdn2_malloc((size_t)r->max_tokens * sizeof(int32_t), "request output");
    if (r->n_stop) {
        s->stop = calloc((size_t)r->n_stop, sizeof *s->stop);
        s->stop_len = calloc((size_t)r->n_stop, sizeof *s->stop_len);
    }
    if (!s->out || (r->n_stop && (!s->stop || !s->stop_len))) {
        slot_clear(s);
        return gdn2_error(GDN2_ERR_NOMEM, "out of memory for a request of %lld tokens", (long long)r->max_tokens);
    }
    for (int i = 0; i < r->n_stop; i++) {
        s->stop[i] = gdn2_malloc((size_t)r->stop_len[i] * sizeof(int32_t), "stop sequence");
        if (!s->stop[i]) {
            slot_clear(s);
            return GDN2_ERR_NOMEM;
        }
        memcpy(s->stop[i], r->stop[i], (size_t)r->stop_len[i] * sizeof(int32_t));
        s->stop_len[i] = r->stop_len[i];
        s->n_stop = i + 1;
    }
    s->max_tokens = r->max_tokens;
    s->sp = r->sampling;
    s->rng = gdn2_sampler_seed(r->sampling.seed);
    s->n_prompt = r->n_prompt;
    float *lg = e->logits + (size_t)k * e->Vp;
    if (r->prefix) {
        st = gdn2_model_state_copy_slot(e->m, e->pool, k, r->prefix, r->prefix_slot);
        s->n_prefix = r->prefix->slot_pos[r->prefix_slot];
        if (!st && r->prefix_logits) memcpy(lg, r->prefix_logits, (size_t)e->Vp * sizeof(float));
    } else {
        st = gdn2_model_state_reset_slot(e->pool, k);
    }
    if (!st && r->n_prompt > 0) st = gdn2_model_prefill_slot(e->m, e->pool, k, r->prompt, r->n_prompt, lg);
    if (!st) s->next = gdn2_sample(lg, e->m->cfg.vocab_size, &s->sp, &s->rng); /* the first token's draw */
    if (st) {
        slot_clear(s);
        return st;
    }
    s->in_use = 1;
    s->finish = GDN2_FINISH_NONE;
    *slot_out = k;
    return GDN2_OK;
}

/* after a new token: finish on a stop sequence (dropped from the output), else hold back the
 * longest tail that could still begin one */
static void apply_stops(slot_t *s) {
    int64_t hold = 0;
    for (int i = 0; i < s->n_stop; i++) {
        const int32_t *q = s->stop[i];
        const int64_t L = s->stop_len[i];
        if (s->n_gen >= L && !memcmp(s->out + s->n_gen - L, q, (size_t)L * sizeof(int32_t))) {
            s->n_gen -= L;
            s->n_commit = s->n_gen;
            s->finish = GDN2_FINISH_STOP;
            return;
        }
        for (int64_t h = (L - 1 < s->n_gen ? L - 1 : s->n_gen); h > hold; h--)
            if (!memcmp(s->out + s->n_gen - h, q, (size_t)h * sizeof(int32_t))) {
                hold = h;
                break;
            }
    }
    s->n_commit = s->n_gen - hold;
}

int gdn2_engine_step(gdn2_engine *e) {
    int64_t nf = 0;
    for (int64_t k = 0; k < e->n_slots; k++) {
        slot_t *s = &e->slot[k];
        if (!s->in_use || s->finish != GDN2_FINISH_NONE) continue;
        const int32_t t = s->next;
        s->out[s->n_gen++] = t;
        apply_stops(s);
        if (s->finish == GDN2_FINISH_NONE && s->n_gen >= s->max_tokens) {
            s->finish = GDN2_FINISH_LENGTH;
            s->n_commit = s->n_gen;
        }
        if (s->finish != GDN2_FINISH_NONE) continue;
        e->ids[nf] = (int32_t)k;
        e->toks[nf] = t;
        e->sp[nf] = s->sp;
        e->rng[nf++] = s->rng;
    }
    if (!nf) return GDN2_OK;
    /* the step and the next draws where the logits are (on a GPU only the tokens come back) */
    int st = gdn2_model_step_slots_sample(e->m, e->pool, nf, e->ids, NULL, e->toks, e->sp, e->rng, e->next, NULL);
    for (int64_t i = 0; i < nf; i++) {
        slot_t *s = &e->slot[e->ids[i]];
        if (st) {
            s->finish = GDN2_FINISH_ERROR;
            s->n_commit = s->n_gen;
        } else {
            s->next = e->next[i];
            s->rng = e->rng[i];
        }
    }
    return st;
}

int gdn2_engine_output(const gdn2_engine *e, int64_t k, gdn2_slot_output *o) {
    if (k < 0 || k >= e->n_slots) return gdn2_error(GDN2_ERR_ARG, "engine: slot %lld outside [0, %lld)", (long long)k,
                                                     (long long)e->n_slots);
    const slot_t *s = &e->slot[k];
    o->tokens = s->out;
    o->n_committed = s->n_commit;
    o->n_generated = s->n_gen;
    o->n_prompt = s->n_prompt;
    o->n_prefix = s->n_prefix;
    o->finish = s->finish;
    o->in_use = s->in_use;
    return GDN2_OK;
}

int gdn2_engine_release(gdn2_engine *e, int64_t k) {
    if (k < 0 || k >= e->n_slots) return gdn2_error(GDN2_ERR_ARG, "engine: slot %lld outside [0, %lld)", (long long)k,
                                                     (long long)e->n_slots);
    slot_clear(&e->slot[k]);
    return GDN2_OK;
}

int gdn2_engine_save_prefix(gdn2_engine *e, int64_t k, const char *path) {
    if (k < 0 || k >= e->n_slots || !e->slot[k].in_use || e->slot[k].n_gen)
        return gdn2_error(GDN2_ERR_ARG, "engine: slot %lld is not a request that has just been submitted", (long long)k);
    return gdn2_model_state_save_slot(e->m, e->pool, k, e->logits + (size_t)k * e->Vp, path);
}
