"""sweeps/: this repository's studies on the comparison engine. Every study definition loads with the issue's arms;
the committed exports' manifests are still accepted; a real (tiny) study of research.train runs end to end through
the installed engine and the command line; bad names are clear errors; the command line stays lazy."""

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

optuna = pytest.importorskip("optuna")
pytest.importorskip("sklearn")
from optuna.trial import TrialState  # noqa: E402

from adaptive_focal import cli  # noqa: E402
from adaptive_focal.compare import export, runner  # noqa: E402
from adaptive_focal.compare.storage import open_storage  # noqa: E402
from adaptive_focal.compare.studies import find_studies  # noqa: E402
from helpers.studies import opts  # noqa: E402
from sweeps.spec import GAMMA_GRID, HOLDOUT_FRACTION, Arm, DatasetStudy, across_seeds, default_arms, logit_adjusted_arm  # noqa: E402
from sweeps.studies import list_studies, load_study  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TINY = {"n_max": 30, "n_val_per_class": 4, "n_test_per_class": 6}


def tiny_study(name="tiny", arms=("gamma=0", "gamma=2", "gamma=tpe", "policy=pi", "baseline=cb_ce"), **changes):
    chosen = {a.name: a for a in default_arms("digits-lt")}
    kwargs = dict(name=name, dataset="digits-lt", seeds=2, trials=2, dataset_kwargs=TINY,
                  overrides={"epochs": 1, "batch_size": 64}, arms=tuple(chosen[a] for a in arms))
    return DatasetStudy(**{**kwargs, **changes})


def test_every_study_definition_loads_with_the_issue_arms():
    main = ["digits-lt", "mnist1d-lt", "gauss-lt", "dense-det", "seg-toy"]
    rho = [f"{d}-rho{r}" for d in ("digits-lt", "gauss-lt") for r in (1, 10, 100)]
    combos = [f"{d}-combos" for d in ("digits-lt", "gauss-lt", "mnist1d-lt")]
    confirm = [f"{d}-confirm" for d in ("digits-lt",)] + ["digits-lt-confirm-e30", "digits-lt-confirm-e60"] + [
        f"{d}-confirm" for d in ("gauss-lt", "mnist1d-lt", "dense-det", "seg-toy")]
    prior = [f"{d}-prior" for d in ("digits-lt", "gauss-lt", "mnist1d-lt", "seg-toy")] + [
        "digits-lt-prior-long", "gauss-lt-prior-long", "mnist1d-lt-prior-policies", "seg-toy-prior-policies",
        "gauss-lt-prior-long-policies", "mnist1d-lt-prior-long", "seg-toy-prior-long",
        "mnist1d-lt-prior-long-policies", "seg-toy-prior-long-policies"] + [
        f"{d}-prior{long}-learned" for long in ("", "-long") for d in ("digits-lt", "gauss-lt", "mnist1d-lt",
                                                                       "seg-toy")] + [
        "gauss-lt-prior-adafocal", "gauss-lt-prior-long-adafocal", "gauss-lt-prior-long-adafocal-replication"]
    assert list_studies() == main + ["digits-lt-across-seeds"] + rho + combos + confirm + prior
    for name in confirm:  # research/preregistration.md: fresh seeds, the grid, the policy, logit adjustment
        study = load_study(name)
        assert study.seed_list() == list(range(1000, 1020)) and study.trials == 1
        expected = [f"gamma={g:g}" for g in GAMMA_GRID] + ["policy=flsd53"] + (
            [] if study.dataset == "dense-det" else ["baseline=logit_adjusted"])
        assert [a.name for a in study.arms] == expected and not any(a.tuned for a in study.arms)
    assert load_study("digits-lt-confirm-e60").overrides == {"epochs": 60}
    # the engine finds the same studies, in the same order, in the repository's studies folder
    assert find_studies([str(ROOT / "sweeps" / "studies")]).names() == list_studies()
    across = load_study("digits-lt-across-seeds")
    assert [a.name for a in across.arms] == [f"gamma={g:g}" for g in GAMMA_GRID] + [
        "gamma=tpe", "gamma=tpe@seeds", "policy=pi+tpe@seeds", "policy=gammanet+tpe@seeds"]
    assert across.across_seeds_arms == ["gamma=tpe@seeds", "policy=pi+tpe@seeds", "policy=gammanet+tpe@seeds"]
    assert all(a.wilcoxon_p == 0.1 for a in across.arms) and across.seeds == 8 and across.trials == 10
    for name in main + rho + combos:  # per-seed protocol only: their stored manifests stay valid
        assert not load_study(name).across_seeds_arms
        assert all(set(a.record()) == {"config", "space"} for a in load_study(name).arms)
    for name in rho:
        study = load_study(name)
        assert [a.name for a in study.arms] == [f"gamma={g:g}" for g in GAMMA_GRID] and study.seeds == 5
        assert study.dataset_kwargs == {"imbalance_ratio": float(name.rpartition("-rho")[2])}
    for name in combos:
        configs = {a.name: a.config for a in load_study(name).arms}
        assert configs["gamma=0"] == {"loss": "focal", "gamma": 0.0, "sampler": "none"}
        assert configs["gamma=2+class_balanced"] == {"loss": "focal", "gamma": 2.0, "sampler": "class_balanced"}
        assert len(configs) == 9 and load_study(name).seeds == 5
    for name in main:
        study = load_study(name)
        arms = {a.name for a in study.arms}
        assert {"gamma=0", "gamma=0.5", "gamma=1", "gamma=2", "gamma=3", "gamma=5", "gamma=tpe",
                "policy=pi", "policy=pi+tpe", "baseline=ghm"} <= arms
        assert study.objective == "sweeps.objective:train"
        assert study.metric == {"dense-det": "map", "seg-toy": "miou"}.get(name, "balanced_accuracy")
    assert "policy=adafocal" not in {a.name for a in load_study("dense-det").arms}
    assert "baseline=cb_focal" in {a.name for a in load_study("digits-lt").arms}


def test_stored_studies_keep_their_manifests():
    """Every committed export's manifest is accepted by the engine for its study definition: the arms of the
    existing studies (and their stored records) did not change."""
    paths = sorted((ROOT / "sweeps" / "results" / "trials").glob("*.json.gz"))
    assert paths
    for path in paths:
        data = export.read_export(path)
        study = load_study(data["study"])
        runner.check_manifest(study, data["manifest"], len(data["manifest"]["directions"]) > 1)
        stored_across = [a for a, rec in data["manifest"]["arms"].items() if rec.get("across_seeds")]
        assert sorted(study.across_seeds_arms) == sorted(stored_across), path.name


def test_the_stored_gauss_lt_study_shows_the_median_pruner_removing_the_winner():
    """The stored case of the protocol issue, read from the committed export: gauss-lt ran with the per-epoch
    MedianPruner (its manifest has no ``pruner`` key), the configuration that wins on validation is the smallest
    gamma (gamma = 0 leads the fixed grid), and every TPE trial that sampled gamma < 0.5 was pruned, so gamma=tpe
    never completed a run near the winner. tests/test_compare_runner.py replays the mechanism and shows that the
    default (no pruning) and the late pruner keep such a configuration."""
    data = export.read_export(ROOT / "sweeps" / "results" / "trials" / "gauss-lt.json.gz")
    assert "pruner" not in data["manifest"]
    metric = data["manifest"]["metric"]
    grid = {}
    for t in data["trials"]:
        if t["arm"] in {f"gamma={g:g}" for g in GAMMA_GRID} and t["state"] == "COMPLETE":
            grid.setdefault(t["arm"], []).append(t["val_metrics"][metric])
    means = {arm: sum(v) / len(v) for arm, v in grid.items()}
    assert max(means, key=means.get) == "gamma=0", means
    tuned = [t for t in data["trials"] if t["arm"] == "gamma=tpe"]
    small = [t["state"] for t in tuned if t["params"]["gamma"] < 0.5]
    assert small and set(small) == {"PRUNED"}
    completed = [t["params"]["gamma"] for t in tuned if t["state"] == "COMPLETE"]
    assert completed and min(completed) > 0.5


def test_headline_metric_matches_each_data_sets_task():
    from research.datasets import load_dataset
    from research.evaluate import HEADLINE, headline_metric

    for name in ("digits-lt", "gauss-lt", "dense-det", "seg-toy"):
        assert headline_metric(name) == HEADLINE[load_dataset(name, **({"n_max": 30} if name == "digits-lt" else {}))
                                                 .task]


def test_train_epoch_callback_sees_every_epoch():
    from research.train import main

    seen = []
    main({"dataset": "digits-lt", "dataset_kwargs": TINY, "epochs": 2},
         epoch_callback=lambda e, val, rec: seen.append((e, round(val["balanced_accuracy"], 6), rec["epoch"])))
    assert [s[0] for s in seen] == [1, 2] and [s[2] for s in seen] == [1, 2]


def test_a_tiny_study_of_research_train_end_to_end(tmp_path, capsys):
    study, log = tiny_study(), tmp_path / "tiny.log"
    summary = runner.run(study, opts(log))
    assert summary["errors"] == [] and summary["failed_units"] == []
    st = open_storage(str(log), write=False)
    trials = optuna.load_study(study_name="tiny/gamma=tpe/seed1", storage=st).trials
    assert len(trials) == 2
    for t in trials:
        a = t.user_attrs
        assert a["arm"] == "gamma=tpe" and a["seed"] == 1
        # the research.train config the trial ran, as the paper's provenance checks read it
        assert a["config"] == {"dataset": "digits-lt", "dataset_kwargs": TINY, "seed": 1, "threads": 1, "epochs": 1,
                               "batch_size": 64, "loss": "focal", "gamma": t.params["gamma"]}
        if t.state == TrialState.COMPLETE:
            assert "balanced_accuracy" in a["test_metrics"] and "ece" in a["val_metrics"]
    pi = optuna.load_study(study_name="tiny/policy=pi/seed0", storage=st).trials[0].user_attrs
    assert [p[0] for p in pi["gamma_trajectory"]] == [1]  # research.train's per-epoch gamma
    assert cli.main(["sweep", "report", "tiny", "--storage", str(log)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("### tiny (digits-lt): test balanced_accuracy") and "| baseline=cb_ce |" in out


def test_the_command_line_runs_and_reports_a_repository_study(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)  # the default studies folder, sweeps/studies
    log = tmp_path / "cli-across.log"
    assert cli.main(["sweep", "run", "digits-lt-across-seeds", "--arms", "gamma=0", "gamma=tpe@seeds", "--seeds",
                     "2", "--trials", "2", "--set", "epochs=1", "--storage", str(log), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "| gamma=tpe@seeds |" in out and "| gamma=0 |" in out
    unit = optuna.load_study(study_name="digits-lt-across-seeds/gamma=tpe@seeds/seeds",
                             storage=open_storage(str(log), write=False))
    assert [len(t.user_attrs["seeds_evaluated"]) for t in unit.trials] == [2, 2]
    assert all(t.user_attrs["config"]["epochs"] == 1 for t in unit.trials)
    # --epochs is --set epochs: the same study; another value is refused before anything is written
    assert cli.main(["sweep", "run", "digits-lt-across-seeds", "--arms", "gamma=0", "--seeds", "2", "--epochs", "1",
                     "--storage", str(log), "--quiet", "--no-report"]) == 0
    before = log.read_bytes()
    assert cli.main(["sweep", "run", "digits-lt-across-seeds", "--arms", "gamma=0", "--seeds", "2", "--epochs", "2",
                     "--storage", str(log), "--quiet"]) == 2
    assert "created with overrides {'epochs': 1}" in capsys.readouterr().err and log.read_bytes() == before
    assert cli.main(["sweep", "report", "digits-lt-across-seeds", "--storage", str(log)]) == 0
    assert "| gamma=tpe@seeds |" in capsys.readouterr().out
    assert cli.main(["sweep", "list"]) == 0
    assert "digits-lt-across-seeds: digits-lt, 10 arms (3 tuned across seeds), 8 seeds" in capsys.readouterr().out


def test_bad_names_are_clear_errors(tmp_path, capsys, monkeypatch):
    with pytest.raises(ValueError, match="unknown study 'nope'; studies: digits-lt, mnist1d-lt"):
        load_study("nope")
    with pytest.raises(ValueError, match="dataset must be one of .*digits-lt.*, got 'imagenet'"):
        DatasetStudy(name="x", dataset="imagenet")
    with pytest.raises(ValueError, match="arm 'p': policy must be 'none' or one of .*, got 'magic'"):
        DatasetStudy(name="x", dataset="digits-lt", arms=(Arm("p", {"policy": "magic"}),))
    with pytest.raises(ValueError, match="unknown arm\\(s\\) 'nope' for study 'digits-lt'; arms: gamma=0"):
        load_study("digits-lt").select_arms(["nope"])
    with pytest.raises(ValueError, match="unknown config key 'epoch'"):
        load_study("digits-lt").with_settings(epoch=1)
    with pytest.raises(ValueError, match="across_seeds needs a tuned arm"):
        across_seeds(Arm("g", {"gamma": 1.0}))
    monkeypatch.chdir(ROOT)
    assert cli.main(["sweep", "run", "nope", "--storage", str(tmp_path / "x.log")]) == 2
    assert "unknown study 'nope'; studies: digits-lt" in capsys.readouterr().err
    assert cli.main(["sweep", "run", "digits-lt-across-seeds", "--seeds", "1", "--storage",
                     str(tmp_path / "cli.log")]) == 2
    assert "seeds must be >= 2 for arms tuned across seeds (gamma=tpe@seeds, policy=pi+tpe@seeds, " in \
        capsys.readouterr().err
    assert not (tmp_path / "cli.log").exists()


def test_studies_from_a_file_named_on_the_command_line(tmp_path, capsys):
    (tmp_path / "my_studies.py").write_text(
        "from adaptive_focal.compare import Study, parse_arm\n"
        "STUDY = Study(name='mine', arms=(parse_arm('gamma=0'), parse_arm('gamma=1')), objective='helpers.objectives:"
        "linear', metric='score', seeds=2, mode='softmax')\n")
    log = tmp_path / "mine.log"
    assert cli.main(["sweep", "list", "--studies", str(tmp_path / "my_studies.py")]) == 0
    assert capsys.readouterr().out.startswith("mine: helpers.objectives:linear, 2 arms, 2 seeds")
    assert cli.main(["sweep", "run", "mine", "--studies", str(tmp_path / "my_studies.py"), "--storage", str(log),
                     "--quiet"]) == 0
    assert "| 1 | gamma=0 | 0.855 ± 0.007 |" in capsys.readouterr().out


def test_cli_stays_lazy():
    code = ("import sys, adaptive_focal, adaptive_focal.cli; "
            "print(any(m in sys.modules for m in ('optuna', 'sweeps', 'research')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    help_text = subprocess.run([sys.executable, "-m", "adaptive_focal.cli", "sweep", "run", "--help"],
                               capture_output=True, text=True, check=True).stdout
    for flag in ("--workers", "--no-prune", "--heartbeat-interval", "--retry-seconds", "--quiet", "--set"):
        assert flag in help_text


# -- fair arms (research protocol v2): the same labelled data for every arm -----------------------------------------
def test_fair_study_holds_the_same_slice_out_of_every_arm():
    from research.train import load_data, resolve_config
    from sweeps.objective import config_for
    from sweeps.spec import HOLDOUT_FRACTION, fair_study

    study = fair_study(name="fair", dataset="digits-lt", seeds=2, trials=2, dataset_kwargs=TINY,
                       overrides={"epochs": 1})
    assert study.meta["overrides"] == {"holdout_fraction": HOLDOUT_FRACTION, "epochs": 1}
    names = [a.name for a in study.arms]
    assert {"policy=gammanet", "policy=gammanet+tpe", "policy=gammanet[val]", "policy=bandit",
            "policy=bandit[val]", "control=finetune[val]", "control=finetune", "policy=pi", "gamma=2",
            "baseline=logit_adjusted"} <= set(names)
    assert not any(n.startswith("policy=hypergradient") for n in names)  # inert defaults: left out
    trained = {}
    for arm in study.arms:
        cfg = resolve_config(config_for(SimpleNamespace(study=study, seed=1, threads=1, config=dict(arm.config))))
        assert cfg.holdout_fraction == HOLDOUT_FRACTION, arm.name
        trained[arm.name] = load_data(cfg)[0].x_train
    first = trained["gamma=2"]
    assert all(torch.equal(x, first) for x in trained.values())


def test_fair_arms_draw_from_the_slice_or_name_the_validation_set():
    from sweeps.spec import FINETUNE_EVERY, control_arms, learned_arms

    arms = {a.name: a for a in learned_arms(("hypergradient", "gammanet", "bandit")) + control_arms()}
    for name in ("hypergradient", "gammanet", "bandit"):
        assert arms[f"policy={name}"].config == {"loss": "focal", "policy": name, "meta_data": "train_slice"}
        assert arms[f"policy={name}[val]"].config == {"loss": "focal", "policy": name, "meta_data": "val"}
        tuned = arms[f"policy={name}+tpe"]
        assert tuned.config == arms[f"policy={name}"].config
        assert tuned.space == {a.name: a for a in default_arms("digits-lt")}[f"policy={name}+tpe"].space
    assert arms["control=finetune[val]"].config == {"loss": "focal", "gamma": 2.0, "finetune_every": FINETUNE_EVERY,
                                                    "meta_data": "val"}
    assert arms["control=finetune"].config["meta_data"] == "train_slice"
    assert [a.name for a in learned_arms(("gammanet",), tuned=False)] == ["policy=gammanet", "policy=gammanet[val]"]
    with pytest.raises(ValueError, match="policies must be among hypergradient, gammanet, bandit, got 'pi'"):
        learned_arms(("pi",))


def prior_fair_studies() -> tuple:
    from sweeps.studies import prior

    return prior.FAIR


def test_existing_studies_keep_their_arms_and_no_hold_out():
    for name in list_studies():
        if name in prior_fair_studies():  # fair studies (test_the_prior_studies_design)
            continue
        study = load_study(name)
        assert "holdout_fraction" not in study.overrides
        assert not any("[val]" in a.name or a.name.startswith("control=") for a in study.arms), name
        assert all("meta_data" not in a.config and "finetune_every" not in a.config for a in study.arms), name


def test_a_tiny_fair_study_runs_end_to_end(tmp_path):
    from sweeps.spec import control_arms, fair_study, learned_arms

    gamma2 = {a.name: a for a in default_arms("digits-lt")}["gamma=2"]
    arms = [*learned_arms(("gammanet",), tuned=False), *control_arms(), gamma2]
    study = fair_study(name="fair", dataset="digits-lt", seeds=1, trials=1, dataset_kwargs=TINY,
                       overrides={"epochs": 2, "batch_size": 16}, arms=arms)
    log = tmp_path / "fair.log"
    summary = runner.run(study, opts(log))
    assert summary["errors"] == [] and summary["failed_units"] == []
    st = open_storage(str(log), write=False)
    for arm in arms:
        trial, = optuna.load_study(study_name=f"fair/{arm.name}/seed0", storage=st).trials
        assert trial.state == TrialState.COMPLETE and trial.user_attrs["config"]["holdout_fraction"] == 0.1


def test_logit_adjusted_arms_move_the_focal_gamma_into_loss_kwargs():
    from adaptive_focal.compare import parse_arm

    assert logit_adjusted_arm(parse_arm("gamma=2")) == Arm(
        "la+gamma=2", {"loss": "logit_adjusted", "loss_kwargs": {"gamma": 2.0}})
    tpe = logit_adjusted_arm(parse_arm("gamma=tpe"))
    assert tpe.config == {"loss": "logit_adjusted"} and tpe.space == {"gamma": ("loss_kwargs.gamma", ("float", 0.0,
                                                                                                      5.0, False))}
    pi = logit_adjusted_arm(parse_arm("policy=pi+tpe"))  # a policy drives the focal term; its space is unchanged
    assert pi.name == "la+policy=pi+tpe" and pi.config == {"loss": "logit_adjusted", "policy": "pi"}
    assert pi.space == parse_arm("policy=pi+tpe").space
    study = tiny_study()
    for arm in (tpe, pi, logit_adjusted_arm(parse_arm("gamma=0.5"))):
        study.check_arm(arm)
    # a top-level gamma under LA without a policy would be ignored by research.train: refused, fixed or tuned
    for arm in (Arm("x", {"loss": "logit_adjusted", "gamma": 2.0}),
                Arm("y", {"loss": "logit_adjusted"}, {"gamma": ("gamma", ("float", 0.0, 5.0, False))})):
        with pytest.raises(ValueError, match="ignores 'gamma'.*loss_kwargs.gamma"):
            study.check_arm(arm)
    with pytest.raises(ValueError, match="'loss_kwargs.<name>'"):
        study.check_arm(Arm("z", {"loss": "focal"}, {"w": ("weights.w", ("float", 0.0, 1.0, False))}))
    with pytest.raises(ValueError, match="per-seed arm on focal loss"):
        logit_adjusted_arm(Arm("cb", {"loss": "cb_focal"}))
    with pytest.raises(ValueError, match="per-seed arm on focal loss"):
        logit_adjusted_arm(across_seeds(parse_arm("gamma=tpe")))


def test_a_tiny_logit_adjusted_study_tunes_the_focal_terms_gamma(tmp_path, monkeypatch):
    """End to end through research.train: each trial of la+gamma=tpe runs the logit-adjusted loss with the gamma
    TPE sampled as its focal term's gamma (recorded in the trial's config and seen by the loss it builds)."""
    from adaptive_focal.compare import parse_arm
    from research import train

    seen, build = [], train._build_loss

    def recording_build(cfg, data, mode):
        seen.append(build(cfg, data, mode))
        return seen[-1]

    monkeypatch.setattr(train, "_build_loss", recording_build)
    study = DatasetStudy(name="tiny", dataset="digits-lt", seeds=1, trials=3, dataset_kwargs=TINY,
                         overrides={"epochs": 1, "batch_size": 64}, arms=(logit_adjusted_arm(parse_arm("gamma=tpe")),))
    log = tmp_path / "la.log"
    summary = runner.run(study, opts(log))
    assert summary["errors"] == [] and summary["failed_units"] == []
    trials = optuna.load_study(study_name="tiny/la+gamma=tpe/seed0", storage=open_storage(str(log))).trials
    gammas = [t.params["gamma"] for t in trials]
    assert len(set(gammas)) == 3
    assert [t.user_attrs["config"]["loss_kwargs"] for t in trials] == [{"gamma": g} for g in gammas]
    assert all("gamma" not in t.user_attrs["config"] for t in trials)
    assert [type(loss).__name__ for loss in seen] == ["LogitAdjustedLoss"] * 3
    assert [loss.focal.gamma for loss in seen] == pytest.approx(gammas)


def test_the_prior_studies_pair_every_arm_with_logit_adjustment_on_fresh_seeds():
    from sweeps.studies import prior

    full = {a.name: a for a in load_study("digits-lt-prior").arms}
    assert list(full)[:7] == ["baseline=logit_adjusted", "la+gamma=0.5", "la+gamma=1", "la+gamma=2", "la+gamma=3",
                              "la+gamma=5", "la+gamma=tpe"]
    assert list(full)[-2:] == ["baseline=cb_ce", "baseline=cb_focal"]
    policies = {a.policy for a in full.values() if a.policy}
    assert policies == {"adafocal", "automated", "classwise_adafocal", "cosine", "cyclical", "exponential",
                        "flsc531", "flsd53", "linear", "pi", "sequential", "step"}  # softmax, no held-out data
    assert all(f"la+policy={p}+tpe" in full for p in policies - {"flsc531", "sequential"})
    assert all(a.config["loss"] == "logit_adjusted" for n, a in full.items() if n.startswith("la+"))
    for name in ("mnist1d-lt-prior", "seg-toy-prior", "gauss-lt-prior-long"):
        study = load_study(name)
        kept = prior.BEST_POLICIES[study.dataset]
        assert [a.name for a in study.arms if a.policy] == ["la+policy=flsd53"] + [
            f"la+policy={p}{t}" for p in kept for t in ("", "+tpe")]
        assert {"baseline=logit_adjusted", "la+gamma=tpe", "baseline=cb_ce", "baseline=cb_focal"} <= {
            a.name for a in study.arms}
    for name in prior.STUDIES:
        study = load_study(name)
        first = 3000 if name == prior.REPLICATION else 2000  # the replication's fresh seeds
        assert study.seed_list() == list(range(first, first + 10)) and study.trials == prior.TRIALS
        for arm in study.arms:
            study.check_arm(arm)
    assert load_study("digits-lt-prior-long").overrides == {"epochs": 30}
    assert load_study("gauss-lt-prior-long").overrides == {"epochs": 180}


def test_the_prior_studies_design():
    """Issue 16's studies: a reduced study and its ``-policies`` companion hold the full design between them (LA
    alone in both), on the same data set, schedule and seeds; the learned controllers' studies are fair (every
    arm holds out the same slice, the controllers meta-train on it) and on LA."""
    from sweeps.studies import prior

    full = [a.name for a in prior.arms()]
    assert len(full) == 31 and full[0] == "baseline=logit_adjusted"
    for reduced, companion in (("mnist1d-lt-prior", "mnist1d-lt-prior-policies"),
                               ("seg-toy-prior", "seg-toy-prior-policies"),
                               ("gauss-lt-prior-long", "gauss-lt-prior-long-policies"),
                               ("mnist1d-lt-prior-long", "mnist1d-lt-prior-long-policies"),
                               ("seg-toy-prior-long", "seg-toy-prior-long-policies")):
        a, b = load_study(reduced), load_study(companion)
        names_a, names_b = [x.name for x in a.arms], [x.name for x in b.arms]
        assert set(names_a) & set(names_b) == {"baseline=logit_adjusted"}
        assert sorted(set(names_a) | set(names_b)) == sorted(full)
        assert (a.dataset, a.overrides, a.seed_list(), a.trials) == (b.dataset, b.overrides, b.seed_list(), b.trials)
    assert load_study("mnist1d-lt-prior-long").overrides == {"epochs": 30}
    assert load_study("seg-toy-prior-long").overrides == {"epochs": 60}
    for dataset, long in ((d, long) for d in ("digits-lt", "gauss-lt", "mnist1d-lt", "seg-toy") for long in (0, 1)):
        study = load_study(f"{dataset}-prior{'-long' if long else ''}-learned")
        epochs = {"epochs": prior.LONG_EPOCHS[dataset]} if long else {}
        assert study.dataset == dataset and study.overrides == {"holdout_fraction": HOLDOUT_FRACTION, **epochs}
        assert study.seed_list() == list(range(2000, 2010))
        arms = {a.name: a for a in study.arms}
        assert arms["baseline=logit_adjusted"].config == {"loss": "logit_adjusted"}
        for name in ("hypergradient", "gammanet", "bandit"):
            assert arms[f"la+policy={name}"].config == {"loss": "logit_adjusted", "policy": name,
                                                        "meta_data": "train_slice"}
            assert arms[f"la+policy={name}+tpe"].config == arms[f"la+policy={name}"].config
            assert arms[f"la+policy={name}+tpe"].space
        assert len(arms) == 7
    # AdaFocal's statistics: on the balanced validation set as published, or on the held-out slice; every arm
    # holds the same slice out
    assert set(prior.FAIR) == {*(f"{d}-prior{long}-learned" for d in ("digits-lt", "gauss-lt", "mnist1d-lt", "seg-toy")
                                 for long in ("", "-long")),
                               "gauss-lt-prior-adafocal", "gauss-lt-prior-long-adafocal",
                               "gauss-lt-prior-long-adafocal-replication"}
    for name, epochs in (("gauss-lt-prior-adafocal", {}), ("gauss-lt-prior-long-adafocal", {"epochs": 180})):
        study = load_study(name)
        assert study.overrides == {"holdout_fraction": HOLDOUT_FRACTION, **epochs}
        arms = {a.name: a for a in study.arms}
        assert list(arms) == ["baseline=logit_adjusted", "la+policy=adafocal", "la+policy=adafocal[slice]",
                              "la+policy=adafocal+tpe", "la+policy=adafocal+tpe[slice]"]
        for base in ("la+policy=adafocal", "la+policy=adafocal+tpe"):
            assert arms[base].config == {"loss": "logit_adjusted", "policy": "adafocal"}
            assert arms[f"{base}[slice]"].config == {**arms[base].config, "val_stats_data": "train_slice"}
            assert arms[f"{base}[slice]"].space == arms[base].space
        assert arms["la+policy=adafocal+tpe"].space
    # the pre-registered replication: the long study's arms and settings on fresh seeds
    long = load_study("gauss-lt-prior-long-adafocal")
    replication = load_study("gauss-lt-prior-long-adafocal-replication")
    assert replication.arms == long.arms and replication.overrides == long.overrides
    assert replication.seed_list() == list(range(3000, 3010))


def test_research_prior_reads_every_prior_study():
    """research/prior.py reads exports by study name (it does not import sweeps/): the names it reads are the studies
    sweeps/studies/prior.py defines, each reduced study beside its ``-policies`` companion, the fair ones as fair."""
    pytest.importorskip("scipy")
    from research import prior as analysis
    from sweeps.studies import prior

    read = [*analysis.STUDIES, *analysis.COMPANIONS.values(), *analysis.LEARNED, *analysis.ADAFOCAL]
    assert len(read) == len(set(read)) and set(read) == set(prior.STUDIES)
    assert all(companion == f"{study}-policies" for study, companion in analysis.COMPANIONS.items())
    assert {*analysis.LEARNED, *analysis.ADAFOCAL} == set(prior.FAIR) and analysis.REPLICATION == prior.REPLICATION
