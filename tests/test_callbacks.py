"""GammaCallback in a plain training loop: same trajectory as driving the policy by hand, logging, resume."""

import json
import warnings

import pytest
import torch

import adaptive_focal as af
from adaptive_focal.callbacks import GammaCallback, JSONLinesLogger, MemoryLogger, gamma_record
from adaptive_focal.metrics import ece_from_stats


def _data(step):
    g = torch.Generator().manual_seed(step)
    return torch.randn(32, 6, generator=g), torch.randint(0, 3, (32,), generator=g)


def _setup(policy="pi", **kwargs):
    torch.manual_seed(0)
    model = torch.nn.Linear(6, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    loss = af.FocalLoss("softmax", gamma=2.0)
    return model, opt, loss, af.create_policy(policy, loss, **kwargs)


def _train(model, opt, loss, on_step, on_epoch, steps=8, per_epoch=4, start=0):
    for step in range(start, steps):
        x, y = _data(step)
        value, stats = loss(model(x), y, return_stats=True)
        opt.zero_grad()
        value.backward()
        opt.step()
        on_step(stats)
        if (step + 1) % per_epoch == 0:
            with torch.no_grad():
                vx, vy = _data(1000 + step)
                _, val = loss(model(vx), vy, return_stats=True)
            on_epoch(val)


def test_callback_gives_the_trajectory_of_the_policy_itself():
    model, opt, loss, policy = _setup()
    direct = []
    _train(model, opt, loss, lambda s: (policy.step(s), direct.append(float(loss.gamma))), policy.epoch_end)

    model, opt, loss, policy = _setup()
    history = MemoryLogger()
    callback = GammaCallback(policy, loggers=[history], log_every=1)
    _train(model, opt, loss, callback.on_train_batch_end, callback.on_epoch_end)
    assert [r["gamma"] for r in history.steps] == pytest.approx(direct)
    assert [r["step"] for r in history.steps] == list(range(1, 9))
    assert [r["epoch"] for r in history.epochs] == [1, 2]


def test_records_hold_the_statistics_and_validation_ece():
    model, opt, loss, policy = _setup()
    history = MemoryLogger()
    callback = GammaCallback(policy, loggers=[history], log_every=4)
    seen = []

    def on_epoch(val):
        seen.append(float(ece_from_stats(val)))
        callback.on_epoch_end(val)

    _train(model, opt, loss, callback.on_train_batch_end, on_epoch)
    assert [r["step"] for r in history.steps] == [4, 8]  # every log_every steps
    train = history.steps[0]["train"]
    assert train["count"] == 32 and 0.0 < train["mean_pt"] < 1.0 and train["mean_loss"] > 0.0
    assert [r["val"]["ece"] for r in history.epochs] == pytest.approx(seen)


def test_a_failing_logger_is_dropped_after_three_failures_in_a_row():
    class Broken:
        def log_step(self, record):
            raise ConnectionError("tracker is down")

        def log_epoch(self, record):
            raise ConnectionError("tracker is down")

    model, opt, loss, policy = _setup()
    history = MemoryLogger()
    callback = GammaCallback(policy, loggers=[Broken(), history], log_every=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _train(model, opt, loss, callback.on_train_batch_end, callback.on_epoch_end)
    messages = [str(w.message) for w in caught if "Broken failed" in str(w.message)]
    assert len(messages) == 2 and "missed this record" in messages[0] and "failed 3 times in a row" in messages[1]
    assert callback.loggers == [history]  # dropped after 3 failures in a row
    assert len(history.steps) == 8 and len(history.epochs) == 2  # training and the other logger went on


def test_a_logger_that_fails_for_a_moment_misses_only_those_records():
    class Blip(MemoryLogger):
        """A tracker that is down for its 3rd and 4th record."""

        calls = 0

        def log_step(self, record):
            Blip.calls += 1
            if Blip.calls in (3, 4):
                raise ConnectionError("tracker restarting")
            super().log_step(record)

    model, opt, loss, policy = _setup()
    blip, history = Blip(), MemoryLogger()
    callback = GammaCallback(policy, loggers=[blip, history], log_every=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _train(model, opt, loss, callback.on_train_batch_end, callback.on_epoch_end)
    assert len([w for w in caught if "Blip failed" in str(w.message)]) == 1  # once, when it started failing
    assert callback.loggers == [blip, history]  # kept: it recovered before 3 failures in a row
    assert [r["step"] for r in blip.steps] == [r["step"] for r in history.steps if r["step"] not in (3, 4)]
    with pytest.raises(ValueError, match="max_logger_failures must be a positive integer, got 0"):
        GammaCallback(policy, max_logger_failures=0)


def test_resume_from_state_dict_continues_exactly(tmp_path):
    model, opt, loss, policy = _setup()
    full = MemoryLogger()
    cb = GammaCallback(policy, loggers=[full], log_every=1)
    _train(model, opt, loss, cb.on_train_batch_end, cb.on_epoch_end)

    model, opt, loss, policy = _setup()
    first = MemoryLogger()
    cb = GammaCallback(policy, loggers=[first], log_every=1)
    _train(model, opt, loss, cb.on_train_batch_end, cb.on_epoch_end, steps=4)
    torch.save({"callback": cb.state_dict(), "model": model.state_dict(), "opt": opt.state_dict(),
                "loss": loss.state_dict()}, tmp_path / "ckpt.pt")

    model, opt, loss, policy = _setup()  # a fresh process would rebuild everything like this
    resumed = MemoryLogger()
    cb = GammaCallback(policy, loggers=[resumed], log_every=1)
    ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=False)
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["opt"])
    loss.load_state_dict(ckpt["loss"])
    cb.load_state_dict(ckpt["callback"])
    assert resumed.steps == first.steps  # the logger's history came back too
    _train(model, opt, loss, cb.on_train_batch_end, cb.on_epoch_end, start=4)
    assert resumed.steps == full.steps and resumed.epochs == full.epochs


def test_jsonlines_logger_writes_one_object_per_record(tmp_path):
    model, opt, loss, policy = _setup("adafocal", num_bins=4, rebin=False)
    path = tmp_path / "runs" / "gamma.jsonl"
    cb = GammaCallback(policy, loggers=[JSONLinesLogger(path)], log_every=2)
    _train(model, opt, loss, cb.on_train_batch_end, cb.on_epoch_end)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["kind"] for r in records] == ["step", "step", "epoch", "step", "step", "epoch"]
    table = records[-1]["gamma"]  # AdaFocal's GammaTable as plain lists
    assert len(table["edges"]) == 5 and len(table["values"]) == 4


def test_gamma_record_forms():
    assert gamma_record(2.0) == 2.0
    assert gamma_record(torch.tensor(1.5)) == 1.5
    assert gamma_record(torch.tensor([1.0, 2.0])) == [1.0, 2.0]
    assert gamma_record(af.GammaTable([0.0, 0.5, 1.0], [3.0, 1.0])) == {"form": "GammaTable", "edges": [0.0, 0.5, 1.0],
                                                                          "values": [3.0, 1.0]}


@pytest.mark.parametrize("kwargs, error, match", [
    ({"policy": "pi"}, TypeError, "policy must be a GammaPolicy"),
    ({"log_every": 0}, ValueError, "log_every must be a positive integer, got 0"),
    ({"loggers": [object()]}, TypeError, "loggers must have log_step"),
])
def test_bad_arguments(kwargs, error, match):
    _, _, loss, policy = _setup()
    args = {"policy": policy, **kwargs}
    with pytest.raises(error, match=match):
        GammaCallback(**args)
    with pytest.raises(ValueError, match="holds 2 logger states"):
        GammaCallback(policy, loggers=[MemoryLogger()]).load_state_dict(
            {"policy": policy.state_dict(), "loggers": [None, None]})


def test_sigmoid_records_hold_ece_and_accuracy_of_the_elements():
    """Sigmoid statistics carry confidence bins: their records report the ECE and accuracy of the elements as
    binary predictions (no balanced accuracy: the statistics do not split each label's positives), and a sigmoid
    AdaFocal policy driven by the callback moves its table."""
    from adaptive_focal.callbacks import stats_record

    torch.manual_seed(0)
    model = torch.nn.Linear(6, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    loss = af.FocalLoss("sigmoid")
    history = MemoryLogger()
    callback = GammaCallback(af.create_policy("adafocal", loss, num_bins=5), loggers=[history], log_every=4)
    for step in range(8):
        x, y = _data(step)
        value, stats = loss(model(x) * 3.0, torch.nn.functional.one_hot(y, 3).float(), return_stats=True)
        opt.zero_grad()
        value.backward()
        opt.step()
        callback.on_train_batch_end(stats)
        if (step + 1) % 4 == 0:
            with torch.no_grad():
                vx, vy = _data(1000 + step)
                _, val = loss(model(vx) * 3.0, torch.nn.functional.one_hot(vy, 3).float(), return_stats=True)
            callback.on_epoch_end(val)
    record = history.epochs[-1]["val"]
    assert record["ece"] == pytest.approx(float(ece_from_stats(val)))
    assert record["accuracy"] == pytest.approx(float(val.correct_sum.sum()) / (32 * 3))
    assert "balanced_accuracy" not in record and "recall" not in record["classes"]
    assert sum(record["bins"]["count"]) == 32 * 3 and record["bins"]["edges"] == pytest.approx(val.edges.tolist())
    assert "ece" in history.steps[0]["train"]
    assert not torch.equal(loss.gamma.values, torch.ones(5))  # AdaFocal moved its gammas at each epoch end
    assert stats_record(val) == {k: v for k, v in record.items() if k not in ("bins", "classes")}
