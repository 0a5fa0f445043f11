"""The quick-config check: rerun one small experiment and compare its test metrics with committed values.

``paper/expected/quick.json`` holds the config (digits-lt, a few epochs, one thread, seed 0, the ``automated``
policy so that a policy's code path is exercised), the test metrics it gave when the file was written, the
versions it was written with, and an absolute tolerance per metric. On one machine a CPU run is deterministic for
its seed (research/README.md), so the metrics repeat exactly there. Another CPU or torch build may sum in another
order (other SIMD widths, other kernels), which changes the weights by float rounding; after a few epochs that can
move a borderline test sample across a decision boundary. The digits-lt test set has 50 samples per class, so one
such sample moves balanced accuracy by 0.002 and one class's recall by 0.02; the tolerances allow a handful of
them, and larger moves for the calibration metrics, which depend on every probability rather than on argmaxes.
A difference beyond them is a change in behaviour (the loss, a policy, the training script or the data), not
noise.

    python -m paper.quick                                   # run and compare with paper/expected/quick.json
    python -m paper.quick --write paper/expected/quick.json # rerun and rewrite the expected values
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
from pathlib import Path

EXPECTED = Path(__file__).with_name("expected") / "quick.json"
CONFIG = {"dataset": "digits-lt", "epochs": 5, "seed": 0, "threads": 1, "loss": "focal", "gamma": 2.0,
          "policy": "automated"}
#: metric -> absolute tolerance (see the module docstring)
TOLERANCES = {"balanced_accuracy": 0.01, "accuracy": 0.01, "macro_f1": 0.015, "recall_few": 0.03,
              "ece": 0.015, "nll": 0.03}
NOTE = ("Absolute tolerances. Same machine and versions: the run is deterministic and matches exactly. Another "
        "CPU or torch build may round differently; one test sample of digits-lt (50 per class) moves balanced "
        "accuracy by 0.002 and a class's recall by 0.02, so the tolerances allow a few borderline samples to flip; "
        "ECE and NLL depend on every probability and get more room. Regenerate with `make paper-expected` only "
        "after an intended change in behaviour.")


def run(config: dict | None = None) -> dict:
    """The test metrics of ``config`` (default :data:`CONFIG`) from research.train.main."""
    from research.train import main as train

    return train(dict(config or CONFIG))["metrics"]


def versions() -> dict:
    import torch

    import adaptive_focal

    return {"adaptive_focal": adaptive_focal.__version__, "torch": torch.__version__,
            "python": platform.python_version()}


def compare(expected: dict, metrics: dict) -> list[str]:
    """Mismatches (one line each) between ``metrics`` and ``expected`` (a quick.json dict); empty when every
    metric is within its tolerance."""
    problems = []
    for key, tol in expected["tolerances"].items():
        want, got = expected["metrics"].get(key), metrics.get(key)
        if want is None:
            problems.append(f"{key}: no expected value in quick.json")
        elif got is None or not math.isfinite(got):
            problems.append(f"{key}: expected {want:.4f}, got {got!r}")
        elif abs(got - want) > tol:
            problems.append(f"{key}: expected {want:.4f} +/- {tol}, got {got:.4f} (diff {got - want:+.4f})")
    return problems


def load_expected(path=EXPECTED) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no expected-values file {str(path)!r}; write it with `make paper-expected`")
    data = json.loads(path.read_text())
    for key in ("config", "metrics", "tolerances"):
        if key not in data:
            raise ValueError(f"{str(path)!r} has no {key!r}; rewrite it with `make paper-expected`")
    return data


def write_expected(path=EXPECTED) -> dict:
    metrics = run(CONFIG)
    data = {"config": CONFIG, "metrics": {k: metrics[k] for k in TOLERANCES}, "tolerances": TOLERANCES,
            "note": NOTE, "versions": versions()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    return data


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m paper.quick", description=__doc__.splitlines()[0])
    parser.add_argument("--expected", default=str(EXPECTED), help="quick.json to compare with (default: %(default)s)")
    parser.add_argument("--write", metavar="PATH", help="rerun and write the expected values to PATH instead")
    args = parser.parse_args(argv)
    if args.write:
        data = write_expected(args.write)
        print(f"wrote {args.write}: {json.dumps(data['metrics'])}")
        return 0
    try:
        expected = load_expected(args.expected)
    except ValueError as err:
        print(f"paper.quick: error: {err}", file=sys.stderr)
        return 2
    problems = compare(expected, run(expected["config"]))
    for line in problems:
        print(f"paper.quick: {line}", file=sys.stderr)
    print("quick config: " + ("matches the expected values" if not problems else f"{len(problems)} mismatch(es)"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
