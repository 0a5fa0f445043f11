"""A study's finished trials, read from its storage or from an export file, and the trial each arm selects.

:func:`load_units` gives one structure whatever the source (an Optuna storage, or a ``<study>.json.gz`` written by
:mod:`adaptive_focal.compare.export`)::

    {"study", "metric", "direction", "meta", "arms": {arm: {"config", "space", ...}},
     "units": {arm: {seed: [trial, ...]}}, "across_seeds": {arm: {"seeds", "trials"}},
     "other_trials": {state: count}}

where a trial is ``{"number", "state", "val", "test", "seconds", "gamma"}`` (COMPLETE and PRUNED trials, by number;
``gamma`` a trajectory ``[(step, gamma), ...]`` or None). :func:`selected` applies the selection rule: per seed the
completed trial with the best validation metric; for an arm tuned across seeds, the one configuration with the best
mean validation metric over every seed. The test metrics never take part in a choice. ``other_trials`` counts the
units' trials in other states (FAIL, WAITING, RUNNING) for the study as a whole, as an export keeps them.

Example (:func:`better` orders values of either direction; a missing or NaN value is the worst):
    >>> from adaptive_focal.compare.results import better
    >>> max([0.62, None, 0.71], key=lambda v: better("maximize", v))
    0.71
    >>> sorted([0.2, None, 0.1], key=lambda v: better("minimize", v), reverse=True)
    [0.1, 0.2, None]
"""

from __future__ import annotations

import math
import statistics

from ..integrations._optional import require

__all__ = ["better", "load_units", "selected", "stored_units", "study_summaries"]


def _num(v, default=None):
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v) else default


def _sign(direction: str) -> float:
    return -1.0 if direction == "minimize" else 1.0


def better(direction: str, value) -> float:
    """A key that is larger for better values of a metric optimised in ``direction``; a missing or NaN value is
    the worst."""
    v = _num(value)
    return float("-inf") if v is None else _sign(direction) * v


def _trajectory(attrs: dict):
    """``[(step, gamma), ...]`` from a ``gamma_trajectory`` or a research.train ``gamma`` attribute, else None
    (vector gammas are averaged)."""
    raw = attrs.get("gamma_trajectory")
    if raw is None and isinstance(attrs.get("gamma"), dict):
        raw = attrs["gamma"].get("epochs")
    if not raw:
        return None
    out = []
    for i, item in enumerate(raw, 1):
        if isinstance(item, dict):
            x, g = item.get("epoch", i), item.get("gamma")
        elif isinstance(item, (list, tuple)) and len(item) == 2:
            x, g = item
        else:
            x, g = i, item
        if isinstance(g, dict):
            g = g.get("values")
        flat = _flatten(g)
        if flat:
            out.append((float(x), statistics.fmean(flat)))
    return out or None


def _flatten(v) -> list:
    if isinstance(v, (list, tuple)):
        return [x for item in v for x in _flatten(item)]
    return [float(v)] if isinstance(v, (int, float)) and not isinstance(v, bool) else []


def trial_record(number: int, state: str, attrs: dict) -> dict:
    """A per-seed trial as :func:`load_units` lists it (``attrs``: its user attributes)."""
    return {"number": number, "state": state, "val": attrs.get("val_metrics"), "test": attrs.get("test_metrics"),
            "seconds": attrs.get("seconds"), "gamma": _trajectory(attrs)}


def across_record(number: int, state: str, attrs: dict) -> dict:
    """A trial of an arm tuned across seeds, as :func:`load_units` lists it (``attrs``: its user attributes)."""
    return {"number": number, "state": state, "seeds_evaluated": list(attrs.get("seeds_evaluated") or []),
            "pruned": bool(attrs.get("pruned"))}


def seed_record(number: int, state: str, run: dict) -> dict:
    """One seed's run inside a trial of an arm tuned across seeds, shaped like a per-seed trial record."""
    return trial_record(number, state, run)


# ----------------------------------------------------------------------------------------------------------
# from an Optuna storage
# ----------------------------------------------------------------------------------------------------------
def study_summaries(storage, study_name: str) -> tuple[dict, dict]:
    """Every study in ``storage`` by name, and the manifest's user attributes of ``study_name`` (an error naming
    the stored studies when it is not there)."""
    optuna = require("optuna", "compare", "adaptive_focal.compare")
    names = {s.study_name: s for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}
    if study_name not in names:
        studies = sorted(n for n in names if "/" not in n)
        raise ValueError(f"no study {study_name!r} in this storage; studies there: "
                         f"{', '.join(studies) if studies else '(none)'}")
    return names, names[study_name].user_attrs


def stored_units(storage, study_name: str):
    """The manifest's user attributes of ``study_name`` and an iterator over its units in ``storage`` as
    ``(arm, seed, optuna.Study)``: ``seed`` None for the one unit of an arm tuned across seeds; studies that are
    not units of the manifest's arms are left out."""
    optuna = require("optuna", "compare", "adaptive_focal.compare")
    from .runner import parse_unit_name

    names, attrs = study_summaries(storage, study_name)

    def units():
        arms = attrs.get("arms") or {}
        across = {arm for arm, rec in arms.items() if rec.get("across_seeds")}
        for name in names:
            parsed = parse_unit_name(study_name, name)
            if parsed is None or parsed[0] not in arms or (parsed[1] is None) != (parsed[0] in across):
                continue
            yield parsed[0], parsed[1], optuna.load_study(study_name=name, storage=storage)

    return attrs, units()


#: manifest keys that are not the objective's settings
_MANIFEST_OWN = ("format", "directions", "metric", "arms", "first_seed")


def _units_from_storage(storage, study_name: str) -> dict:
    from optuna.trial import TrialState

    attrs, stored = stored_units(storage, study_name)
    if "arms" not in attrs or "metric" not in attrs:
        raise ValueError(f"study {study_name!r} has no arms or metric in its manifest; was it made by "
                         "adaptive_focal.compare?")
    units: dict = {arm: {} for arm in attrs["arms"]}
    across = {arm: {"seeds": [], "trials": []} for arm, rec in attrs["arms"].items() if rec.get("across_seeds")}
    other: dict = {}
    for arm, seed, unit in stored:
        finished = (TrialState.COMPLETE, TrialState.PRUNED)
        every = unit.get_trials(deepcopy=False)
        for t in every:
            if t.state not in finished:
                other[t.state.name] = other.get(t.state.name, 0) + 1
        trials = sorted((t for t in every if t.state in finished), key=lambda t: t.number)
        if seed is not None:
            units[arm][seed] = [trial_record(t.number, t.state.name, t.user_attrs) for t in trials]
            continue
        seeds = list(unit.user_attrs.get("seeds") or [])
        across[arm] = {"seeds": seeds, "trials": [across_record(t.number, t.state.name, t.user_attrs)
                                                  for t in trials]}
        units[arm] = {s: [] for s in seeds}
        for t in trials:
            for s, run in (t.user_attrs.get("per_seed") or {}).items():
                units[arm].setdefault(int(s), []).append(seed_record(t.number, t.state.name, run))
    return {"study": study_name, "metric": attrs["metric"], "direction": (attrs.get("directions") or ["maximize"])[0],
            "meta": {k: v for k, v in attrs.items() if k not in _MANIFEST_OWN}, "arms": attrs["arms"],
            "units": {arm: dict(sorted(u.items())) for arm, u in units.items()}, "across_seeds": across,
            "other_trials": dict(sorted(other.items()))}


def load_units(storage, study_name: str | None = None) -> dict:
    """The finished trials of ``study_name`` (see the module docstring). ``storage`` is an Optuna storage or the
    path of an export file (``<study>.json.gz``), whose study must then be ``study_name`` when given."""
    from .export import is_export, read_export, units_from_export

    if is_export(storage):
        units = units_from_export(storage, study_name)
        units.setdefault("other_trials", dict(sorted((read_export(storage).get("other_trials") or {}).items())))
        return units
    if study_name is None:
        raise ValueError("study_name is required to read a study from an Optuna storage")
    return _units_from_storage(storage, study_name)


# ----------------------------------------------------------------------------------------------------------
# selection
# ----------------------------------------------------------------------------------------------------------
def completed(trials: list) -> list:
    return [t for t in trials if t["state"] == "COMPLETE" and t["val"] is not None]


def full_trials(units: dict, arm: str) -> list[tuple]:
    """``[(mean validation metric, trial number), ...]`` of the completed trials of an arm tuned across seeds that
    evaluated every seed of its unit (by number); a NaN / missing validation value counts as the worst."""
    metric, info = units["metric"], units["across_seeds"][arm]
    worst = float("-inf") if units.get("direction", "maximize") == "maximize" else float("inf")
    seeds = set(info["seeds"])
    out = []
    for t in info["trials"]:
        if t["state"] != "COMPLETE" or not seeds or set(t["seeds_evaluated"]) != seeds:
            continue
        runs = {s: r for s in seeds for r in units["units"][arm].get(s, []) if r["number"] == t["number"]}
        if set(runs) != seeds or any(r["val"] is None for r in runs.values()):
            continue
        vals = [_num((runs[s]["val"] or {}).get(metric), worst) for s in sorted(seeds)]
        out.append((statistics.fmean(vals), t["number"]))
    return out


def selected(units: dict) -> dict:
    """``{arm: {seed: trial}}``: per seed the completed trial with the best validation metric (first by number
    on ties). For an arm tuned across seeds: every seed's run of the one trial with the best mean validation
    metric among those that evaluated every seed (first by number on ties)."""
    metric, direction = units["metric"], units.get("direction", "maximize")
    out: dict = {}
    across = units.get("across_seeds") or {}
    for arm, per_seed in units["units"].items():
        out[arm] = {}
        if arm in across:
            full = full_trials(units, arm)
            if full:
                best = max(full, key=lambda x: (better(direction, x[0]), -x[1]))[1]
                out[arm] = {s: r for s, rs in per_seed.items() for r in rs if r["number"] == best}
            continue
        for seed, trials in per_seed.items():
            done = completed(trials)
            if done:
                out[arm][seed] = max(done, key=lambda t: (better(direction, (t["val"] or {}).get(metric)),
                                                          -t["number"]))
    return out
