"""Small, offline datasets for experiments.

Everything here builds from data that ships with an installed package, so experiments and their
tests never touch the network.
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import numpy as np
import torch

__all__ = ["Split", "long_tailed_digits", "long_tail_counts"]


class Split(NamedTuple):
    """Train and test tensors: float32 features ``(n, d)`` and int64 labels ``(n,)``."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def long_tail_counts(n_max: int, num_classes: int, imbalance_ratio: float) -> list[int]:
    """Exponentially decaying class sizes: ``n_c = n_max * imbalance_ratio ** (-c / (C - 1))``.

    Class 0 keeps ``n_max`` samples, the last class ``n_max / imbalance_ratio`` (rounded, at least 1).

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
