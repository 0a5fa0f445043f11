"""research/train.py: checked configuration, determinism, exact resume, and a smoke run of every data set x
policy family x baseline."""

import dataclasses
import inspect
import json

import pytest
import torch

from research.train import main, parse_args, resolve_config

# small versions of each data set (seconds per run)
TINY = {
    "digits-lt": {"n_max": 40, "n_val_per_class": 5, "n_test_per_class": 10},
    "mnist1d-lt": {"n_max": 100, "n_val_per_class": 5, "n_test_per_class": 10, "imbalance_ratio": 10},
    "gauss-lt": {"n_max": 60},
    "dense-det": {"n_max": 10, "anchors_per_image": 200, "n_val_per_class": 5, "n_test_per_class": 5},
    "seg-toy": {"n_max": 12, "n_val_per_class": 3, "n_test_per_class": 3},
}


def _same(a, b) -> bool:
    """Equal, NaN included (a recall split with no class in it is NaN)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _tiny(dataset, **overrides):
    return {"dataset": dataset, "dataset_kwargs": TINY[dataset], "epochs": 2, "batch_size": 64, **overrides}


# -- configuration ---------------------------------------------------------------------------------------------
def test_dataset_defaults_fill_what_is_unset():
    cfg = resolve_config({"dataset": "gauss-lt", "epochs": 3})
    assert cfg.epochs == 3 and cfg.batch_size == 128 and cfg.model == "mlp"


@pytest.mark.parametrize("overrides, match", [
    ({"epoch": 3}, "unknown config key 'epoch'; known keys: dataset, dataset_kwargs"),
    ({"epochs": "3"}, "config key 'epochs' must be int or None, got '3'"),
    ({"lr": True}, "config key 'lr' must be float or None, got True"),
    ({"optimizer": "lamb"}, "config key 'optimizer' must be one of 'adam', 'sgd', got 'lamb'"),
    ({"policy": "magic"}, "policy must be 'none' or one of adafocal, "),
    ({"loss": "dice"}, "loss must be one of ce, focal"),
    ({"dataset": "imagenet"}, "dataset must be one of digits-lt"),
    ({"epochs": 0}, "config key 'epochs' must be a positive integer, got 0"),
])
def test_bad_config_is_a_clear_error(overrides, match):
    with pytest.raises(ValueError, match=match):
        resolve_config(overrides)


def test_command_line_overrides(tmp_path):
    file = tmp_path / "cfg.json"
    file.write_text(json.dumps({"dataset": "gauss-lt", "epochs": 4}))
    cfg = parse_args(["--config", str(file), "--policy", "pi", "--set", "lr=0.01",
                      "--set", 'policy_kwargs={"setpoint": 0.6}', "--set", "optimizer=sgd"])
    assert (cfg.dataset, cfg.epochs, cfg.policy, cfg.lr, cfg.optimizer) == ("gauss-lt", 4, "pi", 0.01, "sgd")
    assert cfg.policy_kwargs == {"setpoint": 0.6}
    with pytest.raises(SystemExit):
        parse_args(["--set", "nonsense=1"])


# -- determinism and resume --------------------------------------------------------------------------------------
def test_same_seed_same_run_and_another_seed_another():
    a = main(_tiny("digits-lt", policy="pi"))
    b = main(_tiny("digits-lt", policy="pi"))
    assert _same(a["metrics"], b["metrics"]) and _same(a["gamma"], b["gamma"])
    c = main(_tiny("digits-lt", policy="pi", seed=1))
    assert not _same(c["metrics"], a["metrics"])


@pytest.mark.parametrize("overrides", [
    {"policy": "pi"},
    {"policy": "adafocal", "optimizer": "sgd", "sampler": "sqrt"},
    {"loss": "ghm", "loss_kwargs": {"momentum": 0.75}},
    {"policy": "hypergradient", "policy_kwargs": {"every": 3}},
    {"policy": "gammanet", "policy_kwargs": {"every": 2}},
    {"finetune_every": 5, "meta_data": "val"},
], ids=["pi", "adafocal-sgd-sqrt", "ghm-ema", "hypergradient", "gammanet-train-slice", "finetune-val"])
def test_resume_continues_exactly(tmp_path, overrides):
    full = main(_tiny("gauss-lt", epochs=4, **overrides))
    main(_tiny("gauss-lt", epochs=2, out_dir=str(tmp_path), **overrides))
    resumed = main(_tiny("gauss-lt", epochs=4, out_dir=str(tmp_path), resume=str(tmp_path / "checkpoint.pt"),
                         **overrides))
    assert _same(resumed["metrics"], full["metrics"])
    assert _same(resumed["history"], full["history"])
    saved = json.loads((tmp_path / "run.json").read_text())
    assert saved["config"]["epochs"] == 4 and _same(saved["metrics"], full["metrics"])


def test_resume_refuses_a_different_config(tmp_path):
    main(_tiny("gauss-lt", epochs=1, out_dir=str(tmp_path)))
    with pytest.raises(ValueError, match=r"different config for \['lr'\]"):
        main(_tiny("gauss-lt", epochs=2, lr=0.5, resume=str(tmp_path / "checkpoint.pt")))


# -- smoke: every data set with a member of every policy family and every baseline ------------------------------
FAMILIES = ["none", "cosine", "flsd53", "pi", "automated", "adafocal", "cyclical", "sequential", "efl",
            "asl_adaptive", "hypergradient", "gammanet", "bandit"]


@pytest.mark.parametrize("policy", FAMILIES)
@pytest.mark.parametrize("dataset", sorted(TINY))
def test_every_dataset_with_every_policy_family(dataset, policy):
    cfg = _tiny(dataset, policy=policy, epochs=1)
    if policy in ("hypergradient", "gammanet", "bandit"):
        cfg["policy_kwargs"] = {"every": 2}
    result = main(cfg)
    headline = {"dense-det": "map", "seg-toy": "miou"}.get(dataset, "balanced_accuracy")
    assert 0.0 <= result["metrics"][headline] <= 1.0
    if policy != "none":
        assert result["gamma"]["epochs"], "the gamma trajectory is recorded"


BASELINES = [("ce", {}), ("cb_ce", {}), ("cb_focal", {}), ("logit_adjusted", {}), ("ghm", {}),
             ("focal", {"sampler": "class_balanced"}), ("focal", {"posthoc_tau": 1.0})]


@pytest.mark.parametrize("loss, extra", BASELINES, ids=[f"{n}-{'-'.join(e) or 'plain'}" for n, e in BASELINES])
@pytest.mark.parametrize("dataset", ["digits-lt", "seg-toy", "dense-det"])
def test_every_dataset_with_every_baseline(dataset, loss, extra):
    cfg = _tiny(dataset, loss=loss, epochs=1, **extra)
    if dataset == "dense-det" and loss in ("cb_ce", "cb_focal", "logit_adjusted"):
        with pytest.raises(ValueError, match="class index targets|softmax-only"):
            main(cfg)
        return
    metrics = main(cfg)["metrics"]
    if extra.get("posthoc_tau") and dataset == "digits-lt":
        assert "balanced_accuracy_la" in metrics


def test_training_learns_something():
    """A default-length run beats chance by far (guards against a silently broken loop)."""
    metrics = main({"dataset": "digits-lt"})["metrics"]
    assert metrics["balanced_accuracy"] > 0.5  # 10 classes: chance is 0.1


def test_seed_table_compares_paired_by_seed():
    from research.seed_table import compare

    ce, focal = [0.80, 0.90, 0.70], [0.82, 0.93, 0.71]  # diffs +0.02, +0.03, +0.01: mean 0.02, sd 0.01
    got = compare(ce, focal)
    assert got["difference"] == pytest.approx(0.02) and got["standard_error"] == pytest.approx(0.01 / 3 ** 0.5)
    assert got["separated"] and (got["wins"], got["losses"]) == (3, 0)
    # the unpaired standard error sees the seeds' spread (0.1) and cannot separate the two
    assert got["unpaired_standard_error"] > 0.05
    assert not compare([0.8, 0.9], [0.81, 0.88])["separated"]
    with pytest.raises(ValueError, match="same number"):
        compare([0.8, 0.9], [0.8])


def test_seed_table_from_json_rejects_a_bad_file(tmp_path):
    from research.seed_table import main_cli

    bad = tmp_path / "bad.json"
    bad.write_text('{"seeds": 5}')
    with pytest.raises(SystemExit, match="needs the keys seeds, gammas and results"):
        main_cli(["--from-json", str(bad)])
    with pytest.raises(SystemExit, match="not a readable --out file"):
        main_cli(["--from-json", str(tmp_path / "missing.json")])


def test_a_run_records_the_data_sets_resolved_arguments():
    # the data set's own defaults (here digits-lt's imbalance ratio) are part of what a run depends on
    from research.datasets import digits_lt

    result = main(_tiny("digits-lt"))
    default_rho = inspect.signature(digits_lt).parameters["imbalance_ratio"].default
    assert result["data"] == {"imbalance_ratio": default_rho, "seed": 0, **TINY["digits-lt"]}
    json.dumps(result["data"])


def test_default_search_scores_a_candidate_as_the_seed_table_does():
    from research.default_search import main_cli, search
    from research.seed_table import compare

    overrides = {"dataset_kwargs": TINY["digits-lt"], "epochs": 2}
    row, = search("digits-lt", [overrides], seeds=[100, 101], gammas=[1.0, 3.0], jobs=1)
    by_hand = {}
    for loss, gamma in (("ce", 0.0), ("focal", 1.0), ("focal", 3.0)):
        for seed in (100, 101):
            r = main({**overrides, "dataset": "digits-lt", "loss": loss, "gamma": gamma, "seed": seed,
                      "threads": 1, "temperature_scaling": False})
            by_hand[loss, gamma, seed] = (r["metrics"]["balanced_accuracy"], r["val_metrics"]["balanced_accuracy"])
    best = max((1.0, 3.0), key=lambda g: (by_hand["focal", g, 100][1], -g))
    ce = [by_hand["ce", 0.0, s][0] for s in (100, 101)]
    focal = [by_hand["focal", best, s][0] for s in (100, 101)]
    assert (row["gamma"], row["ce"], row["focal"]) == (best, ce, focal)
    assert row["difference"] == compare(ce, focal)["difference"]
    with pytest.raises(SystemExit):  # the published table's seeds are not for choosing
        main_cli(["--seeds", "3", "100"])


# -- the policy a run builds: the classes' run defaults (adaptive_focal.RunContext) -------------------------------
def _kwargs_before(name, epochs, steps_per_epoch, num_classes, gamma, *, model, optimizer, meta_batches):
    """What research/train.py passed to the policy class before the run defaults moved into the classes (its
    ``_policy_defaults`` and learned-controller wiring, written out), for a config without policy_kwargs."""
    total = epochs * steps_per_epoch
    kwargs = {
        "constant": {"gamma": gamma},
        "linear": {"start": 0.0, "end": gamma, "total": max(1, total // 2)},
        "cosine": {"start": 2.0 * gamma, "end": gamma / 2.0, "total": total},
        "step": {"start": 2.0 * gamma, "milestones": [max(1, epochs // 2)], "factor": 0.5, "unit": "epoch"},
        "exponential": {"start": 2.0 * gamma, "factor": 0.25 ** (1.0 / max(1, total)), "gamma_min": 0.0},
        "flsc531": {"milestones": (max(1, epochs // 3), max(2, (2 * epochs) // 3))},
        "cyclical": {"total": epochs},
        "classwise_adafocal": {"num_classes": num_classes},
        "efl": {"num_classes": num_classes},
    }.get(name, {})
    if name in ("hypergradient", "gammanet", "bandit"):
        kwargs = {"model": model, "val_source": meta_batches, **kwargs}
        if name != "bandit":
            kwargs.setdefault("lr", optimizer)
        if name == "gammanet":
            kwargs.setdefault("num_classes", num_classes)
    if name == "sequential":
        warmup = ("LinearGamma", {"unit": "step", "start": 0.0, "end": gamma, "total": steps_per_epoch})
        kwargs = {"policies": [warmup, ("AutomatedGamma", {"momentum": 0.95, "gamma_max": 20.0, "gamma_init": 2.0})],
                  "milestones": [steps_per_epoch]}
    return kwargs


def _plain(value):
    """Policies as (class, hparams) and the run's objects by identity, to compare the arguments built."""
    import adaptive_focal as af

    if isinstance(value, af.GammaPolicy):
        return (type(value).__name__, value.hparams())
    if isinstance(value, list) and value and isinstance(value[0], af.GammaPolicy):
        return [_plain(v) for v in value]
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], tuple):  # validation batches
        return ("object", id(value))
    if hasattr(value, "parameters") or hasattr(value, "param_groups"):  # model, optimizer
        return ("object", id(value))
    return value


RUN_SHAPES = [(10, 7, 10, 2.0), (1, 1, 3, 0.5), (3, 40, 5, 1.0)]  # epochs, steps per epoch, classes, gamma


@pytest.mark.parametrize("epochs, steps_per_epoch, num_classes, gamma", RUN_SHAPES)
def test_policies_get_the_arguments_they_got_before_the_move_except_the_run_seed(
        monkeypatch, epochs, steps_per_epoch, num_classes, gamma):
    import torch

    import adaptive_focal as af
    from adaptive_focal.policies import base
    from research.train import _build_policy

    def spy(cls, seen):
        class Spy(cls):  # records the arguments the class is built with
            def __init__(self, loss, **kwargs):
                seen.update(kwargs)
                super().__init__(loss, **kwargs)
        return Spy

    for name in af.list_policies():
        cls = af.policy_class(name)
        seen = {}
        cfg = resolve_config({"dataset": "gauss-lt", "policy": name, "epochs": epochs, "gamma": gamma, "seed": 4})
        focal = af.FocalLoss("softmax" if cls.applies_to("softmax") else "sigmoid", gamma=gamma)
        model = torch.nn.Linear(3, num_classes)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        val = [(torch.randn(4, 3), torch.randint(0, num_classes, (4,)))]
        with monkeypatch.context() as m:
            m.setitem(base._REGISTRY, name, spy(cls, seen))
            _build_policy(cfg, focal, steps_per_epoch, num_classes, model=model, optimizer=optimizer,
                          meta_batches=val)
        want = _kwargs_before(name, epochs, steps_per_epoch, num_classes, gamma, model=model, optimizer=optimizer,
                              meta_batches=val)
        if name in ("bandit", "gammanet"):
            want["seed"] = 4  # the one change: the run's seed reaches the bandit's draws and gammanet's network
        got = {k: _plain(v) for k, v in seen.items()}
        want = {k: (v if name == "sequential" and k == "policies" else _plain(v)) for k, v in want.items()}
        assert got == want, name
        assert all(type(got[k]) is type(want[k]) for k in want), name  # a list stays a list, a tuple a tuple


def _bandit_arms(seed, n=40):
    import torch

    import adaptive_focal as af
    from research.train import _build_policy

    cfg = resolve_config({"dataset": "gauss-lt", "policy": "bandit", "epochs": 2, "seed": seed})
    model = torch.nn.Linear(3, 4)
    val = [(torch.randn(4, 3), torch.randint(0, 4, (4,)))]
    policy = _build_policy(cfg, af.FocalLoss("softmax"), 5, 4, model=model,
                           optimizer=torch.optim.SGD(model.parameters(), lr=0.1), meta_batches=val)
    return [int(policy.arm)] + [int(policy._draw()) for _ in range(n)]


def test_the_bandit_draws_from_the_runs_seed():
    # research/train.py used to build the bandit with its default seed: every seed drew the same gammas
    assert _bandit_arms(0) == _bandit_arms(0)
    assert _bandit_arms(0) != _bandit_arms(1)
    assert _bandit_arms(1) != _bandit_arms(2)


# -- held-out labels: where the learned controllers and the fine-tuning control draw them from ---------------------
def _spy_policy(monkeypatch, name):
    """Registers a subclass of policy ``name`` that records the keyword arguments it is built with."""
    import adaptive_focal as af
    from adaptive_focal.policies import base

    seen = {}

    class Spy(af.policy_class(name)):
        def __init__(self, loss, **kwargs):
            seen.update(kwargs)
            super().__init__(loss, **kwargs)

    monkeypatch.setitem(base._REGISTRY, name, Spy)
    return seen


def _rows(x):
    return {tuple(r) for r in x.tolist()}


@pytest.mark.parametrize("policy", ["hypergradient", "gammanet", "bandit"])
def test_learned_controllers_meta_train_on_a_slice_held_out_of_the_training_set_by_default(monkeypatch, policy):
    from research.datasets import load_dataset
    from research.train import DEFAULT_HOLDOUT, build_run, load_data

    seen = _spy_policy(monkeypatch, policy)
    cfg = resolve_config(_tiny("gauss-lt", policy=policy))
    assert (cfg.meta_data, cfg.holdout_fraction) == ("train_slice", DEFAULT_HOLDOUT)
    data, held_out = load_data(cfg)
    build_run(cfg, data, held_out)
    full = load_dataset("gauss-lt", seed=0, **TINY["gauss-lt"])
    meta_x = torch.cat([x for x, _ in seen["val_source"]])
    meta_y = torch.cat([y for _, y in seen["val_source"]])
    assert torch.equal(meta_x, held_out[0]) and torch.equal(meta_y, held_out[1])
    # the slice: training samples of every class, none of which the run trains on, none from validation
    assert _rows(meta_x) <= _rows(full.x_train) and not _rows(meta_x) & _rows(data.x_train)
    assert not _rows(meta_x) & _rows(full.x_val)
    assert len(meta_x) + len(data.x_train) == len(full.x_train)
    # every class that can spare a sample (the tail classes of one sample stay in training)
    assert set(meta_y.tolist()) == {c for c, n in enumerate(full.class_counts) if n >= 2} != set()
    assert sum(data.class_counts) == len(data.y_train)  # the counts the losses and evaluation see: what is left


def test_the_slice_is_held_out_of_every_arms_training_set_alike():
    """A study sets holdout_fraction for every arm: each trains on the same samples, whatever draws held-out
    batches; left unset, only the runs that draw from the slice hold it out (the other arms train as before)."""
    from research.datasets import load_dataset
    from research.train import load_data

    arms = [{"loss": "ce"}, {"policy": "pi"}, {"loss": "logit_adjusted"}, {"policy": "gammanet"},
            {"policy": "gammanet", "meta_data": "val"}, {"finetune_every": 2, "meta_data": "val"},
            {"finetune_every": 2}]
    trained = [load_data(resolve_config(_tiny("digits-lt", holdout_fraction=0.2, **arm)))[0] for arm in arms]
    for data in trained[1:]:
        assert torch.equal(data.x_train, trained[0].x_train) and data.class_counts == trained[0].class_counts
    full = load_dataset("digits-lt", seed=0, **TINY["digits-lt"])
    assert len(trained[0].y_train) < len(full.y_train)

    unset = {json.dumps(arm): load_data(resolve_config(_tiny("digits-lt", **arm)))[0] for arm in arms}
    for arm in ({"loss": "ce"}, {"policy": "pi"}, {"policy": "gammanet", "meta_data": "val"}):
        assert torch.equal(unset[json.dumps(arm)].x_train, full.x_train)  # the old split, bit for bit
    assert len(unset[json.dumps({"policy": "gammanet"})].y_train) < len(full.y_train)


def test_the_val_variant_meta_trains_on_the_validation_batches(monkeypatch):
    from research.train import build_run, load_data

    seen = _spy_policy(monkeypatch, "gammanet")
    cfg = resolve_config(_tiny("digits-lt", policy="gammanet", meta_data="val"))
    assert cfg.holdout_fraction == 0.0  # nothing held out: the training set as before
    data, held_out = load_data(cfg)
    assert held_out is None
    build_run(cfg, data, held_out)
    assert torch.equal(torch.cat([x for x, _ in seen["val_source"]]), data.x_val)
    assert torch.equal(torch.cat([y for _, y in seen["val_source"]]), data.y_val)
    assert all(len(y) <= cfg.batch_size for _, y in seen["val_source"])


@pytest.mark.parametrize("source", ["val", "train_slice"])
@pytest.mark.parametrize("policy", ["adafocal", "classwise_adafocal"])
def test_adafocal_reads_its_epoch_statistics_on_the_set_val_stats_data_names(monkeypatch, policy, source):
    """val_stats_data: the class-balanced validation set (default) or the slice held out of the training set,
    the labels every arm of a fair study has; the statistics are those of the chosen set's samples."""
    import adaptive_focal as af
    from adaptive_focal.policies import base
    from research.train import DEFAULT_HOLDOUT, load_data

    counts, labels = [], []

    class Spy(af.policy_class(policy)):
        def epoch_end(self, val_stats=None):
            counts.append(int(val_stats.count))
            labels.append(val_stats.class_count.tolist())
            super().epoch_end(val_stats)

    monkeypatch.setitem(base._REGISTRY, policy, Spy)
    cfg = resolve_config(_tiny("gauss-lt", policy=policy, val_stats_data=source))
    assert cfg.holdout_fraction == (DEFAULT_HOLDOUT if source == "train_slice" else 0.0)
    main(cfg)
    data, held_out = load_data(cfg)
    x, y = held_out if source == "train_slice" else data.val
    assert counts == [len(y)] * cfg.epochs  # every epoch, the chosen set's samples
    assert labels[-1] == torch.bincount(y, minlength=data.num_classes).tolist()


def test_build_run_without_the_slice_says_how_to_get_it():
    from research.datasets import load_dataset
    from research.train import build_run

    cfg = resolve_config(_tiny("digits-lt", policy="gammanet"))
    with pytest.raises(ValueError, match=r"pass the slice that load_data\(cfg\) returns"):
        build_run(cfg, load_dataset("digits-lt", seed=0, **TINY["digits-lt"]))


@pytest.mark.parametrize("meta_data", ["val", "train_slice"])
def test_the_finetune_control_takes_plain_cross_entropy_steps_on_the_held_out_batches(monkeypatch, meta_data):
    from research import train
    from research.train import build_run, load_data

    calls = []
    real = train.finetune_step

    def spy(model, optimizer, mode, x, y):
        calls.append((mode, x, y))
        return real(model, optimizer, mode, x, y)

    monkeypatch.setattr(train, "finetune_step", spy)
    cfg = resolve_config(_tiny("digits-lt", epochs=3, batch_size=16, finetune_every=4, meta_data=meta_data))
    data, held_out = load_data(cfg)
    meta = build_run(cfg, data, held_out).meta_batches
    result = main(cfg)
    steps = 3 * -(-len(data.y_train) // 16)
    assert len(calls) == steps // 4 > len(meta)  # one step per 4 training steps; the batches cycle
    for i, (mode, x, y) in enumerate(calls):
        assert mode == "softmax" and torch.equal(x, meta[i % len(meta)][0]) and torch.equal(y, meta[i % len(meta)][1])
    assert all(r["finetune_loss"] > 0 for r in result["history"])
    # the control changes the model: the same run without it ends elsewhere
    plain = main({**dataclasses.asdict(cfg), "finetune_every": 0, "holdout_fraction": cfg.holdout_fraction})
    assert not _same(plain["metrics"], result["metrics"])


def test_finetune_step_is_plain_cross_entropy():
    import torch.nn.functional as F

    from research.train import finetune_step

    for mode, y in (("softmax", torch.tensor([0, 2, 1])), ("sigmoid", torch.eye(3)[[0, 2, 1]])):
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 3)
        x = torch.randn(3, 4)
        ref = torch.nn.Linear(4, 3)
        ref.load_state_dict(model.state_dict())
        loss = finetune_step(model, torch.optim.SGD(model.parameters(), lr=0.5), mode, x, y)
        want = F.cross_entropy(ref(x), y) if mode == "softmax" else F.binary_cross_entropy_with_logits(ref(x), y)
        want.backward()
        assert float(loss) == pytest.approx(float(want.detach()))
        assert torch.allclose(model.weight, ref.weight - 0.5 * ref.weight.grad)


@pytest.mark.parametrize("overrides, match", [
    ({"meta_data": "test"}, "config key 'meta_data' must be one of 'train_slice', 'val', got 'test'"),
    ({"holdout_fraction": 1.0}, r"config key 'holdout_fraction' must be in \[0, 1\), got 1.0"),
    ({"finetune_every": -1}, "config key 'finetune_every' must be 0 \\(off\\) or a positive integer, got -1"),
    ({"policy": "gammanet", "holdout_fraction": 0.0},
     "policy 'gammanet' draws held-out batches from the training slice .* holdout_fraction=0 holds none out"),
    ({"finetune_every": 5, "holdout_fraction": 0},
     "finetune_every draws held-out batches from the training slice"),
    ({"val_stats_data": "test"}, "config key 'val_stats_data' must be one of 'val', 'train_slice', got 'test'"),
    ({"policy": "adafocal", "val_stats_data": "train_slice", "holdout_fraction": 0.0},
     "val_stats_data='train_slice' reads the end-of-epoch statistics on the training slice but holdout_fraction=0"),
])
def test_bad_held_out_settings_are_clear_errors(overrides, match):
    with pytest.raises(ValueError, match=match):
        resolve_config(overrides)


@pytest.mark.parametrize("overrides", [
    {},
    {"policy": "gammanet"},
    {"policy": "bandit", "meta_data": "val", "holdout_fraction": 0.1},
    {"loss": "ce", "finetune_every": 20, "meta_data": "val"},
    {"dataset": "gauss-lt", "holdout_fraction": 0.25, "policy_kwargs": {"every": 3}, "policy": "hypergradient"},
])
def test_configs_round_trip(tmp_path, overrides):
    cfg = resolve_config(overrides)
    again = resolve_config(json.loads(json.dumps(dataclasses.asdict(cfg))))
    assert again == cfg and resolve_config(base=cfg) == cfg
    file = tmp_path / "run.json"
    file.write_text(json.dumps(dataclasses.asdict(cfg)))
    assert parse_args(["--config", str(file)]) == cfg
    args = [f"--set={k}={json.dumps(v)}" for k, v in overrides.items()]
    assert parse_args(args) == cfg


def test_a_checkpoint_from_before_the_held_out_keys_resumes(tmp_path):
    """A checkpoint written before meta_data, holdout_fraction and finetune_every existed was made with the
    validation set and no hold-out: it resumes under those values and is refused under the new defaults."""
    overrides = {"policy": "gammanet", "policy_kwargs": {"every": 2}, "meta_data": "val"}
    main(_tiny("gauss-lt", epochs=1, out_dir=str(tmp_path), **overrides))
    path = tmp_path / "checkpoint.pt"
    state = torch.load(path, weights_only=False)
    for key in ("meta_data", "holdout_fraction", "finetune_every"):
        del state["config"][key]
    torch.save(state, path)
    full = main(_tiny("gauss-lt", epochs=2, **overrides))
    resumed = main(_tiny("gauss-lt", epochs=2, resume=str(path), **overrides))
    assert _same(resumed["metrics"], full["metrics"])
    with pytest.raises(ValueError, match=r"different config for \['holdout_fraction', 'meta_data'\]"):
        main(_tiny("gauss-lt", epochs=2, resume=str(path), policy="gammanet", policy_kwargs={"every": 2}))
    # a run that draws no held-out batches resumes under the defaults (meta_data does not matter to it)
    plain = tmp_path / "plain"
    main(_tiny("gauss-lt", epochs=1, out_dir=str(plain), policy="pi"))
    state = torch.load(plain / "checkpoint.pt", weights_only=False)
    for key in ("meta_data", "holdout_fraction", "finetune_every"):
        del state["config"][key]
    torch.save(state, plain / "checkpoint.pt")
    resumed = main(_tiny("gauss-lt", epochs=2, resume=str(plain / "checkpoint.pt"), policy="pi"))
    assert _same(resumed["metrics"], main(_tiny("gauss-lt", epochs=2, policy="pi"))["metrics"])


def _gammanet_weights(seed):
    import adaptive_focal as af
    from research.train import _build_policy

    cfg = resolve_config({"dataset": "gauss-lt", "policy": "gammanet", "epochs": 2, "seed": seed})
    model = torch.nn.Linear(3, 4)
    val = [(torch.randn(4, 3), torch.randint(0, 4, (4,)))]
    policy = _build_policy(cfg, af.FocalLoss("softmax"), 5, 4, model=model,
                           optimizer=torch.optim.SGD(model.parameters(), lr=0.1), meta_batches=val)
    return torch.cat([v.reshape(-1) for v in policy.state_dict()["network"].values()])


def test_gammanet_is_initialised_from_the_runs_seed():
    # research/train.py used to build gammanet with its default seed: every run started from the same network
    assert torch.equal(_gammanet_weights(0), _gammanet_weights(0))
    assert not torch.equal(_gammanet_weights(0), _gammanet_weights(1))
    assert not torch.equal(_gammanet_weights(1), _gammanet_weights(2))
