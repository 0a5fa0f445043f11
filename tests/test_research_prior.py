"""research/prior.py on a small synthetic export: the paired differences against logit adjustment alone, the grid
chosen on validation (ties to the smaller gamma), a tuned arm's trial chosen on validation, Holm across the arms,
the cost column, the README block, and clear errors for bad input. Every expected number is worked out by hand in
the comments (paired t with 2 degrees of freedom: two-sided p = 1 - t / sqrt(2 + t^2), t_0.975 = 4.302653)."""

import json
import math

import pytest

pytest.importorskip("scipy")

from adaptive_focal.compare.export import write_export  # noqa: E402
from research import prior  # noqa: E402

STUDY = "digits-lt-prior"
SEEDS = (2000, 2001, 2002)
ARMS = {
    "baseline=logit_adjusted": {"config": {"loss": "logit_adjusted"}, "space": {}},
    "la+gamma=1": {"config": {"loss": "logit_adjusted", "loss_kwargs": {"gamma": 1.0}}, "space": {}},
    "la+gamma=2": {"config": {"loss": "logit_adjusted", "loss_kwargs": {"gamma": 2.0}}, "space": {}},
    "la+gamma=tpe": {"config": {"loss": "logit_adjusted"},
                     "space": {"gamma": ["loss_kwargs.gamma", ["float", 0.0, 5.0, False]]}},
    "baseline=cb_ce": {"config": {"loss": "cb_ce"}, "space": {}},
}
# (validation, test) balanced accuracy per seed; test ECE is 0.1 + test accuracy / 10 (so its differences are a
# tenth of the accuracy's)
RUNS = {
    # reference test 0.70 0.72 0.74
    "baseline=logit_adjusted": [[(0.60, 0.70)], [(0.65, 0.72)], [(0.60, 0.74)]],
    # differences +0.02 +0.01 +0.03: mean 0.02, sd 0.01, t = 2 sqrt 3, p = 1 - sqrt(12/14) = 0.074180
    "la+gamma=1": [[(0.62, 0.72)], [(0.65, 0.73)], [(0.61, 0.77)]],
    # differences -0.04 -0.02 -0.06: mean -0.04, sd 0.02, the same |t| and p
    "la+gamma=2": [[(0.50, 0.66)], [(0.50, 0.70)], [(0.50, 0.68)]],
    # per seed the trial with the better validation value (the first on ties), not the better test value:
    # differences +0.01 +0.01 +0.04: mean 0.02, sd sqrt(0.0003), se 0.01, t = 2, p = 1 - 2/sqrt 6 = 0.183503
    "la+gamma=tpe": [[(0.70, 0.71), (0.69, 0.90)], [(0.55, 0.90), (0.66, 0.73)], [(0.61, 0.78), (0.61, 0.99)]],
    # differences 0 on every seed: no t, no p (left out of Holm)
    "baseline=cb_ce": [[(0.40, 0.70)], [(0.40, 0.72)], [(0.40, 0.74)]],
}
GAMMAS = {"la+gamma=tpe": [[1.5, 4.0], [0.2, 0.7], [2.5, 3.0]]}


def _trial(arm, seed, number, val, test, arms=ARMS):
    params = {"gamma": GAMMAS[arm][SEEDS.index(seed)][number]} if arm in GAMMAS else {}
    return {"arm": arm, "seed": seed, "number": number, "state": "COMPLETE", "params": params,
            "config": arms[arm]["config"], "val_metrics": {"balanced_accuracy": val},
            "test_metrics": {"balanced_accuracy": test, "ece": 0.1 + test / 10}, "seconds": 1.0,
            "gamma_trajectory": None, "versions": None}


def export(folder, arms=ARMS, study=STUDY, runs=RUNS, dataset="digits-lt", overrides=None):
    trials = [_trial(arm, seed, n, v, t, arms) for arm in arms for seed, per in zip(SEEDS, runs[arm])
              for n, (v, t) in enumerate(per)]
    data = {"format": 1, "study": study, "arm_order": list(arms),
            "manifest": {"metric": "balanced_accuracy", "directions": ["maximize"], "arms": dict(arms),
                         "first_seed": 2000, "dataset": dataset, "dataset_kwargs": {}, "overrides": overrides or {}},
            "units": {arm: list(SEEDS) for arm in arms}, "other_trials": {}, "trials": trials}
    return write_export(data, folder / f"{study}.json.gz")


def test_paired_differences_grid_choice_and_holm(tmp_path):
    export(tmp_path)
    out = prior.run(tmp_path)
    wanted = [*prior.STUDIES, *prior.COMPANIONS.values(), *prior.LEARNED, *prior.ADAFOCAL]
    assert out["missing"] == [s for s in wanted if s != STUDY] and out["exploratory"] and out["learned"] == []
    (s,) = out["studies"]
    assert [m[0] for m in s["metrics"]] == ["balanced_accuracy", "ece"]  # no recall_few stored
    rows = {r["arm"]: r for r in s["rows"]}
    # the grid chosen on validation sits before the tuned gamma
    assert list(rows) == ["la+gamma=1", "la+gamma=2", "la+grid", "la+gamma=tpe", "baseline=cb_ce"]
    # grid on validation: seed 2000 gamma 1 (0.62 > 0.60 > 0.50), seed 2001 a tie of gamma 0 and 1 at 0.65 -> the
    # smaller gamma 0, seed 2002 gamma 1; test differences +0.02, 0, +0.03
    assert s["grid_gammas"] == {"2000": 1.0, "2001": 0.0, "2002": 1.0}
    assert s["tuned_gammas"] == {"2000": 1.5, "2001": 0.7, "2002": 2.5}
    d = {arm: r["diff"]["balanced_accuracy"] for arm, r in rows.items()}
    assert d["la+gamma=1"]["mean"] == pytest.approx(0.02)
    assert d["la+gamma=1"]["p"] == pytest.approx(1 - math.sqrt(12 / 14), abs=1e-6)
    assert (d["la+gamma=1"]["low"], d["la+gamma=1"]["high"]) == pytest.approx(
        (0.02 - 4.302653 * 0.01 / math.sqrt(3), 0.02 + 4.302653 * 0.01 / math.sqrt(3)), abs=1e-6)
    assert d["la+gamma=2"]["mean"] == pytest.approx(-0.04) and d["la+gamma=2"]["p"] == pytest.approx(0.074180, abs=1e-6)
    assert d["la+gamma=tpe"]["mean"] == pytest.approx(0.02) and d["la+gamma=tpe"]["p"] == pytest.approx(
        1 - 2 / math.sqrt(6), abs=1e-6)
    # grid: +0.02, 0, +0.03: mean 1/60, sd 0.015275, t = 1.889822, p = 0.199360
    assert d["la+grid"]["mean"] == pytest.approx(0.05 / 3) and d["la+grid"]["p"] == pytest.approx(0.199360, abs=1e-6)
    assert d["baseline=cb_ce"]["mean"] == pytest.approx(0.0) and d["baseline=cb_ce"]["p"] is None
    # Holm over the four p-values (m = 4): 0.074180 x 4, x 3 -> 0.296720 for both; 0.183503 x 2 = 0.367006, then
    # 0.199360 x 1 raised to the running maximum 0.367006
    assert d["la+gamma=1"]["p_holm"] == pytest.approx(4 * 0.074180, abs=1e-5)
    assert d["la+gamma=2"]["p_holm"] == pytest.approx(4 * 0.074180, abs=1e-5)
    assert d["la+gamma=tpe"]["p_holm"] == pytest.approx(2 * 0.183503, abs=1e-5)
    assert d["la+grid"]["p_holm"] == pytest.approx(2 * 0.183503, abs=1e-5)
    assert d["baseline=cb_ce"]["p_holm"] is None
    # ECE differences are a tenth of the accuracy's: the same t, p and Holm
    e = rows["la+gamma=2"]["diff"]["ece"]
    assert e["mean"] == pytest.approx(-0.004) and e["p_holm"] == pytest.approx(4 * 0.074180, abs=1e-5)
    # cost: runs per seed (the grid: LA alone and its two fixed gammas)
    assert {a: r["runs_per_seed"] for a, r in rows.items()} == {
        "la+gamma=1": 1, "la+gamma=2": 1, "la+grid": 3, "la+gamma=tpe": 2, "baseline=cb_ce": 1}
    assert s["reference"]["mean"]["balanced_accuracy"] == pytest.approx(0.72)
    assert s["seconds"] == {"runs": 18, "median_per_run": 1.0, "total": 18.0}  # 1 s each: 3 x (1+1+1+2+1)


def test_markdown_json_and_readme_block(tmp_path, capsys):
    export(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{prior.START}\nold\n{prior.END}\n\nafter\n")
    out_json = tmp_path / "out" / "prior.json"
    assert prior.main(["--results", str(tmp_path), "--json", str(out_json), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert "old" not in text and text.endswith(f"{prior.END}\n\nafter\n")
    assert "| digits-lt-prior | 0.720 | +0.017 [" in text  # LA alone, then the grid's difference
    assert "| +0.000 [+0.000, +0.000] | la+gamma=1 (1): +0.020 [-0.005, +0.045], p_Holm 0.297 |" in text  # CB CE; best
    assert "| digits-lt-prior | la+grid | - | +0.002 [" in text  # no few-shot recall stored; ECE
    assert "| la+grid | 3 | +0.017 [" in text and "| la+gamma=2 | 1 | -0.040 [-0.090, +0.010] | 0.297 |" in text
    assert "0 / 0 of 5" in text  # nothing significant after Holm
    assert json.loads(out_json.read_text())["studies"][0]["study"] == STUDY
    assert capsys.readouterr().out.startswith("Headline metric")


def test_bad_input_is_a_clear_error(tmp_path, capsys):
    no_reference = {k: v for k, v in ARMS.items() if k != "baseline=logit_adjusted"}
    export(tmp_path, arms=no_reference)
    with pytest.raises(ValueError, match="no arm 'baseline=logit_adjusted'.*reference"):
        prior.run(tmp_path)
    assert prior.main(["--results", str(tmp_path)]) == 2
    assert "no arm 'baseline=logit_adjusted'" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert prior.main(["--results", str(empty)]) == 2
    assert "no *-prior export" in capsys.readouterr().err
    assert prior.main(["--results", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err
    export(tmp_path)  # a README without the markers is refused and left as it was
    readme = tmp_path / "README.md"
    readme.write_text("no markers\n")
    assert prior.main(["--results", str(tmp_path), "--readme", str(readme)]) == 2
    assert readme.read_text() == "no markers\n" and "has no <!-- prior:start -->" in capsys.readouterr().err
    # an export whose file name says one study and whose content another
    export(tmp_path / "wrong", study="gauss-lt-prior")
    (tmp_path / "wrong" / "gauss-lt-prior.json.gz").rename(tmp_path / "wrong" / f"{STUDY}.json.gz")
    with pytest.raises(ValueError, match="holds study 'gauss-lt-prior'"):
        prior.run(tmp_path / "wrong")


# a companion study: LA alone again and one more arm; a second companion whose LA alone differs on one seed
POLICY_ARMS = {"baseline=logit_adjusted": ARMS["baseline=logit_adjusted"],
               "la+policy=cosine": {"config": {"loss": "logit_adjusted", "policy": "cosine"}, "space": {}}}
POLICY_RUNS = {
    "baseline=logit_adjusted": RUNS["baseline=logit_adjusted"],
    # differences from LA alone +0.03 +0.05 +0.04: mean 0.04, sd 0.01, t = 4 sqrt 3, p = 1 - sqrt(48/50)
    "la+policy=cosine": [[(0.5, 0.73)], [(0.5, 0.77)], [(0.5, 0.78)]],
}


def test_a_companion_joins_the_reduced_study_in_one_holm_family(tmp_path):
    export(tmp_path, study="mnist1d-lt-prior")
    export(tmp_path, POLICY_ARMS, "mnist1d-lt-prior-policies", POLICY_RUNS)
    (s,) = prior.run(tmp_path)["studies"]
    assert s["study"] == "mnist1d-lt-prior" and s["companions"] == ["mnist1d-lt-prior-policies"]
    assert s["reference_agreement"] == {"mnist1d-lt-prior-policies": {"seeds": 3, "max_abs_diff": 0.0}}
    rows = {r["arm"]: r for r in s["rows"]}
    # the companion's arm joins before the baselines
    assert list(rows) == ["la+gamma=1", "la+gamma=2", "la+grid", "la+gamma=tpe", "la+policy=cosine", "baseline=cb_ce"]
    d = rows["la+policy=cosine"]["diff"]["balanced_accuracy"]
    assert d["mean"] == pytest.approx(0.04) and d["p"] == pytest.approx(1 - math.sqrt(48 / 50), abs=1e-6)
    # Holm over five p-values now: the cosine arm's 0.020204 x 5 = 0.101021; the gamma=1/2 pair 0.074180 x 4
    assert d["p_holm"] == pytest.approx(5 * (1 - math.sqrt(48 / 50)), abs=1e-5)
    assert rows["la+gamma=1"]["diff"]["balanced_accuracy"]["p_holm"] == pytest.approx(4 * 0.074180, abs=1e-5)
    assert s["seconds"]["runs"] == 18 + 6
    text = prior.markdown(prior.run(tmp_path))
    assert "| mnist1d-lt-prior + -policies | 0.720 |" in text
    assert "paired against its own LA alone (3 seeds; against this study's: identical on every seed)" in text


def test_a_companion_arm_is_paired_against_its_own_reference(tmp_path):
    export(tmp_path, study="mnist1d-lt-prior")
    # the companion's LA alone 0.01 higher on seed 2001: its arm's differences become +0.03 +0.04 +0.04
    runs = {**POLICY_RUNS, "baseline=logit_adjusted": [[(0.60, 0.70)], [(0.65, 0.73)], [(0.60, 0.74)]]}
    export(tmp_path, POLICY_ARMS, "mnist1d-lt-prior-policies", runs)
    (s,) = prior.run(tmp_path)["studies"]
    assert s["reference_agreement"]["mnist1d-lt-prior-policies"]["max_abs_diff"] == pytest.approx(0.01)
    d = next(r for r in s["rows"] if r["arm"] == "la+policy=cosine")["diff"]["balanced_accuracy"]
    assert d["mean"] == pytest.approx(0.11 / 3)
    assert "largest difference of a test metric 0.01" in prior.markdown(prior.run(tmp_path))


@pytest.mark.parametrize("change,match", [
    ({"dataset": "gauss-lt"}, r"its dataset 'gauss-lt' differs from 'digits-lt'"),
    ({"overrides": {"epochs": 3}}, r"its overrides \{'epochs': 3\} differs from \{\}"),
    ({"arms": {**POLICY_ARMS, "la+gamma=1": ARMS["la+gamma=1"]},
      "runs": {**POLICY_RUNS, "la+gamma=1": RUNS["la+gamma=1"]}}, r"arm 'la\+gamma=1' is in both"),
])
def test_a_companion_that_does_not_match_is_refused(tmp_path, change, match):
    export(tmp_path, study="mnist1d-lt-prior")
    kwargs = {"arms": POLICY_ARMS, "runs": POLICY_RUNS, **change}
    export(tmp_path, study="mnist1d-lt-prior-policies", **kwargs)
    with pytest.raises(ValueError, match=match):
        prior.run(tmp_path)


def test_learned_studies_are_tables_of_their_own(tmp_path):
    export(tmp_path, POLICY_ARMS, "gauss-lt-prior-learned", POLICY_RUNS, dataset="gauss-lt",
           overrides={"holdout_fraction": 0.1})
    out = prior.run(tmp_path)
    assert out["studies"] == [] and [s["study"] for s in out["learned"]] == ["gauss-lt-prior-learned"]
    (row,) = out["learned"][0]["rows"]
    assert row["diff"]["balanced_accuracy"]["mean"] == pytest.approx(0.04)
    assert row["diff"]["balanced_accuracy"]["p_holm"] == pytest.approx(1 - math.sqrt(48 / 50), abs=1e-6)
    text = prior.markdown(out)
    assert "| gauss-lt-prior-learned | 0.720 | la+policy=cosine (1) | +0.040 [" in text
    assert "<summary>gauss-lt-prior-learned (gauss-lt, holdout_fraction 0.1)" in text
    assert prior.main(["--results", str(tmp_path)]) == 0  # a folder with only learned studies is analysed
    # AdaFocal's fair studies: their own section, the same pairing
    export(tmp_path, POLICY_ARMS, "gauss-lt-prior-long-adafocal", POLICY_RUNS, dataset="gauss-lt",
           overrides={"holdout_fraction": 0.1, "epochs": 180})
    out = prior.run(tmp_path)
    assert [s["study"] for s in out["adafocal"]] == ["gauss-lt-prior-long-adafocal"]
    assert out["adafocal"][0]["rows"][0]["diff"]["balanced_accuracy"]["mean"] == pytest.approx(0.04)
    text = prior.markdown(out)
    assert text.index("The learned controllers on LA") < text.index("AdaFocal on LA, reading") < text.index(
        "| gauss-lt-prior-long-adafocal | 0.720 | la+policy=cosine (1) | +0.040 [")


def test_the_preregistered_replication_verdict(tmp_path):
    """research/preregistration_adafocal.md: the two [slice] arms against LA alone, Holm across the two. Hand-worked:
    differences +0.03 +0.05 +0.04 give p = 1 - sqrt(48/50) = 0.020204, x 2 = 0.040408 < 0.05: replicates;
    +0.02 +0.01 +0.03 give p = 0.074180 (x 1, above the running maximum): does not."""
    arms = {"baseline=logit_adjusted": ARMS["baseline=logit_adjusted"],
            "la+policy=adafocal[slice]": POLICY_ARMS["la+policy=cosine"],
            "la+policy=adafocal+tpe[slice]": POLICY_ARMS["la+policy=cosine"]}
    runs = {"baseline=logit_adjusted": RUNS["baseline=logit_adjusted"],
            "la+policy=adafocal[slice]": POLICY_RUNS["la+policy=cosine"],
            "la+policy=adafocal+tpe[slice]": RUNS["la+gamma=1"]}
    export(tmp_path, arms, prior.REPLICATION, runs, dataset="gauss-lt", overrides={"holdout_fraction": 0.1})
    out = prior.run(tmp_path)
    first, second = out["replication"]
    assert first["arm"] == "la+policy=adafocal[slice]" and first["mean"] == pytest.approx(0.04)
    assert first["p_holm"] == pytest.approx(2 * (1 - math.sqrt(48 / 50)), abs=1e-6) and first["replicates"]
    assert second["p_holm"] == pytest.approx(0.074180, abs=1e-6) and not second["replicates"]
    text = prior.markdown(out)
    assert "| la+policy=adafocal[slice] | 3 | +0.040 [" in text and "| 0.040 | yes |" in text
    assert "| 0.074 | 0.074 | no |" in text
    # a replication export without the pre-registered arms is refused
    export(tmp_path, POLICY_ARMS, prior.REPLICATION, POLICY_RUNS, dataset="gauss-lt")
    with pytest.raises(ValueError, match="lacks the pre-registered arms la\\+policy=adafocal\\[slice\\]"):
        prior.run(tmp_path)
