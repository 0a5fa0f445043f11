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
 *
 * Non-finite logits (the rule of adaptive_focal/_kernels/__init__.py, shared with the Triton kernel and the
 * PyTorch path): an ignored element has loss and gradient 0 whatever its logit; an infinite logit is computed as
 * +-1e4, where exp(-|x|) is 0 and every quantity above equals its limit, and its loss is then set to +-inf unless
 * it is 0 (the limit of a loss that grows without bound): a block holding one, which the main loops give a
 * non-finite loss sum, is computed again from a saturated copy of its logits (process_block), so that finite
 * blocks pay nothing for the rule; a NaN logit gives a NaN loss and
 * gradient and is kept in the statistics (its p_t is NaN: the sums over it are NaN, and the histogram counts it
 * in the last bin, as torch.bucketize does).
 *
 * Confidence bins: each element is also a binary prediction with confidence max(p, 1 - p) = sigmoid(|x|) (the s
 * = 1 / (1 + exp(-|x|)) both main loops compute anyway) that is correct when the logit's sign agrees with the raw
 * target's label (x >= 0 for t >= 0.5, x <= 0 for t < 0.5). The main loops store it signed (+s correct, -s not);
 * block_conf bins it and adds it into per-thread integer cells per (class, bin, correct): a float32 confidence in
 * [1/2, 1] is a multiple of 2^-24, so (conf - 1/2) 2^24 is an integer below 2^23 and the sums are exact integers,
 * whatever the order. A NaN confidence has a cell of its own per class (its bin is the last, its sums NaN).
 * They are opt-in (need_conf): without them the main loops store no confidence, and no cell is allocated, binned
 * or added to; the accumulator then ends before the confidence fields.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* The AVX-512 paths (statistics and histogram) need these extensions (Ice Lake, Zen 4 and later, with
   -march=native); elsewhere the portable loops below serve. */
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VBMI__) && defined(__AVX512BITALG__) && \
    defined(__GFNI__)
#define HIST_AVX512 1
#include <immintrin.h>
#endif

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
    int32_t need_conf;               /* with need_stats: the confidence bins too (else their acc entries are absent) */
    int32_t stat_bins;
    const float *stat_edges;         /* stat_bins + 1 */
    double *acc;                     /* acc_len entries (layout: __init__.py), zeroed by sigmoid_focal_cpu */
    int32_t hist_equal;              /* set by sigmoid_focal_cpu: stat_edges are equal-width (hist_avx512) */
} focal_args;

#define F32_MAX 3.40282347e+38f
#define SATURATED 1e4f /* where an infinite logit is computed (the same in every path of the library) */

static inline float bits_to_float(int32_t i) { float f; memcpy(&f, &i, 4); return f; }

static inline int infinite(float x) { return x > F32_MAX || x < -F32_MAX; }

/* The logit computed for x: +-inf becomes +-SATURATED, where exp(-|x|) is 0 and p, 1 - p, 1 - p_t, the
   modulating factor and the gradient are exactly their limits; finite logits and NaN are unchanged. */
static inline float saturate(float x) { return x > F32_MAX ? SATURATED : (x < -F32_MAX ? -SATURATED : x); }
static inline int32_t float_to_bits(float f) { int32_t i; memcpy(&i, &f, 4); return i; }

/* exp(x); exactly 0 below -87.3 (where the result would be subnormal), finite for x <= 88, NaN for NaN (the
   polynomial y is NaN, whatever the conversion of n gives). */
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

/* Index of the bin of v among edges[0..bins]: the number of interior edges <= v (NaN: the last bin). */
static inline float bin_of(float v, const float *edges, int32_t bins) {
    float b = 0.0f;
    for (int32_t k = 1; k < bins; ++k) b += v < edges[k] ? 0.0f : 1.0f;
    return b;
}

#ifdef HIST_AVX512
/* Per-thread histogram state: lookup tables (set up once per call) and the counts so far. */
typedef struct {
    float tab[16];     /* interior edges edges[1 .. nb - 1], +inf above (binary search) */
    float lo[16];      /* lower edge of bin k, -inf for bin 0 */
    float hi[16];      /* upper edge of bin k, +inf for the last bin */
    uint8_t order[64]; /* byte permutation that gathers the counters of each bin into one qword */
    uint64_t counts[16];
} hist_state;
#endif

typedef struct {
    /* per-position class data (index j): filled once when S == 1 (position j has class j % C), per plane else */
    float gamma[BLOCK];
    float a_pos[BLOCK];  /* alpha_t of a positive hard target: the class's alpha (1 without alpha) */
    int32_t cls[BLOCK];
    float g[BLOCK];     /* gamma of each element, for the scalar (filled once) and table kinds */
    float pt[BLOCK];    /* p_t of each element, -1 where ignored (for the histogram and the table lookup) */
    /* running sums of the per-class statistics per column of the block (column i has class cls[i]; see
       block_stats): float, folded into acc (float64) by fold_sums before they hold more than FOLD_TERMS terms */
    float s_pt[BLOCK];
    float s_gpos[BLOCK], s_gneg[BLOCK]; /* |dloss/dx| t and |dloss/dx| (1 - t), t the raw target */
    int32_t s_count[BLOCK];             /* kept only with an ignore_index (else counted per unit in run_range) */
    /* the block's logits and element losses as the main loops read and write them: the input and output, or,
       for a block with an infinite logit, a saturated copy and (without an output) a scratch buffer */
    const float *x;
    float *elem;
    float xs[BLOCK], el[BLOCK];
#ifdef HIST_AVX512
    hist_state hist;
#endif
    /* confidence bins (see block_conf): the signed confidence of each element (+s correct, -s wrong), the first
       cell of each position's class, and each element's cell and value. Last, so that without them (need_conf 0)
       the fields the statistics use keep the layout they had before the bins existed (placed before hist, they
       cost the statistics without bins about 2.4 ms of 24 at (65536, 80) on one thread, for no visible reason but
       that layout; see the README's Benchmarks) */
    float cf[BLOCK];
    int32_t cell0[BLOCK];
    union {
        uint64_t packed[BLOCK];                       /* the AVX-512 path */
        struct { int32_t cell[BLOCK], d[BLOCK]; } split;  /* the portable one */
    } conf;
    uint64_t *cells;     /* this thread's cells: C (2B + 1), and the spare one (unsigned: it may wrap) */
    int64_t conf_since;  /* elements added to the cells since they were last folded into acc */
    int32_t spare;       /* index of the spare cell */
} block_buf;

#define FOLD_TERMS 64

/* Sums of one block's main loop, reduced in registers (see the simd reductions below). */
typedef struct {
    double loss, absd;
    int64_t count, n_pos;
} block_sums;

static void clear_sums(block_buf *b, int64_t len) {
    for (int64_t j = 0; j < len; ++j) {
        b->s_pt[j] = 0.0f; b->s_gpos[j] = 0.0f; b->s_gneg[j] = 0.0f; b->s_count[j] = 0;
    }
}

/* Adds the per-class running sums of positions [0, len) into acc (statistics only) and clears them. */
static void fold_sums(const focal_args *a, block_buf *b, int64_t len, double *acc) {
    if (!a->need_stats) return;
    double *class_count = acc + 5 + a->stat_bins, *class_sum_pt = class_count + a->c;
    double *class_gpos = class_sum_pt + a->c + 1, *class_gneg = class_gpos + a->c;
    double sum_pt = 0.0;
    for (int64_t j = 0; j < len; ++j) {
        const int32_t c = b->cls[j];
        if (a->has_ignore) class_count[c] += b->s_count[j];
        class_sum_pt[c] += b->s_pt[j];
        class_gpos[c] += b->s_gpos[j];
        class_gneg[c] += b->s_gneg[j];
        sum_pt += b->s_pt[j];
    }
    acc[3] += sum_pt;
    clear_sums(b, len);
}

/* p_t of each element (-1 where ignored), for the table lookup that must precede the main loop. */
static void block_pt(const focal_args *a, block_buf *b, int64_t off, int32_t len) {
    const float *x = b->x, *t = a->t + off;
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
 * Histogram of p_t over any edges: hist[b] += #(edges[b] <= p_t < edges[b + 1]), from the cumulative counts
 * #(p_t >= edges[k]) (one vectorised integer reduction per interior edge); ignored elements hold p_t = -1. The
 * comparisons are written !(p_t < edge), so that a NaN p_t counts as above every edge: in the last bin.
 */
static void hist_cumulative(const float *restrict pt, int32_t len, int32_t nb, const float *edges, double *hist) {
    int32_t prev = 0;
    for (int32_t j = 0; j < len; ++j) prev += !(pt[j] < 0.0f);
    for (int32_t k = 1; k <= nb; ++k) {
        int32_t cum = 0;
        if (k < nb) {
            const float edge = edges[k];
            for (int32_t j = 0; j < len; ++j) cum += !(pt[j] < edge);
        }
        hist[k - 1] += (double)(prev - cum);
        prev = cum;
    }
}

#ifdef HIST_AVX512

/*
 * The same histogram with AVX-512 (F, BW, VBMI, BITALG) and GFNI, for nb <= 16 bins. Each p_t gets its bin
 * index, 16 at a time:
 *   - equal-width edges (edges[k] within EDGE_TOL of k / nb; see equal_width_edges): g = floor(p_t nb) is the bin
 *     or next to it (p_t nb is rounded by at most 2^-20 and each edge is within nb EDGE_TOL <= 2^-18 bins of k),
 *     so one comparison with each of the bin's two edges (looked up with vpermps) makes it exact;
 *   - other edges: a branchless binary search over the interior edges (four lookups and comparisons).
 * Both compare with the edges exactly as the definition does (p_t >= edges[k]). Lanes with p_t < 0 (ignored) get
 * index 255, lanes with a NaN p_t the last bin. The indices are packed into bytes, 64 at a time, and counted
 * without a per-bin pass: vpshufb turns each index into a one-hot byte (bins 0-7 in one vector, 8-15 in another; 255 gives 0), gf2p8affine
 * transposes each group of 8 such bytes (an 8 x 8 bit matrix), so that byte j holds one bit per element of the
 * group saying whether it is in bin j, and vpopcntb counts them. Each byte counter grows by at most 8 per 64
 * elements, at most 64 per block: no overflow.
 */
static inline __m128i bins_equal16(__m512 v, __m512 lo_tab, __m512 hi_tab, __m512 fb, __m512i last) {
    const __m512 y = _mm512_max_ps(_mm512_mul_ps(v, fb), _mm512_set1_ps(-1.0f));  /* NaN -> -1 */
    __m512i g = _mm512_min_epi32(_mm512_cvttps_epi32(y), last);
    const __mmask16 down = _mm512_cmp_ps_mask(v, _mm512_permutexvar_ps(g, lo_tab), _CMP_LT_OQ);
    const __mmask16 up = _mm512_cmp_ps_mask(v, _mm512_permutexvar_ps(g, hi_tab), _CMP_GE_OQ);
    g = _mm512_mask_sub_epi32(g, down, g, _mm512_set1_epi32(1));
    g = _mm512_mask_add_epi32(g, up, g, _mm512_set1_epi32(1));
    g = _mm512_mask_mov_epi32(g, _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), last);  /* NaN: the last bin */
    return _mm512_cvtusepi32_epi8(g);  /* negative (invalid) lanes saturate to 255 */
}

static inline __m128i bins_search16(__m512 v, __m512 tab, __m512i last) {
    __m512i idx = _mm512_setzero_si512();
    for (int32_t step = 8; step >= 1; step >>= 1) {  /* !(v < edge): NaN climbs to the top, clamped to last */
        const __m512i cand = _mm512_add_epi32(idx, _mm512_set1_epi32(step));
        const __mmask16 ge = _mm512_cmp_ps_mask(v, _mm512_permutexvar_ps(cand, tab), _CMP_NLT_UQ);
        idx = _mm512_mask_mov_epi32(idx, ge, cand);
    }
    const __mmask16 valid = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_NLT_UQ);
    return _mm512_cvtepi32_epi8(_mm512_mask_mov_epi32(_mm512_set1_epi32(255), valid, _mm512_min_epi32(idx, last)));
}

static void hist_avx512_init(hist_state *h, int32_t nb, const float *edges) {  /* nb <= 16 */
    for (int32_t k = 0; k < 16; ++k) {
        h->tab[k] = (k >= 1 && k < nb) ? edges[k] : __builtin_inff();
        h->lo[k] = (k >= 1 && k < nb) ? edges[k] : -__builtin_inff();
        h->hi[k] = (k + 1 < nb) ? edges[k + 1] : __builtin_inff();
        h->counts[k] = 0;
    }
    for (int32_t j = 0; j < 8; ++j)
        for (int32_t g = 0; g < 8; ++g) h->order[8 * j + g] = (uint8_t)(8 * g + j);
}

static void hist_avx512_flush(hist_state *h, int32_t nb, double *hist) {
    for (int32_t k = 0; k < nb; ++k) { hist[k] += (double)h->counts[k]; h->counts[k] = 0; }
}

static inline __attribute__((always_inline)) void hist_avx512_loop(
    hist_state *restrict h, const float *restrict pt, int32_t len, int32_t nb, const int equal) {
    const __m512 vtab = _mm512_loadu_ps(h->tab), vlo = _mm512_loadu_ps(h->lo), vhi = _mm512_loadu_ps(h->hi);
    const __m512 fb = _mm512_set1_ps((float)nb);
    const __m512i last = _mm512_set1_epi32(nb - 1);
    const __m512i lut_lo = _mm512_broadcast_i32x4(_mm_setr_epi8(1, 2, 4, 8, 16, 32, 64, -128, 0, 0, 0, 0, 0, 0, 0, 0));
    const __m512i lut_hi = _mm512_broadcast_i32x4(_mm_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 4, 8, 16, 32, 64, -128));
    const __m512i unit = _mm512_set1_epi64(0x8040201008040201LL);  /* byte j = 1 << j */
    __m512i acc_lo = _mm512_setzero_si512(), acc_hi = _mm512_setzero_si512();
    for (int32_t j0 = 0; j0 < len; j0 += 64) {  /* pt is padded with -1 to a multiple of 64 */
        __m128i q[4];
        for (int32_t i = 0; i < 4; ++i) {
            const __m512 v = _mm512_loadu_ps(pt + j0 + 16 * i);
            q[i] = equal ? bins_equal16(v, vlo, vhi, fb, last) : bins_search16(v, vtab, last);
        }
        __m512i idx = _mm512_castsi128_si512(q[0]);
        idx = _mm512_inserti32x4(idx, q[1], 1);
        idx = _mm512_inserti32x4(idx, q[2], 2);
        idx = _mm512_inserti32x4(idx, q[3], 3);
        const __m512i onehot_lo = _mm512_shuffle_epi8(lut_lo, idx), onehot_hi = _mm512_shuffle_epi8(lut_hi, idx);
        /* gf2p8affine(unit, m): byte j of each qword = bit j of each of m's 8 bytes, i.e. the group's bin j */
        acc_lo = _mm512_add_epi8(acc_lo, _mm512_popcnt_epi8(_mm512_gf2p8affine_epi64_epi8(unit, onehot_lo, 0)));
        acc_hi = _mm512_add_epi8(acc_hi, _mm512_popcnt_epi8(_mm512_gf2p8affine_epi64_epi8(unit, onehot_hi, 0)));
    }
    /* byte 8 g + j of acc counts bin j (8 + j) among group g's elements: gather the bytes of each bin into one
       qword, sum each qword's bytes, and add the sums to the counts */
    const __m512i perm = _mm512_loadu_si512(h->order), z = _mm512_setzero_si512();
    _mm512_storeu_si512(h->counts, _mm512_add_epi64(_mm512_loadu_si512(h->counts),
                                                    _mm512_sad_epu8(_mm512_permutexvar_epi8(perm, acc_lo), z)));
    _mm512_storeu_si512(h->counts + 8, _mm512_add_epi64(_mm512_loadu_si512(h->counts + 8),
                                                        _mm512_sad_epu8(_mm512_permutexvar_epi8(perm, acc_hi), z)));
}

static void hist_avx512(hist_state *h, const float *restrict pt, int32_t len, int32_t nb, int32_t equal) {
    if (equal) hist_avx512_loop(h, pt, len, nb, 1);
    else hist_avx512_loop(h, pt, len, nb, 0);
}
#endif

#define EDGE_TOL (1.0 / 4194304.0) /* 2^-22 */

/* Whether the nb + 1 edges are equal-width in the sense of hist_avx512. */
static int32_t equal_width_edges(const float *edges, int32_t nb) {
    for (int32_t k = 0; k <= nb; ++k) {
        const double d = (double)edges[k] - (double)k / (double)nb;
        if (!(d <= EDGE_TOL && d >= -EDGE_TOL)) return 0;
    }
    return 1;
}

/*
 * The two main loops below sum the block's loss and counts (and, with statistics, sum_absdiff) with `omp simd`
 * reductions in vector registers (the build enables OpenMP or at least its simd pragmas, which permit reordering
 * these sums); with statistics they also store each element's p_t for block_stats.
 */

/*
 * The fused loop. `hard` (all targets of the block are 0 or 1 and there is no smoothing), `neg` (some gamma is
 * negative) and `stats` (0 none, 1 statistics, 2 statistics with the confidence bins) are compile-time constants
 * at each call site, so each combination is its own straight-line vector loop. With hard targets log(1 - p_t)
 * comes free from the BCE term (log(1 - p_t) = -(max(z, 0) + log1p(e)) with z = +x or -x) and p pm / (1 - p_t) is
 * p_t: no log and no division beyond the sigmoid's.
 */
static inline __attribute__((always_inline)) void fused_loop(
    const focal_args *a, block_buf *restrict b, int64_t off, int32_t len, const float *restrict gp, const int hard,
    const int neg, const int stats, block_sums *out) {
    const float *restrict x = b->x, *restrict t = a->t + off;
    const float ls = a->smoothing, ign = a->ignore_value;
    const int has_ign = a->has_ignore, use_alpha = a->alpha != NULL, detach = a->detach;
    const float *restrict w = a->weight ? a->weight + off : NULL;
    float *restrict grad = a->grad + off, *restrict elem = b->elem;
    double loss = 0.0;
    float absd = 0.0f;
    int32_t count = 0, n_pos = 0;
#pragma omp simd reduction(+ : loss, absd, count, n_pos)
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
        float al = use_alpha ? b->a_pos[j] * ts + (1.0f - b->a_pos[j]) * (1.0f - ts) : 1.0f;
        float wa = (w ? w[j] : 1.0f) * al;
        float dmod = detach ? 0.0f : g * r * (1.0f - 2.0f * ts) * l;
        float el = valid ? wa * m * l : 0.0f;
        float gv = valid ? wa * m * ((p - ts) + dmod) : 0.0f;
        int pos = valid & (tv >= 0.5f);
        grad[j] = gv;
        if (elem) elem[j] = el;
        loss += el;
        count += valid ? 1 : 0;
        n_pos += pos ? 1 : 0;
        if (stats) {  /* the rest in block_stats */
            float d = p - ts;
            b->pt[j] = valid ? pt : -1.0f;
            absd += valid ? (d < 0.0f ? -d : d) : 0.0f;  /* sum_absdiff: a float sum per block */
        }
        if (stats == 2) {
            int correct = tv >= 0.5f ? xv >= 0.0f : xv <= 0.0f;  /* the label of the raw target */
            b->cf[j] = correct ? s : -s;                          /* s = max(p, 1 - p) */
        }
    }
    out->loss += loss; out->count += count; out->n_pos += n_pos; out->absd += absd;
}

/*
 * The common case in a lean loop: hard targets (0/1, no smoothing) and gamma >= 0. With z = +x for a positive
 * and -x for a negative target, p_t = sigmoid(z), 1 - p_t = sigmoid(-z), BCE = softplus(-z) and
 * (1 - p_t)^gamma = exp(-gamma softplus(z)), so one exp gives both sigmoids, one log gives both softplus terms,
 * and dFL/dz = -alpha_t m [(1 - p_t) + gamma p_t BCE] needs no further transcendental.
 */
static inline __attribute__((always_inline)) void hard_loop(
    const focal_args *a, block_buf *restrict b, int64_t off, int32_t len, const float *restrict gp, const int has_w,
    const int stats, block_sums *out) {
    const float *restrict x = b->x, *restrict t = a->t + off;
    const float *restrict w = has_w ? a->weight + off : NULL;
    const float ign = a->ignore_value, keep = a->detach ? 0.0f : 1.0f, a_neg_base = a->alpha ? 1.0f : 2.0f;
    const int has_ign = a->has_ignore;
    float *restrict grad = a->grad + off, *restrict elem = b->elem;
    double loss = 0.0;
    float absd = 0.0f;
    int32_t count = 0, n_pos = 0;
#pragma omp simd reduction(+ : loss, absd, count, n_pos)
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
        float ap = b->a_pos[j];
        float at = pos ? ap : a_neg_base - ap;  /* 1 - alpha, or 2 - 1 = 1 without alpha */
        if (has_w) at *= w[j];
        float atm = at * m;
        float el = valid ? atm * ce : 0.0f;
        float gv = valid ? -sg * atm * (q + keep * g * pt * ce) : 0.0f;
        grad[j] = gv;
        if (elem) elem[j] = el;
        loss += el;
        count += valid ? 1 : 0;  /* (written as selects: `count += valid` stops GCC 12 vectorising this loop) */
        n_pos += (valid & pos) ? 1 : 0;
        if (stats) {  /* the rest in block_stats; |p - t| = 1 - p_t for a hard target */
            b->pt[j] = valid ? pt : -1.0f;
            absd += valid ? q : 0.0f;
        }
        if (stats == 2) b->cf[j] = z >= 0.0f ? s : -s;  /* max(p, 1 - p), correct when z = +-x agrees with t */
    }
    out->loss += loss; out->count += count; out->n_pos += n_pos; out->absd += absd;
}

/*
 * The statistics of a block, in a pass of its own over what the main loop left in L1 (p_t, the gradient and the
 * targets; the main loop only stores p_t and sums |p - t'|): a separate loop keeps the main loop's registers free.
 * The block is seen as `rows` rows of `width` columns, column i being the block position whose class is cls[i]
 * (rows of C classes when S == 1 and C <= BLOCK, else one row). The per-class sums add each column over the rows
 * in registers and then into the column's running sums (s_pt, s_gpos, s_gneg, s_count), one load and store per
 * column vector and block. sum_pt_pos, block-wide, is a float sum of a few dozen terms per lane, added to acc in
 * float64.
 */
#ifdef HIST_AVX512
static inline __attribute__((always_inline)) void block_stats_loop(
    const focal_args *a, block_buf *restrict b, int64_t off, int32_t rows, int32_t width, double *acc,
    const int has_ign) {
    const float *restrict t = a->t + off, *restrict grad = a->grad + off;
    const __m512 zero = _mm512_setzero_ps(), half = _mm512_set1_ps(0.5f), one = _mm512_set1_ps(1.0f);
    const __m512 minus_one = _mm512_set1_ps(-1.0f);
    const __m512i absmask = _mm512_set1_epi32(0x7fffffff), ione = _mm512_set1_epi32(1);
    __m512 pt_pos = zero;
    for (int32_t c0 = 0; c0 < width; c0 += 16) {
        const __mmask16 m = width - c0 >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (width - c0)) - 1u);
        __m512 spt = zero, sgp = zero, sgn = zero;
        __m512i cnt = _mm512_setzero_si512();
        for (int32_t r = 0; r < rows; ++r) {
            const int32_t j = r * width + c0;
            const __m512 pt = _mm512_mask_loadu_ps(minus_one, m, b->pt + j);  /* lanes past the row: invalid */
            const __mmask16 valid = _mm512_cmp_ps_mask(pt, zero, _CMP_NLT_UQ);  /* !(p_t < 0): NaN is valid */
            const __m512 tr = _mm512_maskz_loadu_ps(valid, t + j);            /* the raw target */
            const __m512 ag = _mm512_castsi512_ps(
                _mm512_and_si512(_mm512_castps_si512(_mm512_maskz_loadu_ps(m, grad + j)), absmask));
            const __m512 vpt = _mm512_maskz_mov_ps(valid, pt);  /* keeps NaN */
            pt_pos = _mm512_mask_add_ps(pt_pos, _mm512_cmp_ps_mask(tr, half, _CMP_GE_OQ), pt_pos, vpt);
            if (has_ign) cnt = _mm512_mask_add_epi32(cnt, valid, cnt, ione);
            spt = _mm512_add_ps(spt, vpt);
            sgp = _mm512_add_ps(sgp, _mm512_mul_ps(ag, tr));
            sgn = _mm512_add_ps(sgn, _mm512_mul_ps(ag, _mm512_sub_ps(one, tr)));
        }
        _mm512_mask_storeu_ps(b->s_pt + c0, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, b->s_pt + c0), spt));
        _mm512_mask_storeu_ps(b->s_gpos + c0, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, b->s_gpos + c0), sgp));
        _mm512_mask_storeu_ps(b->s_gneg + c0, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, b->s_gneg + c0), sgn));
        if (has_ign)
            _mm512_mask_storeu_epi32(b->s_count + c0, m,
                                     _mm512_add_epi32(_mm512_maskz_loadu_epi32(m, b->s_count + c0), cnt));
    }
    acc[5 + a->stat_bins + 2 * a->c] += _mm512_reduce_add_ps(pt_pos);
}
#else
static inline __attribute__((always_inline)) void block_stats_loop(
    const focal_args *a, block_buf *restrict b, int64_t off, int32_t rows, int32_t width, double *acc,
    const int has_ign) {
    const float *restrict t = a->t + off, *restrict grad = a->grad + off;
    double pt_pos = 0.0;
    for (int32_t r = 0; r < rows; ++r) {
        const float *restrict ptr = b->pt + r * width;
        const float *restrict tr_ = t + r * width, *restrict gr = grad + r * width;
        float pt_pos_r = 0.0f;
#pragma omp simd reduction(+ : pt_pos_r)
        for (int32_t c = 0; c < width; ++c) {
            const float pt = ptr[c], tv = tr_[c];
            const int valid = !(pt < 0.0f);               /* NaN is valid (ignored elements hold -1) */
            const float tr = valid ? tv : 0.0f;           /* the raw target */
            const float ag = __builtin_fabsf(gr[c]);      /* 0 where ignored */
            const float vpt = valid ? pt : 0.0f;          /* keeps NaN */
            pt_pos_r += tr >= 0.5f ? vpt : 0.0f;
            if (has_ign) b->s_count[c] += valid ? 1 : 0;
            b->s_pt[c] += vpt;
            b->s_gpos[c] += ag * tr;
            b->s_gneg[c] += ag * (1.0f - tr);
        }
        pt_pos += pt_pos_r;
    }
    acc[5 + a->stat_bins + 2 * a->c] += pt_pos;
}
#endif

/*
 * Confidence bins. Each thread adds its elements into integer cells, 2B + 1 per class: bin k of the correct
 * predictions (2k), of the wrong ones (2k + 1), and the NaN confidences (2B); one more cell takes the ignored
 * elements (and the lanes past a block's end) and is never read. A cell holds a count in its top 21 bits and the
 * sum of the fixed-point confidences d = (conf - 1/2) 2^24 (an integer below 2^23) in its low 43 bits, so one
 * addition records an element; the cells are folded into acc (float64) before they hold CONF_FOLD elements, so
 * neither field can overflow. The binning of a block is vectorised (conf_cells); the additions cannot be (several
 * elements of a vector may share a cell), and at about half a nanosecond per element they are most of the
 * statistics' cost.
 */
#define CONF_COUNT_SHIFT 43
#define CONF_FOLD ((int64_t)1 << 20)

/* acc offsets of the confidence statistics (layout: adaptive_focal/_kernels/__init__.py) */
typedef struct { double *count, *class_count, *sum, *correct, *class_sum, *class_correct; } conf_acc;

static conf_acc conf_fields(const focal_args *a, double *acc) {
    const int64_t B = a->stat_bins, C = a->c;
    conf_acc f;
    f.count = acc + 6 + B + 4 * C;
    f.class_count = f.count + B;
    f.sum = f.class_count + C * B;
    f.correct = f.sum + B;
    f.class_sum = f.correct + B;
    f.class_correct = f.class_sum + C * B;
    return f;
}

#ifdef HIST_AVX512
/* The cells and values of a block, 16 at a time with the p_t histogram's tables (hist_avx512), packed as
   cell << 44 | 1 << 43 | d (in an order of their own: the additions do not care). Whole vectors: the lanes past
   len go to the spare cell. */
static void conf_cells_avx512(const focal_args *a, block_buf *restrict b, int32_t len) {
    const int32_t nb = a->stat_bins;
    const hist_state *h = &b->hist;
    const __m512 vtab = _mm512_loadu_ps(h->tab), vlo = _mm512_loadu_ps(h->lo), vhi = _mm512_loadu_ps(h->hi);
    const __m512 fb = _mm512_set1_ps((float)nb), zero = _mm512_setzero_ps();
    const __m512 half = _mm512_set1_ps(0.5f), scale = _mm512_set1_ps(16777216.0f);
    const __m512i last = _mm512_set1_epi32(nb - 1), one = _mm512_set1_epi32(1);
    const __m512i nan_sub = _mm512_set1_epi32(2 * nb), absmask = _mm512_set1_epi32(0x7fffffff);
    const __m512i spare = _mm512_set1_epi32(b->spare), unit = _mm512_set1_epi32(1 << (CONF_COUNT_SHIFT - 32));
    for (int32_t j0 = 0; j0 < len; j0 += 16) {
        const __mmask16 m = len - j0 >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (len - j0)) - 1u);
        const __m512i bits = _mm512_loadu_si512(b->cf + j0);
        const __m512 conf = _mm512_castsi512_ps(_mm512_and_si512(bits, absmask));
        const __mmask16 valid = _mm512_mask_cmp_ps_mask(m, _mm512_loadu_ps(b->pt + j0), zero, _CMP_NLT_UQ);
        __m512i k;
        if (a->hist_equal) {  /* floor(conf B) is the bin or next to it; its two edges decide (see bins_equal16) */
            k = _mm512_min_epi32(_mm512_cvttps_epi32(_mm512_mul_ps(conf, fb)), last);
            const __mmask16 down = _mm512_cmp_ps_mask(conf, _mm512_permutexvar_ps(k, vlo), _CMP_LT_OQ);
            const __mmask16 up = _mm512_cmp_ps_mask(conf, _mm512_permutexvar_ps(k, vhi), _CMP_GE_OQ);
            k = _mm512_mask_add_epi32(_mm512_mask_sub_epi32(k, down, k, one), up, k, one);
        } else {  /* a binary search over the interior edges (see bins_search16) */
            k = _mm512_setzero_si512();
            for (int32_t step = 8; step >= 1; step >>= 1) {
                const __m512i cand = _mm512_add_epi32(k, _mm512_set1_epi32(step));
                const __mmask16 ge = _mm512_cmp_ps_mask(conf, _mm512_permutexvar_ps(cand, vtab), _CMP_NLT_UQ);
                k = _mm512_mask_mov_epi32(k, ge, cand);
            }
            k = _mm512_min_epi32(k, last);
        }
        /* 2k for a correct prediction, 2k + 1 for a wrong one (stored negative), 2B for NaN */
        __m512i sub = _mm512_add_epi32(_mm512_add_epi32(k, k), _mm512_srli_epi32(bits, 31));
        sub = _mm512_mask_mov_epi32(sub, _mm512_cmp_ps_mask(conf, conf, _CMP_UNORD_Q), nan_sub);
        const __m512i cell = _mm512_mask_add_epi32(spare, valid, _mm512_loadu_si512(b->cell0 + j0), sub);
        /* d exact; NaN to 0 (max_ps returns its second operand) */
        const __m512i d = _mm512_cvttps_epi32(_mm512_max_ps(_mm512_mul_ps(_mm512_sub_ps(conf, half), scale), zero));
        const __m512i high = _mm512_or_si512(_mm512_slli_epi32(cell, 44 - 32), unit);
        _mm512_storeu_si512(b->conf.packed + j0, _mm512_unpacklo_epi32(d, high));
        _mm512_storeu_si512(b->conf.packed + j0 + 8, _mm512_unpackhi_epi32(d, high));
    }
}
#endif

/* The same for any number of bins: each element's cell and d. */
static void conf_cells(const focal_args *a, block_buf *restrict b, int32_t len) {
    const int32_t nb = a->stat_bins;
    int32_t *restrict cell = b->conf.split.cell, *restrict dv = b->conf.split.d;
#pragma omp simd
    for (int32_t j = 0; j < len; ++j) {
        const float cf = b->cf[j], conf = __builtin_fabsf(cf);
        const int32_t k = (int32_t)bin_of(conf, a->stat_edges, nb);
        const int32_t sub = conf != conf ? 2 * nb : 2 * k + (cf < 0.0f ? 1 : 0);
        cell[j] = b->pt[j] < 0.0f ? b->spare : b->cell0[j] + sub;
        float d = (conf - 0.5f) * 16777216.0f;  /* exact; NaN to 0, and nothing outside [0, 2^23] */
        d = d > 0.0f ? (d < 8388608.0f ? d : 8388608.0f) : 0.0f;
        dv[j] = (int32_t)d;
    }
}

/* The confidence statistics of a block: the cells and values, then one addition per element. */
static void block_conf(const focal_args *a, block_buf *restrict b, int32_t len) {
    uint64_t *restrict cells = b->cells;
#ifdef HIST_AVX512
    if (a->stat_bins <= 16 && b->spare < (1 << 20)) {  /* the packed cell index has 20 bits */
        conf_cells_avx512(a, b, len);
        const uint64_t *restrict pk = b->conf.packed, low = ((uint64_t)1 << 44) - 1;
        const int32_t whole = (len + 15) & ~15;  /* whole vectors were written, each in its own order */
        for (int32_t j = 0; j < whole; j += 4) {
            const uint64_t v0 = pk[j], v1 = pk[j + 1], v2 = pk[j + 2], v3 = pk[j + 3];
            cells[v0 >> 44] += v0 & low;
            cells[v1 >> 44] += v1 & low;
            cells[v2 >> 44] += v2 & low;
            cells[v3 >> 44] += v3 & low;
        }
        b->conf_since += len;
        return;
    }
#endif
    conf_cells(a, b, len);
    const int32_t *restrict cell = b->conf.split.cell, *restrict dv = b->conf.split.d;
    for (int32_t j = 0; j < len; ++j) cells[cell[j]] += ((uint64_t)1 << CONF_COUNT_SHIFT) + (uint32_t)dv[j];
    b->conf_since += len;
}

/* Adds the cells into acc (per class and bin: count, confidence sum, number correct) and clears them. */
static void fold_conf(const focal_args *a, block_buf *b, double *acc) {
    const int64_t B = a->stat_bins, C = a->c;
    const uint64_t mask = ((uint64_t)1 << CONF_COUNT_SHIFT) - 1;
    const conf_acc f = conf_fields(a, acc);
    uint64_t *cell = b->cells;
    for (int64_t c = 0; c < C; ++c) {
        for (int64_t sub = 0; sub <= 2 * B; ++sub, ++cell) {
            const int64_t n = (int64_t)(*cell >> CONF_COUNT_SHIFT), d = (int64_t)(*cell & mask);
            *cell = 0;
            if (n == 0) continue;
            const int64_t at = c * B + (sub < 2 * B ? sub / 2 : B - 1);
            f.class_count[at] += (double)n;
            if (sub == 2 * B) {  /* NaN confidences: counted in the last bin, whose sums they make NaN */
                f.class_sum[at] = f.class_correct[at] = __builtin_nan("");
                continue;
            }
            f.class_sum[at] += 0.5 * (double)n + (double)d * (1.0 / 16777216.0);
            if (sub % 2 == 0) f.class_correct[at] += (double)n;
        }
    }
    b->cells[b->spare] = 0;
    b->conf_since = 0;
}

/* The last fold of a thread, and its per-bin sums over the classes. */
static void finish_conf(const focal_args *a, block_buf *b, double *acc) {
    fold_conf(a, b, acc);
    const int64_t B = a->stat_bins, C = a->c;
    const conf_acc f = conf_fields(a, acc);
    for (int64_t c = 0; c < C; ++c) {
        for (int64_t k = 0; k < B; ++k) {
            f.count[k] += f.class_count[c * B + k];
            f.sum[k] += f.class_sum[c * B + k];
            f.correct[k] += f.class_correct[c * B + k];
        }
    }
}

static void block_stats(const focal_args *a, block_buf *b, int64_t off, int32_t len, int32_t width, double *acc) {
    const int32_t rows = len / width;
    if (a->has_ignore) block_stats_loop(a, b, off, rows, width, acc, 1);
    else block_stats_loop(a, b, off, rows, width, acc, 0);
    if (a->need_conf) {
        if (b->conf_since + len > CONF_FOLD - 1) fold_conf(a, b, acc);
        block_conf(a, b, len);
    }
    const int32_t nb = a->stat_bins;
#ifdef HIST_AVX512
    if (nb <= 16) {
        for (int32_t j = len; j < ((len + 63) & ~63); ++j) b->pt[j] = -1.0f;  /* whole vectors of 64 */
        hist_avx512(&b->hist, b->pt, len, nb, a->hist_equal);
        return;
    }
#endif
    hist_cumulative(b->pt, len, nb, a->stat_edges, acc + 5);
}

/* The main loop of a block, the variant for its kind of targets and gamma and the outputs asked for (each call
   below passes compile-time constants, so that each combination is its own loop). */
#define STATS_VARIANTS(call) \
    do { if (stats == 2) call(2); else if (stats) call(1); else call(0); } while (0)
static void block_loop(const focal_args *a, block_buf *b, int64_t off, int32_t len, int hard, block_sums *o) {
    const int stats = a->need_stats ? (a->need_conf ? 2 : 1) : 0, neg = a->gamma_negative;
    const float *gp = a->gamma_kind == 2 ? a->gamma + off : b->gamma;
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
#define HARD_W(st) hard_loop(a, b, off, len, gp, 1, st, o)
#define HARD(st) hard_loop(a, b, off, len, gp, 0, st, o)
#define FUSED_HARD_NEG(st) fused_loop(a, b, off, len, gp, 1, 1, st, o)
#define FUSED_NEG(st) fused_loop(a, b, off, len, gp, 0, 1, st, o)
#define FUSED(st) fused_loop(a, b, off, len, gp, 0, 0, st, o)
    if (hard && !neg) {
        if (a->weight) STATS_VARIANTS(HARD_W);
        else STATS_VARIANTS(HARD);
    } else if (hard) {
        STATS_VARIANTS(FUSED_HARD_NEG);
    } else if (neg) {
        STATS_VARIANTS(FUSED_NEG);
    } else {
        STATS_VARIANTS(FUSED);
    }
#undef HARD_W
#undef HARD
#undef FUSED_HARD_NEG
#undef FUSED_NEG
#undef FUSED
}

/* After a block ran on saturated logits: the loss of each infinite logit becomes +-inf unless it is 0 (the limit
   of a loss that grows without bound); returns what that adds to the block's loss sum. */
static double infinite_limits(const float *x, float *elem, int32_t len) {
    double added = 0.0;
    for (int32_t j = 0; j < len; ++j) {
        if (infinite(x[j]) && elem[j] != 0.0f) {
            elem[j] = elem[j] > 0.0f ? __builtin_inff() : -__builtin_inff();
            added += elem[j];
        }
    }
    return added;
}

/* One block of len elements: `width` is the row length of the statistics' columns (see block_stats). */
static void process_block(const focal_args *a, block_buf *b, int64_t off, int32_t len, int32_t width, double *acc) {
    const float *x = a->x + off;
    block_sums sums = {0.0, 0.0, 0, 0};
    int hard = a->smoothing == 0.0f;
    if (hard) {
        const float *t = a->t + off;
        const float ign = a->ignore_value;
        const int has_ign = a->has_ignore;
        int32_t soft = 0;
        for (int32_t j = 0; j < len; ++j) soft += (t[j] != 0.0f) & (t[j] != 1.0f) & !(has_ign && t[j] == ign);
        hard = soft == 0;
    }
    b->x = x;
    b->elem = a->elem ? a->elem + off : NULL;
    block_loop(a, b, off, len, hard, &sums);
    if (!__builtin_isfinite(sums.loss)) {
        /* an infinite logit of a counted element makes the loss sum inf or NaN (as do NaN logits and overflow):
           if there is one, the block runs again on saturated logits, and the losses' limits are restored */
        int32_t n_inf = 0;
        for (int32_t j = 0; j < len; ++j) n_inf += infinite(x[j]);
        if (n_inf) {
            for (int32_t j = 0; j < len; ++j) b->xs[j] = saturate(x[j]);
            b->x = b->xs;
            if (!b->elem) b->elem = b->el;
            sums = (block_sums){0.0, 0.0, 0, 0};
            block_loop(a, b, off, len, hard, &sums);  /* overwrites the block's outputs */
            sums.loss += infinite_limits(x, b->elem, len);
        }
    }
    acc[0] += sums.loss;
    acc[1] += (double)sums.count;
    acc[2] += (double)sums.n_pos;
    acc[4] += sums.absd;
    if (a->need_stats) block_stats(a, b, off, len, width, acc);
}

/* The first confidence cell of the class of each block position j < len (whose class is cls[j]). */
static void conf_positions(block_buf *b, int64_t len, int32_t nb) {
    for (int64_t j = 0; j < len; ++j) b->cell0[j] = b->cls[j] * (2 * nb + 1);
}

/* Runs units [unit_begin, unit_end) of a->... on the calling thread; returns 0, or -1 when the confidence cells
   could not be allocated. */
static int run_range(const focal_args *a) {
    block_buf *b = (block_buf *)__builtin_alloca(sizeof(block_buf));
    const int64_t C = a->c, S = a->s;
    double *acc = a->acc, *class_count = acc + 5 + a->stat_bins;
    int32_t since_fold = 0;  /* blocks */
    clear_sums(b, BLOCK);
    b->cells = NULL;
    b->conf_since = 0;
    b->spare = (int32_t)(C * (2 * a->stat_bins + 1));
    if (a->need_conf) {
        b->cells = (uint64_t *)calloc((size_t)b->spare + 1, sizeof(uint64_t));
        if (!b->cells) return -1;
    }
#ifdef HIST_AVX512
    const int hist_vec = a->need_stats && a->stat_bins <= 16;  /* block_stats bins with hist_avx512 */
    if (hist_vec) hist_avx512_init(&b->hist, a->stat_bins, a->stat_edges);
#endif
    if (S == 1 && C <= BLOCK) {
        /* units are rows of C elements; a block holds whole rows, so block position j has class j % C */
        const int64_t rows_per_block = BLOCK / C, span = rows_per_block * C;
        const int32_t fold_every = rows_per_block >= FOLD_TERMS ? 1 : (int32_t)(FOLD_TERMS / rows_per_block);
        for (int64_t j = 0; j < span; ++j) {
            int32_t c = (int32_t)(j % C);
            b->cls[j] = c;
            b->gamma[j] = a->gamma_kind == 0 ? a->gamma[0] : (a->gamma_kind == 1 ? a->gamma[c] : 0.0f);
            b->a_pos[j] = a->alpha ? a->alpha[c] : 1.0f;
        }
        if (a->need_conf) conf_positions(b, span, a->stat_bins);
        for (int64_t row = a->unit_begin; row < a->unit_end; row += rows_per_block) {
            int64_t rows = a->unit_end - row < rows_per_block ? a->unit_end - row : rows_per_block;
            process_block(a, b, row * C, (int32_t)(rows * C), (int32_t)C, acc);
            if (++since_fold >= fold_every) { fold_sums(a, b, C, acc); since_fold = 0; }
        }
        fold_sums(a, b, C, acc);
        if (a->need_stats && !a->has_ignore)  /* every element counts: one per class and row */
            for (int64_t c = 0; c < C; ++c) class_count[c] += (double)(a->unit_end - a->unit_begin);
    } else if (S == 1) {
        /* rows longer than a block: blocks are consecutive classes of one row */
        for (int64_t row = a->unit_begin; row < a->unit_end; ++row) {
            for (int64_t c0 = 0; c0 < C; c0 += BLOCK) {
                int32_t len = (int32_t)(C - c0 < BLOCK ? C - c0 : BLOCK);
                for (int32_t j = 0; j < len; ++j) {
                    b->cls[j] = (int32_t)(c0 + j);
                    b->gamma[j] = a->gamma_kind == 0 ? a->gamma[0] : (a->gamma_kind == 1 ? a->gamma[c0 + j] : 0.0f);
                    b->a_pos[j] = a->alpha ? a->alpha[c0 + j] : 1.0f;
                }
                if (a->need_conf) conf_positions(b, len, a->stat_bins);
                process_block(a, b, row * C + c0, len, len, acc);
                fold_sums(a, b, len, acc);
            }
        }
        if (a->need_stats && !a->has_ignore)
            for (int64_t c = 0; c < C; ++c) class_count[c] += (double)(a->unit_end - a->unit_begin);
    } else {
        /* units are (n, c) planes of S contiguous elements of one class */
        for (int64_t unit = a->unit_begin; unit < a->unit_end; ++unit) {
            const int32_t c = (int32_t)(unit % C);
            const int32_t used = (int32_t)(S < BLOCK ? S : BLOCK);
            for (int32_t j = 0; j < used; ++j) {
                b->cls[j] = c;
                b->gamma[j] = a->gamma_kind == 0 ? a->gamma[0] : (a->gamma_kind == 1 ? a->gamma[c] : 0.0f);
                b->a_pos[j] = a->alpha ? a->alpha[c] : 1.0f;
            }
            if (a->need_conf) conf_positions(b, used, a->stat_bins);
            for (int64_t s0 = 0; s0 < S; s0 += BLOCK) {
                int32_t len = (int32_t)(S - s0 < BLOCK ? S - s0 : BLOCK);
                process_block(a, b, unit * S + s0, len, len, acc);
                if (++since_fold == FOLD_TERMS) { fold_sums(a, b, used, acc); since_fold = 0; }
            }
            fold_sums(a, b, used, acc);
            since_fold = 0;
            if (a->need_stats && !a->has_ignore) class_count[c] += (double)S;
        }
    }
#ifdef HIST_AVX512
    if (hist_vec) hist_avx512_flush(&b->hist, a->stat_bins, acc + 5);
#endif
    if (a->need_conf) {
        finish_conf(a, b, acc);
        free(b->cells);
    }
    return 0;
}

/* Runs all units on `threads` threads; thread i handles the i-th of `threads` equal ranges and accumulates into
   acc_rows[i * acc_len ...] (zeroed here first, so the caller may pass a reused buffer), which the caller sums in
   order. Returns 0 on success. */
int sigmoid_focal_cpu(const focal_args *a, int64_t units, int32_t threads, double *acc_rows, int64_t acc_len) {
    const int32_t hist_equal = a->need_stats ? equal_width_edges(a->stat_edges, a->stat_bins) : 0;
    const int32_t need_conf = a->need_stats && a->need_conf;  /* the bins are part of the statistics */
    int failed = 0;
    if (need_conf && a->c * (2 * (int64_t)a->stat_bins + 1) >= INT32_MAX) return -1;  /* int32 cell indices */
    memset(acc_rows, 0, sizeof(double) * (size_t)threads * (size_t)acc_len);
#pragma omp parallel for num_threads(threads) schedule(static, 1)
    for (int32_t i = 0; i < threads; ++i) {
        focal_args local = *a;
        local.unit_begin = units * i / threads;
        local.unit_end = units * (i + 1) / threads;
        local.acc = acc_rows + i * acc_len;
        local.hist_equal = hist_equal;
        local.need_conf = need_conf;
        if (run_range(&local) != 0) {
#pragma omp atomic write
            failed = 1;
        }
    }
    return failed ? -1 : 0;
}

/* ------------------------------------------------------------------------------------------------------------
   Softmax statistics for class-index targets (the per-step statistics of small and medium batches, where the
   dozens of small tensor operations of the PyTorch formulation cost more than the arithmetic).

   logp: log-probabilities (N, C, S) float32, contiguous; target: (N, S) int64; samples whose target equals
   ignore_index (when has_ignore) are left out. inner: the B - 1 inner bin edges, ascending. A value v falls in
   bin #{e in inner : e <= v} (torch.bucketize(..., right=True); NaN in the last bin, as there). Confidence is
   max_c q_c (NaN when the sample's log-probabilities are, as log_softmax makes a whole row NaN); a sample is correct
   when its target's log-probability attains the maximum. out (zeroed by the caller), float64, the counts first
   and then the sums, so that the caller converts each group with one operation:
     counts: count, count (n_pos), pt_hist[B], class_count[C], conf_count[B], class_conf_count[C][B]
     sums:   sum_pt, sum_pt (sum_pt_pos), class_sum_pt[C], conf_sum[B], correct_sum[B], class_conf_sum[C][B],
             class_correct_sum[C][B]
   Returns 0, or -1 for a target outside [0, C) (out is then incomplete).
   ------------------------------------------------------------------------------------------------------------ */
static inline int32_t bucket_right(float v, const float *inner, int32_t m) {
    int32_t k = 0;
    for (int32_t i = 0; i < m; ++i) k += !(v < inner[i]);  /* NaN: the last bin, as torch.bucketize */
    return k;
}

int softmax_stats_cpu(const float *logp, const int64_t *target, int64_t n, int64_t c, int64_t s,
                      int32_t has_ignore, int64_t ignore_index, const float *inner, int32_t bins, double *out) {
    const int64_t b = bins, cb = c * bins;
    double *count = out, *hist = out + 2, *class_count = hist + b, *conf_count = class_count + c;
    double *cell_count = conf_count + b;
    double *sum_pt = cell_count + cb, *class_sum_pt = sum_pt + 2, *conf_sum = class_sum_pt + c;
    double *correct_sum = conf_sum + b, *cell_conf = correct_sum + b, *cell_correct = cell_conf + cb;
    for (int64_t i = 0; i < n; ++i) {
        const float *row = logp + i * c * s;
        for (int64_t j = 0; j < s; ++j) {
            const int64_t y = target[i * s + j];
            if (has_ignore && y == ignore_index) continue;
            if (y < 0 || y >= c) return -1;
            float best = row[j];
            for (int64_t k = 1; k < c; ++k) {
                const float v = row[k * s + j];
                best = v > best || v != v ? v : best;  /* NaN propagates, as in torch.amax */
            }
            const float ly = row[y * s + j];
            const float conf = expf(best), pt = expf(ly);
            const double correct = ly >= best ? 1.0 : 0.0;
            const int32_t bc = bucket_right(conf, inner, bins - 1);
            const int64_t cell = y * b + bc;
            cell_count[cell] += 1.0;
            cell_conf[cell] += conf;
            cell_correct[cell] += correct;
            conf_count[bc] += 1.0;
            conf_sum[bc] += conf;
            correct_sum[bc] += correct;
            class_count[y] += 1.0;
            class_sum_pt[y] += pt;
            hist[bucket_right(pt, inner, bins - 1)] += 1.0;
        }
    }
    for (int64_t k = 0; k < c; ++k) { count[0] += class_count[k]; sum_pt[0] += class_sum_pt[k]; }
    count[1] = count[0];
    sum_pt[1] = sum_pt[0];
    return 0;
}
