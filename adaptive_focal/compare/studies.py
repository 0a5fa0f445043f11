"""Finds study definitions in files, modules and folders, the way an objective is found.

A *studies source* is a Python file (``path/to/my_study.py``), an importable module (``mypkg.studies``) or a folder.
A file or module defines ``STUDY`` (a :class:`~adaptive_focal.compare.Study`) and/or ``STUDIES`` (a mapping of
name -> Study, or a list of them). A folder that is a package whose ``__init__`` defines ``STUDIES`` is read from
that mapping (its values may also be zero-argument functions returning the Study, loaded only when asked for);
any other folder contributes every ``*.py`` file in it whose name does not start with ``_``.

``adaptive-focal sweep ...`` reads the sources named with ``--studies``; without it, the folder named by the
``ADAPTIVE_FOCAL_STUDIES`` environment variable, else ``sweeps/studies`` under the working directory (where this
repository keeps its studies).

Example (an index as :func:`find_studies` builds it: a study defined by a function is built when loaded):
    >>> from adaptive_focal.compare import Study, parse_arm
    >>> from adaptive_focal.compare.studies import StudyIndex
    >>> def demo():
    ...     return Study(name="demo", arms=(parse_arm("gamma=2"),), objective="mytask.py:train", metric="acc")
    >>> index = StudyIndex({"demo": demo}, sources=["my_studies.py"])
    >>> index.names(), index.load("demo").objective
    (['demo'], 'mytask.py:train')
    >>> index.load("other")
    Traceback (most recent call last):
        ...
    ValueError: unknown study 'other'; studies: demo (from my_studies.py)
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from .objective import ObjectiveError, _module_name_for
from .study import Study

__all__ = ["StudyIndex", "default_sources", "find_studies"]


def default_sources() -> list[str]:
    """The sources used when none is named: ``$ADAPTIVE_FOCAL_STUDIES`` (``os.pathsep``-separated), else
    ``sweeps/studies`` in the working directory when it exists."""
    env = os.environ.get("ADAPTIVE_FOCAL_STUDIES")
    if env:
        return [p for p in env.split(os.pathsep) if p]
    here = Path.cwd() / "sweeps" / "studies"
    return [str(here)] if here.is_dir() else []


def _import_path(path: Path):
    import sys

    module_name, folder = _module_name_for(path.resolve())
    if path.name == "__init__.py":  # the package itself
        module_name = module_name.rpartition(".")[0]
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    return importlib.import_module(module_name)


def _entries(module) -> dict:
    out = {}
    study = getattr(module, "STUDY", None)
    if study is not None:
        out[_check(study, module).name] = study
    studies = getattr(module, "STUDIES", None)
    if isinstance(studies, dict):
        for name, value in studies.items():
            out[name] = value
    elif isinstance(studies, (list, tuple)):
        for value in studies:
            out[_check(value, module).name] = value
    elif studies is not None:
        raise ObjectiveError(f"{module.__name__}.STUDIES must be a dict of name -> Study or a list of Study, got "
                             f"{type(studies).__name__}")
    return out


def _check(value, where) -> Study:
    if not isinstance(value, Study):
        raise ObjectiveError(f"{getattr(where, '__name__', where)}: a study must be an adaptive_focal.compare.Study, "
                             f"got {type(value).__name__}")
    return value


class StudyIndex:
    """The studies of some sources by name, in the order the sources define them; loaded lazily."""

    def __init__(self, entries: dict, sources: list[str]) -> None:
        self._entries = entries
        self.sources = sources

    def names(self) -> list[str]:
        return list(self._entries)

    def load(self, name: str) -> Study:
        if name not in self._entries:
            if not self.sources:
                raise ValueError(f"unknown study {name!r}: no study definitions found (no --studies given, "
                                 "ADAPTIVE_FOCAL_STUDIES is not set and there is no sweeps/studies folder here)")
            raise ValueError(f"unknown study {name!r}; studies: {', '.join(self._entries) or '(none)'} (from "
                             f"{', '.join(self.sources)})")
        value = self._entries[name]
        study = _check(value() if callable(value) and not isinstance(value, Study) else value, name)
        if study.name != name:
            raise ObjectiveError(f"study {name!r} is defined with the name {study.name!r}")
        return study


def find_studies(sources=None) -> StudyIndex:
    """The studies defined by ``sources`` (see the module docstring; default :func:`default_sources`)."""
    sources = list(default_sources() if sources is None else sources)
    entries: dict = {}
    for source in sources:
        path = Path(source)
        if path.is_dir():
            init = path / "__init__.py"
            if init.is_file():
                module = _import_path(init)
                found = _entries(module)
                if found:
                    entries.update(found)
                    continue
            for file in sorted(path.glob("*.py")):
                if not file.name.startswith("_"):
                    entries.update(_entries(_import_path(file)))
        elif source.endswith(".py"):
            if not path.is_file():
                raise ObjectiveError(f"studies file {source!r} not found (from {Path.cwd()})")
            entries.update(_entries(_import_path(path)))
        else:
            try:
                module = importlib.import_module(source)
            except ModuleNotFoundError as err:
                raise ObjectiveError(f"studies source {source!r} is neither a folder, a .py file nor an importable "
                                     f"module ({err})") from err
            entries.update(_entries(module))
    return StudyIndex(entries, sources)
