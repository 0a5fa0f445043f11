"""This repository's study definitions: one module per main study (defining ``STUDY``) and two families of studies
(defining ``STUDIES``). ``adaptive-focal sweep`` finds them through :data:`STUDIES` (name -> a function that builds
the study), in this order: the main studies, then the rho, combos, confirm and prior families."""

from __future__ import annotations

import importlib

#: main study name -> module in this package
_MODULES = {
    "digits-lt": "digits_lt",
    "mnist1d-lt": "mnist1d_lt",
    "gauss-lt": "gauss_lt",
    "dense-det": "dense_det",
    "seg-toy": "seg_toy",
    "digits-lt-across-seeds": "digits_lt_across_seeds",
}
#: modules that define families of studies as ``STUDIES`` (name -> Study): the fixed-gamma grid at several
#: imbalance ratios (``rho.py``: ``<dataset>-rho<rho>``), focal loss with resampling (``combos.py``:
#: ``<dataset>-combos``), the pre-registered confirmatory studies (``confirm.py``: ``<dataset>-confirm``) and
#: logit adjustment with a focal term (``prior.py``: ``<dataset>-prior``, ``<dataset>-prior-long``, their
#: ``-policies`` companions and the fair ``-prior-learned`` and ``-adafocal`` studies)
_FAMILIES = ("rho", "combos", "confirm", "prior")


def _module(name: str):
    return importlib.import_module(f"{__name__}.{name}")


def _main_study(module: str):
    return lambda: _module(module).STUDY


def _family_study(module: str, name: str):
    return lambda: _module(module).STUDIES[name]


def _family_names(module: str) -> list[str]:
    m = _module(module)
    return list(m.STUDIES)


STUDIES = {name: _main_study(module) for name, module in _MODULES.items()}
for _family in _FAMILIES:
    STUDIES.update({name: _family_study(_family, name) for name in _family_names(_family)})


def list_studies() -> list[str]:
    return list(STUDIES)


def load_study(name: str):
    """The :class:`~sweeps.spec.DatasetStudy` called ``name``; an unknown name is an error naming the studies."""
    if name not in STUDIES:
        raise ValueError(f"unknown study {name!r}; studies: {', '.join(STUDIES)}")
    return STUDIES[name]()
