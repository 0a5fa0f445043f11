/*
 * Fused sigmoid focal loss for the CPU: loss, gradient and batch statistics in one pass.
 *
 * The input is viewed as (N, C, S): N rows, C classes along dim 1, S trailing elements. The work is split into
 * one range of "units" per thread (a unit is one row of C elements when S == 1, else one (n, c) plane of S
 * elements); each range writes its own statistics accumulator, so the result does not depend on scheduling.
 * Threads come from OpenMP. The library is linked against libgomp.so.1, which in a process that imported
 * torch resolves to the runtime torch already loaded: one thread pool for torch and this kernel, rather than two
 * pools spinning against each other on the same cores.
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
    int64_t unit_begin, unit_end;    /* range of units of one thread (set by sigmoid_focal_cpu) */
    const float *x, *t;
    float *grad;                     /* (N, C, S) */
    float *elem;                     /* (N, C, S) or NULL */
    int32_t gamma_kind;              /* 0 scalar, 1 per class, 2 per element, 3 table (C, table_bins) */
    int32_t table_bins;
    int32_t gamma_negative;          /* some gamma value is < 0 (the inverse focal factor is needed) */
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
    /* per-position class data (index j): filled once when S == 1 (position j has class j % C), per plane else */
    float gamma[BLOCK], alpha[BLOCK];
    float a_pos[BLOCK], a_neg[BLOCK];  /* alpha_t for a positive / negative hard target (1 without alpha) */
    int32_t cls[BLOCK];
    float g[BLOCK];     /* gamma of each element, for the scalar (filled once) and table kinds */
    float pt[BLOCK];    /* p_t of each element, -1 where ignored (for the histogram and the table lookup) */
    float el[BLOCK];    /* element losses of the block */
    /* per-position running sums: element-wise adds vectorise where a floating-point reduction would not
       (without -ffast-math); folded into acc by fold_sums */
    double s_loss[BLOCK], s_pt[BLOCK];
    double s_abs[BLOCK];                 /* sum of |p - t'| - (1 - p_t): zero for hard targets, so not kept there */
    int32_t s_count[BLOCK], s_pos[BLOCK];
} block_buf;

static void clear_sums(block_buf *b, int64_t len) {
    for (int64_t j = 0; j < len; ++j) {
        b->s_loss[j] = 0.0; b->s_pt[j] = 0.0; b->s_abs[j] = 0.0; b->s_count[j] = 0; b->s_pos[j] = 0;
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
        acc[4] += (double)b->s_count[j] - b->s_pt[j] + b->s_abs[j];  /* sum of (1 - p_t) plus the excess */
        class_count[b->cls[j]] += b->s_count[j];
        class_sum_pt[b->cls[j]] += b->s_pt[j];
    }
    clear_sums(b, len);
}

/* p_t of each element (-1 where ignored), for the table lookup that must precede the main loop. */
static void block_pt(const focal_args *a, block_buf *b, int64_t off, int32_t len) {
    const float *x = a->x + off, *t = a->t + off;
    const float ls = a->smoothing, ign = a->ignore_value;
    const int has_ign = a->has_ignore;
    for (int32_t j = 0; j < len; ++j) {
        float xv = x[j], tv = t[j];
        float ts = tv * (1.0f - ls) + 0.5f * ls;
        float e = f_exp(-(xv < 0.0f ? -xv : xv));
        float s = 1.0f / (1.0f + e);
        float p = xv >= 0.0f ? s : e * s;
        float pm = xv >= 0.0f ? e * s : s;
        b->pt[j] = (has_ign && tv == ign) ? -1.0f : p * ts + pm * (1.0f - ts);
    }
}

/*
 * The fused loop. `hard` (all targets of the block are 0 or 1 and there is no smoothing), `neg` (some gamma is
 * negative) and `stats` are compile-time constants at each call site, so each combination is its own
 * straight-line vector loop. With hard targets log(1 - p_t) comes free from the BCE term
 * (log(1 - p_t) = -(max(z, 0) + log1p(e)) with z = +x or -x) and p pm / (1 - p_t) is p_t: no log and no
 * division beyond the sigmoid's.
 */
static inline __attribute__((always_inline)) void fused_loop(
    const focal_args *a, block_buf *b, int64_t off, int32_t len, const float *gp, const int hard, const int neg,
    const int stats) {
    const float *x = a->x + off, *t = a->t + off;
    const float ls = a->smoothing, ign = a->ignore_value;
    const int has_ign = a->has_ignore, use_alpha = a->alpha != NULL, detach = a->detach;
    const float *w = a->weight ? a->weight + off : NULL;
    float *grad = a->grad + off;
    for (int32_t j = 0; j < len; ++j) {
        float xv = x[j], tv = t[j];
        int valid = !(has_ign && tv == ign);
        float ts = valid ? tv * (1.0f - ls) + 0.5f * ls : 0.0f;  /* keeps ignored lanes in range */
        float ax = xv < 0.0f ? -xv : xv;
        float e = f_exp(-ax);
        float w1 = 1.0f + e;
        float s = 1.0f / w1;
        float es = e * s;
        float p = xv >= 0.0f ? s : es;
        float pm = xv >= 0.0f ? es : s;
        float lg1p = f_log(w1) + (e - (w1 - 1.0f)) * s;  /* log1p(e): log(1 + e) corrected for rounding of 1 + e */
        float relu = xv > 0.0f ? xv : 0.0f;
        float l = relu - xv * ts + lg1p;                   /* BCE */
        float pt = p * ts + pm * (1.0f - ts);
        float q = ts * pm + (1.0f - ts) * p;               /* 1 - p_t, without cancellation */
        float g = gp[j];
        float ag = g < 0.0f ? -g : g;
        float m, r;
        if (hard) {
            float log_q = -((ts != 0.0f ? relu : relu - xv) + lg1p);
            if (neg) {
                float log_base = g >= 0.0f ? log_q : f_log(1.0f + pt);
                m = f_exp(ag * log_base);
                r = g >= 0.0f ? pt : p * pm / (1.0f + pt);
            } else {
                m = f_exp(g * log_q);
                r = pt;
            }
        } else {
            float base = (neg && g < 0.0f) ? 1.0f + pt : q;
            m = g == 0.0f ? 1.0f : (base > 0.0f ? f_exp(ag * f_log(base)) : 0.0f);
            r = base > 0.0f ? p * pm / base : 0.0f;
        }
        float al = use_alpha ? b->alpha[j] * ts + (1.0f - b->alpha[j]) * (1.0f - ts) : 1.0f;
        float wa = (w ? w[j] : 1.0f) * al;
        float dmod = detach ? 0.0f : g * r * (1.0f - 2.0f * ts) * l;
        float el = valid ? wa * m * l : 0.0f;
        float vf = valid ? 1.0f : 0.0f;
        grad[j] = valid ? wa * m * ((p - ts) + dmod) : 0.0f;
        b->el[j] = el;
        b->s_loss[j] += el;
        b->s_count[j] += valid;
        b->s_pos[j] += valid & (tv >= 0.5f);
        if (stats) {
            float d = p - ts;
            b->pt[j] = valid ? pt : -1.0f;
            b->s_pt[j] += vf * pt;
            b->s_abs[j] += vf * ((d < 0.0f ? -d : d) - (1.0f - pt));
        }
    }
}

/*
 * The common case in a lean loop: hard targets (0/1, no smoothing) and gamma >= 0. With z = +x for a positive
 * and -x for a negative target, p_t = sigmoid(z), 1 - p_t = sigmoid(-z), BCE = softplus(-z) and
 * (1 - p_t)^gamma = exp(-gamma softplus(z)), so one exp gives both sigmoids, one log gives both softplus terms,
 * and dFL/dz = -alpha_t m [(1 - p_t) + gamma p_t BCE] needs no further transcendental.
 */
static inline __attribute__((always_inline)) void hard_loop(
    const focal_args *a, block_buf *b, int64_t off, int32_t len, const float *gp, const int has_w,
    const int stats) {
    const float *x = a->x + off, *t = a->t + off;
    const float *w = has_w ? a->weight + off : NULL;
    const float ign = a->ignore_value, keep = a->detach ? 0.0f : 1.0f;
    const int has_ign = a->has_ignore;
    float *grad = a->grad + off;
    for (int32_t j = 0; j < len; ++j) {
        float xv = x[j], tv = t[j];
        int valid = !(has_ign && tv == ign);
        int pos = tv != 0.0f;
        float sg = pos ? 1.0f : -1.0f;
        float z = sg * xv;
        float e = f_exp(-(xv < 0.0f ? -xv : xv));
        float w1 = 1.0f + e;
        float s = 1.0f / w1;
        float es = e * s;
        float pt = z >= 0.0f ? s : es;
        float q = z >= 0.0f ? es : s;
        float lg1p = f_log(w1) + (e - (w1 - 1.0f)) * s;
        float rz = z > 0.0f ? z : 0.0f;
        float ce = rz - z + lg1p;
        float g = gp[j];
        float m = f_exp(-g * (rz + lg1p));
        float at = pos ? b->a_pos[j] : b->a_neg[j];
        if (has_w) at *= w[j];
        float atm = at * m;
        float el = valid ? atm * ce : 0.0f;
        grad[j] = valid ? -sg * atm * (q + keep * g * pt * ce) : 0.0f;
        b->el[j] = el;
        b->s_loss[j] += el;
        if (stats) {  /* |p - t| = 1 - p_t for a hard target: s_abs gets nothing */
            b->s_count[j] += valid;
            b->s_pos[j] += valid & pos;
            b->s_pt[j] += valid ? pt : 0.0f;
            b->pt[j] = valid ? pt : -1.0f;
        }
    }
    if (!stats) {  /* counts as integer reductions; with statistics they are kept per position (per class) */
        int32_t count = 0, n_pos = 0;
        for (int32_t j = 0; j < len; ++j) {
            int valid = !(has_ign && t[j] == ign);
            count += valid;
            n_pos += valid & (t[j] != 0.0f);
        }
        a->acc[1] += (double)count;
        a->acc[2] += (double)n_pos;
    }
}

static void process_block(const focal_args *a, block_buf *b, int64_t off, int32_t len, double *acc) {
    const int stats = a->need_stats, neg = a->gamma_negative;
    const float *gp = a->gamma_kind == 2 ? a->gamma + off : b->gamma;
    int hard = a->smoothing == 0.0f;
    if (hard) {
        const float *t = a->t + off;
        const float ign = a->ignore_value;
        const int has_ign = a->has_ignore;
        int32_t soft = 0;
        for (int32_t j = 0; j < len; ++j) soft += (t[j] != 0.0f) & (t[j] != 1.0f) & !(has_ign && t[j] == ign);
        hard = soft == 0;
    }
    if (a->gamma_kind == 3) {
        /* table: gamma from the bin of p_t, which needs p_t first */
        const int32_t tb = a->table_bins;
        block_pt(a, b, off, len);
        for (int32_t j = 0; j < len; ++j) {
            int32_t k = (int32_t)bin_of(b->pt[j], a->table_edges, tb);
            b->g[j] = a->gamma[b->cls[j] * tb + k];
        }
        gp = b->g;
    }
    if (hard && !neg) {
        if (a->weight) { if (stats) hard_loop(a, b, off, len, gp, 1, 1); else hard_loop(a, b, off, len, gp, 1, 0); }
        else           { if (stats) hard_loop(a, b, off, len, gp, 0, 1); else hard_loop(a, b, off, len, gp, 0, 0); }
    } else if (hard) {
        if (stats) fused_loop(a, b, off, len, gp, 1, 1, 1); else fused_loop(a, b, off, len, gp, 1, 1, 0);
    } else {
        if (neg) { if (stats) fused_loop(a, b, off, len, gp, 0, 1, 1); else fused_loop(a, b, off, len, gp, 0, 1, 0); }
        else     { if (stats) fused_loop(a, b, off, len, gp, 0, 0, 1); else fused_loop(a, b, off, len, gp, 0, 0, 0); }
    }
    if (a->elem) memcpy(a->elem + off, b->el, (size_t)len * sizeof(float));
    if (!stats) return;
    const int32_t nb = a->stat_bins;
    double *hist = acc + 5;
    /* cumulative counts cum[k] = #(p_t >= edges[k]), a vectorised integer reduction per interior edge; ignored
       elements hold p_t = -1 */
    int32_t prev = 0;
    for (int32_t j = 0; j < len; ++j) prev += b->pt[j] >= 0.0f;
    for (int32_t k = 1; k <= nb; ++k) {
        int32_t cum = 0;
        if (k < nb) {
            const float edge = a->stat_edges[k];
            for (int32_t j = 0; j < len; ++j) cum += b->pt[j] >= edge;
        }
        hist[k - 1] += (double)(prev - cum);
        prev = cum;
    }
}

/* Runs units [unit_begin, unit_end) of a->... on the calling thread. */
static void run_range(const focal_args *a) {
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
            b->gamma[j] = a->gamma_kind == 0 ? a->gamma[0] : (a->gamma_kind == 1 ? a->gamma[c] : 0.0f);
            b->alpha[j] = a->alpha ? a->alpha[c] : 0.0f;
            b->a_pos[j] = a->alpha ? a->alpha[c] : 1.0f;
            b->a_neg[j] = a->alpha ? 1.0f - a->alpha[c] : 1.0f;
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
                    b->gamma[j] = a->gamma_kind == 0 ? a->gamma[0] : (a->gamma_kind == 1 ? a->gamma[c0 + j] : 0.0f);
                    b->alpha[j] = a->alpha ? a->alpha[c0 + j] : 0.0f;
                    b->a_pos[j] = a->alpha ? a->alpha[c0 + j] : 1.0f;
                    b->a_neg[j] = a->alpha ? 1.0f - a->alpha[c0 + j] : 1.0f;
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
                b->gamma[j] = a->gamma_kind == 0 ? a->gamma[0] : (a->gamma_kind == 1 ? a->gamma[c] : 0.0f);
                b->alpha[j] = a->alpha ? a->alpha[c] : 0.0f;
                b->a_pos[j] = a->alpha ? a->alpha[c] : 1.0f;
                b->a_neg[j] = a->alpha ? 1.0f - a->alpha[c] : 1.0f;
            }
            for (int64_t s0 = 0; s0 < S; s0 += BLOCK) {
                int32_t len = (int32_t)(S - s0 < BLOCK ? S - s0 : BLOCK);
                process_block(a, b, unit * S + s0, len, acc);
            }
            fold_sums(a, b, used, acc);
        }
    }
}

/* Runs all units on `threads` threads; thread i handles the i-th of `threads` equal ranges and accumulates into
   acc_rows[i * acc_len ...] (zeroed by the caller), which the caller sums in order. Returns 0 on success. */
int sigmoid_focal_cpu(const focal_args *a, int64_t units, int32_t threads, double *acc_rows, int64_t acc_len) {
#pragma omp parallel for num_threads(threads) schedule(static, 1)
    for (int32_t i = 0; i < threads; ++i) {
        focal_args local = *a;
        local.unit_begin = units * i / threads;
        local.unit_end = units * (i + 1) / threads;
        local.acc = acc_rows + i * acc_len;
        run_range(&local);
    }
    return 0;
}
