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
    # no number typed by hand into the setup, results, withdrawn-claims and limitations sections, nor the abstract
    for start, end in ((r"\begin{abstract}", r"\end{abstract}"), (r"\paragraph{Development and confirmation.}",
                                                                  r"\bibliographystyle")):
        text = tex[tex.index(start):tex.index(end)]
        assert not re.findall(r"(?<![\\\w{.=])\d+\.\d+", text), start


def test_partial_results_give_not_run_rows(tmp_path):
    empty = tmp_path / "none"
    empty.mkdir()
    ma.make_assets(empty, tmp_path / "a")
    gen = tmp_path / "a" / "generated"
    setup = (gen / "setup.tex").read_text()
    assert setup.count(ma.NOT_RUN_GPU) == 2 and "digits-lt & -- &" in setup
    numbers = (gen / "numbers.tex").read_text()
    assert r"\newcommand{\DigitsLtBestFixedGamma}{not run}" in numbers
    assert r"\newcommand{\ConfirmStudiesRun}{0}" in numbers and r"\newcommand{\ConfirmSeeds}{not run}" in numbers
    clause = re.search(r"\\newcommand\{\\PriorNotRunClause\}\{(.*)\}\n", numbers).group(1)
    assert clause.startswith("; defined but not run for compute: ") and r"\texttt{seg-toy-prior-long-learned}" in clause
    assert (gen / "confirm_primary.tex").read_text().count(ma.NOT_RUN) == 7
    assert ma.NOT_RUN in (gen / "preregistration.tex").read_text()
    assert {p.name for p in (tmp_path / "a" / "figures").glob("*.pdf")} == {
        "rho_grid.pdf", "tuning_cost.pdf", "gamma_trajectories.pdf"}
    # one rho study only
    one = tmp_path / "one"
    one.mkdir()
    src = RESULTS / "digits-lt-rho10.json.gz"
    if not src.is_file():
        pytest.skip("no committed digits-lt-rho10 export")
    (one / src.name).write_bytes(src.read_bytes())
    ma.make_assets(one, tmp_path / "b", figures=False)
    grid = (tmp_path / "b" / "generated" / "rho_grid.tex").read_text()
    assert "digits-lt & 10 & " in grid and "digits-lt & 100 &" in grid and ma.NOT_RUN in grid


def test_figures_are_deterministic(tmp_path):
    one = tmp_path / "one"
    one.mkdir()
    for src in sorted(RESULTS.glob("*-rho*.json.gz"))[:2]:
        (one / src.name).write_bytes(src.read_bytes())
    ma.make_assets(one, tmp_path / "a")
    ma.make_assets(one, tmp_path / "b")
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


def _rows(name: str) -> list[list[str]]:
    """The body rows of a committed generated table, cells stripped."""
    lines = (PAPER / "generated" / name).read_text().splitlines()
    body = lines[lines.index(r"\midrule") + 1:lines.index(r"\bottomrule")]
    return [[c.strip() for c in line.removesuffix(r" \\").split(" & ")] for line in body if line != r"\midrule"]


def _macros() -> dict:
    return dict(re.findall(r"\\newcommand\{\\([A-Za-z]+)\}\{(.*)\}", (PAPER / "generated" / "numbers.tex").read_text()))


def test_confirm_tables_agree_with_research_confirm_json():
    """The paper's confirmatory tables say what research/results/confirm.json (python -m research.confirm) says:
    the same studies, differences, intervals, verdicts, Holm-adjusted p-values and verdict counts."""
    import json

    committed = json.loads((ROOT / "research" / "results" / "confirm.json").read_text())
    primary = {row[0]: row for row in _rows("confirm_primary.tex")}
    assert sorted(primary) == sorted(ma.tex(a["study"]) for a in committed["studies"])
    for a in committed["studies"]:
        row, p = primary[ma.tex(a["study"])], a["primary"]
        assert row[-1] == p["verdict"]
        assert row[5] == f"{p['mean_diff']:+.3f}"
        assert row[6] == f"[{p['ci90'][0]:+.3f}, {p['ci90'][1]:+.3f}]"
    macros = _macros()
    for verdict in ("matches", "not worse", "worse", "inconclusive"):
        key = ma.macro_name("confirm", *verdict.split())
        assert macros[key] == str(committed["verdicts"].get(verdict, 0)), verdict
    assert macros["ConfirmStudiesRun"] == str(len(committed["studies"]))
    secondary = {(row[0], row[1]): row for row in _rows("confirm_secondary.tex")}
    for a in committed["studies"]:
        for r in a["secondary"]:
            row = secondary[(ma.tex(a["study"]), ma.tex(r["label"]))]
            assert row[-1] == f"{r['p_holm']:.3f}"
            assert row[3].startswith(f"{r['mean_diff']:+.3f}")
            assert row[3].endswith("$^{*}$") == (r["p_holm"] <= committed["alpha"])
    calibration = _rows("confirm_calibration.tex")
    assert len(calibration) == sum(len(a["calibration"]) for a in committed["studies"])
    ts = [(a, r) for a in committed["studies"] for r in a["calibration"] if r["metric"] == "ece_ts"]
    worse = [a["study"] for a, r in ts if r["p_holm"] <= committed["alpha"] and r["mean_diff"] > 0]
    assert macros["ConfirmTsEceHigher"] == str(len(worse))


def test_preregistration_table_is_the_committed_choice():
    """The development/confirmation split: the ranking the paper shows is research.preregister's committed one, and
    the policy it chose is the one the confirmatory analysis tests."""
    import json

    from research import confirm

    choice = json.loads((ROOT / "research" / "results" / "preregistration_choice.json").read_text())
    rows = _rows("preregistration.tex")
    assert [re.search(r"\\texttt\{([^}]*)\}", row[0]).group(1).replace("\\_", "_") for row in rows] == [
        r["policy"] for r in choice["ranking"]]
    assert rows[0][0].startswith(r"\textbf{") and sum(r[0].startswith(r"\textbf{") for r in rows) == 1
    assert _macros()["PreregChosen"] == choice["chosen"] and confirm.POLICY == f"policy={choice['chosen']}"


def test_superseded_claims_are_gone():
    """No bootstrap interval and no 'best default policy' chosen among the policies in what the generator writes;
    the superseded claims appear in main.tex only in the section that withdraws them."""
    for path in (PAPER / "generated").glob("*.tex"):
        text = path.read_text().lower()
        assert "bootstrap" not in text and "best default policy" not in text, path.name
    tex = (PAPER / "main.tex").read_text()
    before = tex[:tex.index(r"\section{Withdrawn claims and reversals}")]
    assert "bootstrap" not in before.lower()
    assert "Wilcoxon" not in tex


def test_holm_family_marks_only_what_survives():
    """make_assets' star: Holm over the family, by hand. Raw p 0.01, 0.04, 0.03 -> Holm 0.03, 0.06, 0.06."""
    tests = [{"p": p, "mean_diff": d, "p_holm": None} for p, d in ((0.01, -0.2), (0.04, 0.1), (0.03, 0.1))]
    ma.holm_family(tests)
    assert [round(t["p_holm"], 6) for t in tests] == [0.03, 0.06, 0.06]
    assert [ma.significant(t) for t in tests] == [-1, 0, 0]
    t = ma.t_test([0.01, 0.02, 0.03])  # mean 0.02, sd 0.01, se 0.01/sqrt(3), t_{0.975, 2} = 4.302653
    assert t["mean_diff"] == pytest.approx(0.02) and t["wins"] == 3 and t["losses"] == 0
    assert t["high"] - t["mean_diff"] == pytest.approx(4.302653 * 0.01 / 3 ** 0.5, rel=1e-5)
