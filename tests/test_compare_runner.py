"""adaptive_focal.compare.runner: a study end to end, resume, parallel workers, killed and frozen workers, the atomic
set-up under racing commands, the pruning protocols of arms tuned per seed (a slow-starting winner that only the
per-epoch MedianPruner removes), arms tuned across seeds with the Wilcoxon pruner, failures made visible, and bad
input refused before anything is written. The objective is ``helpers.objectives.linear`` (instant, exactly
predictable) unless a test says otherwise."""

import multiprocessing
import os
import signal
import time

import pytest

optuna = pytest.importorskip("optuna")
from optuna.trial import TrialState  # noqa: E402

from adaptive_focal import cli  # noqa: E402
from adaptive_focal.compare import analysis, parse_arm, report, results, runner  # noqa: E402
from adaptive_focal.compare.options import RunOptions  # noqa: E402
from adaptive_focal.compare.runner import StudyMismatchError, TrialsFailedError  # noqa: E402
from adaptive_focal.compare.storage import open_storage  # noqa: E402
from helpers.objectives import SLOW_START_EPOCHS, slow_start_curve  # noqa: E402
from helpers.processes import sigkill_when  # noqa: E402
from helpers.studies import linear_study, opts  # noqa: E402


def _unit(storage, name):
    return optuna.load_study(study_name=name, storage=open_storage(str(storage)))


def _states(storage, study, seeds=None) -> dict:
    """unit name -> list of trial states."""
    st = open_storage(str(storage))
    return {name: [t.state for t in optuna.load_study(study_name=name, storage=st).trials]
            for _, _, name in runner.units_of(study, seeds or study.seeds)}


def _assert_done(storage, study, trials, seeds=None):
    for name, states in _states(storage, study, seeds).items():
        expected = trials if "tpe" in name else 1
        done = sum(s in (TrialState.COMPLETE, TrialState.PRUNED) for s in states)
        assert done == expected, (name, states)
        assert not any(s in (TrialState.RUNNING, TrialState.WAITING) for s in states), (name, states)


def test_end_to_end_resume_and_top_up(tmp_path):
    study, log = linear_study(), tmp_path / "lin.log"
    summary = runner.run(study, opts(log))
    assert summary["errors"] == [] and summary["failed_units"] == []
    assert summary["after"]["waiting"] == summary["after"]["running"] == 0
    _assert_done(log, study, trials=3)
    trial = _unit(log, "lin/gamma=2/seed1").trials[0]
    a = trial.user_attrs
    assert a["arm"] == "gamma=2" and a["seed"] == 1 and a["config"] == {"loss": "focal", "gamma": 2.0}
    assert a["val_metrics"] == {"score": pytest.approx(0.71), "ece": 0.1}
    assert a["test_metrics"] == {"score": pytest.approx(0.66), "ece": 0.1}
    assert trial.value == pytest.approx(0.71) and set(a["versions"]) == {"adaptive_focal", "torch", "python"}
    tuned = _unit(log, "lin/gamma=tpe/seed0").trials
    for t in tuned:
        assert t.user_attrs["config"] == {"loss": "focal", "gamma": t.params["gamma"]}
    # the same call again runs nothing; a larger budget and more seeds top up only what is missing
    assert runner.run(study, opts(log))["after"] == summary["after"]
    runner.run(study, opts(log, trials=4, seeds=3))
    _assert_done(log, study, trials=4, seeds=3)


def test_two_workers_share_the_study(tmp_path):
    study, log = linear_study(arms=("gamma=0", "gamma=tpe")), tmp_path / "w2.log"
    summary = runner.run(study, opts(log, workers=2))
    assert summary["errors"] == []
    _assert_done(log, study, trials=3)


def test_multi_objective_metric_vs_ece(tmp_path):
    study, log = linear_study(arms=("gamma=tpe",), seeds=1, trials=2), tmp_path / "mo.log"
    runner.run(study, opts(log, multi_objective=True))
    unit = _unit(log, "lin/gamma=tpe/seed0")
    assert [d.name for d in unit.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert [t.values[1] for t in unit.trials] == [0.1, 0.1]
    with pytest.raises(TrialsFailedError, match="has no 'ece' \\(needed by this run\\)"):
        runner.run(linear_study(arms=("gamma=0",), seeds=1, objective="helpers.objectives:val_only",
                                metric="loss", name="v"), opts(tmp_path / "v.log", multi_objective=True))


def _sleepy_worker(study, storage):
    runner.work(study, opts(storage, heartbeat_interval=0.5, grace_period=2.0))


def test_killed_worker_trial_is_retried_once(tmp_path):
    study, log = linear_study(arms=("gamma=0", "gamma=2"), seeds=1), tmp_path / "kill.log"
    runner.setup(open_storage(str(log)), study, seeds=1, trials=1)
    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(target=_sleepy_worker, args=(study.replace(trial_pause_s=60.0), str(log)))
    proc.start()
    sigkill_when(proc, lambda: any(TrialState.RUNNING in s for s in _states(log, study).values()), 60,
                 "the worker never started a trial")
    summary = runner.run(study, opts(log, heartbeat_interval=0.5, grace_period=2.0))
    assert summary["errors"] == []
    final = _states(log, study)
    for name, states in final.items():
        assert states.count(TrialState.COMPLETE) == 1, (name, states)  # none lost, none counted twice
    assert sum(s.count(TrialState.FAIL) for s in final.values()) == 1  # the killed one, retried
    st = open_storage(str(log))
    killed = [t for name in final for t in optuna.load_study(study_name=name, storage=st).trials
              if t.state == TrialState.FAIL][0]
    assert "no heartbeat" in killed.system_attrs["fail_reason"]


def _frozen_worker(study, storage, done):
    counts = runner.work(study, opts(storage, heartbeat_interval=0.5, grace_period=2.0))
    done.put(counts)


def test_a_frozen_worker_that_wakes_after_its_trial_was_retried_discards_its_result(tmp_path):
    """Defect 5: a worker frozen longer than the grace period crashed on waking (UpdateFinishedTrialError at the
    set_user_attr before the guarded tell)."""
    study, log = linear_study(arms=("gamma=2",), seeds=1), tmp_path / "frozen.log"
    runner.setup(open_storage(str(log)), study, seeds=1, trials=1)
    ctx = multiprocessing.get_context("spawn")
    done = ctx.Queue()
    proc = ctx.Process(target=_frozen_worker, args=(study.replace(trial_pause_s=4.0), str(log), done))
    proc.start()
    deadline = time.time() + 60
    while not any(TrialState.RUNNING in s for s in _states(log, study).values()):
        assert time.time() < deadline, "the worker never started a trial"
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGSTOP)  # frozen: no heartbeat, no progress
    try:
        summary = runner.run(study, opts(log, heartbeat_interval=0.5, grace_period=2.0))  # retries it meanwhile
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    assert summary["errors"] == []
    proc.join(60)
    assert proc.exitcode == 0  # woke, found its trial failed and retried, and stopped without an error
    assert done.get(timeout=5)["taken-over"] == 1
    trials = _unit(log, "lin/gamma=2/seed0").trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert "test_metrics" not in trials[0].user_attrs  # the stale result was not written onto the failed trial


def _racer(study, storage, barrier, out, rounds):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for i in range(rounds):
        path = f"{storage}.{i}"
        barrier.wait()
        try:
            runner.setup(open_storage(path), study, seeds=study.seeds, trials=study.trials)
            out.put((i, study.name, "ok"))
        except StudyMismatchError:
            out.put((i, study.name, "refused"))


@pytest.mark.parametrize("same", [False, True])
def test_racing_setups_one_wins_and_nothing_is_enqueued_twice(tmp_path, same):
    """Defect 2: two commands started at the same moment with different arms both passed the study check in about
    half the attempts. Now one creates the study and the other is refused before writing; with the same arms,
    no unit is topped up twice."""
    rounds = 12
    a = linear_study(name="race", arms=("gamma=0", "gamma=tpe"), seeds=2, trials=2, meta={"epochs": 10})
    b = a if same else a.replace(meta={"epochs": 20})  # `--set epochs=20` of a repository study
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(2), ctx.Queue()
    base = str(tmp_path / "race.log")
    procs = [ctx.Process(target=_racer, args=(s, base, barrier, out, rounds)) for s in (a, b)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(180)
        assert p.exitcode == 0
    outcomes = {}
    while not out.empty():
        i, _, what = out.get()
        outcomes.setdefault(i, []).append(what)
    assert sorted(outcomes) == list(range(rounds))
    for i, whats in outcomes.items():
        st = open_storage(f"{base}.{i}")
        stored = optuna.load_study(study_name="race", storage=st).user_attrs["arms"]
        if same:
            assert whats == ["ok", "ok"]
        else:
            assert sorted(whats) == ["ok", "refused"], (i, whats)
        for arm in stored:
            for seed in range(2):
                unit = optuna.load_study(study_name=f"race/{arm}/seed{seed}", storage=st)
                assert len(unit.trials) == (2 if arm == "gamma=tpe" else 1), (i, arm, seed)


# -- failures are visible ----------------------------------------------------------------------------------------
def test_every_trial_failing_is_an_error_with_the_first_traceback(tmp_path, capsys):
    study = linear_study(arms=("gamma=0", "gamma=2"), objective="helpers.objectives:fails", name="f")
    with pytest.raises(TrialsFailedError, match="every trial failed in 4 unit\\(s\\) of study 'f' .*the first error: "
                                                "ValueError: boom on seed 0"):
        runner.run(study, opts(tmp_path / "f.log"))
    err = capsys.readouterr().err
    assert err.count("Traceback (most recent call last)") == 1 and 'raise ValueError(f"boom on seed' in err
    assert err.count("failed: ValueError: boom on seed") == 3  # later failures: one line each
    trial = _unit(tmp_path / "f.log", "f/gamma=0/seed0").trials[0]
    assert trial.state == TrialState.FAIL and trial.user_attrs["error"] == "ValueError: boom on seed 0"
    assert "helpers/objectives.py" in trial.user_attrs["traceback"]


def test_failing_units_are_named_and_the_others_still_count(tmp_path):
    study = linear_study(arms=("gamma=0", "policy=automated"), seeds=1, objective="helpers.objectives:fails_on_policy",
                         name="p")
    with pytest.raises(TrialsFailedError, match="every trial failed in 1 unit\\(s\\) of study 'p' "
                                                "\\(p/policy=automated/seed0\\).*RuntimeError: this objective cannot"):
        runner.run(study, opts(tmp_path / "p.log"))
    units = results.load_units(open_storage(str(tmp_path / "p.log")), "p")
    assert [t["state"] for t in units["units"]["gamma=0"][0]] == ["COMPLETE"]


def test_an_objective_that_breaks_the_contract_is_named(tmp_path):
    study = linear_study(arms=("gamma=0",), seeds=1, objective="helpers.objectives:missing_metric", name="m")
    with pytest.raises(TrialsFailedError, match="ObjectiveError: the objective's 'val' has no 'score' \\(the "
                                                "study's metric\\); it has: accuracy"):
        runner.run(study, opts(tmp_path / "m.log"))


# -- arms tuned across seeds ---------------------------------------------------------------------------------------
def test_across_seeds_end_to_end_resume_and_report(tmp_path):
    study = linear_study(name="ac", arms=("gamma=0", "gamma=2"), tuned_across=("gamma=tpe",), seeds=3, trials=3)
    log = tmp_path / "ac.log"
    summary = runner.run(study, opts(log))
    assert summary["errors"] == []
    st = open_storage(str(log))
    names = set(optuna.get_all_study_names(st))
    assert names == {"ac"} | {f"ac/gamma={g}/seed{s}" for g in (0, 2) for s in range(3)} | {"ac/gamma=tpe@seeds/seeds"}
    unit = _unit(log, "ac/gamma=tpe@seeds/seeds")
    assert unit.user_attrs["seeds"] == [0, 1, 2]
    trials = unit.trials
    # 3 seeds: the pruner cannot stop anything before the last seed, so every trial trains on every seed
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    for t in trials:
        a = t.user_attrs
        assert sorted(a["seeds"]) == [0, 1, 2] and a["seeds_evaluated"] == a["seeds"] and a["pruned"] is False
        assert set(a["per_seed"]) == {"0", "1", "2"} and "seed" not in a["config"]
        for s, run in a["per_seed"].items():
            assert run["config"] == {**a["config"], "seed": int(s)}
            assert run["val_metrics"]["score"] == pytest.approx(0.9 - 0.1 * t.params["gamma"] + 0.01 * int(s))
        vals = [a["per_seed"][str(s)]["val_metrics"]["score"] for s in range(3)]
        assert t.value == pytest.approx(sum(vals) / 3, abs=1e-12)
        assert t.intermediate_values == {s: pytest.approx(v) for s, v in enumerate(vals)}
    best = max(trials, key=lambda t: (t.value, -t.number))
    a = analysis.analyse(results.load_units(st, "ac"), n_boot=200)
    tests = [best.user_attrs["per_seed"][str(s)]["test_metrics"]["score"] for s in range(3)]
    assert a["summary"]["arms"]["gamma=tpe@seeds"] == dict(enumerate(tests))
    rows = {r["arm"]: r for r in a["leaderboard"]}
    assert rows["gamma=tpe@seeds"]["kind"] == "tuned across seeds" and rows["gamma=tpe@seeds"]["trials"] == 9
    curve = a["tuning_cost"]["curves"]["gamma=tpe@seeds"]
    assert [(r["trials"], r["runs"]) for r in curve] == [(1.0, 3), (2.0, 6), (3.0, 9)]
    # the same command again runs nothing; a larger budget tops the unit up by whole trials
    assert runner.run(study, opts(log))["after"] == summary["after"]
    runner.run(study, opts(log, trials=4))
    assert [t.state for t in _unit(log, "ac/gamma=tpe@seeds/seeds").trials] == [TrialState.COMPLETE] * 4
    # another number of seeds would change what its trials' means are over: refused, nothing written
    before = log.read_bytes()
    with pytest.raises(StudyMismatchError, match="arm 'gamma=tpe@seeds' of study 'ac' is tuned across seeds "
                                                 "\\[0, 1, 2\\] in this storage; this run asks for seeds "
                                                 "\\[0, 1, 2, 3\\] \\(--seeds 4\\)"):
        runner.run(study, opts(log, seeds=4))
    assert log.read_bytes() == before


class _FixedSampler(optuna.samplers.BaseSampler):
    """Samples ``values[trial.number]`` for every parameter (the test decides which configuration comes when)."""

    def __init__(self, values):
        self.values = values

    def infer_relative_search_space(self, study, trial):
        return {}

    def sample_relative(self, study, trial, search_space):
        return {}

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self.values[trial.number]


@pytest.mark.parametrize("prune", [True, False])
def test_wilcoxon_pruner_stops_a_configuration_worse_on_every_seed(tmp_path, monkeypatch, prune):
    gammas = [0.0, 4.0, 0.0, 2.0]
    monkeypatch.setattr(runner, "_sampler", lambda name, worker_id, trials: _FixedSampler(gammas))
    study = linear_study(name="wx", arms=(), tuned_across=("gamma=tpe",), seeds=5, trials=4)
    log = tmp_path / "wx.log"
    runner.run(study, opts(log, prune=prune))
    trials = _unit(log, "wx/gamma=tpe@seeds/seeds").trials
    assert [t.params["gamma"] for t in trials] == gammas and all(t.state == TrialState.COMPLETE for t in trials)
    # trial 0 is the best; trials 1 and 3 are worse on every seed: after 4 of 5 seeds the exact one-sided Wilcoxon
    # p is 2^-4 = 0.0625 < 0.1, so the pruner stops them there. Without pruning every trial runs every seed.
    expected = [5, 4, 5, 4] if prune else [5, 5, 5, 5]
    assert [len(t.user_attrs["seeds_evaluated"]) for t in trials] == expected
    assert [t.user_attrs["pruned"] for t in trials] == [n < 5 for n in expected]
    for t in trials:
        done = t.user_attrs["seeds_evaluated"]
        vals = [0.9 - 0.1 * t.params["gamma"] + 0.01 * s for s in done]
        assert t.value == pytest.approx(sum(vals) / len(vals), abs=1e-12)  # the mean of the seeds it ran
    a = analysis.analyse(results.load_units(open_storage(str(log)), "wx"), n_boot=100)
    assert a["summary"]["arms"]["gamma=tpe@seeds"] == {s: pytest.approx(0.85 + 0.01 * s) for s in range(5)}
    runs = [sum(expected[:k + 1]) for k in range(4)]
    assert [r["runs"] for r in a["tuning_cost"]["curves"]["gamma=tpe@seeds"]] == runs


# -- the pruning protocol of arms tuned per seed ---------------------------------------------------------------------
#: the gammas TPE "samples" in the slow-start studies, trial by trial (the same on every seed)
SLOW_GAMMAS = [2.0, 3.0, 0.0, 1.0, 4.0]
C, P = TrialState.COMPLETE, TrialState.PRUNED


def _slow_study(name="slow", trials=5):
    return linear_study(name=name, arms=("gamma=0", "gamma=2", "gamma=tpe"), seeds=2, trials=trials,
                        objective="helpers.objectives:slow_start")


@pytest.mark.parametrize("pruner", [None, "none", "late", "median"])
def test_a_slow_starting_winner_is_removed_only_by_the_median_pruner(tmp_path, monkeypatch, pruner):
    """The stored case of the protocol issue (gauss-lt: every TPE trial with gamma < 0.5 pruned though gamma 0 is
    best), built with an instant objective: the smaller gamma, the slower the validation metric rises and the
    higher it ends. MedianPruner (from the first epoch) prunes the gamma-0 configuration that would have won, so
    the tuned arm selects gamma 2 and falls below the grid; the default (no pruning) and the late pruner keep it,
    and the report selects it. With None the run uses the default pruner: on a version whose default is
    MedianPruner this test fails."""
    monkeypatch.setattr(runner, "_sampler", lambda name, worker_id, trials: _FixedSampler(SLOW_GAMMAS))
    study, log = _slow_study(), tmp_path / "slow.log"
    runner.run(study, opts(log) if pruner is None else opts(log, pruner=pruner))
    # Median (2 startup trials, gamma 2 and 3, complete): after epoch 1 gamma 0 (0.399) and gamma 1 (0.455) are
    # below the median of 0.490 and 0.509; gamma 4 (0.519) survives epoch 1 but its best, 0.5545, is below the
    # median 0.5553 after epoch 2. Late: nothing is judged before epoch 8 of 10, where gamma 0 (0.588) and gamma 1
    # (0.590) are above the completed trials' median and gamma 4 (0.560) is below it.
    expected, stopped_at = {"median": ([C, C, P, P, P], {2: 1, 3: 1, 4: 2}),
                            "late": ([C, C, C, C, P], {4: 8})}.get(pruner, ([C] * 5, {}))
    for seed in range(2):
        trials = _unit(log, f"slow/gamma=tpe/seed{seed}").trials
        assert [t.params["gamma"] for t in trials] == SLOW_GAMMAS
        assert [t.state for t in trials] == expected, (pruner, seed)
        for t in trials:
            assert t.last_step == stopped_at.get(t.number, SLOW_START_EPOCHS if pruner in ("late", "median") else None)
    st = open_storage(str(log), write=False)
    assert optuna.load_study(study_name="slow", storage=st).user_attrs.get("pruner") == \
        {"median": None, "late": "late"}.get(pruner, "none")  # no key: MedianPruner, as in the committed studies
    # the report: the tuned arm selects the winner, gamma 0 (trial 2), unless the pruner removed it
    a = analysis.analyse(results.load_units(st, "slow"), n_boot=100)
    chosen = {r["seed"]: r["trial"] for r in a["per_seed"] if r["arm"] == "gamma=tpe"}
    winner = 0 if pruner == "median" else 2
    assert chosen == {0: winner, 1: winner}
    assert a["reference"] == "gamma=0"
    tpe = next(r for r in a["paired"] if r["arm"] == "gamma=tpe")
    best_gamma = SLOW_GAMMAS[winner]
    assert tpe["mean_diff"] == pytest.approx(slow_start_curve(best_gamma, 0, 10) - slow_start_curve(0.0, 0, 10),
                                             abs=1e-12)
    row = next(r for r in a["leaderboard"] if r["arm"] == "gamma=tpe")
    assert (row["runs"], row["runs_completed"], row["runs_pruned"]) == (10, 2 * expected.count(C),
                                                                      2 * expected.count(P))
    md = report.analysis_markdown(a)
    said = "Pruning left this arm fewer completed runs than started: gamma=tpe"
    assert (said in md) == (pruner in ("late", "median"))
    assert f"Pruner of the arms tuned per seed: `{pruner or 'none'}`" in md


def test_a_study_keeps_its_pruner(tmp_path):
    log = tmp_path / "keep.log"
    study = linear_study(name="keep", arms=("gamma=0", "gamma=tpe"), seeds=1, trials=2)
    runner.run(study, opts(log, pruner="late"))
    before = log.read_bytes()
    with pytest.raises(StudyMismatchError, match="made with pruner 'late'; this run asks for pruner 'none'. Continue "
                                                 "it with --pruner late"):
        runner.run(study, opts(log))
    with pytest.raises(StudyMismatchError, match="pruner 'late'; this run asks for pruner 'none'"):
        runner.run(study, opts(log, pruner="late", prune=False))  # --no-prune is no pruning
    assert log.read_bytes() == before
    runner.run(study, opts(log, pruner="late", trials=3))  # the same pruner tops it up
    # a study without the key (made with MedianPruner, or before the key existed) continues with median or none
    old = tmp_path / "old.log"
    runner.run(study, opts(old, pruner="median"))
    assert "pruner" not in optuna.load_study(study_name="keep", storage=open_storage(str(old))).user_attrs
    runner.run(study, opts(old, pruner="median", trials=3))
    runner.run(study, opts(old, pruner="none", trials=3))
    with pytest.raises(StudyMismatchError, match="made with MedianPruner from the first epoch \\(no recorded "
                                                 "pruner\\); this run asks for pruner 'late'"):
        runner.run(study, opts(old, pruner="late"))
    # the pruner is not part of a study without arms tuned per seed: nothing recorded, nothing checked
    fixed = linear_study(name="fixed", arms=("gamma=0", "gamma=2"), seeds=1)
    runner.run(fixed, opts(tmp_path / "f.log", pruner="late"))
    assert "pruner" not in optuna.load_study(study_name="fixed", storage=open_storage(str(tmp_path / "f.log"))) \
        .user_attrs
    runner.run(fixed, opts(tmp_path / "f.log", pruner="median"))


def test_a_study_keeps_its_wilcoxon_setting(tmp_path, monkeypatch):
    """--no-prune switches off the WilcoxonPruner of arms tuned across seeds, which changes which trials run every
    seed: the manifest records it and a study is not continued with the other setting, nothing written."""
    monkeypatch.setattr(runner, "_sampler", lambda name, worker_id, trials: _FixedSampler([0.0, 4.0, 0.0, 2.0]))
    study = linear_study(name="wk", arms=(), tuned_across=("gamma=tpe",), seeds=3, trials=1)
    off, on = tmp_path / "off.log", tmp_path / "on.log"
    runner.run(study, opts(off, prune=False))
    runner.run(study, opts(on))

    def attrs(log):
        return optuna.load_study(study_name="wk", storage=open_storage(str(log))).user_attrs

    assert attrs(off)["wilcoxon_pruner"] is False and "wilcoxon_pruner" not in attrs(on)  # no key: on
    for log, prune, match in ((off, True, "WilcoxonPruner off \\(--no-prune\\) for its arms tuned across seeds; "
                                          "this run has it on. Continue it with --no-prune"),
                              (on, False, "WilcoxonPruner on for its arms tuned across seeds; this run has it off "
                                          "\\(--no-prune\\). Continue it without --no-prune")):
        before = log.read_bytes()
        with pytest.raises(StudyMismatchError, match=match):
            runner.run(study, opts(log, prune=prune, trials=2))
        assert log.read_bytes() == before
    runner.run(study, opts(off, prune=False, trials=2))  # the same setting tops it up
    assert len(_unit(off, "wk/gamma=tpe@seeds/seeds").trials) == 2
    # a study without arms tuned across seeds records and checks nothing
    fixed = linear_study(name="wk2", arms=("gamma=0",), seeds=1)
    runner.run(fixed, opts(tmp_path / "f.log", prune=False))
    runner.run(fixed, opts(tmp_path / "f.log", prune=True))
    assert "wilcoxon_pruner" not in optuna.load_study(study_name="wk2", storage=open_storage(str(tmp_path / "f.log"))) \
        .user_attrs


def _trial_with_values(study, values: dict):
    study.add_trial(optuna.trial.create_trial(value=list(values.values())[-1], intermediate_values=values))


@pytest.mark.parametrize("first_step", [0, 1])
def test_late_pruner_acts_only_in_the_last_fifth_of_the_reported_steps(first_step):
    pruner = runner.LatePruner(n_startup_trials=1)
    study = optuna.create_study(direction="maximize", pruner=pruner)
    steps = list(range(first_step, first_step + 10))
    bad = study.ask()
    bad.report(0.1, steps[8])
    assert pruner.window(study) is None and not bad.should_prune()  # nothing completed: no schedule yet
    _trial_with_values(study, {s: 0.5 for s in steps})
    assert pruner.window(study) == (steps[7], steps[9])  # from the 8th of 10 steps, never at the last
    for k, step in enumerate(steps):
        trial = study.ask()
        trial.report(0.1, step)  # far below the completed trial: pruned wherever the window allows
        assert trial.should_prune() == (7 <= k < 9), step
        good = study.ask()
        good.report(0.9, step)
        assert not good.should_prune()
    # 3 epochs: ceil(0.8 * 3) = 3, the last step: never pruned; fraction 1 never prunes
    short = optuna.create_study(direction="maximize", pruner=runner.LatePruner(n_startup_trials=1))
    _trial_with_values(short, {1: 0.5, 2: 0.5, 3: 0.5})
    assert short.pruner.window(short) == (3, 3)
    for fraction in (0, -0.1, 1.5, True):
        with pytest.raises(ValueError, match="fraction must be a number in \\(0, 1\\]"):
            runner.LatePruner(fraction)


def test_the_pruners_and_the_option():
    tuned = parse_arm("gamma=tpe")
    median = runner._pruner(tuned, 10, "median")  # the committed studies' pruner, unchanged
    assert type(median) is optuna.pruners.MedianPruner
    assert (median._n_startup_trials, median._n_warmup_steps) == (3, 1)
    assert isinstance(runner._pruner(tuned, 10, "late"), runner.LatePruner)
    assert isinstance(runner._pruner(tuned, 10, "none"), optuna.pruners.NopPruner)
    assert isinstance(runner._pruner(parse_arm("gamma=tpe@seeds"), 10, "none"), optuna.pruners.WilcoxonPruner)
    assert RunOptions().pruner == "none" == RunOptions().epoch_pruner
    assert RunOptions(pruner="late").epoch_pruner == "late"
    assert RunOptions(pruner="late", prune=False).epoch_pruner == "none"
    assert RunOptions(pruner="median", multi_objective=True).epoch_pruner == "none"
    with pytest.raises(ValueError, match="pruner must be one of 'none', 'late', 'median', got 'early'"):
        RunOptions(pruner="early")
    args = cli.parser().parse_args(["sweep", "run", "digits-lt", "--pruner", "late"])
    assert cli._run_options(args).pruner == "late"
    assert cli.parser().parse_args(["compare", "m.py:f", "--mode", "softmax", "--metric", "x"]).pruner == "none"
    with pytest.raises(SystemExit):
        cli.parser().parse_args(["sweep", "run", "digits-lt", "--pruner", "early"])


def _sleepy_across_worker(study, storage):
    runner.work(study, opts(storage, heartbeat_interval=0.5, grace_period=2.0))


def test_killed_worker_across_seeds_trial_is_retried_once(tmp_path):
    study = linear_study(name="ka", arms=(), tuned_across=("gamma=tpe",), seeds=2, trials=1)
    log = tmp_path / "ka.log"
    runner.setup(open_storage(str(log)), study, seeds=2, trials=1)
    name = "ka/gamma=tpe@seeds/seeds"
    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(target=_sleepy_across_worker, args=(study.replace(trial_pause_s=60.0), str(log)))
    proc.start()

    def first_seed_done():
        running = [t for t in _unit(log, name).trials if t.state == TrialState.RUNNING]
        return bool(running) and len(running[0].user_attrs.get("per_seed", {})) == 1

    sigkill_when(proc, first_seed_done, 60, "the worker never finished a first seed")
    summary = runner.run(study, opts(log, heartbeat_interval=0.5, grace_period=2.0))
    assert summary["errors"] == []
    killed, retried = _unit(log, name).trials
    assert (killed.state, retried.state) == (TrialState.FAIL, TrialState.COMPLETE)
    assert "no heartbeat" in killed.system_attrs["fail_reason"] and len(killed.user_attrs["per_seed"]) == 1
    assert retried.params == killed.params and set(retried.user_attrs["per_seed"]) == {"0", "1"}


# -- bad input ------------------------------------------------------------------------------------------------------
def test_study_with_other_settings_is_refused_and_left_intact(tmp_path):
    log = tmp_path / "m.log"
    runner.run(linear_study(arms=("gamma=0",), seeds=1), opts(log))
    before = log.read_bytes()
    with pytest.raises(StudyMismatchError, match="created with other arms \\(arms not in the stored study: "
                                                 "gamma=2\\). Stored arms: gamma=0"):
        runner.run(linear_study(arms=("gamma=0", "gamma=2"), seeds=1), opts(log))
    with pytest.raises(StudyMismatchError, match="created with directions \\['maximize'\\]"):
        runner.run(linear_study(arms=("gamma=0",), seeds=1), opts(log, multi_objective=True))
    with pytest.raises(StudyMismatchError, match="created with objective"):
        runner.run(linear_study(arms=("gamma=0",), seeds=1, meta={"objective": "other"}), opts(log))
    assert log.read_bytes() == before


def test_a_study_of_fresh_seeds(tmp_path):
    study, log = linear_study(name="fresh", arms=("gamma=0",), tuned_across=("gamma=tpe",), seeds=2, trials=1,
                              first_seed=1000), tmp_path / "fresh.log"
    runner.run(study, opts(log))
    st = open_storage(str(log))
    names = set(optuna.get_all_study_names(st))
    assert {"fresh/gamma=0/seed1000", "fresh/gamma=0/seed1001", "fresh/gamma=tpe@seeds/seeds"} <= names
    assert _unit(log, "fresh/gamma=tpe@seeds/seeds").user_attrs["seeds"] == [1000, 1001]
    assert optuna.load_study(study_name="fresh", storage=st).user_attrs["first_seed"] == 1000
    units = results.load_units(st, "fresh")
    assert sorted(units["units"]["gamma=0"]) == [1000, 1001] and "first_seed" not in units["meta"]
    assert units["units"]["gamma=0"][1001][0]["val"]["score"] == pytest.approx(0.9 + 10.01)  # the run's seed
    before = log.read_bytes()
    with pytest.raises(StudyMismatchError, match="starts at seed 1000; this run asks for seeds from 0"):
        runner.run(study.replace(first_seed=0), opts(log))
    assert log.read_bytes() == before
    with pytest.raises(ValueError, match="first_seed must be a non-negative integer, got -1"):
        study.replace(first_seed=-1)


def test_across_seeds_bad_input_fails_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match="arm 'gamma=tpe@seeds': an arm tuned across seeds needs seeds >= 2"):
        linear_study(tuned_across=("gamma=tpe",), seeds=1)
    study, log = linear_study(tuned_across=("gamma=tpe",), seeds=2), tmp_path / "bad.log"
    with pytest.raises(ValueError, match="seeds must be >= 2 for arms tuned across seeds \\(gamma=tpe@seeds\\)"):
        runner.run(study, opts(log, seeds=1))
    with pytest.raises(ValueError, match="multi-objective runs cannot include arms tuned across seeds"):
        runner.run(study, opts(log, multi_objective=True))
    assert not log.exists()


def test_run_options_are_checked():
    for kwargs, match in (({"workers": 0}, "workers must be a positive integer, got 0"),
                          ({"seeds": 0}, "seeds must be a positive integer, got 0"),
                          ({"grace_period": 1.0, "heartbeat_interval": 2.0}, "grace_period .* must be longer"),
                          ({"retry_seconds": -1}, "retry_seconds must be a positive number")):
        with pytest.raises(ValueError, match=match):
            opts("x.log", **kwargs)


def test_a_tuned_parameter_sets_its_key_inside_policy_kwargs_or_loss_kwargs():
    """A search-space key ``loss_kwargs.<name>`` (a focal term's gamma under logit adjustment) is written into the
    trial config's ``loss_kwargs`` dict next to what the arm fixes there, as ``policy_kwargs.<name>`` is; other
    keys stay top level."""
    from adaptive_focal.compare import Arm
    from adaptive_focal.compare.arms import GAMMA_SPACE

    arm = Arm("la+gamma=tpe", {"loss": "logit_adjusted", "loss_kwargs": {"tau": 1.0}},
              {"gamma": ("loss_kwargs.gamma", GAMMA_SPACE), "pi.kp": ("policy_kwargs.kp", ("float", 0.1, 1.0, False)),
               "lr": ("lr", ("float", 1e-3, 1e-2, True))})
    trial = optuna.create_study().ask()
    config, params = runner._trial_config(None, arm, trial)
    assert set(params) == {"gamma", "pi.kp", "lr"}
    assert config == {"loss": "logit_adjusted", "loss_kwargs": {"tau": 1.0, "gamma": params["gamma"]},
                      "policy_kwargs": {"kp": params["pi.kp"]}, "lr": params["lr"]}
    assert arm.config == {"loss": "logit_adjusted", "loss_kwargs": {"tau": 1.0}}  # the arm itself is untouched
