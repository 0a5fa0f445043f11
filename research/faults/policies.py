"""Fault injection for the gamma policies (issue 17): non-finite statistics reaching a policy, states that cannot
be loaded, and a run resumed twice. A policy must never write a non-finite gamma or freeze, and a state load must
change everything or nothing.

``scenarios()`` runs each scenario (a tiny model, seconds in all) and returns one row per scenario:
``{"scenario", "injected", "survived", "data_lost", "training_stopped"}``. The driver
``python -m research.benchmarks.fault_injection`` prints the rows of every area as one table.
"""

from __future__ import annotations

import io
import math
import warnings

import torch

import adaptive_focal as af

STEPS, BATCH, FEATURES, CLASSES, EVERY = 12, 16, 6, 3, 4  # optimizer steps, batch, inputs, classes, steps per epoch
NAN_STEP = 5

#: the policies that read statistics: (label, policy, loss mode, hyperparameters)
READERS = (
    ("automated", "automated", "softmax", {}),
    ("pi", "pi", "softmax", {"setpoint": 0.5}),
    ("pi per class", "pi", "softmax", {"setpoint": 0.5, "per_class": True, "num_classes": CLASSES}),
    ("efl", "efl", "sigmoid", {"num_classes": CLASSES}),
    ("asl_adaptive", "asl_adaptive", "sigmoid", {}),
    ("adafocal", "adafocal", "softmax", {"num_bins": 5}),
    ("classwise_adafocal", "classwise_adafocal", "softmax", {"num_classes": CLASSES, "num_bins": 5}),
    ("sequential (pi leading)", "sequential", "softmax", None),
    ("gammanet", "gammanet", "softmax", "learned"),
)


def _row(scenario: str, injected: str, survived: str, data_lost: str, stopped: bool) -> dict:
    return {"scenario": scenario, "injected": injected, "survived": survived, "data_lost": data_lost,
            "training_stopped": stopped}


def _data(mode: str, n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, FEATURES, generator=g), torch.randint(0, CLASSES, (n,), generator=g)
    return x, (torch.nn.functional.one_hot(y, CLASSES).float() if mode == "sigmoid" else y)


def _build(name: str, mode: str, kwargs, model: torch.nn.Module):
    loss = af.FocalLoss(mode, gamma=2.0)
    if kwargs is None:  # sequential: a linear warm-up into pi, which leads when the bad batch comes
        warmup = af.create_policy("linear", loss, start=0.0, end=2.0, total=2)
        pi = af.create_policy("pi", loss, setpoint=0.5)
        return loss, af.create_policy("sequential", loss, policies=[warmup, pi], milestones=[2])
    if kwargs == "learned":
        val = [_data(mode, BATCH, 7)]
        return loss, af.create_policy(name, loss, model=model, val_source=val, train_source=[_data(mode, BATCH, 8)],
                                      lr=0.3, every=3, num_classes=CLASSES)
    return loss, af.create_policy(name, loss, **kwargs)


def _finite_gamma(loss) -> bool:
    g = loss.gamma
    tensors = list(g.buffers()) if isinstance(g, torch.nn.Module) else [g]
    return all(bool(torch.isfinite(t).all()) for t in tensors)


def _gamma_key(loss) -> str:
    g = loss.gamma
    return repr([t.tolist() for t in (g.buffers() if isinstance(g, torch.nn.Module) else [g])])


def _train(label: str, name: str, mode: str, kwargs) -> dict:
    """STEPS optimizer steps; at NAN_STEP one logit of the batch (or, for the validation-driven policies, of the
    validation set at that epoch end) is NaN. The loop skips the optimizer step of a non-finite loss (as a
    gradient scaler does), so only the policy sees the bad statistics."""
    torch.manual_seed(0)
    model = torch.nn.Linear(FEATURES, CLASSES)
    loss, policy = _build(name, mode, kwargs, model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.3)
    x, y = _data(mode, STEPS * BATCH, 1)
    vx, vy = _data(mode, BATCH, 2)
    validation = policy.needs_validation and not policy.needs_stats
    stopped, gammas = None, []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(STEPS):
            idx = torch.arange(step * BATCH, (step + 1) * BATCH)
            logits = model(x[idx])
            if step == NAN_STEP and not validation:
                logits = logits.clone()
                logits[0, 1] = math.nan
            try:
                value, stats = loss(logits, y[idx], return_stats=True)
            except (ValueError, RuntimeError) as err:  # e.g. a NaN gamma written at the step before
                stopped = f"step {step}: {err}"
                break
            if torch.isfinite(value):
                optimizer.zero_grad()
                value.backward()
                optimizer.step()
            if hasattr(policy, "observe"):
                policy.observe(x[idx], y[idx])
            try:
                policy.step(stats)
                if (step + 1) % EVERY == 0:
                    with torch.no_grad():
                        val_logits = model(vx)
                    if validation and step // EVERY == NAN_STEP // EVERY:  # the epoch end after NAN_STEP
                        val_logits = val_logits.clone()
                        val_logits[0, 0] = math.nan
                    policy.epoch_end(loss(val_logits, vy, return_stats=True)[1])
            except (ValueError, RuntimeError) as err:  # a policy that refuses the statistics stops the run
                stopped = f"step {step}: {err}"
                break
            gammas.append((_finite_gamma(loss), _gamma_key(loss)))
    warned = sum(1 for w in caught if issubclass(w.category, RuntimeWarning) and "not finite" in str(w.message))
    finite = all(ok for ok, _ in gammas)
    moved_after = len({key for _, key in gammas[NAN_STEP + 1:]}) > 1
    where = (f"the validation set at the end of epoch {NAN_STEP // EVERY + 1}" if validation
             else f"the batch of step {NAN_STEP + 1}")
    if stopped or not finite:
        survived = f"no: {stopped or 'NaN written into gamma'}"
    else:
        survived = (f"gamma finite throughout, skipped_batches={policy.skipped_batches}, {warned} warning(s), "
                    f"gamma {'moves' if moved_after else 'holds'} after the bad batch")
    # the batch trained as usual; only its statistics, which hold no usable value, did not move gamma
    lost = "none (the bad batch's statistics skipped, counted)" if policy.skipped_batches else "none"
    return _row(f"non-finite statistics: {label}", f"one NaN logit in {where}", survived, lost, stopped is not None)


def _state_text(state) -> str:
    def plain(v):
        if isinstance(v, torch.Tensor):
            return v.tolist()
        if isinstance(v, dict):
            return {k: plain(u) for k, u in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(u) for u in v]
        return v
    return repr(plain(state))


def _stepped(name: str, mode: str, kwargs: dict, steps: int = 5):
    torch.manual_seed(0)
    model = torch.nn.Linear(FEATURES, CLASSES)
    loss = af.FocalLoss(mode, gamma=2.0)
    policy = af.create_policy(name, loss, **kwargs)
    x, y = _data(mode, steps * BATCH, 3)
    for idx in torch.arange(len(x)).split(BATCH):
        policy.step(loss(model(x[idx]), y[idx], return_stats=True)[1])
        if policy.needs_validation:
            policy.epoch_end(loss(model(x[idx]), y[idx], return_stats=True)[1])
    return loss, policy


CORRUPTIONS = {
    "truncated (its last key missing)": lambda s: {k: v for k, v in s.items() if k != list(s)[-1]},
    "NaN controller values": lambda s: {k: (torch.full_like(v, math.nan) if isinstance(v, torch.Tensor)
                                            and v.is_floating_point() else v) for k, v in s.items()},
    "NaN last gamma": lambda s: {**s, "last_gamma": math.nan},
    "a bad epoch counter": lambda s: {**s, "epoch": "7"},
    "no 'policy' key": lambda s: {k: v for k, v in s.items() if k != "policy"},
}
STATE_POLICIES = (("pi", "softmax", {"setpoint": 0.5}), ("efl", "sigmoid", {"num_classes": CLASSES}),
                  ("adafocal", "softmax", {"num_bins": 5}), ("automated", "sigmoid", {}))


def _bad_states() -> list[dict]:
    rows = []
    for what, corrupt in CORRUPTIONS.items():
        refused, unchanged = 0, 0
        for name, mode, kwargs in STATE_POLICIES:
            loss, policy = _stepped(name, mode, kwargs)
            good = policy.state_dict()
            before = (_state_text(good), _gamma_key(loss))
            try:
                policy.load_state_dict(corrupt(good))
            except (ValueError, TypeError):
                refused += 1
            unchanged += before == (_state_text(policy.state_dict()), _gamma_key(loss))
        n = len(STATE_POLICIES)
        rows.append(_row(f"state load: {what}", f"{what} given to load_state_dict of "
                         f"{', '.join(p for p, _, _ in STATE_POLICIES)}",
                         f"{refused}/{n} refused, {unchanged}/{n} left policy and loss unchanged",
                         "none" if unchanged == n else "the policy's state (partly overwritten)", False))
    # every policy given every other policy's state
    states, loaded = {}, 0
    cases = [(name, mode, kwargs) for name, mode, kwargs in STATE_POLICIES]
    for name, mode, kwargs in cases:
        states[name] = _stepped(name, mode, kwargs)[1].state_dict()
    pairs = 0
    for name, mode, kwargs in cases:
        for other, state in states.items():
            if other == name:
                continue
            for variant in (state, {k: v for k, v in state.items() if k != "policy"}):
                pairs += 1
                try:
                    _stepped(name, mode, kwargs, steps=1)[1].load_state_dict(variant)
                    loaded += 1
                except (ValueError, TypeError):
                    pass
    rows.append(_row("state load: another policy's state", f"each of {len(cases)} policies given the others' "
                     "states, with and without their 'policy' key", f"{pairs - loaded}/{pairs} refused",
                     "none" if loaded == 0 else f"{loaded} foreign state(s) loaded", False))
    return rows


def _bandit_resumed_twice() -> dict:
    def run(restarts):
        torch.manual_seed(0)
        model = torch.nn.Linear(FEATURES, CLASSES)
        val = [_data("softmax", BATCH, 11 + i) for i in range(3)]
        loss = af.FocalLoss("softmax", gamma=2.0)
        build = lambda: af.create_policy("bandit", loss, model=model, val_source=val, every=3, seed=4)  # noqa: E731
        policy = build()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.3)
        x, y = _data("softmax", STEPS * BATCH, 1)
        trace, kept = [], True
        for step in range(STEPS):
            for _ in range(restarts.count(step)):  # a restart: the state through a file into a new policy
                buffer = io.BytesIO()
                torch.save(policy.state_dict(), buffer)
                buffer.seek(0)
                saved = torch.load(buffer, weights_only=False)
                policy = build()
                policy.load_state_dict(saved)
                kept &= _state_text(policy.state_dict()) == _state_text(saved)
            idx = torch.arange(step * BATCH, (step + 1) * BATCH)
            value = loss(model(x[idx]), y[idx])
            optimizer.zero_grad()
            value.backward()
            optimizer.step()
            policy.step()
            trace.append(float(loss.gamma))
        final = policy.state_dict()
        return trace, _state_text({k: final[k] for k in ("log_weights", "start_loss", "last_reward")}), kept

    (full, end, _), (twice, end_twice, kept) = run(()), run((5, 5, 8))  # twice in a row at step 5, again at 8
    same = full == twice and end == end_twice
    survived = ("identical gamma trajectory and bandit state" if same else "the run differs from the uninterrupted one")
    survived += "; a state saved right after a load equals the loaded one" if kept else "; a state saved right " \
        "after a load differs from the loaded one"
    return _row("bandit resumed twice in a row", "save -> load -> save -> load mid-window, then again later",
                survived, "none" if same and kept else "the bandit's window position", False)


def scenarios() -> list[dict]:
    """Runs every scenario; one row each."""
    rows = [_train(*case) for case in READERS]
    rows += _bad_states()
    rows.append(_bandit_resumed_twice())
    return rows


if __name__ == "__main__":
    for row in scenarios():
        print(row)
