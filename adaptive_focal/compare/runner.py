"""Runs a study's arms x seeds as Optuna studies in one storage, with parallel workers, retries and resume.

Layout in the storage: a manifest study named ``<study>`` whose user attributes record what the study is made of
(:meth:`~adaptive_focal.compare.Study.manifest`: the objective's settings, the arms, the metric and the objective
directions), and one *unit* study per arm and seed, ``<study>/<arm>/seed<k>``. Setting up a unit enqueues its trials
(1 for a fixed arm, ``trials`` for a tuned arm; TPE samples a tuned arm's parameters when the trial starts);
workers claim waiting trials atomically (WAITING -> RUNNING), so any number of workers on one machine (journal file)
or many machines (a database such as PostgreSQL) share the work with nothing run twice.

**Set-up is atomic.** Creating or checking the manifest and topping up the units happens under a lock held in the
storage itself (a trial of the manifest study claimed WAITING -> RUNNING, the same atomic step that claims work),
so of two commands started at the same moment with different arms or settings one creates the study and the other
is refused before it writes anything, and two commands with the same settings never enqueue a unit twice.

**Workers die, freeze and lose the storage without losing results.** Running trials write a heartbeat every
``heartbeat_interval`` seconds; a running trial whose heartbeat is older than ``grace_period`` (its worker was
killed or frozen) is marked FAIL and re-enqueued with Optuna's ``RetryHeartbeatStaleTrialCallback``. A frozen
worker that wakes after its trial was handed on discards its result (the retry's counts). Calls to a database are
retried for ``retry_seconds`` after a dropped connection (:mod:`adaptive_focal.compare.storage`); a worker that
cannot reconnect stops with one line naming the storage. A second run of the same study tops units up to their
budget and continues.

**Failures are visible.** A trial whose objective raises is stored as FAIL with its exception and traceback (user
attributes ``error``, ``traceback``); the first failure's traceback is printed, later ones in one line each; when
every trial of a unit has failed, :func:`run` raises :class:`TrialsFailedError` naming the units and the first
error (the command line exits non-zero).

An arm tuned across seeds (``Arm.across_seeds``) has one unit, ``<study>/<arm>/seeds``: each of its trials samples a
configuration and trains it on the seeds one after another (in an order shuffled per trial), reporting each seed's
validation metric with ``trial.report(value, step=seed)``; Optuna's ``WilcoxonPruner`` stops the configuration
after a seed when it is significantly worse than the best trial so far. As the pruner's documentation advises,
such a trial is not raised as pruned but completed with the mean over the seeds it evaluated (user attribute
``pruned`` True), so TPE learns from it.

**Pruning is a recorded choice.** Trials of arms tuned per seed report their validation metric after each epoch
(``run.report``); :attr:`RunOptions.pruner` says what is done with it: ``"none"`` (the default) never stops a trial;
``"late"`` (:class:`LatePruner`) stops one only in the last fifth of the epochs, when it is below the median of the
unit's completed trials there; ``"median"`` is Optuna's ``MedianPruner`` from the first epoch on, the protocol of
the studies committed before the option existed. A pruner that acts early judges a configuration by how fast it
learns, and for gamma that is a bias: a small gamma learns more slowly and may end best (on gauss-lt every TPE
trial with gamma < 0.5 was pruned though the best fixed gamma there is 0); it also leaves the arms with unequal
numbers of completed runs, so budgets match only in runs started. The manifest records the pruner as ``pruner``
when the study has arms tuned per seed and the pruner is not ``"median"``; no key means ``"median"`` (or, for a
study made before the key existed, possibly ``--no-prune``), so the stored manifests of the committed studies are
unchanged and a rerun of one with ``--pruner median`` exports the same manifest. A study is not continued under
another pruner. Likewise for arms tuned across seeds: ``--no-prune`` (``RunOptions.prune`` False) switches their
WilcoxonPruner off, and the manifest then records ``wilcoxon_pruner: False`` (no key: on); a study is not continued
with the other setting.

Each trial stores user attributes ``arm``, ``seed``, ``config``, ``val_metrics``, ``test_metrics``, ``seconds``,
``gamma_trajectory`` (``[[step, gamma], ...]``) and ``versions``, so reports work from the storage alone.

Example (the names of the unit studies):
    >>> from adaptive_focal.compare import Study, across_seeds, parse_arm
    >>> from adaptive_focal.compare.runner import parse_unit_name, unit_name
    >>> fixed, tuned = parse_arm("gamma=2"), across_seeds(parse_arm("gamma=tpe"))
    >>> study = Study(name="demo", arms=(fixed, tuned), objective="mytask.py:train", metric="acc")
    >>> unit_name(study, fixed, 1), unit_name(study, tuned, None)
    ('demo/gamma=2/seed1', 'demo/gamma=tpe@seeds/seeds')
    >>> parse_unit_name("demo", "demo/gamma=2/seed1"), parse_unit_name("demo", "demo/gamma=tpe@seeds/seeds")
    (('gamma=2', 1), ('gamma=tpe@seeds', None))
    >>> parse_unit_name("demo", "other/gamma=2/seed1") is None
    True
"""

from __future__ import annotations

import json
import math
import multiprocessing
import random
import threading
import time
import traceback
import warnings
import zlib
from datetime import datetime

from ..integrations._optional import require
from .arms import Arm
from .objective import ObjectiveError, Run, check_result, load_objective
from .options import DEFAULT_PRUNER, PRUNERS, RunOptions
from .storage import StorageError, default_storage, open_storage, redact
from .study import Study

optuna = require("optuna", "compare", "adaptive_focal.compare")
from optuna.exceptions import UpdateFinishedTrialError  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

__all__ = ["LATE_FRACTION", "LatePruner", "RunOptions", "StudyMismatchError", "TrialsFailedError", "parse_unit_name",
           "run", "setup", "unit_name", "units_of", "work"]

FORMAT = 1
_HEARTBEAT = "af_heartbeat"
_LIVE = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
#: last part of the name of an across-seeds unit, ``<study>/<arm>/seeds``
SEEDS_UNIT = "seeds"
#: user attribute marking the manifest study's set-up lock trials
_LOCK = "af_setup_lock"
#: a set-up lock held this long is taken to belong to a process that died while holding it
LOCK_STALE_S = 300.0
#: how long set-up waits for another process's set-up to finish
LOCK_WAIT_S = 600.0


class StudyMismatchError(ValueError):
    """The storage holds a study of this name made with other arms or settings."""


class TrialsFailedError(RuntimeError):
    """Every trial of one or more units failed: the comparison has no result for them."""


# ----------------------------------------------------------------------------------------------------------
# units
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
            out += [(arm, seed, unit_name(study, arm, seed)) for seed in study.seed_list(seeds)]
    return out


# ----------------------------------------------------------------------------------------------------------
# set-up: the lock, the manifest and the units
# ----------------------------------------------------------------------------------------------------------
def _lock_trials(storage, study_id: int) -> list:
    return [t for t in storage.get_all_trials(study_id, deepcopy=False) if t.user_attrs.get(_LOCK)]


class _SetupLock:
    """Mutual exclusion through the storage: the lowest-numbered unfinished lock trial of the manifest study is
    the lock; holding it means having moved it WAITING -> RUNNING (atomic in every Optuna storage); releasing
    completes it and enqueues the next. A lock held longer than ``LOCK_STALE_S`` (its holder died) is failed by
    whoever finds it, which lets the next one be taken."""

    def __init__(self, storage, study_id: int, name: str) -> None:
        self.storage, self.study_id, self.name = storage, study_id, name
        self.trial_id = None

    def _enqueue(self) -> None:
        template = optuna.trial.create_trial(state=TrialState.WAITING, user_attrs={_LOCK: True})
        self.storage.create_new_trial(self.study_id, template_trial=template)

    def __enter__(self):
        deadline, pause = time.monotonic() + LOCK_WAIT_S, 0.02
        while True:
            open_ = [t for t in _lock_trials(self.storage, self.study_id) if not t.state.is_finished()]
            if not open_:
                self._enqueue()
                continue
            first = min(open_, key=lambda t: t.number)
            if first.state == TrialState.WAITING:
                try:
                    if self.storage.set_trial_state_values(first._trial_id, state=TrialState.RUNNING):
                        self.trial_id = first._trial_id
                        return self
                except UpdateFinishedTrialError:
                    pass
            elif first.datetime_start is not None and time.time() - first.datetime_start.timestamp() > LOCK_STALE_S:
                try:
                    self.storage.set_trial_state_values(first._trial_id, state=TrialState.FAIL)
                except UpdateFinishedTrialError:
                    pass
                continue
            if time.monotonic() > deadline:
                raise StorageError(f"study {self.name!r}: another command has been setting it up for more than "
                                   f"{LOCK_WAIT_S:g} s; try again when it has finished")
            time.sleep(pause)
            pause = min(2 * pause, 0.5)

    def __exit__(self, *exc):
        try:
            self.storage.set_trial_state_values(self.trial_id, state=TrialState.COMPLETE, values=[0.0])
        except UpdateFinishedTrialError:
            pass  # judged stale and failed by another process meanwhile
        self._enqueue()


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


def check_manifest(study: Study, attrs: dict, multi_objective: bool = False) -> None:
    """Raises StudyMismatchError when the stored manifest ``attrs`` differs from ``study``'s."""
    requested = study.manifest(multi_objective)
    stored_arms = attrs.get("arms", {})
    unknown = [n for n in requested["arms"] if n not in stored_arms]
    changed = [n for n in requested["arms"] if n in stored_arms and stored_arms[n] != requested["arms"][n]]
    if unknown or changed:
        parts = []
        if unknown:
            parts.append(f"arms not in the stored study: {', '.join(unknown)}")
        if changed:
            parts.append(f"arms defined differently: {', '.join(changed)}")
        raise StudyMismatchError(
            f"study {study.name!r} in this storage was created with other arms ({'; '.join(parts)}). Stored arms: "
            f"{', '.join(stored_arms)}. Use another study name or storage, or the stored arms.")
    if attrs.get("first_seed", 0) != study.first_seed:
        raise StudyMismatchError(f"study {study.name!r} in this storage starts at seed {attrs.get('first_seed', 0)}; "
                                 f"this run asks for seeds from {study.first_seed}")
    for key, value in requested.items():
        if key in ("arms", "first_seed") or (key == "metric" and key not in attrs):
            continue
        if attrs.get(key) != value:
            raise StudyMismatchError(f"study {study.name!r} in this storage was created with {key} "
                                     f"{attrs.get(key)!r}; this run asks for {value!r}")


def _check_seed_units(storage, study: Study, seeds: int, names: set) -> None:
    """Raises StudyMismatchError when a stored across-seeds unit was made with other seeds (reads only)."""
    for arm in study.arms:
        name = unit_name(study, arm, None)
        if not arm.across_seeds or name not in names:
            continue
        stored = optuna.load_study(study_name=name, storage=storage).user_attrs.get("seeds")
        if stored is not None and stored != study.seed_list(seeds):
            raise StudyMismatchError(
                f"arm {arm.name!r} of study {study.name!r} is tuned across seeds {stored} in this storage; this "
                f"run asks for seeds {study.seed_list(seeds)} (--seeds {seeds}). Its trials' means are over the stored "
                f"seeds: run with --seeds {len(stored)}, or use another storage or study name.")


def _tuned_per_seed(study: Study) -> bool:
    """Whether ``study`` has arms tuned per seed (the arms the per-epoch pruner applies to)."""
    return any(a.tuned and not a.across_seeds for a in study.arms)


def _check_pruner(study: Study, attrs: dict, pruner: str) -> None:
    """Raises StudyMismatchError when the stored study's arms tuned per seed were pruned otherwise than
    ``pruner`` would (see the module docstring: no ``pruner`` key is ``"median"``, or ``"none"`` in a study made
    before the key existed)."""
    if not _tuned_per_seed(study):
        return
    stored = attrs.get("pruner")
    if pruner in ((stored,) if stored is not None else ("median", "none")):
        return
    made = f"pruner {stored!r}" if stored is not None else "MedianPruner from the first epoch (no recorded pruner)"
    again = stored if stored is not None else "median"
    raise StudyMismatchError(f"study {study.name!r} in this storage was made with {made}; this run asks for "
                             f"pruner {pruner!r}. Continue it with --pruner {again}, or use another study name or "
                             "storage: one study keeps one pruning protocol.")


def _check_wilcoxon(study: Study, attrs: dict, wilcoxon: bool) -> None:
    """Raises StudyMismatchError when the stored study's arms tuned across seeds ran with the WilcoxonPruner
    switched the other way (no ``wilcoxon_pruner`` key: on)."""
    if not any(a.across_seeds for a in study.arms):
        return
    stored = attrs.get("wilcoxon_pruner", True)
    if stored == wilcoxon:
        return

    def state(on: bool) -> str:
        return "on" if on else "off (--no-prune)"

    raise StudyMismatchError(f"study {study.name!r} in this storage was made with the WilcoxonPruner {state(stored)} "
                             f"for its arms tuned across seeds; this run has it {state(wilcoxon)}. Continue it "
                             f"{'without' if stored else 'with'} --no-prune, or use another study name or storage: "
                             "one study keeps one pruning protocol.")


def setup(storage, study: Study, *, seeds: int, trials: int, multi_objective: bool = False,
          pruner: str = DEFAULT_PRUNER, wilcoxon: bool = True) -> list[tuple]:
    """Creates (or checks and tops up) the manifest and unit studies under the set-up lock; returns
    ``[(arm, seed, unit name), ...]``. Nothing is written when the stored study differs from ``study`` or was
    pruned otherwise than ``pruner`` (:attr:`RunOptions.epoch_pruner`) and ``wilcoxon`` (the WilcoxonPruner of
    the arms tuned across seeds, :attr:`RunOptions.prune`) say."""
    _check_across_seeds(study, seeds, multi_objective)
    if pruner not in PRUNERS:
        raise ValueError(f"pruner must be one of {', '.join(map(repr, PRUNERS))}, got {pruner!r}")

    def check_stored(attrs: dict) -> bool:
        """Raises when the stored study differs (reads only); False when there is none yet."""
        if attrs.get("format") is None:
            return False
        check_manifest(study, attrs, multi_objective)
        _check_pruner(study, attrs, pruner)
        _check_wilcoxon(study, attrs, wilcoxon)
        _check_seed_units(storage, study, seeds, set(optuna.get_all_study_names(storage)))
        return True

    if study.name in set(optuna.get_all_study_names(storage)):  # refuse a mismatch before writing anything
        check_stored(optuna.load_study(study_name=study.name, storage=storage).user_attrs)
    manifest = optuna.create_study(storage=storage, study_name=study.name, load_if_exists=True)
    with _SetupLock(storage, manifest._study_id, study.name):
        # again under the lock: another command may have created the study since
        if not check_stored(storage.get_study_user_attrs(manifest._study_id)):
            for key, value in study.manifest(multi_objective).items():  # "format" last marks it complete
                storage.set_study_user_attr(manifest._study_id, key, value)
            if _tuned_per_seed(study) and pruner != "median":  # no key: "median", as in the committed studies
                storage.set_study_user_attr(manifest._study_id, "pruner", pruner)
            if any(a.across_seeds for a in study.arms) and not wilcoxon:  # no key: on, as in the committed studies
                storage.set_study_user_attr(manifest._study_id, "wilcoxon_pruner", False)
            storage.set_study_user_attr(manifest._study_id, "format", FORMAT)
        directions = study.directions(multi_objective)
        units = units_of(study, seeds)
        for arm, seed, name in units:
            unit = optuna.create_study(storage=storage, study_name=name, directions=directions, load_if_exists=True)
            target = trials if arm.tuned else 1
            have = len(unit.get_trials(deepcopy=False, states=_LIVE))
            if seed is None:
                if unit.user_attrs.get("seeds") is None:
                    unit.set_user_attr("seeds", study.seed_list(seeds))
                attrs = {"arm": arm.name, "seeds": study.seed_list(seeds)}
            else:
                attrs = {"arm": arm.name, "seed": seed}
            for _ in range(target - have):
                unit.enqueue_trial({}, user_attrs=attrs)
    return units


# ----------------------------------------------------------------------------------------------------------
# workers
# ----------------------------------------------------------------------------------------------------------
def _fail_stale(storage, study_id: int, unit, grace: float, max_retry: int) -> int:
    """Marks RUNNING trials without a heartbeat for ``grace`` seconds FAIL and re-enqueues them."""
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
    """Writes the trial's heartbeat every ``interval`` seconds while the trial runs; a failed write (a storage
    that is down) is skipped, not fatal: the next beat tries again."""

    def __init__(self, storage, trial_id: int, interval: float) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(storage, trial_id, interval), daemon=True)

    def _beat(self, storage, trial_id, interval):
        while not self._stop.wait(interval):
            try:
                storage.set_trial_system_attr(trial_id, _HEARTBEAT, time.time())
            except UpdateFinishedTrialError:
                return  # retried elsewhere: this worker's result will be discarded
            except Exception:  # noqa: BLE001 - a storage that is down; the next beat tries again
                continue

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


#: config keys that hold keyword arguments: a tuned parameter's key ``<one of these>.<name>`` sets ``<name>`` in it
NESTED_KEYS = ("policy_kwargs", "loss_kwargs")


def _set_path(config: dict, key: str, value) -> None:
    """Writes a tuned value into a trial's config: ``policy_kwargs.<name>`` / ``loss_kwargs.<name>`` into that
    dict (created when the arm's config has none), any other key at the top level."""
    head, dot, name = key.partition(".")
    if dot and head in NESTED_KEYS:
        config.setdefault(head, {})[name] = value
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


def _finite(metrics: dict | None) -> dict | None:
    """JSON-safe metrics (NaN and infinities -> None)."""
    if metrics is None:
        return None
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}


def _rounded(value):
    """A gamma value (number, nested list, or a gamma form's record) rounded to 5 significant digits: a table keeps
    its values; a mixture its weighted mean gamma; an asymmetric gamma ``[positive, negative]`` (the summaries of
    :func:`adaptive_focal.gamma_forms.gamma_scalars`)."""
    if isinstance(value, dict):
        if "values" in value:
            value = value["values"]
        else:
            from ..gamma_forms import gamma_scalars

            scalars = gamma_scalars(value)
            value = scalars.get("gamma/mean", [v for k, v in scalars.items() if k.count("/") == 1])
    if isinstance(value, (list, tuple)):
        return [_rounded(v) for v in value]
    return float(f"{value:.5g}") if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def gamma_trajectory(records: list) -> list:
    """``[[step, gamma], ...]`` rounded for storage, from ``[[step, gamma record], ...]`` or research.train's
    per-epoch records ``[{"epoch": e, "gamma": g, ...}, ...]``."""
    out = []
    for r in records or []:
        if isinstance(r, dict):
            if "epoch" in r and "gamma" in r:
                out.append([int(r["epoch"]), _rounded(r["gamma"])])
        elif isinstance(r, (list, tuple)) and len(r) == 2:
            out.append([int(r[0]), _rounded(r[1])])
    return out


def _versions() -> dict:
    """The versions a trial ran with: adaptive_focal, torch, Python."""
    import platform

    import torch

    import adaptive_focal

    return {"adaptive_focal": adaptive_focal.__version__, "torch": torch.__version__,
            "python": platform.python_version()}


def _traceback(err: BaseException, limit: int = 8000) -> str:
    text = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    return text[-limit:]


class _Outcome:
    """What a trial ended as: ``status`` ("complete", "pruned", "failed", "taken-over") and, for a failure, the
    error line and traceback."""

    __slots__ = ("status", "error", "traceback")

    def __init__(self, status: str, error: str | None = None, tb: str | None = None) -> None:
        self.status, self.error, self.traceback = status, error, tb


def _trial_config(study: Study, arm: Arm, trial) -> tuple[dict, dict]:
    config = json.loads(json.dumps(arm.config))
    params = {}
    for pname, (key, spec) in arm.space.items():
        params[pname] = _suggest(trial, pname, tuple(spec))
        _set_path(config, key, params[pname])
    return config, params


def _call_objective(objective, study: Study, arm: Arm, seed: int, config: dict, params: dict, trial, opts,
                    prune: bool) -> tuple[dict, list, float]:
    """Runs the objective once; returns ``(checked result, gamma trajectory, seconds)``."""
    run = Run(seed=seed, arm=arm.name, config=config, params=params, mode=study.mode, study=study, trial=trial,
              prune=prune, threads=opts.threads)
    start = time.perf_counter()
    result = check_result(objective(run), study.metric, required=("ece",) if opts.multi_objective else ())
    seconds = result["seconds"] if result["seconds"] is not None else time.perf_counter() - start
    trajectory = gamma_trajectory(result["gamma_trajectory"] if result["gamma_trajectory"] is not None
                                  else run.gamma_trajectory())
    return result, trajectory, seconds


def _metric_value(study: Study, val: dict) -> float:
    """The objective value Optuna records: the metric, or the worst value when it is missing / not finite."""
    value = val.get(study.metric)
    if value is None or not math.isfinite(value):
        return float("-inf") if study.direction == "maximize" else float("inf")
    return float(value)


def _fail(unit, trial, err: BaseException, where: str = "") -> _Outcome:
    error = f"{where}{type(err).__name__}: {err}"
    tb = _traceback(err)
    try:
        trial.set_user_attr("error", error)
        trial.set_user_attr("traceback", tb)
        unit.tell(trial, state=TrialState.FAIL)
    except UpdateFinishedTrialError:
        return _Outcome("taken-over")
    return _Outcome("failed", error, tb)


def _run_trial(unit, trial_id: int, study: Study, arm: Arm, seed: int, opts: RunOptions, objective) -> _Outcome:
    trial = optuna.trial.Trial(unit, trial_id)
    prune = arm.tuned and opts.epoch_pruner != "none"
    with _Heartbeat(unit._storage, trial_id, opts.heartbeat_interval):
        try:
            config, params = _trial_config(study, arm, trial)
            trial.set_user_attr("arm", arm.name)
            trial.set_user_attr("seed", seed)
            trial.set_user_attr("config", config)
            if study.trial_pause_s:
                time.sleep(study.trial_pause_s)
            result, trajectory, seconds = _call_objective(objective, study, arm, seed, config, params, trial, opts,
                                                          prune)
        except optuna.TrialPruned:
            try:
                unit.tell(trial, state=TrialState.PRUNED)
            except UpdateFinishedTrialError:
                return _Outcome("taken-over")
            return _Outcome("pruned")
        except UpdateFinishedTrialError:
            return _Outcome("taken-over")  # judged stale (no heartbeat within grace_period) and retried elsewhere
        except StorageError:
            raise
        except Exception as err:  # noqa: BLE001 - the objective's failure is the trial's, stored with it
            return _fail(unit, trial, err)
    try:
        if result["config"] is not None:
            trial.set_user_attr("config", result["config"])
        for key, value in (("test_metrics", _finite(result["test"])), ("val_metrics", _finite(result["val"])),
                           ("seconds", seconds), ("gamma_trajectory", trajectory), ("versions", _versions())):
            trial.set_user_attr(key, value)
        value = _metric_value(study, result["val"])
        values = [value, float(result["val"]["ece"])] if opts.multi_objective else value
        unit.tell(trial, values)
    except UpdateFinishedTrialError:
        return _Outcome("taken-over")  # judged stale (a frozen worker woke up) and retried elsewhere
    return _Outcome("complete")


def _seed_order(name: str, number: int, seeds: list) -> list:
    """The order in which trial ``number`` of unit ``name`` evaluates ``seeds``: shuffled per trial (as Optuna's
    WilcoxonPruner advises, so no seed always decides early), reproducibly."""
    return random.Random(zlib.crc32(f"{name}#{number}".encode())).sample(list(seeds), len(seeds))


def _run_across_seeds_trial(unit, trial_id: int, study: Study, arm: Arm, opts: RunOptions, objective) -> _Outcome:
    """One configuration of an arm tuned across seeds, trained on the unit's seeds one after another; the
    unit's WilcoxonPruner may stop it after any seed but the last (see the module docstring)."""
    trial = optuna.trial.Trial(unit, trial_id)
    prune = opts.prune and not opts.multi_objective
    per_seed, values, seconds, pruned = {}, [], 0.0, False
    try:
        seeds = unit.user_attrs["seeds"]
        base, params = _trial_config(study, arm, trial)
        order = _seed_order(unit.study_name, trial.number, seeds)
        # a retried trial (its worker was killed) inherits the failed attempt's attributes: start afresh
        for key, value in (("arm", arm.name), ("config", base), ("seeds", order), ("seeds_evaluated", []),
                           ("per_seed", {}), ("pruned", False)):
            trial.set_user_attr(key, value)
        with _Heartbeat(unit._storage, trial_id, opts.heartbeat_interval):
            for i, seed in enumerate(order):
                try:
                    if study.trial_pause_s and i == 1:  # killed-worker tests: a trial with one seed recorded
                        time.sleep(study.trial_pause_s)
                    result, trajectory, secs = _call_objective(objective, study, arm, seed,
                                                               json.loads(json.dumps(base)), params, None, opts,
                                                               False)
                except StorageError:
                    raise
                except Exception as err:  # noqa: BLE001 - stored with the trial
                    return _fail(unit, trial, err, where=f"seed {seed}: ")
                value = _metric_value(study, result["val"])
                values.append(value)
                seconds += secs
                run_config = result["config"] if result["config"] is not None else {**base, "seed": seed}
                if i == 0 and result["config"] is not None:  # the configuration the objective ran, less its seed
                    trial.set_user_attr("config", {k: v for k, v in run_config.items() if k != "seed"})
                per_seed[str(seed)] = {"config": run_config, "val_metrics": _finite(result["val"]),
                                       "test_metrics": _finite(result["test"]), "seconds": secs,
                                       "gamma_trajectory": trajectory}
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
        return _Outcome("taken-over")  # judged stale (no heartbeat within grace_period) and retried elsewhere
    return _Outcome("pruned" if pruned else "complete")


#: :class:`LatePruner` acts only once a trial has reported this fraction of the epochs its unit's trials report
LATE_FRACTION = 0.8


class LatePruner(optuna.pruners.BasePruner):
    """``MedianPruner`` restricted to the end of training: the ``"late"`` pruner of :class:`RunOptions`.

    A trial can be stopped only at a step from the ``ceil(fraction * n)``-th of the n steps that the unit's
    completed trials reported (the one with the most steps sets the schedule, which the runner cannot know before
    a trial has finished), and never at the last of them, where stopping would save nothing; there it is stopped
    when its best value so far is worse than the median of the completed trials at that step (Optuna's
    ``MedianPruner`` decides). Before a trial has completed, or ``n_startup_trials`` of them, nothing is pruned.
    With 10 epochs and ``fraction`` 0.8 a trial can be stopped after epoch 8 or 9.

    Early epochs measure how fast a configuration learns, not where it ends; for gamma the two differ (a small
    gamma starts slower), so a pruner that acts early prunes the configurations that would have won. Late in
    training the reported metric is close to the final one.

    Args:
        fraction: the share of the reported steps after which pruning may start, in (0, 1]; 1 never prunes.
        n_startup_trials: no pruning until this many trials of the unit have completed.
    """

    def __init__(self, fraction: float = LATE_FRACTION, n_startup_trials: int = 2) -> None:
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 < fraction <= 1.0:
            raise ValueError(f"fraction must be a number in (0, 1], got {fraction!r}")
        self.fraction = float(fraction)
        self._median = optuna.pruners.MedianPruner(n_startup_trials=n_startup_trials, n_warmup_steps=0)

    def window(self, study) -> tuple | None:
        """``(first, last)``: a trial can be pruned at steps ``first <= step < last``; None before a trial of
        ``study`` has completed with reported steps."""
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        steps = max((sorted(t.intermediate_values) for t in done), key=len, default=[])
        if not steps:
            return None
        k = math.ceil(round(self.fraction * len(steps), 9))  # round: 0.8 * 10 must give 8, not 9
        return steps[k - 1], steps[-1]

    def prune(self, study, trial) -> bool:
        step = trial.last_step
        window = self.window(study) if step is not None else None
        if window is None or not window[0] <= step < window[1]:
            return False
        return self._median.prune(study, trial)


def _pruner(arm: Arm, trials: int, pruner: str = "median"):
    """The unit's pruner: for arms tuned across seeds WilcoxonPruner over the seeds (``--no-prune`` switches it
    off in the trial, see :func:`_run_across_seeds_trial`); for the others the epoch pruner named ``pruner``:
    ``"median"`` (MedianPruner from the first epoch), ``"late"`` (:class:`LatePruner`) or ``"none"``."""
    if arm.across_seeds:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.pruners.WilcoxonPruner(p_threshold=arm.wilcoxon_p, n_startup_steps=2)
    if pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=max(2, trials // 3), n_warmup_steps=1)
    if pruner == "late":
        return LatePruner(n_startup_trials=max(2, trials // 3))
    if pruner == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"pruner must be one of {', '.join(map(repr, PRUNERS))}, got {pruner!r}")


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
    objective = load_objective(study.objective)
    storage = open_storage(opts.storage, connect_timeout=opts.connect_timeout, workers=opts.workers,
                           retry_seconds=opts.retry_seconds, retry_open=True)
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
                                                 pruner=_pruner(arm, trials, opts.epoch_pruner))
            unit = loaded[name]
            counts["stale-retried"] += _fail_stale(storage, unit._study_id, unit, opts.grace_period, opts.max_retry)
            trial_id = _claim(storage, unit._study_id)
            if trial_id is None:
                busy = busy or bool(storage.get_all_trials(unit._study_id, deepcopy=False,
                                                           states=(TrialState.RUNNING,)))
                continue
            if seed is None:
                outcome = _run_across_seeds_trial(unit, trial_id, study, arm, opts, objective)
            else:
                outcome = _run_trial(unit, trial_id, study, arm, seed, opts, objective)
            counts[outcome.status] += 1
            ran = True
            if queue is not None:
                queue.put((worker_id, arm.name, seed, outcome.status, outcome.error, outcome.traceback))
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
        queue.put((worker_id, None, None, ("done", counts), None, None))
    except BaseException as err:  # report in one line, then exit non-zero
        line = str(err) if isinstance(err, (StorageError, ObjectiveError)) else f"{type(err).__name__}: {err}"
        queue.put((worker_id, None, None, ("error", line), None, _traceback(err)))
        raise SystemExit(1) from None


def _count(storage, units) -> dict:
    out = {"complete": 0, "pruned": 0, "running": 0, "waiting": 0, "fail": 0}
    for _, _, name in units:
        for t in optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False):
            out[t.state.name.lower()] = out.get(t.state.name.lower(), 0) + 1
    return out


def _failed_units(storage, units) -> list[tuple[str, str]]:
    """``[(unit name, first error), ...]`` of the units whose every trial failed."""
    out = []
    for _, _, name in units:
        trials = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
        if trials and all(t.state == TrialState.FAIL for t in trials):
            errors = [t.user_attrs.get("error") or t.system_attrs.get("fail_reason") for t in trials]
            out.append((name, next((e for e in errors if e), "no error recorded")))
    return out


def run(study: Study, opts: RunOptions) -> dict:
    """Sets up the study, runs ``opts.workers`` worker processes (or this process for 1) and returns a summary.

    Raises:
        StudyMismatchError: the storage holds the study with other settings (nothing was written).
        TrialsFailedError: every trial of some unit failed (the first traceback was printed).
        StorageError: the storage could not be opened or was lost.
        RuntimeError: a worker process stopped with an error.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    opts.storage = opts.storage or default_storage(study.name)
    seeds, trials = opts.seeds or study.seeds, opts.trials or study.trials
    _check_across_seeds(study, seeds, opts.multi_objective)  # before the storage is opened (and created)
    if opts.multi_objective and study.direction != "maximize":
        raise ValueError("multi-objective runs maximise the metric and minimise ECE; the study's metric is "
                         f"minimised ({study.metric!r})")
    load_objective(study.objective)  # a missing objective fails here, not in every worker
    start = time.perf_counter()
    storage = open_storage(opts.storage, connect_timeout=opts.connect_timeout, workers=opts.workers,
                           retry_seconds=opts.retry_seconds)
    units = setup(storage, study, seeds=seeds, trials=trials, multi_objective=opts.multi_objective,
                  pruner=opts.epoch_pruner, wilcoxon=opts.prune)
    before = _count(storage, units)
    todo = before["waiting"] + before["running"]
    if opts.progress:
        pruning = f" (pruner {opts.epoch_pruner})" if _tuned_per_seed(study) else ""
        print(f"study {study.name}: {len(study.arms)} arms x {seeds} seeds, {trials} TPE trials per tuned arm"
              f"{pruning}; {before['complete'] + before['pruned']} trials done, {todo} to run; {opts.workers} "
              f"worker(s); storage {redact(opts.storage)}", flush=True)
    printer = _Progress(todo, start, opts.progress)
    errors = []
    if opts.workers == 1:
        work(study, opts, 0, units=units, queue=printer)
    else:
        ctx = multiprocessing.get_context("spawn")
        queue = ctx.Queue()
        procs = [ctx.Process(target=_worker_main, args=(study, opts, i, units, queue), daemon=False)
                 for i in range(opts.workers)]
        for p in procs:
            p.start()
        alive = len(procs)
        while alive:
            try:
                item = queue.get(timeout=1.0)
            except Exception:  # noqa: BLE001 - queue.Empty: look at the processes
                if not any(p.is_alive() for p in procs):
                    break
                continue
            worker_id, arm, _seed, status, _error, _tb = item
            if arm is None:
                alive -= 1
                if status[0] == "error":
                    errors.append(f"worker {worker_id}: {status[1]}")
            else:
                printer.put(item)
        for i, p in enumerate(procs):
            p.join()
            if p.exitcode not in (0, None) and not any(e.startswith(f"worker {i}:") for e in errors):
                errors.append(f"worker {i} exited with code {p.exitcode}")
    if errors:  # before reading the storage again: it may be what the workers lost
        raise RuntimeError("; ".join(errors))
    after = _count(storage, units)
    summary = {"study": study.name, "storage": redact(opts.storage), "units": len(units),
               "seconds": time.perf_counter() - start, "before": before, "after": after, "errors": errors,
               "failed_units": _failed_units(storage, units)}
    if opts.progress:
        print(f"done in {summary['seconds']:.0f} s: {after['complete']} complete, {after['pruned']} pruned, "
              f"{after['fail']} failed (incl. retried), {after['waiting'] + after['running']} left", flush=True)
    if summary["failed_units"]:
        names = [n for n, _ in summary["failed_units"]]
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        raise TrialsFailedError(f"every trial failed in {len(names)} unit(s) of study {study.name!r} ({shown}); "
                                f"the first error: {summary['failed_units'][0][1]}")
    return summary


class _Progress:
    """Progress: one line per finished trial with a count and an estimate of the time left; the first failure's
    traceback in full (stderr), later failures in one line."""

    def __init__(self, total: int, start: float, enabled: bool) -> None:
        self.total, self.start, self.enabled, self.done = max(1, total), start, enabled, 0
        self.shown_traceback = False

    def put(self, item) -> None:
        import sys

        worker_id, arm, seed, status, error, tb = item
        self.done += 1
        where = "across seeds" if seed is None else f"seed {seed}"
        if status == "failed":
            if not self.shown_traceback and tb:
                print(f"trial of arm {arm} ({where}) failed; its traceback (later failures get one line each):\n"
                      f"{tb.rstrip()}", file=sys.stderr, flush=True)
                self.shown_traceback = True
            elif error:
                print(f"trial of arm {arm} ({where}) failed: {error}", file=sys.stderr, flush=True)
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.start
        left = elapsed / self.done * max(0, self.total - self.done)
        print(f"[{self.done}/{self.total}] {datetime.now():%H:%M:%S} w{worker_id} {arm} {where}: {status} "
              f"(~{left:.0f} s left)", flush=True)
