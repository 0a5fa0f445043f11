"""Draws gamma(t) of every open-loop schedule into docs/schedules.svg (plain SVG, no plotting library needed).

    python -m research.plot_schedules [--out docs/schedules.svg]

The curves come from each schedule's own ``gamma_at``, so the figure is the code's behaviour, not a sketch. The
cyclical focal loss keeps its two gammas fixed and moves the blend weight, so its panel shows ``xi_at(t)``, the
weight of the high-confidence term.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import adaptive_focal as af

T = 300  # steps shown
PANELS = [
    ("constant", {"gamma": 2.0}),
    ("linear", {"start": 0.0, "end": 3.0, "total": 200}),
    ("cosine", {"start": 4.0, "end": 1.0, "total": 250}),
    ("step", {"start": 4.0, "milestones": [100, 200], "factor": 0.5}),
    ("exponential", {"start": 4.0, "factor": 0.99, "gamma_min": 0.5}),
    ("flsc531", {"milestones": (100, 250), "unit": "step"}),
    ("cyclical", {"total": 300, "factor": 4.0, "unit": "step"}),
]
W, H, PAD = 260, 150, 30
COLS = 3


def panel(name: str, kwargs: dict, ox: float, oy: float) -> str:
    policy = af.create_policy(name, af.FocalLoss("softmax"), **kwargs)
    if name == "cyclical":
        values, top, name = [policy.xi_at(t) for t in range(T + 1)], 1.0, "cyclical: xi(t), weight of L_hc"
    else:
        values, top = [policy.gamma_at(t) for t in range(T + 1)], 5.0
    sx = (W - 2 * PAD) / T
    sy = (H - 2 * PAD) / top
    pts = " ".join(f"{ox + PAD + t * sx:.1f},{oy + H - PAD - v * sy:.1f}" for t, v in enumerate(values))
    args = ", ".join(f"{k}={v}" for k, v in kwargs.items() if k != "unit")
    parts = [
        f'<rect x="{ox + PAD}" y="{oy + PAD}" width="{W - 2 * PAD}" height="{H - 2 * PAD}" fill="none" '
        f'stroke="#bbb"/>',
        f'<polyline points="{pts}" fill="none" stroke="#1f5fa8" stroke-width="2"/>',
        f'<text x="{ox + PAD}" y="{oy + PAD - 14}" font-size="12" font-weight="bold">{name}</text>',
        f'<text x="{ox + PAD}" y="{oy + PAD - 3}" font-size="8" fill="#555">{args}</text>',
        f'<text x="{ox + PAD - 4}" y="{oy + PAD + 4}" font-size="8" text-anchor="end">{top:g}</text>',
        f'<text x="{ox + PAD - 4}" y="{oy + H - PAD + 3}" font-size="8" text-anchor="end">0</text>',
        f'<text x="{ox + W - PAD}" y="{oy + H - PAD + 11}" font-size="8" text-anchor="end">t = {T}</text>',
    ]
    return "\n".join(parts)


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/schedules.svg")
    args = parser.parse_args(argv)
    rows = (len(PANELS) + COLS - 1) // COLS
    body = [panel(name, kw, (i % COLS) * W, (i // COLS) * H) for i, (name, kw) in enumerate(PANELS)]
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{COLS * W}" height="{rows * H}" '
           f'font-family="sans-serif">\n<rect width="100%" height="100%" fill="white"/>\n'
           + "\n".join(body) + "\n</svg>\n")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(svg)
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main()
