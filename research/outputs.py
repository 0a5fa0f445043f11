"""What the research analyses (research.confirm, research.prior) do with their result: print the Markdown tables,
write the analysis as JSON and fill the tables into a README between two markers."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from adaptive_focal.compare.report import fill_block


def publish(prog: str, text: str, analysis: dict, *, json_path=None, readme=None, start: str, end: str) -> int:
    """Prints ``text``; writes ``analysis`` to ``json_path`` (its folder made) and ``text`` between ``start`` and
    ``end`` in ``readme`` when given. Returns the exit status: 0, or 2 (with one line on stderr naming ``prog``) when
    the README lacks the markers, which leaves it untouched."""
    print(text)
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(analysis, indent=1) + "\n")
    if readme and not fill_block(readme, start, end, text):
        print(f"{prog}: error: {readme} has no {start} ... {end} block", file=sys.stderr)
        return 2
    return 0
