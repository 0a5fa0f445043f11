"""adaptive_focal.compare.runner: a study end to end, resume, parallel workers, killed and frozen workers, the atomic
set-up under racing commands, arms tuned across seeds with the Wilcoxon pruner, failures made visible, and bad input
refused before anything is written. The objective is ``helpers.objectives.linear`` (instant, exactly predictable)."""

import multiprocessing
import os
import signal
import time

import pytest

optuna = pytest.importorskip("optuna")
from optuna.trial import TrialState  # noqa: E402

from adaptive_focal.compare import analysis, results, runner  # noqa: E402
from adaptive_focal.compare.runner import StudyMismatchError, TrialsFailedError  # noqa: E402
from adaptive_focal.compare.storage import open_storage  # noqa: E402
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
