"""``adaptive-focal compare`` on a user's own function: the README's example task run by the installed package alone
(a wheel built from this checkout, installed into a fresh folder, run from an empty folder: no repository on the
path), the command's errors, and failures that end the command with a non-zero status."""

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")
pytest.importorskip("scipy")
pytest.importorskip("matplotlib")

from adaptive_focal import cli  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def readme_task() -> str:
    """The README's ``mytask.py`` example (the Python block that starts with ``# mytask.py``)."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    found = [b for b in blocks if b.startswith("# mytask.py\n")]
    assert len(found) == 1, "the README must hold one '# mytask.py' example"
    return found[0]


def readme_command() -> list[str]:
    """The README's quick-look ``adaptive-focal compare`` command, as arguments."""
    text = (ROOT / "README.md").read_text()
    line = re.search(r"^adaptive-focal compare mytask\.py:train .*--seeds 2 .*\\\n.*$", text, re.M).group(0)
    words = line.replace("\\\n", " ").split("#")[0].split()
    return words[1:]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """This checkout built as a wheel and unpacked into a folder of its own (what ``pip install`` puts in
    site-packages), with the console script; the test env provides the dependencies."""
    root = tmp_path_factory.mktemp("installed")
    source, wheels = root / "source", root / "wheels"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):  # what the build reads; the build writes in its own copy
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "adaptive_focal", source / "adaptive_focal",
                    ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(wheels), str(source)], check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("adaptive_focal-*.whl")
    site = root / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
        entry = zf.read(next(n for n in zf.namelist() if n.endswith("entry_points.txt"))).decode()
    assert "adaptive-focal = adaptive_focal.cli:main" in entry
    assert (site / "adaptive_focal" / "compare" / "runner.py").is_file()
    assert not (site / "sweeps").exists() and not (site / "research").exists()
    return site


def _run_installed(site: Path, cwd: Path, args: list[str], timeout=600) -> subprocess.CompletedProcess:
    code = ("import sys, adaptive_focal, adaptive_focal.cli as c; "
            "assert adaptive_focal.__file__.startswith(sys.argv[1]), adaptive_focal.__file__; "
            "rc = c.main(sys.argv[2:]); "
            "leaked = sorted(m for m in sys.modules if m.split('.')[0] in ('sweeps', 'research')); "
            "assert not leaked, leaked; sys.exit(rc)")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(site), WANDB_MODE="disabled")
    return subprocess.run([sys.executable, "-c", code, str(site), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_the_readme_task_runs_from_an_empty_folder_with_the_installed_package(installed, tmp_path):
    work = tmp_path / "empty"
    work.mkdir()
    (work / "mytask.py").write_text(readme_task())
    args = readme_command()
    assert args[:2] == ["compare", "mytask.py:train"] and "--out" in args
    r = _run_installed(installed, work, args)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    report = (work / "out" / "report.md").read_text()
    for arm in ("gamma=0", "gamma=2", "policy=pi", "policy=pi+tpe"):
        assert f"| {arm} |" in report, arm
    assert "Paired by seed against the best fixed gamma" in report
    assert (work / "c.log").is_file() and "test balanced_accuracy" in r.stdout
    assert "0 trials done, 10 to run" in r.stdout
    # the same command again resumes: nothing left to run, the same leaderboard
    again = _run_installed(installed, work, args)
    assert again.returncode == 0 and "10 trials done, 0 to run" in again.stdout

    def board(out):
        return out[out.index("### train"):out.index("\n\nwrote")]

    assert board(again.stdout) == board(r.stdout)


def test_sweep_without_a_studies_folder_says_where_it_looked(installed, tmp_path):
    r = _run_installed(installed, tmp_path, ["sweep", "run", "digits-lt"])
    assert r.returncode == 2 and "unknown study 'digits-lt': no study definitions found (no --studies given" in r.stderr


def _write_task(folder: Path) -> None:
    (folder / "mytask.py").write_text(readme_task())


def test_compare_errors_name_what_is_wrong(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write_task(tmp_path)
    base = ["compare", "mytask.py:train", "--mode", "softmax", "--metric", "balanced_accuracy", "--seeds", "1"]
    cases = [
        (["compare", "nope.py:train", "--mode", "softmax", "--metric", "m"], "objective file 'nope.py' not found"),
        (["compare", "mytask.py:nothere", "--mode", "softmax", "--metric", "m"], "has no function 'nothere'"),
        (["compare", "no_such_module:train", "--mode", "softmax", "--metric", "m"],
         "objective module 'no_such_module' cannot be imported"),
        (base + ["--arms", "gamma=two"], "arm 'gamma=two': gamma must be a non-negative number or 'tpe'"),
        (base + ["--arms", "policy=magic"], "unknown policy 'magic'; policies: "),
        (base + ["--arms", "policy=efl"], "arm 'policy=efl': policy 'efl' does not apply to mode='softmax' losses"),
        (base + ["--arms", "gamma=2@seeds"], "only a tuned arm .* can be tuned across seeds"),
        (base + ["--arms", "gamma=tpe@seeds"], "an arm tuned across seeds needs seeds >= 2, got seeds=1"),
    ]
    for args, message in cases:
        assert cli.main(args) == 2, args
        assert re.search(message, capsys.readouterr().err), (args, message)
    assert not (tmp_path / "runs").exists()  # nothing was stored


def test_failing_trials_end_the_command_with_an_error(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "broken.py").write_text("def train(run):\n    import sklearn_not_installed_here\n")
    rc = cli.main(["compare", "broken.py:train", "--mode", "softmax", "--metric", "acc", "--seeds", "1", "--arms",
                   "gamma=0", "gamma=2", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1
    assert err.count("Traceback") == 1 and "No module named 'sklearn_not_installed_here'" in err
    assert "every trial failed in 2 unit(s) of study 'train'" in err


def test_the_default_arms_follow_the_mode(tmp_path):
    from adaptive_focal.compare.api import objective_study

    _write_task(tmp_path)
    soft = {a.name for a in objective_study(str(tmp_path / "mytask.py:train"), mode="softmax", metric="m").arms}
    sig = {a.name for a in objective_study(str(tmp_path / "mytask.py:train"), mode="sigmoid", metric="m").arms}
    assert {"gamma=0", "gamma=5", "gamma=tpe", "policy=pi", "policy=pi+tpe", "policy=adafocal"} <= soft
    assert not {"policy=efl", "policy=asl_adaptive"} & soft and {"policy=efl", "policy=asl_adaptive"} <= sig
    assert not {"policy=hypergradient", "policy=gammanet", "policy=bandit"} & (soft | sig)  # only with learned=True
    learned = objective_study(str(tmp_path / "mytask.py:train"), mode="softmax", metric="m", learned=True)
    assert "policy=gammanet+tpe" in {a.name for a in learned.arms}
