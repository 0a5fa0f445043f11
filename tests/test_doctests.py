"""The docstrings' examples are tests too: every public module's doctests must pass."""

import doctest
import importlib

import pytest

MODULES = [
    "adaptive_focal.functional", "adaptive_focal.loss", "adaptive_focal.table", "adaptive_focal.gamma_forms",
    "adaptive_focal.stats",
    "adaptive_focal.policies", "adaptive_focal.policies.base", "adaptive_focal.policies.space",
    "adaptive_focal.policies.schedules", "adaptive_focal.policies.sequential", "adaptive_focal.policies.feedback",
    "adaptive_focal.policies.adafocal", "adaptive_focal.policies.learned.hypergradient",
    "adaptive_focal.policies.learned.gammanet", "adaptive_focal.policies.learned.bandit",
    "adaptive_focal.metrics", "adaptive_focal.callbacks",
    "adaptive_focal.integrations.optuna", "adaptive_focal.integrations.wandb",
    "adaptive_focal.integrations.lightning", "adaptive_focal.integrations.transformers",
    "adaptive_focal.integrations.wandb_report",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} doctest(s) failed in {name}"
    assert result.attempted > 0, f"{name} has no runnable example"
