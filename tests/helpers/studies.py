"""Small studies for the comparison engine's tests."""

from __future__ import annotations

from adaptive_focal.compare import Study, across_seeds, parse_arm
from adaptive_focal.compare.options import RunOptions


def linear_study(name="lin", arms=("gamma=0", "gamma=2", "gamma=tpe"), *, seeds=2, trials=3, tuned_across=(),
                 objective="helpers.objectives:linear", metric="score", **changes) -> Study:
    """A study of the instant ``helpers.objectives.linear`` objective (validation score 0.9 - 0.1 gamma + 0.01
    seed); ``tuned_across`` arms are added tuned across seeds (``<arm>@seeds``)."""
    chosen = [parse_arm(a) for a in arms] + [across_seeds(parse_arm(a)) for a in tuned_across]
    changes.setdefault("meta", {"objective": objective})
    return Study(name=name, arms=tuple(chosen), objective=objective, metric=metric, seeds=seeds, trials=trials,
                 mode="softmax", **changes)


def opts(storage, **kw) -> RunOptions:
    return RunOptions(storage=str(storage), progress=False, **kw)
