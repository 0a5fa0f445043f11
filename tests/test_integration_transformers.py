"""Hugging Face Trainer with a tiny model built here (no downloads): focal loss hook, policy callback, resume."""

import subprocess
import sys

import pytest
import torch

transformers = pytest.importorskip("transformers")

import adaptive_focal as af  # noqa: E402
from adaptive_focal.callbacks import MemoryLogger  # noqa: E402
from adaptive_focal.integrations.transformers import FocalLossHook, GammaTrainerCallback  # noqa: E402


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Linear(6, 3)

    def forward(self, x, labels=None):
        return {"logits": self.net(x)}


class Data(torch.utils.data.Dataset):
    def __init__(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        self.x, self.y = torch.randn(n, 6, generator=g), torch.randint(0, 3, (n,), generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "labels": self.y[i]}


class InOrderTrainer(transformers.Trainer):
    """Batches in dataset order, so an uninterrupted and a resumed run see the same batches (what is under test
    is the policy's state, not the Trainer's sampler bookkeeping)."""

    def _get_train_sampler(self, *args, **kwargs):
        return torch.utils.data.SequentialSampler(self.train_dataset)


def _train(tmp_path, epochs, policy_name, resume=None, name="t", **kwargs):
    model = Tiny()
    criterion = af.FocalLoss("softmax", gamma=2.0)
    hook = FocalLossHook(criterion)
    policy = af.create_policy(policy_name, criterion, **kwargs)
    history = MemoryLogger()
    callback = GammaTrainerCallback(policy, hook, loggers=[history], log_every=1, name=name)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), num_train_epochs=epochs, per_device_train_batch_size=16,
        per_device_eval_batch_size=32, learning_rate=0.3, optim="sgd", lr_scheduler_type="constant",
        weight_decay=0.0, eval_strategy="epoch", save_strategy="epoch", logging_steps=1, report_to=[],
        use_cpu=True, seed=0, dataloader_num_workers=0, restore_callback_states_from_checkpoint=True,
        disable_tqdm=True)
    trainer = InOrderTrainer(model=model, args=args, train_dataset=Data(64, 1), eval_dataset=Data(32, 2),
                                   compute_loss_func=hook, callbacks=[callback])
    trainer.train(resume_from_checkpoint=resume)
    # the gamma after every optimizer step, as the callback recorded it right after policy.step
    trace = [(r["step"], r["gamma"]) for r in history.steps]
    return trainer, policy, trace, history


@pytest.mark.parametrize("name, kwargs", [("pi", {"setpoint": 0.5, "ki": 0.3}),
                                          ("adafocal", {"num_bins": 5, "rebin": False})])
def test_trainer_uses_the_focal_loss_and_resumes_the_policy_exactly(name, kwargs, tmp_path):
    _, policy, full, history = _train(tmp_path / "full", 4, name, name=f"{name}-full", **kwargs)
    assert policy.step_count == 16 and len(full) == 16
    assert len({str(g) for _, g in full}) > 1  # gamma moved
    if policy.needs_validation:
        assert policy.epoch == 4 and [r["epoch"] for r in history.epochs] == [1, 2, 3, 4]
    _, _, first, _ = _train(tmp_path / "run", 2, name, name=f"{name}-run", **kwargs)
    checkpoint = sorted((tmp_path / "run").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))[-1]
    _, resumed, rest, _ = _train(tmp_path / "run", 4, name, resume=str(checkpoint), name=f"{name}-run", **kwargs)
    assert resumed.step_count == 16
    assert first + rest == full


def test_eval_metrics_gain_calibration_numbers(tmp_path):
    trainer, _, _, _ = _train(tmp_path, 1, "constant", gamma=1.0)
    metrics = trainer.evaluate()
    assert 0.0 <= metrics["eval_focal_ece"] <= 1.0 and metrics["eval_focal_count"] == 32


def test_hook_matches_the_loss_and_handles_token_classification():
    criterion = af.FocalLoss("softmax", gamma=2.0)
    hook = FocalLossHook(criterion)
    logits = torch.randn(4, 7, 3, requires_grad=True)  # (N, T, C)
    labels = torch.randint(0, 3, (4, 7))
    labels[0, :3] = -100
    got = hook({"logits": logits}, labels)
    want = criterion(logits.movedim(-1, 1), labels)
    torch.testing.assert_close(got, want)
    assert int(hook.pop_train_stats().count) == 25
    # with gradient accumulation the Trainer passes the number of items: sum / num_items
    got = hook({"logits": logits}, labels, num_items_in_batch=50)
    torch.testing.assert_close(got, want * 25 / 50)


@pytest.mark.parametrize("num_items", [None, 40])
def test_hook_applies_every_setting_of_the_loss(num_items):
    """The hook computes what the module computes, whatever its settings: here logit adjustment (class priors,
    tau), label smoothing, class weights and per-class alpha; at gamma 0 without the others it is torch's
    cross-entropy of the adjusted logits."""
    counts = torch.tensor([50.0, 20.0, 5.0])
    logits = torch.randn(4, 6, 3, requires_grad=True)
    labels = torch.randint(0, 3, (4, 6))
    labels[1, :4] = -100  # 20 items
    flat = logits.movedim(-1, 1)
    for kwargs in ({"gamma": 1.5, "class_priors": counts, "tau": 0.7, "label_smoothing": 0.1,
                    "weight": torch.tensor([1.0, 2.0, 3.0]), "alpha": torch.tensor([0.2, 0.3, 0.5])},
                   {"gamma": 2.0, "class_priors": counts / counts.sum(), "tau": 1.3}):
        criterion = af.FocalLoss("softmax", **kwargs)
        got = FocalLossHook(criterion)({"logits": logits}, labels, num_items_in_batch=num_items)
        # with the items counted, the summed loss over them (the weights do not count, unlike the mean)
        want = criterion(flat, labels) if num_items is None else criterion(flat, labels, reduction="sum") / num_items
        torch.testing.assert_close(got, want)
    adjusted = flat + 0.7 * torch.log(counts / counts.sum()).view(1, 3, 1)
    got = FocalLossHook(af.FocalLoss("softmax", gamma=0.0, class_priors=counts, tau=0.7))({"logits": logits}, labels)
    torch.testing.assert_close(got, torch.nn.functional.cross_entropy(adjusted, labels))


def test_validation_policy_without_evaluation_is_refused(tmp_path):
    criterion = af.FocalLoss("softmax")
    hook = FocalLossHook(criterion)
    callback = GammaTrainerCallback(af.create_policy("adafocal", criterion), hook, name="no-eval")
    args = transformers.TrainingArguments(output_dir=str(tmp_path), num_train_epochs=1, report_to=[], use_cpu=True,
                                          eval_strategy="no", disable_tqdm=True)
    trainer = transformers.Trainer(model=Tiny(), args=args, train_dataset=Data(16, 1), compute_loss_func=hook,
                                   callbacks=[callback])
    with pytest.raises(ValueError, match="needs validation statistics: set eval_strategy='epoch'"):
        trainer.train()


def test_bad_arguments():
    criterion = af.FocalLoss("softmax")
    policy = af.create_policy("constant", criterion)
    with pytest.raises(TypeError, match="criterion must be an adaptive_focal.FocalLoss"):
        FocalLossHook(torch.nn.CrossEntropyLoss())
    with pytest.raises(ValueError, match="policy must drive the hook's FocalLoss"):
        GammaTrainerCallback(policy, FocalLossHook(af.FocalLoss("softmax")), name="bad")
    with pytest.raises(ValueError, match="no GammaTrainerCallback named 'never-made'"):
        GammaTrainerCallback(name="never-made")


def test_missing_transformers_gives_an_install_hint():
    code = ("import sys; sys.modules['transformers'] = None\n"
            "try:\n    import adaptive_focal.integrations.transformers\nexcept ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "pip install 'adaptive_focal[transformers]'" in out.stdout, out.stderr


# -- what reaches the Trainer's logs -----------------------------------------------------------------------------
def test_focal_metrics_and_gamma_reach_log_history(tmp_path):
    # the Trainer appends each log to state.log_history before its callbacks see it: values a callback adds
    # afterwards must reach that entry too (and with a GammaTable, gamma was not logged at all)
    trainer, policy, _, _ = _train(tmp_path, 2, "adafocal", num_bins=5, rebin=False)
    history = trainer.state.log_history
    evals = [h for h in history if "eval_loss" in h]
    train = [h for h in history if "loss" in h]
    assert len(evals) == 2 and len(train) == 8
    for entry in evals:
        assert entry["eval_focal_count"] == 32  # the evaluation set, once
        assert entry["eval_focal_mean_loss"] == pytest.approx(entry["eval_loss"], rel=1e-5)  # one batch of 32
        assert 0.0 <= entry["eval_focal_ece"] <= 1.0
    values = policy.get_last_gamma().values.tolist()
    for entry in train + evals:
        assert {f"gamma/{i}" for i in range(5)} <= entry.keys()
    assert [history[-1][f"gamma/{i}"] for i in range(5)] == pytest.approx(values)
    assert history[-1]["gamma/mean"] == pytest.approx(sum(values) / 5)


def test_a_number_gamma_is_logged_as_gamma(tmp_path):
    trainer, policy, _, _ = _train(tmp_path, 1, "pi", setpoint=0.5, ki=0.3)
    train = [h for h in trainer.state.log_history if "loss" in h]
    assert len(train) == 4 and all("gamma" in h for h in train)
    assert train[-1]["gamma"] == pytest.approx(float(policy.loss.gamma))


def test_attached_callback_reaches_the_reporting_integrations(tmp_path):
    class Reporter(transformers.TrainerCallback):
        """Stands in for a report_to integration (W&B, TensorBoard), which the Trainer puts before the
        callbacks it is given."""

        def __init__(self):
            self.logs = []

        def on_log(self, args, state, control, logs=None, **kwargs):
            self.logs.append(dict(logs))

    criterion = af.FocalLoss("softmax", gamma=2.0)
    hook = FocalLossHook(criterion)
    callback = GammaTrainerCallback(af.create_policy("adafocal", criterion, num_bins=5, rebin=False), hook,
                                    name="attached")
    reporter = Reporter()
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), num_train_epochs=1, per_device_train_batch_size=16, per_device_eval_batch_size=32,
        eval_strategy="epoch", save_strategy="no", logging_steps=1, report_to=[], use_cpu=True, disable_tqdm=True)
    trainer = transformers.Trainer(model=Tiny(), args=args, train_dataset=Data(64, 1), eval_dataset=Data(32, 2),
                                   compute_loss_func=hook, callbacks=[reporter, callback])
    assert callback.attach(trainer) is callback and callback.attach(trainer) is callback
    assert trainer.callback_handler.callbacks.count(callback) == 1 and trainer.callback_handler.callbacks[0] is callback
    trainer.train()
    train = [logs for logs in reporter.logs if "loss" in logs]
    evals = [logs for logs in reporter.logs if "eval_loss" in logs]
    assert len(train) == 4 and all("gamma/mean" in logs for logs in train)
    assert len(evals) == 1 and evals[0]["eval_focal_count"] == 32


def test_attach_checks_the_trainer(tmp_path):
    criterion = af.FocalLoss("softmax")
    callback = GammaTrainerCallback(af.create_policy("constant", criterion), FocalLossHook(criterion), name="check")
    with pytest.raises(TypeError, match="trainer must be a transformers.Trainer, got object"):
        callback.attach(object())
    args = transformers.TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True, disable_tqdm=True)
    other = transformers.Trainer(model=Tiny(), args=args, compute_loss_func=FocalLossHook(criterion))
    with pytest.raises(ValueError, match="compute_loss_func must be this callback's FocalLossHook"):
        callback.attach(other)


def test_predictions_do_not_leak_into_the_next_evaluation(tmp_path):
    trainer, policy, _, _ = _train(tmp_path, 1, "adafocal", num_bins=5, rebin=False)
    epoch = policy.epoch
    out = trainer.predict(Data(20, 3))
    assert policy.epoch == epoch  # predict() is not a validation the policy learns from
    assert trainer.evaluate()["eval_focal_count"] == 32  # only the evaluation set's statistics
    assert out.metrics["test_focal_count"] == 20  # predict() reports its own
