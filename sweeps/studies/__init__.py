"""Study definitions, one module per study; each defines ``STUDY`` (a :class:`sweeps.spec.Study`)."""

from __future__ import annotations

import importlib

#: study name -> module in this package
STUDIES = {
    "digits-lt": "digits_lt",
    "mnist1d-lt": "mnist1d_lt",
    "gauss-lt": "gauss_lt",
    "dense-det": "dense_det",
    "seg-toy": "seg_toy",
    "digits-lt-across-seeds": "digits_lt_across_seeds",
}


#: modules that define families of studies as ``STUDIES`` (name -> Study): the fixed-gamma grid at several
#: imbalance ratios (``rho.py``: ``<dataset>-rho<rho>``) and focal loss with resampling (``combos.py``:
#: ``<dataset>-combos``)
_FAMILIES = ("rho", "combos")


def _family_studies() -> dict:
    out = {}
    for module in _FAMILIES:
        out.update(importlib.import_module(f"{__name__}.{module}").STUDIES)
    return out


def list_studies() -> list[str]:
    return list(STUDIES) + list(_family_studies())


def load_study(name: str):
    """The :class:`~sweeps.spec.Study` called ``name``; an unknown name is an error naming the studies."""
    if name in STUDIES:
        return importlib.import_module(f"{__name__}.{STUDIES[name]}").STUDY
    family = _family_studies()
    if name in family:
        return family[name]
    raise ValueError(f"unknown study {name!r}; studies: {', '.join(list_studies())}")
