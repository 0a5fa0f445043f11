"""Exports a study from its Optuna storage into one compact, reproducible file: the result to commit or share.

``<out>/<study>.json.gz`` holds the study's manifest (the objective's settings, the objective directions, the
metric, the arms with their config and search space) and every finished trial (COMPLETE or PRUNED): arm, seed,
trial number, state, sampled parameters, the configuration it ran, validation and test metrics, seconds, gamma
trajectory and package versions (``None`` where a trial lacks one). Trials in other states (WAITING, RUNNING, FAIL)
are only counted, under ``"other_trials"``; a study exported while trials still wait or run is exported with a
warning.

An arm tuned across seeds (format 2) has one unit and its trials are exported whole: ``seed`` is None, and
``config`` (without a seed), ``seconds`` (all seeds), ``versions``, ``seeds`` (the order evaluated),
``seeds_evaluated``, ``pruned`` and ``per_seed`` (``{"<seed>": {"config", "val_metrics", "test_metrics", "seconds",
"gamma_trajectory"}}``); ``units[arm]`` lists the unit's seeds. A study without such arms is written in format 1.

The file is gzip-compressed JSON with sorted keys (``arm_order`` keeps the manifest's order of the arms), no time
stamps (gzip ``mtime=0``, no file name in the header) and trials in a fixed order (arm as in the manifest, then
seed, then trial number), so exporting the same storage twice gives the same bytes. Reports read these files as
they read a storage (:func:`~adaptive_focal.compare.results.load_units`).

Example:
    >>> from adaptive_focal.compare.export import export_path, is_export
    >>> path = export_path("sweeps/results/trials", "digits-lt")
    >>> path.as_posix(), is_export(path), is_export("runs/sweeps/digits-lt.log")
    ('sweeps/results/trials/digits-lt.json.gz', True, False)
"""

from __future__ import annotations

import gzip
import io
import json
import warnings
from pathlib import Path

from .results import _MANIFEST_OWN, across_record, seed_record, stored_units, trial_record

__all__ = ["EXPORT_FORMAT", "SUFFIX", "export_path", "export_study", "is_export", "read_export", "study_to_dict",
           "units_from_export", "write_export"]

#: version of the export layout (bump when a key changes meaning); 2 added arms tuned across seeds, and a study
#: without them is still written as format 1
EXPORT_FORMAT = 2
#: formats :func:`read_export` reads
READ_FORMATS = (1, 2)
SUFFIX = ".json.gz"
#: without these a study cannot be analysed
_REQUIRED_KEYS = ("metric", "arms")
#: trial user attributes copied into the export; missing ones are None
_TRIAL_KEYS = ("config", "val_metrics", "test_metrics", "seconds", "gamma_trajectory", "versions")
#: user attributes of a trial of an arm tuned across seeds copied into the export; missing ones are None
_ACROSS_KEYS = ("config", "seconds", "versions", "seeds", "seeds_evaluated", "pruned", "per_seed")


def is_export(spec) -> bool:
    """Whether the storage argument ``spec`` names an export file (by its ``.json.gz`` suffix)."""
    return isinstance(spec, (str, Path)) and str(spec).endswith(SUFFIX)


def export_path(folder, study_name: str) -> Path:
    return Path(folder) / f"{study_name}{SUFFIX}"


def study_to_dict(storage, study_name: str) -> dict:
    """The export of ``study_name`` from an Optuna ``storage`` (see the module docstring)."""
    from optuna.trial import TrialState

    attrs, stored = stored_units(storage, study_name)
    missing = [k for k in _REQUIRED_KEYS if k not in attrs]
    if missing:
        raise ValueError(f"study {study_name!r} has no {', '.join(missing)} in its manifest; was it made by "
                         "adaptive_focal.compare?")
    manifest = {k: v for k, v in attrs.items() if k != "format"}
    arm_order = {arm: i for i, arm in enumerate(attrs["arms"])}
    across = {arm for arm, rec in attrs["arms"].items() if rec.get("across_seeds")}
    units: dict = {arm: [] for arm in attrs["arms"]}
    trials, other = [], {}
    for arm, seed, unit in stored:
        if seed is None:
            units[arm] = list(unit.user_attrs.get("seeds") or [])
        else:
            units[arm].append(seed)
        keys = _TRIAL_KEYS if seed is not None else _ACROSS_KEYS
        for t in unit.get_trials(deepcopy=False):
            if t.state not in (TrialState.COMPLETE, TrialState.PRUNED):
                other[t.state.name] = other.get(t.state.name, 0) + 1
                continue
            trials.append({"arm": arm, "seed": seed, "number": t.number, "state": t.state.name,
                           "params": dict(t.params), **{k: t.user_attrs.get(k) for k in keys}})
    trials.sort(key=lambda r: (arm_order[r["arm"]], -1 if r["seed"] is None else r["seed"], r["number"]))
    if other.get("WAITING") or other.get("RUNNING"):
        warnings.warn(f"study {study_name!r} is not finished ({other.get('WAITING', 0)} waiting, "
                      f"{other.get('RUNNING', 0)} running trials); exporting what has finished", RuntimeWarning,
                      stacklevel=2)
    return {"format": EXPORT_FORMAT if across else 1, "study": study_name, "manifest": manifest,
            "arm_order": list(attrs["arms"]),
            "units": {arm: sorted(seeds) for arm, seeds in units.items()},
            "other_trials": dict(sorted(other.items())), "trials": trials}


def _dumps(data: dict) -> bytes:
    # allow_nan=False: the runner stores NaN metrics as None; a NaN here is a bug worth stopping for
    return json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def write_export(data: dict, path) -> Path:
    """Writes ``data`` as gzip-compressed JSON with a fixed header (no time stamp, no file name); the file is
    replaced whole (written next to it, then renamed), so a crash never leaves half an export."""
    path = Path(path)
    if not is_export(path):
        raise ValueError(f"export path must end in {SUFFIX!r}, got {str(path)!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as fh:
        fh.write(_dumps(data))
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(path)
    return path


def export_study(storage_spec: str, study_name: str, out_dir) -> Path:
    """Exports ``study_name`` from ``storage_spec`` (journal file path or database URL) into
    ``out_dir/<study>.json.gz``; returns the path."""
    import optuna

    from .storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(storage_spec, write=False)
    return write_export(study_to_dict(storage, study_name), export_path(out_dir, study_name))


def read_export(path) -> dict:
    """The dict written by :func:`write_export` (an error names the file when it is not an export)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no export file {str(path)!r}; write it with `adaptive-focal sweep export <study> --out "
                         f"{path.parent}`")
    try:
        data = json.loads(gzip.decompress(path.read_bytes()))
    except (OSError, ValueError, EOFError) as err:
        raise ValueError(f"{str(path)!r} is not a gzip-compressed JSON export: {err}") from None
    if not isinstance(data, dict) or data.get("format") not in READ_FORMATS:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{str(path)!r}: export format must be one of {', '.join(map(str, READ_FORMATS))}, "
                         f"got {found!r}")
    return data


def units_from_export(path, study_name: str | None = None) -> dict:
    """What :func:`~adaptive_focal.compare.results.load_units` returns for a storage, from an export file.
    ``study_name``, when given, must be the exported study's name."""
    data = read_export(path)
    if study_name is not None and data["study"] != study_name:
        raise ValueError(f"{str(path)!r} holds study {data['study']!r}, not {study_name!r}")
    m = data["manifest"]
    arms = {arm: m["arms"][arm] for arm in data["arm_order"]}  # JSON keys are sorted in the file
    units: dict = {arm: {seed: [] for seed in data["units"].get(arm, [])} for arm in arms}
    across = {arm: {"seeds": list(data["units"].get(arm, [])), "trials": []} for arm, rec in arms.items()
              if rec.get("across_seeds")}
    for t in data["trials"]:
        if t["arm"] in across:
            across[t["arm"]]["trials"].append(across_record(t["number"], t["state"], t))
            for s, run in (t.get("per_seed") or {}).items():
                units[t["arm"]].setdefault(int(s), []).append(seed_record(t["number"], t["state"], run))
            continue
        units[t["arm"]].setdefault(t["seed"], []).append(trial_record(t["number"], t["state"], t))
    return {"study": data["study"], "metric": m["metric"], "direction": (m.get("directions") or ["maximize"])[0],
            "meta": {k: v for k, v in m.items() if k not in _MANIFEST_OWN}, "arms": arms,
            "units": {arm: {s: sorted(ts, key=lambda t: t["number"]) for s, ts in sorted(u.items())}
                      for arm, u in units.items()},
            "across_seeds": {arm: {"seeds": a["seeds"], "trials": sorted(a["trials"], key=lambda t: t["number"])}
                             for arm, a in across.items()}}
