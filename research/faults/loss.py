"""Fault injection into the focal losses: random calls, non-finite logits, bad arguments, a NaN batch.

Every scenario runs a fuzz of random calls of :func:`adaptive_focal.sigmoid_focal_loss` and
:func:`adaptive_focal.softmax_focal_loss` (shapes, dtypes, every gamma form, reductions, ignore_index, label
smoothing, class priors; some inputs large enough for the fused C kernel) and checks each call against the
library's documented behaviour:

* a valid call returns the same loss, gradient and statistics on its fast path (the fused C kernel, the C
  statistics passes) and on the pure-PyTorch path, finite for finite inputs;
* non-finite logits give what README "Numerics" documents: finite gradients for infinite logits (the loss is
  inf or 0), NaN for NaN, statistics whose sums are NaN where a NaN element is counted, and nothing at all from
  ignored elements (the loss equals that of the same call with those logits set to 0);
* a call with one bad argument raises ValueError or TypeError whose message names that argument.

``python -m research.faults.loss`` prints the rows; ``scenarios()`` is what the fault-injection table calls.
"""

from __future__ import annotations

import contextlib
import math
import random
import re
import time

import torch

import adaptive_focal as af
import adaptive_focal._kernels as kernels
import adaptive_focal.functional as functional

STAT_FIELDS = ("count", "n_pos", "sum_pt", "sum_loss", "sum_grad_norm", "pt_hist", "class_count", "class_sum_pt",
               "sum_pt_pos", "class_sum_grad_pos", "class_sum_grad_neg", "conf_count", "conf_sum", "correct_sum",
               "class_conf_count", "class_conf_sum", "class_correct_sum")
TOL = {torch.float64: 1e-9, torch.float32: 2e-4, torch.float16: 2e-2, torch.bfloat16: 5e-2}


@contextlib.contextmanager
def pytorch_path():
    """Every call takes the pure-PyTorch path (loss and statistics) while inside."""
    saved = (kernels.kernel_available, functional._sigmoid_stats_kernel_fits, functional._softmax_stats_kernel_fits)
    kernels.kernel_available = functional._sigmoid_stats_kernel_fits = lambda *args: False
    functional._softmax_stats_kernel_fits = lambda *args: False
    try:
        yield
    finally:
        kernels.kernel_available, functional._sigmoid_stats_kernel_fits, functional._softmax_stats_kernel_fits = saved


# ---------------------------------------------------------------------------------------------------------------
# random calls
# ---------------------------------------------------------------------------------------------------------------
def _sigmoid_call(rng: random.Random, gen: torch.Generator, large: bool) -> dict:
    if large:
        c = rng.randint(1, 40)
        shape = (kernels.MIN_NUMEL // c + rng.randint(1, 9), c)
    else:
        shape = rng.choice([(rng.randint(1, 12),), (rng.randint(0, 12), rng.randint(1, 6)),
                            (rng.randint(1, 5), rng.randint(1, 5), rng.randint(1, 4)), ()])
    dtype = torch.float32 if large else rng.choice([torch.float32, torch.float32, torch.float64, torch.float16,
                                                    torch.bfloat16])
    c = shape[1] if len(shape) >= 2 else 1
    x = (torch.randn(shape, generator=gen) * rng.choice([1.0, 4.0, 30.0])).to(dtype)
    t = torch.rand(shape, generator=gen)
    t = (t < 0.3).float() if rng.random() < 0.7 else t
    kw = dict(reduction=rng.choice(["none", "mean", "sum", "positives"]), return_stats=True,
              detach_modulator=rng.random() < 0.2, label_smoothing=rng.choice([0.0, 0.0, 0.1]))
    if rng.random() < 0.4:
        kw["ignore_index"] = -1.0
        t = torch.where(torch.rand(shape, generator=gen) < 0.2, -1.0, t)
    per_class = len(shape) >= 2
    form = rng.choice(["float", "float", "0d", "elem", "table", "mixture", "asymmetric"]
                      + (["per_class", "efl"] if per_class else []))
    kw["gamma"] = {
        "float": lambda: rng.choice([0.0, 0.5, 2.0, -1.0, rng.uniform(-2, 5)]),
        "0d": lambda: torch.tensor(rng.uniform(0, 4)),
        "per_class": lambda: torch.rand(c, generator=gen) * 4 - 1,
        "elem": lambda: torch.rand(shape, generator=gen) * 3,
        "table": lambda: af.GammaTable([0.0, 0.3, 0.7, 1.0], torch.rand((c, 3) if per_class else (3,),
                                                                        generator=gen) * 4 - 1),
        "mixture": lambda: af.FocalMixture([2.0, -1.0], [0.7, 0.3]),
        "efl": lambda: af.FocalMixture(torch.rand(1, c, generator=gen) * 3, torch.rand(1, c, generator=gen) + 0.5),
        "asymmetric": lambda: af.AsymmetricGamma(0.0, 4.0),
    }[form]()
    if rng.random() < 0.3:
        kw["alpha"] = rng.choice([0.25, torch.rand(c, generator=gen)]) if per_class else 0.25
    if rng.random() < 0.2:
        kw["weight"] = torch.rand(shape, generator=gen) + 0.5
    if rng.random() < 0.2:
        kw["class_priors"], kw["tau"] = torch.rand(c, generator=gen) * 0.8 + 0.05, rng.choice([0.5, 1.0])
    return dict(fn=af.sigmoid_focal_loss, x=x, t=t, kw=kw, ignored=(t == -1.0) if "ignore_index" in kw else None)


def _softmax_call(rng: random.Random, gen: torch.Generator) -> dict:
    c = rng.randint(1, 7)
    shape = rng.choice([(rng.randint(0, 12), c), (rng.randint(1, 4), c, rng.randint(1, 5)), (c,)])
    dtype = rng.choice([torch.float32, torch.float32, torch.float64, torch.float16])
    x = (torch.randn(shape, generator=gen) * rng.choice([1.0, 4.0, 30.0])).to(dtype)
    sample = (shape[0],) + shape[2:] if len(shape) >= 2 else ()
    kw = dict(reduction=rng.choice(["none", "mean", "sum"]), return_stats=True,
              detach_modulator=rng.random() < 0.2, label_smoothing=rng.choice([0.0, 0.0, 0.1]))
    ignored = None
    if rng.random() < 0.7:
        t = torch.randint(0, c, sample, generator=gen)
        kw["ignore_index"] = rng.choice([-100, -100, None])
        if kw["ignore_index"] is not None and t.numel():
            ignored = torch.rand(sample, generator=gen) < 0.2
            t = torch.where(ignored, -100, t)
    else:
        t = torch.softmax(torch.randn(shape, generator=gen) * 2, 1 if len(shape) >= 2 else 0)
    batched = (shape[0], 1) + shape[2:] if len(shape) >= 2 else None
    forms = ["float", "0d", "per_class", "term", "table", "mixture"] + (["per_sample"] if batched else [])
    form = rng.choice(forms)
    kw["gamma"] = {
        "float": lambda: rng.choice([0.0, 0.5, 2.0, -1.0, rng.uniform(-2, 5)]),
        "0d": lambda: torch.tensor(rng.uniform(0, 4)),
        "per_class": lambda: torch.rand(c, generator=gen) * 4 - 1,
        "term": lambda: torch.rand(shape, generator=gen) * 3,
        "per_sample": lambda: torch.rand(batched, generator=gen) * 3,
        "table": lambda: af.GammaTable([0.0, 0.3, 0.7, 1.0], torch.rand(c, 3, generator=gen) * 4 - 1),
        "mixture": lambda: af.FocalMixture([2.0, -1.0], [0.7, 0.3]),
    }[form]()
    if rng.random() < 0.3:
        kw["alpha"] = torch.rand(c, generator=gen)
    if rng.random() < 0.3:
        kw["weight"] = torch.rand(c, generator=gen) + 0.5
    if rng.random() < 0.3:
        kw["class_priors"], kw["tau"] = torch.randint(1, 1000, (c,), generator=gen), rng.choice([0.5, 1.0, 2.0])
    return dict(fn=af.softmax_focal_loss, x=x, t=t, kw=kw, ignored=ignored)


def _inject_nonfinite(call: dict, rng: random.Random, gen: torch.Generator) -> str:
    """Puts +-inf and NaN into some logits; returns which kinds ('inf', 'nan', '-inf') went in."""
    x = call["x"].clone()
    if x.numel() == 0:
        return ""
    flat = x.view(-1)
    kinds = rng.choice([("inf", "-inf"), ("nan",), ("inf", "-inf", "nan"), ("-inf",)])
    for kind in kinds:
        for _ in range(rng.randint(1, 3)):
            flat[rng.randrange(flat.numel())] = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}[kind]
    call["x"] = x
    return ",".join(kinds)


def _run(call: dict):
    x = call["x"].detach().clone().requires_grad_()
    loss, stats = call["fn"](x, call["t"], **call["kw"])
    loss.sum().backward() if loss.requires_grad else None
    return loss.detach(), (x.grad if x.grad is not None else torch.zeros_like(x)), stats


def _same(a: torch.Tensor, b: torch.Tensor, tol: float) -> bool:
    if a.shape != b.shape or not torch.equal(a.isnan(), b.isnan()):
        return False
    a, b = a.double(), b.double()
    scale = max(float(b[b.isfinite()].abs().max()) if b.isfinite().any() else 0.0, 1.0)
    return bool(torch.allclose(a, b, rtol=tol, atol=tol * scale, equal_nan=True))


def _check_valid(call: dict, injected: str) -> str | None:
    """None when the call behaves as documented, else what went wrong."""
    fast = _run(call)
    with pytorch_path():
        slow = _run(call)
    tol = TOL[call["x"].dtype] * (10 if injected else 1)
    for name, a, b in (("loss", fast[0], slow[0]), ("gradient", fast[1], slow[1])):
        if not _same(a, b, tol):
            return f"{name} differs between the fast and the PyTorch path"
    for name in STAT_FIELDS:
        a, b = getattr(fast[2], name), getattr(slow[2], name)
        if (a is None) != (b is None) or (a is not None and not _same(a, b, tol)):
            return f"statistics field {name} differs between the fast and the PyTorch path"
    loss, grad, stats = fast
    sigmoid = call["fn"] is af.sigmoid_focal_loss
    ignored = call["ignored"]
    x = call["x"]
    if not injected:
        if not (loss.isfinite().all() and grad.isfinite().all() and stats.sum_pt.isfinite()):
            return "non-finite result for finite inputs"
        return None
    counted = x if ignored is None else (x[~ignored] if sigmoid else x.movedim(1, -1)[~ignored] if x.dim() >= 2
                                         else x)
    if sigmoid:
        if not counted.isnan().any() and not grad.isfinite().all():
            return "non-finite gradient at infinite logits"
        if counted.isnan().any() and not stats.sum_pt.isnan():
            return "a NaN logit left the statistics' sums finite"
    else:  # NaN, +inf, or a sample whose every logit is -inf, has no softmax: NaN, as in F.cross_entropy
        undefined = counted.isnan().any() or (counted == math.inf).any() or (
            x == -math.inf).all(1 if x.dim() >= 2 else 0).any()
        if not undefined and ignored is None and not grad.isfinite().all():
            return "non-finite gradient with only -inf logits"
    if ignored is not None and ignored.any():  # ignored elements contribute nothing, whatever their logits
        clean = dict(call, x=torch.where(ignored if sigmoid else _along_samples(ignored, x), 0.0, x))
        if not _same(loss, _run(clean)[0], 0.0):
            return "an ignored element's logit changed the loss"
    return None


def _along_samples(ignored: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return ignored.unsqueeze(1).expand_as(x) if x.dim() >= 2 else ignored.expand_as(x)


# ---------------------------------------------------------------------------------------------------------------
# bad arguments: (argument named in the message, how to break a valid call)
# ---------------------------------------------------------------------------------------------------------------
def _bad(arg: str, **change):
    return arg, change


BAD_SIGMOID = [
    _bad("gamma", gamma=math.nan), _bad("gamma", gamma=math.inf), _bad("gamma", gamma=-math.inf),
    _bad("gamma", gamma=torch.tensor([1.0, math.inf])), _bad("gamma", gamma=torch.ones(7)),
    _bad("gamma", gamma=af.GammaTable([0.0, 0.5, 1.0], [1.0, math.inf])),
    _bad("target", target="nan"), _bad("target", target="out_of_range"), _bad("target", target="shape"),
    _bad("reduction", reduction="avg"), _bad("label_smoothing", label_smoothing=1.0),
    _bad("alpha", alpha=1.5), _bad("weight", weight=torch.tensor([1.0, math.nan])),
    _bad("ignore_index", ignore_index=math.nan), _bad("stat_bins", stat_bins=0),
    _bad("class_priors", class_priors=torch.tensor([0.5, 1.5])), _bad("class_priors", class_priors=torch.ones(3)),
    _bad("tau", class_priors=torch.tensor([0.2, 0.3]), tau=math.inf), _bad("tau", tau=2.0),
    _bad("input", input="int"),
]
BAD_SOFTMAX = [
    _bad("gamma", gamma=math.nan), _bad("gamma", gamma=torch.tensor([1.0, math.inf, 2.0])),
    _bad("gamma", gamma="per_sample_1d"), _bad("gamma", gamma="ambiguous_nd"),
    _bad("target", target="nan_prob"), _bad("target", target="out_of_range"), _bad("target", target="shape"),
    _bad("reduction", reduction="positives"), _bad("alpha", alpha=0.25), _bad("weight", weight=torch.ones(4)),
    _bad("weight", weight=torch.tensor([1.0, math.inf, 1.0])), _bad("ignore_index", ignore_index=1.5),
    _bad("class_priors", class_priors=torch.tensor([5, 0, 1])), _bad("class_priors", class_priors=[[1, 2, 3]]),
    _bad("tau", class_priors=torch.tensor([5, 2, 1]), tau=math.nan), _bad("input", input="int"),
]


def _bad_call(rng: random.Random, gen: torch.Generator) -> tuple[str, str | None]:
    """One call with one bad argument: (the argument, None when it raised an error naming it, else what happened)."""
    sigmoid = rng.random() < 0.5
    arg, change = rng.choice(BAD_SIGMOID if sigmoid else BAD_SOFTMAX)
    n = rng.choice([5, 6, 8])
    if sigmoid:
        x, t = torch.randn(n, 2, generator=gen), (torch.rand(n, 2, generator=gen) < 0.5).float()
    else:
        x, t = torch.randn(n, 3, generator=gen), torch.randint(0, 3, (n,), generator=gen)
    kw = dict(change)
    special = {k: kw.pop(k) for k in ("input", "target") if k in kw}
    if special.get("input") == "int":
        x = x.long()
    target = special.get("target")
    if target == "nan":
        t[0, 0] = math.nan
    elif target == "nan_prob":
        t = torch.full((n, 3), 1 / 3)
        t[1, 2] = math.nan
    elif target == "out_of_range":
        t[0] = 7 if not sigmoid else 2.0
    elif target == "shape":
        t = t[:-1]
    if kw.get("gamma") == "per_sample_1d":
        kw["gamma"] = torch.rand(n)
    elif kw.get("gamma") == "ambiguous_nd":
        x, t, kw["gamma"] = torch.randn(n, 3, 4), torch.randint(0, 3, (n, 4)), torch.rand(n, 4)
    fn = af.sigmoid_focal_loss if sigmoid else af.softmax_focal_loss
    try:
        fn(x, t, **kw)
    except (ValueError, TypeError) as err:
        if re.search(rf"\b{re.escape(arg)}\b", str(err)):
            return arg, None
        return arg, f"{type(err).__name__} without naming {arg}: {err}"
    except Exception as err:  # noqa: BLE001 - any other exception is the finding
        return arg, f"{type(err).__name__} instead of ValueError/TypeError: {err}"
    return arg, "no error"


# ---------------------------------------------------------------------------------------------------------------
# scenarios
# ---------------------------------------------------------------------------------------------------------------
def run(calls: int = 3000, seed: int = 0) -> dict:
    """The fuzz: ``calls`` random calls, about 2/3 valid (some with non-finite logits) and 1/3 with a bad argument.
    Returns counts and the failures found (scenario, description)."""
    rng, gen = random.Random(seed), torch.Generator().manual_seed(seed)
    # the sigmoid confidence bins (opt-in) are drawn from a stream of their own, so the calls are those of before
    # they existed, half of the sigmoid ones now with the bins
    conf_rng = random.Random(f"confidence-{seed}")
    counts = {"valid": 0, "nonfinite": 0, "bad": 0, "large": 0, "confidence": 0}
    failures: list[tuple[str, str]] = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only add synchronisation (restored below)
    try:
        _fuzz(calls, rng, gen, counts, failures, conf_rng)
    finally:
        torch.set_num_threads(threads)
    return {"counts": counts, "failures": failures}


def _fuzz(calls, rng, gen, counts, failures, conf_rng) -> None:
    for i in range(calls):
        kind = rng.choices(["valid", "nonfinite", "bad"], weights=[5, 3, 4])[0]
        counts[kind] += 1
        if kind == "bad":
            arg, problem = _bad_call(rng, gen)
            if problem:
                failures.append(("bad", f"call {i}, bad {arg}: {problem}"))
            continue
        large = kernels.kernel_available("cpu") and rng.random() < 0.02
        counts["large"] += large
        call = _sigmoid_call(rng, gen, large) if large or rng.random() < 0.55 else _softmax_call(rng, gen)
        if call["fn"] is af.sigmoid_focal_loss and conf_rng.random() < 0.5:
            call["kw"]["confidence_stats"] = True
            counts["confidence"] += 1
        injected = _inject_nonfinite(call, rng, gen) if kind == "nonfinite" else ""
        try:
            problem = _check_valid(call, injected)
        except Exception as err:  # noqa: BLE001 - a valid call must not raise
            problem = f"raised {type(err).__name__}: {err}"
        if problem:
            failures.append((kind, f"call {i} ({call['fn'].__name__}, shape {tuple(call['x'].shape)}, "
                                   f"{call['x'].dtype}, {injected or 'finite'}): {problem}"))


def nan_batch_statistics() -> str | None:
    """A batch with one NaN logit: its statistics are non-finite on the C pass and on the PyTorch path alike (a
    policy skips such a batch), and its counts are intact. None when so, else what differs."""
    gen = torch.Generator().manual_seed(1)
    x, t = torch.randn(32, 5, generator=gen), (torch.rand(32, 5, generator=gen) < 0.3).float()
    x[3, 2] = math.nan
    y = torch.randint(0, 5, (32,), generator=gen)
    for fn, target in ((af.sigmoid_focal_loss, t), (af.softmax_focal_loss, y)):
        _, fast = fn(x, target, return_stats=True)
        with pytorch_path():
            _, slow = fn(x, target, return_stats=True)
        for s in (fast, slow):
            if s.mean_pt.isfinite() or int(s.count) != (160 if fn is af.sigmoid_focal_loss else 32):
                return f"{fn.__name__}: mean_pt {float(s.mean_pt)} with count {int(s.count)}"
        if int(fast.pt_hist.sum()) != int(slow.pt_hist.sum()) or not torch.equal(fast.pt_hist, slow.pt_hist):
            return f"{fn.__name__}: the p_t histograms differ between the C pass and the PyTorch path"
    return None


def scenarios(calls: int = 3000, seed: int = 0) -> list[dict]:
    start = time.perf_counter()
    result = run(calls, seed)
    seconds = time.perf_counter() - start
    counts, failures = result["counts"], result["failures"]

    def row(scenario, kind, injected, ok_text, stopped):
        found = [text for k, text in failures if k == kind]
        survived = ok_text if not found else f"FAILED {len(found)}: " + "; ".join(found[:3])
        return {"scenario": scenario, "injected": injected, "survived": survived, "data_lost": "none",
                "training_stopped": stopped}

    rows = [
        row("loss fuzz: valid calls", "valid",
            f"{counts['valid']} random calls: shapes, dtypes, every gamma form, reductions, ignore_index, label "
            f"smoothing, class priors ({counts['large']} of these and the non-finite calls large enough for the "
            f"fused C kernel; {counts['confidence']} sigmoid calls of both kinds with the confidence bins)",
            "every call returned finite values, equal on the fast (C) and the PyTorch path", False),
        row("loss fuzz: non-finite logits", "nonfinite",
            f"{counts['nonfinite']} random calls with +-inf and NaN logits, some on ignored elements",
            "documented values, equal on both paths: finite gradients at +-inf, NaN statistics sums for counted "
            "NaN, ignored elements without effect", False),
        row("loss fuzz: bad arguments", "bad",
            f"{counts['bad']} calls with one bad argument (NaN / inf gamma, ambiguous softmax gamma shapes, NaN "
            "targets, bad priors / tau, ...)",
            "every call raised ValueError or TypeError naming the argument: a bad setting is refused when the "
            "FocalLoss is built or at the first step, before any training, never half-way", False),
    ]
    problem = nan_batch_statistics()
    rows.append({"scenario": "NaN logit in a training batch", "injected": "one NaN logit in a batch of 32",
                 "survived": problem and f"FAILED: {problem}" or
                 "statistics non-finite (mean_pt NaN, counts intact) on the C pass and the PyTorch path alike: a "
                 "policy can skip the batch", "data_lost": "none", "training_stopped": False})
    rows[0]["injected"] += f" (the fuzz took {seconds:.1f} s)"
    return rows


if __name__ == "__main__":
    for r in scenarios():
        print(r)
