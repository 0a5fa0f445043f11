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
from sweeps.spec import GAMMA_GRID, Arm, Study, default_arms  # noqa: E402
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
def test_every_study_definition_loads_with_the_issue_arms():
    main = ["digits-lt", "mnist1d-lt", "gauss-lt", "dense-det", "seg-toy"]
    rho = [f"{d}-rho{r}" for d in ("digits-lt", "gauss-lt") for r in (1, 10, 100)]
    combos = [f"{d}-combos" for d in ("digits-lt", "gauss-lt", "mnist1d-lt")]
    assert list_studies() == main + rho + combos
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
    deadline = time.time() + 30
    while time.time() < deadline:  # wait until the worker holds a trial
        if any(TrialState.RUNNING in s for s in states(log, study, seeds=1).values()):
            break
        time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("the worker never started a trial")
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
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
