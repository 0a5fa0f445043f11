"""Runs a study's arms x seeds as Optuna studies in one storage, with parallel workers, retries and resume.

Layout in the storage: a manifest study named ``<study>`` whose user attributes record the data set, the arms and
the objective directions, and one *unit* study per arm and seed, ``<study>/<arm>/seed<k>``. Setting up a unit
enqueues its trials (1 for a fixed arm, ``trials`` for a tuned arm; parameters of tuned arms are sampled by TPE
when the trial runs); workers claim waiting trials atomically (WAITING -> RUNNING), so any number of workers on
one machine (journal file) or many machines (an RDB such as PostgreSQL) share the work with nothing run twice.
Running trials write a heartbeat every ``heartbeat_interval`` seconds; a running trial whose heartbeat is older
than ``grace_period`` (its worker was killed) is marked FAIL and re-enqueued with Optuna's
``RetryHeartbeatStaleTrialCallback``. A second run of the same study tops units up to their budget and continues.

An arm tuned across seeds (``Arm.across_seeds``) has one unit, ``<study>/<arm>/seeds``, instead of one per seed:
each of its trials samples a configuration and trains it on the seeds one after another (in an order shuffled per
trial), reporting each seed's validation headline metric with ``trial.report(value, step=seed)``; Optuna's
``WilcoxonPruner`` (``p_threshold=arm.wilcoxon_p``) stops the configuration after a seed when it is significantly
worse than the best trial so far. As the pruner's documentation advises, such a trial is not raised as pruned but
completed with the mean over the seeds it evaluated (user attribute ``pruned`` True), so TPE learns from it. The
per-epoch ``MedianPruner`` does not apply inside these trials. Their user attributes are ``arm``, ``config`` (the
configuration without its seed), ``seeds`` (the order), ``seeds_evaluated``, ``pruned``, ``per_seed``
(``{"<seed>": {"config", "val_metrics", "test_metrics", "seconds", "gamma_trajectory"}}``, written after each
seed), ``seconds`` (all seeds) and ``versions``. The unit's user attribute ``seeds`` records its seeds; running it
again with another number of seeds is refused (its trials' means would be over other seeds).

Each trial stores user attributes ``arm``, ``seed``, ``config`` (the research.train overrides), ``test_metrics``,
``val_metrics``, ``seconds``, ``gamma_trajectory`` (``[[epoch, gamma], ...]``, empty without a policy) and
``versions`` (adaptive_focal, torch, Python), so :mod:`sweeps.report` works from the storage alone. Single-objective studies
maximise the validation headline metric and prune with ``MedianPruner`` on its per-epoch value; with
``multi_objective=True`` they maximise it and minimise the validation ECE (no pruning: Optuna cannot prune
multi-objective trials).

    python -m adaptive_focal.cli sweep run digits-lt --workers 2
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import random
import threading
import time
import warnings
import zlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from .spec import Arm, Study

__all__ = ["RunOptions", "StorageError", "StudyMismatchError", "default_storage", "open_storage", "parse_unit_name",
           "run", "setup", "unit_name", "units_of", "work"]

FORMAT = 1
_HEARTBEAT = "af_heartbeat"
_LIVE = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
#: last part of the name of an across-seeds unit, ``<study>/<arm>/seeds``
SEEDS_UNIT = "seeds"


class StorageError(RuntimeError):
    """The storage cannot be opened or reached."""


class StudyMismatchError(ValueError):
    """The storage holds a study of this name made with other arms or settings."""


@dataclass
class RunOptions:
    """How to run: storage (URL or journal file path), seeds and trials (``None``: the study's), workers,
    heartbeat settings (seconds), multi-objective, pruning, torch threads per worker, progress output."""

    storage: str | None = None
    seeds: int | None = None
    trials: int | None = None
    workers: int = 1
    heartbeat_interval: float = 10.0
    grace_period: float = 30.0
    max_retry: int = 3
    multi_objective: bool = False
    prune: bool = True
    threads: int = 1
    connect_timeout: int = 5
    progress: bool = True


# ----------------------------------------------------------------------------------------------------------
# storage
# ----------------------------------------------------------------------------------------------------------
def default_storage(study_name: str, root: str | os.PathLike = "runs/sweeps") -> str:
    return str(Path(root) / f"{study_name}.log")


def _is_url(storage: str) -> bool:
    return "://" in storage


def _redact(url: str) -> str:
    """The URL without its password, for messages."""
    head, sep, tail = url.partition("://")
    if "@" in tail:
        cred, _, host = tail.rpartition("@")
        tail = f"{cred.split(':', 1)[0]}:***@{host}" if ":" in cred else f"{cred}@{host}"
    return f"{head}{sep}{tail}"


def open_storage(storage: str, *, connect_timeout: int = 5, workers: int = 1):
    """An Optuna storage: an RDB for ``dialect://...`` URLs (a clear :class:`StorageError` within about
    ``connect_timeout`` seconds when unreachable), else a journal file at that path (created with its folder)."""
    if not isinstance(storage, str) or not storage:
        raise StorageError(f"storage must be a database URL or a journal file path, got {storage!r}")
    if not _is_url(storage):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = Path(storage)
        if path.exists() and path.is_dir():
            raise StorageError(f"storage {storage!r} is a folder; give a journal file path such as "
                               f"{str(path / 'study.log')!r} or a database URL")
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    dialect = storage.split("://", 1)[0].split("+", 1)[0]
    allowed = ("postgresql", "mysql", "sqlite")
    if dialect not in allowed:
        raise StorageError(f"storage URL scheme must be one of {', '.join(allowed)} (or a journal file path), "
                           f"got {_redact(storage)!r}")
    if dialect == "sqlite" and workers > 1:
        raise StorageError("SQLite is not for parallel workers; use the journal file storage (a path) on one "
                           "machine or PostgreSQL across machines")
    connect_args = {}
    if dialect == "postgresql":
        if storage.startswith("postgresql://"):  # psycopg (3), which SQLAlchemy >= 2.1 picks anyway
            storage = "postgresql+psycopg://" + storage[len("postgresql://"):]
        connect_args = {"connect_timeout": int(connect_timeout)}
    elif dialect == "mysql":
        connect_args = {"connect_timeout": int(connect_timeout)}
    try:
        return optuna.storages.RDBStorage(storage, engine_kwargs={"connect_args": connect_args,
                                                                  "pool_pre_ping": True})
    except Exception as err:  # sqlalchemy's OperationalError and friends; the message names the cause
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if isinstance(err, ImportError) or "Failed to import DB access module" in first:
            first += (" (the driver for this URL is missing: pip install 'adaptive_focal[sweeps]', which has "
                      "psycopg for postgresql://)")
        raise StorageError(f"cannot open storage {_redact(storage)!r}: {first}") from err


# ----------------------------------------------------------------------------------------------------------
# set-up: manifest and units
# ----------------------------------------------------------------------------------------------------------
def unit_name(study: Study, arm: Arm, seed: int | None) -> str:
    """``<study>/<arm>/seed<k>``; ``seed=None``: the across-seeds unit ``<study>/<arm>/seeds``."""
    return f"{study.name}/{arm.name}/{SEEDS_UNIT}" if seed is None else f"{study.name}/{arm.name}/seed{seed}"


def parse_unit_name(study_name: str, name: str):
    """``(arm, seed)`` of a unit study's name (``seed`` None for an across-seeds unit), or None when ``name`` is
    not a unit of ``study_name``."""
    prefix = f"{study_name}/"
    if not name.startswith(prefix):
        return None
    arm, _, tail = name[len(prefix):].rpartition("/")
    if not arm:
        return None
    if tail == SEEDS_UNIT:
        return arm, None
    if tail.startswith("seed") and tail[4:].isdigit():
        return arm, int(tail[4:])
    return None


def units_of(study: Study, seeds: int) -> list[tuple]:
    """``[(arm, seed, unit name), ...]``: one unit per seed for an arm, one (``seed`` None) for an arm tuned
    across seeds."""
    out = []
    for arm in study.arms:
        if arm.across_seeds:
            out.append((arm, None, unit_name(study, arm, None)))
        else:
            out += [(arm, seed, unit_name(study, arm, seed)) for seed in range(seeds)]
    return out


def _arm_record(arm: Arm) -> dict:
    return arm.record()


def _check_across_seeds(study: Study, seeds: int, multi_objective: bool) -> None:
    """Arms tuned across seeds need 2 or more seeds and a single objective (ValueError naming the arms)."""
    arms = study.across_seeds_arms
    if not arms:
        return
    if seeds < 2:
        raise ValueError(f"seeds must be >= 2 for arms tuned across seeds ({', '.join(arms)}) of study "
                         f"{study.name!r}, got seeds={seeds}")
    if multi_objective:
        raise ValueError(f"multi-objective runs cannot include arms tuned across seeds ({', '.join(arms)}): the "
                         "Wilcoxon pruner and the selection by mean validation metric need one objective; leave "
                         "out --multi-objective or choose other arms with --arms")


def _check_seed_units(storage, study: Study, seeds: int, names: set) -> None:
    """Raises StudyMismatchError when a stored across-seeds unit was made with other seeds (reads only)."""
    for arm in study.arms:
        name = unit_name(study, arm, None)
        if not arm.across_seeds or name not in names:
            continue
        stored = optuna.load_study(study_name=name, storage=storage).user_attrs.get("seeds")
        if stored is not None and stored != list(range(seeds)):
            raise StudyMismatchError(
                f"arm {arm.name!r} of study {study.name!r} is tuned across seeds {stored} in this storage; this "
                f"run asks for seeds {list(range(seeds))} (--seeds {seeds}). Its trials' means are over the stored "
                f"seeds: run with --seeds {len(stored)}, or use another storage or study name.")


def _directions(multi: bool) -> list[str]:
    return ["maximize", "minimize"] if multi else ["maximize"]


def _check_manifest(study: Study, attrs: dict, directions: list[str]) -> None:
    """Raises StudyMismatchError when the stored study differs from ``study`` (nothing is written then)."""
    stored_arms = attrs.get("arms", {})
    requested = {a.name: _arm_record(a) for a in study.arms}
    unknown = [n for n in requested if n not in stored_arms]
    changed = [n for n in requested if n in stored_arms and stored_arms[n] != requested[n]]
    if unknown or changed:
        parts = []
        if unknown:
            parts.append(f"arms not in the stored study: {', '.join(unknown)}")
        if changed:
            parts.append(f"arms defined differently: {', '.join(changed)}")
        raise StudyMismatchError(
            f"study {study.name!r} in this storage was created with other arms ({'; '.join(parts)}). Stored arms: "
            f"{', '.join(stored_arms)}. Use another study name or storage, or the stored arms.")
    for key, value in (("dataset", study.dataset), ("dataset_kwargs", study.dataset_kwargs),
                       ("overrides", {k: v for k, v in study.overrides.items() if k != "threads"}),
                       ("directions", directions)):
        value = json.loads(json.dumps(value))
        if attrs.get(key) != value:
            raise StudyMismatchError(f"study {study.name!r} in this storage was created with {key} "
                                     f"{attrs.get(key)!r}; this run asks for {value!r}")


def setup(storage, study: Study, *, seeds: int, trials: int, multi_objective: bool = False) -> list[tuple]:
    """Creates (or checks and tops up) the manifest and unit studies; returns ``[(arm, seed, unit name), ...]``."""
    directions = _directions(multi_objective)
    if multi_objective and study.metric != "balanced_accuracy":
        raise ValueError(f"multi-objective (headline vs ECE) needs a multiclass data set; {study.dataset!r} has "
                         f"no ECE (its headline metric is {study.metric!r})")
    _check_across_seeds(study, seeds, multi_objective)
    names = set(optuna.get_all_study_names(storage))
    exists = study.name in names
    manifest = (optuna.load_study(study_name=study.name, storage=storage) if exists else  # loading writes nothing
                optuna.create_study(storage=storage, study_name=study.name, load_if_exists=True))
    attrs = manifest.user_attrs
    if attrs.get("format") is None:  # new: record what it is made of
        for key, value in (("dataset", study.dataset), ("dataset_kwargs", study.dataset_kwargs),
                           ("overrides", {k: v for k, v in study.overrides.items() if k != "threads"}),
                           ("directions", directions), ("metric", study.metric),
                           ("arms", {a.name: _arm_record(a) for a in study.arms})):
            manifest.set_user_attr(key, json.loads(json.dumps(value)))
        manifest.set_user_attr("format", FORMAT)
    else:
        _check_manifest(study, attrs, directions)
        _check_seed_units(storage, study, seeds, names)
    units = units_of(study, seeds)
    for arm, seed, name in units:
        unit = optuna.create_study(storage=storage, study_name=name, directions=directions, load_if_exists=True)
        target = trials if arm.tuned else 1
        have = len(unit.get_trials(deepcopy=False, states=_LIVE))
        if seed is None:
            if unit.user_attrs.get("seeds") is None:
                unit.set_user_attr("seeds", list(range(seeds)))
            attrs = {"arm": arm.name, "seeds": list(range(seeds))}
        else:
            attrs = {"arm": arm.name, "seed": seed}
        for _ in range(target - have):
            unit.enqueue_trial({}, user_attrs=attrs)
    return units


# ----------------------------------------------------------------------------------------------------------
# workers
# ----------------------------------------------------------------------------------------------------------
def _fail_stale(storage, study_id: int, unit, grace: float, max_retry: int) -> int:
    """Marks RUNNING trials without a heartbeat for ``grace`` seconds FAIL and re-enqueues them (once)."""
    now = time.time()
    failed = 0
    for t in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
        beat = t.system_attrs.get(_HEARTBEAT)
        if beat is None and t.datetime_start is not None:
            beat = t.datetime_start.timestamp()
        if beat is None or now - beat <= grace:
            continue
        try:
            storage.set_trial_system_attr(t._trial_id, "fail_reason", f"no heartbeat for {now - beat:.0f} s")
            storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
        except UpdateFinishedTrialError:
            continue  # finished meanwhile, or another worker got there first and retries it
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
        retry(unit, storage.get_trial(t._trial_id))
        failed += 1
    return failed


def _claim(storage, study_id: int) -> int | None:
    for t in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.WAITING,)):
        try:
            if storage.set_trial_state_values(t._trial_id, state=TrialState.RUNNING):
                storage.set_trial_system_attr(t._trial_id, _HEARTBEAT, time.time())
                return t._trial_id
        except UpdateFinishedTrialError:
            continue
    return None


class _Heartbeat:
    def __init__(self, storage, trial_id: int, interval: float) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(storage, trial_id, interval), daemon=True)

    def _beat(self, storage, trial_id, interval):
        while not self._stop.wait(interval):
            try:
                storage.set_trial_system_attr(trial_id, _HEARTBEAT, time.time())
            except UpdateFinishedTrialError:
                return
            except Exception:  # a lost connection: the trial will look stale and be retried elsewhere
                return

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def _set_path(config: dict, key: str, value) -> None:
    if key.startswith("policy_kwargs."):
        config.setdefault("policy_kwargs", {})[key.split(".", 1)[1]] = value
    else:
        config[key] = value


def _suggest(trial, name: str, spec):
    kind = spec[0]
    if kind == "float":
        return trial.suggest_float(name, spec[1], spec[2], log=bool(spec[3]))
    if kind == "int":
        return trial.suggest_int(name, spec[1], spec[2])
    if kind == "categorical":
        return trial.suggest_categorical(name, list(spec[1]))
    raise ValueError(f"search-space kind must be float, int or categorical, got {kind!r} for {name}")


def _finite(metrics: dict) -> dict:
    """JSON-safe metrics (NaN -> None)."""
    return {k: (None if isinstance(v, float) and v != v else v) for k, v in metrics.items()}


def _rounded(value):
    """A gamma value (number, nested list, or a GammaTable's ``{"edges", "values"}``) rounded to 5 significant
    digits; a table keeps its values only."""
    if isinstance(value, dict):
        value = value.get("values")
    if isinstance(value, (list, tuple)):
        return [_rounded(v) for v in value]
    return float(f"{value:.5g}") if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _gamma_trajectory(epochs: list) -> list:
    """``[[epoch, gamma], ...]`` from research.train's per-epoch records (empty without a policy)."""
    return [[int(r["epoch"]), _rounded(r["gamma"])] for r in epochs if "epoch" in r and "gamma" in r]


def _versions() -> dict:
    """The versions a trial ran with: adaptive_focal, torch, Python."""
    import platform

    import torch

    import adaptive_focal

    return {"adaptive_focal": adaptive_focal.__version__, "torch": torch.__version__,
            "python": platform.python_version()}


def _run_trial(unit, trial_id: int, study: Study, arm: Arm, seed: int, opts: RunOptions) -> str:
    from research.train import main as train

    trial = optuna.trial.Trial(unit, trial_id)
    config = {"dataset": study.dataset, "dataset_kwargs": dict(study.dataset_kwargs), "seed": seed,
              "threads": opts.threads, **json.loads(json.dumps(study.overrides)), **json.loads(json.dumps(arm.config))}
    for pname, (key, spec) in arm.space.items():
        _set_path(config, key, _suggest(trial, pname, spec))
    trial.set_user_attr("arm", arm.name)
    trial.set_user_attr("seed", seed)
    trial.set_user_attr("config", config)
    metric = study.metric
    prune = opts.prune and arm.tuned and not opts.multi_objective

    def on_epoch(epoch, val_metrics, record):
        value = val_metrics.get(metric)
        if prune and value is not None and value == value:
            trial.report(float(value), epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"epoch {epoch}: {metric} {value:.4f}")

    storage = unit._storage
    with _Heartbeat(storage, trial_id, opts.heartbeat_interval):
        try:
            if study.trial_pause_s:
                time.sleep(study.trial_pause_s)
            result = train(config, epoch_callback=on_epoch)
        except optuna.TrialPruned:
            unit.tell(trial, state=TrialState.PRUNED)
            return "pruned"
        except Exception as err:
            trial.set_user_attr("error", f"{type(err).__name__}: {err}")
            unit.tell(trial, state=TrialState.FAIL)
            return "failed"
    trial.set_user_attr("test_metrics", _finite(result["metrics"]))
    trial.set_user_attr("val_metrics", _finite(result["val_metrics"]))
    trial.set_user_attr("seconds", result["seconds"])
    trial.set_user_attr("gamma_trajectory", _gamma_trajectory((result.get("gamma") or {}).get("epochs", [])))
    trial.set_user_attr("versions", _versions())
    value = result["val_metrics"][metric]
    value = float(value) if value == value else float("-inf")
    values = [value, float(result["val_metrics"]["ece"])] if opts.multi_objective else value
    try:
        unit.tell(trial, values)
    except UpdateFinishedTrialError:
        return "taken-over"  # judged stale (no heartbeat within grace_period) and retried elsewhere
    return "complete"


def _seed_order(name: str, number: int, seeds: list) -> list:
    """The order in which trial ``number`` of unit ``name`` evaluates ``seeds``: shuffled per trial (as Optuna's
    WilcoxonPruner advises, so no seed always decides early), reproducibly."""
    return random.Random(zlib.crc32(f"{name}#{number}".encode())).sample(list(seeds), len(seeds))


def _run_across_seeds_trial(unit, trial_id: int, study: Study, arm: Arm, opts: RunOptions) -> str:
    """One configuration of an arm tuned across seeds, trained on the unit's seeds one after another; the
    unit's WilcoxonPruner may stop it after any seed but the last (see the module docstring)."""
    from research.train import main as train

    trial = optuna.trial.Trial(unit, trial_id)
    seeds = unit.user_attrs["seeds"]
    base = {"dataset": study.dataset, "dataset_kwargs": dict(study.dataset_kwargs), "threads": opts.threads,
            **json.loads(json.dumps(study.overrides)), **json.loads(json.dumps(arm.config))}
    for pname, (key, spec) in arm.space.items():
        _set_path(base, key, _suggest(trial, pname, spec))
    order = _seed_order(unit.study_name, trial.number, seeds)
    metric = study.metric
    prune = opts.prune and not opts.multi_objective
    per_seed, values, seconds, pruned = {}, [], 0.0, False
    try:
        # a retried trial (its worker was killed) inherits the failed attempt's attributes: start afresh
        for key, value in (("arm", arm.name), ("config", base), ("seeds", order), ("seeds_evaluated", []),
                           ("per_seed", {}), ("pruned", False)):
            trial.set_user_attr(key, value)
        with _Heartbeat(unit._storage, trial_id, opts.heartbeat_interval):
            for i, seed in enumerate(order):
                config = {**json.loads(json.dumps(base)), "seed": seed}
                try:
                    if study.trial_pause_s and i == 1:  # killed-worker tests: a trial with one seed recorded
                        time.sleep(study.trial_pause_s)
                    result = train(config)
                except Exception as err:
                    trial.set_user_attr("error", f"seed {seed}: {type(err).__name__}: {err}")
                    unit.tell(trial, state=TrialState.FAIL)
                    return "failed"
                value = result["val_metrics"][metric]
                value = float(value) if value == value else float("-inf")
                values.append(value)
                seconds += result["seconds"]
                epochs = (result.get("gamma") or {}).get("epochs", [])
                per_seed[str(seed)] = {"config": config, "val_metrics": _finite(result["val_metrics"]),
                                       "test_metrics": _finite(result["metrics"]), "seconds": result["seconds"],
                                       "gamma_trajectory": _gamma_trajectory(epochs)}
                trial.set_user_attr("per_seed", per_seed)
                trial.set_user_attr("seeds_evaluated", order[:i + 1])
                if math.isfinite(value):  # the pruner never prunes on inf / NaN values anyway
                    trial.report(value, step=seed)
                if prune and i + 1 < len(order) and trial.should_prune():
                    pruned = True
                    break
        trial.set_user_attr("pruned", pruned)
        trial.set_user_attr("seconds", seconds)
        trial.set_user_attr("versions", _versions())
        # WilcoxonPruner's documentation: a pruned trial returns the mean of the instances evaluated so far
        unit.tell(trial, sum(values) / len(values))
    except UpdateFinishedTrialError:
        return "taken-over"  # judged stale (no heartbeat within grace_period) and retried elsewhere
    return "pruned" if pruned else "complete"


def _pruner(arm: Arm, trials: int):
    """The unit's pruner: per-epoch MedianPruner for arms tuned per seed, WilcoxonPruner over the seeds for arms
    tuned across seeds."""
    if arm.across_seeds:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.pruners.WilcoxonPruner(p_threshold=arm.wilcoxon_p, n_startup_steps=2)
    return optuna.pruners.MedianPruner(n_startup_trials=max(2, trials // 3), n_warmup_steps=1)


def _sampler(name: str, worker_id: int, trials: int):
    return optuna.samplers.TPESampler(seed=zlib.crc32(name.encode()) + 7919 * worker_id,
                                      n_startup_trials=max(2, trials // 3))


#: a worker with nothing to claim while other trials run waits this long before looking again, doubling up to
#: _IDLE_MAX: the end of a study is noticed within a few tens of milliseconds without rescanning every unit
#: many times a second during a long last trial
_IDLE_FIRST, _IDLE_MAX = 0.025, 1.0


def work(study: Study, opts: RunOptions, worker_id: int = 0, *, units=None, queue=None) -> dict:
    """One worker: claims waiting trials of the study's units until none is waiting or running anywhere."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    import torch

    torch.set_num_threads(opts.threads)
    storage = open_storage(opts.storage, connect_timeout=opts.connect_timeout, workers=opts.workers)
    seeds = opts.seeds or study.seeds
    trials = opts.trials or study.trials
    if units is None:
        units = units_of(study, seeds)
    loaded = {}
    counts = {"complete": 0, "pruned": 0, "failed": 0, "taken-over": 0, "stale-retried": 0}
    order = list(units)
    if worker_id:  # workers start at different units, so they do not all queue on the first one
        k = (worker_id * len(order)) // max(1, opts.workers)
        order = order[k:] + order[:k]
    idle = _IDLE_FIRST
    while True:
        ran = busy = False
        for arm, seed, name in order:
            if name not in loaded:
                loaded[name] = optuna.load_study(study_name=name, storage=storage,
                                                 sampler=_sampler(name, worker_id, trials),
                                                 pruner=_pruner(arm, trials))
            unit = loaded[name]
            counts["stale-retried"] += _fail_stale(storage, unit._study_id, unit, opts.grace_period, opts.max_retry)
            trial_id = _claim(storage, unit._study_id)
            if trial_id is None:
                busy = busy or bool(storage.get_all_trials(unit._study_id, deepcopy=False,
                                                           states=(TrialState.RUNNING,)))
                continue
            if seed is None:
                status = _run_across_seeds_trial(unit, trial_id, study, arm, opts)
            else:
                status = _run_trial(unit, trial_id, study, arm, seed, opts)
            counts[status] += 1
            ran = True
            if queue is not None:
                queue.put((worker_id, arm.name, seed, status))
        if ran:
            idle = _IDLE_FIRST
        elif not busy:
            return counts
        else:  # other workers' trials still run (one may go stale and need a retry): look again, soon at first
            time.sleep(min(idle, opts.heartbeat_interval))
            idle = min(2 * idle, _IDLE_MAX)


def _worker_main(study, opts, worker_id, units, queue):
    try:
        counts = work(study, opts, worker_id, units=units, queue=queue)
        queue.put((worker_id, None, None, ("done", counts)))
    except BaseException as err:  # report, then exit non-zero
        queue.put((worker_id, None, None, ("error", f"{type(err).__name__}: {err}")))
        raise


def _count(storage, units) -> dict:
    out = {"complete": 0, "pruned": 0, "running": 0, "waiting": 0, "fail": 0}
    for _, _, name in units:
        for t in optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False):
            out[t.state.name.lower()] = out.get(t.state.name.lower(), 0) + 1
    return out


def run(study: Study, opts: RunOptions) -> dict:
    """Sets up the study, runs ``opts.workers`` worker processes (or this process for 1) and returns a summary."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if not isinstance(opts.workers, int) or opts.workers < 1:
        raise ValueError(f"workers must be a positive integer, got {opts.workers!r}")
    for key in ("seeds", "trials"):
        value = getattr(opts, key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ValueError(f"{key} must be a positive integer, got {value!r}")
    opts.storage = opts.storage or default_storage(study.name)
    seeds, trials = opts.seeds or study.seeds, opts.trials or study.trials
    _check_across_seeds(study, seeds, opts.multi_objective)  # before the storage is opened (and created)
    start = time.perf_counter()
    storage = open_storage(opts.storage, connect_timeout=opts.connect_timeout, workers=opts.workers)
    units = setup(storage, study, seeds=seeds, trials=trials, multi_objective=opts.multi_objective)
    before = _count(storage, units)
    todo = before["waiting"] + before["running"]
    if opts.progress:
        print(f"study {study.name}: {len(study.arms)} arms x {seeds} seeds, {trials} TPE trials per tuned arm; "
              f"{before['complete'] + before['pruned']} trials done, {todo} to run; {opts.workers} worker(s); "
              f"storage {_redact(opts.storage)}", flush=True)
    errors = []
    if opts.workers == 1:
        queue = _PrintQueue(todo, start, opts.progress)
        work(study, opts, 0, units=units, queue=queue)
    else:
        ctx = multiprocessing.get_context("spawn")
        queue = ctx.Queue()
        procs = [ctx.Process(target=_worker_main, args=(study, opts, i, units, queue), daemon=False)
                 for i in range(opts.workers)]
        for p in procs:
            p.start()
        printer = _PrintQueue(todo, start, opts.progress)
        alive = len(procs)
        while alive:
            try:
                worker_id, arm, seed, status = queue.get(timeout=1.0)
            except Exception:
                if not any(p.is_alive() for p in procs):
                    break
                continue
            if arm is None:
                alive -= 1
                if status[0] == "error":
                    errors.append(f"worker {worker_id}: {status[1]}")
            else:
                printer.put((worker_id, arm, seed, status))
        for p in procs:
            p.join()
            if p.exitcode not in (0, None) and not any(e.startswith(f"worker {procs.index(p)}:") for e in errors):
                errors.append(f"worker {procs.index(p)} exited with code {p.exitcode}")
    after = _count(storage, units)
    summary = {"study": study.name, "storage": _redact(opts.storage), "units": len(units),
               "seconds": time.perf_counter() - start, "before": before, "after": after, "errors": errors}
    if opts.progress:
        print(f"done in {summary['seconds']:.0f} s: {after['complete']} complete, {after['pruned']} pruned, "
              f"{after['fail']} failed (incl. retried), {after['waiting'] + after['running']} left"
              + (f"; errors: {'; '.join(errors)}" if errors else ""), flush=True)
    if errors:
        raise RuntimeError("; ".join(errors))
    return summary


class _PrintQueue:
    """Progress: one line per finished trial with a count and an estimate of the time left."""

    def __init__(self, total: int, start: float, enabled: bool) -> None:
        self.total, self.start, self.enabled, self.done = max(1, total), start, enabled, 0

    def put(self, item) -> None:
        worker_id, arm, seed, status = item
        self.done += 1
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.start
        left = elapsed / self.done * max(0, self.total - self.done)
        where = "across seeds" if seed is None else f"seed {seed}"
        print(f"[{self.done}/{self.total}] {datetime.now():%H:%M:%S} w{worker_id} {arm} {where}: {status} "
              f"(~{left:.0f} s left)", flush=True)
