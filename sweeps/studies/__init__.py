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


#: the fixed-gamma grid at several imbalance ratios (``sweeps/studies/rho.py``): ``<dataset>-rho<rho>``
_RHO_MODULE = "rho"


def _rho_studies() -> dict:
    return importlib.import_module(f"{__name__}.{_RHO_MODULE}").STUDIES


def list_studies() -> list[str]:
    return list(STUDIES) + list(_rho_studies())


def load_study(name: str):
    """The :class:`~sweeps.spec.Study` called ``name``; an unknown name is an error naming the studies."""
    if name in STUDIES:
        return importlib.import_module(f"{__name__}.{STUDIES[name]}").STUDY
    rho = _rho_studies()
    if name in rho:
        return rho[name]
    raise ValueError(f"unknown study {name!r}; studies: {', '.join(list_studies())}")
