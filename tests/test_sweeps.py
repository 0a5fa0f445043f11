"""sweeps/: a tiny study end to end on the journal file, resume, parallel workers, a killed worker's trial
retried exactly once, bad input, and two workers against a throwaway PostgreSQL server."""

import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")
from optuna.trial import TrialState  # noqa: E402

from adaptive_focal import cli  # noqa: E402
from sweeps import report, runner  # noqa: E402
from sweeps.spec import GAMMA_GRID, Arm, Study, across_seeds, default_arms  # noqa: E402
from sweeps.studies import list_studies, load_study  # noqa: E402

TINY = {"n_max": 30, "n_val_per_class": 4, "n_test_per_class": 6}
ARMS = ("gamma=0", "gamma=2", "gamma=tpe", "policy=pi+tpe", "baseline=cb_ce")


def tiny_study(name="tiny", arms=ARMS, **changes) -> Study:
    chosen = {a.name: a for a in default_arms("digits-lt")}
    kwargs = dict(name=name, dataset="digits-lt", seeds=2, trials=3, dataset_kwargs=TINY,
                  overrides={"epochs": 1, "batch_size": 64}, arms=tuple(chosen[a] for a in arms))
    return Study(**{**kwargs, **changes})


def opts(storage, **kw) -> runner.RunOptions:
    return runner.RunOptions(storage=str(storage), progress=False, **kw)


def states(storage, study: Study, seeds=None) -> dict:
    """unit name -> list of trial states."""
    st = runner.open_storage(str(storage))
    out = {}
    for arm in study.arms:
        for seed in range(seeds or study.seeds):
            name = runner.unit_name(study, arm, seed)
            out[name] = [t.state for t in optuna.load_study(study_name=name, storage=st).trials]
    return out


def assert_done(storage, study, trials, seeds=None):
    for name, st in states(storage, study, seeds).items():
        expected = trials if "tpe" in name else 1
        done = sum(s in (TrialState.COMPLETE, TrialState.PRUNED) for s in st)
        assert done == expected, (name, st)
        assert not any(s in (TrialState.RUNNING, TrialState.WAITING) for s in st), (name, st)


# -- studies and the train hook ---------------------------------------------------------------------------------
def _sigkill_when(proc, ready, timeout: float, what: str) -> None:
    """Kills ``proc`` with SIGKILL as soon as ``ready()`` holds (polled); fails the test with ``what`` after
    ``timeout`` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if ready():
            break
        time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail(what)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()


def test_every_study_definition_loads_with_the_issue_arms():
    main = ["digits-lt", "mnist1d-lt", "gauss-lt", "dense-det", "seg-toy"]
    rho = [f"{d}-rho{r}" for d in ("digits-lt", "gauss-lt") for r in (1, 10, 100)]
    combos = [f"{d}-combos" for d in ("digits-lt", "gauss-lt", "mnist1d-lt")]
    assert list_studies() == main + ["digits-lt-across-seeds"] + rho + combos
    across = load_study("digits-lt-across-seeds")  # the grid, gamma=tpe per seed, three arms tuned across seeds
    assert [a.name for a in across.arms] == [f"gamma={g:g}" for g in GAMMA_GRID] + [
        "gamma=tpe", "gamma=tpe@seeds", "policy=pi+tpe@seeds", "policy=gammanet+tpe@seeds"]
    assert across.across_seeds_arms == ["gamma=tpe@seeds", "policy=pi+tpe@seeds", "policy=gammanet+tpe@seeds"]
    assert all(a.wilcoxon_p == 0.1 for a in across.arms) and across.seeds == 8 and across.trials == 10
    for name in main + rho + combos:  # per-seed protocol only: their stored manifests stay valid
        assert not load_study(name).across_seeds_arms
        assert all(set(a.record()) == {"config", "space"} for a in load_study(name).arms)
    for name in rho:  # the fixed-gamma grid only, at the study's imbalance ratio
        study = load_study(name)
        assert [a.name for a in study.arms] == [f"gamma={g:g}" for g in GAMMA_GRID] and study.seeds == 5
        assert study.dataset_kwargs == {"imbalance_ratio": float(name.rpartition("-rho")[2])}
    for name in combos:  # cross-entropy and focal loss, each with every sampler
        configs = {a.name: a.config for a in load_study(name).arms}
        assert configs["gamma=0"] == {"loss": "focal", "gamma": 0.0, "sampler": "none"}
        assert configs["gamma=2+class_balanced"] == {"loss": "focal", "gamma": 2.0, "sampler": "class_balanced"}
        assert len(configs) == 9 and load_study(name).seeds == 5
    for name in main:
        arms = {a.name for a in load_study(name).arms}
        assert {"gamma=0", "gamma=0.5", "gamma=1", "gamma=2", "gamma=3", "gamma=5", "gamma=tpe",
                "policy=pi", "policy=pi+tpe", "baseline=ghm"} <= arms
    assert "policy=adafocal" not in {a.name for a in load_study("dense-det").arms}
    assert "baseline=cb_focal" in {a.name for a in load_study("digits-lt").arms}


def test_train_epoch_callback_sees_every_epoch():
    from research.train import main

    seen = []
    main({"dataset": "digits-lt", "dataset_kwargs": TINY, "epochs": 2},
         epoch_callback=lambda e, val, rec: seen.append((e, round(val["balanced_accuracy"], 6), rec["epoch"])))
    assert [s[0] for s in seen] == [1, 2] and [s[2] for s in seen] == [1, 2]


# -- end to end, resume, workers -------------------------------------------------------------------------------
def test_tiny_study_end_to_end_and_resume(tmp_path, capsys):
    study, log = tiny_study(), tmp_path / "tiny.log"
    summary = runner.run(study, opts(log))
    assert summary["errors"] == [] and summary["after"]["waiting"] == summary["after"]["running"] == 0
    assert_done(log, study, trials=3)
    st = runner.open_storage(str(log))
    trial = optuna.load_study(study_name="tiny/gamma=tpe/seed1", storage=st).trials[0]
    assert trial.user_attrs["arm"] == "gamma=tpe" and trial.user_attrs["seed"] == 1
    if trial.state == TrialState.COMPLETE:
        assert "balanced_accuracy" in trial.user_attrs["test_metrics"]
        assert "balanced_accuracy" in trial.user_attrs["val_metrics"]
    text = report.report("tiny", str(log))
    assert "| gamma=0 |" in text and "balanced_accuracy" in text and text.count("\n| ") >= 6

    # the same command again runs nothing; a larger budget and more seeds top up only what is missing
    assert runner.run(study, opts(log))["after"] == summary["after"]
    runner.run(study, opts(log, trials=4, seeds=3))
    assert_done(log, study, trials=4, seeds=3)

    # the CLI report reads the same storage
    assert cli.main(["sweep", "report", "digits-lt", "--storage", str(log)]) == 2  # no study of that name there
    assert "no study 'digits-lt' in this storage; studies there: tiny" in capsys.readouterr().err


def test_two_workers_share_the_study(tmp_path):
    study, log = tiny_study(arms=("gamma=0", "gamma=tpe")), tmp_path / "w2.log"
    summary = runner.run(study, opts(log, workers=2))
    assert summary["errors"] == []
    assert_done(log, study, trials=3)


def test_multi_objective_balanced_accuracy_vs_ece(tmp_path):
    study, log = tiny_study(arms=("gamma=tpe",), seeds=1, trials=2), tmp_path / "mo.log"
    runner.run(study, opts(log, multi_objective=True))
    unit = optuna.load_study(study_name="tiny/gamma=tpe/seed0", storage=runner.open_storage(str(log)))
    assert [d.name for d in unit.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert [len(t.values) for t in unit.trials] == [2, 2]
    assert "| gamma=tpe |" in report.report("tiny", str(log))
    with pytest.raises(ValueError, match="multi-objective .* needs a multiclass data set; 'dense-det'"):
        runner.setup(None, load_study("dense-det"), seeds=1, trials=1, multi_objective=True)


def _sleepy_worker(study, storage):
    runner.work(study, opts(storage, heartbeat_interval=0.5, grace_period=2.0))


def test_killed_worker_trial_is_retried_once(tmp_path):
    study, log = tiny_study(arms=("gamma=0", "gamma=2")), tmp_path / "kill.log"
    st = runner.open_storage(str(log))
    runner.setup(st, study, seeds=1, trials=1)
    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(target=_sleepy_worker, args=(study.replace(seeds=1, trial_pause_s=60.0), str(log)))
    proc.start()
    _sigkill_when(proc, lambda: any(TrialState.RUNNING in s for s in states(log, study, seeds=1).values()), 30,
                  "the worker never started a trial")
    summary = runner.run(study, opts(log, seeds=1, heartbeat_interval=0.5, grace_period=2.0))
    assert summary["errors"] == []
    final = states(log, study, seeds=1)
    for name, st_ in final.items():
        assert st_.count(TrialState.COMPLETE) == 1, (name, st_)  # none lost, none counted twice
    assert sum(s.count(TrialState.FAIL) for s in final.values()) == 1  # the killed one, retried
    killed = [t for name in final for t in optuna.load_study(study_name=name, storage=st).trials
              if t.state == TrialState.FAIL][0]
    assert "no heartbeat" in killed.system_attrs["fail_reason"]


# -- bad input --------------------------------------------------------------------------------------------------
def test_bad_names_are_clear_errors(tmp_path, capsys):
    with pytest.raises(ValueError, match="unknown study 'nope'; studies: digits-lt, mnist1d-lt"):
        load_study("nope")
    with pytest.raises(ValueError, match="dataset must be one of .*digits-lt.*, got 'imagenet'"):
        Study(name="x", dataset="imagenet")
    with pytest.raises(ValueError, match="arm 'p': policy must be 'none' or one of .*, got 'magic'"):
        Study(name="x", dataset="digits-lt", arms=(Arm("p", {"policy": "magic"}),))
    with pytest.raises(ValueError, match="unknown arm\\(s\\) 'nope' for study 'digits-lt'; arms: gamma=0"):
        load_study("digits-lt").select_arms(["nope"])
    assert cli.main(["sweep", "run", "nope", "--storage", str(tmp_path / "x.log")]) == 2
    assert "unknown study 'nope'" in capsys.readouterr().err
    with pytest.raises(runner.StorageError, match="scheme must be one of postgresql, mysql, sqlite"):
        runner.open_storage("redis://localhost/0")
    with pytest.raises(runner.StorageError, match="SQLite is not for parallel workers"):
        runner.open_storage(f"sqlite:///{tmp_path}/x.db", workers=2)


def test_unreachable_database_fails_fast():
    pytest.importorskip("psycopg")
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.perf_counter()
    with pytest.raises(runner.StorageError, match=f"cannot open storage 'postgresql\\+psycopg://nobody:\\*\\*\\*@127.0.0.1:{port}"):
        runner.open_storage(f"postgresql://nobody:secret@127.0.0.1:{port}/db", connect_timeout=2)
    assert time.perf_counter() - start < 10


def test_study_with_other_arms_is_refused_and_left_intact(tmp_path):
    log = tmp_path / "m.log"
    runner.run(tiny_study(arms=("gamma=0",), seeds=1), opts(log))
    before = log.read_bytes()
    with pytest.raises(runner.StudyMismatchError, match="created with other arms \\(arms not in the stored study: "
                                                        "gamma=2\\). Stored arms: gamma=0"):
        runner.run(tiny_study(arms=("gamma=0", "gamma=2"), seeds=1), opts(log))
    changed = Study(name="tiny", dataset="digits-lt", seeds=1, dataset_kwargs=TINY,
                    overrides={"epochs": 2, "batch_size": 64}, arms=tiny_study(arms=("gamma=0",)).arms)
    with pytest.raises(runner.StudyMismatchError, match="created with overrides"):
        runner.run(changed, opts(log))
    with pytest.raises(runner.StudyMismatchError, match="created with directions \\['maximize'\\]"):
        runner.run(tiny_study(arms=("gamma=0",), seeds=1), opts(log, multi_objective=True))
    assert log.read_bytes() == before


def test_cli_stays_lazy():
    code = "import sys, adaptive_focal, adaptive_focal.cli; print(any(m in sys.modules for m in ('optuna', 'sweeps', 'research')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- PostgreSQL -------------------------------------------------------------------------------------------------
def _pg_bin(name):
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}")) if Path("/usr/lib/postgresql").is_dir() else []
    return str(found[-1]) if found else shutil.which(name)


@pytest.fixture
def postgres_url():
    pytest.importorskip("psycopg", reason="psycopg is needed for the PostgreSQL storage (test extra)")
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("no PostgreSQL binaries (initdb, pg_ctl); .ci/run installs them")
    prefix = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root: use its own user
        runuser = shutil.which("runuser")
        try:
            import pwd
            pwd.getpwnam("postgres")
        except KeyError:
            runuser = None
        if not runuser:
            pytest.skip("running as root without runuser or a 'postgres' user: cannot start PostgreSQL")
        prefix = [runuser, "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="af-pg-"))
    if prefix:
        shutil.chown(root, "postgres")
    data = root / "data"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run(prefix + [initdb, "-A", "trust", "-U", "postgres", "-D", str(data)], check=True,
                   capture_output=True, timeout=60)
    subprocess.run(prefix + [pg_ctl, "-D", str(data), "-l", str(root / "log"), "-w", "-t", "30", "-o",
                             f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off", "start"],
                   check=True, capture_output=True, timeout=60)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(prefix + [pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True,
                       timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def test_postgres_two_workers(postgres_url):
    study = tiny_study(arms=("gamma=0", "gamma=tpe"))
    summary = runner.run(study, opts(postgres_url, workers=2))
    assert summary["errors"] == []
    assert_done(postgres_url, study, trials=3)
    assert "| gamma=tpe |" in report.report("tiny", postgres_url)


# -- arms tuned across seeds (WilcoxonPruner over seeds) -----------------------------------------------------------
def across_study(name="tiny-across", arms=("gamma=0", "gamma=2"), tuned=("gamma=tpe",), **changes) -> Study:
    """The tiny study with the arms ``tuned`` tuned across seeds (``<arm>@seeds``)."""
    base = tiny_study(name=name, arms=arms + tuned)
    chosen = {a.name: a for a in base.arms}
    kwargs = {"seeds": 3, "arms": tuple(chosen[a] for a in arms) + tuple(across_seeds(chosen[a]) for a in tuned)}
    return base.replace(**{**kwargs, **changes})


def _unit(storage, name):
    return optuna.load_study(study_name=name, storage=runner.open_storage(str(storage)))


def test_across_seeds_study_end_to_end_resume_and_report(tmp_path):
    study, log = across_study(), tmp_path / "across.log"
    summary = runner.run(study, opts(log))
    assert summary["errors"] == [] and summary["after"]["waiting"] == summary["after"]["running"] == 0
    st = runner.open_storage(str(log))
    names = set(optuna.get_all_study_names(st))
    assert names == {"tiny-across"} | {f"tiny-across/gamma={g}/seed{s}" for g in (0, 2) for s in range(3)} | {
        "tiny-across/gamma=tpe@seeds/seeds"}
    unit = _unit(log, "tiny-across/gamma=tpe@seeds/seeds")
    assert unit.user_attrs["seeds"] == [0, 1, 2]
    trials = unit.trials
    # 3 seeds: the pruner cannot stop anything before the last seed (one-sided p >= 0.25 after 2), so every
    # trial trains on every seed
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    for t in trials:
        a = t.user_attrs
        assert sorted(a["seeds"]) == [0, 1, 2] and a["seeds_evaluated"] == a["seeds"] and a["pruned"] is False
        assert set(a["per_seed"]) == {"0", "1", "2"} and "seed" not in a["config"]
        for s, run in a["per_seed"].items():
            assert run["config"] == {**a["config"], "seed": int(s)}
            assert run["config"]["gamma"] == t.params["gamma"]
            assert "balanced_accuracy" in run["test_metrics"] and "balanced_accuracy" in run["val_metrics"]
        vals = [a["per_seed"][str(s)]["val_metrics"]["balanced_accuracy"] for s in range(3)]
        assert t.value == pytest.approx(sum(vals) / 3, abs=1e-12)
        assert t.intermediate_values == {s: pytest.approx(v) for s, v in enumerate(vals)}

    # the report: one configuration for every seed, the best mean validation metric among the trials
    best = max(trials, key=lambda t: (t.value, -t.number))
    a = report.analyse(report.load_units(st, "tiny-across"), n_boot=200)
    rows = {r["arm"]: r for r in a["leaderboard"]}
    tests = [best.user_attrs["per_seed"][str(s)]["test_metrics"]["balanced_accuracy"] for s in range(3)]
    assert a["summary"]["arms"]["gamma=tpe@seeds"] == dict(enumerate(tests))
    assert rows["gamma=tpe@seeds"]["mean"] == pytest.approx(sum(tests) / 3, abs=1e-12)
    assert rows["gamma=tpe@seeds"]["kind"] == "tuned across seeds" and rows["gamma=tpe@seeds"]["trials"] == 9
    assert {r["trial"] for r in a["per_seed"] if r["arm"] == "gamma=tpe@seeds"} == {best.number}
    paired = {r["arm"]: r for r in a["paired"]}
    assert "gamma=tpe@seeds" in paired and paired["gamma=tpe@seeds"]["n"] == 3
    curve = a["tuning_cost"]["curves"]["gamma=tpe@seeds"]
    assert [(r["trials"], r["runs"]) for r in curve] == [(1.0, 3), (2.0, 6), (3.0, 9)]
    assert curve[-1]["best_val_mean"] == pytest.approx(best.value, abs=1e-12)
    assert "| gamma=tpe@seeds |" in report.report("tiny-across", str(log))

    # the same command again runs nothing; a larger budget tops the across-seeds unit up by whole trials
    assert runner.run(study, opts(log))["after"] == summary["after"]
    runner.run(study, opts(log, trials=4))
    assert [t.state for t in _unit(log, "tiny-across/gamma=tpe@seeds/seeds").trials] == [TrialState.COMPLETE] * 4
    # another number of seeds would change what its trials' means are over: refused, nothing written
    before = log.read_bytes()
    with pytest.raises(runner.StudyMismatchError, match="arm 'gamma=tpe@seeds' of study 'tiny-across' is tuned "
                                                        "across seeds \\[0, 1, 2\\] in this storage; this run "
                                                        "asks for seeds \\[0, 1, 2, 3\\] \\(--seeds 4\\)"):
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


def _fake_train(calls):
    """research.train.main's stand-in: validation balanced accuracy 0.9 - 0.1 gamma + 0.01 seed (test 0.05
    lower); so a larger gamma is worse on every seed by the same margin."""

    def train(config, epoch_callback=None):
        calls.append((config["gamma"], config["seed"]))
        val = 0.9 - 0.1 * config["gamma"] + 0.01 * config["seed"]
        return {"metrics": {"balanced_accuracy": val - 0.05, "ece": 0.1},
                "val_metrics": {"balanced_accuracy": val, "ece": 0.1}, "seconds": 0.01, "gamma": {"epochs": []}}

    return train


@pytest.mark.parametrize("prune", [True, False])
def test_wilcoxon_pruner_stops_a_configuration_worse_on_every_seed(tmp_path, monkeypatch, prune):
    import research.train

    gammas = [0.0, 4.0, 0.0, 2.0]
    calls = []
    monkeypatch.setattr(research.train, "main", _fake_train(calls))
    monkeypatch.setattr(runner, "_sampler", lambda name, worker_id, trials: _FixedSampler(gammas))
    study, log = across_study(arms=(), seeds=5, trials=4), tmp_path / "wilcoxon.log"
    runner.run(study, opts(log, prune=prune))
    trials = _unit(log, "tiny-across/gamma=tpe@seeds/seeds").trials
    assert [t.params["gamma"] for t in trials] == gammas and all(t.state == TrialState.COMPLETE for t in trials)
    # trial 0 is the best; trials 1 and 3 are worse on every seed: after 4 of 5 seeds the exact one-sided
    # Wilcoxon p is 2^-4 = 0.0625 < 0.1 (after 2 and 3 seeds, 0.25 and 0.125), so the pruner stops them there.
    # Trial 2 ties the best and runs to the end. Without pruning every trial trains on every seed.
    expected = [5, 4, 5, 4] if prune else [5, 5, 5, 5]
    assert [len(t.user_attrs["seeds_evaluated"]) for t in trials] == expected
    assert [t.user_attrs["pruned"] for t in trials] == [n < 5 for n in expected]
    assert len(calls) == sum(expected)
    for t in trials:
        done = t.user_attrs["seeds_evaluated"]
        assert [int(s) for s in t.user_attrs["per_seed"]] == done and sorted(t.intermediate_values) == sorted(done)
        vals = [0.9 - 0.1 * t.params["gamma"] + 0.01 * s for s in done]
        assert t.value == pytest.approx(sum(vals) / len(vals), abs=1e-12)  # the mean of the seeds it ran
    # the report selects trial 0 (best mean over every seed; trial 2 ties and comes later); a pruned
    # configuration costs only the seeds it ran
    a = report.analyse(report.load_units(runner.open_storage(str(log)), "tiny-across"), n_boot=100)
    assert a["summary"]["arms"]["gamma=tpe@seeds"] == {s: pytest.approx(0.85 + 0.01 * s) for s in range(5)}
    assert {r["trial"] for r in a["per_seed"]} == {0}
    runs = [sum(expected[:k + 1]) for k in range(4)]
    assert [r["runs"] for r in a["tuning_cost"]["curves"]["gamma=tpe@seeds"]] == runs
    assert [r["trials"] for r in a["tuning_cost"]["curves"]["gamma=tpe@seeds"]] == [r / 5 for r in runs]


def _sleepy_across_worker(study, storage):
    runner.work(study, opts(storage, heartbeat_interval=0.5, grace_period=2.0))


def test_killed_worker_across_seeds_trial_is_retried_once(tmp_path):
    study, log = across_study(arms=(), seeds=2, trials=1), tmp_path / "kill-across.log"
    st = runner.open_storage(str(log))
    runner.setup(st, study, seeds=2, trials=1)
    name = "tiny-across/gamma=tpe@seeds/seeds"
    ctx = multiprocessing.get_context("spawn")
    # the worker sleeps after its first seed: killed there, it leaves a trial with one seed recorded
    proc = ctx.Process(target=_sleepy_across_worker, args=(study.replace(trial_pause_s=60.0), str(log)))
    proc.start()
    def first_seed_done():
        running = [t for t in _unit(log, name).trials if t.state == TrialState.RUNNING]
        return bool(running) and len(running[0].user_attrs.get("per_seed", {})) == 1

    _sigkill_when(proc, first_seed_done, 60, "the worker never finished a first seed")
    summary = runner.run(study, opts(log, heartbeat_interval=0.5, grace_period=2.0))
    assert summary["errors"] == []
    trials = _unit(log, name).trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]  # none lost, none counted twice
    killed, retried = trials
    assert "no heartbeat" in killed.system_attrs["fail_reason"] and len(killed.user_attrs["per_seed"]) == 1
    assert retried.params == killed.params  # the same configuration, trained again from its first seed
    assert set(retried.user_attrs["per_seed"]) == {"0", "1"} and sorted(retried.user_attrs["seeds_evaluated"]) == [0, 1]
    units = report.load_units(runner.open_storage(str(log)), "tiny-across")
    assert {s: [r["number"] for r in rs] for s, rs in units["units"]["gamma=tpe@seeds"].items()} == {
        0: [retried.number], 1: [retried.number]}
    assert [t["number"] for t in units["across_seeds"]["gamma=tpe@seeds"]["trials"]] == [retried.number]


def test_across_seeds_bad_input_fails_before_anything_is_written(tmp_path, capsys):
    tpe = {a.name: a for a in default_arms("digits-lt")}["gamma=tpe"]
    with pytest.raises(ValueError, match="arm 'gamma=tpe@seeds': an arm tuned across seeds needs seeds >= 2, "
                                         "got seeds=1"):
        across_study(seeds=1)
    with pytest.raises(ValueError, match="arm 'g': across_seeds needs a tuned arm"):
        Study(name="x", dataset="digits-lt", arms=(Arm("g", {"gamma": 1.0}, across_seeds=True),))
    with pytest.raises(ValueError, match="arm 'gamma=tpe@seeds': wilcoxon_p must be a number in \\(0, 1\\), "
                                         "got 1.5"):
        Study(name="x", dataset="digits-lt", arms=(across_seeds(tpe, wilcoxon_p=1.5),))
    with pytest.raises(ValueError, match="arm 'gamma=tpe': wilcoxon_p=0.2 applies only to arms tuned across"):
        Study(name="x", dataset="digits-lt", arms=(Arm("gamma=tpe", tpe.config, tpe.space, wilcoxon_p=0.2),))
    study, log = across_study(), tmp_path / "bad.log"
    with pytest.raises(ValueError, match="seeds must be >= 2 for arms tuned across seeds \\(gamma=tpe@seeds\\) "
                                         "of study 'tiny-across', got seeds=1"):
        runner.run(study, opts(log, seeds=1))
    with pytest.raises(ValueError, match="multi-objective runs cannot include arms tuned across seeds "
                                         "\\(gamma=tpe@seeds\\)"):
        runner.run(study, opts(log, multi_objective=True))
    assert not log.exists()
    cli_log = tmp_path / "cli.log"
    assert cli.main(["sweep", "run", "digits-lt-across-seeds", "--seeds", "1", "--storage", str(cli_log)]) == 2
    err = capsys.readouterr().err
    assert "seeds must be >= 2 for arms tuned across seeds (gamma=tpe@seeds, policy=pi+tpe@seeds, " in err
    assert not cli_log.exists()


def test_stored_studies_keep_their_manifests():
    """Every committed export's manifest is accepted by the runner for its study definition: the arms of the
    existing studies (and their stored records) did not change."""
    from sweeps import export

    folder = Path(__file__).resolve().parent.parent / "sweeps" / "results" / "trials"
    paths = sorted(folder.glob("*.json.gz"))
    assert paths
    for path in paths:
        data = export.read_export(path)
        study = load_study(data["study"])
        runner._check_manifest(study, data["manifest"], data["manifest"]["directions"])
        stored_across = [a for a, rec in data["manifest"]["arms"].items() if rec.get("across_seeds")]
        assert sorted(study.across_seeds_arms) == sorted(stored_across), path.name  # only digits-lt-across-seeds


def test_cli_runs_and_reports_the_across_seeds_study(tmp_path, capsys):
    log = tmp_path / "cli-across.log"
    assert cli.main(["sweep", "run", "digits-lt-across-seeds", "--arms", "gamma=0", "gamma=tpe@seeds", "--seeds",
                     "2", "--trials", "2", "--epochs", "1", "--storage", str(log), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "| gamma=tpe@seeds |" in out and "| gamma=0 |" in out
    trials = _unit(log, "digits-lt-across-seeds/gamma=tpe@seeds/seeds").trials
    assert [len(t.user_attrs["seeds_evaluated"]) for t in trials] == [2, 2]
    assert cli.main(["sweep", "report", "digits-lt-across-seeds", "--storage", str(log)]) == 0
    assert "| gamma=tpe@seeds |" in capsys.readouterr().out
    assert cli.main(["sweep", "list"]) == 0
    assert "digits-lt-across-seeds: digits-lt, 10 arms (3 tuned across seeds), 8 seeds" in capsys.readouterr().out


def _assert_across_done(storage, study, trials):
    """Every per-seed unit has its one trial, the across-seeds unit ``trials`` complete trials on every seed."""
    st = runner.open_storage(str(storage))
    for arm, seed, name in runner.units_of(study, study.seeds):
        unit = optuna.load_study(study_name=name, storage=st)
        assert [t.state for t in unit.trials] == [TrialState.COMPLETE] * (trials if seed is None else 1), name
        if seed is None:
            assert all(sorted(t.user_attrs["seeds_evaluated"]) == list(range(study.seeds)) for t in unit.trials)


def test_two_workers_share_an_across_seeds_unit(tmp_path):
    study, log = across_study(arms=("gamma=0",), seeds=2, trials=3), tmp_path / "w2-across.log"
    summary = runner.run(study, opts(log, workers=2))
    assert summary["errors"] == []
    _assert_across_done(log, study, trials=3)


def test_postgres_across_seeds(postgres_url):
    study = across_study(arms=("gamma=0",), seeds=2, trials=2)
    summary = runner.run(study, opts(postgres_url, workers=2))
    assert summary["errors"] == []
    _assert_across_done(postgres_url, study, trials=2)
    assert "| gamma=tpe@seeds |" in report.report("tiny-across", postgres_url)
