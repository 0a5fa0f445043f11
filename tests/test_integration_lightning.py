"""Lightning callback with a real Trainer on CPU: drives the policy, logs, and resumes exactly from a checkpoint."""

import csv
import subprocess
import sys

import pytest
import torch

L = pytest.importorskip("lightning.pytorch")

import adaptive_focal as af  # noqa: E402
from adaptive_focal.integrations.lightning import GammaPolicyCallback  # noqa: E402


class Module(L.LightningModule):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Linear(6, 3)
        self.criterion = af.FocalLoss("softmax", gamma=2.0)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss, stats = self.criterion(self.net(x), y, return_stats=True)
        return {"loss": loss, "stats": stats}

    def validation_step(self, batch, batch_idx):
        x, y = batch
        _, stats = self.criterion(self.net(x), y, return_stats=True)
        return {"stats": stats}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.3)


class Recorder(L.Callback):
    """Gamma after every training batch and after every epoch end, as floats."""

    def __init__(self, module):
        self.module, self.trace = module, []

    def _gamma(self):
        g = self.module.criterion.gamma
        return g.values.flatten().tolist() if isinstance(g, af.GammaTable) else g.flatten().tolist()

    def on_train_batch_end(self, *args):
        self.trace.append(("step", self._gamma()))

    def on_train_epoch_end(self, *args):
        self.trace.append(("epoch", self._gamma()))


def _loaders():
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(64, 6, generator=g), torch.randint(0, 3, (64,), generator=g)
    vx, vy = torch.randn(32, 6, generator=g), torch.randint(0, 3, (32,), generator=g)
    ds = torch.utils.data.TensorDataset
    return (torch.utils.data.DataLoader(ds(x, y), batch_size=16),
            torch.utils.data.DataLoader(ds(vx, vy), batch_size=16))


def _fit(policy_name, epochs, tmp_path, ckpt_path=None, logger=False, **policy_kwargs):
    module = Module()
    policy = af.create_policy(policy_name, module.criterion, **policy_kwargs)
    recorder = Recorder(module)
    checkpoint = L.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, every_n_epochs=1)
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=logger,
                        callbacks=[GammaPolicyCallback(policy, log_every_n_steps=1), recorder, checkpoint],
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=1,
                        deterministic=True, log_every_n_steps=1)
    train, val = _loaders()
    trainer.fit(module, train, val, ckpt_path=ckpt_path)
    return policy, recorder.trace


@pytest.mark.parametrize("name, kwargs", [("pi", {"setpoint": 0.5, "ki": 0.3}),
                                          ("adafocal", {"num_bins": 5, "rebin": False})])
def test_stop_and_resume_gives_the_uninterrupted_trajectory(name, kwargs, tmp_path):
    policy, full = _fit(name, 4, tmp_path / "full", **kwargs)
    assert policy.step_count == 16 and policy.epoch == 4
    _, first = _fit(name, 2, tmp_path / "stop", **kwargs)
    resumed_policy, rest = _fit(name, 4, tmp_path / "resume", ckpt_path=tmp_path / "stop" / "ckpt" / "last.ckpt",
                                **kwargs)
    assert resumed_policy.step_count == 16 and resumed_policy.epoch == 4
    assert first + rest == full
    assert len({tuple(g) for _, g in full}) > 1  # gamma really moved


def test_gamma_and_statistics_reach_the_trainer_loggers(tmp_path):
    logger = L.loggers.CSVLogger(tmp_path, name="run")
    _fit("pi", 2, tmp_path, logger=logger, setpoint=0.5)
    rows = list(csv.DictReader(open(next(tmp_path.glob("run/*/metrics.csv")))))
    assert {"gamma", "epoch/gamma", "train/mean_pt", "val/ece", "val/accuracy"} <= set(rows[0])
    assert len([r for r in rows if r["gamma"]]) == 8  # every step of 2 epochs x 4 batches
    assert len([r for r in rows if r["val/ece"]]) == 2  # every epoch


def test_gradient_accumulation_steps_the_policy_once_per_optimizer_step(tmp_path):
    module = Module()
    policy = af.create_policy("automated", module.criterion)
    seen = []
    step = policy.step
    policy.step = lambda stats=None: (seen.append(int(stats.count)), step(stats))  # what the policy is given
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, accumulate_grad_batches=2,
                        callbacks=[GammaPolicyCallback(policy)])
    train, _ = _loaders()
    trainer.fit(module, train)
    assert policy.step_count == trainer.global_step == 2  # 4 batches of 16, 2 optimizer steps
    assert seen == [32, 32]  # each step sees both micro-batches' statistics


def test_missing_statistics_are_a_clear_error(tmp_path):
    class NoStats(Module):
        def training_step(self, batch, batch_idx):
            x, y = batch
            return self.criterion(self.net(x), y)

    module = NoStats()
    policy = af.create_policy("automated", module.criterion)
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False,
                        callbacks=[GammaPolicyCallback(policy)])
    train, val = _loaders()
    with pytest.raises(ValueError, match="needs the batch statistics: compute the loss with return_stats=True"):
        trainer.fit(module, train)


def test_two_callbacks_have_distinct_state_keys():
    loss = af.FocalLoss("softmax")
    a = GammaPolicyCallback(af.create_policy("pi", loss), name="a")
    b = GammaPolicyCallback(af.create_policy("pi", loss), name="b")
    assert a.state_key != b.state_key


def test_missing_lightning_gives_an_install_hint():
    code = ("import sys; sys.modules['lightning'] = None; sys.modules['lightning.pytorch'] = None\n"
            "try:\n    import adaptive_focal.integrations.lightning\nexcept ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "pip install 'adaptive_focal[lightning]'" in out.stdout, out.stderr
