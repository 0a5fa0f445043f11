/*
 * Fused sigmoid focal loss for the CPU: loss, gradient and batch statistics in one pass.
 *
 * The input is viewed as (N, C, S): N rows, C classes along dim 1, S trailing elements. The caller splits the
 * work into ranges of "units" (a unit is one row of C elements when S == 1, else one (n, c) plane of S elements)
 * and runs ranges on separate threads; each range writes its own statistics accumulator, so the result does not
 * depend on thread scheduling.
 *
 * Elements are processed in blocks held in L1-sized stack buffers, in phases that each vectorise: the sigmoid
 * and BCE terms, then gamma, then the modulating factor with the loss and the gradient, then the statistics.
 * exp and log are written out below (Cephes-style range reduction and polynomials, ~1 ulp on the ranges used) so
 * that the compiler vectorises them without -ffast-math; the code never forms an infinity or a NaN from finite
 * input, which is what keeps saturated logits (|x| up to 1e4 and beyond) finite for every gamma.
 *
 * Per element (t the raw target, t' the smoothed one; see adaptive_focal/_kernels/__init__.py for the contract):
 *   e = exp(-|x|), p = sigmoid(x), pm = 1 - p (both exact from e), q = 1 - p_t = t' pm + (1 - t') p,
 *   l = BCE = max(x, 0) - x t' + log1p(e), base = q (gamma >= 0) or 2 - q (gamma < 0), m = base^|gamma|,
 *   loss = w a m l,  dloss/dx = w a m [(p - t') + gamma (p pm / base) (1 - 2t') l].
 * The second gradient term is written with p pm / base (bounded by 1) instead of (1 - p_t)^(gamma - 1), which
 * is what makes 0 <= gamma < 1 safe at saturated logits.
 */
#include <stdint.h>
#include <string.h>

#define BLOCK 512

typedef struct {
    int64_t n, c, s;                 /* logical shape (N, C, S) */
    int64_t unit_begin, unit_end;    /* range of units handled by this call */
    const float *x, *t;
    float *grad;                     /* (N, C, S) */
    float *elem;                     /* (N, C, S) or NULL */
    int32_t gamma_kind;              /* 0 scalar, 1 per class, 2 per element, 3 table (C, table_bins) */
    int32_t table_bins;
    const float *gamma;
    const float *table_edges;        /* table_bins + 1 */
    const float *alpha;              /* (C,) or NULL */
    const float *weight;             /* (N, C, S) or NULL */
    int32_t has_ignore;
    float ignore_value;
    float smoothing;
    int32_t detach;
    int32_t need_stats;
    int32_t stat_bins;
    const float *stat_edges;         /* stat_bins + 1 */
    double *acc;                     /* 5 + stat_bins + 2 C, zeroed by the caller */
} focal_args;

static inline float bits_to_float(int32_t i) { float f; memcpy(&f, &i, 4); return f; }
static inline int32_t float_to_bits(float f) { int32_t i; memcpy(&i, &f, 4); return i; }

/* exp(x); exactly 0 below -87.3 (where the result would be subnormal), finite for x <= 88. */
static inline float f_exp(float x) {
    float xc = x < -87.3f ? -87.3f : (x > 88.3f ? 88.3f : x);
    float n = __builtin_floorf(xc * 1.44269504088896341f + 0.5f);
    float r = xc - n * 0.693359375f + n * 2.12194440e-4f;
    float z = r * r;
    float y = ((((1.9875691500e-4f * r + 1.3981999507e-3f) * r + 8.3334519073e-3f) * r
                + 4.1665795894e-2f) * r + 1.6666665459e-1f) * r + 5.0000001201e-1f;
    y = y * z + r + 1.0f;
    float pow2n = bits_to_float(((int32_t)n + 127) << 23);
    return x < -87.3f ? 0.0f : y * pow2n;
}

/* log(x) for x > 0; x below the smallest normal float is treated as that value (log = -87.3). */
static inline float f_log(float x) {
    float xc = x < 1.17549435e-38f ? 1.17549435e-38f : x;
    int32_t bits = float_to_bits(xc);
    float e = (float)(((bits >> 23) & 0xff) - 126);
    float m = bits_to_float((bits & 0x007fffff) | 0x3f000000); /* m in [0.5, 1) */
    int small = m < 0.707106781186547524f;
    e = small ? e - 1.0f : e;
    m = small ? m + m - 1.0f : m - 1.0f;
    float z = m * m;
    float y = ((((((((7.0376836292e-2f * m - 1.1514610310e-1f) * m + 1.1676998740e-1f) * m
                    - 1.2420140846e-1f) * m + 1.4249322787e-1f) * m - 1.6668057665e-1f) * m
                 + 2.0000714765e-1f) * m - 2.4999993993e-1f) * m + 3.3333331174e-1f) * m * z;
    y += -2.12194440e-4f * e;
    y += -0.5f * z;
    return m + y + 0.693359375f * e;
}

/* log1p(u) for u in [0, 1], accurate for tiny u (Goldberg's correction). */
static inline float f_log1p(float u) {
    float w = 1.0f + u;
    float d = w - 1.0f;
    return d == 0.0f ? u : f_log(w) * (u / d);
}

/* Index of the bin of v among edges[0..bins]: the number of interior edges <= v. */
static inline float bin_of(float v, const float *edges, int32_t bins) {
    float b = 0.0f;
    for (int32_t k = 1; k < bins; ++k) b += v >= edges[k] ? 1.0f : 0.0f;
    return b;
}

typedef struct {
    /* per-position class data for a block (index j), filled once (S == 1) or per plane (S > 1) */
    float gamma[BLOCK], alpha[BLOCK];
    int32_t cls[BLOCK];
    /* per-element intermediates */
    float p[BLOCK], pm[BLOCK], ts[BLOCK], q[BLOCK], pt[BLOCK], l[BLOCK], valid[BLOCK], pos[BLOCK], g[BLOCK],
        el[BLOCK];
    /* per-position running sums: element-wise adds vectorise where a floating-point reduction would not
       (without -ffast-math), and with S == 1 position j always holds class j % C */
    double s_loss[BLOCK], s_count[BLOCK], s_pos[BLOCK], s_pt[BLOCK], s_abs[BLOCK];
} block_buf;

static void clear_sums(block_buf *b, int64_t len) {
    for (int64_t j = 0; j < len; ++j) {
        b->s_loss[j] = 0.0; b->s_count[j] = 0.0; b->s_pos[j] = 0.0; b->s_pt[j] = 0.0; b->s_abs[j] = 0.0;
    }
}

/* Adds the running sums of positions [0, len) into acc; position j belongs to class cls[j]. */
static void fold_sums(const focal_args *a, block_buf *b, int64_t len, double *acc) {
    double *class_count = acc + 5 + a->stat_bins, *class_sum_pt = class_count + a->c;
    for (int64_t j = 0; j < len; ++j) {
        acc[0] += b->s_loss[j];
        acc[1] += b->s_count[j];
        acc[2] += b->s_pos[j];
        acc[3] += b->s_pt[j];
        acc[4] += b->s_abs[j];
        class_count[b->cls[j]] += b->s_count[j];
        class_sum_pt[b->cls[j]] += b->s_pt[j];
    }
    clear_sums(b, len);
}

static void process_block(const focal_args *a, block_buf *b, int64_t off, int32_t len, double *acc) {
    const float *x = a->x + off, *t = a->t + off;
    const float ls = a->smoothing, ign = a->ignore_value;
    const int has_ign = a->has_ignore;

    /* phase 1: sigmoid, BCE and p_t */
    for (int32_t j = 0; j < len; ++j) {
        float xv = x[j], tv = t[j];
        float ts = tv * (1.0f - ls) + 0.5f * ls;
        float e = f_exp(-(xv < 0.0f ? -xv : xv));
        float s = 1.0f / (1.0f + e);
        float es = e * s;
        float p = xv >= 0.0f ? s : es;
        float pm = xv >= 0.0f ? es : s;
        float valid = (has_ign && tv == ign) ? 0.0f : 1.0f;
        b->p[j] = p;
        b->pm[j] = pm;
        b->ts[j] = valid != 0.0f ? ts : 0.0f;   /* keeps ignored lanes (t = ignore_index) in range */
        b->q[j] = valid != 0.0f ? ts * pm + (1.0f - ts) * p : pm;
        b->pt[j] = p * ts + pm * (1.0f - ts);
        b->l[j] = (xv > 0.0f ? xv : 0.0f) - xv * ts + f_log1p(e);
        b->valid[j] = valid;
        b->pos[j] = (valid != 0.0f && tv >= 0.5f) ? 1.0f : 0.0f;
    }

    /* phase 2: gamma for each element */
    switch (a->gamma_kind) {
    case 0: { float g0 = a->gamma[0]; for (int32_t j = 0; j < len; ++j) b->g[j] = g0; break; }
    case 1: memcpy(b->g, b->gamma, (size_t)len * sizeof(float)); break;
    case 2: memcpy(b->g, a->gamma + off, (size_t)len * sizeof(float)); break;
    default: {
        const int32_t tb = a->table_bins;
        for (int32_t j = 0; j < len; ++j) {
            int32_t k = (int32_t)bin_of(b->pt[j], a->table_edges, tb);
            b->g[j] = a->gamma[b->cls[j] * tb + k];
        }
    }
    }

    /* phase 3: modulating factor, loss and gradient */
    const int use_alpha = a->alpha != NULL, detach = a->detach;
    const float *w = a->weight ? a->weight + off : NULL;
    float *grad = a->grad + off;
    for (int32_t j = 0; j < len; ++j) {
        float g = b->g[j], q = b->q[j], ts = b->ts[j], p = b->p[j], pm = b->pm[j], l = b->l[j];
        float ag = g < 0.0f ? -g : g;
        float base = g >= 0.0f ? q : 2.0f - q;
        float m = g == 0.0f ? 1.0f : (base > 0.0f ? f_exp(ag * f_log(base)) : 0.0f);
        float r = base > 0.0f ? p * pm / base : 0.0f;
        float al = use_alpha ? b->alpha[j] * ts + (1.0f - b->alpha[j]) * (1.0f - ts) : 1.0f;
        float wa = (w ? w[j] : 1.0f) * al;
        float dmod = detach ? 0.0f : g * r * (1.0f - 2.0f * ts) * l;
        int ok = b->valid[j] != 0.0f;
        b->el[j] = ok ? wa * m * l : 0.0f;
        grad[j] = ok ? wa * m * ((p - ts) + dmod) : 0.0f;
    }
    if (a->elem) memcpy(a->elem + off, b->el, (size_t)len * sizeof(float));

    /* phase 4: statistics, as per-position running sums (folded by the caller) and a histogram */
    for (int32_t j = 0; j < len; ++j) {
        float v = b->valid[j];
        float d = b->p[j] - b->ts[j];
        b->s_loss[j] += b->el[j];
        b->s_count[j] += v;
        b->s_pos[j] += b->pos[j];
        b->s_pt[j] += v * b->pt[j];
        b->s_abs[j] += v * (d < 0.0f ? -d : d);
    }
    if (!a->need_stats) return;
    /* histogram through cumulative counts: cum[k] = #(valid and p_t >= edges[k]) for the interior edges */
    const int32_t nb = a->stat_bins;
    double *hist = acc + 5;
    int32_t prev = 0;
    for (int32_t j = 0; j < len; ++j) prev += b->valid[j] != 0.0f;
    for (int32_t k = 1; k <= nb; ++k) {
        int32_t cum = 0;
        if (k < nb) {
            const float edge = a->stat_edges[k];
            for (int32_t j = 0; j < len; ++j) cum += (b->valid[j] != 0.0f) & (b->pt[j] >= edge);
        }
        hist[k - 1] += (double)(prev - cum);
        prev = cum;
    }
}

/* Runs units [unit_begin, unit_end). Returns 0 on success. */
int sigmoid_focal_cpu(const focal_args *a) {
    block_buf *b = (block_buf *)__builtin_alloca(sizeof(block_buf));
    const int64_t C = a->c, S = a->s;
    double *acc = a->acc;
    clear_sums(b, BLOCK);
    if (S == 1 && C <= BLOCK) {
        /* units are rows of C elements; a block holds whole rows, so block position j has class j % C */
        const int64_t rows_per_block = BLOCK / C, span = rows_per_block * C;
        for (int64_t j = 0; j < span; ++j) {
            int32_t c = (int32_t)(j % C);
            b->cls[j] = c;
            b->gamma[j] = a->gamma_kind == 1 ? a->gamma[c] : 0.0f;
            b->alpha[j] = a->alpha ? a->alpha[c] : 0.0f;
        }
        for (int64_t row = a->unit_begin; row < a->unit_end; row += rows_per_block) {
            int64_t rows = a->unit_end - row < rows_per_block ? a->unit_end - row : rows_per_block;
            process_block(a, b, row * C, (int32_t)(rows * C), acc);
        }
        fold_sums(a, b, span, acc);
    } else if (S == 1) {
        /* rows longer than a block: blocks are consecutive classes of one row */
        for (int64_t row = a->unit_begin; row < a->unit_end; ++row) {
            for (int64_t c0 = 0; c0 < C; c0 += BLOCK) {
                int32_t len = (int32_t)(C - c0 < BLOCK ? C - c0 : BLOCK);
                for (int32_t j = 0; j < len; ++j) {
                    b->cls[j] = (int32_t)(c0 + j);
                    b->gamma[j] = a->gamma_kind == 1 ? a->gamma[c0 + j] : 0.0f;
                    b->alpha[j] = a->alpha ? a->alpha[c0 + j] : 0.0f;
                }
                process_block(a, b, row * C + c0, len, acc);
                fold_sums(a, b, len, acc);
            }
        }
    } else {
        /* units are (n, c) planes of S contiguous elements of one class */
        for (int64_t unit = a->unit_begin; unit < a->unit_end; ++unit) {
            const int32_t c = (int32_t)(unit % C);
            const int32_t used = (int32_t)(S < BLOCK ? S : BLOCK);
            for (int32_t j = 0; j < used; ++j) {
                b->cls[j] = c;
                b->gamma[j] = a->gamma_kind == 1 ? a->gamma[c] : 0.0f;
                b->alpha[j] = a->alpha ? a->alpha[c] : 0.0f;
            }
            for (int64_t s0 = 0; s0 < S; s0 += BLOCK) {
                int32_t len = (int32_t)(S - s0 < BLOCK ? S - s0 : BLOCK);
                process_block(a, b, unit * S + s0, len, acc);
            }
            fold_sums(a, b, used, acc);
        }
    }
    return 0;
}
