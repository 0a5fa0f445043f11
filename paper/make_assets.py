"""Tables, numbers and figures of the paper, from the committed sweep exports alone.

Reads ``<results>/<study>.json.gz`` (written by :mod:`adaptive_focal.compare.export`) and writes

- ``<out>/generated/*.tex``: LaTeX tables (``\\input`` into ``main.tex``), ``numbers.tex`` (a ``\\newcommand`` per
  number or result-dependent word quoted in the text, letters-only names such as ``\\DigitsLtBestFixedGamma``)
  and ``findings_*.tex`` (sentences whose content depends on the results);
- ``<out>/figures/*.pdf``: matplotlib figures (Agg; no creation date in the PDF metadata, so reruns with the same
  matplotlib give the same bytes).

A study without an export is a "not run" row (the GPU data sets CIFAR-10-LT / CIFAR-100-LT: "not run (needs a
GPU)"), never an error, so the pipeline works with partial results.

- The confirmatory result comes from the seven ``*-confirm`` exports through :func:`research.confirm.run`, the
  pre-registered analysis (research/preregistration.md): primary table with TOST verdicts, secondary table with
  Holm within each study, calibration against cross-entropy.
- The development/confirmation split: :func:`research.preregister.choose` recomputed from the development
  exports; how digits-lt's configuration was chosen: research/results/default_search.json.
- The development studies (exploratory): every number is a mean over seeds of the trial each seed selects (the
  best validation headline metric; :func:`adaptive_focal.compare.results.selected`); paired comparisons are paired
  t 95% intervals (:func:`adaptive_focal.compare.analysis.paired_t`) against the best fixed gamma (highest mean
  *validation* metric), with Holm (:func:`adaptive_focal.compare.analysis.holm`) across the arms of a table.

    python -m paper.make_assets [--results sweeps/results/trials] [--out paper]
"""

from __future__ import annotations

import argparse
import itertools
import math
import re
import statistics
import sys
from pathlib import Path

from adaptive_focal.compare import analysis
from adaptive_focal.compare.export import export_path, read_export, units_from_export
from adaptive_focal.compare.results import _num, selected

#: the main comparison, one study per CPU data set (every arm of sweeps.spec.default_arms)
MAIN_STUDIES = ("digits-lt", "gauss-lt", "mnist1d-lt", "dense-det", "seg-toy")
#: GPU data sets: rows only, "not run (needs a GPU)" unless an export exists
GPU_STUDIES = ("cifar10-lt", "cifar100-lt")
#: extra metrics of question (c), shown where the trials have them
RARE_METRICS = {"ece": "ECE", "ece_ts": "ECE (TS)", "recall_few": "few-shot recall",
                "worst_class_recall": "worst-class recall", "ap_rare_half": "AP (rarer half)",
                "miou_foreground": "mIoU (foreground)"}
#: baselines of question (d), in table order
COMBINATIONS = ("baseline=cb_focal", "baseline=cb_ce", "baseline=logit_adjusted", "baseline=ghm")
GENERATED = ("generated", "figures")
#: research/default_search.py's committed results (how digits-lt's default configuration was chosen)
DEFAULT_SEARCH = Path(__file__).resolve().parents[1] / "research" / "results" / "default_search.json"
#: research/fair_arms.py's gammanet measurement (the development win rerun with every arm on the same samples)
FAIR_GAMMANET = Path(__file__).resolve().parents[1] / "research" / "results" / "fair_arms_gammanet.json"
#: per-study macros of question (a), defined as "not run" for a study without an export
TUNING_MACROS = ("BestFixedGamma", "BestFixedTest", "TunedGammaTest", "TunedGammaRuns", "PoliciesAboveFixed",
                 "Policies", "PoliciesBelowFixed")
#: 95% paired t intervals and Holm at 0.05 throughout (the confirmatory primary analysis uses 90%: research.confirm)
LEVEL, ALPHA = 0.95, 0.05
#: "small gamma" in the pruning reversal: the TPE trials below it on gauss-lt (sweeps/README.md, "Pruning")
SMALL_GAMMA = 0.5
#: the analysis object is computed for the reference arm, the tuning curves and the gamma trajectories only; no
#: bootstrap interval is shown, so its resamples are kept to a minimum
N_BOOT = 1
NOT_RUN = "not run"
NOT_RUN_GPU = "not run (needs a GPU)"


def rho_studies() -> list[tuple[str, int, str]]:
    """``[(dataset, rho, study name)]`` of the imbalance-ratio grid (sweeps/studies/rho.py)."""
    from sweeps.studies import rho

    return [(d, r, f"{d}-rho{r}") for d in rho.DATASETS for r in rho.RATIOS]


# ------------------------------------------------------------------------------------------------------------
# names and formatting
# ------------------------------------------------------------------------------------------------------------
_DIGITS = ("Zero", "One", "Two", "Three", "Four", "Five", "Six", "Seven", "Eight", "Nine")
_WORDS = {1: "One", 10: "Ten", 100: "Hundred", 1000: "Thousand"}


def macro_name(*parts) -> str:
    """A letters-only LaTeX macro name: ``macro_name("mnist1d-lt", "best")`` -> ``"MnistOneDLtBest"``; numbers
    1, 10, 100, 1000 become words, other digits are spelled one by one."""
    out = []
    for part in parts:
        if isinstance(part, int) and part in _WORDS:
            out.append(_WORDS[part])
            continue
        for token in re.findall(r"[^\W\d_]+|\d", str(part)):
            out.append(_DIGITS[int(token)] if token.isdigit() else token[0].upper() + token[1:])
    name = "".join(out)
    if not name.isalpha() or not name.isascii():
        raise ValueError(f"macro name must be ASCII letters only, got {name!r} from {parts!r}")
    return name


def tex(text) -> str:
    """``text`` with LaTeX's special characters escaped."""
    repl = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
            "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
    return "".join(repl.get(c, c) for c in str(text))


def arm_tex(arm: str) -> str:
    return r"\texttt{" + tex(arm) + "}"


def f3(v, signed=False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "--"
    return f"{v:+.3f}" if signed else f"{v:.3f}"


def fp(p) -> str:
    return "--" if p is None else f"{p:.3f}"


def pm(values) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "--"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3f} $\\pm$ {sd:.3f}"


def gamma_text(arm: str) -> str:
    """``"gamma=0.5"`` -> ``"0.5"``."""
    return arm.split("=", 1)[1] if arm.startswith("gamma=") else arm


def _mean(values):
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


# ------------------------------------------------------------------------------------------------------------
# loading
# ------------------------------------------------------------------------------------------------------------
class Results:
    """The exports found in ``folder``: per study its units (:func:`adaptive_focal.compare.results.load_units`),
    its analysis (:func:`adaptive_focal.compare.analysis.analyse`) and the selected trial per arm and seed."""

    def __init__(self, folder) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise ValueError(f"results folder {str(self.folder)!r} does not exist; export the sweeps with "
                             "`adaptive-focal sweep export <study> --out <folder>`")
        self._cache: dict = {}

    def has(self, study: str) -> bool:
        return export_path(self.folder, study).is_file()

    def get(self, study: str) -> dict | None:
        """``{"units", "manifest", "analysis", "selected"}`` or None when the study has no export."""
        if study not in self._cache:
            if not self.has(study):
                self._cache[study] = None
            else:
                path = export_path(self.folder, study)
                units = units_from_export(path, study)
                self._cache[study] = {"units": units, "manifest": read_export(path)["manifest"],
                                      "selected": selected(units), "analysis": analysis.analyse(units, n_boot=N_BOOT)}
        return self._cache[study]


def metric_values(r: dict, arm: str, key: str) -> dict:
    """``{seed: test metric key}`` of the selected trials of ``arm`` (missing / None left out)."""
    return {seed: t["test"].get(key) for seed, t in r["selected"].get(arm, {}).items()
            if _num(t["test"].get(key)) is not None}


def val_values(r: dict, arm: str) -> dict:
    metric = r["units"]["metric"]
    return {seed: t["val"].get(metric) for seed, t in r["selected"].get(arm, {}).items()
            if t["val"] and _num(t["val"].get(metric)) is not None}


def arms_of(r: dict, kind: str) -> list[str]:
    """Arms of one kind, in the manifest's order: ``fixed`` (the gamma grid), ``policy`` (default policies),
    ``tuned_gamma``, ``tuned_policy``, ``baseline``."""
    arms = r["units"]["arms"]
    tests = {"fixed": analysis.is_fixed_gamma, "policy": analysis.is_default_policy,
             "tuned_gamma": analysis.is_tuned_gamma,
             "tuned_policy": lambda rec: bool(rec.get("space")) and not analysis.is_tuned_gamma(rec),
             "baseline": lambda rec: rec.get("config", {}).get("loss") != "focal"}
    return [a for a, rec in arms.items() if tests[kind](rec)]


def paired(r: dict, arm: str, reference: str, key: str | None = None) -> dict:
    """``arm`` minus ``reference`` on test ``key`` (default: the headline metric), paired by seed:
    :func:`adaptive_focal.compare.analysis.paired_t` (95% interval, two-sided p) and wins/ties/losses.
    ``p_holm`` is None until :func:`holm_family` adjusts the p-values of a table's family."""
    key = key or r["units"]["metric"]
    mine, ref = metric_values(r, arm, key), metric_values(r, reference, key)
    seeds = sorted(set(mine) & set(ref))
    return t_test([mine[s] - ref[s] for s in seeds])


def t_test(diffs) -> dict:
    t = analysis.paired_t(list(diffs), level=LEVEL)
    return {"n": t["n"], "mean_diff": t["mean"], "low": t["low"], "high": t["high"], "p": t["p"],
            "wins": sum(d > 0 for d in diffs), "ties": sum(d == 0 for d in diffs),
            "losses": sum(d < 0 for d in diffs), "p_holm": None}


def holm_family(tests) -> list:
    """Holm's adjustment (:func:`adaptive_focal.compare.analysis.holm`) over one family of :func:`paired`
    results (a table's arms against one reference); sets each one's ``p_holm``; returns the tests."""
    tests = [t for t in tests if t is not None]
    for t, p in zip(tests, analysis.holm([t["p"] for t in tests])):
        t["p_holm"] = p
    return tests


def significant(t: dict | None) -> int:
    """+1 / -1 when the difference is positive / negative with a Holm-adjusted p <= ALPHA, else 0."""
    if not t or t["p_holm"] is None or t["p_holm"] > ALPHA:
        return 0
    return 1 if t["mean_diff"] > 0 else -1


def interval(t: dict, low: str = "low", high: str = "high") -> str:
    return "--" if t.get(low) is None else f"[{t[low]:+.3f}, {t[high]:+.3f}]"


def _paired_cell(p: dict, wtl: bool = False) -> str:
    """``+0.012 [+0.004, +0.020]*`` (*: Holm-adjusted p <= ALPHA in the table's family)."""
    if not p or not p["n"]:
        return "--"
    star = "$^{*}$" if significant(p) else ""
    cell = f"{p['mean_diff']:+.3f}{star}" + (f" {interval(p)}" if p["low"] is not None else "")
    return cell + (f" ({p['wins']}/{p['ties']}/{p['losses']})" if wtl else "")


# ------------------------------------------------------------------------------------------------------------
# the assets
# ------------------------------------------------------------------------------------------------------------
class Assets:
    """Collects macros, tables and findings; :meth:`write` writes them."""

    def __init__(self, results: Results) -> None:
        self.results = results
        self.macros: dict[str, str] = {}
        self.files: dict[str, str] = {}

    def num(self, name: str, value) -> None:
        if name in self.macros:
            raise ValueError(f"macro \\{name} defined twice")
        macro_name(name)  # letters only
        self.macros[name] = value if isinstance(value, str) else f3(value)

    def table(self, name: str, header: list[str], rows: list[list[str]], align: str) -> None:
        """A booktabs tabular (no float: main.tex places it and writes the caption)."""
        lines = [f"\\begin{{tabular}}{{{align}}}", "\\toprule", " & ".join(header) + r" \\", "\\midrule"]
        for row in rows:
            lines.append(r"\midrule" if row == ["\\midrule"] else " & ".join(row) + r" \\")
        lines += ["\\bottomrule", "\\end{tabular}"]
        self.files[f"{name}.tex"] = "\n".join(lines) + "\n"

    # -- setup ------------------------------------------------------------------------------------------------
    def setup(self) -> None:
        rows, run = [], []
        for study in MAIN_STUDIES + GPU_STUDIES:
            r = self.results.get(study)
            if r is None:
                rows.append([tex(study), "--", "--", "--", "--", "--",
                             NOT_RUN_GPU if study in GPU_STUDIES else NOT_RUN])
                continue
            run.append(study)
            u = r["units"]
            seeds = sorted({s for per in u["units"].values() for s in per})
            trials = sum(len(ts) for per in u["units"].values() for ts in per.values())
            tuned = [len(ts) for a, rec in u["arms"].items() if rec.get("space") for ts in u["units"][a].values()]
            rows.append([tex(study), tex(u["metric"]), _rho_text(r["manifest"]), str(len(u["arms"])), str(len(seeds)),
                         str(max(tuned, default=0)), f"{trials} trials"])
        self.table("setup", ["data set", "headline metric", r"$\rho$", "arms", "seeds", "TPE trials / seed",
                             "status"], rows, "lllrrrl")
        self.num("StudiesRun", str(len(run)))
        self.num("StudiesPlanned", str(len(MAIN_STUDIES)))

    # -- (a) tuning cost (development, exploratory) -----------------------------------------------------------
    def tuning_cost(self) -> None:
        """Per development study: the grid's validation choice (six runs) against the TPE-tuned gamma, and how many
        default policies are above / below that choice after Holm across the arms of the policies table."""
        rows, sentences, policy_rows, fixed_wins, run, family, n_policies = [], [], {}, [], [], [0], [0]
        for study in MAIN_STUDIES:
            r = self.results.get(study)
            mac = macro_name(study)
            if r is None:
                rows.append([tex(study)] + ["--"] * 5 + [NOT_RUN])
                for key in TUNING_MACROS:
                    self.num(f"{mac}{key}", NOT_RUN)
                continue
            run.append(study)
            metric, ref = r["units"]["metric"], r["analysis"]["reference"]
            policies = arms_of(r, "policy")
            tuned = arms_of(r, "tuned_gamma")
            tpe = tuned[0] if tuned else None
            budget = max((len(ts) for ts in r["units"]["units"][tpe].values()), default=0) if tpe else 0
            grid = len(arms_of(r, "fixed"))
            ref_test = metric_values(r, ref, metric) if ref else {}
            tpe_test = metric_values(r, tpe, metric) if tpe else {}
            tests = {p: paired(r, p, ref) for p in policies + arms_of(r, "tuned_policy")} if ref else {}
            holm_family(tests.values())
            family.append(len(tests))
            n_policies.append(len(policies))
            for p, t in tests.items():
                policy_rows.setdefault(p, {})[study] = t
            above = [p for p in policies if significant(tests.get(p)) > 0]
            below = [p for p in policies if significant(tests.get(p)) < 0]
            tp = holm_family([paired(r, tpe, ref)])[0] if tpe and ref else None
            rows.append([tex(study), f"{arm_tex(ref)} ({grid} runs)" if ref else "--", pm(ref_test.values()),
                         f"{pm(tpe_test.values())} ({budget} runs)" if tpe else "--",
                         _paired_cell(tp) if tp else "--", f"{len(above)} / {len(below)} of {len(policies)}"])
            self.num(f"{mac}BestFixedGamma", gamma_text(ref) if ref else "--")
            self.num(f"{mac}BestFixedTest", _mean(ref_test.values()))
            self.num(f"{mac}TunedGammaTest", _mean(tpe_test.values()))
            self.num(f"{mac}TunedGammaRuns", str(budget))
            self.num(f"{mac}PoliciesAboveFixed", str(len(above)))
            self.num(f"{mac}Policies", str(len(policies)))
            self.num(f"{mac}PoliciesBelowFixed", str(len(below)))
            if ref is None:
                continue
            sentences.append(
                f"On {tex(study)} ({tex(metric)}), {len(above)} of {len(policies)} default policies are above the "
                f"grid's validation choice ($\\gamma={gamma_text(ref)}$) and {len(below)} below it after Holm"
                + (f" (above: {', '.join(arm_tex(a) for a in above)})" if above else "")
                + (f"; the TPE-tuned $\\gamma$ ({budget} runs per seed) minus that choice is "
                   f"{tp['mean_diff']:+.3f} {interval(tp)}" if tp and tp["n"] else "") + ".")
            fixed_wins.append(
                f"on {tex(study)}, {len(below)} of {len(policies)} default policies fall below the grid's choice "
                f"($\\gamma={gamma_text(ref)}$) after Holm"
                + (f" ({', '.join(arm_tex(p) for p in below)})" if below else ""))
        self.table("tuning_cost", ["data set", "best fixed $\\gamma$ (grid, by validation)", "test",
                                   "TPE-tuned $\\gamma$ test (cost)", "TPE $-$ grid, 95\\% CI",
                                   "default policies above / below"], rows, "lllllr")
        self.files["findings_a.tex"] = (" ".join(sentences) if sentences else
                                        "No development study has been run yet.") + "\n"
        self.files["findings_fixed_wins.tex"] = (
            ("Where fixed gamma wins in the development studies: " + "; ".join(fixed_wins) + ".") if fixed_wins
            else "No development study has been run yet.") + "\n"
        self.num("MaxHolmFamily", str(max(family)))
        self.num("MaxPolicies", str(max(n_policies)))
        header = ["arm"] + [tex(s) for s in run]
        body = []
        for arm in sorted(policy_rows, key=lambda a: (a.endswith("+tpe"), a)):
            body.append([arm_tex(arm)] + [_paired_cell(policy_rows[arm].get(s)) for s in run])
        if not run:
            header, body = ["arm", "status"], [["--", NOT_RUN]]
        self.table("policies", header, body, "l" + "r" * (len(header) - 1))

    # -- (b) best fixed gamma against the imbalance ratio -----------------------------------------------------
    def rho(self) -> None:
        best_rows, grid_rows, findings, series = [], [], [], {}
        grid_arms: list[str] = []
        ce_tests = {}  # the validation choice minus cross-entropy; Holm across the rows of the table
        for _, _, study in rho_studies():
            r = self.results.get(study)
            if r and (ref := r["analysis"]["reference"]) and ref != "gamma=0" and "gamma=0" in arms_of(r, "fixed"):
                ce_tests[study] = paired(r, ref, "gamma=0")
        holm_family(ce_tests.values())
        for dataset, rho, study in rho_studies():
            r = self.results.get(study)
            mac = macro_name(dataset, "rho", rho)
            if r is None:
                best_rows.append([tex(dataset), str(rho), "--", "--", "--", "--", "--", NOT_RUN])
                grid_rows.append((dataset, rho, None))
                self.num(f"{mac}BestGamma", NOT_RUN)
                self.num(f"{mac}Spread", NOT_RUN)
                continue
            a, metric = r["analysis"], r["units"]["metric"]
            fixed = arms_of(r, "fixed")
            grid_arms = grid_arms or fixed
            ref = a["reference"]
            means = {g: _mean(metric_values(r, g, metric).values()) for g in fixed}
            valid = [m for m in means.values() if m is not None]
            ce = "gamma=0" if "gamma=0" in fixed else None
            pp = ce_tests.get(study)
            best_test = max((g for g in fixed if means[g] is not None), key=lambda g: means[g], default=None)
            best_rows.append([tex(dataset), str(rho), gamma_text(ref) if ref else "--",
                              pm(metric_values(r, ref, metric).values()) if ref else "--",
                              gamma_text(best_test) if best_test else "--",
                              pm(metric_values(r, ce, metric).values()) if ce else "--",
                              (_paired_cell(pp, wtl=True) if pp else ("0 (is CE)" if ref == ce else "--")),
                              f3(max(valid) - min(valid)) if valid else "--"])
            grid_rows.append((dataset, rho, {"means": means, "ref": ref}))
            self.num(f"{mac}BestGamma", gamma_text(ref) if ref else "--")
            self.num(f"{mac}Spread", f3(max(valid) - min(valid)) if valid else "--")
            if ref:
                sds = [statistics.stdev(v) for g in fixed
                       if len(v := list(metric_values(r, g, metric).values())) > 1]
                series.setdefault(dataset, []).append(
                    (rho, float(gamma_text(ref)), max(valid) - min(valid), _mean(sds)))
        self.table("rho_best", ["data set", r"$\rho$", r"best $\gamma$ (val.)", "its test", r"best $\gamma$ (test)",
                                r"$\gamma=0$ (CE) test", "best $-$ CE (W/T/L)", "grid spread"], best_rows,
                   "lrrrrrrr")
        # the full gamma x rho grid of test means; the validation choice in bold
        header = ["data set", r"$\rho$"] + [f"$\\gamma={gamma_text(g)}$" for g in grid_arms]
        body = []
        for dataset, rho, cell in grid_rows:
            if cell is None:
                body.append([tex(dataset), str(rho)] + ["--"] * max(0, len(grid_arms) - 1) + [NOT_RUN])
                continue
            body.append([tex(dataset), str(rho)] + [
                "--" if cell["means"].get(g) is None else
                (f"\\textbf{{{cell['means'][g]:.3f}}}" if g == cell["ref"] else f"{cell['means'][g]:.3f}")
                for g in grid_arms])
        self.table("rho_grid", header, body, "lr" + "r" * max(1, len(grid_arms)))
        grow = 0
        for dataset in dict.fromkeys(d for d, _, _ in rho_studies()):
            pts = sorted(series.get(dataset, []))
            mac = macro_name(dataset)
            if len(pts) < 2:
                for key in ("GammaTrendWithRho", "RhoSpreadMax", "RhoSeedSd"):
                    self.num(f"{mac}{key}", NOT_RUN)
                continue
            gammas = [p[1] for p in pts]
            up = all(b >= a for a, b in itertools.pairwise(gammas))
            down = all(b <= a for a, b in itertools.pairwise(gammas))
            word = ("stays the same" if up and down else "grows" if up else "shrinks" if down
                    else "has no monotone trend")
            grow += word == "grows"
            self.num(f"{mac}GammaTrendWithRho", word)
            spread = [p[2] for p in pts]
            sd = [p[3] for p in pts if p[3] is not None]
            self.num(f"{mac}RhoSpreadMax", max(spread))
            self.num(f"{mac}RhoSeedSd", _mean(sd))
            findings.append(
                f"On {tex(dataset)} the best fixed gamma (validation choice) is "
                + ", ".join(f"{p[1]:g} at $\\rho={p[0]}$" for p in pts)
                + f": it {word} as the imbalance ratio grows. The whole grid's test means differ by at most "
                f"{max(spread):.3f} at any $\\rho$, against a seed standard deviation of {_mean(sd):.3f} "
                "(mean over the grid's arms)"
                + (", so the choice of gamma matters less than the seed there." if max(spread) < _mean(sd) else
                   "."))
        self.num("RhoDatasetsGrow", str(grow))
        self.num("RhoDatasetsRun", str(sum(len(series.get(d, [])) >= 2
                                           for d in dict.fromkeys(d for d, _, _ in rho_studies()))))
        self.files["findings_b.tex"] = (" ".join(findings) if findings else
                                        "The imbalance-ratio studies have not been run yet.") + "\n"
        if self._draw:
            self._rho_figure(grid_rows, grid_arms)

    # -- (c) calibration and the rarest classes ----------------------------------------------------------------
    def calibration(self) -> None:
        findings = []
        for study in MAIN_STUDIES:
            r = self.results.get(study)
            name = f"calibration_{study.replace('-', '_')}"
            if r is None:
                self.table(name, ["arm", "status"], [["--", NOT_RUN]], "ll")
                continue
            metric = r["units"]["metric"]
            order = (arms_of(r, "fixed") + arms_of(r, "tuned_gamma") + arms_of(r, "policy")
                     + arms_of(r, "baseline"))
            present = [k for k in RARE_METRICS if any(metric_values(r, a, k) for a in order)]
            rows = []
            for arm in order:
                if not r["selected"].get(arm):
                    continue
                rows.append([arm_tex(arm), pm(metric_values(r, arm, metric).values())]
                            + [pm(metric_values(r, arm, k).values()) for k in present])
            self.table(name, ["arm", f"test {tex(metric)}"] + [RARE_METRICS[k] for k in present], rows,
                       "l" + "r" * (1 + len(present)))
            ref, mac = r["analysis"]["reference"], macro_name(study)
            for key in ("ece", "recall_few"):
                if key not in present or ref is None:
                    continue
                lower_better = key == "ece"
                means = {a: _mean(metric_values(r, a, key).values()) for a in order}
                means = {a: m for a, m in means.items() if m is not None}
                best = (min if lower_better else max)(means, key=means.get)
                self.num(f"{mac}{macro_name(key)}Ref", means.get(ref))
                self.num(f"{mac}{macro_name(key)}Best", means[best])
                self.num(f"{mac}{macro_name(key)}BestArm", arm_tex(best))
                policies = [a for a in arms_of(r, "policy") if a in means]
                tests = {a: paired(r, a, ref, key) for a in policies if a != ref}
                holm_family(tests.values())
                below = [a for a, t in tests.items() if significant(t) < 0]
                above = [a for a, t in tests.items() if significant(t) > 0]
                improve, worse = (below, above) if lower_better else (above, below)
                what = "test ECE" if key == "ece" else "few-shot recall"
                findings.append(
                    f"On {tex(study)}, {what}: best fixed gamma ({gamma_text(ref)}) {means[ref]:.3f}, best arm "
                    f"{arm_tex(best)} {means[best]:.3f}; {len(improve)} of {len(policies)} default policies "
                    f"{'lower' if lower_better else 'raise'} it after Holm across the policies"
                    + (f" ({', '.join(arm_tex(a) for a in improve)})" if improve else "")
                    + f", {len(worse)} {'makes' if len(worse) == 1 else 'make'} it worse"
                    + (f" ({', '.join(arm_tex(a) for a in worse)})" if worse else "") + ".")
        self.files["findings_c.tex"] = (" ".join(findings) if findings else
                                        "No multiclass study has been run yet.") + "\n"

    # -- (d) focal loss alone or combined ---------------------------------------------------------------------
    def combinations(self) -> None:
        rows, findings, combo_studies = [], [], 0
        for study in MAIN_STUDIES:
            r = self.results.get(study)
            if r is None:
                rows.append([tex(study), "--", "--", "--", "--", "--", NOT_RUN])
                continue
            metric, ref = r["units"]["metric"], r["analysis"]["reference"]
            if ref is None:
                continue
            rows.append([tex(study), f"focal alone, {arm_tex(ref)}", pm(metric_values(r, ref, metric).values()),
                         "--", "--", "--", "reference"])
            wins = []
            tests = holm_family({a: paired(r, a, ref) for a in COMBINATIONS if a in r["units"]["arms"]}.values())
            tests = dict(zip([a for a in COMBINATIONS if a in r["units"]["arms"]], tests))
            for arm in COMBINATIONS:
                if arm not in tests:
                    rows.append([tex(study), arm_tex(arm), "--", "--", "--", "--", "not applicable"])
                    continue
                p = tests[arm]
                rows.append([tex(study), arm_tex(arm), pm(metric_values(r, arm, metric).values()),
                             f3(p["mean_diff"], signed=True), interval(p), f"{p['wins']}/{p['ties']}/{p['losses']}",
                             fp(p["p_holm"])])
                if significant(p) > 0:
                    wins.append(arm)
            rows.append(["\\midrule"])
            combo_studies += bool(wins)
            if wins:
                verb = "beats" if len(wins) == 1 else "beat"
                findings.append(f"On {tex(study)}, {', '.join(arm_tex(a) for a in wins)} {verb} focal loss alone "
                                "after Holm.")
            else:
                findings.append(f"On {tex(study)}, no class-level method beats focal loss alone after Holm.")
        if rows and rows[-1] == ["\\midrule"]:
            rows.pop()
        self.table("combinations", ["data set", "method", "test", "diff.", "95\\% CI", "W/T/L", "$p$ (Holm)"],
                   rows, "lllrlrl")
        self.num("StudiesCombinationWins", str(combo_studies))
        self.files["findings_d.tex"] = (" ".join(findings) if findings else
                                        "No main-comparison study has been run yet.") + "\n"

    def resampling(self) -> None:
        """(d), resampling: the ``<dataset>-combos`` studies (cross-entropy and focal loss at gamma 1 and 2, each
        with no resampling, square-root and class-balanced resampling)."""
        from sweeps.studies.combos import DATASETS, GAMMAS, SAMPLERS

        def arm(gamma, sampler):
            return f"gamma={gamma:g}" + ("" if sampler == "none" else f"+{sampler}")

        def by_val(r, arms):  # the arm with the best mean validation metric (ties: the first)
            scored = [(_mean(val_values(r, a).values()), a) for a in arms if val_values(r, a)]
            return max(scored, key=lambda t: t[0])[1] if scored else None

        rows, findings, wins, overall_tests = [], [], 0, []
        for dataset in DATASETS:
            r = self.results.get(f"{dataset}-combos")
            if r is None:
                rows.append([tex(dataset), "--", "--", "--", "--", "--", NOT_RUN])
                continue
            metric = r["units"]["metric"]
            focal = {sampler: by_val(r, [arm(g, sampler) for g in GAMMAS if g > 0]) for sampler in SAMPLERS}
            tests = {sampler: paired(r, focal[sampler], arm(0.0, sampler)) if focal[sampler] else None
                     for sampler in SAMPLERS}
            holm_family(tests.values())  # Holm across the samplers of one data set
            for sampler in SAMPLERS:
                cells = [pm(metric_values(r, arm(g, sampler), metric).values()) for g in GAMMAS]
                rows.append([tex(dataset), tex(sampler), *cells,
                             focal[sampler].split("=", 1)[1].split("+", 1)[0] if focal[sampler] else "--",
                             _paired_cell(tests[sampler], wtl=True)])
            rows.append(["\\midrule"])
            alone = by_val(r, [arm(g, "none") for g in GAMMAS if g > 0])
            combined = by_val(r, [arm(g, s) for s in SAMPLERS if s != "none" for g in GAMMAS if g > 0])
            overall = by_val(r, [arm(g, s) for s in SAMPLERS for g in GAMMAS])
            if alone is not None and combined is not None:
                overall_tests.append((dataset, metric, alone, combined, overall, paired(r, combined, alone)))
        holm_family(t[-1] for t in overall_tests)  # Holm across the data sets
        for dataset, metric, alone, combined, overall, p in overall_tests:
            verdict = {1: "better than", -1: "worse than", 0: "not distinguishable from"}[significant(p)]
            wins += verdict == "better than"
            findings.append(
                f"On {tex(dataset)}, focal loss with the resampling chosen by validation {tex(metric)}, "
                f"{arm_tex(combined)}, is {verdict} focal loss alone ({arm_tex(alone)}) after Holm across the data "
                f"sets: paired difference {f3(p['mean_diff'], signed=True)} (95\\% CI {interval(p)}; "
                f"wins/ties/losses {p['wins']}/{p['ties']}/{p['losses']}); the arm chosen by validation among "
                f"all nine is {arm_tex(overall)}.")
        if rows and rows[-1] == ["\\midrule"]:
            rows.pop()
        self.table("resampling", ["data set", "sampler", *[f"$\\gamma={g:g}$" for g in GAMMAS],
                                  "focal $\\gamma$", "focal $-$ CE"], rows, "llrrrcl")
        self.num("StudiesResamplingWins", str(wins))
        self.num("StudiesResamplingRun", str(sum(self.results.has(f"{d}-combos") for d in DATASETS)))
        self.files["findings_resampling.tex"] = (" ".join(findings) if findings else
                                                 "No resampling study has been run yet.") + "\n"

    # -- the confirmatory result (research/preregistration.md, research.confirm) --------------------------------
    def confirm(self) -> None:
        """The seven ``*-confirm`` studies analysed by :func:`research.confirm.run`, as pre-registered: the primary
        table (TOST verdicts), the secondary table (Holm within each study) and calibration against
        cross-entropy (Holm across the two metrics)."""
        from research import confirm as rc

        out = rc.run(self.results.folder)
        found = out["studies"]
        primary, secondary, calib, findings = [], [], [], []
        seeds = sorted({int(s) for a in found for s in a["primary"]["grid_gammas"]})
        primary += [[tex(study)] + ["--"] * 7 + [NOT_RUN] for study in out["missing"]]
        for a in found:
            p, m, metric = a["primary"], a["means"], a["metric"]
            small = sum(float(gamma_text(g)) <= 1 for g in p["grid_gammas"].values())
            primary.append([tex(a["study"]), str(_epochs(a)), tex(metric),
                            f"{m[rc.POLICY]['mean']:.3f} $\\pm$ {m[rc.POLICY]['std']:.3f}",
                            f"{m['grid']['mean']:.3f} $\\pm$ {m['grid']['std']:.3f}",
                            f3(p["mean_diff"], signed=True), interval({"low": p["ci90"][0], "high": p["ci90"][1]}),
                            f"{small}/{len(p['grid_gammas'])}", p["verdict"]])
            for r in a["secondary"]:
                star = "$^{*}$" if r["p_holm"] is not None and r["p_holm"] <= rc.ALPHA else ""
                secondary.append([tex(a["study"]), tex(r["label"]), f3(m.get(r["comparator"], {}).get("mean")),
                                  f3(r["mean_diff"], signed=True) + star,
                                  interval({"low": r["ci95"][0], "high": r["ci95"][1]}), fp(r["p_holm"])])
            secondary.append(["\\midrule"])
            for r in a["calibration"]:
                star = "$^{*}$" if r["p_holm"] is not None and r["p_holm"] <= rc.ALPHA else ""
                calib.append([tex(a["study"]), "after temperature scaling" if r["metric"] == "ece_ts" else "raw",
                              f3(r["policy_mean"]), f3(r["ce_mean"]), f3(r["mean_diff"], signed=True) + star,
                              interval({"low": r["ci95"][0], "high": r["ci95"][1]}), fp(r["p_holm"])])
        if secondary and secondary[-1] == ["\\midrule"]:
            secondary.pop()
        self.table("confirm_primary", ["study", "epochs", "metric", "FLSD-53 (1 run)", "grid (6 runs)",
                                       "difference", "90\\% CI", "grid $\\gamma \\le 1$", "verdict"],
                   primary or [["--"] * 8 + [NOT_RUN]], "lrlrrrlrl")
        self.table("confirm_secondary", ["study", "comparator", "its mean", "FLSD-53 $-$ it", "95\\% CI",
                                         "$p$ (Holm)"], secondary or [["--"] * 5 + [NOT_RUN]], "llrrlr")
        self.table("confirm_calibration", ["study", "ECE", "FLSD-53", "cross-entropy", "difference", "95\\% CI",
                                           "$p$ (Holm)"], calib or [["--"] * 6 + [NOT_RUN]], "llrrrlr")

        def names(studies) -> str:
            studies = list(studies)
            if not studies:
                return "none"
            return ", ".join(tex(x) for x in studies[:-1]) + (" and " if len(studies) > 1 else "") + tex(studies[-1])

        self.num("ConfirmStudiesPlanned", str(len(rc.STUDIES)))
        self.num("ConfirmStudiesRun", str(len(found)))
        self.num("ConfirmSeeds", str(len(seeds)) if seeds else NOT_RUN)
        self.num("ConfirmFirstSeed", str(seeds[0]) if seeds else NOT_RUN)
        self.num("ConfirmLastSeed", str(seeds[-1]) if seeds else NOT_RUN)
        self.num("ConfirmMargin", f"{rc.MARGIN:g}")
        self.num("ConfirmPolicy", tex(rc.POLICY.split("=", 1)[1]))
        self.num("ConfirmAlpha", f"{rc.ALPHA:g}")
        by_verdict = {v: [a["study"] for a in found if a["primary"]["verdict"] == v]
                      for v in ("matches", "not worse", "worse", "inconclusive")}
        for v, studies in by_verdict.items():
            key = macro_name("confirm", *v.split())
            self.num(key, str(len(studies)))
            self.num(f"{key}List", names(studies))
        longer = sorted({_epochs(a) for a in found if a["dataset"] == "digits-lt" and "epochs" in a["overrides"]})
        self.num("ConfirmDigitsLongerEpochs", " and ".join(map(str, longer)) if longer else NOT_RUN)
        ok = len(by_verdict["matches"]) + len(by_verdict["not worse"])
        self.num("ConfirmAnswer", NOT_RUN if not found else
                 "it is no worse than the grid on every confirmatory study" if ok == len(found) else
                 "it is no worse than the grid on none of the confirmatory studies" if ok == 0 else
                 "it does not save the search in general: it is no worse than the grid on some studies and worse "
                 "or inconclusive on others")
        # logit adjustment: FLSD-53 minus it in the pre-registered secondary table (Holm), and, exploratory, the
        # grid's choice minus it (a paired t interval; not part of the pre-registered analysis)
        la = "baseline=logit_adjusted"
        la_studies, la_ahead_policy, la_ahead_grid = [], [], []
        for a in found:
            row = next((r for r in a["secondary"] if r["comparator"] == la), None)
            if row is None:
                continue
            la_studies.append(a["study"])
            if row["p_holm"] is not None and row["p_holm"] <= rc.ALPHA and row["mean_diff"] < 0:
                la_ahead_policy.append(a["study"])
            units = units_from_export(export_path(self.results.folder, a["study"]), a["study"])
            grid, other = rc.grid_choice(units), rc._one_run(units, la)
            metric = a["metric"]
            d = [other[s]["test"][metric] - grid[s]["test"][metric] for s in sorted(grid) if s in other]
            t = analysis.paired_t(d, level=LEVEL)
            if t["low"] is not None and t["low"] > 0:
                la_ahead_grid.append(a["study"])
        self.num("ConfirmLogitStudies", str(len(la_studies)))
        self.num("ConfirmLogitAheadPolicy", str(len(la_ahead_policy)))
        self.num("ConfirmLogitAheadGrid", str(len(la_ahead_grid)))
        self.num("ConfirmLogitNotAheadPolicyList", names(s for s in la_studies if s not in la_ahead_policy))
        # calibration against cross-entropy, per metric: FLSD-53 lower / higher after Holm, or neither
        cal = {"ece": {"lower": [], "higher": [], "neither": []}, "ece_ts": {"lower": [], "higher": [], "neither": []}}
        for a in found:
            for r in a["calibration"]:
                sig = r["p_holm"] is not None and r["p_holm"] <= rc.ALPHA
                cal[r["metric"]]["neither" if not sig else "lower" if r["mean_diff"] < 0 else "higher"].append(
                    a["study"])
        n_cal = len([a for a in found if a["calibration"]])
        self.num("ConfirmCalibrationStudies", str(n_cal))
        self.num("ConfirmCalibrationReading", NOT_RUN if not n_cal else
                 "After temperature scaling, cross-entropy is calibrated as well as or better than FLSD-53 on every "
                 "multiclass confirmatory study" if not cal["ece_ts"]["lower"] else
                 "After temperature scaling, FLSD-53 keeps a calibration advantage over cross-entropy on some "
                 "multiclass confirmatory studies")
        for key, groups in cal.items():
            for word, studies in groups.items():
                name = macro_name("confirm", "ts" if key == "ece_ts" else "raw", "ece", word)
                self.num(name, str(len(studies)))
                self.num(f"{name}List", names(studies))
        for a in found:
            p = a["primary"]
            findings.append(
                f"{tex(a['study'])}: FLSD-53 minus the grid's choice {f3(p['mean_diff'], signed=True)}, 90\\% CI "
                f"{interval({'low': p['ci90'][0], 'high': p['ci90'][1]})}, TOST $p = {fp(p['tost_p'])}$: "
                f"\\emph{{{p['verdict']}}}.")
        self.files["findings_confirm.tex"] = (" ".join(findings) if findings else
                                              "No confirmatory study has been run yet.") + "\n"

    # -- the development / confirmation split -------------------------------------------------------------------
    def preregistration(self) -> None:
        """research.preregister's choice recomputed from the development exports: every candidate's rank per data
        set by mean validation metric, its mean rank, and the policy chosen."""
        from research import preregister

        if not all(self.results.has(d) for d in preregister.DATASETS):
            self.table("preregistration", ["policy", "status"], [["--", NOT_RUN]], "ll")
            for key in ("PreregChosen", "PreregCandidates", "PreregDatasets", "PreregChosenRank",
                        "PreregChosenGap"):
                self.num(key, NOT_RUN)
            return
        choice = preregister.choose(self.results.folder)
        rows = []
        for row in choice["ranking"]:
            rows.append([arm_tex(row["policy"]) if row["policy"] != choice["chosen"] else
                         f"\\textbf{{{arm_tex(row['policy'])}}}", f"{row['mean_rank']:.1f}"]
                        + [f"{row['ranks'][d]:g} ({row['val'][d]:.3f})" for d in choice["datasets"]]
                        + [f3(row["mean_gap"], signed=True)])
        self.table("preregistration", ["policy", "mean rank"] + [tex(d) for d in choice["datasets"]]
                   + ["val. $-$ best fixed $\\gamma$"], rows, "lr" + "r" * (len(choice["datasets"]) + 1))
        chosen = next(r for r in choice["ranking"] if r["policy"] == choice["chosen"])
        self.num("PreregChosen", tex(choice["chosen"]))
        self.num("PreregCandidates", str(len(choice["candidates"])))
        self.num("PreregDatasets", str(len(choice["datasets"])))
        self.num("PreregChosenRank", f"{chosen['mean_rank']:.1f}")
        self.num("PreregChosenGap", f3(chosen["mean_gap"], signed=True))
        seeds = sorted({s for d in preregister.DATASETS
                        for per in self.results.get(d)["units"]["units"].values() for s in per})
        self.num("DevSeeds", f"{seeds[0]}--{seeds[-1]}" if seeds else NOT_RUN)

    # -- how digits-lt's configuration was chosen (research/default_search.py) ------------------------------------
    def digits_default(self) -> None:
        """The search behind digits-lt's default configuration, from research/results/default_search.json: how
        many settings separated focal loss from cross-entropy, and the MLP at the default imbalance ratio over
        epochs (on the seeds of the search, kept apart from the studies')."""
        import json

        from research.train import DATASET_DEFAULTS

        path = DEFAULT_SEARCH
        keys = ("DefaultSearchSettings", "DefaultSearchSeparated", "DefaultSearchFocalAhead", "DefaultSearchSeeds",
                "DefaultShortlistSettings", "DefaultShortlistSeeds", "DigitsDefaultEpochs", "DigitsDefaultRho",
                "DigitsDefaultDiffSearch", "DigitsDefaultDiffShortlist")
        if not path.is_file():
            self.table("digits_default", ["epochs", "status"], [["--", NOT_RUN]], "ll")
            for key in keys:
                self.num(key, NOT_RUN)
            return
        data = json.loads(path.read_text())
        search = next(v for v in data.values() if v["candidates"] == "candidates")
        shortlist = next((v for v in data.values() if v["candidates"] == "shortlist"), None)
        epochs, rho = DATASET_DEFAULTS["digits-lt"]["epochs"], default_rho("digits-lt")

        def plain_mlp(row, e=None) -> bool:  # the MLP, default learning rate and size, at rho, e epochs
            o = row["overrides"]
            return (set(o) == {"epochs", "dataset_kwargs"} and o["dataset_kwargs"] == {"imbalance_ratio": rho}
                    and (e is None or o["epochs"] == e))

        def seed_text(seeds) -> str:
            return f"{min(seeds)}--{max(seeds)}"

        rows = sorted((r for r in search["rows"] if plain_mlp(r)), key=lambda r: r["overrides"]["epochs"])
        self.table("digits_default", ["epochs", "tuned $\\gamma$", "focal $-$ CE (SE)", "focal better / worse",
                                      "separated"],
                   [[str(r["overrides"]["epochs"]) + (" (chosen)" if r["overrides"]["epochs"] == epochs else ""),
                     f"{r['gamma']:g}", f"{r['difference']:+.3f} ({r['standard_error']:.3f})",
                     f"{r['wins']} / {r['losses']}", "yes" if r["separated"] else "no"] for r in rows],
                   "lrrcl")
        sep = [r for r in search["rows"] if r["separated"]]
        self.num("DefaultSearchSettings", str(len(search["rows"])))
        self.num("DefaultSearchSeparated", str(len(sep)))
        self.num("DefaultSearchFocalAhead", str(sum(r["difference"] > 0 for r in sep)))
        self.num("DefaultSearchSeeds", seed_text(search["seeds"]))
        self.num("DefaultShortlistSettings", str(len(shortlist["rows"])) if shortlist else NOT_RUN)
        self.num("DefaultShortlistSeeds", seed_text(shortlist["seeds"]) if shortlist else NOT_RUN)
        self.num("DigitsDefaultEpochs", str(epochs))
        self.num("DigitsDefaultRho", f"{rho:g}")
        chosen = [next((r for r in v["rows"] if plain_mlp(r, epochs)), None) for v in (search, shortlist)]
        self.num("DigitsDefaultDiffSearch", f"{chosen[0]['difference']:+.3f}" if chosen[0] else NOT_RUN)
        self.num("DigitsDefaultDiffShortlist", f"{chosen[1]['difference']:+.3f}" if chosen[1] else NOT_RUN)

    # -- issue 16: a focal term on logit-adjusted logits (exploratory) ------------------------------------------
    def prior(self) -> None:
        """The ``*-prior`` studies analysed by :func:`research.prior.run`: each arm minus logit adjustment alone on
        the headline metric (paired t 95% intervals, Holm across the arms of a study), and how many of a study's
        arms are better or worse than LA alone after Holm."""
        from research import prior as rp

        out = rp.run(self.results.folder)
        arms = (("la+grid", "grid"), ("la+gamma=tpe", "tuned"), ("la+policy=flsd53", "FLSD-53"),
                ("baseline=cb_ce", "CB CE"))
        rows = [[tex(study)] + ["--"] * (len(arms) + 2) + [NOT_RUN] for study in out["missing"] if study in rp.STUDIES]
        better = worse = compared = 0
        for st in out["studies"]:
            metric, ref = st["metric"], st["reference"]["mean"][st["metric"]]
            cells = []
            for arm, _ in arms:
                r = next((x for x in st["rows"] if x["arm"] == arm), None)
                d = None if r is None else r["diff"][metric]
                star = "$^{*}$" if d and d.get("p_holm") is not None and d["p_holm"] <= rp.ALPHA else ""
                cells.append("--" if d is None or d["mean"] is None else
                             f3(d["mean"], signed=True) + star + " " + interval(d))
            verdicts = [rp._verdict(x["diff"][metric], True) for x in st["rows"]
                        if x["arm"].startswith("la+")]
            better, worse = better + verdicts.count("better"), worse + verdicts.count("worse")
            compared += len(verdicts)
            rows.append([tex(rp.study_label(st)), tex(metric), f3(ref)] + cells +
                        [f"{verdicts.count('better')} / {verdicts.count('worse')} of {len(verdicts)}"])
        self.table("prior", ["study", "metric", "LA alone"] + [f"{label} $-$ LA" for _, label in arms] +
                   ["focal arms better / worse"], rows, "ll" + "r" * (len(arms) + 1) + "r")
        self.num("PriorStudies", str(len(out["studies"])))
        self.num("PriorArmsCompared", str(compared))
        self.num("PriorArmsBetter", str(better))
        self.num("PriorArmsWorse", str(worse))
        not_run = ", ".join(f"\\texttt{{{s}}}" for s in out["missing"])
        self.num("PriorNotRunClause", f"; defined but not run for compute: {not_run}" if not_run else "")
        self.prior_learned(rp, out)

    def prior_learned(self, rp, out: dict) -> None:
        """The fair studies on LA: the learned controllers (``*-prior-learned``) and AdaFocal reading the validation
        set or the held-out slice (``*-adafocal``): each arm minus LA alone on the headline metric, Holm across the
        arms of a study; counts of the learned controllers' arms better / worse after Holm, and AdaFocal's
        differences."""
        rows, better, worse = [], 0, 0
        for learned, st in [(True, x) for x in out["learned"]] + [(False, x) for x in out["adafocal"]]:
            metric = st["metric"]
            for i, r in enumerate(st["rows"]):
                d = r["diff"][metric]
                star = "$^{*}$" if d.get("p_holm") is not None and d["p_holm"] <= rp.ALPHA else ""
                if learned:
                    verdict = rp._verdict(d, True)
                    better, worse = better + (verdict == "better"), worse + (verdict == "worse")
                rows.append([tex(st["study"]) if i == 0 else "", f3(st["reference"]["mean"][metric]) if i == 0 else "",
                             tex(r["arm"].removeprefix("la+policy=")), f"{r['runs_per_seed']:g}",
                             "--" if d["mean"] is None else f3(d["mean"], signed=True) + star + " " + interval(d)])
        self.table("prior_learned", ["study", "LA alone", "controller on LA", "runs", "$-$ LA"], rows, "lrlrr")
        self.num("PriorLearnedStudies", str(len(out["learned"])))
        self.num("PriorLearnedCompared", str(sum(len(st["rows"]) for st in out["learned"])))
        self.num("PriorLearnedBetter", str(better))
        self.num("PriorLearnedWorse", str(worse))
        self.prior_replication(rp, out)

    def prior_replication(self, rp, out: dict) -> None:
        """AdaFocal on LA in the fair studies: LA alone's headline metric and AdaFocal's differences from it reading
        the held-out slice or the validation set, at 60 and 180 epochs (exploratory); and the pre-registered
        replication (research/preregistration_adafocal.md): per [slice] arm the difference from LA alone, its
        interval, Holm-adjusted p and verdict."""
        studies = {st["study"]: st for st in out["adafocal"]}
        for study, key in (("gauss-lt-prior-adafocal", "Default"), ("gauss-lt-prior-long-adafocal", "Long")):
            st = studies.get(study)
            metric = st and st["metric"]
            self.num(f"AdaFocal{key}La", NOT_RUN if st is None else f3(st["reference"]["mean"][metric]))
            for arm, part in (("la+policy=adafocal[slice]", "Slice"), ("la+policy=adafocal", "Val")):
                d = None if st is None else next(r for r in st["rows"] if r["arm"] == arm)["diff"][metric]
                self.num(f"AdaFocal{key}{part}Diff", NOT_RUN if d is None else f3(d["mean"], signed=True))
                self.num(f"AdaFocal{key}{part}CI", NOT_RUN if d is None else interval(d))
        names = {"la+policy=adafocal[slice]": "Default", "la+policy=adafocal+tpe[slice]": "Tuned"}
        rows = {r["arm"]: r for r in out.get("replication") or []}
        for arm, key in names.items():
            r = rows.get(arm)
            self.num(f"Replication{key}Diff", NOT_RUN if r is None else f3(r["mean"], signed=True))
            self.num(f"Replication{key}CI", NOT_RUN if r is None else interval(r))
            self.num(f"Replication{key}HolmP", NOT_RUN if r is None or r["p_holm"] is None else
                     "$< 0.001$" if r["p_holm"] < 0.001 else f"$= {r['p_holm']:.3f}$")
            self.num(f"Replication{key}Verdict", NOT_RUN if r is None else
                     ("replicates" if r["replicates"] else "does not replicate"))

    # -- reversals: what the development studies showed and why it is withdrawn ---------------------------------
    def reversals(self) -> None:
        """gammanet's gauss-lt result (meta-trained on the balanced validation set in the committed study) and
        the per-epoch MedianPruner's effect on the TPE-tuned gamma there, from the gauss-lt export."""
        from research.train import DEFAULT_HOLDOUT

        self.num("HoldoutFraction", f"{DEFAULT_HOLDOUT:g}")
        keys = ("GaussLtGammanetDiff", "GaussLtGammanetCI", "GaussLtTpeTrials", "GaussLtTpePruned",
                "GaussLtTpeSmallGamma", "GaussLtTpeSmallGammaPruned", "PrunedGammaBound")
        r = self.results.get("gauss-lt")
        if r is None or r["analysis"]["reference"] is None:
            for key in keys:
                self.num(key, NOT_RUN)
            return
        t = paired(r, "policy=gammanet", r["analysis"]["reference"])
        self.num("GaussLtGammanetDiff", f3(t["mean_diff"], signed=True))
        self.num("GaussLtGammanetCI", interval(t))
        trials = [x for x in read_export(export_path(self.results.folder, "gauss-lt"))["trials"]
                  if x["arm"] == "gamma=tpe"]
        small = [x for x in trials if x["params"]["gamma"] < SMALL_GAMMA]
        self.num("GaussLtTpeTrials", str(len(trials)))
        self.num("GaussLtTpePruned", str(sum(x["state"] == "PRUNED" for x in trials)))
        self.num("GaussLtTpeSmallGamma", str(len(small)))
        self.num("GaussLtTpeSmallGammaPruned", str(sum(x["state"] == "PRUNED" for x in small)))
        self.num("PrunedGammaBound", f"{SMALL_GAMMA:g}")
        self.gammanet_rerun()

    def gammanet_rerun(self) -> None:
        """research.fair_arms's gammanet measurement on gauss-lt (research/results/fair_arms_gammanet.json):
        gammanet with each source of meta data and the fine-tuning control against cross-entropy, every arm on the
        same samples; paired t 95% intervals, Holm across the measurement's four comparisons."""
        import json

        from research.fair_arms import gammanet_tests

        variants = {"Slice": "gammanet (training slice)", "Val": "gammanet (balanced validation)",
                    "Finetune": "fine-tune on balanced validation", "Fixed": "fixed gamma 2"}
        keys = [f"GammanetRerun{k}{part}" for k in variants for part in ("Diff", "CI", "Wins", "HolmP")]
        keys += ["GammanetRerunSeeds"]
        data = json.loads(FAIR_GAMMANET.read_text()) if FAIR_GAMMANET.is_file() else None
        runs = (data or {}).get("results", {}).get("gauss-lt")
        if runs is None:
            for key in keys:
                self.num(key, NOT_RUN)
            return
        tests = gammanet_tests(runs)
        for k, name in variants.items():
            t, diffs = tests[name]["t"], tests[name]["diffs"]
            self.num(f"GammanetRerun{k}Diff", f3(t["mean"], signed=True))
            self.num(f"GammanetRerun{k}CI", interval(t))
            self.num(f"GammanetRerun{k}Wins", f"{sum(d > 0 for d in diffs)} of {len(diffs)}")
            self.num(f"GammanetRerun{k}HolmP", fp(tests[name]["p_holm"]))
        self.num("GammanetRerunSeeds", str(len(runs["cross-entropy"]["runs"])))

    # -- figures ----------------------------------------------------------------------------------------------
    def _rho_figure(self, grid_rows, grid_arms) -> None:
        datasets = list(dict.fromkeys(d for d, _, _ in grid_rows))
        fig, axes = _subplots(len(datasets))
        for ax, dataset in zip(axes, datasets):
            drawn = False
            for i, (d, rho, cell) in enumerate(grid_rows):
                if d != dataset or cell is None:
                    continue
                pts = [(float(gamma_text(g)), cell["means"][g]) for g in grid_arms if cell["means"].get(g) is not None]
                if pts:
                    ax.plot(*zip(*pts), marker="o", color=f"C{i % 10}", label=f"rho={rho}")
                    if cell["ref"]:
                        ax.plot([float(gamma_text(cell["ref"]))], [cell["means"][cell["ref"]]], marker="*",
                                ms=12, color=f"C{i % 10}", ls="")
                    drawn = True
            ax.set(title=dataset, xlabel="gamma", ylabel="test balanced accuracy")
            if drawn:
                ax.legend(fontsize=7)
            else:
                _empty(ax)
        self.figures["rho_grid.pdf"] = fig

    def tuning_figure(self) -> None:
        fig, axes = _subplots(len(MAIN_STUDIES))
        for ax, study in zip(axes, MAIN_STUDIES):
            r = self.results.get(study)
            ax.set(title=study, xlabel="runs (trials)")
            if r is None:
                _empty(ax)
                continue
            tc, metric = r["analysis"]["tuning_cost"], r["units"]["metric"]
            ax.set_ylabel(f"validation {metric}")
            for arm, rows in tc["curves"].items():
                pts = [(c["trials"], c["best_val_mean"]) for c in rows if c["best_val_mean"] is not None]
                if pts:
                    ax.plot(*zip(*pts), marker="o", ms=3, color="C0", label=f"{arm} (best so far)")
            if tc["grid"]:
                ax.plot([tc["grid"]["trials"]], [tc["grid"]["val_mean"]], marker="D", color="C2", ls="",
                        label=tc["grid"]["arm"])
            ax.legend(fontsize=6)
        self.figures["tuning_cost.pdf"] = fig

    def gamma_figure(self) -> None:
        fig, axes = _subplots(len(MAIN_STUDIES))
        for ax, study in zip(axes, MAIN_STUDIES):
            r = self.results.get(study)
            ax.set(title=study, xlabel="epoch", ylabel="gamma (mean over classes and bins)")
            traj = (r["analysis"]["gamma_trajectories"] if r else {}) or {}
            drawn = 0
            for i, arm in enumerate(a for a in traj if not a.endswith("+tpe")):
                series = traj[arm][min(traj[arm], key=int)]  # the lowest seed that stored one
                ax.plot([p[0] for p in series], [p[1] for p in series], lw=1, color=f"C{i % 10}",
                        ls="-" if i < 10 else "--", label=arm)
                drawn += 1
            if drawn:
                ax.legend(fontsize=5, ncol=2)
            else:
                _empty(ax, NOT_RUN if r is None else "no gamma trajectories stored")
        self.figures["gamma_trajectories.pdf"] = fig

    # -- everything -------------------------------------------------------------------------------------------
    def build(self, *, figures: bool = True) -> Assets:
        """Computes every table, macro and finding, and the figures unless ``figures=False``."""
        self.figures: dict = {}
        self._draw = figures
        self.setup()
        self.confirm()
        self.preregistration()
        self.digits_default()
        self.reversals()
        self.prior()
        self.tuning_cost()
        self.rho()
        self.calibration()
        self.combinations()
        self.resampling()
        if figures:
            self.tuning_figure()
            self.gamma_figure()
        from sweeps.spec import GAMMA_GRID

        self.num("HolmAlpha", f"{ALPHA:g}")
        self.num("GammaGrid", ", ".join(f"{g:g}" for g in GAMMA_GRID))
        self.num("RhoValues", ", ".join(str(r) for r in dict.fromkeys(r for _, r, _ in rho_studies())))
        seeds = [len({s for per in r["units"]["units"].values() for s in per})
                 for study in MAIN_STUDIES + tuple(n for _, _, n in rho_studies())
                 if (r := self.results.get(study)) is not None]
        self.num("NumSeedsMin", str(min(seeds)) if seeds else NOT_RUN)
        self.num("NumSeedsMax", str(max(seeds)) if seeds else NOT_RUN)
        self.num("WilcoxonMinP", f"{analysis.wilcoxon_min_p(max(seeds)):.4g}" if seeds else NOT_RUN)
        return self

    def write(self, out) -> list[Path]:
        out = Path(out)
        for sub in GENERATED:
            (out / sub).mkdir(parents=True, exist_ok=True)
        header = "% generated by `python -m paper.make_assets` from sweeps/results/trials; do not edit\n"
        written = []
        numbers = "".join(f"\\newcommand{{\\{k}}}{{{v}}}\n" for k, v in self.macros.items())
        texts = {"numbers.tex": numbers, **self.files}
        for stale in (out / "generated").glob("*.tex"):  # a table no longer made: remove it, if it is ours
            if stale.name not in texts and stale.read_text().startswith(header):
                stale.unlink()
        for name, text in texts.items():
            path = out / "generated" / name
            path.write_text(header + text)
            written.append(path)
        if not self._draw:
            return written
        import matplotlib.pyplot as plt

        for stale in (out / "figures").glob("*.pdf"):
            if stale.name not in self.figures:
                stale.unlink()
        for name, fig in self.figures.items():
            path = out / "figures" / name
            fig.tight_layout()
            # no CreationDate: the same data and matplotlib give the same bytes
            fig.savefig(path, format="pdf", metadata={"CreationDate": None, "Creator": None, "Producer": None})
            plt.close(fig)
            written.append(path)
        return written


def _epochs(study: dict) -> int:
    """The epochs of a research.confirm study record: its override, else the data set's default."""
    from research.train import DATASET_DEFAULTS

    return study["overrides"].get("epochs", DATASET_DEFAULTS[study["dataset"]]["epochs"])


def _rho_text(manifest: dict) -> str:
    rho = (manifest.get("dataset_kwargs") or {}).get("imbalance_ratio")
    if rho is None:
        rho = default_rho(manifest["dataset"])
    return "--" if rho is None else f"{rho:g}"


def default_rho(dataset: str):
    """The data set builder's default ``imbalance_ratio`` (research.datasets), or None."""
    import inspect

    import research.datasets as ds

    fn = getattr(ds, dataset.replace("-", "_"), None)
    if fn is None:
        return None
    p = inspect.signature(fn).parameters.get("imbalance_ratio")
    return None if p is None or p.default is inspect.Parameter.empty else float(p.default)


def _subplots(n: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.hashsalt"] = "adaptive_focal"
    cols = min(3, max(1, n))
    rows = max(1, math.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.9 * rows), squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_axis_off()
    return fig, flat[:n]


def _empty(ax, text: str = NOT_RUN) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def make_assets(results="sweeps/results/trials", out="paper", *, figures: bool = True) -> list[Path]:
    """Builds every asset from the exports in ``results`` and writes them under ``out`` (the figures only when
    ``figures``); returns the paths."""
    return Assets(Results(results)).build(figures=figures).write(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m paper.make_assets", description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="sweeps/results/trials",
                        help="folder of exported studies <study>.json.gz (default: %(default)s)")
    parser.add_argument("--out", default="paper", help="writes OUT/generated and OUT/figures (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        written = make_assets(args.results, args.out)
    except ValueError as err:
        print(f"paper.make_assets: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {len(written)} files under {args.out}/generated and {args.out}/figures")
    return 0


if __name__ == "__main__":
    sys.exit(main())
