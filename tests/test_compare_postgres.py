"""The comparison engine on PostgreSQL (workers on several machines share one database): two workers share a
study and an arm tuned across seeds, and a database restart in the middle of a run loses nothing and stops
nobody."""

import threading
import time

import pytest

optuna = pytest.importorskip("optuna")
from optuna.trial import TrialState  # noqa: E402

from adaptive_focal.compare import report, runner  # noqa: E402
from adaptive_focal.compare.storage import open_storage  # noqa: E402
from helpers.studies import linear_study, opts  # noqa: E402


def _states(url, study):
    st = open_storage(url)
    return {name: [t.state for t in optuna.load_study(study_name=name, storage=st).trials]
            for _, _, name in runner.units_of(study, study.seeds)}


def test_two_workers(postgres):
    study = linear_study(arms=("gamma=0", "gamma=tpe"))
    summary = runner.run(study, opts(postgres.url, workers=2))
    assert summary["errors"] == []
    for name, states in _states(postgres.url, study).items():
        assert len(states) == (3 if "tpe" in name else 1), name
        assert all(s in (TrialState.COMPLETE, TrialState.PRUNED) for s in states), name
    assert "| gamma=tpe |" in report.report("lin", postgres.url)


def test_across_seeds(postgres):
    study = linear_study(name="pa", arms=("gamma=0",), tuned_across=("gamma=tpe",), seeds=2, trials=2)
    summary = runner.run(study, opts(postgres.url, workers=2))
    assert summary["errors"] == []
    assert _states(postgres.url, study)["pa/gamma=tpe@seeds/seeds"] == [TrialState.COMPLETE] * 2
    assert "| gamma=tpe@seeds |" in report.report("pa", postgres.url)


def test_a_database_restart_mid_run_loses_nothing(postgres):
    """Defect 6: a 3 s PostgreSQL restart killed every worker and the main process with ~560 lines of tracebacks.
    Now the workers retry the storage and finish the study; every trial completes exactly once."""
    study = linear_study(name="restart", arms=("gamma=0", "gamma=1", "gamma=2", "gamma=3"), seeds=4,
                         trial_pause_s=0.4)
    runner.setup(open_storage(postgres.url), study, seeds=4, trials=1)

    def restart():
        time.sleep(2.0)  # trials are running by then
        postgres.stop("fast")
        time.sleep(3.0)
        postgres.start()

    thread = threading.Thread(target=restart)
    thread.start()
    try:
        summary = runner.run(study, opts(postgres.url, workers=2, retry_seconds=60, heartbeat_interval=1.0,
                                         grace_period=30.0))
    finally:
        thread.join()
    assert summary["errors"] == [] and summary["failed_units"] == []
    for name, states in _states(postgres.url, study).items():
        assert states.count(TrialState.COMPLETE) == 1, (name, states)


def test_a_database_that_stays_down_stops_the_workers_with_one_line(postgres):
    # 24 trials of 1 s: both workers are still busy when the database stops after the first one completes, however
    # slowly a loaded machine starts them (with 12 trials of 0.4 s they could all finish first)
    study = linear_study(name="down", arms=("gamma=0", "gamma=1", "gamma=2"), seeds=8, trial_pause_s=1.0)
    runner.setup(open_storage(postgres.url), study, seeds=8, trials=1)

    def stop_when_running():
        deadline = time.time() + 120
        while time.time() < deadline and not any(TrialState.COMPLETE in s for s in _states(postgres.url,
                                                                                             study).values()):
            time.sleep(0.2)
        postgres.stop("fast")

    thread = threading.Thread(target=stop_when_running)
    thread.start()
    with pytest.raises(RuntimeError) as err:
        runner.run(study, opts(postgres.url, workers=2, retry_seconds=2.0))
    thread.join()
    lines = sorted(str(err.value).split("; "))
    assert len(lines) == 2, lines
    for i, line in enumerate(lines):
        assert line.startswith(f"worker {i}: lost the connection to storage postgresql://postgres@127.0.0.1:"
                               f"{postgres.port}/postgres and could not reconnect within 2 s"), line
        assert "\n" not in line
