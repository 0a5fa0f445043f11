"""research/faults/loss.py: the loss's fault-injection scenarios run clean and report in the shared row format."""

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
