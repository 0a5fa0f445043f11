"""Tiny fake CIFAR folders in the python-pickle layout, for the research dataset tests.

Every image is filled from its own id, so a loaded image can be traced back to the file it
came from: pixel ``p`` of image ``k`` is ``(k * 7 + p) % 256``, except pixels 0 and 1, which hold
``k // 256`` and ``k % 256`` (so all images differ).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np


def fake_images(first_id: int, n: int) -> np.ndarray:
    ids = np.arange(first_id, first_id + n)[:, None]
    data = ((ids * 7 + np.arange(3072)[None, :]) % 256).astype(np.uint8)
    data[:, 0], data[:, 1] = ids[:, 0] // 256, ids[:, 0] % 256
    return data


def _dump(path: Path, obj: dict, str_keys: bool) -> None:
    if not str_keys:
        obj = {k.encode(): v for k, v in obj.items()}
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_cifar10(root: Path, per_class_per_batch: int = 8, test_counts=None,
                  str_keys: bool = False) -> Path:
    """``root/cifar-10-batches-py`` with 5 training batches and a test batch; returns root.

    ``test_counts``: test images per class (default 6 each).
    """
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(123)
    next_id = 0
    for b in range(1, 6):
        labels = rng.permutation(np.repeat(np.arange(10), per_class_per_batch))
        data = fake_images(next_id, len(labels))
        next_id += len(labels)
        _dump(folder / f"data_batch_{b}", {"data": data, "labels": labels.tolist(),
                                           "batch_label": f"training batch {b} of 5"}, str_keys)
    test_counts = [6] * 10 if test_counts is None else list(test_counts)
    labels = rng.permutation(np.repeat(np.arange(10), test_counts))
    _dump(folder / "test_batch", {"data": fake_images(next_id, len(labels)),
                                  "labels": labels.tolist()}, str_keys)
    names = [f"class{c}".encode() for c in range(10)]
    _dump(folder / "batches.meta", {"label_names": names, "num_vis": 3072}, str_keys)
    return root


def write_cifar100(root: Path, train_per_class: int = 4, test_per_class: int = 2) -> Path:
    """``root/cifar-100-python/{train,test,meta}``; returns root."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(7)
    train = rng.permutation(np.repeat(np.arange(100), train_per_class))
    test = rng.permutation(np.repeat(np.arange(100), test_per_class))
    _dump(folder / "train", {"data": fake_images(0, len(train)), "fine_labels": train.tolist(),
                             "coarse_labels": (train // 5).tolist()}, False)
    _dump(folder / "test", {"data": fake_images(len(train), len(test)),
                            "fine_labels": test.tolist(), "coarse_labels": (test // 5).tolist()},
          False)
    _dump(folder / "meta", {"fine_label_names": [f"fine{c}".encode() for c in range(100)]}, False)
    return root
