"""Fault injection on the comparison engine's storage and workers: cut and damaged journals, racing commands, killed
and frozen workers, a database restart, read-only storage, and the report of a folder of exports.

Each scenario runs a small study of an instant objective (:func:`objective`, the metric a known function of the
arm's gamma and the seed), injects the fault, and then counts what survived: the finished trials that can still
be read, against those that existed before the fault or that the study should hold.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import warnings
from pathlib import Path

__all__ = ["objective", "scenarios"]


def objective(run) -> dict:
    """Instant and exactly predictable: validation 0.9 - 0.1 gamma + 0.01 seed, test 0.05 lower."""
    gamma = float(run.config.get("gamma", 2.0))
    pause = float((run.study.meta or {}).get("pause", 0.0))
    if pause:
        time.sleep(pause)
    val = 0.9 - 0.1 * gamma + 0.01 * run.seed
    run.report(1, val)
    return {"val": {"score": val, "ece": 0.1}, "test": {"score": val - 0.05, "ece": 0.1}}


def _study(name: str, arms=("gamma=0", "gamma=1", "gamma=2"), seeds=2, pause=0.0, **changes):
    from adaptive_focal.compare import Study, parse_arm

    meta = {"pause": pause, **changes.pop("meta", {})}
    return Study(name=name, arms=tuple(parse_arm(a) for a in arms), objective=f"{__name__}:objective",
                 metric="score", seeds=seeds, trials=2, meta=meta, **changes)


def _opts(storage, **kw):
    from adaptive_focal.compare.options import RunOptions

    return RunOptions(storage=str(storage), progress=False, **kw)


def _finished(storage_spec, name) -> int:
    from adaptive_focal.compare.results import load_units
    from adaptive_focal.compare.storage import open_storage

    units = load_units(open_storage(str(storage_spec), write=False), name)
    return sum(1 for per in units["units"].values() for ts in per.values() for t in ts if t["state"] == "COMPLETE")


def _some_finished(url, name) -> bool:
    try:
        return _finished(url, name) > 0
    except Exception:  # noqa: BLE001 - the study is still being set up
        return False


def _expected(study) -> int:
    return sum(study.trials if a.tuned else 1 for a in study.arms) * study.seeds


def _row(scenario, injected, survived, lost="none", stopped=False, ok=True):
    return {"scenario": scenario, "injected": injected, "survived": survived, "data_lost": lost,
            "training_stopped": stopped, "ok": ok}


def _cut_journal(tmp: Path) -> dict:
    from adaptive_focal.compare.runner import run

    study, log = _study("cut"), tmp / "cut.log"
    run(study, _opts(log))
    before = _finished(log, "cut")
    with log.open("ab") as fh:
        fh.write(b'{"op_code":5,"worker_id":"w","trial_id":3,"us')  # a crash in the middle of an append
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run(study.replace(seeds=3), _opts(log, seeds=3))
    after = _finished(log, "cut")
    repaired = any("removed a cut last record" in str(w.message) for w in caught)
    ok = repaired and after == before + before // 2
    return _row("journal cut mid-append, then the same command again", "47-byte fragment at the journal's end",
                f"{before} finished trials before, {after} after the rerun (+1 seed); warned: {repaired}",
                "none" if after >= before else f"{before - after} trials", ok=ok)


def _damaged_journal(tmp: Path) -> dict:
    from adaptive_focal.compare.runner import run
    from adaptive_focal.compare.storage import StorageError, open_storage, repair_journal

    study, log = _study("damaged"), tmp / "damaged.log"
    run(study, _opts(log))
    before = _finished(log, "damaged")
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(b"".join(lines[:-3]) + lines[-3][:20] + b"".join(lines[-3:]))  # a fragment, then appends
    try:
        open_storage(str(log))
        refused = False
    except StorageError:
        refused = True
    repair_journal(log)
    after = _finished(log, "damaged")
    return _row("journal damaged by an older version's append", "a cut record with later records glued to it",
                f"refused with the repair command: {refused}; after `storage repair`: {after} of {before} trials",
                "none" if after == before else f"{before - after} trials", ok=refused and after == before)


def _racer(study, path, barrier, out):
    import optuna

    from adaptive_focal.compare.runner import StudyMismatchError, setup
    from adaptive_focal.compare.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    barrier.wait()
    try:
        setup(open_storage(path), study, seeds=study.seeds, trials=study.trials)
        out.put("ok")
    except StudyMismatchError:
        out.put("refused")


def _racing_commands(tmp: Path, rounds: int = 6) -> dict:
    ctx = multiprocessing.get_context("spawn")
    both = 0
    for i in range(rounds):
        a, b = _study("race", meta={"epochs": 10}), _study("race", meta={"epochs": 20})
        barrier, out = ctx.Barrier(2), ctx.Queue()
        path = str(tmp / f"race{i}.log")
        procs = [ctx.Process(target=_racer, args=(s, path, barrier, out)) for s in (a, b)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(120)
        both += sorted(out.get() for _ in procs) == ["ok", "ok"]
    return _row("two commands create one study at the same moment with different settings",
                f"{rounds} races of two processes (epochs 10 vs 20)",
                f"one created the study and the other was refused before writing in {rounds - both} of {rounds}",
                "none" if not both else f"{both} studies mixed two settings", ok=both == 0)


def _killed_worker(study, storage):
    from adaptive_focal.compare.runner import work

    work(study, _opts(storage, heartbeat_interval=0.5, grace_period=2.0))


def _wait_running(log, study, timeout=60.0) -> bool:
    import optuna

    from adaptive_focal.compare.runner import units_of
    from adaptive_focal.compare.storage import open_storage

    deadline = time.time() + timeout
    while time.time() < deadline:
        st = open_storage(str(log), write=False)
        for _, _, name in units_of(study, study.seeds):
            if any(t.state.name == "RUNNING" for t in optuna.load_study(study_name=name, storage=st).trials):
                return True
        time.sleep(0.1)
    return False


def _killed_and_frozen(tmp: Path, freeze: bool) -> dict:
    from adaptive_focal.compare.runner import run, setup
    from adaptive_focal.compare.storage import open_storage

    name = "frozen" if freeze else "killed"
    study, log = _study(name, arms=("gamma=0", "gamma=2"), seeds=1), tmp / f"{name}.log"
    setup(open_storage(str(log)), study, seeds=1, trials=2)
    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(target=_killed_worker, args=(study.replace(trial_pause_s=4.0 if freeze else 60.0), str(log)))
    proc.start()
    _wait_running(log, study)
    os.kill(proc.pid, signal.SIGSTOP if freeze else signal.SIGKILL)
    summary = run(study, _opts(log, heartbeat_interval=0.5, grace_period=2.0))
    if freeze:
        os.kill(proc.pid, signal.SIGCONT)
    proc.join(60)
    done = _finished(log, name)
    exit_ok = proc.exitcode == 0 if freeze else True
    what = "SIGSTOP for longer than the grace period, then SIGCONT" if freeze else "SIGKILL mid-trial"
    return _row(f"a worker {'frozen' if freeze else 'killed'} during a trial", what,
                f"{done} of {_expected(study)} trials complete (the stale one retried once); "
                + (f"the woken worker exited with code {proc.exitcode}" if freeze else "no error"),
                "none" if done == _expected(study) else f"{_expected(study) - done} trials",
                ok=done == _expected(study) and exit_ok and not summary["errors"])


def _database_restart(tmp: Path) -> dict:
    import sys

    tests = Path(__file__).resolve().parents[2] / "tests"
    sys.path.insert(0, str(tests))
    try:
        from helpers.postgres import PostgresServer
    except Exception as err:  # noqa: BLE001 - no pytest / tests folder
        return _row("PostgreSQL restarted for 3 s mid-run", "pg_ctl stop, 3 s, start", f"not run ({err})",
                    "-", ok=True)
    import pytest

    try:
        server = PostgresServer()
    except pytest.skip.Exception as why:
        return _row("PostgreSQL restarted for 3 s mid-run", "pg_ctl stop, 3 s, start", f"not run ({why})", "-",
                    ok=True)
    from adaptive_focal.compare.runner import run, setup
    from adaptive_focal.compare.storage import open_storage

    study = _study("restart", arms=("gamma=0", "gamma=1", "gamma=2", "gamma=3"), seeds=4, pause=0.5)
    try:
        setup(open_storage(server.url), study, seeds=study.seeds, trials=study.trials)  # the schema, before polling

        def restart():
            deadline = time.time() + 120
            while time.time() < deadline and not _some_finished(server.url, "restart"):
                time.sleep(0.2)
            server.stop("fast")
            time.sleep(3.0)
            server.start()

        thread = threading.Thread(target=restart)
        thread.start()
        try:
            summary = run(study, _opts(server.url, workers=2, heartbeat_interval=1.0))
            error = None
        except Exception as err:  # noqa: BLE001 - reported in the row
            summary, error = None, f"{type(err).__name__}: {err}"
        thread.join()
        done = _finished(server.url, "restart")
    finally:
        server.remove()
    expected = _expected(study)
    return _row("PostgreSQL restarted for 3 s mid-run", "pg_ctl stop -m fast, 3 s, start (2 workers)",
                f"{done} of {expected} trials complete, {'no error' if error is None else error}",
                "none" if done == expected else f"{expected - done} trials", stopped=error is not None,
                ok=error is None and done == expected and not summary["errors"])


def _read_only(tmp: Path) -> dict:
    from adaptive_focal.compare.runner import run
    from adaptive_focal.compare.storage import StorageError

    study, log = _study("ro"), tmp / "ro.log"
    run(study, _opts(log))
    before = _finished(log, "ro")
    chattr = shutil.which("chattr")
    log.chmod(0o400)
    locked = os.access(log, os.W_OK) and chattr and not subprocess.run([chattr, "+i", str(log)],
                                                                       capture_output=True).returncode
    try:
        run(study.replace(seeds=3), _opts(log, seeds=3))
        message = "no error"
    except StorageError as err:
        message = f"StorageError: {str(err)[:70]}..."
    finally:
        if locked:
            subprocess.run([chattr, "-i", str(log)], capture_output=True)
        log.chmod(0o600)
    after = _finished(log, "ro")
    return _row("read-only storage", "journal made read-only (chmod, chattr +i for root)",
                f"{message}; {after} of {before} trials still readable", "none" if after == before else "some",
                ok=message.startswith("StorageError") and after == before)


def _report_folder(tmp: Path) -> dict:
    from adaptive_focal import cli
    from adaptive_focal.compare.export import export_study
    from adaptive_focal.compare.runner import run

    study, log = _study("folder"), tmp / "folder.log"
    run(study, _opts(log))
    export_study(str(log), "folder", tmp / "exports")
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = cli.main(["sweep", "report", "folder", "--storage", str(tmp / "exports")])
    rows = buf.getvalue().count("| gamma=")
    return _row("`sweep report` of a folder of exports", "--storage <folder of .json.gz>",
                f"exit {rc}, {rows} arms in the leaderboard", "none", ok=rc == 0 and rows == 3)


def scenarios() -> list[dict]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows = []
    with tempfile.TemporaryDirectory(prefix="af-faults-") as tmp:
        root = Path(tmp)
        for fn in (_cut_journal, _damaged_journal, _racing_commands, lambda t: _killed_and_frozen(t, False),
                   lambda t: _killed_and_frozen(t, True), _read_only, _report_folder, _database_restart):
            folder = Path(tempfile.mkdtemp(dir=root))
            rows.append(fn(folder))
    return rows
