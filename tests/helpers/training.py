"""A tiny training loop for the tests of callbacks and integrations."""

from __future__ import annotations

import torch


def train_tiny(callback, loss, epochs=2, batches=3, n=48, features=5, on_epoch=None):
    """A small softmax model trained with ``loss`` and ``callback`` (GammaCallback-like) in a plain loop; the
    validation statistics of the whole set go to ``callback.on_epoch_end`` and then to ``on_epoch(val, epoch)``."""
    torch.manual_seed(0)
    model = torch.nn.Linear(features, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(n, features, generator=g), torch.randint(0, 3, (n,), generator=g)
    val = None
    for epoch in range(epochs):
        for idx in torch.arange(n).split(n // batches):
            value, stats = loss(model(x[idx]), y[idx], return_stats=True)
            opt.zero_grad()
            value.backward()
            opt.step()
            callback.on_train_batch_end(stats)
        with torch.no_grad():
            _, val = loss(model(x), y, return_stats=True)
        callback.on_epoch_end(val)
        if on_epoch is not None:
            on_epoch(val, epoch)
    return val
