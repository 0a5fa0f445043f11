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
}


def list_studies() -> list[str]:
    return list(STUDIES)


def load_study(name: str):
    """The :class:`~sweeps.spec.Study` called ``name``; an unknown name is an error naming the studies."""
    if name not in STUDIES:
        raise ValueError(f"unknown study {name!r}; studies: {', '.join(STUDIES)}")
    return importlib.import_module(f"{__name__}.{STUDIES[name]}").STUDY
