"""paper/: the drift check (regenerating the tables and numbers from the committed sweep exports gives the
committed paper/generated/ byte for byte), the pipeline on partial results ("not run" rows, never a crash), the
macro names, and the quick-config check (one small experiment against paper/expected/quick.json).

The figures are not compared byte for byte here: they are deterministic for one matplotlib version (no dates in
the PDF metadata), but another matplotlib draws other bytes; ``test_figures_are_deterministic`` checks that two
runs with this matplotlib agree, and the drift check that the committed figure files are the ones made."""

import re
from pathlib import Path

import pytest

pytest.importorskip("optuna")
pytest.importorskip("scipy")
pytest.importorskip("matplotlib")

from adaptive_focal.compare import export
from paper import make_assets as ma
from paper import quick

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "sweeps" / "results" / "trials"
PAPER = ROOT / "paper"


def test_generated_files_match_the_committed_results(tmp_path):
    """The drift check: `make paper-assets` on the committed exports reproduces paper/generated exactly."""
    assert RESULTS.is_dir() and list(RESULTS.glob("*.json.gz")), "no committed exports in sweeps/results/trials"
    ma.make_assets(RESULTS, tmp_path, figures=False)
    made = {p.name: p.read_bytes() for p in (tmp_path / "generated").glob("*.tex")}
    committed = {p.name: p.read_bytes() for p in (PAPER / "generated").glob("*.tex")}
    assert sorted(made) == sorted(committed), "run `make paper-assets`: the set of generated files differs"
    stale = [name for name in made if made[name] != committed[name]]
    assert not stale, f"paper/generated is out of date with sweeps/results/trials ({', '.join(stale)}); run " \
                      "`make paper-assets` and commit the result"
    # every figure main.tex includes is one the generator makes, and every generated file it inputs exists
    tex = (PAPER / "main.tex").read_text()
    for fig in re.findall(r"\\includegraphics(?:\[[^]]*\])?\{figures/([^}]+)\}", tex):
        assert (PAPER / "figures" / fig).is_file(), fig
    for name in re.findall(r"\\input\{generated/([^}]+)\}", tex):
        assert name in made, name


def test_every_macro_used_in_main_tex_is_generated():
    tex = (PAPER / "main.tex").read_text()
    defined = set(re.findall(r"\\newcommand\{\\([A-Za-z]+)\}", (PAPER / "generated" / "numbers.tex").read_text()))
    defined |= set(re.findall(r"\\newcommand\{\\([A-Za-z]+)\}", tex))
    used = set(re.findall(r"\\([A-Z][A-Za-z]+)", tex))  # our macros start with a capital letter
    assert used <= defined, sorted(used - defined)
    # no number typed by hand into the results and limitations sections
    results = tex[tex.index(r"\section{Results}"):tex.index(r"\bibliographystyle")]
    assert not re.findall(r"(?<![\\\w{.=])\d+\.\d+", results)


def test_partial_results_give_not_run_rows(tmp_path):
    empty = tmp_path / "none"
    empty.mkdir()
    ma.make_assets(empty, tmp_path / "a", n_boot=200)
    gen = tmp_path / "a" / "generated"
    setup = (gen / "setup.tex").read_text()
    assert setup.count(ma.NOT_RUN_GPU) == 2 and "digits-lt & -- &" in setup
    assert r"\newcommand{\DigitsLtBestFixedGamma}{not run}" in (gen / "numbers.tex").read_text()
    assert {p.name for p in (tmp_path / "a" / "figures").glob("*.pdf")} == {
        "rho_grid.pdf", "tuning_cost.pdf", "gamma_trajectories.pdf"}
    # one rho study only
    one = tmp_path / "one"
    one.mkdir()
    src = RESULTS / "digits-lt-rho10.json.gz"
    if not src.is_file():
        pytest.skip("no committed digits-lt-rho10 export")
    (one / src.name).write_bytes(src.read_bytes())
    ma.make_assets(one, tmp_path / "b", n_boot=200, figures=False)
    grid = (tmp_path / "b" / "generated" / "rho_grid.tex").read_text()
    assert "digits-lt & 10 & " in grid and "digits-lt & 100 &" in grid and ma.NOT_RUN in grid


def test_figures_are_deterministic(tmp_path):
    one = tmp_path / "one"
    one.mkdir()
    for src in sorted(RESULTS.glob("*-rho*.json.gz"))[:2]:
        (one / src.name).write_bytes(src.read_bytes())
    ma.make_assets(one, tmp_path / "a", n_boot=200)
    ma.make_assets(one, tmp_path / "b", n_boot=200)
    for fig in sorted((tmp_path / "a" / "figures").glob("*.pdf")):
        assert fig.read_bytes() == (tmp_path / "b" / "figures" / fig.name).read_bytes(), fig.name


def test_macro_names_and_bad_input(tmp_path):
    assert ma.macro_name("mnist1d-lt", "best") == "MnistOneDLtBest"
    assert ma.macro_name("digits-lt", "rho", 100) == "DigitsLtRhoHundred"
    assert ma.macro_name("cifar100-lt") == "CifarOneZeroZeroLt"
    with pytest.raises(ValueError, match="macro name must be ASCII letters only"):
        ma.macro_name("é")
    assert ma.tex("cb_ce & 5%") == r"cb\_ce \& 5\%"
    with pytest.raises(ValueError, match="results folder .* does not exist"):
        ma.make_assets(tmp_path / "missing", tmp_path)
    assert ma.main(["--results", str(tmp_path / "missing"), "--out", str(tmp_path)]) == 2


def test_exports_hold_config_seed_and_versions():
    """The committed results say how each run was made: its config (with the seed) and, for trials run since the
    runner stores them (together with the gamma trajectory), the package versions."""
    for path in sorted(RESULTS.glob("*.json.gz")):
        data = export.read_export(path)
        assert data["trials"], path.name
        for t in data["trials"]:
            if t.get("per_seed") is not None:  # tuned across seeds: one config per seed it ran
                assert sorted(map(int, t["per_seed"])) == sorted(t["seeds_evaluated"]), (path.name, t["number"])
                for seed, run in t["per_seed"].items():
                    assert run["config"]["seed"] == int(seed)
                    assert run["config"]["dataset"] == data["manifest"]["dataset"]
                assert set(t["versions"]) == {"adaptive_focal", "torch", "python"}, (path.name, t["number"])
                continue
            assert t["config"]["seed"] == t["seed"] and t["config"]["dataset"] == data["manifest"]["dataset"]
            if t["gamma_trajectory"] is not None:
                assert set(t["versions"]) == {"adaptive_focal", "torch", "python"}, (path.name, t["number"])


def test_quick_config_matches_expected_values():
    expected = quick.load_expected()
    assert set(expected["tolerances"]) <= set(expected["metrics"])
    metrics = quick.run(expected["config"])
    assert quick.compare(expected, metrics) == []
    # the check can fail: a value off by more than its tolerance is reported with both numbers
    off = {**metrics, "balanced_accuracy": metrics["balanced_accuracy"] + 2 * expected["tolerances"][
        "balanced_accuracy"]}
    problems = quick.compare(expected, off)
    assert len(problems) == 1 and problems[0].startswith("balanced_accuracy: expected ")
    assert quick.compare(expected, {**metrics, "ece": float("nan")})[0].startswith("ece: expected")
