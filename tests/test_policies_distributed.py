"""Under torch.distributed every rank sets the same gamma: the policies sum the statistics over ranks."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from adaptive_focal import FocalLoss, create_policy

POLICIES = {
    "automated": ("sigmoid", {"momentum": 0.5}),
    "pi": ("softmax", {"setpoint": 0.4, "ki": 0.5}),
    "pi-per-class": ("softmax", {"setpoint": 0.4, "ki": 0.5, "per_class": True, "num_classes": 5}),
}


def _data(mode, rank, step):
    g = torch.Generator().manual_seed(100 * step + rank)
    n = 6 + 4 * rank  # ranks hold different amounts of data: means must be weighted, not averaged
    x = torch.randn(n, 5, generator=g) * (1 + rank)
    y = torch.randint(0, 5, (n,), generator=g) if mode == "softmax" else (torch.rand(n, 5, generator=g) < 0.3).float()
    return x, y


def _build(name):
    mode, kwargs = POLICIES[name]
    loss = FocalLoss(mode, gamma=2.0)
    return mode, loss, create_policy(name.split("-")[0], loss, **kwargs)


def _worker(rank, world, port, name, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        mode, loss, policy = _build(name)
        trace = []
        for step in range(4):
            _, stats = loss(*_data(mode, rank, step), return_stats=True)
            policy.step(stats)
            trace.append(loss.gamma.detach().clone())
        torch.save(trace, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_every_rank_sets_the_gamma_of_the_whole_batch(name, tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), name, str(tmp_path)), nprocs=2, join=True)
    rank0 = torch.load(tmp_path / "rank0.pt")
    rank1 = torch.load(tmp_path / "rank1.pt")
    # single process, both ranks' batches at once
    mode, loss, policy = _build(name)
    want = []
    for step in range(4):
        x0, y0 = _data(mode, 0, step)
        x1, y1 = _data(mode, 1, step)
        _, stats = loss(torch.cat([x0, x1]), torch.cat([y0, y1]), return_stats=True)
        policy.step(stats)
        want.append(loss.gamma.detach().clone())
    for a, b, w in zip(rank0, rank1, want):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        torch.testing.assert_close(a, w, rtol=1e-5, atol=1e-6)
