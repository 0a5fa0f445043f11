"""Tables, numbers and figures of the paper, from the committed sweep exports alone.

Reads ``<results>/<study>.json.gz`` (written by :mod:`adaptive_focal.compare.export`) and writes

- ``<out>/generated/*.tex``: LaTeX tables (``\\input`` into ``main.tex``), ``numbers.tex`` (a ``\\newcommand`` per
  number or result-dependent word quoted in the text, letters-only names such as ``\\DigitsLtBestFixedGamma``)
  and ``findings_*.tex`` (sentences whose content depends on the results);
- ``<out>/figures/*.pdf``: matplotlib figures (Agg; no creation date in the PDF metadata, so reruns with the same
  matplotlib give the same bytes).

A study without an export is a "not run" row (the GPU data sets CIFAR-10-LT / CIFAR-100-LT: "not run (needs a
GPU)"), never an error, so the pipeline works with partial results. Every number is a mean over seeds of the trial
each seed selects (the best validation headline metric; :func:`adaptive_focal.compare.results.selected`); paired
comparisons are :func:`adaptive_focal.compare.analysis.paired_test` against the best fixed gamma (highest mean
*validation* metric), as in the sweep report.

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
#: per-study macros of question (a), defined as "not run" for a study without an export
TUNING_MACROS = ("BestFixedGamma", "BestFixedTest", "TunedGammaTest", "TunedGammaRuns", "BestPolicy",
                 "BestPolicyTest", "BestPolicyDiff", "PoliciesAboveFixed", "Policies", "PoliciesBelowFixed")
N_BOOT = analysis.N_BOOT
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
    """The exports found in ``folder``: per study its units (:func:`adaptive_focal.compare.results.load_units`), its
    analysis (:func:`adaptive_focal.compare.analysis.analyse`) and the selected trial per arm and seed."""

    def __init__(self, folder, *, n_boot: int = N_BOOT) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise ValueError(f"results folder {str(self.folder)!r} does not exist; export the sweeps with "
                             "`adaptive-focal sweep export <study> --out <folder>`")
        self.n_boot = n_boot
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
                                      "selected": selected(units),
                                      "analysis": analysis.analyse(units, n_boot=self.n_boot)}
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
    """:func:`adaptive_focal.compare.analysis.paired_test` of ``arm`` minus ``reference`` on test ``key`` (default:
    the headline metric), paired by seed; the bootstrap is seeded as in the report."""
    import zlib

    key = key or r["units"]["metric"]
    mine, ref = metric_values(r, arm, key), metric_values(r, reference, key)
    seeds = sorted(set(mine) & set(ref))
    seed = (analysis.BOOT_SEED + zlib.crc32(arm.encode())) % 2 ** 32
    return {"seeds": seeds, **analysis.paired_test([mine[s] - ref[s] for s in seeds], n_boot=r["analysis"]["n_boot"],
                                                 seed=seed)}


def _paired_cell(p: dict) -> str:
    if not p["n"]:
        return "--"
    star = "$^{*}$" if p["ci_low"] is not None and (p["ci_low"] > 0 or p["ci_high"] < 0) else ""
    return f"{p['mean_diff']:+.3f}{star} ({p['wins']}/{p['ties']}/{p['losses']})"


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

    # -- (a) tuning cost --------------------------------------------------------------------------------------
    def tuning_cost(self) -> None:
        rows, sentences, policy_rows, fixed_wins = [], [], {}, []
        run, above_studies, below_studies = [], 0, 0
        for study in MAIN_STUDIES:
            r = self.results.get(study)
            mac = macro_name(study)
            if r is None:
                rows.append([tex(study)] + ["--"] * 6 + [NOT_RUN])
                for key in TUNING_MACROS:
                    self.num(f"{mac}{key}", NOT_RUN)
                continue
            run.append(study)
            a = r["analysis"]
            ref = a["reference"]
            policies = arms_of(r, "policy")
            val_mean = {p: _mean(val_values(r, p).values()) for p in policies}
            ranked = [p for p in policies if val_mean[p] is not None]
            best_policy = max(ranked, key=lambda p: val_mean[p]) if ranked else None
            tuned = arms_of(r, "tuned_gamma")
            tpe = tuned[0] if tuned else None
            curve = a["tuning_cost"]["curves"].get(tpe, []) if tpe else []
            budget = max((len(ts) for ts in r["units"]["units"][tpe].values()), default=0) if tpe else 0
            reach = None
            if best_policy is not None:
                reach = next((c["trials"] for c in curve if c["best_val_mean"] is not None
                              and c["best_val_mean"] >= val_mean[best_policy]), None)
            grid = len(arms_of(r, "fixed"))
            ref_test = metric_values(r, ref, r["units"]["metric"]) if ref else {}
            pol_test = metric_values(r, best_policy, r["units"]["metric"]) if best_policy else {}
            tpe_test = metric_values(r, tpe, r["units"]["metric"]) if tpe else {}
            pp = paired(r, best_policy, ref) if best_policy and ref else None
            reach_text = (str(reach) if reach is not None else f"$>{budget}$") if best_policy and tpe else "--"
            rows.append([tex(study), f"{arm_tex(ref)} ({grid} runs)" if ref else "--", pm(ref_test.values()),
                         f"{pm(tpe_test.values())} ({budget} runs)" if tpe else "--",
                         arm_tex(best_policy) if best_policy else "--", pm(pol_test.values()),
                         _paired_cell(pp) if pp else "--", reach_text])
            better = sum(1 for p in policies
                         if _mean(metric_values(r, p, r["units"]["metric"]).values()) is not None
                         and _mean(ref_test.values()) is not None
                         and _mean(metric_values(r, p, r["units"]["metric"]).values()) > _mean(ref_test.values()))
            self.num(f"{mac}BestFixedGamma", gamma_text(ref) if ref else "--")
            self.num(f"{mac}BestFixedTest", _mean(ref_test.values()))
            self.num(f"{mac}TunedGammaTest", _mean(tpe_test.values()))
            self.num(f"{mac}TunedGammaRuns", str(budget))
            self.num(f"{mac}BestPolicy", best_policy.split("=", 1)[1] if best_policy else "--")
            self.num(f"{mac}BestPolicyTest", _mean(pol_test.values()))
            self.num(f"{mac}BestPolicyDiff", f3(pp["mean_diff"], signed=True) if pp else "--")
            self.num(f"{mac}PoliciesAboveFixed", str(better))
            self.num(f"{mac}Policies", str(len(policies)))
            if pp and pp["ci_low"] is not None:
                above_studies += pp["ci_low"] > 0
                below_studies += pp["ci_high"] < 0
            if pp and pp["n"]:
                ci = f"[{pp['ci_low']:+.3f}, {pp['ci_high']:+.3f}]"
                verdict = ("above" if pp["ci_low"] > 0 else "below" if pp["ci_high"] < 0
                           else "not distinguishable from")
                sentences.append(
                    f"On {tex(study)} the default policy with the best validation {tex(r['units']['metric'])}, "
                    f"{arm_tex(best_policy)}, is {verdict} the best fixed gamma ({gamma_text(ref)}) after one run: "
                    f"paired difference {pp['mean_diff']:+.3f} (95\\% bootstrap CI {ci}; "
                    f"wins/ties/losses {pp['wins']}/{pp['ties']}/{pp['losses']} over {pp['n']} seeds; "
                    f"Wilcoxon $p = {fp(pp['wilcoxon_p'])}$). {better} of {len(policies)} default policies have a "
                    f"higher mean test {tex(r['units']['metric'])} than the best fixed gamma"
                    + (f"; the TPE-tuned gamma's best-so-far validation metric reaches that policy's level after "
                       f"{reach} of {budget} runs." if reach is not None else
                       f"; the TPE-tuned gamma does not reach that policy's validation level within its {budget} "
                       "runs." if tpe else "."))
            for p in policies + arms_of(r, "tuned_policy"):
                policy_rows.setdefault(p, {})[study] = paired(r, p, ref) if ref else None
            below = [p for p in policies if (t := policy_rows[p][study]) and t["ci_high"] is not None
                     and t["ci_high"] < 0]
            self.num(f"{mac}PoliciesBelowFixed", str(len(below)))
            if ref is None:
                continue
            fixed_wins.append(
                f"on {tex(study)}, {len(below)} of {len(policies)} default policies fall below the best fixed gamma "
                f"({gamma_text(ref)}) with a paired 95\\% CI below 0"
                + (f" ({', '.join(arm_tex(p) for p in below)})" if below else "")
                + (f", and the TPE-tuned gamma ({budget} runs per seed) reaches a mean test "
                   f"{tex(r['units']['metric'])} of {_mean(tpe_test.values()):.3f} against the grid choice's "
                   f"{_mean(ref_test.values()):.3f}" if tpe and tpe_test and ref_test else ""))
        self.table("tuning_cost", ["data set", "best fixed $\\gamma$ (grid)", "test", "TPE $\\gamma$ test (cost)",
                                   "best default policy", "test (1 run)", "diff. (W/T/L)",
                                   "TPE runs to match"], rows, "lllllllr")
        self.files["findings_a.tex"] = (" ".join(sentences) if sentences else
                                        "No main-comparison study has been run yet.") + "\n"
        self.num("StudiesPolicyAbove", str(above_studies))
        self.num("StudiesPolicyBelow", str(below_studies))
        self.files["findings_fixed_wins.tex"] = (
            ("Where fixed gamma wins: " + "; ".join(fixed_wins) + ".") if fixed_wins else
            "No main-comparison study has been run yet.") + "\n"
        # the policies against the best fixed gamma, one column per data set run
        header = ["arm"] + [tex(s) for s in run]
        body = []
        for arm in sorted(policy_rows, key=lambda a: (a.endswith("+tpe"), a)):
            body.append([arm_tex(arm)] + [_paired_cell(policy_rows[arm][s]) if policy_rows[arm].get(s) else "--"
                                          for s in run])
        if not run:
            header, body = ["arm", "status"], [["--", NOT_RUN]]
        self.table("policies", header, body, "l" + "r" * (len(header) - 1))

    # -- (b) best fixed gamma against the imbalance ratio -----------------------------------------------------
    def rho(self) -> None:
        best_rows, grid_rows, findings, series = [], [], [], {}
        grid_arms: list[str] = []
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
            pp = paired(r, ref, ce) if ref and ce and ref != ce else None
            best_test = max((g for g in fixed if means[g] is not None), key=lambda g: means[g], default=None)
            best_rows.append([tex(dataset), str(rho), gamma_text(ref) if ref else "--",
                              pm(metric_values(r, ref, metric).values()) if ref else "--",
                              gamma_text(best_test) if best_test else "--",
                              pm(metric_values(r, ce, metric).values()) if ce else "--",
                              (_paired_cell(pp) if pp else ("0 (is CE)" if ref == ce else "--")),
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
                tests = {a: t for a, t in tests.items() if t["ci_low"] is not None}
                below = [a for a, t in tests.items() if t["ci_high"] < 0]
                above = [a for a, t in tests.items() if t["ci_low"] > 0]
                improve, worse = (below, above) if lower_better else (above, below)
                what = "test ECE" if key == "ece" else "few-shot recall"
                findings.append(
                    f"On {tex(study)}, {what}: best fixed gamma ({gamma_text(ref)}) {means[ref]:.3f}, best arm "
                    f"{arm_tex(best)} {means[best]:.3f}; {len(improve)} of {len(policies)} default policies "
                    f"{'lower' if lower_better else 'raise'} it with a paired 95\\% CI excluding 0"
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
            for arm in COMBINATIONS:
                if arm not in r["units"]["arms"]:
                    rows.append([tex(study), arm_tex(arm), "--", "--", "--", "--", "not applicable"])
                    continue
                p = paired(r, arm, ref)
                ci = "--" if p["ci_low"] is None else f"[{p['ci_low']:+.3f}, {p['ci_high']:+.3f}]"
                rows.append([tex(study), arm_tex(arm), pm(metric_values(r, arm, metric).values()),
                             f3(p["mean_diff"], signed=True), ci, f"{p['wins']}/{p['ties']}/{p['losses']}",
                             f"$p={fp(p['wilcoxon_p'])}$"])
                if p["ci_low"] is not None and p["ci_low"] > 0:
                    wins.append(arm)
            rows.append(["\\midrule"])
            combo_studies += bool(wins)
            if wins:
                verb = "beats" if len(wins) == 1 else "beat"
                findings.append(f"On {tex(study)}, {', '.join(arm_tex(a) for a in wins)} {verb} focal loss alone "
                                "(paired 95\\% CI above 0).")
            else:
                findings.append(f"On {tex(study)}, no combination beats focal loss alone with a paired 95\\% CI "
                                "above 0.")
        if rows and rows[-1] == ["\\midrule"]:
            rows.pop()
        self.table("combinations", ["data set", "method", "test", "diff.", "95\\% CI", "W/T/L", "Wilcoxon"],
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

        rows, findings, wins = [], [], 0
        for dataset in DATASETS:
            r = self.results.get(f"{dataset}-combos")
            if r is None:
                rows.append([tex(dataset), "--", "--", "--", "--", "--", NOT_RUN])
                continue
            metric = r["units"]["metric"]
            for sampler in SAMPLERS:
                cells = [pm(metric_values(r, arm(g, sampler), metric).values()) for g in GAMMAS]
                focal = by_val(r, [arm(g, sampler) for g in GAMMAS if g > 0])
                p = paired(r, focal, arm(0.0, sampler)) if focal else {"n": 0}
                rows.append([tex(dataset), tex(sampler), *cells,
                             focal.split("=", 1)[1].split("+", 1)[0] if focal else "--", _paired_cell(p)])
            rows.append(["\\midrule"])
            alone = by_val(r, [arm(g, "none") for g in GAMMAS if g > 0])
            combined = by_val(r, [arm(g, s) for s in SAMPLERS if s != "none" for g in GAMMAS if g > 0])
            overall = by_val(r, [arm(g, s) for s in SAMPLERS for g in GAMMAS])
            if alone is None or combined is None:
                continue
            p = paired(r, combined, alone)
            ci = "--" if p["ci_low"] is None else f"[{p['ci_low']:+.3f}, {p['ci_high']:+.3f}]"
            verdict = ("better than" if p["ci_low"] is not None and p["ci_low"] > 0 else
                       "worse than" if p["ci_high"] is not None and p["ci_high"] < 0 else "within noise of")
            wins += verdict == "better than"
            findings.append(
                f"On {tex(dataset)}, focal loss with the resampling chosen by validation {tex(metric)}, "
                f"{arm_tex(combined)}, is {verdict} focal loss alone ({arm_tex(alone)}): paired difference "
                f"{f3(p['mean_diff'], signed=True)} (95\\% CI {ci}; wins/ties/losses "
                f"{p['wins']}/{p['ties']}/{p['losses']}); the arm chosen by validation among all nine is "
                f"{arm_tex(overall)}.")
        if rows and rows[-1] == ["\\midrule"]:
            rows.pop()
        self.table("resampling", ["data set", "sampler", *[f"$\\gamma={g:g}$" for g in GAMMAS],
                                  "focal $\\gamma$", "focal $-$ CE"], rows, "llrrrcl")
        self.num("StudiesResamplingWins", str(wins))
        self.num("StudiesResamplingRun", str(sum(self.results.has(f"{d}-combos") for d in DATASETS)))
        self.files["findings_resampling.tex"] = (" ".join(findings) if findings else
                                                 "No resampling study has been run yet.") + "\n"

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
            if tc["defaults"]:
                best = max(tc["defaults"], key=lambda d: d["val_mean"])
                ax.axhline(best["val_mean"], color="C3", ls="--", lw=1, label=f"{best['arm']} (1 run)")
                ax.plot([1], [best["val_mean"]], marker="s", color="C3")
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
        self.tuning_cost()
        self.rho()
        self.calibration()
        self.combinations()
        self.resampling()
        if figures:
            self.tuning_figure()
            self.gamma_figure()
        from sweeps.spec import GAMMA_GRID

        self.num("NumBoot", str(self.results.n_boot))
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


def make_assets(results="sweeps/results/trials", out="paper", *, n_boot: int = N_BOOT,
                figures: bool = True) -> list[Path]:
    """Builds every asset from the exports in ``results`` and writes them under ``out`` (the figures only when
    ``figures``); returns the paths."""
    return Assets(Results(results, n_boot=n_boot)).build(figures=figures).write(out)


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
