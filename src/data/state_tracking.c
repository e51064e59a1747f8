/* State-tracking tasks (Grazzi et al., ICLR 2025; docs/TASKS.md "State tracking"): parity and modular
 * arithmetic without brackets. Train lengths 3..40, test 40..256, context 256 right-padded with 0;
 * loss and accuracy only at the answer. These separate transitions with eigenvalues in [0,1]
 * (cannot count mod 2) from [-1,1] (allow_neg_eigval). */
#include <string.h>

#include "gdn2_data.h"
#include "rng.h"
#include "util/internal.h"

#define ST_TAG 0x53544154ULL /* "STAT" */
/* below this length the sample space is too small to halve without starving training, so short
 * sequences are not partitioned; the protocol's test lengths (>= 40) always are. */
#define ST_PARTITION_MIN_LEN 16

int gdn2_state_vocab(int kind) { return kind == GDN2_ST_PARITY ? 3 : 10; }

static void st_range(const gdn2_state_cfg *c, int split, int *lo, int *hi, int *T) {
    *T = c->seq_len > 0 ? c->seq_len : 256;
    *lo = c->min_len > 0 ? c->min_len : (split ? 40 : 3);
    *hi = c->max_len > 0 ? c->max_len : (split ? 256 : 40);
    if (*hi > *T && c->max_len <= 0) *hi = *T;
}

/* parity: L-1 bits in {1,2}, then 1 + (number of 2s mod 2). Returns the answer token. */
static int32_t draw_parity(gdn2_rng *r, int L, int32_t *tok) {
    int twos = 0;
    for (int t = 0; t < L - 1; t++) {
        tok[t] = 1 + (int32_t)gdn2_rng_below(r, 2);
        twos += tok[t] == 2;
    }
    return 1 + (twos & 1);
}

/* modarith: e = L-2 tokens "d op d op ... d" (digits 0..4 as tokens 5..9, ops + - * as 1 2 3),
 * then '=' (4). Value mod 5 with * binding tighter than + and -:
 *   sum = sum of signed products; a product is extended while the operator is '*'. */
static int32_t draw_modarith(gdn2_rng *r, int L, int32_t *tok) {
    int e = L - 2, sum = 0, sign = 1, term = 0;
    for (int t = 0; t < e; t++) {
        if (t % 2 == 0) {
            int d = (int)gdn2_rng_below(r, 5);
            tok[t] = 5 + d;
            term = (t == 0 || tok[t - 1] != 3) ? d : (term * d) % 5;
        } else {
            tok[t] = 1 + (int32_t)gdn2_rng_below(r, 3);
            if (tok[t] != 3) { /* + or -: close the current product */
                sum = (sum + sign * term) % 5;
                sign = tok[t] == 1 ? 1 : -1;
            }
        }
    }
    sum = ((sum + sign * term) % 5 + 5) % 5;
    tok[e] = 4;
    return 5 + sum;
}

int gdn2_state_sample(const gdn2_state_cfg *c, uint64_t seed, int split, int32_t *tokens, int32_t *targets,
                      int *len_out) {
    if (!c || !tokens || !targets) return gdn2_error(GDN2_ERR_ARG, "state: NULL argument");
    if (c->kind != GDN2_ST_PARITY && c->kind != GDN2_ST_MODARITH)
        return gdn2_error(GDN2_ERR_ARG, "state: unknown kind %d (0 parity, 1 modarith)", c->kind);
    if (split != 0 && split != 1) return gdn2_error(GDN2_ERR_ARG, "state: split %d must be 0 or 1", split);
    int lo, hi, T;
    st_range(c, split, &lo, &hi, &T);
    if (lo < 3 || hi < lo || hi > T)
        return gdn2_error(GDN2_ERR_ARG, "state: lengths [%d, %d] must satisfy 3 <= min <= max <= seq_len %d", lo, hi, T);
    const int ma = c->kind == GDN2_ST_MODARITH;
    if (ma && lo == hi && lo % 2 == 0)
        return gdn2_error(GDN2_ERR_ARG, "state: modarith needs an odd length, range is [%d, %d]", lo, hi);
    gdn2_rng r = gdn2_rng_for(ST_TAG + (uint64_t)c->kind, seed, split);
    for (int attempt = 0; attempt < 256; attempt++) {
        int L;
        do L = lo + (int)gdn2_rng_below(&r, (uint64_t)(hi - lo + 1)); while (ma && L % 2 == 0);
        for (int t = 0; t < T; t++) tokens[t] = 0, targets[t] = GDN2_IGNORE;
        tokens[L - 1] = ma ? draw_modarith(&r, L, tokens) : draw_parity(&r, L, tokens);
        targets[L - 2] = tokens[L - 1]; /* read up to L-2, predict the answer */
        /* train/test disjointness: long sequences belong to the split their hash says */
        if (L >= ST_PARTITION_MIN_LEN && gdn2_content_split(tokens, sizeof(int32_t) * (size_t)L) != split) continue;
        if (len_out) *len_out = L;
        return GDN2_OK;
    }
    return gdn2_error(GDN2_ERR_ARG, "state: could not draw a sample for split %d", split);
}
