"""adaptive_focal.compare arms, studies and the objective contract: arm names, the default arms per loss mode, the
records study manifests keep, Study validation, loading objectives from files, modules and packages, the checks
on what an objective returns, and the Run an objective receives (its loss, its policy built for the run's
length)."""

import sys

import pytest

import adaptive_focal as af
from adaptive_focal.compare import Arm, ObjectiveError, Run, Study, across_seeds, default_arms, parse_arm
from adaptive_focal.compare.objective import check_result, load_objective, resolve_objective


def test_arm_names_parse_to_the_configs_the_studies_always_had():
    assert parse_arm("gamma=2") == Arm("gamma=2", {"loss": "focal", "gamma": 2.0})
    assert parse_arm("gamma=0.50").name == "gamma=0.5"
    assert parse_arm("gamma=tpe") == Arm("gamma=tpe", {"loss": "focal"}, {"gamma": ("gamma", ("float", 0.0, 5.0,
                                                                                                False))})
    pi = parse_arm("policy=pi+tpe")
    assert pi.config == {"loss": "focal", "policy": "pi"} and pi.policy == "pi"
    space = af.policy_class("pi").search_space
    assert set(pi.space) == {f"pi.{k}" for k in space}
    assert all(key == f"policy_kwargs.{name.split('.', 1)[1]}" for name, (key, _) in pi.space.items())
    seeds = parse_arm("policy=pi+tpe@seeds")
    assert seeds == across_seeds(pi) and seeds.name == "policy=pi+tpe@seeds" and seeds.across_seeds
    # the manifest record: JSON lists, the layout every stored study has
    assert parse_arm("gamma=tpe").record() == {"config": {"loss": "focal"},
                                               "space": {"gamma": ["gamma", ["float", 0.0, 5.0, False]]}}
    assert seeds.record()["across_seeds"] is True and seeds.record()["wilcoxon_p"] == 0.1


@pytest.mark.parametrize("name, message", [
    ("gamma=-1", "gamma must be a non-negative number or 'tpe', got '-1'"),
    ("gamma=nan", "gamma must be a non-negative number"),
    ("policy=nope", "unknown policy 'nope'; policies: "),
    ("policy=constant", "unknown policy 'constant'"),  # the fixed-gamma arms are the constant policy
    ("policy=pi+grid", "a policy arm is 'policy=<name>' or 'policy=<name>\\+tpe', got '\\+grid'"),
    ("gamma=2@seeds", "only a tuned arm"),
    ("alpha=0.25", "unknown arm 'alpha=0.25': arms are 'gamma=<number>'"),
])
def test_bad_arm_names(name, message):
    with pytest.raises(ValueError, match=message):
        parse_arm(name)


def test_a_policy_without_a_search_space_has_no_tuned_arm():
    untuned = [n for n in af.list_policies() if not af.policy_class(n).search_space and n != "constant"]
    for name in untuned:
        with pytest.raises(ValueError, match=f"policy '{name}' has no search space to tune"):
            parse_arm(f"policy={name}+tpe")


def test_default_arms_follow_the_mode():
    every = {a.name for a in default_arms(None)}
    for mode in ("softmax", "sigmoid"):
        names = {a.name for a in default_arms(mode)}
        for policy in af.list_policies():
            if policy == "constant":
                continue
            applies = af.policy_class(policy).applies_to(mode)
            assert (f"policy={policy}" in names) == applies, (mode, policy)
        assert {f"gamma={g:g}" for g in (0, 0.5, 1, 2, 3, 5)} | {"gamma=tpe"} <= names <= every
    assert not any("hypergradient" in a.name for a in default_arms("softmax", learned=False))
    with pytest.raises(ValueError, match="mode must be 'softmax', 'sigmoid' or None, got 'multi'"):
        default_arms("multi")


def test_arm_and_study_validation():
    with pytest.raises(ValueError, match="arm name must be a non-empty string without '/'"):
        Arm("a/b", {})
    with pytest.raises(ValueError, match="config must hold JSON values only"):
        Arm("a", {"gamma": float("nan")})
    with pytest.raises(ValueError, match="across_seeds needs a tuned arm"):
        Arm("a", {"gamma": 1.0}, across_seeds=True)
    with pytest.raises(ValueError, match="wilcoxon_p=0.2 applies only to arms tuned across seeds"):
        Arm("a", {}, {"gamma": ("gamma", ("float", 0, 1, False))}, wilcoxon_p=0.2)
    with pytest.raises(ValueError, match="space entry 'g' must be \\(config key, search-space entry\\)"):
        Arm("a", {}, {"g": ("float", 0, 1, False)})
    arms = (parse_arm("gamma=0"),)
    kw = dict(arms=arms, objective="m:f", metric="acc")
    with pytest.raises(ValueError, match="study name must be a non-empty string without '/'"):
        Study(name="a/b", **kw)
    with pytest.raises(ValueError, match="objective must be 'module:function' or 'file.py:function', got 'train'"):
        Study(name="s", arms=arms, objective="train", metric="acc")
    with pytest.raises(ValueError, match="direction must be one of 'maximize', 'minimize', got 'up'"):
        Study(name="s", direction="up", **kw)
    with pytest.raises(ValueError, match="arm names must be unique"):
        Study(name="s", arms=arms * 2, objective="m:f", metric="acc")
    with pytest.raises(ValueError, match="seeds must be a positive integer, got 0"):
        Study(name="s", seeds=0, **kw)
    with pytest.raises(ValueError, match="arm 'policy=efl': policy 'efl' does not apply to mode='softmax'"):
        Study(name="s", arms=(parse_arm("policy=efl"),), objective="m:f", metric="acc", mode="softmax")
    with pytest.raises(ValueError, match="has no settings to change \\(got epochs\\)"):
        Study(name="s", **kw).with_settings(epochs=1)
    study = Study(name="s", meta={"x": 1}, **kw)
    assert study.manifest() == {"x": 1, "directions": ["maximize"], "metric": "acc",
                                "arms": {"gamma=0": {"config": {"loss": "focal", "gamma": 0.0}, "space": {}}}}
    assert study.manifest(True)["directions"] == ["maximize", "minimize"]


# -- objectives ------------------------------------------------------------------------------------------------------
def test_objectives_load_from_a_file_a_package_file_and_a_module(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))  # undone after the test, with what load_objective adds
    (tmp_path / "plain.py").write_text("import helper_mod\ndef train(run):\n    return helper_mod.VALUE\n")
    (tmp_path / "helper_mod.py").write_text("VALUE = {'val': {'m': 1.0}}\n")
    pkg = tmp_path / "proj" / "pkg"
    pkg.mkdir(parents=True)
    (tmp_path / "proj" / "pkg" / "__init__.py").write_text("")
    (pkg / "task.py").write_text("from . import sibling\ndef train(run):\n    return sibling.VALUE\n")
    (pkg / "sibling.py").write_text("VALUE = {'val': {'m': 2.0}}\n")
    assert load_objective(f"{tmp_path / 'plain.py'}:train")(None) == {"val": {"m": 1.0}}
    assert load_objective(f"{pkg / 'task.py'}:train")(None) == {"val": {"m": 2.0}}  # its package's import works
    assert sys.modules["pkg.task"].__file__ == str(pkg / "task.py")
    assert load_objective("pkg.task:train")(None) == {"val": {"m": 2.0}}
    monkeypatch.chdir(tmp_path)
    assert resolve_objective("plain.py:train") == f"{tmp_path / 'plain.py'}:train"  # absolute for the workers
    for spec, message in (("plain.py", "must be 'FILE.py:FUNCTION' or 'MODULE:FUNCTION'"),
                          ("plain.py:1x", "must be 'FILE.py:FUNCTION'"),
                          ("missing.py:train", "objective file 'missing.py' not found"),
                          ("plain.py:nope", "module 'plain' has no function 'nope'"),
                          ("nosuchmod:train", "objective module 'nosuchmod' cannot be imported")):
        with pytest.raises(ObjectiveError, match=message):
            load_objective(spec)


@pytest.mark.parametrize("result, message", [
    ([1], "must return a dict"),
    ({"test": {"m": 1}}, "must return 'val'"),
    ({"val": {"other": 1}}, "'val' has no 'm' \\(the study's metric\\); it has: other"),
    ({"val": {"m": "high"}}, "val\\['m'\\] must be a number, got str"),
    ({"val": {"m": 1}, "extra": 1}, "unknown keys \\['extra'\\]"),
    ({"val": {"m": 1}, "config": [1]}, "'config' must be a dict"),
])
def test_what_an_objective_returns_is_checked(result, message):
    with pytest.raises(ObjectiveError, match=message):
        check_result(result, "m")


def test_results_are_made_plain_numbers():
    import torch

    out = check_result({"val": {"m": torch.tensor(0.5), "n": 1}, "test": {"m": 0.25}, "seconds": 2}, "m")
    assert out == {"val": {"m": 0.5, "n": 1.0}, "test": {"m": 0.25}, "gamma_trajectory": None, "seconds": 2.0,
                   "config": None}
    with pytest.raises(ObjectiveError, match="has no 'ece' \\(needed by this run\\)"):
        check_result({"val": {"m": 1}}, "m", required=("ece",))


def _run(arm: str, seed=0, **kw) -> Run:
    a = parse_arm(arm)
    return Run(seed=seed, arm=a.name, config=dict(a.config), params={}, mode=kw.pop("mode", "softmax"), **kw)


def test_run_builds_the_arms_loss_and_policy_for_the_run_length():
    run = _run("gamma=3")
    loss = run.make_loss()
    assert loss.mode == "softmax" and float(loss.gamma) == 3.0 and run.make_policy(loss, epochs=2,
                                                                                 steps_per_epoch=5) is None
    assert run.make_loss(mode="sigmoid", reduction="sum").reduction == "sum"
    # schedules follow the run: flsc531's milestones at a third and two thirds of the epochs (not 100 / 250)
    flsc = _run("policy=flsc531")
    policy = flsc.make_policy(flsc.make_loss(), epochs=9, steps_per_epoch=4)
    assert policy.milestones == (3, 6)
    lin = _run("policy=linear")
    policy = lin.make_policy(lin.make_loss(), epochs=5, steps_per_epoch=10)
    assert policy.total == 25 and policy.end == 2.0  # half the run's 50 steps, into the arm's gamma
    tuned = Run(seed=0, arm="policy=pi+tpe", config={"loss": "focal", "policy": "pi",
                                                     "policy_kwargs": {"setpoint": 0.4}}, params={}, mode="softmax")
    assert tuned.make_policy(tuned.make_loss(), epochs=1, steps_per_epoch=1).setpoint == 0.4
    with pytest.raises(ValueError, match="make_policy: epochs must be a positive integer, got 0"):
        lin.make_policy(lin.make_loss(), epochs=0, steps_per_epoch=1)
    with pytest.raises(ValueError, match="policy 'gammanet' needs model, val_source, optimizer in run.make_policy"):
        g = _run("policy=gammanet")
        g.make_policy(g.make_loss(), epochs=1, steps_per_epoch=1, num_classes=3)
    with pytest.raises(ValueError, match="make_loss needs the loss mode"):
        _run("gamma=1", mode=None).make_loss()


def test_report_records_gamma_and_prunes_only_when_asked():
    run = _run("policy=automated")
    policy = run.make_policy(run.make_loss(), epochs=2, steps_per_epoch=1)
    run.report(1, 0.5)
    policy.step(run.make_loss()(*_batch(), return_stats=True)[1])
    run.report(2, float("nan"))  # not reported to a trial, gamma still recorded
    assert [step for step, _ in run.trajectory] == [1, 2]


def _batch():
    import torch

    g = torch.Generator().manual_seed(0)
    return torch.randn(8, 3, generator=g), torch.randint(0, 3, (8,), generator=g)
