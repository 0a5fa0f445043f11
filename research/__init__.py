"""Experiments built on :mod:`adaptive_focal`; the library never imports this package."""
