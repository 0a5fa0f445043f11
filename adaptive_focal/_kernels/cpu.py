"""The fused CPU kernel: C source compiled on first use, loaded with ctypes, run on torch's thread count.

The source (``sigmoid_focal_cpu.c``) is plain C with no dependency on torch's headers, so it compiles in well
under a second with the system C compiler. The shared library is cached under
``$ADAPTIVE_FOCAL_CACHE`` (default ``~/.cache/adaptive_focal``), keyed by a hash of the source, the compiler
flags and the machine, and later processes only load it. ``$ADAPTIVE_FOCAL_CPU_CFLAGS`` adds compiler flags
(for instance ``-mno-avx512f``, which builds the portable code paths instead of the AVX-512 ones). Without a C
compiler (or with ``ADAPTIVE_FOCAL_CPU_KERNEL=0``) :func:`available` is False and the library uses the
pure-PyTorch path.

The kernel parallelises with OpenMP over ``torch.get_num_threads()`` threads. It links ``libgomp.so.1``, which in
a process that imported torch is the OpenMP runtime torch already loaded, so torch's operators and this kernel
share one pool of threads (two runtimes would leave one pool spinning while the other works). Each thread's
range has its own statistics accumulator, summed afterwards in a fixed order, so results do not depend on
scheduling. ctypes releases the GIL during the call. (A torch built with another OpenMP runtime, such as Intel's,
still works; the two runtimes then keep separate threads.)
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import torch

from .layout import acc_len

_SOURCE = Path(__file__).with_name("sigmoid_focal_cpu.c")
_BASE_FLAGS = ["-O3", "-std=c11", "-fPIC", "-shared", "-fno-math-errno", "-fno-trapping-math"]


class _Args(ctypes.Structure):
    _fields_ = [
        ("n", ctypes.c_int64), ("c", ctypes.c_int64), ("s", ctypes.c_int64),
        ("unit_begin", ctypes.c_int64), ("unit_end", ctypes.c_int64),
        ("x", ctypes.c_void_p), ("t", ctypes.c_void_p),
        ("grad", ctypes.c_void_p), ("elem", ctypes.c_void_p),
        ("gamma_kind", ctypes.c_int32), ("table_bins", ctypes.c_int32), ("gamma_negative", ctypes.c_int32),
        ("gamma", ctypes.c_void_p), ("table_edges", ctypes.c_void_p),
        ("alpha", ctypes.c_void_p), ("weight", ctypes.c_void_p),
        ("has_ignore", ctypes.c_int32), ("ignore_value", ctypes.c_float),
        ("smoothing", ctypes.c_float), ("detach", ctypes.c_int32),
        ("need_stats", ctypes.c_int32), ("need_conf", ctypes.c_int32), ("stat_bins", ctypes.c_int32),
        ("stat_edges", ctypes.c_void_p), ("acc", ctypes.c_void_p),
        ("hist_equal", ctypes.c_int32),  # set by the kernel
    ]


_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
#: the cache held no build when last looked at without building (a later build clears this by setting _lib)
_not_cached = False
_load_failed = False
#: Seconds spent compiling (0.0 when the cached library was loaded); None before the first load.
compile_seconds: float | None = None


def _compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


def _cache_dir() -> Path:
    root = os.environ.get("ADAPTIVE_FOCAL_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "adaptive_focal"
    )
    return Path(root)


def _cpu_features() -> bytes:
    """The CPU's model and instruction-set flags, so that a cache shared between machines (a network home
    directory) never hands a -march=native build to a CPU without those instructions."""
    try:
        with open("/proc/cpuinfo", "rb") as fh:
            lines = [ln for ln in fh.read().splitlines() if ln.startswith((b"model name", b"flags", b"Features"))]
    except OSError:
        return b""
    return b"\n".join(sorted(set(lines)))


def _build(cc: str, compile: bool = True) -> Path | None:
    """The shared library for this source, CPU and compiler: from the cache, else compiled (``compile``), else
    None."""
    src = _SOURCE.read_bytes()
    # OpenMP and -march=native where the compiler supports them. Without OpenMP the build runs on one thread, and
    # -fopenmp-simd still enables the `omp simd` loops (their reductions vectorise only with it).
    # ADAPTIVE_FOCAL_CPU_CFLAGS adds flags to every attempt (e.g. -mno-avx512f to build the portable paths).
    user = os.environ.get("ADAPTIVE_FOCAL_CPU_CFLAGS", "").split()
    attempts = [_BASE_FLAGS + extra + user for extra in
                (["-march=native", "-fopenmp"], ["-fopenmp"], ["-march=native", "-fopenmp-simd"], ["-fopenmp-simd"],
                 ["-march=native"], [])]
    key_base = hashlib.sha256(src + platform.machine().encode() + platform.processor().encode() + cc.encode()
                              + _cpu_features())
    targets = []
    for flags in attempts:
        key = key_base.copy()
        key.update(" ".join(flags).encode())
        targets.append(_cache_dir() / f"sigmoid_focal_cpu-{key.hexdigest()[:16]}.so")
    for target in targets:
        if target.exists():
            return target
    if not compile:
        return None
    last_error = ""
    for flags, target in zip(attempts, targets):
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
        os.close(fd)
        proc = subprocess.run([cc, *flags, str(_SOURCE), "-o", tmp], capture_output=True, text=True)
        if proc.returncode == 0:
            os.replace(tmp, target)  # atomic: concurrent processes never load a half-written file
            return target
        os.unlink(tmp)
        last_error = proc.stderr.strip()
    raise RuntimeError(last_error or "the C compiler failed")


def _load(build: bool = True) -> ctypes.CDLL | None:
    """The kernel library, compiling it on first use; with ``build=False`` only if it is already in the cache."""
    global _lib, _load_failed, compile_seconds, _not_cached
    if _lib is not None or _load_failed or (not build and _not_cached):
        return _lib
    with _lock:
        if _lib is not None or _load_failed or (not build and _not_cached):
            return _lib
        if os.environ.get("ADAPTIVE_FOCAL_CPU_KERNEL", "1") == "0" or sys.platform == "win32":
            _load_failed = True
            return None
        cc = _compiler()
        if cc is None:
            _load_failed = True
            return None
        start = time.perf_counter()
        try:
            path = _build(cc, compile=build)
            if path is None:  # not built yet on this machine, and this caller may not pay for the build
                _not_cached = True
                return None
            lib = ctypes.CDLL(str(path))
        except (OSError, RuntimeError) as err:
            warnings.warn(
                f"adaptive_focal: could not build the CPU focal-loss kernel ({err}); "
                "using the pure-PyTorch implementation instead.",
                RuntimeWarning,
                stacklevel=3,
            )
            _load_failed = True
            return None
        lib.sigmoid_focal_cpu.argtypes = [
            ctypes.POINTER(_Args), ctypes.c_int64, ctypes.c_int32, ctypes.c_void_p, ctypes.c_int64,
        ]
        lib.sigmoid_focal_cpu.restype = ctypes.c_int
        lib.softmax_stats_cpu.argtypes = [
            ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_int32,
            ctypes.c_int64, ctypes.c_void_p, ctypes.c_int32, ctypes.c_void_p,
        ]
        lib.softmax_stats_cpu.restype = ctypes.c_int
        compile_seconds = time.perf_counter() - start
        _lib = lib
        return _lib


def available() -> bool:
    """Whether the compiled CPU kernel can be used (compiles it on the first call)."""
    return _load() is not None


def ready() -> bool:
    """Whether the compiled library is loaded or in the cache (loads it then, never compiles): for the paths that
    small inputs take, which must not pay for a build."""
    return _load(build=False) is not None


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def sigmoid_focal_forward(
    x: torch.Tensor,
    t: torch.Tensor,
    gamma: torch.Tensor,
    gamma_kind: int,
    table_edges: torch.Tensor | None,
    alpha: torch.Tensor | None,
    weight: torch.Tensor | None,
    ignore_index: float | None,
    label_smoothing: float,
    detach_modulator: bool,
    stat_edges: torch.Tensor,
    need_elementwise: bool,
    need_stats: bool,
    need_conf: bool,
    gamma_negative: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The kernel contract of :mod:`adaptive_focal._kernels` on CPU float32 tensors of shape (N, C, S).

    ``gamma_negative``: whether some gamma is negative, when the caller knows it (else it is read from ``gamma``).
    """
    lib = _load()
    if lib is None:  # pragma: no cover - callers check available() first
        raise RuntimeError("the CPU focal-loss kernel is not available")
    n, c, s = x.shape
    grad = torch.empty_like(x)
    elem = torch.empty_like(x) if need_elementwise else x.new_empty(0)
    bins = stat_edges.numel() - 1
    if gamma_negative is None:
        gamma_negative = bool((gamma < 0).any())
    units = n if s == 1 else n * c
    # at most one range per thread, per unit, and per 16k elements (below that a range does not pay its dispatch)
    threads = max(1, min(torch.get_num_threads(), units, (n * c * s) >> 14))
    # one row per thread (zeroed by the kernel), summed after; a single thread writes the returned vector itself
    size = acc_len(c, bins, need_conf)
    acc = torch.empty(size if threads == 1 else (threads, size), dtype=torch.float64)
    args = _make_args(x, t, grad, elem if need_elementwise else None, gamma, gamma_kind, table_edges, alpha, weight,
                      ignore_index, label_smoothing, detach_modulator, stat_edges, need_stats, need_conf,
                      gamma_negative)
    _check(lib.sigmoid_focal_cpu(ctypes.byref(args), units, threads, acc.data_ptr(), size), c, bins)
    return elem, grad, acc if threads == 1 else acc.sum(0)


def _check(rc: int, c: int, bins: int) -> None:
    """Raises for a failed kernel call: it could not allocate its confidence cells (one set per thread)."""
    if rc != 0:
        raise MemoryError(f"the CPU focal-loss kernel could not allocate its statistics' confidence cells for {c} "
                          f"classes and {bins} bins")


def _make_args(x, t, grad, elem, gamma, gamma_kind, table_edges, alpha, weight, ignore_index, label_smoothing,
               detach_modulator, stat_edges, need_stats, need_conf, gamma_negative) -> _Args:
    n, c, s = x.shape
    return _Args(
        n=n, c=c, s=s,
        x=x.data_ptr(), t=t.data_ptr(), grad=grad.data_ptr(), elem=_ptr(elem),
        gamma_kind=gamma_kind,
        table_bins=0 if table_edges is None else table_edges.numel() - 1, gamma_negative=gamma_negative,
        gamma=gamma.data_ptr(), table_edges=_ptr(table_edges),
        alpha=_ptr(alpha), weight=_ptr(weight),
        has_ignore=ignore_index is not None,
        ignore_value=0.0 if ignore_index is None else float(ignore_index),
        smoothing=float(label_smoothing), detach=bool(detach_modulator),
        need_stats=bool(need_stats), need_conf=bool(need_stats and need_conf), stat_bins=stat_edges.numel() - 1,
        stat_edges=stat_edges.data_ptr(),
    )


#: per thread: the gradient and accumulator buffers of sigmoid_focal_stats, reused from call to call
_scratch = threading.local()


def sigmoid_focal_stats(
    x: torch.Tensor,
    t: torch.Tensor,
    gamma: torch.Tensor,
    gamma_kind: int,
    table_edges: torch.Tensor | None,
    alpha: torch.Tensor | None,
    weight: torch.Tensor | None,
    ignore_index: float | None,
    label_smoothing: float,
    detach_modulator: bool,
    stat_edges: torch.Tensor,
    gamma_negative: bool,
    need_conf: bool,
) -> torch.Tensor:
    """The statistics alone of a small input (below ``SCRATCH_NUMEL`` elements, one thread): the float64
    accumulator of the kernel contract, in this thread's scratch buffers (the gradient the kernel writes on the way
    is scratch too; ``need_conf``: with the confidence bins). The result is overwritten by the thread's next call,
    so callers convert it at once, as ``from_sigmoid_acc`` does; no tensor is allocated per call, which is what a
    training step's statistics pass would otherwise spend most of its time on."""
    lib = _load()
    if lib is None:  # pragma: no cover - callers check ready() first
        raise RuntimeError("the CPU focal-loss kernel is not available")
    n, c, s = x.shape
    numel = n * c * s
    if numel >= SCRATCH_NUMEL:
        raise ValueError(f"sigmoid_focal_stats is for inputs under {SCRATCH_NUMEL} elements, got {numel}")
    bins = stat_edges.numel() - 1
    size = acc_len(c, bins, need_conf)
    grad = getattr(_scratch, "grad", None)
    if grad is None or grad.numel() < numel:
        grad = _scratch.grad = torch.empty(max(numel, 1024))
    accs = getattr(_scratch, "accs", None)
    if accs is None:
        accs = _scratch.accs = {}
    acc = accs.get(size)
    if acc is None:
        acc = accs[size] = torch.empty(size, dtype=torch.float64)
    args = _make_args(x, t, grad, None, gamma, gamma_kind, table_edges, alpha, weight, ignore_index,
                      label_smoothing, detach_modulator, stat_edges, True, need_conf, gamma_negative)
    _check(lib.sigmoid_focal_cpu(ctypes.byref(args), n if s == 1 else n * c, 1, acc.data_ptr(), size), c, bins)
    return acc


#: sigmoid_focal_stats serves inputs below this many elements, which sigmoid_focal_forward runs on one thread
SCRATCH_NUMEL = 1 << 15


def softmax_stats(logp: torch.Tensor, target: torch.Tensor, ignore_index: int | None,
                  edges: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax statistics of index targets in one pass (``softmax_stats_cpu`` in the C source documents the
    layout): returns ``(counts, sums)``, int64 and float32, each one buffer that the BatchStats fields view.

    ``logp``: float32 (N, C, S) contiguous; ``target``: int64 (N, S) contiguous; ``edges``: float32 (B + 1,).
    """
    lib = _load()
    if lib is None:  # pragma: no cover - callers check available() first
        raise RuntimeError("the CPU kernel is not available")
    n, c, s = logp.shape
    bins = edges.numel() - 1
    inner = edges[1:-1].contiguous()
    n_counts = 2 + 2 * bins + c + c * bins
    out = torch.zeros(n_counts + 2 + c + 2 * bins + 2 * c * bins, dtype=torch.float64)
    rc = lib.softmax_stats_cpu(logp.data_ptr(), target.data_ptr(), n, c, s, ignore_index is not None,
                               0 if ignore_index is None else int(ignore_index), inner.data_ptr(), bins,
                               out.data_ptr())
    if rc != 0:
        raise ValueError(f"target class indices must be in [0, {c})")
    return out[:n_counts].to(torch.int64), out[n_counts:].to(torch.float32)
