"""research/faults/logging.py: every logging fault is survived, and each row says what was lost."""

import os

import pytest

pytest.importorskip("wandb")


@pytest.mark.slow
def test_logging_scenarios_survive_and_report_what_was_lost(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")  # the scenarios set their own mode; this must not leak out
    from research.faults.logging import FORMS, scenarios

    rows = scenarios()
    assert all(set(row) == {"scenario", "injected", "survived", "data_lost", "training_stopped"} for row in rows)
    by_name = {row["scenario"]: row for row in rows}
    assert len(by_name) == len(rows) == 8
    assert not any(row["training_stopped"] for row in rows)
    for name in ("W&B online without an API key", "W&B server unreachable", "W&B server that never answers"):
        assert by_name[name]["data_lost"] == "none" and "W&B went offline" in by_name[name]["survived"]
    dead = by_name["a tracker dies mid-run"]
    assert dead["data_lost"] == "none (every record is in the other loggers; the dead tracker got 2)"
    assert "dropped after 3 failures in a row with 2 warnings" in dead["survived"]
    forms = [row for row in rows if row["scenario"].endswith("with every gamma form")]
    assert len(forms) == 4
    for row in forms:
        assert row["data_lost"] == "none" and row["survived"].startswith(f"{len(FORMS)} of {len(FORMS)} gamma forms")
    assert os.environ["WANDB_MODE"] == "disabled"  # the environment was restored
