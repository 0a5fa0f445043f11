"""adaptive_focal.compare's report: the analysis numbers against values computed here from the stored trials
(leaderboard, paired differences, Wilcoxon, bootstrap CI, tuning-cost curve), the Pareto front on hand-made points,
the files written, W&B in disabled mode, a metric to minimise, and the command line."""

import csv
import json
import statistics

import pytest

optuna = pytest.importorskip("optuna")
np = pytest.importorskip("numpy")
stats = pytest.importorskip("scipy.stats")
pytest.importorskip("matplotlib")
from optuna.trial import TrialState  # noqa: E402

from adaptive_focal import cli  # noqa: E402
from adaptive_focal.compare import analysis as an  # noqa: E402
from adaptive_focal.compare import report, results, runner  # noqa: E402
from adaptive_focal.compare.storage import open_storage  # noqa: E402
from helpers.handmade import ARMS, SEEDS, TRIALS, write_handmade  # noqa: E402
from helpers.studies import linear_study, opts  # noqa: E402


@pytest.fixture(scope="module")
def handmade(tmp_path_factory):
    return write_handmade(tmp_path_factory.mktemp("handmade") / "hm.log")


def _stored(path):
    """{arm: {seed: [frozen trials by number]}}, read with Optuna here."""
    st = open_storage(path)
    out = {}
    for s in optuna.get_all_study_summaries(st):
        if s.study_name.startswith("hm/"):
            arm, _, seed = s.study_name[3:].rpartition("/seed")
            out.setdefault(arm, {})[int(seed)] = sorted(optuna.load_study(study_name=s.study_name, storage=st)
                                                        .trials, key=lambda t: t.number)
    return out


def _best(trials):
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    top = max(t.user_attrs["val_metrics"]["balanced_accuracy"] for t in done)
    return min((t for t in done if t.user_attrs["val_metrics"]["balanced_accuracy"] == top), key=lambda t: t.number)


@pytest.fixture(scope="module")
def analysis(handmade):
    return an.analyse(results.load_units(open_storage(handmade), "hm"))


def test_leaderboard_matches_the_stored_trials(handmade, analysis):
    stored = _stored(handmade)
    rows = {r["arm"]: r for r in analysis["leaderboard"]}
    assert set(rows) == set(ARMS)
    for arm, per in stored.items():
        tests = [_best(ts).user_attrs["test_metrics"]["balanced_accuracy"] for ts in per.values()]
        eces = [_best(ts).user_attrs["test_metrics"]["ece"] for ts in per.values()]
        assert rows[arm]["mean"] == pytest.approx(statistics.fmean(tests), abs=1e-12)
        assert rows[arm]["std"] == pytest.approx(statistics.stdev(tests), abs=1e-12)
        assert rows[arm]["ece_mean"] == pytest.approx(statistics.fmean(eces), abs=1e-12)
        assert rows[arm]["seeds"] == len(per)
        assert rows[arm]["trials"] == sum(t.state == TrialState.COMPLETE for ts in per.values() for t in ts)
        # the budget: every finished run, completed or pruned
        assert rows[arm]["runs_completed"] == rows[arm]["trials"]
        assert rows[arm]["runs_pruned"] == sum(t.state == TrialState.PRUNED for ts in per.values() for t in ts)
        assert rows[arm]["runs"] == rows[arm]["runs_completed"] + rows[arm]["runs_pruned"]
    assert (rows["gamma=tpe"]["runs"], rows["gamma=tpe"]["runs_pruned"]) == (SEEDS * TRIALS, 2 * SEEDS)
    means = [r["mean"] for r in analysis["leaderboard"]]
    assert means == sorted(means, reverse=True)
    # the first table is the minimal leaderboard, unchanged
    assert report.markdown(analysis["summary"], "hm") == report.report("hm", handmade)


def test_paired_tests_against_the_best_fixed_gamma(handmade, analysis):
    stored = _stored(handmade)
    val = {arm: statistics.fmean(_best(ts).user_attrs["val_metrics"]["balanced_accuracy"] for ts in per.values())
           for arm, per in stored.items() if arm in ("gamma=0", "gamma=1", "gamma=2")}
    reference = max(val, key=val.get)
    assert analysis["reference"] == reference
    test = {arm: {s: _best(ts).user_attrs["test_metrics"]["balanced_accuracy"] for s, ts in per.items()}
            for arm, per in stored.items()}
    rows = {r["arm"]: r for r in analysis["paired"]}
    assert set(rows) == set(ARMS) - {reference}
    for arm, r in rows.items():
        seeds = sorted(set(test[arm]) & set(test[reference]))
        diffs = [test[arm][s] - test[reference][s] for s in seeds]
        assert r["seeds"] == seeds and r["n"] == len(diffs)
        assert r["diffs"] == pytest.approx(diffs, abs=1e-12)
        assert r["mean_diff"] == pytest.approx(statistics.fmean(diffs), abs=1e-12)
        assert r["wilcoxon_p"] == pytest.approx(stats.wilcoxon(diffs).pvalue, abs=1e-12)
        assert r["wilcoxon_min_p"] == pytest.approx(2.0 ** (1 - len(diffs)))
        assert r["ci_low"] <= r["mean_diff"] <= r["ci_high"]
        assert (r["wins"], r["ties"], r["losses"]) == (sum(d > 0 for d in diffs), sum(d == 0 for d in diffs),
                                                       sum(d < 0 for d in diffs))
    assert rows["baseline=cb_ce"]["n"] == 3 and rows["baseline=cb_ce"]["wilcoxon_min_p"] == 0.25
    # seeded: the same analysis again gives the same intervals; another seed other ones
    again = an.analyse(results.load_units(open_storage(handmade), "hm"))
    assert [(r["ci_low"], r["ci_high"]) for r in again["paired"]] == [(r["ci_low"], r["ci_high"])
                                                                       for r in analysis["paired"]]
    # with 3-4 seeds the percentile bounds sit on attainable resample means whatever the seed; with more pairs
    # the seed shows, and the same seed repeats exactly
    diffs = np.random.default_rng(5).normal(0.01, 0.02, 20)
    a, b, c = (an.paired_test(diffs, n_boot=2000, seed=s) for s in (1, 1, 2))
    assert (a["ci_low"], a["ci_high"]) == (b["ci_low"], b["ci_high"]) != (c["ci_low"], c["ci_high"])
    assert a["ci_low"] < float(np.mean(diffs)) < a["ci_high"]


def test_paired_test_edge_cases():
    assert an.paired_test([])["wilcoxon_p"] is None
    zero = an.paired_test([0.0, 0.0, 0.0])
    assert zero["wilcoxon_p"] is None and zero["ci_low"] == zero["ci_high"] == 0.0
    assert an.wilcoxon_min_p(3) == 0.25 and an.wilcoxon_min_p(5) == 0.0625


def test_tuning_cost_curve(handmade, analysis):
    stored = _stored(handmade)
    curves = []
    for ts in stored["gamma=tpe"].values():
        best, curve = None, []
        for t in ts:
            if t.state == TrialState.COMPLETE:
                v = t.user_attrs["val_metrics"]["balanced_accuracy"]
                best = v if best is None else max(best, v)
            curve.append(best)
        curves.append(curve)
    rows = analysis["tuning_cost"]["curves"]["gamma=tpe"]
    assert [r["trials"] for r in rows] == list(range(1, TRIALS + 1))
    for k, r in enumerate(rows):
        assert r["best_val_mean"] == pytest.approx(statistics.fmean(c[k] for c in curves), abs=1e-12)
        assert r["seeds"] == SEEDS
    means = [r["best_val_mean"] for r in rows]
    assert means == sorted(means)  # best so far never decreases
    defaults = {d["arm"]: d for d in analysis["tuning_cost"]["defaults"]}
    assert set(defaults) == {"policy=pi"} and defaults["policy=pi"]["trials"] == 1
    assert analysis["tuning_cost"]["grid"]["trials"] == 3


def test_pareto_front_on_hand_made_points():
    points = [(0.9, 0.20), (0.8, 0.10), (0.7, 0.05), (0.6, 0.06), (0.8, 0.12), (0.9, 0.25), (0.5, 0.30),
              (0.7, 0.05), (None, 0.01), (0.95, float("nan"))]
    # 3 is dominated by 2; 4 by 1; 5 by 0; 6 by all; 7 equals 2 (neither dominates); None / NaN are left out
    assert an.pareto_front(points) == [0, 1, 2, 7]
    assert an.pareto_front([]) == []
    assert an.pareto_front([(0.5, 0.5)]) == [0]


def test_pareto_of_the_study_and_gamma_trajectories(analysis):
    rows = analysis["pareto"]
    assert {r["arm"] for r in rows} == set(ARMS)
    pts = [(r["balanced_accuracy"], r["ece"]) for r in rows]
    for r, (a, e) in zip(rows, pts):
        dominated = any(a2 >= a and e2 <= e and (a2 > a or e2 < e) for a2, e2 in pts)
        assert r["front"] == (not dominated)
    traj = analysis["gamma_trajectories"]
    assert set(traj) == {"policy=pi"} and traj["policy=pi"]["0"] == [[1.0, 2.1], [2.0, 2.2], [3.0, 2.3]]


def test_files_written_and_wandb_disabled(handmade, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    out = tmp_path / "out"
    text, analyses, written = report.run_report(["hm"], handmade, out=out, wandb_mode="disabled", n_boot=500)
    for name in ("report.md", "leaderboard.csv", "per_seed.csv", "paired.csv", "tuning_cost.csv", "pareto.csv",
                 "results.json", "hm_tuning_cost.png", "hm_pareto.png", "hm_gamma.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
        assert name in written["files"]
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "report.md").read_text()
    assert md.startswith(report.markdown(analyses[0]["summary"], "hm")) and text in md
    assert "![Pareto front](hm_pareto.png)" in md and "95% t-interval" in md and "Holm p" in md
    # the paired rows show the t-interval; the bootstrap interval only in the files, and the text says why
    tpe = next(r for r in analyses[0]["paired"] if r["arm"] == "gamma=tpe")
    row = next(line for line in md.splitlines() if line.startswith("| gamma=tpe | 4 |"))
    assert f"[{tpe['t_low']:+.3f}, {tpe['t_high']:+.3f}]" in row
    assert f"[{tpe['ci_low']:+.3f}, {tpe['ci_high']:+.3f}]" not in md
    assert "bootstrap interval of earlier reports is not shown" in md
    with (out / "leaderboard.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["arm"] for r in rows] == [r["arm"] for r in analyses[0]["leaderboard"]]
    assert {"runs", "runs_completed", "runs_pruned", "configs_stopped"} <= set(rows[0])
    with (out / "paired.csv").open() as fh:
        paired = list(csv.DictReader(fh))
    assert {"t_low", "t_high", "t_p", "holm_p", "wilcoxon_exact_p", "exploratory", "ci_low",
            "ci_high"} <= set(paired[0])
    assert "Pruning left this arm fewer completed runs than started: gamma=tpe 12 of 20 (8 pruned)" in md
    assert float(rows[0]["mean"]) == pytest.approx(analyses[0]["leaderboard"][0]["mean"])
    data = json.loads((out / "results.json").read_text())
    assert data[0]["reference"] == analyses[0]["reference"] and data[0]["n_boot"] == 500
    # the W&B logger on its own, disabled: tables and images log without a network
    logger = report.WandbReportLogger("disabled")
    logger.analyses(analyses, written)
    logger.finish()
    assert not logger._failed
    with pytest.raises(ValueError, match="wandb mode must be"):
        report.WandbReportLogger("cloud")


def test_command_line(handmade, tmp_path, capsys):
    assert cli.main(["sweep", "report", "hm", "--storage", handmade, "--out", str(tmp_path / "o"), "--n-boot",
                     "200"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("### hm (digits-lt): test balanced_accuracy") and "Paired by seed" in out
    assert (tmp_path / "o" / "report.md").is_file()
    assert cli.main(["sweep", "report", "nope", "--storage", handmade]) == 2
    assert "no study 'nope' in this storage" in capsys.readouterr().err
    assert cli.main(["sweep", "report", "hm", "--storage", str(tmp_path / "missing.log")]) == 2
    # an equivalence margin fixed in advance adds the TOST columns
    assert cli.main(["sweep", "report", "hm", "--storage", handmade, "--out", str(tmp_path / "m"), "--n-boot", "200",
                     "--margin", "0.02"]) == 0
    md = (tmp_path / "m" / "report.md").read_text()
    assert "TOST p (Holm), ±0.02 | within ±0.02 |" in md and "margin of ±0.02 fixed before the results" in md
    data = json.loads((tmp_path / "m" / "results.json").read_text())[0]
    assert data["equivalence_margin"] == 0.02 and all(r["margin"] == 0.02 for r in data["paired"])
    capsys.readouterr()
    for bad in ("0", "-0.1", "nan", "x"):
        with pytest.raises(SystemExit):
            cli.main(["sweep", "report", "hm", "--storage", handmade, "--margin", bad])
    assert "--margin must be a positive number" in capsys.readouterr().err


def test_a_study_run_and_reported(tmp_path, capsys):
    """A study through the runner: the CLI report's first table is the minimal leaderboard, and the analysis reads
    the runner's trials (gamma trajectories of a policy arm included)."""
    study = linear_study(name="lr", arms=("gamma=0", "gamma=2", "gamma=tpe", "policy=automated"), seeds=2)
    log = tmp_path / "t.log"
    runner.run(study, opts(log))
    assert cli.main(["sweep", "report", "lr", "--storage", str(log)]) == 0
    printed = capsys.readouterr().out
    assert printed.strip() == report.report("lr", str(log)).strip()
    text, analyses, _ = report.run_report(["lr"], str(log), out=tmp_path / "o", n_boot=200)
    a = analyses[0]
    assert a["reference"] == "gamma=0"  # 0.9 - 0.1 gamma: the smaller gamma wins on every seed
    assert [r["trials"] for r in a["tuning_cost"]["curves"]["gamma=tpe"]] == [1, 2, 3]
    assert {r["arm"] for r in a["paired"]} == {"gamma=2", "gamma=tpe", "policy=automated"}
    assert {r["arm"]: (r["wins"], r["losses"]) for r in a["paired"]}["gamma=2"] == (0, 2)
    assert text.startswith(printed.strip())
    assert set(a["gamma_trajectories"]) == {"policy=automated"}
    assert [p[0] for p in a["gamma_trajectories"]["policy=automated"]["0"]] == [1.0, 2.0, 3.0]
    assert cli.main(["sweep", "report", "lr", "--storage", str(log), "--out", str(tmp_path / "cli"),
                     "--wandb", "disabled"]) == 0
    assert "wrote the report to" in capsys.readouterr().out
    assert (tmp_path / "cli" / "report.md").is_file() and (tmp_path / "cli" / "leaderboard.csv").is_file()


def test_a_metric_to_minimise_ranks_and_pairs_the_other_way(tmp_path):
    """val_only returns a loss that grows with gamma: the smallest gamma is best, wins are negative differences,
    and without test metrics the leaderboard says it shows validation values."""
    study = linear_study(name="mn", arms=("gamma=0", "gamma=1", "gamma=3"), seeds=3,
                         objective="helpers.objectives:val_only", metric="loss", direction="minimize")
    log = tmp_path / "mn.log"
    runner.run(study, opts(log))
    a = an.analyse(results.load_units(open_storage(str(log), write=False), "mn"), n_boot=100)
    assert a["direction"] == "minimize" and a["split"] == "val"
    assert [r["arm"] for r in a["leaderboard"]] == ["gamma=0", "gamma=1", "gamma=3"]
    assert a["reference"] == "gamma=0"
    paired = {r["arm"]: r for r in a["paired"]}
    assert paired["gamma=1"]["mean_diff"] == pytest.approx(0.1) and paired["gamma=1"]["losses"] == 3
    md = report.markdown(a["summary"], "mn")
    assert "val loss (lower is better)" in md and "these are the validation values" in md


def test_resampled_arms_are_not_fixed_gamma_arms():
    # the best fixed gamma (the paired tests' reference) is chosen among focal losses without resampling
    plain = {"config": {"loss": "focal", "gamma": 1.0}}
    assert an.is_fixed_gamma(plain)
    assert an.is_fixed_gamma({"config": {**plain["config"], "sampler": "none"}})
    assert not an.is_fixed_gamma({"config": {**plain["config"], "sampler": "sqrt"}})
    assert not an.is_fixed_gamma({"config": {**plain["config"], "policy": "pi"}})


def test_readme_block_written_between_the_markers(handmade, analysis, tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{report.README_START}\nold\n{report.README_END}\noutro\n")
    assert cli.main(["sweep", "report", "hm", "--storage", handmade, "--n-boot", "200", "--readme", str(readme),
                     "--top", "3"]) == 0
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("outro\n") and "old" not in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| rank")]
    board = analysis["leaderboard"]
    assert len(rows) == 3 and [r.split(" | ")[1] for r in rows] == [b["arm"] for b in board[:3]]
    ref = analysis["reference"]
    paired = {p["arm"]: p for p in analysis["paired"]}
    for row, b in zip(rows, board[:3]):  # the paired difference from the best fixed gamma, as the report has it
        cell = row.split(" | ")[3]
        assert cell == "(reference)" if b["arm"] == ref else cell.startswith(f"{paired[b['arm']]['mean_diff']:+.3f}")
    missing = tmp_path / "NOMARK.md"
    missing.write_text("no block\n")
    assert cli.main(["sweep", "report", "hm", "--storage", handmade, "--readme", str(missing)]) == 2
    assert "has no <!-- leaderboards:start -->" in capsys.readouterr().err and missing.read_text() == "no block\n"


def test_across_seeds_selection_needs_every_seed():
    """An arm tuned across seeds: the selected configuration is the best mean validation metric among trials
    that ran every seed, even when a trial stopped early has a higher mean on the seeds it ran; the tuning-cost
    curve charges each trial the seeds it ran."""

    def run(number, val, test):
        return {"number": number, "state": "COMPLETE", "val": {"balanced_accuracy": val},
                "test": {"balanced_accuracy": test, "ece": 0.1}, "seconds": 1.0, "gamma": None}

    vals = {0: [0.70, 0.72, 0.74], 1: [0.95, 0.93, None], 2: [0.80, 0.78, 0.76], 3: [0.80, 0.80, 0.74]}
    units = {"study": "s", "dataset": "digits-lt", "metric": "balanced_accuracy",
             "arms": {"gamma=tpe@seeds": {"config": {"loss": "focal"}, "across_seeds": True, "wilcoxon_p": 0.1,
                                          "space": {"gamma": ["gamma", ["float", 0.0, 5.0, False]]}}},
             "units": {"gamma=tpe@seeds": {s: [run(n, v[s], v[s] - 0.1) for n, v in vals.items() if v[s] is not None]
                                           for s in range(3)}},
             "across_seeds": {"gamma=tpe@seeds": {"seeds": [0, 1, 2], "trials": [
                 {"number": n, "state": "COMPLETE", "pruned": n == 1,
                  "seeds_evaluated": [s for s in (2, 0, 1) if v[s] is not None]} for n, v in vals.items()]}}}
    chosen = results.selected(units)["gamma=tpe@seeds"]
    # trials 2 and 3 tie at 0.78 (trial 2 comes first); trial 1 (0.94 on two seeds) ran only two seeds
    assert {s: t["number"] for s, t in chosen.items()} == {0: 2, 1: 2, 2: 2}
    a = an.analyse(units, n_boot=50)
    assert a["summary"]["arms"]["gamma=tpe@seeds"] == {0: pytest.approx(0.70), 1: pytest.approx(0.68),
                                                       2: pytest.approx(0.66)}
    assert a["leaderboard"][0]["trials"] == 11 and a["leaderboard"][0]["kind"] == "tuned across seeds"
    curve = a["tuning_cost"]["curves"]["gamma=tpe@seeds"]
    assert [r["runs"] for r in curve] == [3, 5, 8, 11]
    assert [r["best_val_mean"] for r in curve] == pytest.approx([0.72, 0.72, 0.78, 0.78])


def test_compare_with_an_equivalence_margin(tmp_path, monkeypatch):
    """compare(margin=...): the verdicts reach Comparison.paired; a bad margin fails before anything runs."""
    from adaptive_focal.compare import compare

    monkeypatch.chdir(tmp_path)
    kwargs = {"mode": "softmax", "metric": "score", "seeds": 2, "trials": 2, "arms": ["gamma=0", "gamma=2"],
              "progress": False}
    # linear: gamma 2 is 0.2 below gamma 0 on every seed
    wide = compare("helpers.objectives:linear", storage="c.log", out="o", margin=0.5, **kwargs)
    assert wide.paired["gamma=2"]["equivalent"] is True and "within ±0.5" in wide.markdown
    narrow = compare("helpers.objectives:linear", storage="c.log", out="o2", margin=0.1, **kwargs)
    assert narrow.paired["gamma=2"]["equivalent"] is False
    with pytest.raises(ValueError, match="margin must be a positive number, got 0"):
        compare("helpers.objectives:linear", storage="d.log", margin=0, **kwargs)
    assert not (tmp_path / "d.log").exists()

