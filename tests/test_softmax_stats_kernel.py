"""The C pass for softmax statistics (index targets on the CPU) against the PyTorch formulation it replaces."""

import pytest
import torch

import adaptive_focal.functional as functional
from adaptive_focal import _kernels, softmax_focal_loss

pytestmark = pytest.mark.skipif(not _kernels.kernel_available("cpu"), reason="no C compiler for the CPU kernel")

COUNTS = ("count", "n_pos", "pt_hist", "class_count", "conf_count", "class_conf_count")
SUMS = ("sum_pt", "sum_pt_pos", "sum_loss", "sum_grad_norm", "class_sum_pt", "conf_sum", "correct_sum",
        "class_conf_sum", "class_correct_sum")


def _both(monkeypatch, *args, **kwargs):
    _, fast = softmax_focal_loss(*args, return_stats=True, **kwargs)
    with monkeypatch.context() as m:
        m.setattr(functional, "_SOFTMAX_STATS_KERNEL_MAX", 0)  # the PyTorch formulation
        _, slow = softmax_focal_loss(*args, return_stats=True, **kwargs)
    return fast, slow


@pytest.mark.parametrize("shape", [(64, 10), (7, 3), (5, 4, 6, 3)], ids=["batch", "small", "dense"])
@pytest.mark.parametrize("ignore", [None, 2])
@pytest.mark.parametrize("bins", [15, 4])
def test_kernel_matches_the_pytorch_statistics(monkeypatch, gen, shape, ignore, bins):
    x = torch.randn(*shape, generator=gen) * 3
    c = shape[1]
    target = torch.randint(0, c, (shape[0],) + shape[2:], generator=gen)
    kwargs = {"stat_bins": bins} if ignore is None else {"stat_bins": bins, "ignore_index": ignore}
    fast, slow = _both(monkeypatch, x, target, **kwargs)
    for name in COUNTS:
        assert torch.equal(getattr(fast, name), getattr(slow, name)), name
        assert getattr(fast, name).dtype == getattr(slow, name).dtype
    for name in SUMS:
        torch.testing.assert_close(getattr(fast, name), getattr(slow, name), rtol=1e-5, atol=1e-5, msg=name)


def test_ties_count_as_correct_and_ignored_samples_are_left_out(monkeypatch):
    x = torch.tensor([[1.0, 1.0, 0.0], [0.0, 2.0, 0.0], [3.0, 0.0, 0.0]])
    y = torch.tensor([1, 0, -100])  # a tie for the top class (correct), a wrong one, an ignored one
    fast, slow = _both(monkeypatch, x, y)
    assert int(fast.count) == 2 and float(fast.correct_sum.sum()) == 1.0
    assert torch.equal(fast.class_conf_count, slow.class_conf_count)
