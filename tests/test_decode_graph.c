/* The model's decode step replayed from CUDA graphs (m->cuda_graph, docs/SERVING.md) against the
 * same step launched op by op, and against the CPU. Skips cleanly without a GPU.
 *
 * For tiny (gdn2), hybrid_tiny (gdn2,swa with a 32-token window: the ring wraps) and a 3-layer
 * gdn2,swa,attn of hybrid_tiny's sizes (a full-attention cache too): one model on the GPU (weights
 * rounded to bf16) and a copy on the CPU, three pools of 6 slots — eager (cuda_graph 0), graph
 * (cuda_graph 1) and CPU — run the same continuous-batching script:
 *   prefill slots 0..3; 8 steps over {0,1,2,3} in a new shuffled order each step; slot 1 leaves and
 *   a new sequence joins on slot 5 (reset_slot + prefill_slot); 8 steps over {0,5,2,3}; slot 2
 *   leaves: 8 steps over {3,0,5} (a new batch size: a second graph); a sequence joins on slot 1:
 *   8 steps over {1,3,0,5}; then 4 steps over all 6 slots (more sequences than the step buffers were
 *   made for: they grow, the recordings made with the old ones are dropped), 4 more over {5,0,1,3}
 *   and 6 over {3} alone (batch 1: the one-row products, launched as programmatic dependents).
 * Checks: every logit row of the graph pool bit-identical to the eager pool's, the slots' positions
 * equal; the graph pool holds the recordings the script implies (one per batch size seen twice
 * since the last growth: n = 6, 4 and 1 at the end) and the eager pool none; no fallback
 * (m->cuda_graph still 1); every row within relative RMSE 3e-2 of the CPU's and the greedy token the
 * same where the CPU's top-2 margin is above 0.1 (the bars of test_model_cuda's part 6).
 * Then a recording made to fail (GDN2_CUDA_GRAPH_FAIL=1): the model falls back to eager launches
 * (cuda_graph 0, one line on stderr) with the eager bits.
 * GDN2_TEST_DECODE_DEVICE=cpu runs it with a CPU model as the device one (a self-check of the
 * script without a GPU: no graphs, everything bit-identical). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "decode_check.h"
#include "gdn2.h"
#include "gdn2_cuda.h"
#include "gdn2_model.h"

enum { NSLOT = 6, MAXROWS = 512 };

static double rel_rmse(const float *a, const float *ref, size_t n) {
    double e = 0, r = 0;
    for (size_t i = 0; i < n; i++) e += ((double)a[i] - ref[i]) * ((double)a[i] - ref[i]), r += (double)ref[i] * ref[i];
    return sqrt(e / (r > 0 ? r : 1));
}


/* the config of a case: a named one, or hybrid_tiny's sizes with another layout */
static int case_cfg(const char *name, gdn2_model_cfg *c) {
    if (strcmp(name, "hybrid3_attn")) return gdn2_model_config(name, c);
    int st = gdn2_model_config("hybrid_tiny", c);
    if (st) return st;
    c->n_layer = 3;
    if ((st = gdn2_model_set_layout(c, "gdn2,swa,attn"))) return st;
    return gdn2_model_check(c);
}

/* one run of the script on model m and pool s; cuda_graph is set before every call (the eager
 * and the graph pool share the GPU model). Every logit row appended to lg (at most MAXROWS). */
typedef struct {
    int64_t rows;
    int64_t graphs_mid; /* the pool's recordings before the growth step */
} script_out;

static int run_prefill(gdn2_model *m, gdn2_model_state *s, int slot, unsigned long long *r, int P, float *lg,
                       int64_t *rows) {
    int32_t prompt[64];
    const int64_t V = m->cfg.vocab_size;
    for (int t = 0; t < P; t++) prompt[t] = (int32_t)(test_uniform(r) * V);
    int st = gdn2_model_state_reset_slot(s, slot);
    if (!st) st = gdn2_model_prefill_slot(m, s, slot, prompt, P, lg + *rows * m->cfg.padded_vocab);
    (*rows)++;
    return st;
}

static int run_steps(gdn2_model *m, gdn2_model_state *s, const int32_t *set, int n, int steps, unsigned long long *r,
                     float *lg, int64_t *rows) {
    const int64_t V = m->cfg.vocab_size, Vp = m->cfg.padded_vocab;
    int32_t sl[NSLOT], tok[NSLOT];
    int st = GDN2_OK;
    for (int it = 0; it < steps && !st; it++) {
        memcpy(sl, set, (size_t)n * sizeof(int32_t));
        for (int i = n - 1; i > 0; i--) { /* a new order every step: the same shape, other slots per row */
            const int j = (int)(test_uniform(r) * (i + 1));
            const int32_t t = sl[i];
            sl[i] = sl[j], sl[j] = t;
        }
        for (int i = 0; i < n; i++) tok[i] = (int32_t)(test_uniform(r) * V);
        if (*rows + n > MAXROWS) return gdn2_error(GDN2_ERR_ARG, "test script: more than %d rows", MAXROWS);
        st = gdn2_model_step_slots(m, s, n, sl, NULL, tok, lg + *rows * Vp);
        *rows += n;
    }
    return st;
}

static int script(gdn2_model *m, gdn2_model_state *s, int cuda_graph, float *lg, script_out *o) {
    unsigned long long r = 2024;
    int st = GDN2_OK;
    o->rows = 0, o->graphs_mid = -1;
    m->cuda_graph = cuda_graph;
    static const int32_t a[] = {0, 1, 2, 3}, b[] = {0, 5, 2, 3}, c3[] = {3, 0, 5}, d[] = {1, 3, 0, 5};
    static const int32_t all[] = {4, 2, 5, 0, 1, 3}, e[] = {5, 0, 1, 3};
    static const int plen[] = {30, 7, 1, 19};
    for (int k = 0; k < 4 && !st; k++) st = run_prefill(m, s, k, &r, plen[k], lg, &o->rows);
    if (!st) st = run_steps(m, s, a, 4, 8, &r, lg, &o->rows);
    if (!st) st = run_prefill(m, s, 5, &r, 12, lg, &o->rows); /* slot 1 left, a sequence joins on 5 */
    if (!st) st = run_steps(m, s, b, 4, 8, &r, lg, &o->rows);
    if (!st) st = run_steps(m, s, c3, 3, 8, &r, lg, &o->rows); /* slot 2 left: n = 3 */
    if (!st) st = run_prefill(m, s, 1, &r, 1, lg, &o->rows);  /* a sequence joins on slot 1 */
    if (!st) st = run_steps(m, s, d, 4, 8, &r, lg, &o->rows);
    o->graphs_mid = gdn2_model_state_cuda_graphs(s);
    if (!st) st = run_prefill(m, s, 4, &r, 5, lg, &o->rows); /* slot 4 joins: 6 at once, the buffers grow */
    if (!st) st = run_steps(m, s, all, 6, 4, &r, lg, &o->rows);
    if (!st) st = run_steps(m, s, e, 4, 4, &r, lg, &o->rows); /* slots 2 and 4 left */
    static const int32_t one[] = {3};
    if (!st) st = run_steps(m, s, one, 1, 6, &r, lg, &o->rows); /* n = 1: the one-row products (PDL) */
    return st;
}

static void test_case(const char *name, const char *dev) {
    gdn2_model_cfg c;
    gdn2_model *mc = NULL, *mg = NULL;
    int st = case_cfg(name, &c);
    if (!st) st = gdn2_model_create(&c, &mc);
    if (!st) st = gdn2_model_create(&c, &mg);
    if (!st) {
        gdn2_model_init(mc, 21);
        for (size_t i = 0; i < mc->n_flat; i++) mc->params[i] = bf16_round(mc->params[i]);
        memcpy(mg->params, mc->params, mc->n_flat * sizeof(float));
        mc->n_threads = mg->n_threads = 2;
        st = gdn2_model_set_device(mg, dev);
    }
    CHECK(st == 0, "%s (%s): the model on the CPU and on %s from one init: %s", name, c.layout, dev,
          st ? gdn2_last_error() : "ok");
    if (st) {
        gdn2_model_free(mc), gdn2_model_free(mg);
        return;
    }
    const int64_t Vp = c.padded_vocab, V = c.vocab_size;
    float *le = malloc((size_t)(MAXROWS * Vp) * 4), *lgr = malloc((size_t)(MAXROWS * Vp) * 4);
    float *lc = malloc((size_t)(MAXROWS * Vp) * 4);
    gdn2_model_state *se = NULL, *sg = NULL, *sc = NULL;
    st = gdn2_model_state_create(mg, NSLOT, 128, &se);
    if (!st) st = gdn2_model_state_create(mg, NSLOT, 128, &sg);
    if (!st) st = gdn2_model_state_create(mc, NSLOT, 128, &sc);
    script_out oe = {0, 0}, og = {0, 0}, oc = {0, 0};
    int ste = st ? st : script(mg, se, 0, le, &oe);
    char why_e[1024];
    snprintf(why_e, sizeof why_e, "%s", ste ? gdn2_last_error() : "ok");
    int stg = st ? st : script(mg, sg, 1, lgr, &og);
    const int still_on = mg->cuda_graph;
    char why_g[1024];
    snprintf(why_g, sizeof why_g, "%s", stg ? gdn2_last_error() : "ok");
    int stc = st ? st : script(mc, sc, 1, lc, &oc);
    CHECK(!ste && !stg && !stc && oe.rows == og.rows && oe.rows == oc.rows,
          "%s: the continuous-batching script (%lld logit rows) eager on %s: %s; graphs on %s: %s; CPU: %s", name,
          (long long)og.rows, dev, why_e, dev, why_g, stc ? gdn2_last_error() : "ok");
    if (!ste && !stg && !stc && oe.rows == og.rows && oe.rows == oc.rows) {
        const int on_gpu = strcmp(dev, "cpu") != 0;
        /* recordings: before the growth n = 4 and n = 3 (slots given); after it, n = 6, 4 and 1 */
        const int64_t want_mid = on_gpu ? 2 : 0, want_end = on_gpu ? 3 : 0;
        const int64_t got_end = gdn2_model_state_cuda_graphs(sg);
        CHECK(og.graphs_mid == want_mid && got_end == want_end && gdn2_model_state_cuda_graphs(se) == 0 && still_on,
              "%s: the graph pool holds %lld recordings after the 4-then-3-slot phases (want %lld) and %lld after the "
              "step buffers grew (want %lld: n = 6 and n = 4 re-recorded, n = 1), the eager pool %lld; no fallback "
              "(cuda_graph still %d)",
              name, (long long)og.graphs_mid, (long long)want_mid, (long long)got_end, (long long)want_end,
              (long long)gdn2_model_state_cuda_graphs(se), still_on);
        int64_t first_diff = -1;
        for (int64_t i = 0; i < og.rows && first_diff < 0; i++)
            if (memcmp(le + i * Vp, lgr + i * Vp, (size_t)Vp * 4)) first_diff = i;
        int pos_same = 1;
        for (int k = 0; k < NSLOT; k++) pos_same &= se->slot_pos[k] == sg->slot_pos[k] && sc->slot_pos[k] == sg->slot_pos[k];
        CHECK(first_diff < 0 && pos_same,
              "%s: graph-replayed decode == eager decode bit for bit over %lld logit rows (first differing row %lld), "
              "slot positions equal: %s",
              name, (long long)og.rows, (long long)first_diff, pos_same ? "yes" : "no");
        double worst = 0;
        int am = 1, checked = 0;
        for (int64_t i = 0; i < og.rows; i++) {
            const double e = rel_rmse(lgr + i * Vp, lc + i * Vp, (size_t)V);
            if (e > worst) worst = e;
            double mg_, mc_;
            const int tg = argmax_v(lgr + i * Vp, V, &mg_), tc = argmax_v(lc + i * Vp, V, &mc_);
            if (mc_ > 0.1) checked++, am &= tg == tc;
        }
        CHECK(worst <= 3e-2 && am,
              "%s: graph-replayed decode on %s vs the CPU: worst row relative RMSE %.2e <= 3e-2, greedy token equal at "
              "all %d rows with a CPU margin > 0.1: %s",
              name, dev, worst, checked, am ? "yes" : "no");
        /* turned off mid-run: the pool's recordings stay, the steps run eagerly, the same bits */
        if (on_gpu) {
            float *a = malloc((size_t)(4 * Vp) * 4), *b2 = malloc((size_t)(4 * Vp) * 4);
            static const int32_t sl[] = {3, 5, 1, 0};
            const int32_t tok[] = {1, 2, 3, 4};
            mg->cuda_graph = 0;
            int s1 = gdn2_model_step_slots(mg, se, 4, sl, NULL, tok, a);
            if (!s1) s1 = gdn2_model_step_slots(mg, sg, 4, sl, NULL, tok, b2);
            CHECK(!s1 && !memcmp(a, b2, (size_t)(4 * Vp) * 4) && gdn2_model_state_cuda_graphs(sg) == want_end,
                  "%s: cuda_graph set to 0 after recording: the graph pool steps eagerly to the eager pool's bits%s%s",
                  name, s1 ? ": " : "", s1 ? gdn2_last_error() : "");
            free(a), free(b2);
        }
    }
    /* a recording that fails (GDN2_CUDA_GRAPH_FAIL=1, fault injection): graphs turned off for the
     * model after one stderr line, the step run eagerly — the eager pool's bits */
    if (!ste && !stg && strcmp(dev, "cpu")) {
        gdn2_model_state *sf = NULL, *sf2 = NULL;
        float *a = malloc((size_t)(2 * Vp) * 4), *b2 = malloc((size_t)(2 * Vp) * 4);
        static const int32_t sl[] = {4, 1};
        const int32_t tok[] = {9, 8};
        int s1 = gdn2_model_state_create(mg, NSLOT, 128, &sf);
        if (!s1) s1 = gdn2_model_state_create(mg, NSLOT, 128, &sf2);
        mg->cuda_graph = 0;
        for (int it = 0; it < 3 && !s1; it++) s1 = gdn2_model_step_slots(mg, sf2, 2, sl, NULL, tok, b2);
        mg->cuda_graph = 1;
        setenv("GDN2_CUDA_GRAPH_FAIL", "1", 1);
        for (int it = 0; it < 3 && !s1; it++) s1 = gdn2_model_step_slots(mg, sf, 2, sl, NULL, tok, a);
        unsetenv("GDN2_CUDA_GRAPH_FAIL");
        CHECK(!s1 && mg->cuda_graph == 0 && gdn2_model_state_cuda_graphs(sf) == 0 && !memcmp(a, b2, (size_t)(2 * Vp) * 4),
              "%s: a failed recording (GDN2_CUDA_GRAPH_FAIL=1) falls back to eager launches: cuda_graph now %d, "
              "recordings %lld, the eager bits%s%s",
              name, mg->cuda_graph, (long long)gdn2_model_state_cuda_graphs(sf), s1 ? ": " : "",
              s1 ? gdn2_last_error() : "");
        gdn2_model_state_free(sf), gdn2_model_state_free(sf2);
        free(a), free(b2);
    }
    gdn2_model_state_free(se), gdn2_model_state_free(sg), gdn2_model_state_free(sc);
    free(le), free(lgr), free(lc);
    gdn2_model_free(mc), gdn2_model_free(mg);
}

int main(void) {
    const char *ddev = getenv("GDN2_TEST_DECODE_DEVICE");
    const char *dev = "cuda";
    if (ddev && !strcmp(ddev, "cpu")) dev = "cpu"; /* the script's self-check */
    else if (!gdn2_cuda_available()) {
        const char *why = gdn2_last_error();
        SKIP_NO_GPU("decode step from CUDA graphs vs eager launches vs the CPU, continuous batching (%s)", why);
        return test_summary();
    }
    test_case("tiny", dev);
    test_case("hybrid_tiny", dev);
    test_case("hybrid3_attn", dev);
    return test_summary();
}
