/* SVG heatmap of a score over depth (rows) x length (columns): the standard NIAH picture.
 * Plain SVG 1.1 text, no external fonts or scripts; NaN cells are "not measured" (grey). */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gdn2.h"
#include "gdn2_data.h"
#include "gdn2_io.h"

typedef struct { char *p; size_t n, cap; int oom; } svgbuf;

static void out(svgbuf *b, const char *fmt, ...) {
    if (b->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(b->p ? b->p + b->n : NULL, b->p ? b->cap - b->n : 0, fmt, ap);
        va_end(ap);
        if (k < 0) { b->oom = 1; return; }
        if (b->p && b->n + (size_t)k < b->cap) { b->n += (size_t)k; return; }
        size_t cap = b->cap ? b->cap * 2 : 4096;
        while (cap < b->n + (size_t)k + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) { b->oom = 1; return; }
        b->p = p, b->cap = cap;
    }
}

/* XML text escaping for titles */
static void out_text(svgbuf *b, const char *s) {
    for (; s && *s; s++) {
        if (*s == '&') out(b, "&amp;");
        else if (*s == '<') out(b, "&lt;");
        else if (*s == '>') out(b, "&gt;");
        else if (*s == '"') out(b, "&quot;");
        else if ((unsigned char)*s >= 0x20) out(b, "%c", *s);
    }
}

/* diverging red -> yellow -> green (ColorBrewer RdYlGn end points) for a score in [0, 100] */
static void score_color(double s, int rgb[3]) {
    static const int lo[3] = {215, 48, 39}, mid[3] = {254, 224, 139}, hi[3] = {26, 152, 80};
    double t = s / 100.0;
    if (t < 0) t = 0;
    if (t > 1) t = 1;
    const int *a = t < 0.5 ? lo : mid, *c = t < 0.5 ? mid : hi;
    double u = t < 0.5 ? t * 2 : (t - 0.5) * 2;
    for (int i = 0; i < 3; i++) rgb[i] = (int)lround(a[i] + (c[i] - a[i]) * u);
}

int gdn2_heatmap_svg(const gdn2_heatmap *h, char **res) {
    if (!h || !res || h->n_rows < 1 || h->n_cols < 1 || !h->score)
        return gdn2_error(GDN2_ERR_ARG, "heatmap: need at least one row and one column and a score array");
    const int cw = 72, top = 56, bar_w = 18;
    const int ch = h->n_rows < 4 ? 104 / h->n_rows : 26; /* few rows: taller cells keep the colour bar readable */
    int left = 96;
    const int gw = cw * h->n_cols, gh = ch * h->n_rows;
    int W = left + gw + 110;
    const int H = top + gh + 64, title_w = (int)strlen(h->title ? h->title : "score") * 9 + 40; /* ~9 px a glyph at 15 px */
    if (W < title_w) left += (title_w - W) / 2, W = title_w; /* a long title: centre the grid under it */
    svgbuf b = {0};
    out(&b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    out(&b, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
            "font-family=\"DejaVu Sans, Arial, sans-serif\">\n", W, H, W, H);
    out(&b, "<rect x=\"0\" y=\"0\" width=\"%d\" height=\"%d\" fill=\"white\"/>\n", W, H);
    out(&b, "<text x=\"%d\" y=\"26\" font-size=\"15\" text-anchor=\"middle\" font-weight=\"bold\">", W / 2);
    out_text(&b, h->title ? h->title : "score");
    out(&b, "</text>\n");
    for (int r = 0; r < h->n_rows; r++) {
        int y = top + r * ch;
        char lab[32];
        if (h->row_vals && !isnan(h->row_vals[r])) snprintf(lab, sizeof lab, "%g", h->row_vals[r]);
        else snprintf(lab, sizeof lab, "%s", h->row_axis ? "-" : "random");
        out(&b, "<text x=\"%d\" y=\"%d\" font-size=\"11\" text-anchor=\"end\">%s</text>\n", left - 6, y + ch / 2 + 4, lab);
        for (int c = 0; c < h->n_cols; c++) {
            int x = left + c * cw;
            double s = h->score[(size_t)r * h->n_cols + c];
            int rgb[3] = {200, 200, 200};
            if (!isnan(s)) score_color(s, rgb);
            out(&b, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"rgb(%d,%d,%d)\" stroke=\"white\"/>\n", x, y,
                cw, ch, rgb[0], rgb[1], rgb[2]);
            if (isnan(s)) out(&b, "<text x=\"%d\" y=\"%d\" font-size=\"10\" text-anchor=\"middle\" fill=\"#555\">n/a</text>\n",
                              x + cw / 2, y + ch / 2 + 4);
            else out(&b, "<text x=\"%d\" y=\"%d\" font-size=\"11\" text-anchor=\"middle\">%.1f</text>\n", x + cw / 2,
                     y + ch / 2 + 4, s);
        }
    }
    for (int c = 0; c < h->n_cols; c++)
        out(&b, "<text x=\"%d\" y=\"%d\" font-size=\"11\" text-anchor=\"middle\">%d</text>\n", left + c * cw + cw / 2,
            top + gh + 16, h->col_vals ? h->col_vals[c] : c);
    out(&b, "<text x=\"%d\" y=\"%d\" font-size=\"12\" text-anchor=\"middle\">context length (tokens)</text>\n",
        left + gw / 2, top + gh + 40);
    out(&b, "<text x=\"%d\" y=\"%d\" font-size=\"12\" text-anchor=\"middle\" transform=\"rotate(-90 %d %d)\">",
        left - 78, top + gh / 2, left - 78, top + gh / 2);
    out_text(&b, h->row_axis ? h->row_axis : "needle depth (%)");
    out(&b, "</text>\n");
    /* colour bar 0..100 in 10 steps */
    int bx = left + gw + 24;
    for (int i = 0; i < 10; i++) {
        int rgb[3];
        score_color(100.0 - (i + 0.5) * 10, rgb);
        out(&b, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%.2f\" fill=\"rgb(%d,%d,%d)\"/>\n", bx,
            top + (int)(i * gh / 10.0), bar_w, gh / 10.0 + 0.5, rgb[0], rgb[1], rgb[2]);
    }
    out(&b, "<text x=\"%d\" y=\"%d\" font-size=\"10\">100</text>\n", bx + bar_w + 4, top + 8);
    out(&b, "<text x=\"%d\" y=\"%d\" font-size=\"10\">0</text>\n", bx + bar_w + 4, top + gh);
    out(&b, "<text x=\"%d\" y=\"%d\" font-size=\"10\">score</text>\n", bx - 2, top - 6);
    out(&b, "</svg>\n");
    if (b.oom) { free(b.p); return gdn2_error(GDN2_ERR_NOMEM, "heatmap: out of memory"); }
    *res = b.p;
    return GDN2_OK;
}

int gdn2_heatmap_write(const gdn2_heatmap *h, const char *path) {
    char *svg;
    int st = gdn2_heatmap_svg(h, &svg);
    if (st) return st;
    st = gdn2_write_file_atomic(path, svg, strlen(svg));
    free(svg);
    return st;
}
