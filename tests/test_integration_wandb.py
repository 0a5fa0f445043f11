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
from helpers.training import train_tiny  # noqa: E402


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


# -- going online only when it can work (never online here: the servers are closed or silent local ports) --------
import socket  # noqa: E402

import wandb  # noqa: E402

from adaptive_focal.integrations.wandb import has_credentials  # noqa: E402

FAKE_KEY = "x" * 40


@pytest.fixture
def fresh_wandb(monkeypatch):
    """wandb re-reads its settings (they are cached per process) and every wandb.init call is recorded."""
    for key in ("WANDB_BASE_URL", "WANDB_CONFIG_DIR", "NETRC", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_INIT_TIMEOUT"):
        monkeypatch.delenv(key, raising=False)
    wandb.teardown()
    calls = []
    init = wandb.init

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return init(*args, **kwargs)

    monkeypatch.setattr(wandb, "init", spy)
    yield calls
    wandb.teardown()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fallback_warnings(caught) -> list[str]:
    return [str(w.message) for w in caught if str(w.message).startswith("adaptive_focal: W&B")]


def _logs_offline(logger, tmp_path) -> None:
    assert logger.mode == "offline" and logger.run.settings.mode == "offline"
    logger.log_step({"step": 1, "epoch": 0, "gamma": 2.0})
    logger.finish()
    assert list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))


def test_online_without_an_api_key_logs_offline_with_one_warning(fresh_wandb, monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "online")
    policy = af.create_policy("pi", af.FocalLoss("softmax"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        logger = WandbLogger(policy, dir=tmp_path)
    assert [w for w in _fallback_warnings(caught)] == [
        "adaptive_focal: W&B cannot log online: no API key is configured (WANDB_API_KEY, `wandb login`, or a "
        ".netrc entry for the server); logging offline instead (upload the run later with `wandb sync`)"]
    assert [call["mode"] for call in fresh_wandb] == ["offline"]  # no attempt online
    _logs_offline(logger, tmp_path)


def test_an_unreachable_server_logs_offline_within_the_timeout(fresh_wandb, monkeypatch, tmp_path):
    port = _closed_port()
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("WANDB_INIT_TIMEOUT", "2")  # W&B's own variable, honoured
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        logger = WandbLogger(mode="online", dir=tmp_path)
    (message,) = _fallback_warnings(caught)
    assert f"cannot connect to 127.0.0.1:{port}" in message and "logging offline instead" in message
    assert [call["mode"] for call in fresh_wandb] == ["offline"]  # the closed port was seen before wandb.init
    _logs_offline(logger, tmp_path)


def test_a_server_that_never_answers_logs_offline_after_init_timeout(fresh_wandb, monkeypatch, tmp_path):
    # the port accepts connections (the kernel completes them) but nothing ever answers: only wandb's own
    # init_timeout, which the logger sets, ends the wait (W&B's default is 90 s)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
        monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{silent.getsockname()[1]}")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            logger = WandbLogger(mode="online", dir=tmp_path, init_timeout=1)
    (message,) = _fallback_warnings(caught)
    assert "did not accept the run within init_timeout=1 s" in message
    assert [call["mode"] for call in fresh_wandb] == ["online", "offline"]
    assert fresh_wandb[0]["settings"].init_timeout == 1.0
    _logs_offline(logger, tmp_path)


def test_a_refused_login_logs_offline_and_a_run_that_cannot_start_logs_nothing(monkeypatch, tmp_path):
    with socket.socket() as server:  # reachable, so the run is tried online
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
        monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{server.getsockname()[1]}")
        init = wandb.init

        def refuse_online(*args, **kwargs):
            if kwargs["mode"] == "online":
                raise wandb.errors.AuthenticationError("API key rejected")
            return init(*args, **kwargs)

        monkeypatch.setattr(wandb, "init", refuse_online)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            logger = WandbLogger(mode="online", dir=tmp_path)
    assert len(_fallback_warnings(caught)) == 1 and "API key rejected" in _fallback_warnings(caught)[0]
    _logs_offline(logger, tmp_path)

    def broken(*args, **kwargs):
        raise OSError("no space left on device")

    monkeypatch.setattr(wandb, "init", broken)
    policy = af.create_policy("pi", af.FocalLoss("softmax"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        logger = WandbLogger(policy, mode="offline", dir=tmp_path)
        train_tiny(GammaCallback(policy, loggers=[logger], log_every=1), policy.loss)  # training goes on
        logger.finish()
    assert logger.mode is None and logger.run is None
    assert [m for m in _fallback_warnings(caught)] == [
        "adaptive_focal: W&B logging failed (OSError('no space left on device')); logging to W&B is off for the "
        "rest of the run"]
    assert policy.step_count == 6


@pytest.mark.parametrize("bad, match", [(0, "init_timeout must be a positive number of seconds, got 0"),
                                        (float("inf"), "got inf"), ("5", "got '5'")])
def test_bad_init_timeout(bad, match):
    with pytest.raises(ValueError, match=match):
        WandbLogger(init_timeout=bad)


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o600)
    return path


@pytest.mark.parametrize("saved", ["settings_host", "netrc_env", "forge_default", "upstream_default", "windows_name"])
def test_a_saved_login_for_the_configured_server_counts(saved, fresh_wandb, monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE")
    entry = "machine {} login user password " + FAKE_KEY + "\n"
    if saved == "settings_host":  # `wandb login --host http://127.0.0.1:9` saves the host and the key
        _write(tmp_path / ".config" / "wandb" / "settings", "[default]\nbase_url = http://127.0.0.1:9\n")
        _write(tmp_path / ".netrc", entry.format("127.0.0.1:9"))
    elif saved == "netrc_env":
        monkeypatch.setenv("NETRC", str(_write(tmp_path / "secrets" / "netrc", entry.format("api.wandb.ai"))))
    elif saved == "forge_default":  # the default server of recent wandb releases
        _write(tmp_path / ".netrc", entry.format("api.forge.coreweave.com"))
    elif saved == "upstream_default":  # a login saved by an older release
        _write(tmp_path / ".netrc", entry.format("api.wandb.ai"))
    else:
        _write(tmp_path / "_netrc", entry.format("api.wandb.ai"))
    assert has_credentials() and resolve_mode() == "online"
    assert not fresh_wandb  # nothing was started, let alone online


def test_a_login_for_another_server_does_not_count(fresh_wandb, monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE")
    _write(tmp_path / ".config" / "wandb" / "settings", "[default]\nbase_url = http://127.0.0.1:9\n")
    _write(tmp_path / ".netrc", f"machine api.wandb.ai login user password {FAKE_KEY}\n")
    assert not has_credentials() and resolve_mode() == "offline"  # wandb would not use that key here
