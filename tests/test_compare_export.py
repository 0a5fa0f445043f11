"""adaptive_focal.compare.export: a study exported from its journal gives the same units, analysis and report as
the journal itself (a study run end to end, a hand-made study with pruned trials, a missing seed and gamma
trajectories, and an arm tuned across seeds); exports are byte-for-byte reproducible; bad input is a clear error."""

import gzip
import json

import pytest

optuna = pytest.importorskip("optuna")
pytest.importorskip("scipy")

from adaptive_focal import cli  # noqa: E402
from adaptive_focal.compare import analysis, export, report, results, runner  # noqa: E402
from adaptive_focal.compare.storage import open_storage  # noqa: E402
from helpers.handmade import write_handmade  # noqa: E402
from helpers.studies import linear_study, opts  # noqa: E402


@pytest.fixture(scope="module")
def handmade(tmp_path_factory):
    return write_handmade(tmp_path_factory.mktemp("handmade") / "hm.log")


@pytest.fixture(scope="module")
def small_journal(tmp_path_factory):
    study = linear_study(name="small-export", arms=("gamma=0", "gamma=2", "gamma=tpe", "policy=automated"), seeds=2,
                         trials=3)
    log = tmp_path_factory.mktemp("export") / "small.log"
    summary = runner.run(study, opts(log))
    assert summary["errors"] == []
    return str(log)


def _same_analysis(storage_a, storage_b, name):
    a = analysis.analyse(results.load_units(storage_a, name), n_boot=300)
    b = analysis.analyse(results.load_units(storage_b, name), n_boot=300)
    assert json.dumps(a, default=str) == json.dumps(b, default=str)
    return a


def test_round_trip(small_journal, tmp_path):
    path = export.export_study(small_journal, "small-export", tmp_path)
    assert path == tmp_path / "small-export.json.gz"
    st = open_storage(small_journal)
    assert results.load_units(st, "small-export") == results.load_units(str(path), "small-export")
    a = _same_analysis(st, str(path), "small-export")
    assert a["reference"] == "gamma=0" and a["gamma_trajectories"].get("policy=automated")

    data = export.read_export(path)
    assert data["format"] == 1  # no arm tuned across seeds: the format-1 layout
    assert data["arm_order"] == ["gamma=0", "gamma=2", "gamma=tpe", "policy=automated"]
    assert data["manifest"]["objective"] == "helpers.objectives:linear" and data["manifest"]["metric"] == "score"
    done = [t for t in data["trials"] if t["state"] == "COMPLETE"]
    assert done and all(t["versions"]["torch"] and t["config"]["loss"] == "focal" for t in done)
    assert all(set(t["params"]) == {"gamma"} for t in data["trials"] if t["arm"] == "gamma=tpe")

    # the report reads the export as a storage: a file, or a folder of exports
    text = report.report("small-export", small_journal)
    assert report.report("small-export", str(path)) == text
    md_journal, _, _ = report.run_report(["small-export"], small_journal, n_boot=300)
    md_folder, _, _ = report.run_report(["small-export"], str(tmp_path), n_boot=300)
    assert md_folder == md_journal


def test_export_is_reproducible_and_compact(small_journal, tmp_path):
    one = export.export_study(small_journal, "small-export", tmp_path / "a").read_bytes()
    two = export.export_study(small_journal, "small-export", tmp_path / "b").read_bytes()
    assert one == two
    assert one[4:8] == b"\0\0\0\0"  # gzip header: mtime 0
    text = gzip.decompress(one).decode()
    assert "\n" not in text and ", " not in text.split('"trials"')[0]  # compact separators


def test_handmade_study_round_trip(handmade, tmp_path):
    path = export.export_study(handmade, "hm", tmp_path)
    st = open_storage(handmade)
    units = results.load_units(str(path), "hm")
    assert units == results.load_units(st, "hm")
    assert any(t["state"] == "PRUNED" for ts in units["units"]["gamma=tpe"].values() for t in ts)
    assert 3 not in units["units"]["baseline=cb_ce"]
    _same_analysis(st, str(path), "hm")
    assert "dataset_kwargs" not in export.read_export(path)["manifest"]  # not written by this hand-made study


def test_command_line(small_journal, tmp_path, capsys):
    assert cli.main(["sweep", "export", "small-export", "--storage", small_journal, "--out", str(tmp_path)]) == 0
    assert "small-export:" in capsys.readouterr().out
    assert cli.main(["sweep", "export", "nope", "--storage", small_journal, "--out", str(tmp_path)]) == 2
    assert "no study 'nope' in this storage; studies there: small-export" in capsys.readouterr().err
    assert cli.main(["sweep", "export", "small-export", "--storage", str(tmp_path / "missing.log"), "--out",
                     str(tmp_path)]) == 2
    assert "no storage file" in capsys.readouterr().err
    # the report of a folder of exports (the README says it reads one)
    assert cli.main(["sweep", "report", "small-export", "--storage", str(tmp_path)]) == 0
    assert "| gamma=0 |" in capsys.readouterr().out


def test_bad_files_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="export path must end in '.json.gz'"):
        export.write_export({"format": 1}, tmp_path / "x.json")
    bad = tmp_path / "bad.json.gz"
    bad.write_bytes(b"not gzip")
    with pytest.raises(ValueError, match="bad.json.gz' is not a gzip-compressed JSON export"):
        export.read_export(bad)
    export.write_export({"format": 99}, tmp_path / "old.json.gz")
    with pytest.raises(ValueError, match="export format must be one of 1, 2, got 99"):
        export.read_export(tmp_path / "old.json.gz")
    with pytest.raises(ValueError, match="no export file"):
        report.run_report(["digits-lt"], str(tmp_path / "digits-lt.json.gz"))
    with pytest.raises(ValueError, match="no export of study 'digits-lt' in folder"):
        report.run_report(["digits-lt"], str(tmp_path))  # a folder without that study's export


class _FixedSampler(optuna.samplers.BaseSampler):
    def __init__(self, values):
        self.values = values

    def infer_relative_search_space(self, study, trial):
        return {}

    def sample_relative(self, study, trial, search_space):
        return {}

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self.values[trial.number]


@pytest.fixture(scope="module")
def across_journal(tmp_path_factory):
    """A study with an arm tuned across seeds whose trials 1 and 3 the Wilcoxon pruner stops after 4 of 5 seeds."""
    log = tmp_path_factory.mktemp("export-across") / "across.log"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runner, "_sampler", lambda name, worker_id, trials: _FixedSampler([0.0, 4.0, 0.0, 2.0]))
        study = linear_study(name="across-export", arms=("gamma=0", "gamma=2"), tuned_across=("gamma=tpe",),
                             seeds=5, trials=4)
        summary = runner.run(study, opts(log))
    assert summary["errors"] == []
    return str(log)


def test_across_seeds_round_trip(across_journal, tmp_path):
    path = export.export_study(across_journal, "across-export", tmp_path)
    st = open_storage(across_journal)
    units = results.load_units(str(path), "across-export")
    assert units == results.load_units(st, "across-export")
    assert units["across_seeds"]["gamma=tpe@seeds"]["seeds"] == [0, 1, 2, 3, 4]
    assert [(t["number"], len(t["seeds_evaluated"]), t["pruned"])
            for t in units["across_seeds"]["gamma=tpe@seeds"]["trials"]] == [(0, 5, False), (1, 4, True),
                                                                            (2, 5, False), (3, 4, True)]
    a = _same_analysis(st, str(path), "across-export")
    assert [r["runs"] for r in a["tuning_cost"]["curves"]["gamma=tpe@seeds"]] == [5, 9, 14, 18]
    assert report.report("across-export", str(path)) == report.report("across-export", across_journal)

    data = export.read_export(path)
    assert data["format"] == export.EXPORT_FORMAT == 2 and data["units"]["gamma=tpe@seeds"] == [0, 1, 2, 3, 4]
    whole = [t for t in data["trials"] if t["arm"] == "gamma=tpe@seeds"]
    assert [t["number"] for t in whole] == [0, 1, 2, 3] and all(t["seed"] is None for t in whole)
    assert [sorted(t["per_seed"]) == sorted(map(str, t["seeds_evaluated"])) for t in whole] == [True] * 4
    assert [t["params"]["gamma"] for t in whole] == [0.0, 4.0, 0.0, 2.0]
    assert all(t["per_seed"][str(s)]["config"]["seed"] == s for t in whole for s in t["seeds_evaluated"])
    # the full report: the tuning-cost curve at fractional runs per seed, its note, the figure
    pytest.importorskip("matplotlib")
    md, _, written = report.run_report(["across-export"], str(path), out=tmp_path / "o", n_boot=100)
    assert "- gamma=tpe@seeds: 1: 0.920, 1.8: 0.920, 2.8: 0.920, 3.6: 0.920" in md  # 0.9 + 0.01 * mean seed
    assert "Arms tuned across seeds: x is training runs per seed" in md
    assert "| gamma=tpe@seeds | tuned across seeds |" in md and "across-export_tuning_cost.png" in written["files"]
    # reproducible, like format 1
    assert export.export_study(across_journal, "across-export", tmp_path / "b").read_bytes() == path.read_bytes()
