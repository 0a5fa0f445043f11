"""Small, offline, long-tailed datasets for experiments.

Nothing here touches the network: every dataset is either generated locally, built from data that
ships with an installed package, or read from a folder the user already has (CIFAR).

Two layers:

* :func:`long_tailed_digits` / :class:`Split` — the original train/test digits split used by
  ``research/train_digits.py`` (``make run``). Unchanged.
* :func:`load_dataset` / :func:`list_datasets` — a registry of datasets with a train, a
  validation and a test split, returned as a :class:`Dataset`:

  ================  ==================  ================================================  ==========
  name              task                source                                            build time
  ================  ==================  ================================================  ==========
  ``digits-lt``     multiclass          scikit-learn's bundled 8x8 digits                 ~0.05 s *
  ``mnist1d-lt``    multiclass          ``mnist1d``'s generator, run locally              ~5 s, then
                                                                                          cached
  ``gauss-lt``      multiclass          Gaussian classes, controllable overlap / noise    ~0.01 s
  ``dense-det``     multilabel-dense    RetinaNet-like anchors, ~1:1000 fg:bg             ~0.8 s
  ``seg-toy``       segmentation        small shapes on noisy images                      ~0.05 s
  ``cifar10-lt``    multiclass          a local CIFAR-10 folder (python pickles)          ~1.5 s
  ``cifar100-lt``   multiclass          a local CIFAR-100 folder (python pickles)         ~1.5 s
  ================  ==================  ================================================  ==========

  (Times with the default arguments on one core of a shared 2-core machine; * plus ~1 s for
  the first import of scikit-learn.)

Common conventions of the registry datasets:

* The training set is long-tailed: class ``i`` (foreground class ``i`` for ``dense-det`` and
  ``seg-toy``) gets ``n_i = n_max * imbalance_ratio ** (-i / (C - 1))`` samples (rounded, at
  least 1; see :func:`long_tail_counts`), so class 0 is the head and class ``C - 1`` the tail.
* Validation and test are class-balanced: ``n_val_per_class`` / ``n_test_per_class`` samples
  (positive anchors for ``dense-det``, objects for ``seg-toy``) of every class.
* ``seed`` fixes everything: the same arguments give the same tensors; another seed gives
  another draw. Validation and test sets do not depend on ``imbalance_ratio`` or ``n_max``
  (for ``mnist1d-lt``, on ``imbalance_ratio``; its pool size follows ``n_max``), so runs at
  different ratios are scored on the same data. Only numpy Generators seeded from ``seed``
  are used; no global RNG is read or changed (``mnist1d``'s generator seeds the global RNGs
  itself; their state is restored).
* Unknown names and unknown or bad arguments raise ``ValueError`` saying what is allowed.

Example:
    >>> ds = load_dataset("gauss-lt", num_classes=3, n_max=100, imbalance_ratio=10, seed=0)
    >>> ds.task, ds.num_classes, ds.input_shape, ds.class_counts
    ('multiclass', 3, (3,), (100, 32, 10))
    >>> torch.bincount(ds.y_test).tolist()
    [200, 200, 200]
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import numbers
import os
import pickle
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

__all__ = [
    "Split",
    "long_tailed_digits",
    "long_tail_counts",
    "Dataset",
    "TASKS",
    "load_dataset",
    "list_datasets",
    "digits_lt",
    "mnist1d_lt",
    "gauss_lt",
    "dense_det",
    "seg_toy",
    "cifar10_lt",
    "cifar100_lt",
]


class Split(NamedTuple):
    """Train and test tensors: float32 features ``(n, d)`` and int64 labels ``(n,)``."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def long_tail_counts(n_max: int, num_classes: int, imbalance_ratio: float) -> list[int]:
    """Exponentially decaying class sizes: ``n_c = n_max * imbalance_ratio ** (-c / (C - 1))``.

    Class 0 keeps ``n_max`` samples, the last class ``n_max / imbalance_ratio`` (rounded with
    Python's ``round``, at least 1).

    Example:
        >>> long_tail_counts(100, 3, 100.0)
        [100, 10, 1]
    """
    if num_classes == 1:
        return [n_max]
    return [
        max(1, round(n_max * imbalance_ratio ** (-c / (num_classes - 1))))
        for c in range(num_classes)
    ]


def long_tailed_digits(imbalance_ratio: float = 50, seed: int = 0, test_size: float = 0.3) -> Split:
    """scikit-learn's 8x8 digits (bundled, 1797 images, 10 classes) made long-tailed.

    The data is first split into train and test, stratified by class, so the test set stays
    close to balanced. The training set is then subsampled per class following
    :func:`long_tail_counts`: class 0 keeps all its training samples, class 9 keeps
    ``1 / imbalance_ratio`` of that. Features are standardised with the statistics of the
    (subsampled) training set; constant pixels get unit scale.

    This is the two-way split of ``research/train_digits.py``; ``load_dataset("digits-lt")``
    is the three-way (train / validation / balanced test) version.

    Args:
        imbalance_ratio: size of the largest over the smallest training class; ``>= 1``
            (1 keeps the training set as it is).
        seed: seed for the split and the subsampling; the same seed gives the same data.
        test_size: fraction of each class held out for testing, in ``(0, 1)``.

    Returns:
        A :class:`Split` of float32 features (64 columns) and int64 labels.

    Example:
        >>> data = long_tailed_digits(imbalance_ratio=10, seed=0)
        >>> torch.bincount(data.y_train)[[0, 9]].tolist()
        [124, 12]
    """
    if isinstance(imbalance_ratio, bool) or not isinstance(imbalance_ratio, numbers.Real):
        raise ValueError(f"imbalance_ratio must be a real number >= 1, got {imbalance_ratio!r}")
    if not math.isfinite(imbalance_ratio) or imbalance_ratio < 1:
        raise ValueError(f"imbalance_ratio must be a finite number >= 1, got {imbalance_ratio!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if (
        isinstance(test_size, bool)
        or not isinstance(test_size, numbers.Real)
        or not 0.0 < test_size < 1.0
    ):
        raise ValueError(f"test_size must be a fraction in (0, 1), got {test_size!r}")

    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "long_tailed_digits needs scikit-learn: pip install 'adaptive_focal[research]'"
        ) from err

    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_size, stratify=y, random_state=seed
    )

    # Subsample the training set per class, largest class first.
    rng = np.random.default_rng(seed)
    num_classes = int(y.max()) + 1
    available = np.bincount(y_train, minlength=num_classes)
    targets = long_tail_counts(int(available[0]), num_classes, float(imbalance_ratio))
    keep = []
    for c in range(num_classes):
        idx = np.flatnonzero(y_train == c)
        n_keep = min(targets[c], idx.size)
        keep.append(rng.choice(idx, size=n_keep, replace=False))
    keep = np.sort(np.concatenate(keep))
    x_train, y_train = x_train[keep], y_train[keep]

    # Standardise with training statistics only.
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    std[std == 0] = 1.0
    x_train = (x_train - mean) / std
    x_test = (x_test - mean) / std

    def as_tensors(features: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return (
            torch.as_tensor(features, dtype=torch.float32),
            torch.as_tensor(labels, dtype=torch.int64),
        )

    return Split(*as_tensors(x_train, y_train), *as_tensors(x_test, y_test))


# ============================================================================= Dataset

TASKS = ("multiclass", "multilabel-dense", "segmentation")
"""Tasks a :class:`Dataset` can have; see :class:`Dataset` for the tensor layout of each."""


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """A train / validation / test dataset, as torch tensors.

    Tensor layout by ``task``:

    * ``"multiclass"``: ``x`` float32 ``(n, *input_shape)``, ``y`` int64 class indices ``(n,)``.
    * ``"multilabel-dense"`` (sigmoid, one output per class): ``x`` float32 ``(n_anchors,
      *input_shape)``, ``y`` float32 0/1 ``(n_anchors, num_classes)``; a row of zeros is
      background. Rows are grouped by image: image ``k`` is rows
      ``[k * A, (k + 1) * A)`` with ``A = info["anchors_per_image"]``.
    * ``"segmentation"``: ``x`` float32 ``(n, channels, H, W)``, ``y`` int64 ``(n, H, W)`` with
      values in ``[0, num_classes)``; 0 is background and counts as a class.

    Attributes:
        name: registry name, e.g. ``"gauss-lt"``.
        task: one of :data:`TASKS`.
        num_classes: number of model outputs per sample (per anchor, per pixel).
        x_train, y_train, x_val, y_val, x_test, y_test: the splits.
        class_counts: per-class counts of the training targets, length ``num_classes``:
            samples per class (multiclass; the observed, possibly noisy, labels), positive
            anchors per class (multilabel-dense), pixels per class including background
            (segmentation).
        input_shape: shape of one model input without the batch dimension.
        config: the resolved arguments the dataset was built with (defaults filled in).
        info: extras that depend on the dataset (``class_names``, ``anchors_per_image``,
            ``instance_counts``, ``y_train_clean``, normalisation statistics, ...).

    Example:
        >>> ds = load_dataset("gauss-lt", num_classes=4, n_max=50, n_val_per_class=5,
        ...                   n_test_per_class=10)
        >>> x, y = ds.train
        >>> x.shape, y.dtype, ds.target_shape
        (torch.Size([64, 4]), torch.int64, ())
        >>> ds
        Dataset('gauss-lt', task='multiclass', num_classes=4, input_shape=(4,), train=64, val=20, test=40)
    """

    name: str
    task: str
    num_classes: int
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    class_counts: tuple[int, ...]
    input_shape: tuple[int, ...]
    config: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if len(self.class_counts) != self.num_classes:
            raise ValueError(
                f"class_counts has {len(self.class_counts)} entries for {self.num_classes} classes"
            )
        for split in ("train", "val", "test"):
            x, y = self.split(split)
            if x.shape[0] != y.shape[0]:
                raise ValueError(f"{split}: {x.shape[0]} inputs but {y.shape[0]} targets")
            if tuple(x.shape[1:]) != tuple(self.input_shape):
                raise ValueError(f"{split}: input shape {tuple(x.shape[1:])} != {self.input_shape}")

    def split(self, which: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)`` of ``"train"``, ``"val"`` or ``"test"``."""
        if which not in ("train", "val", "test"):
            raise ValueError(f"split must be 'train', 'val' or 'test', got {which!r}")
        return getattr(self, f"x_{which}"), getattr(self, f"y_{which}")

    @property
    def train(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x_train, y_train)``."""
        return self.x_train, self.y_train

    @property
    def val(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x_val, y_val)``."""
        return self.x_val, self.y_val

    @property
    def test(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x_test, y_test)``."""
        return self.x_test, self.y_test

    @property
    def target_shape(self) -> tuple[int, ...]:
        """Shape of one target without the batch dimension: ``()``, ``(C,)`` or ``(H, W)``."""
        return tuple(self.y_train.shape[1:])

    def hold_out(self, fraction: float, seed: int) -> tuple[Dataset, tuple[torch.Tensor, torch.Tensor]]:
        """The data set without a held-out slice of its training set, and that slice ``(x, y)``.

        The slice has the training set's distribution (long-tailed, noisy labels included):

        * ``multiclass``: stratified by class, ``round(fraction * n_c)`` samples of class c, at least one of
          every class with two or more samples and never the last one (a class with a single sample stays in
          training);
        * ``multilabel-dense`` and ``segmentation``: whole images (all ``anchors_per_image`` rows of a
          dense-det image), ``round(fraction * images)`` of them, at least one and never all.

        The returned data set's ``class_counts`` count what is left for training; its validation and test
        sets are the same tensors. Per-sample ``info`` entries (gauss-lt's ``y_train_clean`` and ``noisy``)
        follow the remaining rows and the training counts in ``info`` are recounted (``num_images``,
        ``num_background``, ``clean_class_counts``); seg-toy's ``instance_counts`` cannot be recounted from
        the masks and is left out. ``info["held_out"]`` holds ``fraction``, ``seed`` and ``rows``, the held-out
        rows' indices in the original training set. Features stay standardised with the statistics of the
        whole training set (inputs only; no label is read). The slice is in random order (classes
        interleaved); ``seed`` draws it (a numpy Generator, no global state).

        Example:
            >>> ds = load_dataset("gauss-lt", num_classes=3, n_max=100, imbalance_ratio=10)
            >>> rest, (x, y) = ds.hold_out(0.1, seed=0)
            >>> ds.class_counts, rest.class_counts, torch.bincount(y).tolist()
            ((100, 32, 10), (90, 29, 9), [10, 3, 1])
            >>> len(rest.y_val) == len(ds.y_val)
            True
        """
        fraction = _check_real("fraction", fraction, 0.0, 1.0, lo_open=True, hi_open=True)
        seed = _check_int("seed", seed, 0)
        rng = _rng(seed, _HOLD_OUT)
        n = len(self.y_train)
        if self.task == "multiclass":
            y = self.y_train.numpy()
            parts = []
            for c in range(self.num_classes):
                idx = np.flatnonzero(y == c)
                k = min(max(math.floor(fraction * idx.size + 0.5), 1), idx.size - 1) if idx.size >= 2 else 0
                parts.append(rng.permutation(idx)[:k])
            held = rng.permutation(np.concatenate(parts)).astype(np.int64)
        else:
            rows = int(self.info.get("anchors_per_image", 1)) if self.task == "multilabel-dense" else 1
            images = n // rows
            if images < 2:
                raise ValueError(f"hold_out: {self.name!r} has {images} training image(s); holding one out "
                                 "needs at least 2")
            k = min(max(math.floor(fraction * images + 0.5), 1), images - 1)
            picked = rng.permutation(images)[:k]
            held = (picked[:, None] * rows + np.arange(rows)).reshape(-1).astype(np.int64)
        keep = np.setdiff1d(np.arange(n), held)  # sorted: the remaining rows keep their order
        held_t, keep_t = torch.from_numpy(held), torch.from_numpy(keep)
        y_rest = self.y_train[keep_t]
        info = {k: v for k, v in self.info.items() if k != "instance_counts"}
        for key in ("y_train_clean", "noisy"):
            if key in info:
                info[key] = info[key][keep_t]
        if "clean_class_counts" in info and "y_train_clean" in info:
            info["clean_class_counts"] = _counts(info["y_train_clean"].numpy(), self.num_classes)
        if "num_images" in info:
            info["num_images"] = {**info["num_images"], "train": len(keep) // rows}
        if "num_background" in info:
            info["num_background"] = int((y_rest.sum(1) == 0).sum())
        info["held_out"] = {"fraction": fraction, "seed": seed, "rows": held_t}
        rest = dataclasses.replace(self, x_train=self.x_train[keep_t], y_train=y_rest,
                                   class_counts=_training_counts(self.task, y_rest, self.num_classes), info=info)
        return rest, (self.x_train[held_t], self.y_train[held_t])

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, task={self.task!r}, num_classes={self.num_classes}, "
            f"input_shape={self.input_shape}, train={len(self.y_train)}, val={len(self.y_val)}, "
            f"test={len(self.y_test)})"
        )


# ============================================================================= registry

_REGISTRY: dict[str, Callable[..., Dataset]] = {}


def _register(name: str) -> Callable[[Callable[..., Dataset]], Callable[..., Dataset]]:
    def wrap(fn: Callable[..., Dataset]) -> Callable[..., Dataset]:
        _REGISTRY[name] = fn
        return fn

    return wrap


def list_datasets() -> list[str]:
    """Names :func:`load_dataset` accepts, sorted.

    Example:
        >>> list_datasets()
        ['cifar10-lt', 'cifar100-lt', 'dense-det', 'digits-lt', 'gauss-lt', 'mnist1d-lt', 'seg-toy']
    """
    return sorted(_REGISTRY)


def load_dataset(name: str, **kwargs) -> Dataset:
    """Build the dataset registered as ``name`` with keyword arguments ``kwargs``.

    The arguments of each dataset are those of its builder function: :func:`digits_lt`,
    :func:`mnist1d_lt`, :func:`gauss_lt`, :func:`dense_det`, :func:`seg_toy`,
    :func:`cifar10_lt`, :func:`cifar100_lt`.

    Raises:
        ValueError: unknown ``name``, an argument the dataset does not take, or a bad value;
            the message lists what is allowed and what was received.
        FileNotFoundError: the CIFAR datasets, when their folder is missing.

    Example:
        >>> load_dataset("gauss-lt", n_max=10).class_counts[:3]
        (10, 6, 4)
        >>> load_dataset("gauss", n_max=10)  # doctest: +NORMALIZE_WHITESPACE
        Traceback (most recent call last):
        ...
        ValueError: unknown dataset 'gauss'; available: cifar10-lt, cifar100-lt, dense-det, digits-lt, gauss-lt,
        mnist1d-lt, seg-toy
    """
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"unknown dataset {name!r}; available: {', '.join(list_datasets())}")
    fn = _REGISTRY[name]
    allowed = list(inspect.signature(fn).parameters)
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ValueError(
            f"dataset {name!r} got unknown argument(s) {unknown}; allowed: {', '.join(allowed)}"
        )
    return fn(**kwargs)


# ============================================================================= checks


def _check_int(name: str, value, minimum: int = 0, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(f"{name} must be an integer {bound}, got {value!r}")
    return int(value)


def _check_real(
    name: str, value, lo: float = -math.inf, hi: float = math.inf, lo_open: bool = False,
    hi_open: bool = False,
) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite real number, got {value!r}")
    if value < lo or value > hi or (lo_open and value == lo) or (hi_open and value == hi):
        interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
        raise ValueError(f"{name} must be in {interval}, got {value!r}")
    return float(value)


def _check_common(imbalance_ratio, seed, n_val_per_class, n_test_per_class,
                  test_may_be_none: bool = False) -> tuple:
    if n_test_per_class is None and test_may_be_none:
        n_test = None
    else:
        n_test = _check_int("n_test_per_class", n_test_per_class, 1)
    return (
        _check_real("imbalance_ratio", imbalance_ratio, 1.0),
        _check_int("seed", seed, 0),
        _check_int("n_val_per_class", n_val_per_class, 0),
        n_test,
    )


def _rng(seed: int, stream: int) -> np.random.Generator:
    """An independent numpy Generator per (seed, purpose): streams never share draws."""
    return np.random.default_rng([seed, stream])


# streams of _rng; the samples of split i (0 train, 1 val, 2 test) use stream _SAMPLES + i, so
# validation and test sets do not change with imbalance_ratio or n_max; Dataset.hold_out draws from _HOLD_OUT
_SPLIT, _DATA, _NOISE, _HOLD_OUT, _SAMPLES = 1, 2, 3, 4, 10


def _take_per_class(
    y: np.ndarray, sizes: Sequence[Sequence[int]], rng: np.random.Generator, what: str
) -> list[np.ndarray]:
    """Disjoint index sets, one per entry of ``sizes``: ``sizes[s][c]`` random indices of class c.

    Each class's indices are shuffled once and cut in order, so the sets never overlap. Every
    returned set is in random order (classes interleaved).
    """
    num_classes = len(sizes[0])
    parts: list[list[np.ndarray]] = [[] for _ in sizes]
    for c in range(num_classes):
        idx = rng.permutation(np.flatnonzero(y == c))
        need = sum(s[c] for s in sizes)
        if need > idx.size:
            raise ValueError(
                f"{what}: class {c} has {idx.size} samples but {need} are needed "
                f"({' + '.join(str(s[c]) for s in sizes)}); lower n_max, n_val_per_class or "
                "n_test_per_class"
            )
        start = 0
        for s, size in enumerate(sizes):
            parts[s].append(idx[start : start + size[c]])
            start += size[c]
    return [rng.permutation(np.concatenate(p)).astype(np.int64) for p in parts]


def _counts(y: np.ndarray, num_classes: int) -> tuple[int, ...]:
    return tuple(int(v) for v in np.bincount(y, minlength=num_classes))


def _training_counts(task: str, y: torch.Tensor, num_classes: int) -> tuple[int, ...]:
    """``Dataset.class_counts`` of training targets ``y``: samples (multiclass), positive anchors
    (multilabel-dense) or pixels (segmentation) per class."""
    if task == "multilabel-dense":
        return tuple(int(v) for v in (y >= 0.5).sum(0).tolist())
    return _counts(y.reshape(-1).numpy(), num_classes)


def _multiclass(
    name: str, splits: Sequence[tuple[np.ndarray, np.ndarray]], num_classes: int, config: dict,
    info: dict,
) -> Dataset:
    """A multiclass Dataset from ``[(x_train, y_train), (x_val, y_val), (x_test, y_test)]``."""
    tensors = []
    for x, y in splits:
        tensors.append(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
        tensors.append(torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64)))
    return Dataset(
        name, "multiclass", num_classes, *tensors,
        class_counts=_counts(splits[0][1], num_classes),
        input_shape=tuple(splits[0][0].shape[1:]),
        config=config,
        info=info,
    )


def _standardize(
    splits: list[np.ndarray], train: np.ndarray, axis
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Scale every split with the training mean / std over ``axis`` (constant features: std 1)."""
    # float64 moments, accumulated over chunks of samples (axis includes 0) to bound memory
    total = np.zeros_like(train[:1].sum(axis=axis, keepdims=True, dtype=np.float64))
    squares = np.zeros_like(total)
    for start in range(0, len(train), 2048):
        chunk = train[start : start + 2048].astype(np.float64)
        total += chunk.sum(axis=axis, keepdims=True)
        squares += np.square(chunk).sum(axis=axis, keepdims=True)
    n = train.size / total.size
    mean = total / n
    std = np.sqrt(np.maximum(squares / n - mean**2, 0.0))
    std[std < 1e-8 * np.maximum(1.0, np.abs(mean))] = 1.0
    mean32, inv32 = mean.astype(np.float32), (1.0 / std).astype(np.float32)
    out = []
    for s in splits:
        s = s.astype(np.float32)  # a copy, scaled in place
        s -= mean32
        s *= inv32
        out.append(s)
    return out, mean, std


# ============================================================================= digits-lt


@_register("digits-lt")
def digits_lt(
    imbalance_ratio: float = 50.0,
    seed: int = 0,
    n_max: int | None = None,
    n_val_per_class: int = 20,
    n_test_per_class: int = 50,
) -> Dataset:
    """scikit-learn's bundled 8x8 digits (1797 images, 10 classes, 174-183 per class).

    Per class, ``n_test_per_class`` and ``n_val_per_class`` images are drawn for the (exactly
    balanced) test and validation sets; the training set takes ``n_i`` of the remaining images
    following :func:`long_tail_counts`. Features (64 pixels) are standardised with the training
    statistics. Builds in ~0.05 s (importing scikit-learn first takes ~1 s).

    Args:
        imbalance_ratio: ``n_0 / n_9``, ``>= 1``. The default 50 keeps 2 of class 9's images
            (counts 104, 67, 44, 28, 18, 12, 8, 5, 3, 2); 10 keeps 10 and 100 a single one.
        seed: seeds the split and the subsampling.
        n_max: training images of class 0; ``None``: as many as every class can supply after
            validation and test (104 with the defaults).
        n_val_per_class: validation images per class.
        n_test_per_class: test images per class.

    Example:
        >>> ds = digits_lt(imbalance_ratio=10)
        >>> ds.class_counts[0], ds.class_counts[-1], ds.input_shape
        (104, 10, (64,))
    """
    imbalance_ratio, seed, n_val, n_test = _check_common(
        imbalance_ratio, seed, n_val_per_class, n_test_per_class
    )
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    num_classes = 10
    room = int(np.bincount(y, minlength=num_classes).min()) - n_val - n_test
    n_max = room if n_max is None else _check_int("n_max", n_max, 1)
    if n_max < 1:
        raise ValueError(
            f"n_val_per_class + n_test_per_class = {n_val + n_test} leaves no training image in "
            f"the smallest digits class (174 images)"
        )
    counts = long_tail_counts(n_max, num_classes, imbalance_ratio)
    va, te, tr = _take_per_class(
        y, [[n_val] * num_classes, [n_test] * num_classes, counts], _rng(seed, _SPLIT), "digits-lt"
    )
    splits = [tr, va, te]
    xs, mean, std = _standardize([x[s] for s in splits], x[splits[0]], axis=0)
    config = dict(imbalance_ratio=imbalance_ratio, seed=seed, n_max=n_max,
                  n_val_per_class=n_val, n_test_per_class=n_test)
    info = {"mean": torch.from_numpy(mean[0]).float(), "std": torch.from_numpy(std[0]).float(),
            "class_names": [str(c) for c in range(num_classes)]}
    return _multiclass("digits-lt", [(xs[i], y[s]) for i, s in enumerate(splits)], num_classes,
                       config, info)


# ============================================================================= mnist1d-lt


@lru_cache(maxsize=4)
def _mnist1d_pool(per_class: int, generator_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``per_class`` MNIST-1D signals of each digit from ``mnist1d.data.make_dataset``.

    Cached per arguments (read-only arrays). ``make_dataset`` seeds Python's and numpy's
    global RNGs; their states are restored afterwards.
    """
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("mnist1d-lt needs the mnist1d package: pip install mnist1d") from err

    args = get_dataset_args()
    args.num_samples = 10 * per_class
    args.train_split = 1.0  # one pool; the split is ours
    args.seed = generator_seed
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        data = make_dataset(args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    x = np.asarray(data["x"], dtype=np.float32)
    y = np.asarray(data["y"], dtype=np.int64)
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y


@_register("mnist1d-lt")
def mnist1d_lt(
    imbalance_ratio: float = 100.0,
    seed: int = 0,
    n_max: int = 2000,
    n_val_per_class: int = 50,
    n_test_per_class: int = 200,
    generator_seed: int = 42,
) -> Dataset:
    """MNIST-1D (10 classes, 40-sample 1-D signals), generated locally and made long-tailed.

    A balanced pool of ``n_max + n_val_per_class + n_test_per_class`` signals per digit is
    generated with ``mnist1d.data.make_dataset`` (the package's default transformation
    arguments, ``seed=generator_seed``; never its download path). ``seed`` then draws the
    exactly balanced validation and test sets and the long-tailed training set from that pool,
    so different ``seed`` values give different draws from the same pool. Values are
    standardised by the generator over the whole pool (its own convention).

    Generation costs ~0.2 ms per signal on one core: ~5 s for the default pool of 22,500
    signals, ~0.5 s for a pool of 2,500. The pool is cached in memory per
    ``(pool size, generator_seed)``, so further seeds or imbalance ratios are fast.

    Args:
        imbalance_ratio: ``n_0 / n_9``, ``>= 1``. The defaults (``n_max=2000``, ratio 100)
            leave 20 training signals in class 9.
        seed: seeds the split and the subsampling.
        n_max: training signals of class 0.
        n_val_per_class: validation signals per class.
        n_test_per_class: test signals per class.
        generator_seed: seed of the MNIST-1D generator (its default is 42).

    Example:
        >>> ds = mnist1d_lt(n_max=20, n_val_per_class=2, n_test_per_class=3, imbalance_ratio=10)
        >>> ds.input_shape, ds.class_counts[0], ds.class_counts[-1], len(ds.y_test)
        ((40,), 20, 2, 30)
    """
    imbalance_ratio, seed, n_val, n_test = _check_common(
        imbalance_ratio, seed, n_val_per_class, n_test_per_class
    )
    n_max = _check_int("n_max", n_max, 1)
    generator_seed = _check_int("generator_seed", generator_seed, 0, 2**32 - 1)
    num_classes = 10
    x, y = _mnist1d_pool(n_max + n_val + n_test, generator_seed)
    counts = long_tail_counts(n_max, num_classes, imbalance_ratio)
    va, te, tr = _take_per_class(
        y, [[n_val] * num_classes, [n_test] * num_classes, counts], _rng(seed, _SPLIT), "mnist1d-lt"
    )
    splits = [tr, va, te]
    config = dict(imbalance_ratio=imbalance_ratio, seed=seed, n_max=n_max, n_val_per_class=n_val,
                  n_test_per_class=n_test, generator_seed=generator_seed)
    info = {"class_names": [str(c) for c in range(num_classes)], "pool_size": len(y)}
    return _multiclass("mnist1d-lt", [(x[s], y[s]) for s in splits], num_classes, config, info)


# ============================================================================= gauss-lt


@_register("gauss-lt")
def gauss_lt(
    imbalance_ratio: float = 100.0,
    seed: int = 0,
    num_classes: int = 10,
    dim: int | None = None,
    n_max: int = 500,
    n_val_per_class: int = 50,
    n_test_per_class: int = 200,
    separation: float = 3.0,
    noise: float = 1.0,
    label_noise: float = 0.0,
) -> Dataset:
    """Isotropic Gaussian classes with a controlled overlap, long tail and label noise.

    Class ``c`` is ``N(mu_c, noise**2 I)`` in ``dim`` dimensions. The means are orthogonal
    (a random rotation drawn from ``seed``) and every two of them are exactly ``separation``
    apart, so the overlap is set by ``separation / noise``: two classes alone are confused by
    the Bayes rule with probability ``Phi(-separation / (2 * noise))`` (0.067 for the
    defaults; a balanced 10-class test set then has a Bayes accuracy of ~0.71).

    Label noise: ``round(label_noise * n_train)`` training samples, drawn uniformly, get a label
    drawn uniformly from the *other* classes. Validation and test labels are clean;
    ``info["y_train_clean"]`` holds the clean training labels and ``info["noisy"]`` marks the
    flipped ones. ``class_counts`` counts the observed (noisy) labels; the clean counts follow
    :func:`long_tail_counts` exactly. Builds in ~0.01 s.

    Args:
        imbalance_ratio: ``n_0 / n_(C-1)``, ``>= 1``.
        seed: seeds the means, the samples and the label noise.
        num_classes: ``C >= 2``.
        dim: feature dimension, ``>= num_classes``; ``None``: ``num_classes``.
        n_max: training samples of class 0.
        n_val_per_class: validation samples per class.
        n_test_per_class: test samples per class.
        separation: distance between any two class means, ``> 0``.
        noise: standard deviation of each coordinate, ``> 0``.
        label_noise: fraction of training labels flipped, in ``[0, 1]``.

    Example:
        >>> ds = gauss_lt(num_classes=3, n_max=100, label_noise=0.2)
        >>> int(ds.info["noisy"].sum()), len(ds.y_train)  # round(0.2 * 111) flipped
        (22, 111)
        >>> bool((ds.y_train != ds.info["y_train_clean"]).eq(ds.info["noisy"]).all())
        True
    """
    imbalance_ratio, seed, n_val, n_test = _check_common(
        imbalance_ratio, seed, n_val_per_class, n_test_per_class
    )
    num_classes = _check_int("num_classes", num_classes, 2)
    dim = num_classes if dim is None else _check_int("dim", dim, num_classes)
    n_max = _check_int("n_max", n_max, 1)
    separation = _check_real("separation", separation, 0.0, lo_open=True)
    noise = _check_real("noise", noise, 0.0, lo_open=True)
    label_noise = _check_real("label_noise", label_noise, 0.0, 1.0)

    rng = _rng(seed, _DATA)
    q, _ = np.linalg.qr(rng.standard_normal((dim, num_classes)))
    means = (separation / math.sqrt(2.0)) * q.T  # (C, dim), orthonormal rows scaled

    counts = long_tail_counts(n_max, num_classes, imbalance_ratio)
    ys = [np.repeat(np.arange(num_classes), n) for n in (counts, [n_val] * num_classes,
                                                          [n_test] * num_classes)]
    xs = []
    for i, y in enumerate(ys):
        split_rng = _rng(seed, _SAMPLES + i)
        ys[i] = y[split_rng.permutation(len(y))]
        xs.append(means[ys[i]] + noise * split_rng.standard_normal((len(y), dim)))

    y_clean = ys[0]
    y_train = y_clean.copy()
    noise_rng = _rng(seed, _NOISE)
    n_flip = round(label_noise * len(y_train))
    flip = noise_rng.choice(len(y_train), size=n_flip, replace=False)
    y_train[flip] = (y_train[flip] + noise_rng.integers(1, num_classes, size=n_flip)) % num_classes
    noisy = np.zeros(len(y_train), dtype=bool)
    noisy[flip] = True

    config = dict(imbalance_ratio=imbalance_ratio, seed=seed, num_classes=num_classes, dim=dim,
                  n_max=n_max, n_val_per_class=n_val, n_test_per_class=n_test,
                  separation=separation, noise=noise, label_noise=label_noise)
    info = {
        "means": torch.from_numpy(means).float(),
        "y_train_clean": torch.from_numpy(y_clean.astype(np.int64)),
        "noisy": torch.from_numpy(noisy),
        "clean_class_counts": tuple(counts),
    }
    splits = [(xs[0], y_train), (xs[1], ys[1]), (xs[2], ys[2])]
    return _multiclass("gauss-lt", splits, num_classes, config, info)


# ============================================================================= dense-det


def _anchor_split(
    fg_counts: Sequence[int], means: np.ndarray, rng: np.random.Generator, *,
    background_ratio: float, anchors_per_image: int, noise: float,
    hard_negative_fraction: float, context_std: float,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Anchor features ``(n_images * A, F)``, 0/1 targets ``(n_images * A, C)``, n_images."""
    num_classes, feature_dim = means.shape
    n_fg = int(sum(fg_counts))
    n_images = max(1, math.ceil(n_fg / anchors_per_image),
                   round(n_fg * (1.0 + background_ratio) / anchors_per_image))
    total = n_images * anchors_per_image
    n_bg = total - n_fg

    fg_class = np.repeat(np.arange(num_classes), fg_counts)
    # Background anchors: hard ones straddle an object (low overlap, pointing at a class),
    # easy ones are clutter (no class direction at all).
    n_hard = round(hard_negative_fraction * n_bg)
    bg_class = rng.integers(0, num_classes, size=n_bg)
    quality = np.concatenate([
        rng.uniform(0.5, 1.0, size=n_fg),  # positives: overlap 0.5 .. 1
        rng.uniform(0.0, 0.5, size=n_hard),  # hard negatives: overlap 0 .. 0.5
        np.zeros(n_bg - n_hard),  # easy negatives
    ])
    direction = np.concatenate([fg_class, bg_class])
    positive = np.arange(total) < n_fg

    # Scatter the anchors over the images; rows are image-major.
    order = rng.permutation(total)
    quality, direction, positive = quality[order], direction[order], positive[order]

    x = rng.standard_normal((total, feature_dim), dtype=np.float32) * np.float32(noise)
    x += (quality[:, None] * means[direction]).astype(np.float32)
    context = rng.standard_normal((n_images, feature_dim), dtype=np.float32)
    context *= np.float32(context_std)
    x += np.repeat(context, anchors_per_image, axis=0)

    y = np.zeros((total, num_classes), dtype=np.float32)
    rows = np.flatnonzero(positive)
    y[rows, direction[rows]] = 1.0
    return x, y, n_images


@_register("dense-det")
def dense_det(
    imbalance_ratio: float = 10.0,
    seed: int = 0,
    num_classes: int = 10,
    n_max: int = 100,
    n_val_per_class: int = 20,
    n_test_per_class: int = 50,
    background_ratio: float = 1000.0,
    anchors_per_image: int = 1000,
    feature_dim: int = 16,
    separation: float = 7.0,
    noise: float = 1.0,
    hard_negative_fraction: float = 0.05,
    context_std: float = 0.3,
) -> Dataset:
    """A dense-detection classification task shaped like RetinaNet's classification head.

    Every "image" has ``anchors_per_image`` anchors, each a ``feature_dim`` feature vector; the
    targets are sigmoid multi-label ``(n_anchors, num_classes)`` 0/1 rows, all zero for
    background, one-hot for a positive anchor. Training positives per class follow
    :func:`long_tail_counts` (``n_max`` for class 0); validation and test have
    ``n_val_per_class`` / ``n_test_per_class`` positives of every class. Each split has about
    ``background_ratio`` background anchors per positive: the number of images is
    ``round(n_pos * (1 + background_ratio) / anchors_per_image)`` (at least enough to hold the
    positives) and the rest of their anchors are background, so the ratio is exact up to
    half an image.

    Features: class ``c`` has a prototype ``mu_c`` (random direction, norm ``separation``). A
    positive anchor is ``q * mu_c + noise * eps`` with overlap quality ``q ~ U(0.5, 1)``; a
    fraction ``hard_negative_fraction`` of the background anchors are near misses
    ``q * mu_c'`` with ``q ~ U(0, 0.5)`` for a random class ``c'``; the other background anchors
    are pure noise. Every image adds its own offset ``N(0, context_std**2 I)`` to all its
    anchors. Positives and near misses meet at ``q = 0.5``, and with 1000 negatives per positive
    the noise tail of easy negatives matters too, so the task is learnable but not trivial:
    with the defaults, scoring test anchors by their projection on the true prototypes (an
    oracle) gives a mean per-class AP of ~0.55, and a :class:`research.models.DenseHead`
    trained for 6 epochs with a sigmoid focal loss ~0.4-0.5, less on the tail classes.

    Builds in ~0.8 s with the defaults (~1.1 M anchors over the three splits, ~115 MB).

    Args:
        imbalance_ratio: ``n_0 / n_(C-1)`` for the training positives, ``>= 1``.
        seed: seeds prototypes, anchors and layout.
        num_classes: foreground classes ``C >= 2`` (no background column, as in RetinaNet).
        n_max: training positives of class 0.
        n_val_per_class: validation positives per class.
        n_test_per_class: test positives per class.
        background_ratio: background anchors per positive anchor, ``>= 0``.
        anchors_per_image: anchors in every image, ``>= 1``.
        feature_dim: features per anchor, ``>= 2``.
        separation: norm of every class prototype, ``> 0``.
        noise: standard deviation of the per-anchor feature noise, ``> 0``.
        hard_negative_fraction: fraction of background anchors that are near misses, in [0, 1].
        context_std: standard deviation of the per-image feature offset, ``>= 0``.

    Example:
        >>> ds = dense_det(num_classes=3, n_max=20, n_val_per_class=2, n_test_per_class=4,
        ...                background_ratio=100, anchors_per_image=200)
        >>> ds.y_train.shape, ds.class_counts, ds.info["num_images"]
        (torch.Size([2800, 3]), (20, 6, 2), {'train': 14, 'val': 3, 'test': 6})
    """
    imbalance_ratio, seed, n_val, n_test = _check_common(
        imbalance_ratio, seed, n_val_per_class, n_test_per_class
    )
    num_classes = _check_int("num_classes", num_classes, 2)
    n_max = _check_int("n_max", n_max, 1)
    background_ratio = _check_real("background_ratio", background_ratio, 0.0)
    anchors_per_image = _check_int("anchors_per_image", anchors_per_image, 1)
    feature_dim = _check_int("feature_dim", feature_dim, 2)
    separation = _check_real("separation", separation, 0.0, lo_open=True)
    noise = _check_real("noise", noise, 0.0, lo_open=True)
    hard_negative_fraction = _check_real("hard_negative_fraction", hard_negative_fraction, 0.0, 1.0)
    context_std = _check_real("context_std", context_std, 0.0)

    rng = _rng(seed, _DATA)
    directions = rng.standard_normal((num_classes, feature_dim))
    means = separation * directions / np.linalg.norm(directions, axis=1, keepdims=True)
    counts = long_tail_counts(n_max, num_classes, imbalance_ratio)
    kwargs = dict(background_ratio=background_ratio, anchors_per_image=anchors_per_image,
                  noise=noise, hard_negative_fraction=hard_negative_fraction,
                  context_std=context_std)
    tensors, num_images = [], {}
    for i, (split, fg) in enumerate((("train", counts), ("val", [n_val] * num_classes),
                                     ("test", [n_test] * num_classes))):
        x, y, num_images[split] = _anchor_split(fg, means, _rng(seed, _SAMPLES + i), **kwargs)
        tensors += [torch.from_numpy(x), torch.from_numpy(y)]

    config = dict(imbalance_ratio=imbalance_ratio, seed=seed, num_classes=num_classes,
                  n_max=n_max, n_val_per_class=n_val, n_test_per_class=n_test, **kwargs,
                  feature_dim=feature_dim, separation=separation)
    n_train = num_images["train"] * anchors_per_image
    info = {
        "anchors_per_image": anchors_per_image,
        "num_images": num_images,
        "num_background": n_train - sum(counts),
        "prototypes": torch.from_numpy(means).float(),
    }
    return Dataset("dense-det", "multilabel-dense", num_classes, *tensors,
                   class_counts=tuple(counts), input_shape=(feature_dim,), config=config,
                   info=info)


# ============================================================================= seg-toy

SEG_SHAPES = ("square", "disk", "cross", "frame", "triangle", "diamond")
"""Shapes of the ``seg-toy`` foreground classes 1, 2, ... in order."""

_SEG_COLORS = np.array([  # per class, for channels=3 (class k uses row k - 1)
    [1.0, 0.3, 0.3], [0.3, 1.0, 0.3], [0.3, 0.3, 1.0],
    [1.0, 1.0, 0.3], [1.0, 0.3, 1.0], [0.3, 1.0, 1.0],
])


def _shape_mask(shape: str, r: int) -> np.ndarray:
    """Boolean ``(2r+1, 2r+1)`` mask of one shape; every shape is 4-connected."""
    d = np.arange(-r, r + 1)
    dy, dx = np.meshgrid(d, d, indexing="ij")
    if shape == "square":
        return np.ones_like(dy, dtype=bool)
    if shape == "disk":
        return dy**2 + dx**2 <= r * r + r // 2
    if shape == "cross":
        t = r // 3
        return (np.abs(dy) <= t) | (np.abs(dx) <= t)
    if shape == "frame":
        return np.maximum(np.abs(dy), np.abs(dx)) >= r
    if shape == "triangle":
        return 2 * np.abs(dx) <= dy + r
    if shape == "diamond":
        return np.abs(dy) + np.abs(dx) <= r
    raise AssertionError(shape)


def _seg_split(
    object_counts: Sequence[int], rng: np.random.Generator, *, image_size: int, channels: int,
    max_objects: int, noise: float, intensity_jitter: float, num_fg: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(n, channels, H, W)`` and masks ``(n, H, W)`` holding exactly these objects."""
    labels = rng.permutation(np.repeat(np.arange(1, num_fg + 1), object_counts))
    sizes = []
    while sum(sizes) < len(labels):
        sizes.append(int(min(rng.integers(1, max_objects + 1), len(labels) - sum(sizes))))
    n = len(sizes)
    cell = image_size // 2
    r_max = min(5, (cell - 3) // 2)
    if channels == 1:
        colors = np.linspace(1.0, 2.0, num_fg)[:, None]  # intensity-coded
    else:
        colors = 1.5 * _SEG_COLORS[:num_fg]
    masks = np.zeros((n, image_size, image_size), dtype=np.int64)
    images = np.zeros((n, channels, image_size, image_size), dtype=np.float32)
    k = 0
    for i, m in enumerate(sizes):
        cells = rng.choice(4, size=m, replace=False)
        for cell_id in cells:
            cls = int(labels[k])
            k += 1
            r = int(rng.integers(2, r_max + 1))
            y0, x0 = (cell_id // 2) * cell, (cell_id % 2) * cell
            # 1 free pixel at the cell border: objects of neighbouring cells never touch
            cy = int(rng.integers(y0 + 1 + r, y0 + cell - 2 - r + 1))
            cx = int(rng.integers(x0 + 1 + r, x0 + cell - 2 - r + 1))
            shape = _shape_mask(SEG_SHAPES[cls - 1], r)
            window = (slice(cy - r, cy + r + 1), slice(cx - r, cx + r + 1))
            masks[i][window][shape] = cls
            gain = 1.0 + intensity_jitter * rng.uniform(-1.0, 1.0)
            for ch in range(channels):
                images[i, ch][window][shape] = colors[cls - 1, ch] * gain
    images += rng.uniform(-0.2, 0.2, size=(n, 1, 1, 1)).astype(np.float32)  # per-image offset
    images += noise * rng.standard_normal(images.shape, dtype=np.float32)
    return images, masks


@_register("seg-toy")
def seg_toy(
    imbalance_ratio: float = 10.0,
    seed: int = 0,
    num_foreground_classes: int = 4,
    n_max: int = 200,
    n_val_per_class: int = 20,
    n_test_per_class: int = 50,
    image_size: int = 32,
    channels: int = 1,
    max_objects_per_image: int = 3,
    noise: float = 0.3,
    intensity_jitter: float = 0.15,
) -> Dataset:
    """Small synthetic segmentation: a few shapes per noisy image, dense class-index masks.

    Foreground class ``k`` (1-based) is the shape ``SEG_SHAPES[k - 1]`` (square, disk, cross,
    frame, triangle, diamond) drawn with a class intensity (``channels=1``: 1.0 .. 2.0, evenly
    spaced) or colour (``channels=3``), scaled by ``1 + intensity_jitter * U(-1, 1)`` per
    object, on a background of 0 plus a per-image offset ``U(-0.2, 0.2)``, plus pixel noise
    ``N(0, noise**2)``. Neighbouring intensities overlap under the jitter and noise, so the
    shape has to be used too. Object half-sizes are 2 .. 5 pixels.

    Every image is cut into 2 x 2 cells and holds 1 .. ``max_objects_per_image`` objects, each
    inside its own cell with a free border, so objects never overlap or touch: each object is
    one 4-connected component of its class in the mask. Training objects per foreground class
    follow :func:`long_tail_counts` (``n_max`` for class 1); validation and test have
    ``n_val_per_class`` / ``n_test_per_class`` objects of each class (balanced in objects; in
    pixels only roughly, since shapes differ in area). ``num_classes`` of the Dataset is
    ``num_foreground_classes + 1`` (background is class 0); ``class_counts`` are training
    *pixel* counts per class, ``info["instance_counts"]`` the training *object* counts per
    foreground class. Builds in ~0.05 s with the defaults (~180 training images).

    Args:
        imbalance_ratio: ``n_1 / n_K`` of the training objects, ``>= 1``.
        seed: seeds the layout, shapes, intensities and noise.
        num_foreground_classes: ``K`` in ``[2, 6]``.
        n_max: training objects of class 1.
        n_val_per_class: validation objects per foreground class.
        n_test_per_class: test objects per foreground class.
        image_size: ``H = W``, in ``[16, 256]``.
        channels: 1 or 3.
        max_objects_per_image: in ``[1, 4]``.
        noise: pixel noise standard deviation, ``>= 0``.
        intensity_jitter: relative per-object intensity jitter, in ``[0, 0.5]``.

    Example:
        >>> ds = seg_toy(n_max=10, n_val_per_class=2, n_test_per_class=2, image_size=16)
        >>> ds.x_train.shape[1:], ds.y_train.dtype, ds.num_classes, ds.info["instance_counts"]
        (torch.Size([1, 16, 16]), torch.int64, 5, (10, 5, 2, 1))
    """
    imbalance_ratio, seed, n_val, n_test = _check_common(
        imbalance_ratio, seed, n_val_per_class, n_test_per_class
    )
    num_fg = _check_int("num_foreground_classes", num_foreground_classes, 2, len(SEG_SHAPES))
    n_max = _check_int("n_max", n_max, 1)
    image_size = _check_int("image_size", image_size, 16, 256)
    if _check_int("channels", channels, 1, 3) == 2:
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    max_objects = _check_int("max_objects_per_image", max_objects_per_image, 1, 4)
    noise = _check_real("noise", noise, 0.0)
    intensity_jitter = _check_real("intensity_jitter", intensity_jitter, 0.0, 0.5)

    counts = long_tail_counts(n_max, num_fg, imbalance_ratio)
    kwargs = dict(image_size=image_size, channels=int(channels), max_objects=max_objects,
                  noise=noise, intensity_jitter=intensity_jitter, num_fg=num_fg)
    tensors = []
    for i, fg in enumerate((counts, [n_val] * num_fg, [n_test] * num_fg)):
        x, y = _seg_split(fg, _rng(seed, _SAMPLES + i), **kwargs)
        tensors += [torch.from_numpy(x), torch.from_numpy(y)]

    num_classes = num_fg + 1
    config = dict(imbalance_ratio=imbalance_ratio, seed=seed, num_foreground_classes=num_fg,
                  n_max=n_max, n_val_per_class=n_val, n_test_per_class=n_test,
                  image_size=image_size, channels=int(channels),
                  max_objects_per_image=max_objects, noise=noise,
                  intensity_jitter=intensity_jitter)
    info = {
        "instance_counts": tuple(counts),
        "class_names": ["background", *SEG_SHAPES[:num_fg]],
    }
    pixel_counts = tuple(int(v) for v in np.bincount(tensors[1].numpy().ravel(),
                                                     minlength=num_classes))
    return Dataset("seg-toy", "segmentation", num_classes, *tensors,
                   class_counts=pixel_counts, input_shape=(int(channels), image_size, image_size),
                   config=config, info=info)


# ============================================================================= CIFAR

_CIFAR = {
    10: dict(folder="cifar-10-batches-py",
             train=[f"data_batch_{i}" for i in range(1, 6)], test=["test_batch"],
             meta="batches.meta", label_key="labels", names_key="label_names",
             archive="cifar-10-python.tar.gz"),
    100: dict(folder="cifar-100-python", train=["train"], test=["test"], meta="meta",
              label_key="fine_labels", names_key="fine_label_names",
              archive="cifar-100-python.tar.gz"),
}


def _cifar_dir(root, num_classes: int) -> Path:
    """The folder holding the CIFAR pickles: ``root/<folder>`` or ``root`` itself."""
    spec = _CIFAR[num_classes]
    files = spec["train"] + spec["test"]
    if root is not None:
        root = Path(os.fspath(root)).expanduser()
        for candidate in (root / spec["folder"], root):
            if all((candidate / f).is_file() for f in files):
                return candidate
    layout = ", ".join(f"{spec['folder']}/{f}" for f in files)
    raise FileNotFoundError(
        f"CIFAR-{num_classes} not found under root={None if root is None else str(root)!r}. "
        f"Expected the python-pickle layout: {layout} under root (or those files directly in "
        f"root), as extracted from {spec['archive']} (https://www.cs.toronto.edu/~kriz/cifar.html). "
        "This loader never downloads; pass root= the folder that holds them."
    )


def _unpickle(path: Path) -> dict:
    # The CIFAR files are pickles: only load folders you trust (pickle can run code).
    with open(path, "rb") as f:
        raw = pickle.load(f, encoding="bytes")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in raw.items()}


def _read_cifar(
    folder: Path, names: Sequence[str], label_key: str
) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for name in names:
        batch = _unpickle(folder / name)
        if "data" not in batch or label_key not in batch:
            raise ValueError(f"{folder / name}: expected keys 'data' and {label_key!r}, got "
                             f"{sorted(batch)}")
        data = np.asarray(batch["data"], dtype=np.uint8)
        xs.append(data.reshape(len(data), 3, 32, 32))
        ys.append(np.asarray(batch[label_key], dtype=np.int64))
    return np.concatenate(xs), np.concatenate(ys)


def _cifar_lt(name: str, num_classes: int, root, imbalance_ratio, seed, n_max, n_val_per_class,
              n_test_per_class) -> Dataset:
    imbalance_ratio, seed, n_val, n_test = _check_common(
        imbalance_ratio, seed, n_val_per_class, n_test_per_class, test_may_be_none=True
    )
    if n_max is not None:
        n_max = _check_int("n_max", n_max, 1)
    spec = _CIFAR[num_classes]
    folder = _cifar_dir(root, num_classes)
    x_pool, y_pool = _read_cifar(folder, spec["train"], spec["label_key"])
    x_test, y_test = _read_cifar(folder, spec["test"], spec["label_key"])
    for what, y in (("training", y_pool), ("test", y_test)):
        present = np.bincount(y, minlength=num_classes)
        if y.min() < 0 or y.max() >= num_classes or (present == 0).any():
            raise ValueError(f"{name}: the {what} files must hold labels 0..{num_classes - 1}, "
                             f"each at least once; got counts {present.tolist()}")

    room = int(np.bincount(y_pool, minlength=num_classes).min()) - n_val
    n_max = room if n_max is None else n_max
    if n_max < 1:
        raise ValueError(f"{name}: n_val_per_class={n_val} leaves no training image in some class")
    counts = long_tail_counts(n_max, num_classes, imbalance_ratio)
    rng = _rng(seed, _SPLIT)
    va, tr = _take_per_class(y_pool, [[n_val] * num_classes, counts], rng, name)
    test_min = int(np.bincount(y_test, minlength=num_classes).min())
    n_test = test_min if n_test is None else n_test
    (te,) = _take_per_class(y_test, [[n_test] * num_classes], _rng(seed, _SAMPLES + 2),
                            f"{name} test set")

    # standardise the raw 0..255 values; mean / std are reported on the [0, 1] scale
    x_tr = x_pool[tr]
    (x_tr, x_va, x_te), mean, std = _standardize(
        [x_tr, x_pool[va], x_test[te]], x_tr, axis=(0, 2, 3)
    )
    mean, std = mean / 255.0, std / 255.0
    info = {"mean": torch.from_numpy(mean.reshape(3)).float(),
            "std": torch.from_numpy(std.reshape(3)).float(), "folder": str(folder)}
    if (folder / spec["meta"]).is_file():
        names = _unpickle(folder / spec["meta"]).get(spec["names_key"])
        if names is not None:
            info["class_names"] = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    config = dict(root=str(root), imbalance_ratio=imbalance_ratio, seed=seed, n_max=n_max,
                  n_val_per_class=n_val, n_test_per_class=n_test)
    tensors = []
    for x, y in ((x_tr, y_pool[tr]), (x_va, y_pool[va]), (x_te, y_test[te])):
        tensors += [torch.from_numpy(x), torch.from_numpy(np.ascontiguousarray(y))]
    return Dataset(name, "multiclass", num_classes, *tensors,
                   class_counts=tuple(counts), input_shape=(3, 32, 32), config=config, info=info)


@_register("cifar10-lt")
def cifar10_lt(
    root: str | os.PathLike | None = None,
    imbalance_ratio: float = 100.0,
    seed: int = 0,
    n_max: int | None = None,
    n_val_per_class: int = 50,
    n_test_per_class: int | None = None,
) -> Dataset:
    """CIFAR-10-LT from a local copy of CIFAR-10 (python pickles); never downloads.

    ``root`` holds ``cifar-10-batches-py/data_batch_1`` .. ``data_batch_5`` and ``test_batch``
    (or those files directly), as extracted from ``cifar-10-python.tar.gz``. The files are
    pickles: only point ``root`` at data you trust. Per class, ``n_val_per_class`` training
    images are held out for the balanced validation set and the long-tailed training set is
    drawn from the rest; the test set is the official test batch, cut to
    ``n_test_per_class`` images per class (``None``: the smallest class count of the test file,
    i.e. all 1000 per class of the real CIFAR-10, so the test set is exactly balanced).
    Images are float32 ``(3, 32, 32)``, scaled to [0, 1] and standardised per channel with the
    training-set statistics (``info["mean"]``, ``info["std"]``); augmentation is the
    trainer's job. Reading and converting the real data takes ~1.5 s (~3 s with ratio 1).

    Args:
        root: the folder described above.
        imbalance_ratio: ``n_0 / n_9``, ``>= 1``; the usual benchmark values are 10, 50, 100.
        seed: seeds the validation hold-out and the subsampling.
        n_max: training images of class 0; ``None``: what every class has left after the
            validation hold-out (4950 with the defaults).
        n_val_per_class: validation images per class, taken from the training files.
        n_test_per_class: see above.

    Raises:
        FileNotFoundError: the files are not there; the message names the expected layout.

    Example:
        >>> cifar10_lt(root="/nonexistent")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        FileNotFoundError: CIFAR-10 not found under root='/nonexistent'. Expected the python-pickle layout: ...
    """
    return _cifar_lt("cifar10-lt", 10, root, imbalance_ratio, seed, n_max, n_val_per_class,
                     n_test_per_class)


@_register("cifar100-lt")
def cifar100_lt(
    root: str | os.PathLike | None = None,
    imbalance_ratio: float = 100.0,
    seed: int = 0,
    n_max: int | None = None,
    n_val_per_class: int = 10,
    n_test_per_class: int | None = None,
) -> Dataset:
    """CIFAR-100-LT (fine labels) from a local copy of CIFAR-100 (python pickles); never downloads.

    ``root`` holds ``cifar-100-python/train`` and ``cifar-100-python/test`` (or those files
    directly), as extracted from ``cifar-100-python.tar.gz``. Otherwise as
    :func:`cifar10_lt`: a balanced validation hold-out from the training file
    (``n_val_per_class``, default 10, leaving ``n_max = 490``), the long-tailed training set
    from the rest, and the official test file (100 per class) as the balanced test set.

    Args:
        root: the folder described above.
        imbalance_ratio: ``n_0 / n_99``, ``>= 1``.
        seed: seeds the validation hold-out and the subsampling.
        n_max: training images of class 0; ``None``: what every class has left.
        n_val_per_class: validation images per class, taken from the training file.
        n_test_per_class: test images per class; ``None``: the smallest class count of the
            test file.

    Raises:
        FileNotFoundError: the files are not there; the message names the expected layout.
    """
    return _cifar_lt("cifar100-lt", 100, root, imbalance_ratio, seed, n_max, n_val_per_class,
                     n_test_per_class)
