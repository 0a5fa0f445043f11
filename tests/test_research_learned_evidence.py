"""research/learned_evidence.py: the study's structure on a tiny configuration, the gamma summaries, and the
README block (replaced in place, never duplicated)."""

import json
import math

import pytest

from research.datasets import long_tail_counts
from research.learned_evidence import (
    END,
    HEADING,
    START,
    fill_readme,
    gamma_summary,
    run_study,
)

TINY = {
    "mnist1d-lt": {"n_max": 30, "n_val_per_class": 3, "n_test_per_class": 5},
    "dense-det": {"n_max": 6, "anchors_per_image": 200, "n_val_per_class": 3, "n_test_per_class": 3,
                  "background_ratio": 100.0},
}


@pytest.mark.slow
def test_tiny_study_writes_json_and_replaces_the_readme_block(tmp_path):
    out = tmp_path / "results" / "learned_evidence.json"
    readme = tmp_path / "README.md"
    readme.write_text(f"# research\n\nintro\n\n{HEADING}\n\nprose before\n\n{START}\nold table\n{END}\n\n"
                      "Reading: kept.\n")
    report = run_study(["mnist1d-lt", "dense-det"], seeds=2, gammas=[1.0, 2.0], threads=1, epochs=1,
                       learned=("hypergradient-pc", "bandit"), hand=("pi",), dataset_kwargs=TINY,
                       overrides={"batch_size": 256}, timing_rounds=1, timing_warmup=1, timing_steps=2,
                       out=out, readme=readme, command="python -m research.learned_evidence --tiny",
                       log=lambda message: None)

    saved = json.loads(out.read_text())
    assert saved["seeds"] == 2 and saved["gammas"] == [1.0, 2.0] and saved["markdown"] == report["markdown"]
    assert set(saved["results"]) == {"mnist1d-lt", "dense-det"}
    for dataset, r in saved["results"].items():
        assert r["best_gamma"] in (1.0, 2.0) and set(r["tuning_val"]) == {"1.0", "2.0"}
        hand = "efl" if dataset == "dense-det" else "adafocal"
        assert hand not in r["methods"]  # restricted to pi by hand=
        assert list(r["methods"]) == ["fixed", "pi", "hypergradient-pc", "bandit"]
        for name, m in r["methods"].items():
            assert len(m["metric"]) == len(m["runs"]) == 2 and all(0.0 <= v <= 1.0 for v in m["metric"])
            assert [run["seed"] for run in m["runs"]] == [0, 1]
            assert all(math.isfinite(g) for g in m["gamma_final_mean"])
            t = r["timing"][name]
            assert len(t["ms_per_step"]) == 1 and t["median_ms_per_step"] > 0 and t["ratio_median"] > 0
        assert r["timing"]["fixed"]["ratio_median"] == 1.0
        assert all(g == r["best_gamma"] for g in r["methods"]["fixed"]["gamma_final_mean"])
        assert r["methods"]["bandit"]["policy_kwargs"]["seed"] == "<seed>"  # each run gets its own seed
        if dataset == "mnist1d-lt":
            assert all(0.0 <= e <= 1.0 for e in r["methods"]["fixed"]["ece"])
        else:
            assert all(e is None for e in r["methods"]["fixed"]["ece"])
        names = [c["name"] for c in r["contrasts"]]
        assert names == (["imbalance_ratio", "background_ratio"] if dataset == "dense-det" else ["imbalance_ratio"])
        for con in r["contrasts"]:
            assert set(con["controllers"]) == {"hypergradient-pc", "bandit"}
            for name, ctrl in con["controllers"].items():
                for side in ("low", "high"):
                    assert len(ctrl[side]["gamma_final_mean"]) == 2
                per_class = ctrl["high"]["gamma_final_rare"][0] is not None
                assert per_class == (name == "hypergradient-pc")
                assert ctrl["verdict"]["gamma_half_mean"]["high_vs_low"] in (
                    "higher", "lower", "within noise", "no change")
        rho = r["contrasts"][0]
        assert rho["low"]["imbalance_ratio"] == 1.0 and rho["high"]["imbalance_ratio"] == 100.0

    # the equal-size contrast: rho = 1 gets n_max = (rho = 100 total) / C
    total = sum(long_tail_counts(30, 10, 100.0))
    assert saved["results"]["mnist1d-lt"]["contrasts"][0]["low"]["n_max"] == round(total / 10)

    text = readme.read_text()
    assert text.count(START) == text.count(END) == 1 and text.count(HEADING) == 1
    assert "old table" not in text and "prose before" in text and text.endswith("Reading: kept.\n")
    assert "| mnist1d-lt | fixed gamma" in text and "| dense-det | background 100 vs 1000 per positive |" in text


def test_readme_block_is_added_once_then_replaced(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# research\n\nsomething\n")
    fill_readme(readme, "table one", "python -m research.learned_evidence")
    fill_readme(readme, "table two", "python -m research.learned_evidence")
    text = readme.read_text()
    assert text.count(START) == text.count(END) == text.count(HEADING) == 1
    assert "table one" not in text and f"{START}\ntable two\n{END}" in text
    assert text.startswith("# research\n\nsomething\n\n")


def test_gamma_summary_of_each_form():
    assert gamma_summary(2.5, 10) == {"mean": 2.5, "frequent": None, "rare": None}
    assert gamma_summary([1.0, 2.0, 3.0], 3) == {"mean": 2.0, "frequent": 1.0, "rare": 3.0}
    table = {"edges": [0.0, 0.5, 1.0], "values": [[1.0, 3.0], [2.0, 2.0], [5.0, 7.0]]}  # (C, B): per class
    assert gamma_summary(table, 3) == {"mean": 10.0 / 3.0, "frequent": 2.0, "rare": 6.0}
    bins = {"edges": [0.0, 0.5, 1.0], "values": [1.0, -1.0]}  # (B,): one gamma per bin, global
    assert gamma_summary(bins, 3) == {"mean": 0.0, "frequent": None, "rare": None}
    mixture = {"form": "FocalMixture", "gammas": [[2.0, 4.0]], "weights": [[1.0, 1.0]]}  # EFL: (K, C)
    assert gamma_summary(mixture, 2) == {"mean": 3.0, "frequent": 2.0, "rare": 4.0}
    assert gamma_summary(None, 2)["mean"] is None
