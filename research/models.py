"""Small models for the research datasets (:mod:`research.datasets`), sized for CPU runs.

================  =================================  =====================================
name              class                              input -> output
================  =================================  =====================================
``mlp``           :class:`MLP`                       ``(N, *shape)`` -> ``(N, C)``
``cnn1d``         :class:`CNN1D`                     ``(N, L)`` or ``(N, C_in, L)`` -> ``(N, C)``
``small-resnet``  :class:`SmallResNet`               ``(N, C_in, H, W)`` -> ``(N, C)``
``dense-head``    :class:`DenseHead`                 ``(..., F)`` -> ``(..., C)``
``tiny-segnet``   :class:`TinySegNet`                ``(N, C_in, H, W)`` -> ``(N, C, H, W)``
================  =================================  =====================================

:func:`build_model` picks the sizes a dataset implies (input shape, number of classes);
:data:`DEFAULT_MODEL` names a sensible model per dataset.

Example:
    >>> from research.datasets import load_dataset
    >>> ds = load_dataset("gauss-lt", num_classes=3, n_max=20)
    >>> model = build_model("mlp", ds, hidden=(16,), seed=0)
    >>> model(ds.x_train).shape
    torch.Size([23, 3])
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Sequence

import torch
from torch import nn

__all__ = [
    "MLP",
    "CNN1D",
    "SmallResNet",
    "DenseHead",
    "TinySegNet",
    "prior_bias",
    "build_model",
    "list_models",
    "DEFAULT_MODEL",
]


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _pos_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _pos_ints(name: str, values, allow_empty: bool = False) -> tuple[int, ...]:
    if isinstance(values, numbers.Integral) and not isinstance(values, bool):
        values = (values,)
    try:
        out = tuple(_pos_int(name, v) for v in values)
    except TypeError:
        raise ValueError(
            f"{name} must be a sequence of positive integers, got {values!r}"
        ) from None
    if not out and not allow_empty:
        raise ValueError(f"{name} must not be empty")
    return out


def _prior(prior_prob) -> float | None:
    if prior_prob is None:
        return None
    if not _is_real(prior_prob) or not 0 < prior_prob < 1:
        raise ValueError(f"prior_prob must be in (0, 1) or None, got {prior_prob!r}")
    return float(prior_prob)


def prior_bias(prior_prob: float) -> float:
    """The bias ``b`` with ``sigmoid(b) = prior_prob``: ``-log((1 - pi) / pi)`` (RetinaNet).

    Example:
        >>> round(prior_bias(0.01), 4)
        -4.5951
    """
    return -math.log((1.0 - prior_prob) / prior_prob)


def _init_prior(layer: nn.Module, prior_prob: float | None) -> None:
    """RetinaNet's init of the last classification layer: small weights, bias at the prior."""
    if prior_prob is None:
        return
    nn.init.normal_(layer.weight, std=0.01)
    nn.init.constant_(layer.bias, prior_bias(prior_prob))


# ============================================================================= models


class MLP(nn.Module):
    """Fully connected ReLU network on flattened inputs.

    Args:
        in_features: inputs per sample after flattening.
        num_classes: outputs per sample.
        hidden: widths of the hidden layers; ``()`` is a linear model.
        dropout: dropout before every hidden-to-next layer, in ``[0, 1)``.
        prior_prob: if set, the last layer starts at ``sigmoid(logit) = prior_prob`` (for
            sigmoid / one-vs-rest training).

    Example:
        >>> MLP(64, 10, hidden=(32,))(torch.zeros(5, 8, 8)).shape
        torch.Size([5, 10])
    """

    def __init__(self, in_features: int, num_classes: int, hidden: Sequence[int] = (128,),
                 dropout: float = 0.0, prior_prob: float | None = None) -> None:
        super().__init__()
        in_features = _pos_int("in_features", in_features)
        num_classes = _pos_int("num_classes", num_classes)
        hidden = _pos_ints("hidden", hidden, allow_empty=True)
        if not _is_real(dropout) or not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        self.body = nn.Sequential(*layers)
        self.classifier = nn.Linear(width, num_classes)
        _init_prior(self.classifier, _prior(prior_prob))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.body(x.flatten(1)))


class CNN1D(nn.Module):
    """1-D convolutional classifier for short signals (MNIST-1D: length 40).

    Conv(k, stride 1) then ``len(channels) - 1`` conv(k, stride 2) layers, each with
    BatchNorm and ReLU, then a linear layer on the flattened feature map (position matters in
    MNIST-1D, so no global pooling).

    Args:
        length: signal length ``L``.
        num_classes: outputs per sample.
        in_channels: input channels; inputs ``(N, L)`` are read as one channel.
        channels: output channels of the conv layers.
        kernel_size: odd kernel size.
        prior_prob: optional sigmoid prior of the last layer (see :class:`MLP`).

    Example:
        >>> CNN1D(40, 10)(torch.zeros(2, 40)).shape
        torch.Size([2, 10])
    """

    def __init__(self, length: int, num_classes: int, in_channels: int = 1,
                 channels: Sequence[int] = (32, 64, 64), kernel_size: int = 5,
                 prior_prob: float | None = None) -> None:
        super().__init__()
        length = _pos_int("length", length)
        num_classes = _pos_int("num_classes", num_classes)
        self.in_channels = _pos_int("in_channels", in_channels)
        channels = _pos_ints("channels", channels)
        kernel_size = _pos_int("kernel_size", kernel_size)
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        layers: list[nn.Module] = []
        width, size = self.in_channels, length
        for i, ch in enumerate(channels):
            stride = 1 if i == 0 else 2
            layers += [nn.Conv1d(width, ch, kernel_size, stride=stride, padding=kernel_size // 2,
                                 bias=False), nn.BatchNorm1d(ch), nn.ReLU()]
            width = ch
            size = (size - 1) // stride + 1
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(width * size, num_classes)
        _init_prior(self.classifier, _prior(prior_prob))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2 and self.in_channels == 1:
            x = x.unsqueeze(1)
        return self.classifier(self.features(x).flatten(1))


class _BasicBlock(nn.Module):
    """Two 3x3 convs with BatchNorm and an identity (or 1x1 projection) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class SmallResNet(nn.Module):
    """A CIFAR-style ResNet: 3x3 stem, stages of basic residual blocks, global pooling.

    Each stage after the first halves the resolution. The defaults (widths 16/32/64, one
    block per stage) are a ResNet-8 with ~78 k parameters; ``blocks_per_stage=3`` gives the
    classic ResNet-20.

    Args:
        num_classes: outputs per image.
        in_channels: image channels.
        widths: channels of each stage.
        blocks_per_stage: residual blocks in every stage.
        prior_prob: optional sigmoid prior of the last layer (see :class:`MLP`).

    Example:
        >>> SmallResNet(10)(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(self, num_classes: int, in_channels: int = 3, widths: Sequence[int] = (16, 32, 64),
                 blocks_per_stage: int = 1, prior_prob: float | None = None) -> None:
        super().__init__()
        num_classes = _pos_int("num_classes", num_classes)
        in_channels = _pos_int("in_channels", in_channels)
        widths = _pos_ints("widths", widths)
        blocks_per_stage = _pos_int("blocks_per_stage", blocks_per_stage)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU())
        blocks: list[nn.Module] = []
        width = widths[0]
        for s, w in enumerate(widths):
            for b in range(blocks_per_stage):
                blocks.append(_BasicBlock(width, w, stride=2 if s > 0 and b == 0 else 1))
                width = w
        self.stages = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(width, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        _init_prior(self.classifier, _prior(prior_prob))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.stages(self.stem(x))).flatten(1))


class DenseHead(nn.Module):
    """A tiny per-anchor classifier, like RetinaNet's classification subnet on anchor features.

    The same layers are applied to every anchor: ``num_layers`` Linear + ReLU of width
    ``hidden``, then a Linear to ``num_classes`` sigmoid logits. With ``prior_prob`` set (0.01
    by default, as in RetinaNet) the last layer's weights start at ``N(0, 0.01**2)`` and its
    bias at ``-log((1 - pi) / pi)``, so every anchor starts at ``p ~ pi`` and the ~1000
    background anchors per object do not swamp the first steps.

    Args:
        in_features: features per anchor.
        num_classes: foreground classes (no background output).
        hidden: width of the shared layers.
        num_layers: number of shared hidden layers (0: a linear head).
        prior_prob: initial foreground probability ``pi`` in ``(0, 1)``, or ``None`` for
            PyTorch's default init.

    Example:
        >>> head = DenseHead(16, 10)
        >>> logits = head(torch.zeros(4, 1000, 16))  # (images, anchors, features)
        >>> logits.shape, round(torch.sigmoid(logits).mean().item(), 3)
        (torch.Size([4, 1000, 10]), 0.01)
    """

    def __init__(self, in_features: int, num_classes: int, hidden: int = 64, num_layers: int = 2,
                 prior_prob: float | None = 0.01) -> None:
        super().__init__()
        in_features = _pos_int("in_features", in_features)
        num_classes = _pos_int("num_classes", num_classes)
        hidden = _pos_int("hidden", hidden)
        if not _is_real(num_layers) or not isinstance(num_layers, numbers.Integral) or num_layers < 0:
            raise ValueError(f"num_layers must be a non-negative integer, got {num_layers!r}")
        layers: list[nn.Module] = []
        width = in_features
        for _ in range(num_layers):
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        self.shared = nn.Sequential(*layers)
        self.cls_logits = nn.Linear(width, num_classes)
        self.prior_prob = _prior(prior_prob)
        _init_prior(self.cls_logits, self.prior_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cls_logits(self.shared(x))


class TinySegNet(nn.Module):
    """A tiny fully convolutional segmenter that keeps the resolution.

    3x3 convs (BatchNorm, ReLU) with dilations ``dilations`` (receptive field
    ``1 + 2 * sum(dilations)``: 15 pixels by default, enough for the ``seg-toy`` shapes), then a
    1x1 conv to per-pixel logits.

    Args:
        in_channels: image channels.
        num_classes: classes per pixel, background included.
        width: channels of the hidden layers.
        dilations: dilation of each 3x3 layer.
        prior_prob: optional sigmoid prior of the last layer (see :class:`MLP`).

    Example:
        >>> TinySegNet(1, 5)(torch.zeros(2, 1, 32, 32)).shape
        torch.Size([2, 5, 32, 32])
    """

    def __init__(self, in_channels: int, num_classes: int, width: int = 16,
                 dilations: Sequence[int] = (1, 2, 4), prior_prob: float | None = None) -> None:
        super().__init__()
        in_channels = _pos_int("in_channels", in_channels)
        num_classes = _pos_int("num_classes", num_classes)
        width = _pos_int("width", width)
        dilations = _pos_ints("dilations", dilations)
        layers: list[nn.Module] = []
        c = in_channels
        for d in dilations:
            layers += [nn.Conv2d(c, width, 3, padding=d, dilation=d, bias=False),
                       nn.BatchNorm2d(width), nn.ReLU()]
            c = width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Conv2d(c, num_classes, 1)
        _init_prior(self.classifier, _prior(prior_prob))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


# ============================================================================= factory

_MODELS: dict[str, type[nn.Module]] = {
    "mlp": MLP,
    "cnn1d": CNN1D,
    "small-resnet": SmallResNet,
    "dense-head": DenseHead,
    "tiny-segnet": TinySegNet,
}

DEFAULT_MODEL: dict[str, str] = {
    "digits-lt": "mlp",
    "mnist1d-lt": "cnn1d",
    "gauss-lt": "mlp",
    "dense-det": "dense-head",
    "seg-toy": "tiny-segnet",
    "cifar10-lt": "small-resnet",
    "cifar100-lt": "small-resnet",
}
"""A sensible model name for each dataset of :func:`research.datasets.list_datasets`."""


def list_models() -> list[str]:
    """Names :func:`build_model` accepts, sorted.

    Example:
        >>> list_models()
        ['cnn1d', 'dense-head', 'mlp', 'small-resnet', 'tiny-segnet']
    """
    return sorted(_MODELS)


def _dataset_defaults(name: str, dataset) -> dict:
    """Constructor arguments implied by the dataset; ValueError if the model cannot fit it."""
    shape = tuple(int(s) for s in dataset.input_shape)
    task = dataset.task
    num_classes = int(dataset.num_classes)

    def mismatch(why: str) -> ValueError:
        return ValueError(f"model {name!r} does not fit dataset {getattr(dataset, 'name', '?')!r} "
                          f"(task {task!r}, input_shape {shape}): {why}")

    if name == "tiny-segnet":
        if task != "segmentation" or len(shape) != 3:
            raise mismatch("tiny-segnet needs a segmentation dataset with (C, H, W) inputs")
        return dict(in_channels=shape[0], num_classes=num_classes)
    if task == "segmentation":
        raise mismatch("segmentation needs per-pixel outputs: use 'tiny-segnet'")
    if name == "mlp":
        return dict(in_features=math.prod(shape), num_classes=num_classes)
    if name == "cnn1d":
        if len(shape) == 1:
            return dict(length=shape[0], in_channels=1, num_classes=num_classes)
        if len(shape) == 2:
            return dict(length=shape[1], in_channels=shape[0], num_classes=num_classes)
        raise mismatch("cnn1d needs (L,) or (C, L) inputs")
    if name == "small-resnet":
        if len(shape) != 3:
            raise mismatch("small-resnet needs (C, H, W) image inputs")
        return dict(in_channels=shape[0], num_classes=num_classes)
    if name == "dense-head":
        if len(shape) != 1:
            raise mismatch("dense-head needs (F,) feature-vector inputs")
        return dict(in_features=shape[0], num_classes=num_classes)
    raise AssertionError(name)  # pragma: no cover


def build_model(name: str, dataset, seed: int | None = None, **kwargs) -> nn.Module:
    """Build model ``name`` sized for ``dataset`` (a :class:`research.datasets.Dataset`).

    The input size (``in_features``, ``length``, ``in_channels``) and ``num_classes`` come from
    the dataset; ``kwargs`` are passed to the model class and override those defaults. With
    ``seed`` set, the weights are drawn from ``torch.manual_seed(seed)`` inside a forked RNG,
    so the global torch RNG is left as it was.

    Raises:
        ValueError: unknown ``name`` (the message lists the names), an argument the model does
            not take (lists the allowed ones), a bad value, or a model that cannot fit the
            dataset (e.g. ``"mlp"`` on a segmentation task).

    Example:
        >>> from research.datasets import load_dataset
        >>> ds = load_dataset("seg-toy", n_max=4, n_val_per_class=1, n_test_per_class=1)
        >>> build_model("tiny-segnet", ds, width=8)(ds.x_val).shape
        torch.Size([3, 5, 32, 32])
        >>> build_model("resnet", ds)
        Traceback (most recent call last):
        ...
        ValueError: unknown model 'resnet'; available: cnn1d, dense-head, mlp, small-resnet, tiny-segnet
    """
    if not isinstance(name, str) or name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    cls = _MODELS[name]
    allowed = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ValueError(f"model {name!r} got unknown argument(s) {unknown}; "
                         f"allowed: {', '.join(allowed)}, seed")
    args = {**_dataset_defaults(name, dataset), **kwargs}
    if seed is None:
        return cls(**args)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return cls(**args)
