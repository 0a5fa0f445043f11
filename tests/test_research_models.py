"""research.models: output shapes on every dataset, one backward pass, factory errors, init."""

from __future__ import annotations

import doctest
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import research.models as rm
from helpers.fake_cifar import write_cifar10, write_cifar100
from research.datasets import list_datasets, load_dataset
from research.models import (
    CNN1D,
    DEFAULT_MODEL,
    MLP,
    DenseHead,
    SmallResNet,
    TinySegNet,
    build_model,
    list_models,
)

SMALL = {
    "digits-lt": dict(n_max=30, n_val_per_class=2, n_test_per_class=2),
    "mnist1d-lt": dict(n_max=30, n_val_per_class=2, n_test_per_class=2, imbalance_ratio=10),
    "gauss-lt": dict(n_max=30, n_val_per_class=2, n_test_per_class=2),
    "dense-det": dict(n_max=10, n_val_per_class=1, n_test_per_class=1, background_ratio=20,
                      anchors_per_image=50),
    "seg-toy": dict(n_max=10, n_val_per_class=1, n_test_per_class=1),
    "cifar10-lt": dict(n_val_per_class=1, imbalance_ratio=5),
    "cifar100-lt": dict(n_val_per_class=1, imbalance_ratio=2),
}


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    write_cifar10(root, per_class_per_batch=1, test_counts=[1] * 10)
    write_cifar100(root, train_per_class=3, test_per_class=1)
    out = {}
    for name, kwargs in SMALL.items():
        if name.startswith("cifar"):
            kwargs = dict(kwargs, root=root)
        out[name] = load_dataset(name, seed=0, **kwargs)
    return out


def loss_for(ds, logits, y):
    if ds.task == "multilabel-dense":
        return F.binary_cross_entropy_with_logits(logits, y)
    return F.cross_entropy(logits, y)  # (N, C) or (N, C, H, W) against (N,) or (N, H, W)


def test_every_dataset_has_a_default_model():
    assert sorted(DEFAULT_MODEL) == list_datasets()
    assert set(DEFAULT_MODEL.values()) <= set(list_models())


def test_list_models():
    assert list_models() == ["cnn1d", "dense-head", "mlp", "small-resnet", "tiny-segnet"]


PAIRS = [(d, DEFAULT_MODEL[d]) for d in SMALL] + [
    ("digits-lt", "dense-head"), ("mnist1d-lt", "mlp"), ("cifar10-lt", "mlp"),
    ("dense-det", "mlp"), ("gauss-lt", "cnn1d"),
]


@pytest.mark.parametrize("dataset_name, model_name", PAIRS)
def test_output_shape_and_backward(datasets, dataset_name, model_name):
    ds = datasets[dataset_name]
    model = build_model(model_name, ds, seed=0)
    x, y = ds.train
    x, y = x[:64], y[:64]
    logits = model(x)
    if ds.task == "segmentation":
        assert logits.shape == (len(x), ds.num_classes, *ds.input_shape[1:])
    else:
        assert logits.shape == (len(x), ds.num_classes)
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()
    loss = loss_for(ds, logits, y)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert any(p.grad.abs().sum() > 0 for p in model.parameters())


def test_dense_head_on_image_major_view(datasets):
    ds = datasets["dense-det"]
    head = build_model("dense-head", ds, hidden=8)
    A = ds.info["anchors_per_image"]
    images = ds.x_train.view(-1, A, ds.input_shape[0])
    out = head(images)
    assert out.shape == (images.shape[0], A, ds.num_classes)
    assert torch.allclose(out.reshape(-1, ds.num_classes), head(ds.x_train), atol=1e-6)


def test_dense_head_prior_init():
    head = DenseHead(8, 4, prior_prob=0.01)
    assert torch.allclose(head.cls_logits.bias, torch.full((4,), -math.log(99.0)))
    assert head.cls_logits.weight.std() < 0.05
    p = torch.sigmoid(head(torch.randn(2000, 8)))
    assert abs(p.mean().item() - 0.01) < 0.003
    plain = DenseHead(8, 4, prior_prob=None)
    assert plain.cls_logits.bias.std() > 0  # PyTorch's default init, not a constant
    assert isinstance(DenseHead(8, 4, num_layers=0).shared, nn.Sequential)
    for bad in (0, 1, 1.5, -0.1, True):
        with pytest.raises(ValueError, match="prior_prob"):
            DenseHead(8, 4, prior_prob=bad)
    mlp = MLP(8, 3, prior_prob=0.1)
    assert torch.allclose(mlp.classifier.bias, torch.full((3,), rm.prior_bias(0.1)))


def test_cnn1d_accepts_both_layouts():
    model = CNN1D(40, 10).eval()
    x = torch.randn(3, 40)
    assert torch.equal(model(x), model(x.unsqueeze(1)))
    two = CNN1D(24, 5, in_channels=2, channels=(4, 8)).eval()
    assert two(torch.randn(3, 2, 24)).shape == (3, 5)
    with pytest.raises(ValueError, match="kernel_size"):
        CNN1D(40, 10, kernel_size=4)


def test_small_resnet_depth_and_widths():
    small = SmallResNet(10)
    deep = SmallResNet(10, blocks_per_stage=3)
    n_small = sum(p.numel() for p in small.parameters())
    n_deep = sum(p.numel() for p in deep.parameters())
    assert 50_000 < n_small < 120_000 and 200_000 < n_deep < 350_000  # ResNet-8 / ResNet-20
    assert SmallResNet(7, in_channels=1, widths=(8, 8))(torch.zeros(2, 1, 16, 16)).shape == (2, 7)


def test_tiny_segnet_keeps_resolution():
    net = TinySegNet(3, 4, width=4, dilations=(1, 3))
    assert net(torch.zeros(1, 3, 17, 23)).shape == (1, 4, 17, 23)


def test_build_model_errors(datasets):
    gauss, seg = datasets["gauss-lt"], datasets["seg-toy"]
    with pytest.raises(ValueError) as err:
        build_model("resnet18", gauss)
    assert "'resnet18'" in str(err.value)
    for name in list_models():
        assert name in str(err.value)
    with pytest.raises(ValueError) as err:
        build_model("mlp", gauss, hiden=(4,))
    assert "['hiden']" in str(err.value) and "hidden" in str(err.value)
    for name, ds, needle in (("mlp", seg, "tiny-segnet"), ("tiny-segnet", gauss, "segmentation"),
                             ("small-resnet", gauss, "image"), ("dense-head", seg, "tiny-segnet"),
                             ("cnn1d", datasets["cifar10-lt"], "cnn1d needs")):
        with pytest.raises(ValueError, match=needle):
            build_model(name, ds)
    for kwargs, needle in ((dict(hidden=(0,)), "hidden"), (dict(dropout=1.0), "dropout"),
                           (dict(num_classes=0), "num_classes"), (dict(seed=-1), "seed")):
        with pytest.raises(ValueError, match=needle):
            build_model("mlp", gauss, **kwargs)


def test_build_model_kwargs_override_and_seed(datasets):
    gauss = datasets["gauss-lt"]
    model = build_model("mlp", gauss, hidden=(5, 6), num_classes=3)
    assert model(gauss.x_train[:2]).shape == (2, 3)
    state = torch.random.get_rng_state()
    a = build_model("mlp", gauss, seed=3)
    b = build_model("mlp", gauss, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)  # global RNG untouched
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    c = build_model("mlp", gauss, seed=4)
    assert not torch.equal(a.classifier.weight, c.classifier.weight)


def test_mlp_learns_separated_gaussians():
    ds = load_dataset("gauss-lt", num_classes=4, separation=6.0, n_max=200, imbalance_ratio=2,
                      n_test_per_class=100)
    model = build_model("mlp", ds, hidden=(32,), seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        loss = F.cross_entropy(model(ds.x_train), ds.y_train)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        acc = (model(ds.x_test).argmax(1) == ds.y_test).float().mean().item()
    assert acc > 0.9  # Bayes accuracy here is ~0.99


def test_docstring_examples():
    result = doctest.testmod(rm, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted >= 8
