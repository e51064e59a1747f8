/* Post-training weight quantization of one matrix: symmetric int8 per output row, symmetric int4
 * per group of columns (packed two per byte). Formats and the packing are in include/gdn2_quant.h;
 * which weights of a model are quantized, and the packed checkpoints, are model-level
 * (src/model/quant_model.c); method and measurements in docs/QUANT.md. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gdn2_quant.h"
#include "util/internal.h"

static int check_args(int bits, int64_t rows, int64_t cols, int64_t group) {
    if (bits != 8 && bits != 4) return gdn2_error(GDN2_ERR_ARG, "gdn2_quant: bits must be 8 or 4, got %d", bits);
    if (rows < 1 || cols < 1)
        return gdn2_error(GDN2_ERR_ARG, "gdn2_quant: matrix [%lld, %lld] must have rows and cols >= 1", (long long)rows,
                          (long long)cols);
    if (bits == 4 && group < 1)
        return gdn2_error(GDN2_ERR_ARG, "gdn2_quant: int4 group size must be >= 1, got %lld", (long long)group);
    return GDN2_OK;
}

int gdn2_quant_sizes(int bits, int64_t rows, int64_t cols, int64_t group, size_t *q_bytes, size_t *n_scales) {
    int st = check_args(bits, rows, cols, group);
    if (st) return st;
    size_t qb, ns;
    if (bits == 8) {
        qb = (size_t)rows * (size_t)cols;
        ns = (size_t)rows;
    } else {
        qb = (size_t)rows * (size_t)((cols + 1) / 2);
        ns = (size_t)rows * (size_t)((cols + group - 1) / group);
    }
    if (q_bytes) *q_bytes = qb;
    if (n_scales) *n_scales = ns;
    return GDN2_OK;
}

size_t gdn2_quant_nbytes(int bits, int64_t rows, int64_t cols, int64_t group) {
    size_t qb, ns;
    if (gdn2_quant_sizes(bits, rows, cols, group, &qb, &ns)) return 0;
    return qb + ns * sizeof(float);
}

/* max |x| over n values; -1 if one is not finite */
static float absmax(const float *x, int64_t n) {
    float m = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(x[i])) return -1.0f;
        float a = fabsf(x[i]);
        if (a > m) m = a;
    }
    return m;
}

static inline int qround(float x, float s, int qmax) {
    if (s == 0.0f) return 0;
    float r = roundf(x / s);
    if (r > (float)qmax) r = (float)qmax;
    if (r < (float)-qmax) r = (float)-qmax;
    return (int)r;
}

int gdn2_quantize(int bits, int64_t group, const float *w, int64_t rows, int64_t cols, void *q, float *scales) {
    int st = check_args(bits, rows, cols, group);
    if (st) return st;
    if (!w || !q || !scales) return gdn2_error(GDN2_ERR_ARG, "gdn2_quantize: NULL weight, value or scale buffer");
    if (bits == 8) {
        int8_t *q8 = q;
        for (int64_t r = 0; r < rows; r++) {
            const float *x = w + r * cols;
            float m = absmax(x, cols);
            if (m < 0) return gdn2_error(GDN2_ERR_ARG, "gdn2_quantize: non-finite weight in row %lld", (long long)r);
            float s = m / 127.0f;
            scales[r] = s;
            for (int64_t c = 0; c < cols; c++) q8[r * cols + c] = (int8_t)qround(x[c], s, 127);
        }
        return GDN2_OK;
    }
    uint8_t *q4 = q;
    const int64_t rb = (cols + 1) / 2, ng = (cols + group - 1) / group;
    for (int64_t r = 0; r < rows; r++) {
        const float *x = w + r * cols;
        uint8_t *qr = q4 + r * rb;
        memset(qr, 0, (size_t)rb);
        for (int64_t g = 0; g < ng; g++) {
            int64_t c0 = g * group, c1 = c0 + group < cols ? c0 + group : cols;
            float m = absmax(x + c0, c1 - c0);
            if (m < 0) return gdn2_error(GDN2_ERR_ARG, "gdn2_quantize: non-finite weight in row %lld", (long long)r);
            float s = m / 7.0f;
            scales[r * ng + g] = s;
            for (int64_t c = c0; c < c1; c++) {
                uint8_t nib = (uint8_t)(qround(x[c], s, 7) + 8);
                qr[c / 2] |= (uint8_t)((c & 1) ? nib << 4 : nib);
            }
        }
    }
    return GDN2_OK;
}

int gdn2_dequantize(int bits, int64_t group, const void *q, const float *scales, int64_t rows, int64_t cols,
                    float *w) {
    int st = check_args(bits, rows, cols, group);
    if (st) return st;
    if (!w || !q || !scales) return gdn2_error(GDN2_ERR_ARG, "gdn2_dequantize: NULL weight, value or scale buffer");
    if (bits == 8) {
        const int8_t *q8 = q;
        for (int64_t r = 0; r < rows; r++)
            for (int64_t c = 0; c < cols; c++) w[r * cols + c] = (float)q8[r * cols + c] * scales[r];
        return GDN2_OK;
    }
    const uint8_t *q4 = q;
    const int64_t rb = (cols + 1) / 2, ng = (cols + group - 1) / group;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) {
            uint8_t byte = q4[r * rb + c / 2];
            int v = (int)((c & 1) ? byte >> 4 : byte & 0xF) - 8;
            w[r * cols + c] = (float)v * scales[r * ng + c / group];
        }
    return GDN2_OK;
}
