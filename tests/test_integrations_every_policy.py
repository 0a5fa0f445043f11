"""Every registered policy through every integration: each gamma form must reach every logger.

A policy may write a number, a per-class tensor, a GammaTable, a FocalMixture or an AsymmetricGamma; every
integration reads gamma through :mod:`adaptive_focal.gamma_forms` (``gamma_record`` / ``gamma_scalars``). Here
each policy runs a few steps and epoch ends through the plain GammaCallback with a JSON-lines logger, the W&B
logger (offline, in a temporary folder), the Lightning callback in a small Trainer, the Hugging Face Trainer
callback, and Optuna's ``suggest_policy`` over its search space. The policies are built by one helper
(``tests/helpers/policies.py``) from what each needs to know about the run; AdaFocal and its class-wise
variant also run on a sigmoid loss.
"""

from __future__ import annotations

import contextlib
import json
import warnings

import pytest
import torch

import adaptive_focal as af
from adaptive_focal.callbacks import GammaCallback, JSONLinesLogger
from adaptive_focal.gamma_forms import GammaForm, gamma_scalars
from helpers.policies import FEATURES, NUM_CLASSES, Run, batches, extra_kwargs, loss_mode, make_policy

POLICIES = af.list_policies()
#: (policy, loss mode): each policy on the loss it applies to (softmax where both), and AdaFocal's pair on sigmoid
#: too, whose statistics (each element's confidence bins) differ from the softmax ones
CASES = [(name, loss_mode(name)) for name in POLICIES] + [
    (name, "sigmoid") for name in ("adafocal", "classwise_adafocal") if loss_mode(name) != "sigmoid"]
CASE_IDS = [name if mode == loss_mode(name) else f"{name}-{mode}" for name, mode in CASES]
EPOCHS = 2
BATCH = 16
TRAIN, VAL = 32, 16  # 2 steps per epoch, one validation batch


def _gamma_keys(data: dict, prefix: str = "gamma") -> dict:
    return {k: v for k, v in data.items() if k == prefix or k.startswith(prefix + "/")}


@contextlib.contextmanager
def _no_logger_dropped():
    """Fails when an adaptive_focal logger or integration warned that it gave up (a logger dropped, W&B off)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    dropped = [str(w.message) for w in caught
               if issubclass(w.category, RuntimeWarning) and str(w.message).startswith("adaptive_focal:")]
    assert not dropped, dropped


def _setup(name: str, mode: str, *, lr_from_optimizer: bool = True):
    """Model, optimizer, loss, data and policy for ``name`` on a loss of ``mode`` (the same for every
    integration)."""
    torch.manual_seed(0)
    model = torch.nn.Linear(FEATURES, NUM_CLASSES)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.3)
    loss = af.FocalLoss(mode, gamma=2.0)
    train, val = batches(TRAIN, BATCH, 1, mode), batches(VAL, BATCH, 2, mode)
    run = Run(EPOCHS, len(train), model=model, val_source=val, train_source=train,
              optimizer=optimizer if lr_from_optimizer else None)
    return model, optimizer, loss, train, val, run


def _plain_loop(name: str, mode: str, loggers_for) -> tuple[af.GammaPolicy, af.FocalLoss]:
    model, optimizer, loss, train, val, run = _setup(name, mode)
    policy = make_policy(name, loss, run)
    callback = GammaCallback(policy, loggers=loggers_for(policy), log_every=1)
    for _ in range(EPOCHS):
        for x, y in train:
            value, stats = loss(model(x), y, return_stats=True)
            optimizer.zero_grad()
            value.backward()
            optimizer.step()
            callback.on_train_batch_end(stats)
        with torch.no_grad():
            (vx, vy), = val
            _, val_stats = loss(model(vx), vy, return_stats=True)
        callback.on_epoch_end(val_stats)
    return policy, loss


# -- the plain loop: GammaCallback + JSON lines ----------------------------------------------------------------
@pytest.mark.parametrize("name,mode", CASES, ids=CASE_IDS)
def test_plain_loop_json_lines(name, mode, tmp_path):
    path = tmp_path / "gamma.jsonl"
    with _no_logger_dropped():
        policy, loss = _plain_loop(name, mode, lambda policy: [JSONLinesLogger(path)])
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["kind"] for r in records] == ["step", "step", "epoch"] * EPOCHS
    assert all(gamma_scalars(r["gamma"]) for r in records)  # every record holds a gamma a logger can plot
    # the gamma in force, read back from the file (a policy may keep it in double precision, the loss in float32)
    assert gamma_scalars(records[-1]["gamma"]) == pytest.approx(gamma_scalars(loss.gamma), rel=1e-6)
    if isinstance(loss.gamma, GammaForm):
        assert records[-1]["gamma"]["form"] == type(loss.gamma).__name__


# -- W&B, offline into a temporary folder ------------------------------------------------------------------------
@pytest.mark.parametrize("name,mode", CASES, ids=CASE_IDS)
def test_wandb_offline(name, mode, tmp_path, monkeypatch):
    from adaptive_focal.integrations.wandb import WandbLogger

    for key in ("WANDB_API_KEY", "WANDB_BASE_URL"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    loggers, logged = [], []

    def make(policy):
        logger = WandbLogger(policy, dir=tmp_path, project="af-every-policy")
        run_cls = type(logger.run)
        log = run_cls.log
        monkeypatch.setattr(run_cls, "log", lambda run, data, *a, **k: (logged.append(dict(data)),
                                                                         log(run, data, *a, **k))[1])
        loggers.append(logger)
        return [logger]

    with _no_logger_dropped():
        _, loss = _plain_loop(name, mode, make)
        loggers[0].finish()
    assert loggers[0].run.settings.mode == "offline"
    assert len(logged) == EPOCHS * 3  # every step and epoch record reached the run
    assert all(_gamma_keys(data) for data in logged)
    assert _gamma_keys(logged[-1]) == pytest.approx(gamma_scalars(loss.gamma), rel=1e-6)
    assert list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))


# -- Lightning ---------------------------------------------------------------------------------------------------
def _loader(parts):
    x, y = torch.cat([x for x, _ in parts]), torch.cat([y for _, y in parts])
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=BATCH)


@pytest.mark.parametrize("name,mode", CASES, ids=CASE_IDS)
def test_lightning(name, mode, tmp_path):
    L = pytest.importorskip("lightning.pytorch")
    from adaptive_focal.integrations.lightning import GammaPolicyCallback

    class Module(L.LightningModule):
        def __init__(self, model, loss):
            super().__init__()
            self.net, self.criterion = model, loss

        def training_step(self, batch, batch_idx):
            value, stats = self.criterion(self.net(batch[0]), batch[1], return_stats=True)
            return {"loss": value, "stats": stats}

        def validation_step(self, batch, batch_idx):
            _, stats = self.criterion(self.net(batch[0]), batch[1], return_stats=True)
            return {"stats": stats}

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.3)

    class Recorder(L.loggers.Logger):
        name, version = "recorder", 0

        def __init__(self):
            super().__init__()
            self.rows = []

        def log_hyperparams(self, params, *args, **kwargs):
            pass

        def log_metrics(self, metrics, step=None):
            self.rows.append(dict(metrics))

    model, _, loss, train, val, run = _setup(name, mode, lr_from_optimizer=False)
    policy = make_policy(name, loss, run)
    recorder = Recorder()
    trainer = L.Trainer(max_epochs=EPOCHS, accelerator="cpu", devices=1, logger=recorder, log_every_n_steps=1,
                        callbacks=[GammaPolicyCallback(policy, log_every_n_steps=1)], enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    with _no_logger_dropped(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(num_workers|does not have many workers).*")
        trainer.fit(Module(model, loss), _loader(train), _loader(val))
    assert policy.step_count == EPOCHS * len(train) and policy.epoch == EPOCHS
    steps = [row for row in recorder.rows if _gamma_keys(row)]
    epochs = [_gamma_keys(row, "epoch/gamma") for row in recorder.rows if _gamma_keys(row, "epoch/gamma")]
    assert len(steps) == EPOCHS * len(train) and len(epochs) == EPOCHS
    assert epochs[-1] == pytest.approx(gamma_scalars(loss.gamma, prefix="epoch/gamma"), rel=1e-6)


# -- Hugging Face Trainer ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,mode", CASES, ids=CASE_IDS)
def test_transformers(name, mode, tmp_path):
    transformers = pytest.importorskip("transformers")
    from adaptive_focal.integrations.transformers import FocalLossHook, GammaTrainerCallback

    class Tiny(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x, labels=None):
            return {"logits": self.net(x)}

    class Data(torch.utils.data.Dataset):
        def __init__(self, parts):
            self.x = torch.cat([x for x, _ in parts])
            self.y = torch.cat([y for _, y in parts])

        def __len__(self):
            return len(self.x)

        def __getitem__(self, i):
            return {"x": self.x[i], "labels": self.y[i]}

    model, _, loss, train, val, run = _setup(name, mode, lr_from_optimizer=False)
    policy = make_policy(name, loss, run)
    hook = FocalLossHook(loss)
    callback = GammaTrainerCallback(policy, hook, name=f"every-policy-{name}-{mode}")
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), num_train_epochs=EPOCHS, per_device_train_batch_size=BATCH,
        per_device_eval_batch_size=BATCH, learning_rate=0.3, optim="sgd", lr_scheduler_type="constant",
        eval_strategy="epoch", save_strategy="no", logging_steps=1, report_to=[], use_cpu=True, seed=0,
        disable_tqdm=True)
    trainer = transformers.Trainer(model=Tiny(model), args=args, train_dataset=Data(train), eval_dataset=Data(val),
                                   compute_loss_func=hook, callbacks=[callback])
    with _no_logger_dropped():
        trainer.train()
    assert policy.step_count == EPOCHS * len(train)
    history = trainer.state.log_history
    train_logs = [h for h in history if "loss" in h]
    eval_logs = [h for h in history if "eval_loss" in h]
    assert len(train_logs) == EPOCHS * len(train) and len(eval_logs) == EPOCHS
    assert all(_gamma_keys(h) for h in train_logs + eval_logs)
    assert all(0.0 < h["eval_focal_mean_pt"] < 1.0 for h in eval_logs)
    assert _gamma_keys(history[-1]) == pytest.approx(gamma_scalars(loss.gamma), rel=1e-6)  # the final summary log


# -- Optuna: each policy's search space --------------------------------------------------------------------------
def _as_tuple(spec):
    return spec.as_tuple() if hasattr(spec, "as_tuple") else tuple(spec)


@pytest.mark.parametrize("name,mode", CASES, ids=CASE_IDS)
def test_optuna_search_space(name, mode):
    optuna = pytest.importorskip("optuna")
    from adaptive_focal.integrations.optuna import suggest_policy

    space = af.policy_class(name).search_space

    def objective(trial):
        model, optimizer, loss, train, val, run = _setup(name, mode)
        fixed = {k: v for k, v in extra_kwargs(name, run).items() if k not in space}
        policy = suggest_policy(trial, loss, policies=[name], fixed={name: fixed}, context=run.context())
        assert type(policy) is af.policy_class(name)
        for x, y in train:
            value, stats = loss(model(x), y, return_stats=True)
            optimizer.zero_grad()
            value.backward()
            optimizer.step()
            policy.step(stats)
        (vx, vy), = val
        with torch.no_grad():
            val_loss, val_stats = loss(model(vx), vy, return_stats=True)
        policy.epoch_end(val_stats)
        return float(val_loss)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(2):
        study.enqueue_trial({"policy": name})
    study.optimize(objective, n_trials=2)
    for trial in study.trials:
        assert trial.state == optuna.trial.TrialState.COMPLETE
        assert trial.params["policy"] == name
        assert {k for k in trial.params if k != "policy"} == {f"{name}.{p}" for p in space}
        for param, spec in space.items():
            kind, *rest = _as_tuple(spec)
            value = trial.params[f"{name}.{param}"]
            if kind == "categorical":
                assert value in rest[0]
            else:
                assert rest[0] <= value <= rest[1]
