"""research.datasets: split sizes, long-tail profile, balance, determinism, contracts, errors.

The expected per-class counts are computed here from the formula
``n_i = max(1, round(n_max * rho ** (-i / (C - 1))))``, not with the module's helper.
"""

from __future__ import annotations

import doctest
import math
import random
import sys

import numpy as np
import pytest
import torch
from scipy import ndimage
from scipy.stats import norm

import research.datasets as rd
from helpers.fake_cifar import write_cifar10, write_cifar100
from research.datasets import Dataset, list_datasets, load_dataset

NAMES = ["cifar10-lt", "cifar100-lt", "dense-det", "digits-lt", "gauss-lt", "mnist1d-lt", "seg-toy"]


def profile(n_max: int, num_classes: int, rho: float) -> list[int]:
    return [max(1, round(n_max * rho ** (-i / (num_classes - 1)))) for i in range(num_classes)]


def bincount(y: torch.Tensor, n: int) -> list[int]:
    return torch.bincount(y.flatten(), minlength=n).tolist()


def unscale(ds: Dataset, x: torch.Tensor) -> torch.Tensor:
    """Undo the per-feature (digits) or per-channel (CIFAR) standardisation."""
    shape = (1, -1) if x.dim() == 2 else (1, -1, 1, 1)
    return x * ds.info["std"].view(shape) + ds.info["mean"].view(shape)


def all_tensors(ds: Dataset) -> list[torch.Tensor]:
    return [ds.x_train, ds.y_train, ds.x_val, ds.y_val, ds.x_test, ds.y_test]


def assert_same(a: Dataset, b: Dataset) -> None:
    for ta, tb in zip(all_tensors(a), all_tensors(b)):
        assert torch.equal(ta, tb)
    assert a.class_counts == b.class_counts


# Small multiclass configurations: (name, kwargs, n_max, num_classes, rho, n_val, n_test)
MULTICLASS = {
    "digits": ("digits-lt", dict(imbalance_ratio=10, n_max=90, n_val_per_class=15,
                                 n_test_per_class=40), 90, 10, 10, 15, 40),
    "digits-default-nmax": ("digits-lt", dict(imbalance_ratio=7.5), 104, 10, 7.5, 20, 50),
    "mnist1d": ("mnist1d-lt", dict(imbalance_ratio=20, n_max=100, n_val_per_class=5,
                                   n_test_per_class=10), 100, 10, 20, 5, 10),
    "gauss": ("gauss-lt", dict(imbalance_ratio=100, num_classes=6, n_max=300,
                               n_val_per_class=7, n_test_per_class=11), 300, 6, 100, 7, 11),
    "gauss-rho1": ("gauss-lt", dict(imbalance_ratio=1, num_classes=3, n_max=20,
                                    n_val_per_class=2, n_test_per_class=3), 20, 3, 1, 2, 3),
}


# ----------------------------------------------------------------------------- registry


def test_list_datasets():
    assert list_datasets() == NAMES


def test_unknown_name_lists_the_names():
    with pytest.raises(ValueError) as err:
        load_dataset("cifar-lt")
    msg = str(err.value)
    assert "'cifar-lt'" in msg
    for name in NAMES:
        assert name in msg


def test_unknown_argument_lists_allowed_ones():
    with pytest.raises(ValueError) as err:
        load_dataset("gauss-lt", rho=10, seed=1)
    msg = str(err.value)
    assert "['rho']" in msg and "imbalance_ratio" in msg and "label_noise" in msg


@pytest.mark.parametrize("name, kwargs, needle", [
    ("gauss-lt", dict(imbalance_ratio=0.5), "imbalance_ratio"),
    ("gauss-lt", dict(imbalance_ratio=float("inf")), "imbalance_ratio"),
    ("gauss-lt", dict(seed=-1), "seed"),
    ("gauss-lt", dict(seed=1.5), "seed"),
    ("gauss-lt", dict(n_max=0), "n_max"),
    ("gauss-lt", dict(num_classes=1), "num_classes"),
    ("gauss-lt", dict(num_classes=5, dim=3), "dim"),
    ("gauss-lt", dict(label_noise=1.5), "label_noise"),
    ("gauss-lt", dict(separation=0), "separation"),
    ("gauss-lt", dict(noise=True), "noise"),
    ("digits-lt", dict(n_max=500), "class 0 has"),
    ("digits-lt", dict(n_val_per_class=100, n_test_per_class=100), "n_test_per_class"),
    ("mnist1d-lt", dict(n_test_per_class=0), "n_test_per_class"),
    ("dense-det", dict(background_ratio=-1), "background_ratio"),
    ("dense-det", dict(anchors_per_image=0), "anchors_per_image"),
    ("dense-det", dict(hard_negative_fraction=2), "hard_negative_fraction"),
    ("seg-toy", dict(channels=2), "channels"),
    ("seg-toy", dict(num_foreground_classes=7), "num_foreground_classes"),
    ("seg-toy", dict(image_size=8), "image_size"),
    ("seg-toy", dict(max_objects_per_image=5), "max_objects_per_image"),
])
def test_bad_values_raise(name, kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        load_dataset(name, **kwargs)


def test_dataset_checks_its_own_consistency():
    x, y = torch.zeros(4, 2), torch.zeros(4, dtype=torch.int64)
    with pytest.raises(ValueError, match="task"):
        Dataset("t", "regression", 2, x, y, x, y, x, y, (4, 0), (2,))
    with pytest.raises(ValueError, match="class_counts"):
        Dataset("t", "multiclass", 2, x, y, x, y, x, y, (4,), (2,))
    with pytest.raises(ValueError, match="input shape"):
        Dataset("t", "multiclass", 2, x, y, x, y, x, y, (4, 0), (3,))
    ds = Dataset("t", "multiclass", 2, x, y, x, y, x, y, (4, 0), (2,))
    with pytest.raises(ValueError, match="split"):
        ds.split("dev")
    assert ds.train[0] is x and ds.split("test")[1] is y


def test_docstring_examples():
    result = doctest.testmod(rd, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted >= 15


# ----------------------------------------------------------------------------- multiclass


@pytest.mark.parametrize("key", MULTICLASS)
def test_multiclass_profile_balance_and_contracts(key):
    name, kwargs, n_max, num_classes, rho, n_val, n_test = MULTICLASS[key]
    ds = load_dataset(name, **kwargs)
    expected = profile(n_max, num_classes, rho)
    assert ds.task == "multiclass" and ds.num_classes == num_classes
    assert ds.class_counts == tuple(expected)
    assert bincount(ds.y_train, num_classes) == expected
    assert bincount(ds.y_val, num_classes) == [n_val] * num_classes
    assert bincount(ds.y_test, num_classes) == [n_test] * num_classes
    assert ds.config["n_max"] == n_max
    for x, y in (ds.train, ds.val, ds.test):
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.shape == (len(y), *ds.input_shape) and y.dim() == 1
        assert torch.isfinite(x).all()
    assert ds.target_shape == ()
    # classes are interleaved, not sorted
    assert not torch.equal(ds.y_train, ds.y_train.sort().values)


@pytest.mark.parametrize("key", ["digits", "mnist1d"])
def test_pool_splits_are_disjoint(key):
    name, kwargs, *_ = MULTICLASS[key]
    ds = load_dataset(name, **kwargs)
    rows = [{tuple(r) for r in x.numpy().round(4).tolist()} for x in (ds.x_train, ds.x_val, ds.x_test)]
    assert sum(map(len, rows)) == len(ds.y_train) + len(ds.y_val) + len(ds.y_test)
    assert not (rows[0] & rows[1]) and not (rows[0] & rows[2]) and not (rows[1] & rows[2])


def test_digits_standardised_with_training_statistics():
    ds = load_dataset("digits-lt")
    mean, std = ds.x_train.mean(0), ds.x_train.std(0, unbiased=False)
    assert mean.abs().max() < 1e-5
    varying = std > 0
    assert torch.allclose(std[varying], torch.ones(int(varying.sum())), atol=1e-4)
    assert ds.input_shape == (64,)
    assert ds.config["n_max"] == 104  # the smallest class (174) minus 20 + 50 held out


@pytest.mark.parametrize("key", ["digits", "mnist1d", "gauss"])
def test_same_seed_same_tensors_other_seed_other_draw(key):
    name, kwargs, *_ = MULTICLASS[key]
    a, b = load_dataset(name, seed=3, **kwargs), load_dataset(name, seed=3, **kwargs)
    assert_same(a, b)
    c = load_dataset(name, seed=4, **kwargs)
    assert c.class_counts == a.class_counts
    for split in ("train", "val", "test"):
        assert not torch.equal(a.split(split)[0], c.split(split)[0]), split


@pytest.mark.parametrize("name, kwargs", [
    ("digits-lt", dict(n_max=60)),
    ("mnist1d-lt", dict(n_max=100, n_val_per_class=5, n_test_per_class=10)),
    ("gauss-lt", dict(num_classes=4, n_max=50)),
    ("dense-det", dict(num_classes=3, n_max=20, n_val_per_class=3, n_test_per_class=4,
                       background_ratio=30, anchors_per_image=60)),
    ("seg-toy", dict(n_max=20, n_val_per_class=3, n_test_per_class=4)),
])
def test_val_and_test_do_not_depend_on_the_imbalance(name, kwargs):
    a = load_dataset(name, imbalance_ratio=2, seed=1, **kwargs)
    b = load_dataset(name, imbalance_ratio=50, seed=1, **kwargs)
    assert a.class_counts != b.class_counts
    for split in ("val", "test"):
        (xa, ya), (xb, yb) = a.split(split), b.split(split)
        assert torch.equal(ya, yb), split
        if "mean" in a.info:  # standardised with training statistics: compare the raw values
            assert torch.allclose(unscale(a, xa), unscale(b, xb), atol=1e-4)
        else:
            assert torch.equal(xa, xb), split


def test_mnist1d_defaults_keep_a_usable_tail_and_never_download(monkeypatch):
    import inspect

    import mnist1d.data
    import requests

    params = inspect.signature(rd.mnist1d_lt).parameters
    n_max, rho = params["n_max"].default, params["imbalance_ratio"].default
    assert profile(n_max, 10, rho)[-1] >= 20

    def no_network(*args, **kwargs):
        raise AssertionError("network or download path used")

    monkeypatch.setattr(mnist1d.data, "get_dataset", no_network)
    monkeypatch.setattr(requests, "get", no_network)
    # a pool size no other test uses, so the generator really runs; the global RNGs it
    # seeds are restored
    np.random.seed(5)
    random.seed(5)
    np_before, py_before = np.random.get_state()[1].copy(), random.getstate()
    ds = load_dataset("mnist1d-lt", n_max=37, n_val_per_class=3, n_test_per_class=4,
                      imbalance_ratio=4, generator_seed=7)
    assert np.array_equal(np.random.get_state()[1], np_before) and random.getstate() == py_before
    assert ds.input_shape == (40,) and ds.info["pool_size"] == 10 * (37 + 3 + 4)
    assert bincount(ds.y_train, 10) == profile(37, 10, 4)
    other = load_dataset("mnist1d-lt", n_max=37, n_val_per_class=3, n_test_per_class=4,
                         imbalance_ratio=4, generator_seed=8)
    assert not torch.equal(ds.x_test, other.x_test)


# ----------------------------------------------------------------------------- gauss-lt


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.37])
def test_gauss_label_noise_rate(rate):
    ds = load_dataset("gauss-lt", num_classes=5, n_max=400, imbalance_ratio=20,
                      label_noise=rate, seed=2)
    clean, noisy = ds.info["y_train_clean"], ds.info["noisy"]
    n = len(clean)
    assert bincount(clean, 5) == profile(400, 5, 20)
    assert ds.info["clean_class_counts"] == tuple(profile(400, 5, 20))
    flipped = ds.y_train != clean
    assert torch.equal(flipped, noisy)
    assert int(flipped.sum()) == round(rate * n)
    assert ds.class_counts == tuple(bincount(ds.y_train, 5))
    if rate > 0:
        # flips go uniformly to the *other* classes: every (clean, noisy) pair with clean = 0
        # (the head, most flips) appears about equally often
        moved = ds.y_train[flipped & (clean == 0)]
        counts = bincount(moved, 5)
        assert counts[0] == 0
        expected = len(moved) / 4
        assert all(abs(c - expected) < 4 * math.sqrt(expected) + 2 for c in counts[1:])


def test_gauss_geometry_and_overlap():
    ds = load_dataset("gauss-lt", num_classes=4, dim=6, separation=2.5, n_max=5)
    means = ds.info["means"].double()
    dist = torch.cdist(means, means)
    off = ~torch.eye(4, dtype=torch.bool)
    assert torch.allclose(dist[off], torch.full((12,), 2.5, dtype=torch.float64), atol=1e-5)

    # two classes: the nearest-mean (Bayes) error is Phi(-separation / (2 noise))
    for separation, noise in ((1.0, 1.0), (3.0, 1.5), (5.0, 1.0)):
        ds = load_dataset("gauss-lt", num_classes=2, n_max=2, n_test_per_class=20000,
                          separation=separation, noise=noise, seed=1)
        pred = torch.cdist(ds.x_test, ds.info["means"]).argmin(1)
        error = (pred != ds.y_test).double().mean().item()
        assert abs(error - norm.cdf(-separation / (2 * noise))) < 0.01


# ----------------------------------------------------------------------------- dense-det

DENSE = dict(num_classes=5, n_max=40, imbalance_ratio=10, n_val_per_class=6,
             n_test_per_class=9, background_ratio=1000, anchors_per_image=400, feature_dim=8)


@pytest.fixture(scope="module")
def dense():
    return load_dataset("dense-det", **DENSE)


def test_dense_det_contracts_and_profile(dense):
    ds = dense
    assert ds.task == "multilabel-dense" and ds.num_classes == 5 and ds.input_shape == (8,)
    expected = profile(40, 5, 10)
    assert ds.class_counts == tuple(expected)
    A = ds.info["anchors_per_image"]
    for split, per_class in (("train", expected), ("val", [6] * 5), ("test", [9] * 5)):
        x, y = ds.split(split)
        assert x.dtype == torch.float32 and y.dtype == torch.float32
        assert x.shape == (len(y), 8) and y.shape == (len(x), 5)
        assert len(y) == ds.info["num_images"][split] * A
        assert set(y.unique().tolist()) <= {0.0, 1.0}
        assert y.sum(1).max() == 1  # a positive anchor has exactly one class
        assert y.sum(0).long().tolist() == per_class
        # foreground : background within half an image of 1 : background_ratio
        n_fg = sum(per_class)
        n_bg = len(y) - n_fg
        assert abs(n_bg - 1000 * n_fg) <= A / 2 + 1
        assert abs(n_bg / n_fg / 1000 - 1) < 0.1
    assert ds.info["num_background"] == len(ds.y_train) - sum(expected)
    assert ds.target_shape == (5,)


def test_dense_det_is_learnable_but_not_trivial(dense):
    # Scoring anchors by their projection on the true prototype separates positives from
    # background far better than chance, but not perfectly.
    from sklearn.metrics import average_precision_score

    x, y = dense.x_train, dense.y_train
    scores = x @ dense.info["prototypes"].T
    aps = [average_precision_score(y[:, c].numpy(), scores[:, c].numpy()) for c in range(5)]
    prevalence = y.mean(0)
    assert all(ap > 50 * p for ap, p in zip(aps, prevalence.tolist()))
    assert np.mean(aps) < 0.95
    # positives of a class sit further along its prototype than hard negatives do on average
    positive = y.sum(1) == 1
    assert scores[positive].max(1).values.mean() > scores[~positive].max(1).values.mean() + 2


def test_dense_det_determinism_and_images_layout():
    small = dict(DENSE, background_ratio=50, anchors_per_image=100)
    a, b = load_dataset("dense-det", seed=1, **small), load_dataset("dense-det", seed=1, **small)
    assert_same(a, b)
    c = load_dataset("dense-det", seed=2, **small)
    assert not torch.equal(a.x_train, c.x_train) and not torch.equal(a.y_train, c.y_train)
    # rows are image-major: per-image view works and positives are spread over images
    n_img = a.info["num_images"]["train"]
    per_image = a.y_train.view(n_img, 100, 5).sum((1, 2))
    assert per_image.sum() == sum(a.class_counts) and (per_image > 0).sum() > 1


# ----------------------------------------------------------------------------- seg-toy

SEG = dict(num_foreground_classes=4, n_max=60, imbalance_ratio=10, n_val_per_class=5,
           n_test_per_class=8, image_size=32, max_objects_per_image=3)


def components(mask: np.ndarray, cls: int) -> int:
    return ndimage.label(mask == cls)[1]  # 4-connectivity


def test_seg_toy_masks_and_object_profile():
    ds = load_dataset("seg-toy", **SEG)
    K = 4
    expected = profile(60, K, 10)
    assert ds.task == "segmentation" and ds.num_classes == K + 1
    assert ds.info["instance_counts"] == tuple(expected)
    assert ds.input_shape == (1, 32, 32) and ds.target_shape == (32, 32)
    for split, per_class in (("train", expected), ("val", [5] * K), ("test", [8] * K)):
        x, y = ds.split(split)
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.shape == (len(y), 1, 32, 32) and y.shape == (len(x), 32, 32)
        assert int(y.min()) >= 0 and int(y.max()) <= K
        masks = y.numpy()
        objects = np.array([[components(m, k) for k in range(1, K + 1)] for m in masks])
        assert objects.sum(0).tolist() == per_class  # one component per object, exact counts
        per_image = objects.sum(1)
        assert per_image.min() >= 1 and per_image.max() <= 3
        assert (masks == 0).mean() > 0.7  # background dominates
    assert ds.class_counts == tuple(bincount(ds.y_train, K + 1))
    # objects are brighter than background on average, and intensity grows with the class
    x, y = ds.train
    means = [x[:, 0][y == k].mean().item() for k in range(K + 1)]
    assert means == sorted(means) and means[1] > means[0] + 0.5


def test_seg_toy_rgb_and_determinism():
    kw = dict(SEG, channels=3, image_size=24, n_max=12)
    a, b = load_dataset("seg-toy", seed=5, **kw), load_dataset("seg-toy", seed=5, **kw)
    assert_same(a, b)
    assert a.x_train.shape[1:] == (3, 24, 24) and a.input_shape == (3, 24, 24)
    c = load_dataset("seg-toy", seed=6, **kw)
    assert not torch.equal(a.y_train, c.y_train)
    assert c.info["instance_counts"] == a.info["instance_counts"]


def test_seg_toy_shapes_are_4_connected():
    for shape in rd.SEG_SHAPES:
        for r in range(2, 6):
            m = rd._shape_mask(shape, r)
            assert ndimage.label(m)[1] == 1, (shape, r)


# ----------------------------------------------------------------------------- CIFAR


@pytest.mark.parametrize("name, needles", [
    ("cifar10-lt", ["cifar-10-batches-py/data_batch_1", "data_batch_5", "test_batch",
                    "never downloads"]),
    ("cifar100-lt", ["cifar-100-python/train", "cifar-100-python/test", "never downloads"]),
])
def test_cifar_missing_folder(name, needles, tmp_path):
    for root in (tmp_path / "nothing-here", None):
        with pytest.raises(FileNotFoundError) as err:
            load_dataset(name, root=root)
        for needle in needles:
            assert needle in str(err.value)
    # an incomplete folder is missing too
    write_cifar10(tmp_path / "partial")
    (tmp_path / "partial" / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_1"):
        load_dataset("cifar10-lt", root=tmp_path / "partial")


def test_cifar10_fake_folder(tmp_path):
    # 5 batches x 8 per class = 40 training images per class; test 6 per class except
    # class 3 (9): the test set is cut to 6 per class so that it is balanced
    root = write_cifar10(tmp_path, test_counts=[6, 6, 6, 9, 6, 6, 6, 6, 6, 6])
    ds = load_dataset("cifar10-lt", root=root, imbalance_ratio=10, n_val_per_class=4)
    expected = profile(36, 10, 10)
    assert ds.config["n_max"] == 36
    assert ds.class_counts == tuple(expected) and bincount(ds.y_train, 10) == expected
    assert bincount(ds.y_val, 10) == [4] * 10
    assert bincount(ds.y_test, 10) == [6] * 10
    assert ds.input_shape == (3, 32, 32) and ds.x_train.dtype == torch.float32
    assert ds.info["class_names"] == [f"class{c}" for c in range(10)]
    # standardised per channel with training statistics
    assert ds.x_train.mean((0, 2, 3)).abs().max() < 1e-4
    assert torch.allclose(ds.x_train.std((0, 2, 3), unbiased=False), torch.ones(3), atol=1e-4)
    # every image is one of the files' images, with its own label, and no image is used twice
    raw = unscale(ds, ds.x_train) * 255
    raw = raw.round().to(torch.uint8).reshape(len(raw), -1).numpy()
    file_labels = {}
    for b in range(1, 6):
        batch = rd._unpickle(root / "cifar-10-batches-py" / f"data_batch_{b}")
        for row, lab in zip(batch["data"], batch["labels"]):
            file_labels[row.tobytes()] = lab
    assert [file_labels[row.tobytes()] for row in raw] == ds.y_train.tolist()
    assert len({row.tobytes() for row in raw}) == len(raw)
    # the same seed gives the same tensors; another seed another draw; root may be the folder
    again = load_dataset("cifar10-lt", root=root / "cifar-10-batches-py", imbalance_ratio=10,
                         n_val_per_class=4)
    assert_same(ds, again)
    other = load_dataset("cifar10-lt", root=root, imbalance_ratio=10, n_val_per_class=4, seed=1)
    assert not torch.equal(ds.x_val, other.x_val)
    # validation and test images do not depend on the imbalance ratio (the scaling does)
    flat = load_dataset("cifar10-lt", root=root, imbalance_ratio=1, n_val_per_class=4)
    assert bincount(flat.y_train, 10) == [36] * 10
    for split in ("val", "test"):
        (xa, ya), (xb, yb) = ds.split(split), flat.split(split)
        assert torch.equal(ya, yb)
        assert torch.allclose(unscale(ds, xa), unscale(flat, xb), atol=1e-5)


def test_cifar10_str_keys_and_missing_class(tmp_path):
    root = write_cifar10(tmp_path / "a", per_class_per_batch=2, str_keys=True)
    ds = load_dataset("cifar10-lt", root=root, n_val_per_class=1, n_test_per_class=3,
                      imbalance_ratio=3)
    assert ds.class_counts == tuple(profile(9, 10, 3))
    assert bincount(ds.y_test, 10) == [3] * 10
    bad = write_cifar10(tmp_path / "b", per_class_per_batch=1, test_counts=[1] * 9 + [0])
    with pytest.raises(ValueError, match="test files"):
        load_dataset("cifar10-lt", root=bad, n_val_per_class=1)


def test_cifar100_fake_folder(tmp_path):
    root = write_cifar100(tmp_path, train_per_class=4, test_per_class=2)
    ds = load_dataset("cifar100-lt", root=root, imbalance_ratio=3, n_val_per_class=1)
    assert ds.num_classes == 100 and ds.config["n_max"] == 3
    assert bincount(ds.y_train, 100) == profile(3, 100, 3)
    assert bincount(ds.y_val, 100) == [1] * 100 and bincount(ds.y_test, 100) == [2] * 100
    assert ds.info["class_names"][:2] == ["fine0", "fine1"]
    assert ds.x_test.shape == (200, 3, 32, 32)


def test_module_reimport_keeps_long_tailed_digits():
    # the two-way split used by research/train_digits.py is unchanged
    data = rd.long_tailed_digits(imbalance_ratio=10, seed=0)
    assert isinstance(data, rd.Split)
    assert torch.bincount(data.y_train)[[0, 9]].tolist() == [124, 12]
    assert "research.datasets" in sys.modules


# ----------------------------------------------------------------------------- hold_out


def _row_set(x: torch.Tensor) -> set:
    return {tuple(r) for r in x.reshape(len(x), -1).tolist()}


@pytest.mark.parametrize("key", ["digits", "gauss", "gauss-rho1"])
def test_hold_out_is_a_stratified_slice_of_the_training_set(key):
    name, kwargs, *_ = MULTICLASS[key]
    ds = load_dataset(name, **kwargs)
    rest, (x, y) = ds.hold_out(0.1, seed=3)
    # a partition of the training set: the slice and what is left, disjoint, the remaining rows in order
    rows = rest.info["held_out"]["rows"]
    keep = torch.tensor(sorted(set(range(len(ds.y_train))) - set(rows.tolist())))
    assert torch.equal(rest.x_train, ds.x_train[keep]) and torch.equal(x, ds.x_train[rows])
    assert torch.equal(y, ds.y_train[rows]) and not _row_set(x) & _row_set(rest.x_train)
    # per class: round(10%), at least one of a class with two or more, never its last sample
    for c, n in enumerate(ds.class_counts):
        want = 0 if n < 2 else min(max(math.floor(0.1 * n + 0.5), 1), n - 1)
        assert int((y == c).sum()) == want and rest.class_counts[c] == n - want
    assert rest.class_counts == tuple(bincount(rest.y_train, ds.num_classes))
    # the same distribution as the training set, classes interleaved in the slice; validation and test untouched
    assert len(set(y[: ds.num_classes].tolist())) > 1
    assert rest.x_val is ds.x_val and rest.y_test is ds.y_test and rest.config == ds.config
    # seeded: the same seed draws the same slice, another seed another one
    assert torch.equal(ds.hold_out(0.1, seed=3)[1][0], x)
    assert not torch.equal(ds.hold_out(0.1, seed=4)[1][0], x)


def test_hold_out_keeps_gauss_per_sample_info_aligned():
    ds = load_dataset("gauss-lt", num_classes=4, n_max=80, label_noise=0.3)
    rest, (_, y) = ds.hold_out(0.2, seed=0)
    assert len(rest.info["noisy"]) == len(rest.y_train) == len(rest.info["y_train_clean"])
    assert bool((rest.y_train != rest.info["y_train_clean"]).eq(rest.info["noisy"]).all())
    assert rest.info["clean_class_counts"] == tuple(bincount(rest.info["y_train_clean"], 4))
    assert len(rest.y_train) + len(y) == len(ds.y_train) and "held_out" not in ds.info


def test_hold_out_takes_whole_images_of_dense_and_segmentation_tasks(dense):
    rest, (x, y) = dense.hold_out(0.25, seed=0)
    A, images = dense.info["anchors_per_image"], dense.info["num_images"]["train"]
    held = rest.info["held_out"]["rows"].reshape(-1, A)
    assert len(held) == math.floor(0.25 * images + 0.5)
    assert torch.equal(held, held[:, :1] + torch.arange(A))  # whole images: A consecutive rows from a boundary
    assert bool((held[:, 0] % A == 0).all())
    assert rest.info["num_images"]["train"] == images - len(held) and len(rest.y_train) % A == 0
    assert rest.class_counts == tuple(int(v) for v in rest.y_train.sum(0))
    assert rest.info["num_background"] == int((rest.y_train.sum(1) == 0).sum())

    seg = load_dataset("seg-toy", **SEG)
    rest, (x, y) = seg.hold_out(0.1, seed=0)
    assert len(x) == max(1, math.floor(0.1 * len(seg.y_train) + 0.5)) and y.shape[1:] == seg.y_train.shape[1:]
    assert rest.class_counts == tuple(bincount(rest.y_train, seg.num_classes))
    assert "instance_counts" not in rest.info  # object counts cannot be recounted from the masks


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, float("nan"), True])
def test_hold_out_rejects_a_fraction_outside_the_open_unit_interval(fraction):
    ds = load_dataset("gauss-lt", num_classes=3, n_max=20)
    with pytest.raises(ValueError, match="fraction must be"):
        ds.hold_out(fraction, seed=0)
