"""The objective contract: your training function, called once per trial with a :class:`Run`.

.. code-block:: python

    def train(run) -> dict:
        loss = run.make_loss()                      # the arm's FocalLoss (mode from the study, its gamma)
        policy = run.make_policy(loss, epochs=E, steps_per_epoch=S)   # None for fixed-gamma arms
        for epoch in range(E):
            ...                                     # train; after each optimizer step: policy.step(stats)
            run.report(epoch, val_metric)           # for pruning; raises optuna.TrialPruned when pruned
        return {"val": {"balanced_accuracy": ...}, "test": {...}}   # "test" is optional

``run.seed`` seeds everything random in the run (data order, initialisation): arms are compared seed by seed, so
seed k of every arm must see the same data. Tuned arms select on ``"val"`` only; ``"test"`` is reported, never
used to choose. The learned controllers (``hypergradient``, ``gammanet``, ``bandit``) also need the model and
held-out batches: pass ``model=``, ``val_source=`` and ``optimizer=`` to ``run.make_policy`` (and run the
comparison with learned arms, ``--learned``); an objective that does not is never given such an arm by default.

An objective is named by an import string: ``"package.module:function"`` (importable from ``sys.path``) or
``"path/to/file.py:function"``. A file inside a package (its folder holds ``__init__.py``) is imported as part
of that package, with the package's parent folder put on ``sys.path``; a plain file is imported as a module of
its own with its folder on ``sys.path``. Either way the function can import its neighbours, and worker processes
load it the same way.

Example (what the runner does with the function's return value):
    >>> from adaptive_focal.compare.objective import check_result
    >>> check_result({"val": {"acc": 0.75}, "test": {"acc": 0.5}}, "acc")["val"]
    {'acc': 0.75}
    >>> check_result({"val": {"loss": 0.3}}, "acc")  # doctest: +NORMALIZE_WHITESPACE
    Traceback (most recent call last):
        ...
    adaptive_focal.compare.objective.ObjectiveError: the objective's 'val' has no 'acc' (the study's metric);
    it has: loss
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

__all__ = ["ObjectiveError", "Run", "check_result", "load_objective", "resolve_objective"]


class ObjectiveError(ValueError):
    """The objective cannot be loaded, or it returned something the contract does not allow."""


def _module_name_for(path: Path) -> tuple[str, Path]:
    """``(dotted module name, folder to put on sys.path)`` for the Python file ``path``."""
    parts = [path.stem]
    folder = path.parent
    while (folder / "__init__.py").is_file():
        parts.insert(0, folder.name)
        folder = folder.parent
    return ".".join(parts), folder


def resolve_objective(spec: str) -> str:
    """``spec`` in the canonical form the workers load: ``"module:function"`` for an importable module, or
    ``"/absolute/path/file.py:function"`` for a file (made absolute, so it does not depend on the working
    directory)."""
    if not isinstance(spec, str) or spec.count(":") < 1:
        raise ObjectiveError(f"objective must be 'FILE.py:FUNCTION' or 'MODULE:FUNCTION', got {spec!r}")
    target, _, func = spec.rpartition(":")
    if not target or not func.isidentifier():
        raise ObjectiveError(f"objective must be 'FILE.py:FUNCTION' or 'MODULE:FUNCTION', got {spec!r}")
    if target.endswith(".py"):
        path = Path(target).expanduser()
        if not path.is_file():
            raise ObjectiveError(f"objective file {target!r} not found (from {Path.cwd()})")
        return f"{path.resolve()}:{func}"
    return spec


def load_objective(spec: str):
    """The function ``spec`` names (see the module docstring); an :class:`ObjectiveError` says what is wrong."""
    spec = resolve_objective(spec)
    target, _, func = spec.rpartition(":")
    if target.endswith(".py"):
        module_name, folder = _module_name_for(Path(target))
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
    else:
        module_name = target
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and module_name.startswith(err.name):
            raise ObjectiveError(f"objective module {module_name!r} cannot be imported ({err}); name a file "
                                 "(path/to/file.py:function) or run from the folder that holds it") from err
        raise
    fn = getattr(module, func, None)
    if not callable(fn):
        raise ObjectiveError(f"objective {spec!r}: module {module_name!r} has no function {func!r}")
    return fn


_RESULT_KEYS = ("val", "test", "gamma_trajectory", "seconds", "config")


def _metric_dict(where: str, value) -> dict:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ObjectiveError(f"the objective's {where!r} must be a dict of metric name -> number, got "
                             f"{type(value).__name__}")
    out = {}
    for k, v in value.items():
        if hasattr(v, "item") and not isinstance(v, (int, float)):  # a 0-d tensor or a NumPy scalar
            v = v.item()
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise ObjectiveError(f"the objective's {where}[{k!r}] must be a number, got {type(v).__name__}")
        out[k] = None if v is None else float(v)
    return out


def check_result(result, metric: str, *, required=()) -> dict:
    """The objective's return value checked against the contract: ``{"val": {...}, "test": {...} or None,
    "gamma_trajectory": [...] or None, "seconds": float or None, "config": dict or None}``. ``"val"`` must hold
    ``metric`` and the ``required`` metrics. The optional keys: ``"seconds"`` (the run's own timing; else the call
    is timed), ``"gamma_trajectory"`` (``[[step, gamma], ...]``; else the gamma at each ``run.report``) and
    ``"config"`` (the full configuration the run used, stored for provenance; else ``run.config``)."""
    if not isinstance(result, dict):
        raise ObjectiveError(f"the objective must return a dict {{'val': {{metric: value}}, 'test': {{...}}}}, got "
                             f"{type(result).__name__}")
    unknown = sorted(set(result) - set(_RESULT_KEYS))
    if unknown:
        raise ObjectiveError(f"the objective returned unknown keys {unknown}; allowed: {', '.join(_RESULT_KEYS)}")
    if "val" not in result:
        raise ObjectiveError("the objective must return 'val': a dict of validation metrics (tuned arms select on "
                             "it)")
    val = _metric_dict("val", result["val"])
    for name, why in [(metric, "the study's metric")] + [(r, "needed by this run") for r in required]:
        if name not in val:
            raise ObjectiveError(f"the objective's 'val' has no {name!r} ({why}); it has: "
                                 f"{', '.join(sorted(val)) or '(nothing)'}")
    config = result.get("config")
    if config is not None and not isinstance(config, dict):
        raise ObjectiveError(f"the objective's 'config' must be a dict, got {type(config).__name__}")
    test = None if result.get("test") is None else _metric_dict("test", result["test"])
    seconds = result.get("seconds")
    return {"val": val, "test": test, "gamma_trajectory": result.get("gamma_trajectory"),
            "seconds": None if seconds is None else float(seconds), "config": config}


class Run:
    """What the objective is called with, once per trial.

    Attributes:
        seed: the seed of this run (arms are paired by seed).
        arm: the arm's name, e.g. ``"policy=pi+tpe"``.
        config: the arm's config with this trial's tuned values written in (``gamma``, ``policy``,
            ``policy_kwargs``, or the keys of a custom arm).
        params: the tuned values sampled for this trial (empty for a fixed arm).
        mode: the study's loss mode (None when the objective builds its own loss).
        study: the :class:`~adaptive_focal.compare.Study` being run (its ``meta`` holds the objective's settings).
        trial: the Optuna trial, for objectives that want more than ``report``.
    """

    def __init__(self, *, seed: int, arm: str, config: dict, params: dict, mode: str | None, study=None,
                 trial=None, prune: bool = False, threads: int | None = None) -> None:
        self.seed = seed
        self.arm = arm
        self.config = config
        self.params = params
        self.mode = mode
        self.study = study
        self.trial = trial
        self.threads = threads
        self._prune = prune
        self._policy = None
        self.trajectory: list = []  # [[step, gamma record], ...] at each report, when make_policy built a policy

    def __repr__(self) -> str:
        return f"Run(arm={self.arm!r}, seed={self.seed}, config={self.config!r})"

    @property
    def gamma(self) -> float:
        """The arm's fixed or tuned gamma (its starting gamma for a policy arm; 2.0 when the arm sets none)."""
        return float(self.config.get("gamma", 2.0))

    def make_loss(self, **overrides):
        """The arm's :class:`~adaptive_focal.FocalLoss`: the study's mode and the arm's gamma; ``overrides`` are
        passed on (``alpha``, ``weight``, ``reduction``, ``class_priors``, ... or another ``mode``)."""
        from ..loss import FocalLoss

        kwargs = {"mode": self.mode or "softmax", "gamma": self.gamma, **overrides}
        if self.mode is None and "mode" not in overrides:
            raise ValueError("make_loss needs the loss mode: run the comparison with a mode (--mode softmax|sigmoid) "
                             "or pass make_loss(mode=...)")
        return FocalLoss(**kwargs)

    def make_policy(self, loss, *, epochs: int, steps_per_epoch: int, num_classes: int | None = None, model=None,
                    val_source=None, train_source=None, optimizer=None):
        """The arm's gamma policy for ``loss``, built for a run of ``epochs`` epochs of ``steps_per_epoch`` optimizer
        steps (schedules' lengths and milestones follow it); None for a fixed-gamma arm. The learned controllers
        also need ``model`` and ``val_source`` (held-out ``(x, y)`` batches) and use ``optimizer`` for their
        look-ahead step size."""
        name = self.config.get("policy", "none")
        if name in (None, "none"):
            return None
        from ..policies import RunContext, create_policy, policy_class

        for key, value in (("epochs", epochs), ("steps_per_epoch", steps_per_epoch)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"make_policy: {key} must be a positive integer, got {value!r}")
        context = RunContext(epochs=epochs, steps_per_epoch=steps_per_epoch, num_classes=num_classes,
                             gamma=self.gamma, model=model, val_source=val_source, train_source=train_source,
                             optimizer=optimizer, seed=self.seed)
        kwargs = dict(self.config.get("policy_kwargs") or {})
        missing = policy_class(name).missing_requirements(context, kwargs)
        if missing:
            raise ValueError(f"arm {self.arm!r}: policy {name!r} needs {', '.join(missing)} in run.make_policy(...); "
                             "pass them, or leave this arm out")
        self._policy = create_policy(name, loss, context=context, **kwargs)
        return self._policy

    def report(self, step: int, value: float) -> None:
        """Reports the validation metric after ``step`` (an epoch, say) for pruning: raises ``optuna.TrialPruned``
        when the study's pruner stops this trial. Also records the policy's gamma at that step."""
        if self._policy is not None:
            from ..gamma_forms import gamma_record

            self.trajectory.append([int(step), gamma_record(self._policy.get_last_gamma())])
        if not self._prune or self.trial is None:
            return
        value = float(value)
        if value != value:
            return
        self.trial.report(value, int(step))
        if self.trial.should_prune():
            import optuna

            raise optuna.TrialPruned(f"step {step}: {value:.4g}")

    def gamma_trajectory(self) -> list:
        return list(self.trajectory)
