"""Fault injection: crashes, bad batches, a lost network and racing commands, and what survives them.

Runs the scenarios of every module in :mod:`research.faults` (the loss, the policies, logging, storage and
workers) and prints one table: scenario, what was injected, what survived, the data lost (it must be none) and
whether training stopped (it must not). Exits non-zero when a scenario failed its check.

    python -m research.benchmarks.fault_injection [--areas loss policies logging storage] [--json FILE]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from pathlib import Path

AREAS = ("loss", "policies", "logging", "storage")


def run_areas(areas) -> list[dict]:
    rows = []
    for area in areas:
        module = importlib.import_module(f"research.faults.{area}")
        start = time.perf_counter()
        found = module.scenarios()
        for row in found:
            row.setdefault("area", area)
        rows += found
        print(f"{area}: {len(found)} scenarios in {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    return rows


def table(rows: list[dict]) -> str:
    def cell(v) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| area | scenario | injected | survived | data lost | training stopped | check |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['area']} | {cell(r['scenario'])} | {cell(r['injected'])} | {cell(r['survived'])} | "
                     f"{cell(r['data_lost'])} | {'yes' if r['training_stopped'] else 'no'} | "
                     f"{'ok' if r.get('ok', True) else 'FAILED'} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m research.benchmarks.fault_injection",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--areas", nargs="+", choices=AREAS, default=list(AREAS))
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args(argv)
    os.environ.setdefault("WANDB_MODE", "disabled")
    rows = run_areas(args.areas)
    print(table(rows))
    failed = [r for r in rows if not r.get("ok", True) or not str(r["data_lost"]).startswith(("none", "-"))
              or r["training_stopped"]]
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "argv": sys.argv[1:]}, indent=1) + "\n")
    if failed:
        print(f"\n{len(failed)} scenario(s) lost data, stopped training or failed their check", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
