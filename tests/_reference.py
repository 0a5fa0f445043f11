"""TEMPORARY: moved to tests/helpers/reference.py. This re-export goes once the test modules of the
sigmoid-statistics branch (test_functional_sigmoid, test_triton_interpret, test_stats, test_stats_grad) import
``helpers.reference`` instead."""

from helpers.reference import *  # noqa: F403
