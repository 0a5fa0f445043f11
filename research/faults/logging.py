"""Fault injection for logging (issue 17): trackers that cannot start or fail mid-run, and every gamma form
through every integration. Logging must never stop training, and a failure must say what it lost.

``scenarios()`` runs each scenario (seconds each; W&B never goes online: the only servers tried are closed or
silent ports on 127.0.0.1, under a temporary home without saved logins) and returns one row per scenario:
``{"scenario", "injected", "survived", "data_lost", "training_stopped"}``. The driver
``python -m research.benchmarks.fault_injection`` prints the rows of every area as one table.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import tempfile
import time
import warnings
from pathlib import Path

import torch

import adaptive_focal as af
from adaptive_focal.callbacks import GammaCallback, JSONLinesLogger, MemoryLogger
from adaptive_focal.gamma_forms import gamma_scalars

EPOCHS, STEPS, BATCH, FEATURES, CLASSES = 2, 3, 16, 6, 3

#: one policy per gamma form a loss can hold: (label, policy, loss mode, hyperparameters)
FORMS = (
    ("number", "pi", "softmax", {"setpoint": 0.5}),
    ("per-class tensor", "pi", "softmax", {"setpoint": 0.5, "per_class": True, "num_classes": CLASSES}),
    ("GammaTable", "flsd53", "softmax", {}),
    ("per-class GammaTable", "classwise_adafocal", "softmax", {"num_classes": CLASSES, "num_bins": 4}),
    ("FocalMixture", "cyclical", "softmax", {"total": EPOCHS}),
    ("per-class FocalMixture", "efl", "sigmoid", {"num_classes": CLASSES}),
    ("AsymmetricGamma", "asl_adaptive", "sigmoid", {}),
)


def _row(scenario: str, injected: str, survived: str, data_lost: str, stopped: bool) -> dict:
    return {"scenario": scenario, "injected": injected, "survived": survived, "data_lost": data_lost,
            "training_stopped": stopped}


def _data(mode: str, n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, FEATURES, generator=g), torch.randint(0, CLASSES, (n,), generator=g)
    return x, (torch.nn.functional.one_hot(y, CLASSES).float() if mode == "sigmoid" else y)


def _setup(policy_name: str, mode: str, kwargs: dict):
    torch.manual_seed(0)
    model = torch.nn.Linear(FEATURES, CLASSES)
    loss = af.FocalLoss(mode, gamma=2.0)
    return model, loss, af.create_policy(policy_name, loss, **kwargs)


def _train(model, loss, callback) -> None:
    """The plain loop: EPOCHS x STEPS optimizer steps, validation statistics at each epoch end."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.3)
    x, y = _data(loss.mode, STEPS * BATCH, 1)
    vx, vy = _data(loss.mode, BATCH, 2)
    for _ in range(EPOCHS):
        for idx in torch.arange(len(x)).split(BATCH):
            value, stats = loss(model(x[idx]), y[idx], return_stats=True)
            optimizer.zero_grad()
            value.backward()
            optimizer.step()
            callback.on_train_batch_end(stats)
        with torch.no_grad():
            _, val = loss(model(vx), vy, return_stats=True)
        callback.on_epoch_end(val)


@contextlib.contextmanager
def _isolated_wandb(**env: str):
    """A temporary home (no saved login, no settings), W&B silent, pointed at a closed local port unless ``env``
    says otherwise; the environment is restored. wandb's process-wide state (its cached settings and its service
    process) is torn down on entry and exit, so no W&B run of the caller may be active."""
    import wandb

    wandb.teardown()  # before saving the environment: the service's address (WANDB_SERVICE) goes with it
    saved = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="af-faults-") as home:
        try:
            for key in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_CONFIG_DIR", "NETRC", "WANDB_IDENTITY_TOKEN_FILE",
                        "WANDB_INIT_TIMEOUT", "WANDB_DIR"):
                os.environ.pop(key, None)
            os.environ.update({"HOME": home, "WANDB_SILENT": "true",
                               "WANDB_BASE_URL": f"http://127.0.0.1:{_closed_port()}", **env})
            yield Path(home)
        finally:
            wandb.teardown()
            os.environ.clear()
            os.environ.update(saved)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _count(items, noun: str) -> str:
    return f"{len(items)} {noun}{'' if len(items) == 1 else 's'}"


def _ours(caught) -> list[str]:
    return [str(w.message) for w in caught if str(w.message).startswith("adaptive_focal:")]


def _wandb_start(scenario: str, injected: str, env: dict, init_timeout: float | None = None) -> dict:
    """Training with a WandbLogger that cannot go online, and a MemoryLogger beside it."""
    from adaptive_focal.integrations.wandb import WandbLogger

    with _isolated_wandb(**env) as home, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model, loss, policy = _setup("pi", "softmax", {"setpoint": 0.5})
        start = time.perf_counter()
        try:
            logger = WandbLogger(policy, mode="online", dir=home, init_timeout=init_timeout)
        except Exception as err:  # noqa: BLE001 - the row reports it
            return _row(scenario, injected, f"no: the logger raised {err!r} before training", "the whole run",
                        True)
        waited = time.perf_counter() - start
        memory = MemoryLogger()
        _train(model, loss, GammaCallback(policy, loggers=[logger, memory], log_every=1))
        logger.finish()
        files = list(home.glob("wandb/offline-run-*/run-*.wandb"))
    messages = _ours(caught)
    failed = [m for m in messages if "logging failed" in m or "is dropped" in m]
    went = f"W&B went {logger.mode}" if logger.mode else "W&B logged nothing"
    survived = (f"training finished ({policy.step_count} steps); {went} after {waited:.1f} s with "
                f"{_count(messages, 'warning')}" + ("; `wandb sync` uploads the offline run" if files else ""))
    lost = "none" if (logger.mode == "offline" and files and not failed) else f"W&B records ({'; '.join(failed)})"
    return _row(scenario, injected, survived, lost, False)


def _no_key() -> dict:
    return _wandb_start("W&B online without an API key", "WANDB_MODE=online, no API key and no saved login",
                        {"WANDB_MODE": "online"})


def _unreachable() -> dict:
    return _wandb_start("W&B server unreachable", "an API key, the server a closed local port, init_timeout=2 s",
                        {"WANDB_API_KEY": "x" * 40}, init_timeout=2.0)


def _silent_server() -> dict:
    with socket.socket() as silent:  # connections complete, nothing ever answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        env = {"WANDB_API_KEY": "x" * 40, "WANDB_BASE_URL": f"http://127.0.0.1:{silent.getsockname()[1]}"}
        return _wandb_start("W&B server that never answers",
                            "an API key, the server a local port that accepts and never replies, init_timeout=1 s",
                            env, init_timeout=1.0)


def _raising_logger() -> dict:
    class Flaky:
        """A tracker that dies at its third record."""

        def __init__(self):
            self.calls = 0

        def _record(self, record):
            self.calls += 1
            if self.calls >= 3:
                raise ConnectionError("tracker went away")

        log_step = log_epoch = _record

    model, loss, policy = _setup("pi", "softmax", {"setpoint": 0.5})
    flaky, memory = Flaky(), MemoryLogger()
    with tempfile.TemporaryDirectory(prefix="af-faults-") as tmp, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = Path(tmp) / "gamma.jsonl"
        _train(model, loss, GammaCallback(policy, loggers=[flaky, memory, JSONLinesLogger(path)], log_every=1))
        lines = len(path.read_text().splitlines())
    total = EPOCHS * (STEPS + 1)
    kept = len(memory.steps) + len(memory.epochs)
    survived = (f"training finished ({policy.step_count} steps); the dead tracker was dropped after 3 failures in a "
                f"row with {_count(_ours(caught), 'warning')}; the other loggers kept all {kept} records (JSON lines: "
                f"{lines})")
    lost = "none (every record is in the other loggers; the dead tracker got 2)" if kept == lines == total else \
        f"{total - min(kept, lines)} records"
    return _row("a tracker dies mid-run", "a logger that raises ConnectionError from its 3rd record on", survived,
                lost, False)


# -- every gamma form through every integration ------------------------------------------------------------------
def _forms_row(integration: str, run_one) -> dict:
    """Runs ``run_one(label, policy_name, mode, kwargs) -> (gamma logged at every step and epoch?, detail)`` for
    every form; a form whose run raises stops that run and is reported."""
    ok, stopped, problems = [], False, []
    for label, name, mode, kwargs in FORMS:
        try:
            logged, detail = run_one(label, name, mode, kwargs)
        except Exception as err:  # noqa: BLE001 - the row reports it
            stopped = True
            problems.append(f"{label}: raised {err!r}")
            continue
        (ok if logged else problems).append(label if logged else f"{label}: {detail}")
    survived = f"{len(ok)} of {len(FORMS)} gamma forms logged at every step and epoch end"
    return _row(f"{integration} with every gamma form", ", ".join(label for label, *_ in FORMS), survived,
                "none" if not problems else "; ".join(problems), stopped)


def _plain(label, name, mode, kwargs):
    model, loss, policy = _setup(name, mode, kwargs)
    with tempfile.TemporaryDirectory(prefix="af-faults-") as tmp, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = Path(tmp) / "gamma.jsonl"
        _train(model, loss, GammaCallback(policy, loggers=[JSONLinesLogger(path)], log_every=1))
        records = [json.loads(line) for line in path.read_text().splitlines()]
    good = len(records) == EPOCHS * (STEPS + 1) and all(gamma_scalars(r["gamma"]) for r in records)
    return good and not _ours(caught), f"{len(records)} records, warnings {_ours(caught)}"


def _wandb(label, name, mode, kwargs):
    from adaptive_focal.integrations.wandb import WandbLogger

    with _isolated_wandb(WANDB_MODE="offline") as home, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model, loss, policy = _setup(name, mode, kwargs)
        logger = WandbLogger(policy, dir=home)
        if logger.run is None:
            return False, f"no W&B run started: {_ours(caught)}"
        logged = []
        run_log = logger.run.log
        logger.run.log = lambda data, *a, **k: (logged.append(data), run_log(data, *a, **k))[1]
        _train(model, loss, GammaCallback(policy, loggers=[logger], log_every=1))
        logger.finish()
    keys = [[k for k in data if k == "gamma" or k.startswith("gamma/")] for data in logged]
    good = len(logged) == EPOCHS * (STEPS + 1) and all(keys)
    return good and not _ours(caught), f"{len(logged)} of {EPOCHS * (STEPS + 1)} records, warnings {_ours(caught)}"


def _lightning(label, name, mode, kwargs):
    import lightning.pytorch as pl

    from adaptive_focal.integrations.lightning import GammaPolicyCallback

    class Module(pl.LightningModule):
        def __init__(self, net, criterion):
            super().__init__()
            self.net, self.criterion = net, criterion

        def training_step(self, batch, batch_idx):
            value, stats = self.criterion(self.net(batch[0]), batch[1], return_stats=True)
            return {"loss": value, "stats": stats}

        def validation_step(self, batch, batch_idx):
            return {"stats": self.criterion(self.net(batch[0]), batch[1], return_stats=True)[1]}

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.3)

    class Rows(pl.loggers.Logger):
        name, version = "rows", 0

        def __init__(self):
            super().__init__()
            self.rows = []

        def log_hyperparams(self, *args, **kwargs):
            pass

        def log_metrics(self, metrics, step=None):
            self.rows.append(metrics)

    model, loss, policy = _setup(name, mode, kwargs)
    def loader(x, y):
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=BATCH)

    rows = Rows()
    trainer = pl.Trainer(max_epochs=EPOCHS, accelerator="cpu", devices=1, logger=rows, log_every_n_steps=1,
                         callbacks=[GammaPolicyCallback(policy, log_every_n_steps=1)], enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's advice about data loader workers
        trainer.fit(Module(model, loss), loader(*_data(mode, STEPS * BATCH, 1)), loader(*_data(mode, BATCH, 2)))
    steps = sum(any(k == "gamma" or k.startswith("gamma/") for k in row) for row in rows.rows)
    epochs = sum(any(k.startswith("epoch/gamma") for k in row) for row in rows.rows)
    return (steps, epochs) == (EPOCHS * STEPS, EPOCHS), f"gamma logged at {steps} steps and {epochs} epoch ends"


def _transformers(label, name, mode, kwargs):
    import transformers

    from adaptive_focal.integrations.transformers import FocalLossHook, GammaTrainerCallback

    class Tiny(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x, labels=None):
            return {"logits": self.net(x)}

    class Data(torch.utils.data.Dataset):
        def __init__(self, x, y):
            self.x, self.y = x, y

        def __len__(self):
            return len(self.x)

        def __getitem__(self, i):
            return {"x": self.x[i], "labels": self.y[i]}

    model, loss, policy = _setup(name, mode, kwargs)
    hook = FocalLossHook(loss)
    callback = GammaTrainerCallback(policy, hook, name=f"faults-{label}")
    with tempfile.TemporaryDirectory(prefix="af-faults-") as tmp:
        args = transformers.TrainingArguments(
            output_dir=tmp, num_train_epochs=EPOCHS, per_device_train_batch_size=BATCH, learning_rate=0.3,
            optim="sgd", lr_scheduler_type="constant", eval_strategy="epoch", save_strategy="no", logging_steps=1,
            report_to=[], use_cpu=True, disable_tqdm=True)
        trainer = transformers.Trainer(model=Tiny(model), args=args, train_dataset=Data(*_data(mode, STEPS * BATCH, 1)),
                                       eval_dataset=Data(*_data(mode, BATCH, 2)), compute_loss_func=hook,
                                       callbacks=[callback])
        with contextlib.redirect_stdout(io.StringIO()):  # the Trainer prints every log without a progress bar
            trainer.train()
    history = trainer.state.log_history
    train = [h for h in history if "loss" in h and any(k == "gamma" or k.startswith("gamma/") for k in h)]
    evals = [h for h in history if "eval_loss" in h and "eval_focal_mean_pt" in h]
    return (len(train), len(evals)) == (EPOCHS * STEPS, EPOCHS), (f"log_history: gamma in {len(train)} training "
                                                                  f"logs, focal metrics in {len(evals)} evaluations")


def _optional(integration: str, module: str, run_one) -> dict:
    try:
        __import__(module)
    except ImportError:
        return _row(f"{integration} with every gamma form", "not run", f"not run: {module} is not installed",
                    "not run", False)
    return _forms_row(integration, run_one)


def scenarios() -> list[dict]:
    """Runs every logging scenario; one row each (see the module docstring)."""
    return [
        _no_key(),
        _unreachable(),
        _silent_server(),
        _raising_logger(),
        _forms_row("GammaCallback + JSON lines", _plain),
        _optional("W&B logger (offline)", "wandb", _wandb),
        _optional("Lightning callback", "lightning.pytorch", _lightning),
        _optional("Hugging Face Trainer callback", "transformers", _transformers),
    ]
