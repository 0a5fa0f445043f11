"""adaptive_focal.policies.base and .space: the extension API (hooks, search spaces, run context, registry) and
the deprecated module paths."""

import os
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch

import adaptive_focal as af
from adaptive_focal import FocalLoss, RunContext, create_policy, list_policies, policy_class
from adaptive_focal.policies import base
from adaptive_focal.policies.space import Categorical, Float, Int, as_param

C = 4


# -- search-space parameters ---------------------------------------------------------------------------------------
class _Trial:
    """Records what a parameter asks an Optuna trial for and answers with the low end."""

    def __init__(self):
        self.calls = []

    def suggest_float(self, name, low, high, *, log=False):
        self.calls.append(("float", name, low, high, log))
        return low

    def suggest_int(self, name, low, high):
        self.calls.append(("int", name, low, high))
        return low

    def suggest_categorical(self, name, choices):
        self.calls.append(("categorical", name, choices))
        return choices[0]


def test_parameters_suggest_and_give_the_stored_tuples():
    trial = _Trial()
    assert Float(0.1, 10.0, log=True).suggest(trial, "pi.kp") == 0.1
    assert Int(1, 50).suggest(trial, "every") == 1
    assert Categorical(("a", "b")).suggest(trial, "c") == "a"
    assert trial.calls == [("float", "pi.kp", 0.1, 10.0, True), ("int", "every", 1, 50),
                           ("categorical", "c", ["a", "b"])]
    # exactly the tuples study manifests stored before the parameters were objects
    assert Float(0, 5).as_tuple() == ("float", 0.0, 5.0, False)
    assert Int(10, 500).as_tuple() == ("int", 10, 500)
    assert Categorical(["x", 2]).as_tuple() == ("categorical", ("x", 2))
    assert tuple(Float(0.5, 0.99)) == ("float", 0.5, 0.99, False)  # as the tuples did
    assert 0.7 in Float(0.5, 0.99) and 1.0 not in Float(0.5, 0.99) and 3 in Int(1, 3) and "x" in Categorical(["x"])


@pytest.mark.parametrize("spec", [("float", 0.0, 5.0, False), ["float", 0.001, 1.0, True], ("int", 1, 50),
                                  ("categorical", ("a", "b")), ["categorical", ["a", "b"]]])
def test_as_param_reads_the_stored_forms(spec):
    param = as_param(spec)
    assert param.as_tuple()[0] == spec[0] and as_param(param) is param
    assert as_param(param.as_tuple()) == param


@pytest.mark.parametrize("make, match", [
    (lambda: Float(1.0, 0.5), r"Float: high must be >= low=1.0, got 0.5"),
    (lambda: Float(0.0, 1.0, log=True), r"Float: low must be > 0 with log=True, got 0.0"),
    (lambda: Float(0.0, float("inf")), r"Float: high must be a finite number, got inf"),
    (lambda: Float(0.0, 1.0, log="yes"), r"Float: log must be True or False, got 'yes'"),
    (lambda: Int(1.5, 3), r"Int: low must be an integer, got 1.5"),
    (lambda: Int(5, 3), r"Int: high must be >= low=5, got 3"),
    (lambda: Categorical(()), r"Categorical: choices must not be empty"),
    (lambda: Categorical("ab"), r"Categorical: choices must be a sequence, got 'ab'"),
    (lambda: Categorical([[1]]), r"Categorical: choices must be None, bools, numbers or strings, got \[\[1\]\]"),
    (lambda: as_param(("float", 0.0)), r"a search-space spec must be .* got \('float', 0.0\)"),
    (lambda: as_param(("uniform", 0.0, 1.0)), r"got \('uniform', 0.0, 1.0\)"),
    (lambda: as_param(("int", 3, 1)), r"search-space spec \('int', 3, 1\) is not valid: Int: high must be >= low"),
    (lambda: as_param(0.5), r"got 0.5"),
])
def test_bad_parameters_are_clear_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make()


# -- the run context ------------------------------------------------------------------------------------------------
def test_run_context_checks_its_fields_and_knows_the_total():
    assert RunContext().total_steps is None and RunContext(epochs=3).total_steps is None
    assert RunContext(epochs=3, steps_per_epoch=7).total_steps == 21
    for kwargs, match in [({"epochs": 0}, "epochs must be None or an integer >= 1, got 0"),
                          ({"steps_per_epoch": 2.0}, "steps_per_epoch must be None or an integer >= 1, got 2.0"),
                          ({"seed": -1}, "seed must be None or an integer >= 0, got -1"),
                          ({"gamma": float("nan")}, "gamma must be None or a finite number, got nan"),
                          ({"num_classes": True}, "num_classes must be None or an integer >= 1, got True")]:
        with pytest.raises(ValueError, match=match):
            RunContext(**kwargs)


def _full_context(mode):
    model = torch.nn.Linear(C, C)
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, C, (8,), generator=g) if mode == "softmax" else (torch.rand(8, C, generator=g) < .3).float()
    batches = [(torch.randn(8, C, generator=g), y)]
    return RunContext(epochs=3, steps_per_epoch=5, num_classes=C, gamma=1.0, model=model, val_source=batches,
                      train_source=batches, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), seed=7)


@pytest.mark.parametrize("mode", ["softmax", "sigmoid"])
@pytest.mark.parametrize("name", list_policies())
def test_applies_to_is_what_the_constructor_accepts(name, mode):
    loss = FocalLoss(mode, gamma=2.0)
    cls = policy_class(name)
    if cls.applies_to(mode):
        policy = create_policy(name, loss, context=_full_context(mode))  # the run defaults alone build it
        assert isinstance(policy, cls) and mode in cls.modes
        x, y = _full_context(mode).val_source[0]
        policy.step(loss(x, y, return_stats=True)[1])
    else:
        with pytest.raises(ValueError, match=f"the {name!r} policy needs a FocalLoss with mode="):
            create_policy(name, loss, context=_full_context(mode))
        assert float(loss.gamma) == 2.0


def test_applies_to_checks_the_mode():
    with pytest.raises(ValueError, match="mode must be one of 'sigmoid', 'softmax', got 'multiclass'"):
        policy_class("pi").applies_to("multiclass")


@pytest.mark.parametrize("name, field", [("classwise_adafocal", "num_classes"), ("sequential", "steps_per_epoch"),
                                         ("bandit", "model"), ("hypergradient", "model"),
                                         ("gammanet", "model")])
def test_a_required_context_field_that_is_missing_is_named(name, field):
    loss = FocalLoss("softmax", gamma=2.0)
    with pytest.raises(ValueError, match=rf"the {name!r} policy needs RunContext\({field}=...\) to be built from a "
                                         rf"context .*got {field}=None"):
        create_policy(name, loss, context=RunContext(epochs=2))
    assert float(loss.gamma) == 2.0


def test_an_argument_stands_in_for_a_required_context_field():
    loss = FocalLoss("softmax")
    policy = create_policy("classwise_adafocal", loss, context=RunContext(epochs=2), num_classes=3)
    assert policy.num_classes == 3
    model = torch.nn.Linear(C, C)
    val = [(torch.randn(4, C), torch.randint(0, C, (4,)))]
    policy = create_policy("hypergradient", loss, context=RunContext(model=model, val_source=val), lr=0.3)
    assert policy.lr == 0.3 and policy.model is model  # lr= stands in for the context's optimizer
    with pytest.raises(ValueError, match=r"needs RunContext\(optimizer=...\)"):
        create_policy("hypergradient", loss, context=RunContext(model=model, val_source=val))


def test_run_defaults_with_a_partial_context_and_explicit_arguments_winning():
    loss = FocalLoss("softmax")
    assert policy_class("linear").run_defaults(loss, RunContext(epochs=4)) == {}  # no steps per epoch: no total
    assert policy_class("linear").run_defaults(loss, RunContext(gamma=3.0)) == {"start": 0.0, "end": 3.0}
    policy = create_policy("cosine", loss, context=RunContext(epochs=4, steps_per_epoch=10, gamma=2.0), end=0.25)
    assert (policy.start, policy.end, policy.total) == (4.0, 0.25, 40)
    assert create_policy("linear", loss).total == 1000  # without a context: the class's own defaults
    with pytest.raises(TypeError, match="context must be a RunContext or None, got dict"):
        create_policy("linear", loss, context={"epochs": 3})


@pytest.mark.parametrize("name", ["bandit", "gammanet"])
def test_seeded_learned_controllers_take_the_runs_seed(name):
    loss = FocalLoss("softmax")
    ctx = _full_context("softmax")
    assert create_policy(name, loss, context=ctx).seed == 7
    assert create_policy(name, loss, context=ctx, seed=2).seed == 2


# -- the registry ---------------------------------------------------------------------------------------------------
def test_a_name_and_a_class_are_registered_once(monkeypatch):
    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))

    @af.register_policy("test_once")
    class Once(af.GammaPolicy):
        pass

    with pytest.raises(ValueError, match="a policy named 'test_once' is already registered"):
        af.register_policy("test_once")(type("Other", (af.GammaPolicy,), {}))
    with pytest.raises(ValueError, match="Once is already registered as 'test_once'; a class has one name"):
        af.register_policy("test_twice")(Once)
    with pytest.raises(TypeError, match="decorates a GammaPolicy subclass"):
        af.register_policy("test_fn")(lambda loss: None)
    with pytest.raises(ValueError, match="name must be a non-empty string"):
        af.register_policy("")
    assert len(set(map(id, base._REGISTRY.values()))) == len(base._REGISTRY)


def test_declarations_are_checked_when_the_class_is_defined():
    with pytest.raises(ValueError, match=r"Bad.modes must be distinct values of \('sigmoid', 'softmax'\)"):
        type("Bad", (af.GammaPolicy,), {"modes": ("binary",)})
    with pytest.raises(ValueError, match=r"Bad.requires names \['epoch'\], which are not RunContext fields"):
        type("Bad", (af.GammaPolicy,), {"requires": ("epoch",)})
    with pytest.raises(ValueError, match=r"search-space spec \('float', 1.0, 0.0, False\) is not valid"):
        type("Bad", (af.GammaPolicy,), {"search_space": {"x": ("float", 1.0, 0.0, False)}})


def test_declarations_of_earlier_releases_still_work():
    # a one-mode policy declared with stats_mode, a search space of tuples
    Legacy = type("Legacy", (af.GammaPolicy,), {"stats_mode": "sigmoid", "search_space": {"x": ("int", 1, 3)}})
    assert Legacy.modes == ("sigmoid",) and Legacy.search_space == {"x": Int(1, 3)}
    assert policy_class("efl").stats_mode == "sigmoid" and policy_class("pi").stats_mode is None
    with pytest.raises(ValueError, match="needs a FocalLoss with mode='sigmoid', got mode='softmax'"):
        Legacy(FocalLoss("softmax"))


# -- a policy written with the public hooks only --------------------------------------------------------------------
class Ratchet(af.GammaPolicy):
    """gamma rises by ``rate`` on each batch whose mean p_t is above ``target`` and never falls."""

    needs_stats = True
    reads = ("count", "sum_pt")
    search_space = {"rate": Float(0.01, 1.0, log=True)}

    def __init__(self, loss, rate=0.5, target=0.5):
        super().__init__(loss)
        self.rate, self.target, self.raised = rate, target, 0
        self.write_gamma(float(loss.gamma))

    def compute(self, stats):
        if int(stats.count) and float(stats.sum_pt) / int(stats.count) > self.target:
            self.raised += 1
            return float(self.loss.gamma) + self.rate
        return None

    def extra_state(self):
        return {"raised": self.raised}

    def check_extra_state(self, state):
        if not isinstance(state.get("raised"), int) or state["raised"] < 0:
            raise ValueError(f"state['raised'] must be a count, got {state.get('raised')!r}")

    def load_extra_state(self, state):
        self.raised = state["raised"]


def test_a_policy_built_on_the_public_hooks_gets_the_bookkeeping():
    loss = FocalLoss("softmax", gamma=1.0)
    policy = Ratchet(loss)
    easy = loss(torch.tensor([[4.0, 0.0]]), torch.tensor([0]), return_stats=True)[1]
    policy.step(easy)
    assert float(loss.gamma) == 1.5 and policy.step_count == 1 and policy.get_last_gamma() == 1.5
    nan = loss(torch.tensor([[float("nan"), 0.0]]), torch.tensor([0]), return_stats=True)[1]
    with pytest.warns(RuntimeWarning, match="not finite"):
        policy.step(nan)  # the hook saw an empty batch
    assert float(loss.gamma) == 1.5 and policy.raised == 1 and policy.skipped_batches == 1
    state = policy.state_dict()
    assert state["raised"] == 1 and state["policy"] == "base"
    other = Ratchet(FocalLoss("softmax", gamma=3.0))
    for bad in ({**state, "raised": -1}, {**state, "epoch": "x"}):
        with pytest.raises(ValueError):
            other.load_state_dict(bad)
        assert other.raised == 0 and other.step_count == 0 and float(other.loss.gamma) == 3.0
    other.load_state_dict(state)
    assert other.raised == 1 and float(other.loss.gamma) == 1.5 and other.skipped_batches == 1


# -- deprecated module paths ----------------------------------------------------------------------------------------
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(af.__file__)))


def _python(code: str, *flags: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([_ROOT, os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, *flags, "-c", textwrap.dedent(code)], env=env, capture_output=True,
                          text=True, timeout=300)


def test_importing_the_package_does_not_warn():
    r = _python("import adaptive_focal, adaptive_focal.callbacks", "-W", "error::DeprecationWarning")
    assert r.returncode == 0, r.stderr


OLD_PATHS = {
    "adaptive_focal.policy": ("adaptive_focal.policies.base", ["GammaPolicy", "create_policy", "register_policy"]),
    "adaptive_focal.schedules": ("adaptive_focal.policies.schedules", ["LinearGamma", "SequentialGamma", "Schedule"]),
    "adaptive_focal.controllers": ("adaptive_focal.policies.feedback", ["PIGamma", "FLSD53", "_HOST_CLASSES"]),
    "adaptive_focal.controllers_adafocal": ("adaptive_focal.policies.adafocal", ["AdaFocal", "equal_mass_edges"]),
    "adaptive_focal.learned": ("adaptive_focal.policies.learned", ["BanditGamma", "GammaNet", "_lookahead_focal"]),
}


@pytest.mark.parametrize("old", sorted(OLD_PATHS))
def test_old_module_paths_warn_and_still_work(old):
    new, names = OLD_PATHS[old]
    code = f"""
        import warnings
        import adaptive_focal as af
        registered = dict(af.policies.base._REGISTRY)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import {old} as old
        messages = [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]
        assert messages == ["{old} is deprecated: import from {new}" + messages[0].split("{new}", 1)[1]], messages
        for name in {names!r}:
            getattr(old, name)
        from {old} import *
        assert af.policies.base._REGISTRY == registered  # nothing registered twice or anew
        print("OK")
    """
    r = _python(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "OK"


def test_old_classes_are_the_new_ones():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from adaptive_focal.controllers import FLSD53, PIGamma
        from adaptive_focal.schedules import SequentialGamma
    assert PIGamma is af.PIGamma and FLSD53 is af.FLSD53 and SequentialGamma is af.SequentialGamma
