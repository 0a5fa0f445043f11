"""Fused sigmoid focal loss forward + gradient + batch statistics in Triton (CUDA).

Implements the "Fast sigmoid kernel contract" of the adaptive_focal spec:

    sigmoid_focal_forward_triton(x, t, gamma, gamma_kind, table_edges, alpha, weight, ignore_index,
                                 label_smoothing, detach_modulator, stat_edges, need_elementwise,
                                 need_stats, need_conf) -> (elem, grad, acc)

One pass over the data: x and t (and weight / full gamma when given) are read once, ``grad`` (and
``elem`` only when asked) is written once, and the statistics are reduced in the same pass.

Design
------
* The input is viewed as (N, C, S). Each program owns one block of ``BLOCK_C`` classes and walks
  (grid-stride) over tiles of shape (BLOCK_N, BLOCK_C, BLOCK_S) of that class block. The launch grid
  is 1-D: ``pid -> (pid_rest, pid_c)``, about 8 programs per SM. Because a lane only ever sees one
  class, the per-class statistics are lane sums reduced over the tile's N and S axes once per
  program, without atomics. (A plain 1-D tiling of the flattened elements, class = (i // S) % C,
  would need a scatter per element for the class statistics: atomics or a one-hot per tile.)
* S == 1 (the (N, C) detection layout): tiles are (BLOCK_N, BLOCK_C, 1) rows of the row-major
  matrix; BLOCK_C is picked to waste few lanes (80 classes -> 16, 5 class blocks).
  S > 1 (segmentation layout): tiles run along the contiguous S axis.
* Statistics are deterministic: lanes accumulate in float32 / int32 registers, each program reduces
  them (in float64) and writes one row of a small float64 buffer (counts are exact integers), and
  torch sums the rows; no atomics, so results are bit-reproducible run to run. The p_t histogram
  uses ``tl.histogram`` (with a per-bin-reduction fallback if that fails to compile).
* Confidence bins: each element is also a binary prediction, confidence max(p, 1 - p) (the ``s``
  the sigmoid computes anyway), correct when the sign of the logit agrees with the raw target's
  label. Per tile and bin, one masked reduction over the tile's N and S axes gives each class's
  count and number correct (packed in one int32: a tile holds fewer than 2^16 elements of a
  class) and one its confidence sum, added into (BLOCK_C, bins) accumulators: 2B reductions per
  tile, the statistics' largest cost on the device (measured by research/benchmarks/bench_triton.py).
  A NaN confidence falls in the last bin and makes its confidence sum NaN; the host makes the
  matching correct sum NaN too. They are opt-in (``need_conf``, a ``tl.constexpr``): without them
  the kernel is compiled without any of this, and the accumulator ends before their fields.

The module imports ``triton`` at import time; it must only be imported when triton is available
(``adaptive_focal._kernels`` checks this). With ``TRITON_INTERPRET=1`` set before triton is first
imported, the kernels run in Triton's interpreter on CPU tensors (used by the tests).
"""

from __future__ import annotations

import math
import os

import torch

from . import layout

try:
    import triton
    import triton.language as tl
except ImportError as exc:  # pragma: no cover - exercised only without triton
    raise ImportError(
        "adaptive_focal._kernels.triton_sigmoid needs the `triton` package (pip install triton); "
        "it is only used for CUDA tensors, the CPU/C kernel or the torch reference work without it"
    ) from exc

__all__ = ["sigmoid_focal_forward_triton", "log1p_triton_check", "plan_blocks"]

_TILE = 1024  # elements per tile (4 warps x 32 threads x 8 elements)
_NUM_WARPS = 4
_F32_MAX = tl.constexpr(3.4028234663852886e38)
_SATURATED = tl.constexpr(1e4)  # where an infinite logit is computed (the same in every path of the library)


# --------------------------------------------------------------------------------------------
# device helpers
# --------------------------------------------------------------------------------------------
@triton.jit
def _log1p_small(u):
    """log1p(u) for u in [0, 1] without a libdevice log1p (not available on every backend).

    Goldberg's trick: w = fl(1 + u); log1p(u) = u * log(w) / (w - 1), and = u when w == 1.
    (w - 1) is exact for w in [1, 2], so the rounding of 1 + u cancels; accurate to a few ulp as
    long as log() itself is (checked on the device by research/benchmarks/bench_triton.py).
    """
    w = 1.0 + u
    d = w - 1.0
    safe_d = tl.where(d == 0.0, 1.0, d)
    return tl.where(d == 0.0, u, tl.log(w) * (u / safe_d))


@triton.jit
def _bin_index(v, edges_ptr, NB):
    """Bin of v over edges[0..NB] (edges[b] <= v < edges[b+1], last bin closed): counts the interior
    edges <= v, so values outside [edges[0], edges[NB]] land in the first/last bin, and NaN (not below
    any edge) in the last, as torch.bucketize puts it."""
    b = tl.zeros(v.shape, tl.int32)
    for k in range(1, NB):
        ek = tl.load(edges_ptr + k)
        b += ((v >= ek) | (v != v)).to(tl.int32)
    return b


@triton.jit
def _log1p_kernel(u_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    u = tl.load(u_ptr + offs, mask=m, other=0.0)
    tl.store(out_ptr + offs, _log1p_small(u), mask=m)


# --------------------------------------------------------------------------------------------
# main kernel
# --------------------------------------------------------------------------------------------
# N and the loop bounds change from batch to batch: no value specialisation (avoids recompiles);
# C and S stay specialised (divisibility by 16 lets row starts be vector-aligned).
@triton.jit(do_not_specialize=["N", "N_TILES", "P_REST"])
def _sigmoid_focal_fwd_kernel(
    x_ptr, t_ptr, gamma_ptr, tedges_ptr, alpha_ptr, w_ptr, sedges_ptr,
    elem_ptr, grad_ptr, part_s_ptr, part_c_ptr, part_f_ptr,
    N, C, S, NB_S, N_TILES, P_REST, NCB,
    NB_TABLE, NB_STAT,
    ignore_value, ls,
    GAMMA_KIND: tl.constexpr, HAS_ALPHA: tl.constexpr, HAS_WEIGHT: tl.constexpr,
    HAS_IGNORE: tl.constexpr, DETACH: tl.constexpr, NEED_ELEM: tl.constexpr,
    NEED_STATS: tl.constexpr, NEED_CONF: tl.constexpr, IDX64: tl.constexpr, HIST_MODE: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr, HIST_PAD: tl.constexpr,
    PART_W: tl.constexpr,
):
    TILE: tl.constexpr = BLOCK_N * BLOCK_C * BLOCK_S
    pid = tl.program_id(0)
    pid_c = pid % NCB
    pid_rest = pid // NCB

    rn = tl.arange(0, BLOCK_N)[:, None, None]
    rc = tl.arange(0, BLOCK_C)[None, :, None]
    rs = tl.arange(0, BLOCK_S)[None, None, :]
    c_idx = pid_c * BLOCK_C + rc                       # (1, BLOCK_C, 1) class of the tile's column
    c_ok = c_idx < C

    # per-class constants, loaded once per program
    if HAS_ALPHA:
        alpha_c = tl.load(alpha_ptr + c_idx, mask=c_ok, other=0.0)
    if GAMMA_KIND == 0:
        g_scalar = tl.load(gamma_ptr)
    if GAMMA_KIND == 1:
        g_class = tl.load(gamma_ptr + c_idx, mask=c_ok, other=0.0)

    one_m_ls = 1.0 - ls
    half_ls = 0.5 * ls

    # lane accumulators (float32 / int32 in registers, reduced to float64 per program at the end).
    # A lane always sees the same class (the program's class block is fixed), so the per-class
    # statistics are plain lane sums reduced over the tile's N and S axes once, after the loop.
    acc_loss = tl.zeros((BLOCK_N, BLOCK_C, BLOCK_S), tl.float32)
    acc_cnt = tl.zeros((BLOCK_N, BLOCK_C, BLOCK_S), tl.int32)
    acc_pos = tl.zeros((BLOCK_N, BLOCK_C, BLOCK_S), tl.int32)
    if NEED_STATS:
        acc_pt = tl.zeros((BLOCK_N, BLOCK_C, BLOCK_S), tl.float32)
        acc_ad = tl.zeros((BLOCK_N, BLOCK_C, BLOCK_S), tl.float32)
        acc_ptpos = tl.zeros((BLOCK_N, BLOCK_C, BLOCK_S), tl.float32)
        acc_gpos = tl.zeros((BLOCK_N, BLOCK_C, BLOCK_S), tl.float32)
        acc_gneg = tl.zeros((BLOCK_N, BLOCK_C, BLOCK_S), tl.float32)
        acc_hist = tl.zeros((HIST_PAD,), tl.int32)
    if NEED_CONF:
        # confidence bins per (class of the block, bin)
        acc_fcnt = tl.zeros((BLOCK_C, HIST_PAD), tl.int32)
        acc_fcor = tl.zeros((BLOCK_C, HIST_PAD), tl.int32)
        acc_fsum = tl.zeros((BLOCK_C, HIST_PAD), tl.float32)

    for tile in range(pid_rest, N_TILES, P_REST):
        nb = tile // NB_S
        sb = tile - nb * NB_S
        n_idx = nb * BLOCK_N + rn
        s_idx = sb * BLOCK_S + rs
        inb = (n_idx < N) & c_ok & (s_idx < S)
        if IDX64:
            offs = (n_idx.to(tl.int64) * C + c_idx) * S + s_idx
        else:
            offs = (n_idx * C + c_idx) * S + s_idx

        # NOTE: x/t are float32 here (the wrapper upcasts half inputs). Loading bf16/fp16 directly
        # and converting in registers (`.to(tl.float32)`) is the next optimisation: it halves the
        # read traffic for mixed-precision training.
        x_raw = tl.load(x_ptr + offs, mask=inb, other=0.0)
        t = tl.load(t_ptr + offs, mask=inb, other=0.0)
        # non-finite logits, as the C kernel and the PyTorch path treat them: +-inf is computed at +-1e4,
        # where exp(-|x|) is 0 and every quantity below equals its limit, and its loss then set to +-inf
        # unless 0 (the limit of a loss that grows without bound); NaN stays NaN; ignored elements are 0
        # whatever their logit
        x_inf = (x_raw > _F32_MAX) | (x_raw < -_F32_MAX)
        x = tl.where(x_raw > _F32_MAX, _SATURATED, tl.where(x_raw < -_F32_MAX, -_SATURATED, x_raw))
        if HAS_IGNORE:
            valid = inb & (t != ignore_value)
        else:
            valid = inb

        tp = t * one_m_ls + half_ls                      # smoothed target t'
        pos = x >= 0.0
        e = tl.exp(-tl.abs(x))                           # in (0, 1], 0 only on underflow
        s = 1.0 / (1.0 + e)
        es = e * s
        p = tl.where(pos, s, es)                         # sigmoid(x)
        pm = tl.where(pos, es, s)                        # 1 - sigmoid(x), without cancellation
        q = tp * pm + (1.0 - tp) * p                     # 1 - p_t
        p_t = p * tp + pm * (1.0 - tp)
        # BCE with logits: max(x,0) - x t' + log1p(e), with max(x,0) - x t' written per sign
        lin = tl.where(pos, x * (1.0 - tp), -x * tp)
        bce = lin + _log1p_small(e)

        if GAMMA_KIND == 0:
            g = g_scalar
        elif GAMMA_KIND == 1:
            g = g_class
        elif GAMMA_KIND == 2:
            g = tl.load(gamma_ptr + offs, mask=inb, other=0.0)
        else:
            tb = _bin_index(p_t, tedges_ptr, NB_TABLE)
            g = tl.load(gamma_ptr + c_idx * NB_TABLE + tb, mask=inb, other=0.0)

        base = tl.where(g >= 0.0, q, 2.0 - q)
        base_ok = base > 0.0
        gabs = tl.abs(g)
        # base ** |g| via exp2/log2; the guarded log keeps base == 0 (saturated logits) NaN-free
        m_pow = tl.exp2(gabs * tl.log2(tl.where(base_ok, base, 1.0)))
        m = tl.where(g == 0.0, 1.0, tl.where(base_ok, m_pow, 0.0))

        if HAS_ALPHA:
            a = alpha_c * tp + (1.0 - alpha_c) * (1.0 - tp)
        if HAS_WEIGHT:
            wv = tl.load(w_ptr + offs, mask=inb, other=0.0)
            if HAS_ALPHA:
                a = a * wv
            else:
                a = wv

        loss = m * bce
        gr = m * (p - tp)
        if not DETACH:
            # r = p(1-p)/base lies in [0, 1] (base >= min(p, 1-p) for gamma >= 0, base >= 1 otherwise).
            # The 1e-30 floor keeps the divisor normal: with flush-to-zero arithmetic a subnormal base
            # (hard target, |x| ~ 88) could otherwise give 0/0. Such elements have bce ~ 0, so the
            # clamped r does not change the gradient.
            r = tl.minimum(p * pm / tl.maximum(base, 1e-30), 1.0)
            r = tl.where(base_ok, r, 0.0)
            gr += g * m * r * (1.0 - 2.0 * tp) * bce
        if HAS_ALPHA or HAS_WEIGHT:
            loss = a * loss
            gr = a * gr
        loss = tl.where(x_inf & (loss != 0.0), tl.where(loss > 0.0, float("inf"), float("-inf")), loss)
        loss = tl.where(valid, loss, 0.0)
        gr = tl.where(valid, gr, 0.0)

        tl.store(grad_ptr + offs, gr, mask=inb)
        if NEED_ELEM:
            tl.store(elem_ptr + offs, loss, mask=inb)

        acc_loss += loss
        acc_cnt += valid.to(tl.int32)
        acc_pos += (valid & (t >= 0.5)).to(tl.int32)
        if NEED_STATS:
            pt_v = tl.where(valid, p_t, 0.0)
            acc_pt += pt_v
            acc_ad += tl.where(valid, tl.abs(p - tp), 0.0)
            acc_ptpos += tl.where(t >= 0.5, pt_v, 0.0)
            # |d loss / dx| split by the raw target (gr is 0 where ignored)
            g_abs = tl.abs(gr)
            t_raw = tl.where(valid, t, 0.0)
            acc_gpos += g_abs * t_raw
            acc_gneg += g_abs * (1.0 - t_raw)
            # invalid lanes go to bin NB_STAT (< HIST_PAD) and are dropped when storing
            hb = tl.where(valid, _bin_index(p_t, sedges_ptr, NB_STAT), NB_STAT)
            if HIST_MODE == 0:
                acc_hist += tl.histogram(tl.reshape(hb, (TILE,)), HIST_PAD)
            else:  # fallback without tl.histogram: one block reduction per bin
                hkk = tl.arange(0, HIST_PAD)
                for k in tl.static_range(HIST_PAD):
                    acc_hist += tl.where(hkk == k, tl.sum((hb == k).to(tl.int32)), 0)
        if NEED_CONF:
            # each element as a binary prediction: confidence max(p, 1 - p) = s, correct when the
            # logit's sign agrees with the raw target's label (x = 0 is a tie: correct)
            correct = tl.where(t >= 0.5, x >= 0.0, x <= 0.0)
            fb = tl.where(valid, _bin_index(s, sedges_ptr, NB_STAT), NB_STAT)
            packed = 1 + correct.to(tl.int32) * 65536  # count | number correct << 16, per element
            hk2 = tl.arange(0, HIST_PAD)[None, :]
            for k in range(NB_STAT):
                in_k = fb == k
                both = tl.sum(tl.sum(tl.where(in_k, packed, 0), axis=2), axis=0)
                conf = tl.sum(tl.sum(tl.where(in_k, s, 0.0), axis=2), axis=0)
                acc_fcnt = tl.where(hk2 == k, acc_fcnt + (both & 65535)[:, None], acc_fcnt)
                acc_fcor = tl.where(hk2 == k, acc_fcor + (both >> 16)[:, None], acc_fcor)
                acc_fsum = tl.where(hk2 == k, acc_fsum + conf[:, None], acc_fsum)

    # ---- per-program partials: row `pid` of part_s, row `pid_rest` (class slice) of part_c ----
    row = part_s_ptr + pid * PART_W
    tl.store(row + 0, tl.sum(acc_loss.to(tl.float64)))
    tl.store(row + 1, tl.sum(acc_cnt).to(tl.float64))
    tl.store(row + 2, tl.sum(acc_pos).to(tl.float64))
    hk = tl.arange(0, HIST_PAD)
    if NEED_STATS:
        tl.store(row + 3, tl.sum(acc_pt.to(tl.float64)))
        tl.store(row + 4, tl.sum(acc_ad.to(tl.float64)))
        tl.store(row + 5 + hk, acc_hist.to(tl.float64), mask=hk < NB_STAT)
        tl.store(row + 5 + NB_STAT, tl.sum(acc_ptpos.to(tl.float64)))
        cvec = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
        crow = part_c_ptr + pid_rest * (4 * C)
        ccnt = tl.sum(tl.sum(acc_cnt, axis=2), axis=0)
        cpt = tl.sum(tl.sum(acc_pt.to(tl.float64), axis=2), axis=0)
        cgpos = tl.sum(tl.sum(acc_gpos.to(tl.float64), axis=2), axis=0)
        cgneg = tl.sum(tl.sum(acc_gneg.to(tl.float64), axis=2), axis=0)
        tl.store(crow + cvec, ccnt.to(tl.float64), mask=cvec < C)
        tl.store(crow + C + cvec, cpt, mask=cvec < C)
        tl.store(crow + 2 * C + cvec, cgpos, mask=cvec < C)
        tl.store(crow + 3 * C + cvec, cgneg, mask=cvec < C)
    else:
        tl.store(row + 3, 0.0)
        tl.store(row + 4, 0.0)
        tl.store(row + 5 + hk, tl.zeros((HIST_PAD,), tl.float64), mask=hk < NB_STAT)
        tl.store(row + 5 + NB_STAT, 0.0)
    if NEED_CONF:
        cvec = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
        # confidence cells of the block's classes: [count, sum, number correct] x (C, NB_STAT)
        frow = part_f_ptr + pid_rest * (3 * C * NB_STAT)
        cell = cvec[:, None] * NB_STAT + tl.arange(0, HIST_PAD)[None, :]
        in_range = (cvec[:, None] < C) & (tl.arange(0, HIST_PAD)[None, :] < NB_STAT)
        tl.store(frow + cell, acc_fcnt.to(tl.float64), mask=in_range)
        tl.store(frow + C * NB_STAT + cell, acc_fsum.to(tl.float64), mask=in_range)
        tl.store(frow + 2 * C * NB_STAT + cell, acc_fcor.to(tl.float64), mask=in_range)


# --------------------------------------------------------------------------------------------
# host side
# --------------------------------------------------------------------------------------------
def _next_pow2(v: int) -> int:
    return 1 if v <= 1 else 1 << (int(v) - 1).bit_length()


def plan_blocks(C: int, S: int, tile: int = _TILE):
    """Tile shape (BLOCK_N, BLOCK_C, BLOCK_S) for an (N, C, S) problem.

    S == 1: choose BLOCK_C among 8..128 (or next_pow2(C) when C < 8) minimising padded lanes
    (ceil(C / BLOCK_C) * BLOCK_C - C), ties to the larger block; rows fill the rest of the tile.
    S > 1: BLOCK_S = next_pow2(S) capped at the tile, then classes, then rows.
    """
    tile = _next_pow2(tile)
    if S == 1:
        if C < 8:
            bc = _next_pow2(C)
        else:
            best = None
            for cand in (8, 16, 32, 64, 128):
                if cand > tile:
                    break
                padded = -(-C // cand) * cand
                key = (padded, -cand)
                if best is None or key < best[0]:
                    best = (key, cand)
            bc = best[1]
        bc = min(bc, tile)
        return max(1, tile // bc), bc, 1
    bs = min(_next_pow2(S), tile)
    bc = min(_next_pow2(C), max(1, tile // bs))
    bn = max(1, tile // (bs * bc))
    return bn, bc, bs


def _programs_target(device: torch.device) -> int:
    if device.type == "cuda":
        sms = torch.cuda.get_device_properties(device).multi_processor_count
        return sms * 8
    return 4  # interpreter: a few programs so the grid-stride loop and partial sums are exercised


def _as_f32(v: torch.Tensor) -> torch.Tensor:
    # Half inputs are upcast here (contract: x, t float32). TODO: load bf16/fp16 directly in the
    # kernel to save the extra read/write of this conversion and half the kernel's read traffic.
    if v.dtype != torch.float32:
        v = v.to(torch.float32)
    return v.contiguous()


# the kernels were decorated in interpreter mode (TRITON_INTERPRET=1 when triton was imported)
_INTERPRETED = type(_sigmoid_focal_fwd_kernel).__name__ == "InterpretedFunction"
_HIST_MODE = int(os.environ.get("ADAPTIVE_FOCAL_TRITON_HIST_MODE", "0"))  # 0: tl.histogram, 1: sums


def _launch(n_prog, args, meta, need_stats):
    """Launch; if the tl.histogram variant fails to compile on this backend, fall back (once, for
    the process) to the per-bin reduction variant."""
    global _HIST_MODE
    mode = _HIST_MODE if need_stats else 0
    try:
        _sigmoid_focal_fwd_kernel[(n_prog,)](*args, HIST_MODE=mode, **meta)
    except Exception as exc:  # compile errors surface here as RuntimeError / CompilationError
        if mode != 0 or not need_stats or _INTERPRETED:
            raise
        import warnings

        warnings.warn(f"adaptive_focal: Triton kernel with tl.histogram failed ({type(exc).__name__}: "
                      f"{str(exc)[:200]}); using the per-bin reduction fallback", RuntimeWarning, stacklevel=3)
        _HIST_MODE = 1
        _sigmoid_focal_fwd_kernel[(n_prog,)](*args, HIST_MODE=1, **meta)


def sigmoid_focal_forward_triton(x, t, gamma, gamma_kind, table_edges, alpha, weight, ignore_index,
                                 label_smoothing, detach_modulator, stat_edges, need_elementwise,
                                 need_stats, need_conf, *, _tile=None, _programs=None):
    """Fused sigmoid focal loss; see the module docstring and the spec's kernel contract.

    Returns ``(elem, grad, acc)``: elem (N, C, S) float32 (empty unless ``need_elementwise``),
    grad (N, C, S) float32 = d(sum elem)/dx, acc float64 in the contract's layout (``layout.acc_len``:
    ``[sum_loss, count, n_pos, sum_pt, sum_absdiff, hist[B], class_count[C], class_sum_pt[C], sum_pt_pos,
    class_sum_grad_pos[C], class_sum_grad_neg[C]]`` and, with ``need_conf`` (and ``need_stats``), the
    confidence bins).
    ``_tile`` / ``_programs`` override the tile size and program count (tests only).
    """
    if x.dim() == 0:
        x = x.reshape(1)
    orig_shape = x.shape
    N = int(x.shape[0])
    C = int(x.shape[1]) if x.dim() >= 2 else 1
    S = int(math.prod(x.shape[2:])) if x.dim() >= 3 else 1
    numel = N * C * S
    device = x.device
    if device.type != "cuda" and not _INTERPRETED:
        raise ValueError(f"sigmoid_focal_forward_triton: x must be a CUDA tensor, got device {device}"
                         " (TRITON_INTERPRET=1 set before importing triton runs the interpreter on CPU)")
    if int(gamma_kind) not in (0, 1, 2, 3):
        raise ValueError(f"gamma_kind must be one of 0, 1, 2, 3, got {gamma_kind!r}")
    gamma_kind = int(gamma_kind)

    x = _as_f32(x).reshape(N, C, S)
    t = _as_f32(t)
    if t.numel() != numel:
        raise ValueError(f"target must have {numel} elements like input, got shape {tuple(t.shape)}")
    t = t.reshape(N, C, S)

    f32 = dict(device=device, dtype=torch.float32)
    gamma = torch.as_tensor(gamma, **f32).contiguous()
    if gamma_kind == 0:
        if gamma.numel() != 1:
            raise ValueError(f"gamma_kind 0 needs a scalar gamma, got shape {tuple(gamma.shape)}")
        gamma = gamma.reshape(1)
    elif gamma_kind == 1:
        if gamma.numel() != C:
            raise ValueError(f"gamma_kind 1 needs gamma of shape ({C},), got {tuple(gamma.shape)}")
        gamma = gamma.reshape(C)
    elif gamma_kind == 2:
        if gamma.numel() != numel:
            raise ValueError(f"gamma_kind 2 needs gamma with {numel} elements, got {tuple(gamma.shape)}")
        gamma = gamma.reshape(N, C, S)
    if gamma_kind == 3:
        if table_edges is None:
            raise ValueError("gamma_kind 3 needs table_edges (Bt+1,), got None")
        table_edges = torch.as_tensor(table_edges, **f32).reshape(-1).contiguous()
        nb_table = table_edges.numel() - 1
        if gamma.dim() == 1:
            gamma = gamma.reshape(1, -1).expand(C, -1)
        if nb_table < 1 or tuple(gamma.shape) != (C, nb_table):
            raise ValueError(f"gamma_kind 3 needs values ({C}, {nb_table}) for {nb_table + 1} edges, "
                             f"got values {tuple(gamma.shape)}")
        gamma = gamma.contiguous()
    else:
        nb_table = 1
        table_edges = gamma  # unused dummy pointer

    stat_edges = torch.as_tensor(stat_edges, **f32).reshape(-1).contiguous()
    B = stat_edges.numel() - 1
    if B < 1:
        raise ValueError(f"stat_edges must have at least 2 entries, got {stat_edges.numel()}")

    has_alpha = alpha is not None
    if has_alpha:
        alpha = torch.as_tensor(alpha, **f32).reshape(-1)
        if alpha.numel() == 1 and C != 1:
            alpha = alpha.expand(C)
        if alpha.numel() != C:
            raise ValueError(f"alpha must have shape ({C},), got {tuple(alpha.shape)}")
        alpha = alpha.contiguous()
    has_weight = weight is not None
    if has_weight:
        weight = torch.as_tensor(weight, **f32)
        if weight.numel() != numel:
            try:  # broadcastable to the input (as F.binary_cross_entropy_with_logits)
                weight = weight.expand(orig_shape)
            except RuntimeError:
                raise ValueError(f"weight must be broadcastable to the input shape {tuple(orig_shape)}, "
                                 f"got {tuple(weight.shape)}") from None
        weight = weight.contiguous().reshape(N, C, S)
    has_ignore = ignore_index is not None
    ignore_value = float(ignore_index) if has_ignore else 0.0
    ls = float(label_smoothing)

    grad = torch.empty((N, C, S), **f32)
    elem = torch.empty((N, C, S), **f32) if need_elementwise else torch.empty(0, **f32)
    need_conf = bool(need_stats and need_conf)  # the bins are part of the statistics
    acc_len = layout.acc_len(C, B, need_conf)
    if numel == 0:
        grad.zero_()
        return elem, grad, torch.zeros(acc_len, device=device, dtype=torch.float64)

    bn, bc, bs = plan_blocks(C, S, _tile or _TILE)
    nb_n = -(-N // bn)
    nb_s = -(-S // bs)
    ncb = -(-C // bc)
    n_tiles = nb_n * nb_s
    target = _programs or _programs_target(device)
    p_rest = max(1, min(n_tiles, -(-target // ncb)))
    n_prog = p_rest * ncb
    # part_s rows: [sum_loss, count, n_pos, sum_pt, sum_absdiff, hist[B], sum_pt_pos] per program; part_c rows:
    # [class_count, class_sum_pt, class_sum_grad_pos, class_sum_grad_neg] (4C) per class-block slice
    part_w = 6 + B
    part_s = torch.empty((n_prog, part_w), device=device, dtype=torch.float64)
    part_c = torch.empty((p_rest, 4 * C), device=device, dtype=torch.float64) if need_stats else None
    # part_f rows: the confidence cells [count, sum, correct] x (C, B) per class-block slice
    part_f = torch.empty((p_rest, 3 * C * B), device=device, dtype=torch.float64) if need_conf else None
    idx64 = (N + bn) * C * (S + bs) >= 2 ** 31  # offsets of masked lanes past the end must fit too
    dummy = x

    args = (
        x, t, gamma, table_edges, alpha if has_alpha else dummy, weight if has_weight else dummy,
        stat_edges, elem if need_elementwise else dummy, grad, part_s,
        part_c if need_stats else part_s, part_f if need_conf else part_s,
        N, C, S, nb_s, n_tiles, p_rest, ncb, nb_table, B, ignore_value, ls,
    )
    meta = dict(
        GAMMA_KIND=gamma_kind, HAS_ALPHA=has_alpha, HAS_WEIGHT=has_weight, HAS_IGNORE=has_ignore,
        DETACH=bool(detach_modulator), NEED_ELEM=bool(need_elementwise), NEED_STATS=bool(need_stats),
        NEED_CONF=need_conf,
        IDX64=bool(idx64), BLOCK_N=bn, BLOCK_C=bc, BLOCK_S=bs, HIST_PAD=_next_pow2(B + 1),
        PART_W=part_w, num_warps=_NUM_WARPS,
    )
    _launch(n_prog, args, meta, need_stats)
    acc_s = part_s.sum(0)
    if need_stats:
        acc_c = part_c.sum(0)
        parts = [acc_s[:5 + B], acc_c[:2 * C], acc_s[5 + B:], acc_c[2 * C:]]
        if need_conf:
            count, conf_sum, correct = part_f.sum(0).view(3, C, B)
            # a NaN confidence (a NaN logit) made its cell's confidence sum NaN: its number correct is NaN too
            correct = torch.where(conf_sum.isnan(), conf_sum, correct)
            parts += [count.sum(0), count.reshape(-1), conf_sum.sum(0), correct.sum(0), conf_sum.reshape(-1),
                      correct.reshape(-1)]
        acc = torch.cat(parts)
    else:
        acc = torch.cat([acc_s, torch.zeros(acc_len - acc_s.numel(), device=device, dtype=torch.float64)])
    return elem, grad, acc


def log1p_triton_check(u: torch.Tensor) -> torch.Tensor:
    """Runs the kernel's log1p helper on a float32 tensor (accuracy tests / GPU self-check)."""
    u = u.to(torch.float32).contiguous().reshape(-1)
    out = torch.empty_like(u)
    if u.numel():
        _log1p_kernel[(triton.cdiv(u.numel(), 1024),)](u, out, u.numel(), BLOCK=1024)
    return out
