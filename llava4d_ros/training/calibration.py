"""Box confidence: how reliable it is, and the table that calibrates it.

A box's raw score (`decoding.box_raw_score`) becomes its confidence through the model's
`confidence_table` (`grounding.calibrated`: monotone, piecewise linear between the knots).
`fit_isotonic` fits that table on the (raw score, right) pairs of an evaluation split (use
val); `reliability` bins confidence against the fraction right, with the expected calibration
error. Each box of an answer is right when it is the box SAcc matched to a reference `<box>`
slot with IoU >= 0.5 (`metrics.box_outcomes`).

`write_confidence_table` is the one place a fitted table is stored: in the model directory's
config.json, every other field as it was. (A table in a file of its own beside config.json
would need the loader in model/checkpoint.py to read it, and every copy of a model directory
to carry it: the field already is in config.json and the loader reads it there.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from llava4d_ros.model.grounding import calibrated
from llava4d_ros.model.llava4d import LLaVA4D
from llava4d_ros.training.metrics import evaluate_model, fmt

Table = tuple[tuple[float, float], ...]


def fit_isotonic(raw: Sequence[float], right: Sequence[bool]) -> Table:
    """The (raw, probability) knots of the non-decreasing fit of P(right | raw) by least
    squares (isotonic regression, pool-adjacent-violators): one knot per pooled block, at its
    mean raw score, valued at its fraction right. `grounding.calibrated` interpolates between
    the knots, so the map is monotone and piecewise linear. Equal raw scores pool first, so
    the knots' raw scores increase strictly."""
    x = np.asarray(raw, np.float64)
    y = np.asarray(right, np.float64)
    if x.size == 0:
        raise ValueError("no boxes to fit a confidence table to")
    _, inv = np.unique(x, return_inverse=True)
    blocks: list[list[float]] = []  # [sum raw, sum right, count]: fractions non-decreasing
    for bx, by, bn in zip(np.bincount(inv, x), np.bincount(inv, y), np.bincount(inv)):
        blocks.append([bx, by, bn])
        while len(blocks) > 1 and blocks[-2][1] / blocks[-2][2] >= blocks[-1][1] / blocks[-1][2]:
            last = blocks.pop()
            blocks[-1] = [a + b for a, b in zip(blocks[-1], last)]
    return tuple((float(sx / c), float(sy / c)) for sx, sy, c in blocks)


def reliability(confidence: Sequence[float], right: Sequence[bool], bins: int = 5
                ) -> tuple[list[dict[str, float]], float]:
    """Rows per confidence bin (equal widths over [0, 1], the last one closed): lo, hi, n,
    mean confidence, fraction right; and the expected calibration error, the n-weighted mean
    of |mean confidence - fraction right| over the bins."""
    c = np.asarray(confidence, np.float64)
    y = np.asarray(right, np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, c, side="right") - 1, 0, bins - 1)
    rows, ece = [], 0.0
    for b in range(bins):
        sel = which == b
        n = int(sel.sum())
        mean_c = float(c[sel].mean()) if n else float("nan")
        frac = float(y[sel].mean()) if n else float("nan")
        rows.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "n": n,
                     "confidence": mean_c, "right": frac})
        if n:
            ece += n / len(c) * abs(mean_c - frac)
    return rows, ece


def print_reliability(title: str, confidence: Sequence[float], right: Sequence[bool]) -> None:
    rows, ece = reliability(confidence, right)
    n, hits = len(right), int(sum(right))
    print(f"{title}: {n} boxes, {hits} right")
    print(f"{'confidence':<12}{'n':>6}{'mean conf':>11}{'right':>8}")
    for r in rows:
        print(f"{r['lo']:.1f}-{r['hi']:.1f}{'':<5}{r['n']:>6}{fmt(r['confidence']):>11}"
              f"{fmt(r['right']):>8}")
    print(f"ECE {ece:.3f}")


def raw_outcomes(model: LLaVA4D, records: list[Any], examples: int = 0, rules: bool = True,
                 per_scene: list[dict[str, dict[str, int]]] | None = None
                 ) -> tuple[dict[str, dict[str, float]], list[tuple[float, bool]]]:
    """The evaluation table and each box's (raw score, right): the model runs without its
    confidence table (then a box's confidence is its raw score) and gets the table back after.
    The model's confidence is `calibrated(raw, table)`, so this one pass gives both;
    `per_scene`: see `evaluate_model`."""
    table = model.cfg.confidence_table
    model.cfg = replace(model.cfg, confidence_table=None)
    outcomes: list[tuple[float, bool]] = []
    try:
        result = evaluate_model(model, records, examples=examples, outcomes=outcomes,
                                rules=rules, per_scene=per_scene)
    finally:
        model.cfg = replace(model.cfg, confidence_table=table)
    return result, outcomes


def write_confidence_table(path: str, table: Sequence[tuple[float, float]]) -> Path:
    """Store `table` as `confidence_table` in `path`/config.json, every other field as it
    was (the weights are untouched); returns the file written. The config is checked as the
    loader reads it before anything is written."""
    import json

    from llava4d_ros.model.config import LLaVA4DConfig

    cfg_path = Path(path) / "config.json"
    d = json.loads(cfg_path.read_text(encoding="utf-8"))
    d["confidence_table"] = [[round(r, 6), round(p, 6)] for r, p in table]
    LLaVA4DConfig.from_dict(d)  # refuse to write a config the loader would refuse
    cfg_path.write_text(json.dumps(d, indent=1, sort_keys=True), encoding="utf-8")
    return cfg_path


def report_confidence(model: LLaVA4D, outcomes: list[tuple[float, bool]], split: str,
                      fit: bool = False) -> Table | None:
    """Prints the reliability of box confidence on the split evaluated: raw, and through the
    model's table or, with `fit`, a table fitted here (returned, for `write_confidence_table`;
    nothing is written here)."""
    import json

    raw = [c for c, _ in outcomes]
    right = [r for _, r in outcomes]
    print()
    print_reliability(f"raw box score, split {split}", raw, right)
    table = model.cfg.confidence_table
    fitted = None
    if fit:
        table = fitted = fit_isotonic(raw, right)
        print(f"\nconfidence_table fitted on split {split} ({len(table)} knots, raw -> "
              f"P(right)):")
        print(json.dumps([[round(r, 4), round(p, 4)] for r, p in table]))
    if table:
        print()
        print_reliability(f"calibrated box confidence, split {split}",
                          [calibrated(c, table) for c in raw], right)
    return fitted
