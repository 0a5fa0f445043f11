"""W&B report: built offline for a set of runs, and written locally as Markdown + PNG from offline run files."""

import pytest

pytest.importorskip("wandb")
pytest.importorskip("wandb_workspaces")
pytest.importorskip("matplotlib")

import adaptive_focal as af  # noqa: E402
from adaptive_focal.callbacks import GammaCallback  # noqa: E402
from adaptive_focal.integrations.wandb import WandbLogger  # noqa: E402
from adaptive_focal.integrations.wandb_report import (  # noqa: E402
    build_report,
    comparison_rows,
    load_offline_runs,
    save_report,
    write_local_report,
)
from helpers.training import train_tiny  # noqa: E402


@pytest.fixture(autouse=True)
def _never_online(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)


def _offline_run(tmp_path, policy_name, **kwargs):
    loss = af.FocalLoss("softmax")
    policy = af.create_policy(policy_name, loss, **kwargs)
    logger = WandbLogger(policy, mode="offline", dir=tmp_path, project="af-report", name=policy_name)
    train_tiny(GammaCallback(policy, loggers=[logger], log_every=1), loss, epochs=3, batches=1)
    logger.finish()


@pytest.fixture
def runs(tmp_path):
    _offline_run(tmp_path, "pi", setpoint=0.5)
    _offline_run(tmp_path, "constant", gamma=1.0)
    return load_offline_runs([tmp_path / "wandb"])


def test_offline_runs_load_back(runs):
    assert sorted(r.policy for r in runs) == ["constant", "pi"]
    for run in runs:
        assert [x for x, _ in zip(*run.series("val/ece", "epoch"))] == [1, 2, 3]
        # gamma after each step, and again after each epoch-end update (at the same step)
        assert run.series("gamma", "step")[0] == [1, 1, 2, 2, 3, 3]


def test_report_builds_offline_with_the_expected_panels(runs):
    report = build_report(project="af-report", entity="team", run_ids=[r.run_id for r in runs], runs=runs)
    kinds = [type(b).__name__ for b in report.blocks]
    assert kinds == ["H1", "P", "PanelGrid", "H2", "MarkdownBlock"]
    grid = report.blocks[2]
    plotted = [p.y for p in grid.panels if type(p).__name__ == "LinePlot"]
    gamma_keys = ["gamma", "gamma/mean", "gamma/positive", "gamma/negative", "gamma/positive/mean",
                  "gamma/negative/mean"]  # whatever the runs' gamma forms
    assert gamma_keys in plotted and ["val/ece"] in plotted and ["val/balanced_accuracy"] in plotted
    assert grid.runsets[0].groupby == ["config.policy"]
    assert all(r.run_id in grid.runsets[0].filters for r in runs)
    table = report.blocks[4].text
    assert "| run | policy |" in table and "pi" in table and "constant" in table
    sweep = build_report(project="af-report", entity="team", sweep_id="s1")
    assert "Run.sweep == 's1'" in sweep.blocks[2].runsets[0].filters


def test_local_report_has_markdown_and_png_figures(runs, tmp_path):
    path = write_local_report(runs, tmp_path / "report")
    text = path.read_text()
    assert "## Comparison (best validation values)" in text and "![Reliability diagrams" in text
    for name in ("gamma.png", "validation.png", "reliability.png"):
        data = (tmp_path / "report" / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000


def test_comparison_rows_sort_by_best_ece(runs):
    rows = comparison_rows(runs)
    eces = [r["val/ece"] for r in rows]
    assert eces == sorted(eces) and all(0.0 <= e <= 1.0 for e in eces)
    assert any("setpoint=0.5" in r["hyperparameters"] for r in rows)


def test_bad_calls():
    with pytest.raises(ValueError, match="entity and project are required"):
        build_report(project="p", entity="")
    with pytest.raises(ValueError, match="give run_ids or sweep_id, not both"):
        build_report(project="p", entity="e", run_ids=["a"], sweep_id="s")
    with pytest.raises(RuntimeError, match="needs the W&B server"):
        save_report(build_report(project="p", entity="e"))
    with pytest.raises(ValueError, match="no W&B runs found"):
        load_offline_runs([])
