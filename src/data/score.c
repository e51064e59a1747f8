/* Scorers: RULER's string_match_all / string_match_part (NVIDIA/RULER scripts/eval/synthetic/
 * constants.py) and the token accuracies of MQAR (Zoology) and the state-tracking tasks (Grazzi et
 * al.); docs/TASKS.md ("Scoring"). */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "gdn2_data.h"

/* Python's str.strip() whitespace for ASCII: \t \n \v \f \r, 0x1c-0x1f and space */
static int py_space(unsigned char ch) { return ch == ' ' || (ch >= 9 && ch <= 13) || (ch >= 0x1c && ch <= 0x1f); }

void gdn2_ruler_postprocess(const char *pred, size_t n, char *out, size_t cap) {
    if (!out || cap == 0) return;
    out[0] = 0;
    if (!pred) return;
    /* strip; control characters -> '\n'; strip again (the second strip also removes the newlines
     * that replaced leading/trailing controls, so one pass over the trimmed span is equivalent) */
    size_t a = 0, b = n;
    while (a < b && (py_space((unsigned char)pred[a]) || (unsigned char)pred[a] < 0x20)) a++;
    while (b > a && (py_space((unsigned char)pred[b - 1]) || (unsigned char)pred[b - 1] < 0x20)) b--;
    size_t m = 0;
    for (size_t i = a; i < b && m + 1 < cap; i++) {
        unsigned char ch = (unsigned char)pred[i];
        out[m++] = ch < 0x20 ? '\n' : (char)ch;
    }
    out[m] = 0;
}

/* case-insensitive (ASCII, like Python's lower() on ASCII text) substring test */
static int contains_ci(const char *hay, const char *needle) {
    size_t nl = strlen(needle);
    if (nl == 0) return 1;
    for (const char *h = hay; *h; h++) {
        size_t i = 0;
        while (i < nl && h[i] && tolower((unsigned char)h[i]) == tolower((unsigned char)needle[i])) i++;
        if (i == nl) return 1;
    }
    return 0;
}

static char *post_dup(const char *pred) {
    size_t n = pred ? strlen(pred) : 0;
    char *p = malloc(n + 1);
    if (p) gdn2_ruler_postprocess(pred ? pred : "", n, p, n + 1);
    return p;
}

/* string_match_all: (number of refs found in the prediction) / (number of refs) */
double gdn2_string_match_all(const char *pred, const char *const *refs, int n_refs) {
    if (n_refs <= 0 || !refs) return 0.0;
    char *p = post_dup(pred);
    if (!p) return 0.0;
    int hit = 0;
    for (int i = 0; i < n_refs; i++) hit += refs[i] && contains_ci(p, refs[i]);
    free(p);
    return (double)hit / n_refs;
}

/* string_match_part: 1 if any ref is found */
double gdn2_string_match_part(const char *pred, const char *const *refs, int n_refs) {
    if (n_refs <= 0 || !refs) return 0.0;
    char *p = post_dup(pred);
    if (!p) return 0.0;
    int any = 0;
    for (int i = 0; i < n_refs && !any; i++) any = refs[i] && contains_ci(p, refs[i]);
    free(p);
    return any ? 1.0 : 0.0;
}

double gdn2_token_accuracy(const int32_t *pred, const int32_t *targets, int n, int *n_correct, int *n_scored) {
    int c = 0, s = 0;
    for (int t = 0; t < n; t++) {
        if (targets[t] == GDN2_IGNORE) continue;
        s++;
        c += pred[t] == targets[t];
    }
    if (n_correct) *n_correct = c;
    if (n_scored) *n_scored = s;
    return s ? (double)c / s : 0.0;
}

int gdn2_sequence_correct(const int32_t *pred, const int32_t *targets, int n) {
    int c, s;
    gdn2_token_accuracy(pred, targets, n, &c, &s);
    return s > 0 && c == s;
}
