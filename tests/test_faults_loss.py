"""research/faults/loss.py: the loss's fault-injection scenarios run clean and report in the shared row format."""

import dataclasses

import pytest

from research.faults import loss as faults

KEYS = {"scenario", "injected", "survived", "data_lost", "training_stopped"}


def test_scenarios_pass_and_have_the_row_format():
    rows = faults.scenarios(calls=400, seed=3)
    assert len(rows) == 4
    for row in rows:
        assert set(row) == KEYS and isinstance(row["training_stopped"], bool)
        assert not row["survived"].startswith("FAILED"), row
        assert row["data_lost"] == "none"


def test_the_fuzz_finds_a_broken_check(monkeypatch):
    # the fuzz is only worth its rows if it notices a defect: disable the sigmoid target check
    import adaptive_focal.functional._checks as checks

    monkeypatch.setattr(checks, "check_sigmoid_target_values", lambda *args: None)
    failures = faults.run(calls=300, seed=0)["failures"]
    assert any(kind == "bad" and "bad target" in text for kind, text in failures)


def test_the_fuzz_compares_the_sigmoid_confidence_bins(monkeypatch):
    # half the sigmoid calls ask for the confidence bins; a PyTorch path whose bins count one element too many is
    # caught (outside faults.pytorch_path the C kernel is available; inside it is not)
    kernels = faults.kernels
    if not kernels.kernel_available("cpu"):
        pytest.skip("needs the C kernel: without it both paths are the PyTorch one")
    result = faults.run(calls=300, seed=0)
    assert result["counts"]["confidence"] > 50 and not result["failures"]
    run = faults._run

    def skewed(call):
        loss, grad, stats = run(call)
        if stats.conf_count is None or kernels.kernel_available("cpu"):
            return loss, grad, stats
        return loss, grad, dataclasses.replace(stats, conf_count=stats.conf_count + 1)

    monkeypatch.setattr(faults, "_run", skewed)
    failures = faults.run(calls=300, seed=0)["failures"]
    assert failures and all("statistics field conf_count differs" in text for _, text in failures)
