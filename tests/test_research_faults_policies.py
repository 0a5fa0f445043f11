"""research/faults/policies.py: the policies' fault-injection scenarios run and every one of them survives."""

from research.faults.policies import READERS, scenarios


def test_every_policy_scenario_survives():
    rows = scenarios()
    assert {tuple(sorted(r)) for r in rows} == {("data_lost", "injected", "scenario", "survived", "training_stopped")}
    assert not any(r["training_stopped"] for r in rows)
    readers = [r for r in rows if r["scenario"].startswith("non-finite statistics")]
    assert len(readers) == len(READERS)
    for r in readers:
        assert r["survived"].startswith("gamma finite throughout, skipped_batches=1, 1 warning(s), gamma moves"), r
        assert r["data_lost"] == "none (the bad batch's statistics skipped, counted)", r
    for r in rows:
        if r["scenario"].startswith("state load"):
            done, total = r["survived"].split(" refused")[0].split("/")
            assert done == total and r["data_lost"] == "none", r
    assert rows[-1]["survived"] == ("identical gamma trajectory and bandit state; a state saved right after a load "
                                    "equals the loaded one")
