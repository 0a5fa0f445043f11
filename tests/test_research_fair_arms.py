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


def test_the_gammanet_measurement_compares_on_the_same_samples(tmp_path, short_runs):
    runs = _cli(tmp_path, "gammanet")
    assert len(short_runs) == 2 * len(fa.GAMMANET_VARIANTS)
    assert all(cfg["holdout_fraction"] == DEFAULT_HOLDOUT for cfg in short_runs)
    assert {cfg.get("meta_data") for cfg in short_runs if cfg.get("policy") == "gammanet"} == {None, "val"}
    # gammanet's gamma is a per-class, per-bin table: its final gamma is summarised as one finite number
    assert all(0.0 <= r["gamma_end"] < 10.0 for r in runs["gammanet (training slice)"]["runs"])
    # runs without a policy record their loss's gamma: none for cross-entropy, the fixed one for focal loss
    assert [r["gamma_end"] for r in runs["cross-entropy"]["runs"]] == [0.0, 0.0]
    assert [r["gamma_end"] for r in runs["fixed gamma 2"]["runs"]] == [2.0, 2.0]


def test_the_gammanet_table_pairs_against_cross_entropy_with_holm():
    """Hand-worked: differences (+0.02, +0.04) give mean +0.03, sd 0.01414, se 0.01, t = 3 on 1 df, two-sided
    p = 2 (1/2 - atan(3) / pi) = 0.2048 (two such rows); (+0.03, -0.01) give mean +0.01, se 0.02, t = 0.5,
    p = 0.7048; (-0.01, -0.01) do not vary (no p, not in Holm's family). Holm over the three p-values: 3 x 0.2048 =
    0.614 for both smallest, max(0.614, 1 x 0.7048) = 0.705 for the largest."""
    def runs(values, gamma=2.0):
        return {"config": {}, "runs": [{"balanced_accuracy": v, "gamma_end": gamma} for v in values]}

    results = {"toy": {"cross-entropy": {"config": {"loss": "ce"}, "runs": runs([0.5, 0.6], 0.0)["runs"]},
                       "fixed gamma 2": runs([0.52, 0.64]),
                       "gammanet (training slice)": runs([0.49, 0.59]),
                       "gammanet (balanced validation)": runs([0.52, 0.64]),
                       "fine-tune on balanced validation": runs([0.53, 0.59])}}
    rows = {line.split(" | ")[1]: line for line in fa.gammanet_markdown(results).splitlines()[2:]}
    assert rows["cross-entropy"].startswith("| toy | cross-entropy | 0.00 | 0.5500 | — |")
    fixed = rows["fixed gamma 2"]
    assert "| +0.0300 |" in fixed and "| 2 / 0 |" in fixed
    assert "| 0.614 |" in fixed  # 3 x 0.2048 (Holm, smallest of three p-values)
    assert "| -0.0100 | [-0.0100, -0.0100] | — | 0 / 2 |" in rows["gammanet (training slice)"]
    assert "| 0.614 |" in rows["gammanet (balanced validation)"]
    assert "| +0.0100 | [" in rows["fine-tune on balanced validation"]
    assert rows["fine-tune on balanced validation"].split(" | ")[6] == "0.705"
