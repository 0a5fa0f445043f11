"""research/fair_arms.py: the measurements behind the README's "Fair arms" run every compared config on the same
samples, write their JSON and fill their README blocks."""

import json

import pytest

from research import fair_arms as fa
from research.train import DEFAULT_HOLDOUT


@pytest.fixture
def short_runs(monkeypatch):
    """research.train.main as the measurements call it, 2 epochs; records the configs."""
    seen = []
    real = fa.main

    def spy(cfg):
        seen.append(cfg)
        return real({**cfg, "epochs": 2})

    monkeypatch.setattr(fa, "main", spy)
    return seen


def _cli(tmp_path, measurement):
    start, end = fa.BLOCKS[measurement]
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{start}\nstale table\n{end}\nafter\n")
    out = tmp_path / f"{measurement}.json"
    fa.main_cli([measurement, "--datasets", "digits-lt", "--seeds", "2", "--threads", "1", "--out", str(out),
                 "--readme", str(readme)])
    saved = json.loads(out.read_text())
    text = readme.read_text()
    assert "stale table" not in text and text.startswith("before\n") and text.endswith("after\n")
    assert saved["markdown"] in text and saved["measurement"] == measurement
    return saved["results"]["digits-lt"]


def test_the_hypergradient_measurement_compares_on_the_same_samples(tmp_path, short_runs):
    runs = _cli(tmp_path, "hypergradient")
    assert len(short_runs) == 2 * len(fa.VARIANTS)
    assert all(cfg["holdout_fraction"] == DEFAULT_HOLDOUT for cfg in short_runs)  # every variant, same samples
    assert list(runs) == list(fa.VARIANTS) and all(len(v["runs"]) == 2 for v in runs.values())
    assert all(r["gamma_end"] == 2.0 for r in runs["fixed gamma 2"]["runs"])


def test_the_holdout_measurement_pairs_each_fraction_with_none(tmp_path, short_runs):
    runs = _cli(tmp_path, "holdout")
    assert list(runs) == ["0.0", *map(str, fa.FRACTIONS)]
    assert {cfg["loss"] for cfg in short_runs} == {"ce"}
    none, tenth = runs["0.0"][0], runs["0.1"][0]
    assert none["held_out"] == 0 and tenth["held_out"] > 0 and tenth["train"] + tenth["held_out"] == none["train"]
