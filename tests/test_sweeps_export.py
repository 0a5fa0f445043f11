"""sweeps/export.py: a study exported from its journal gives the same units, analysis and report as the journal
itself (a tiny study run end to end, and a hand-made study with pruned trials, a missing seed and gamma
trajectories); exports are byte-for-byte reproducible; bad input is a clear error."""

import gzip
import json

import pytest

optuna = pytest.importorskip("optuna")
pytest.importorskip("scipy")
from test_sweeps import _fake_train, _FixedSampler, across_study, opts, tiny_study
from test_sweeps_report import handmade  # noqa: F401 - a fixture

from sweeps import export, report, runner


@pytest.fixture(scope="module")
def tiny_journal(tmp_path_factory):
    study = tiny_study(name="tiny-export", arms=("gamma=0", "gamma=2", "gamma=tpe", "policy=pi", "baseline=cb_ce"),
                       seeds=2, trials=3)
    log = tmp_path_factory.mktemp("export") / "tiny.log"
    summary = runner.run(study, opts(log))
    assert summary["errors"] == []
    return str(log)


def _same_analysis(storage_a, storage_b, name):
    a = report.analyse(report.load_units(storage_a, name), n_boot=300)
    b = report.analyse(report.load_units(storage_b, name), n_boot=300)
    assert json.dumps(a, default=str) == json.dumps(b, default=str)
    return a


def test_tiny_study_round_trip(tiny_journal, tmp_path):
    path = export.export_study(tiny_journal, "tiny-export", tmp_path)
    assert path == tmp_path / "tiny-export.json.gz"
    st = runner.open_storage(tiny_journal)
    assert report.load_units(st, "tiny-export") == report.load_units(str(path), "tiny-export")
    a = _same_analysis(st, str(path), "tiny-export")
    assert a["reference"] in ("gamma=0", "gamma=2") and a["gamma_trajectories"].get("policy=pi")

    # every trial carries what the paper needs: config with its seed, metrics, versions
    data = export.read_export(path)
    assert data["format"] == 1  # no arm tuned across seeds: the format-1 layout, as before
    assert data["arm_order"] == ["gamma=0", "gamma=2", "gamma=tpe", "policy=pi", "baseline=cb_ce"]
    assert data["manifest"]["dataset"] == "digits-lt" and data["manifest"]["overrides"]["epochs"] == 1
    done = [t for t in data["trials"] if t["state"] == "COMPLETE"]
    assert done and all(t["config"]["seed"] == t["seed"] and t["versions"]["torch"] for t in done)
    assert all(set(t["params"]) == {"gamma"} for t in data["trials"] if t["arm"] == "gamma=tpe")

    # the report reads the export as a storage: a file, or a folder of exports
    text = report.report("tiny-export", tiny_journal)
    assert report.report("tiny-export", str(path)) == text
    md_journal, _, _ = report.run_report(["tiny-export"], tiny_journal, n_boot=300)
    md_folder, _, _ = report.run_report(["tiny-export"], str(tmp_path), n_boot=300)
    assert md_folder == md_journal


def test_export_is_reproducible_and_compact(tiny_journal, tmp_path):
    one = export.export_study(tiny_journal, "tiny-export", tmp_path / "a").read_bytes()
    two = export.export_study(tiny_journal, "tiny-export", tmp_path / "b").read_bytes()
    assert one == two
    assert one[4:8] == b"\0\0\0\0"  # gzip header: mtime 0
    text = gzip.decompress(one).decode()
    assert "\n" not in text and ", " not in text.split('"trials"')[0]  # compact separators


def test_handmade_study_round_trip(handmade, tmp_path):  # noqa: F811 - the imported fixture
    path = export.export_study(handmade, "hm", tmp_path)
    st = runner.open_storage(handmade)
    units = report.load_units(str(path), "hm")
    assert units == report.load_units(st, "hm")
    assert any(t["state"] == "PRUNED" for ts in units["units"]["gamma=tpe"].values() for t in ts)
    assert 3 not in units["units"]["baseline=cb_ce"]
    _same_analysis(st, str(path), "hm")
    assert export.read_export(path)["manifest"]["dataset_kwargs"] is None  # not written by this hand-made study


def test_command_line(tiny_journal, tmp_path, capsys):
    assert export.main(["tiny-export", "--storage", tiny_journal, "--out", str(tmp_path)]) == 0
    assert "tiny-export:" in capsys.readouterr().out
    assert export.main(["nope", "--storage", tiny_journal, "--out", str(tmp_path)]) == 2
    assert "no study 'nope' in this storage; studies there: tiny-export" in capsys.readouterr().err
    assert export.main(["tiny-export", "--storage", str(tmp_path / "missing.log"), "--out", str(tmp_path)]) == 2
    assert "no storage file" in capsys.readouterr().err


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
    with pytest.raises(ValueError, match="no export file"):
        report.run_report(["digits-lt"], str(tmp_path))  # a folder without that study's export


@pytest.fixture(scope="module")
def across_journal(tmp_path_factory):
    """A study with an arm tuned across seeds whose trials 1 and 3 the Wilcoxon pruner stops after 4 of 5 seeds
    (research.train.main and the sampler replaced, as in test_sweeps)."""
    import research.train

    log = tmp_path_factory.mktemp("export-across") / "across.log"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(research.train, "main", _fake_train([]))
        mp.setattr(runner, "_sampler", lambda name, worker_id, trials: _FixedSampler([0.0, 4.0, 0.0, 2.0]))
        summary = runner.run(across_study(name="across-export", seeds=5, trials=4), opts(log))
    assert summary["errors"] == []
    return str(log)


def test_across_seeds_round_trip(across_journal, tmp_path):
    path = export.export_study(across_journal, "across-export", tmp_path)
    st = runner.open_storage(across_journal)
    units = report.load_units(str(path), "across-export")
    assert units == report.load_units(st, "across-export")
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
    assert "- gamma=tpe@seeds: 1: 0.920, 1.8: 0.920, 2.8: 0.920, 3.6: 0.920" in md
    assert "Arms tuned across seeds: x is training runs per seed" in md
    assert "| gamma=tpe@seeds | tuned across seeds |" in md and "across-export_tuning_cost.png" in written["files"]
    # reproducible, like format 1
    assert export.export_study(across_journal, "across-export", tmp_path / "b").read_bytes() == path.read_bytes()
