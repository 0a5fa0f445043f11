"""Optuna integration with a real study: policy sampling, fixed arguments, pruning, optional import."""

import subprocess
import sys

import pytest

optuna = pytest.importorskip("optuna")

import adaptive_focal as af  # noqa: E402
from adaptive_focal.callbacks import GammaCallback  # noqa: E402
from adaptive_focal.integrations.optuna import PruningReporter, default_candidates, suggest_policy  # noqa: E402
from helpers.training import train_tiny  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _objective(trial):
    loss = af.FocalLoss("softmax", gamma=2.0)
    policy = suggest_policy(trial, loss, policies=["constant", "pi", "automated", "adafocal"],
                            fixed={"adafocal": {"num_bins": 5}})
    reporter = PruningReporter(trial, "val_loss")
    val = train_tiny(GammaCallback(policy), loss, epochs=3, n=96, features=6,
                     on_epoch=lambda val, epoch: reporter.report(float(val.mean_loss), epoch))
    return float(val.mean_loss)


def test_a_real_study_samples_policies_and_their_hyperparameters():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3),
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0))
    study.optimize(_objective, n_trials=12)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert done and all(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
                        for t in study.trials)
    for t in study.trials:
        name = t.params["policy"]
        assert name in {"constant", "pi", "automated", "adafocal"}
        # exactly that policy's searched hyperparameters, namespaced by the policy
        searched = {k.split(".", 1)[1] for k in t.params if k != "policy"}
        assert searched == set(af.create_policy.__globals__["_REGISTRY"][name].search_space)
    assert len({t.params["policy"] for t in study.trials}) > 1  # the sampler explores several policies


def test_sampled_values_reach_the_policy():
    trial = optuna.trial.FixedTrial({"policy": "pi", "pi.setpoint": 0.55, "pi.kp": 1.5, "pi.ki": 0.25,
                                     "pi.gamma_init": 1.0})
    loss = af.FocalLoss("softmax")
    policy = suggest_policy(trial, loss, policies=["pi"])
    assert isinstance(policy, af.PIGamma)
    assert (policy.setpoint, policy.kp, policy.ki, policy.gamma_init) == (0.55, 1.5, 0.25, 1.0)
    assert float(loss.gamma) == 1.0


def test_constant_is_always_a_choice_and_fixed_arguments_apply():
    trial = optuna.trial.FixedTrial({"policy": "constant", "constant.gamma": 3.5})
    policy = suggest_policy(trial, af.FocalLoss("sigmoid"), policies=["automated"])
    assert isinstance(policy, af.ConstantGamma) and policy.gamma == 3.5
    trial = optuna.trial.FixedTrial({"policy": "linear", "linear.start": 0.0, "linear.end": 2.0})
    policy = suggest_policy(trial, af.FocalLoss("sigmoid"), policies=["linear"], fixed={"linear": {"total": 7}})
    assert policy.total == 7


def test_default_candidates_need_the_required_arguments():
    assert "classwise_adafocal" not in default_candidates()
    assert "classwise_adafocal" in default_candidates({"classwise_adafocal": {"num_classes": 4}})
    assert "sequential" not in default_candidates()


@pytest.mark.parametrize("kwargs, match", [
    ({"policies": ["nope"]}, "unknown policy 'nope' in policies"),
    ({"policies": ["classwise_adafocal"]}, "needs fixed="),
    ({"fixed": {"nope": {}}}, "fixed has arguments for unknown policy 'nope'"),
])
def test_bad_arguments(kwargs, match):
    trial = optuna.trial.FixedTrial({"policy": "constant", "constant.gamma": 1.0})
    with pytest.raises(ValueError, match=match):
        suggest_policy(trial, af.FocalLoss("softmax"), **kwargs)


def test_pruning_reporter_raises_when_the_pruner_says_so():
    study = optuna.create_study(pruner=optuna.pruners.ThresholdPruner(upper=1.0))
    trial = study.ask()
    reporter = PruningReporter(trial)
    reporter.report(0.5, 0)
    with pytest.raises(optuna.TrialPruned, match="pruned at epoch 1"):
        reporter.report(2.0, 1)


def test_pruning_reporter_in_a_multi_objective_study_only_records():
    study = optuna.create_study(directions=["minimize", "maximize"])
    trial = study.ask()
    PruningReporter(trial, "ece").report(0.1, 0)
    assert trial.user_attrs == {"ece@0": 0.1}


def test_missing_optuna_gives_an_install_hint():
    code = ("import sys; sys.modules['optuna'] = None\n"
            "try:\n    import adaptive_focal.integrations.optuna\nexcept ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "pip install 'adaptive_focal[optuna]'" in out.stdout, out.stderr


# -- which policies are offered, and for which run ------------------------------------------------------------------
def _offered(loss, **kwargs):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    suggest_policy(trial, loss, **kwargs)
    return set(trial.distributions["policy"].choices)


def test_only_policies_of_the_losss_mode_are_offered():
    # a softmax loss used to be offered the sigmoid-only efl and asl_adaptive
    softmax = _offered(af.FocalLoss("softmax"))
    sigmoid = _offered(af.FocalLoss("sigmoid"))
    assert not {"efl", "asl_adaptive"} & softmax and {"efl", "asl_adaptive"} <= sigmoid
    assert softmax == {n for n in default_candidates() if af.policy_class(n).applies_to("softmax")}
    assert "constant" in softmax and "pi" in softmax and "adafocal" in sigmoid


def test_a_requested_policy_that_does_not_apply_is_a_clear_error():
    trial = optuna.trial.FixedTrial({"policy": "constant", "constant.gamma": 1.0})
    with pytest.raises(ValueError, match="policy 'efl' cannot be offered for this softmax loss: it applies to "
                                         "sigmoid losses, not softmax"):
        suggest_policy(trial, af.FocalLoss("softmax"), policies=["pi", "efl"])
    with pytest.raises(ValueError, match=r"policy 'sequential' cannot be offered .*needs fixed=.*"
                                         r"context=RunContext\(steps_per_epoch=...\)"):
        suggest_policy(trial, af.FocalLoss("softmax"), policies=["sequential"])


def test_the_run_context_places_schedules_on_the_run():
    # without a context the schedules kept their own run lengths (1000 steps; FLSc-531 at epochs 100 and 250)
    context = af.RunContext(epochs=6, steps_per_epoch=50, num_classes=4, gamma=1.0)
    trial = optuna.trial.FixedTrial({"policy": "linear", "linear.start": 0.5, "linear.end": 3.0})
    policy = suggest_policy(trial, af.FocalLoss("softmax"), policies=["linear"], context=context)
    assert (policy.start, policy.end, policy.total) == (0.5, 3.0, 150)  # sampled values, the run's length
    policy = suggest_policy(optuna.trial.FixedTrial({"policy": "flsc531"}), af.FocalLoss("softmax"),
                            policies=["flsc531"], context=context)
    assert policy.milestones == (2, 4)
    # the context makes policies that need it available; fixed arguments still win
    assert "classwise_adafocal" in _offered(af.FocalLoss("softmax"), context=context)
    assert "sequential" in _offered(af.FocalLoss("softmax"), context=context)
    trial = optuna.trial.FixedTrial({"policy": "cosine", "cosine.start": 2.0, "cosine.end": 1.0})
    policy = suggest_policy(trial, af.FocalLoss("softmax"), policies=["cosine"], context=context,
                            fixed={"cosine": {"total": 7, "end": 0.5}})
    assert (policy.start, policy.end, policy.total) == (2.0, 0.5, 7)


def test_the_learned_controllers_are_offered_with_a_model_and_validation_batches():
    import torch

    model = torch.nn.Linear(6, 3)
    val = [(torch.randn(8, 6), torch.randint(0, 3, (8,)))]
    context = af.RunContext(epochs=2, steps_per_epoch=3, num_classes=3, model=model, val_source=val,
                            optimizer=torch.optim.SGD(model.parameters(), lr=0.1), seed=5)
    assert {"hypergradient", "gammanet", "bandit"} <= _offered(af.FocalLoss("softmax"), context=context)
    trial = optuna.trial.FixedTrial({"policy": "bandit", "bandit.exploration": 0.1, "bandit.every": 10})
    policy = suggest_policy(trial, af.FocalLoss("softmax"), policies=["bandit"], context=context)
    assert policy.model is model and policy.seed == 5 and policy.every == 10
