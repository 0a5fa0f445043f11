"""W&B logger: disabled in unit tests, one offline run read back from disk; never online."""

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

pytest.importorskip("wandb")

import adaptive_focal as af  # noqa: E402
from adaptive_focal.callbacks import GammaCallback  # noqa: E402
from adaptive_focal.integrations.wandb import WandbLogger, resolve_mode  # noqa: E402
from conftest import train_tiny  # noqa: E402


@pytest.fixture(autouse=True)
def _never_online(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc credentials
    monkeypatch.chdir(tmp_path)


def test_disabled_mode_logs_nothing_to_disk(tmp_path):
    loss = af.FocalLoss("softmax")
    policy = af.create_policy("pi", loss, setpoint=0.5)
    logger = WandbLogger(policy)  # WANDB_MODE=disabled from the environment
    train_tiny(GammaCallback(policy, loggers=[logger], log_every=1), loss)
    logger.finish()
    assert not (tmp_path / "wandb").exists()


def _inspect(run_dir: Path, summary: bool):
    args = [sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(run_dir)]
    if summary:
        args.insert(5, "--summary")
    out = subprocess.run(args, capture_output=True, text=True, timeout=120, env={**os.environ, "WANDB_MODE": "offline"})
    assert out.returncode == 0, out.stderr
    if summary:
        return json.loads(out.stdout)
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def test_offline_run_is_written_and_reads_back(tmp_path):
    loss = af.FocalLoss("softmax")
    policy = af.create_policy("adafocal", loss, num_bins=5, rebin=False)
    logger = WandbLogger(policy, mode="offline", dir=tmp_path, project="af-test", config={"lr": 0.3})
    train_tiny(GammaCallback(policy, loggers=[logger], log_every=1), loss)
    logger.finish()

    run_dir = next((tmp_path / "wandb").glob("offline-run-*"))
    info = _inspect(run_dir, summary=True)
    assert info["state"] == "finished"
    config = info["config"]
    assert config["policy"] == "adafocal" and config["policy.lam"] == 1.0 and config["lr"] == 0.3
    summary = info["summary"]
    assert set(summary["val/ece"]) == {"min"} and set(summary["val/accuracy"]) == {"max"}
    assert summary["val/per_class"]["_type"] == "table-file" and summary["val/reliability"]["nrows"] == 5
    assert "gamma/mean" in summary and "gamma/4" in summary  # AdaFocal's 5 per-bin gammas as series

    history = [r["history"]["item"] for r in _inspect(run_dir, summary=False) if r.get("type") == "history"]
    steps = [h for h in history if "train/mean_pt" in h]
    epochs = [h for h in history if "val/ece" in h]
    assert [h["step"] for h in steps] == [1, 2, 3, 4, 5, 6]
    assert [h["epoch"] for h in epochs] == [1, 2]
    assert all(0.0 <= h["val/ece"] <= 1.0 for h in epochs)


def test_a_wandb_failure_warns_once_and_stops_logging():
    class FlakyRun:
        def __init__(self):
            self.config = type("Config", (), {"update": lambda *a, **k: None})()
            self.calls = 0

        def define_metric(self, *args, **kwargs):
            pass

        def log(self, data):
            self.calls += 1
            raise OSError("disk full")

    run = FlakyRun()
    logger = WandbLogger(run=run)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(3):
            logger.log_step({"step": step, "epoch": 0, "gamma": 1.0})
    assert run.calls == 1 and len([w for w in caught if "W&B logging failed" in str(w.message)]) == 1


def test_mode_resolution(monkeypatch):
    monkeypatch.delenv("WANDB_MODE")
    assert resolve_mode() == "offline"  # no API key, no netrc: never wait for a network
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_mode() == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_mode() == "disabled"
    assert resolve_mode("offline") == "offline"
    with pytest.raises(ValueError, match="mode must be one of 'online', 'offline', 'disabled', got 'cloud'"):
        resolve_mode("cloud")


def test_missing_wandb_gives_an_install_hint():
    code = ("import sys; sys.modules['wandb'] = None\n"
            "try:\n    import adaptive_focal.integrations.wandb\nexcept ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "pip install 'adaptive_focal[wandb]'" in out.stdout, out.stderr
