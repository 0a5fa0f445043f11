"""Importing adaptive_focal stays light: no optional integration is imported."""
import os
import subprocess
import sys

import adaptive_focal as af

HEAVY = ("wandb", "optuna", "lightning", "pytorch_lightning", "transformers", "research", "sweeps")

_CODE = rf"""
import sys
import adaptive_focal
heavy = {HEAVY!r}
bad = sorted(m for m in sys.modules if any(m == h or m.startswith(h + ".") for h in heavy))
print("BAD:" + ",".join(bad))
"""


def _run(code):
    root = os.path.dirname(os.path.dirname(os.path.abspath(af.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


def test_import_does_not_pull_optional_integrations():
    r = _run(_CODE)
    assert r.returncode == 0, r.stderr
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("BAD:")][-1]
    assert line == "BAD:", f"imported: {line[4:]}"


def test_public_api_names():
    r = _run("import adaptive_focal as a; print(all(hasattr(a, n) for n in "
             "('sigmoid_focal_loss', 'softmax_focal_loss', 'FocalLoss', 'GammaTable', 'BatchStats')))")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("True")


def test_using_the_loss_does_not_pull_optional_integrations():
    code = _CODE.replace("import adaptive_focal\n", """import adaptive_focal, torch
x = torch.randn(300, 300)
t = (torch.rand(300, 300) < 0.5).float()
adaptive_focal.sigmoid_focal_loss(x, t, return_stats=True)
adaptive_focal.softmax_focal_loss(x, torch.randint(0, 300, (300,)), return_stats=True)
adaptive_focal.FocalLoss('sigmoid', gamma=adaptive_focal.GammaTable(torch.tensor([0., .5, 1.]), torch.ones(2)))(x, t)
""")
    r = _run(code)
    assert r.returncode == 0, r.stderr
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("BAD:")][-1]
    assert line == "BAD:", f"imported: {line[4:]}"
