"""How noisy an evaluation figure is: intervals from drawing the scenes again.

The questions about one scene share its tokens, its objects and its motion, so they are not
independent draws; the scenes are. `metrics.evaluate_model(..., per_scene=...)` keeps each
scene's hit counts per task; here the scenes are drawn with replacement (a bootstrap) and each
figure is recomputed from the drawn scenes' summed counts, `n_boot` times. A 95% interval is the
2.5th to 97.5th percentile of those figures.

Two models evaluated on the same scenes are compared *paired*: each draw takes the same scenes
for both, so what the scenes have in common (a hard scene is hard for both) cancels. That
interval says how much a difference could be the luck of the scenes; it says nothing of the
luck of a training seed, which only more seeds measure.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: figure -> (hits key, count key) of `metrics.score`'s counts
RATES: dict[str, tuple[str, str]] = {
    "sacc": ("box_hits", "box_n"),
    "tacc": ("time_hits", "time_n"),
    "em": ("em_hits", "em_n"),
    "sacc_moving": ("box_hits_moving", "box_n_moving"),
    "tacc_moving": ("time_hits_moving", "time_n_moving"),
}
N_BOOT = 2000
LEVEL = 0.95

PerScene = Sequence[dict[str, dict[str, int]]]


def scene_draws(n_scenes: int, n_boot: int = N_BOOT, seed: int = 0) -> np.ndarray:
    """`(n_boot, n_scenes)` scene indices, each row drawn with replacement."""
    if n_scenes < 1:
        raise ValueError("a bootstrap needs at least one scene")
    return np.random.default_rng(seed).integers(0, n_scenes, size=(n_boot, n_scenes))


def _counts(per_scene: PerScene, task: str, metric: str) -> tuple[np.ndarray, np.ndarray]:
    hits_key, n_key = RATES[metric]
    hits = np.array([s.get(task, {}).get(hits_key, 0) for s in per_scene], np.float64)
    n = np.array([s.get(task, {}).get(n_key, 0) for s in per_scene], np.float64)
    return hits, n


def drawn_rates(per_scene: PerScene, draws: np.ndarray, task: str = "all",
                metric: str = "sacc") -> np.ndarray:
    """`(n_boot,)` the figure of each draw (NaN where the drawn scenes hold no such slot)."""
    hits, n = _counts(per_scene, task, metric)
    drawn_n = n[draws].sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(drawn_n > 0, hits[draws].sum(1) / drawn_n, np.nan)


def _percentiles(values: np.ndarray, level: float) -> tuple[float, float]:
    if not np.isfinite(values).any():
        return float("nan"), float("nan")
    tail = 100.0 * (1.0 - level) / 2.0
    lo, hi = np.nanpercentile(values, [tail, 100.0 - tail])
    return float(lo), float(hi)


def interval(per_scene: PerScene, task: str = "all", metric: str = "sacc",
             level: float = LEVEL, n_boot: int = N_BOOT, seed: int = 0) -> tuple[float, float]:
    """(low, high) of the figure over scenes drawn again."""
    return _percentiles(drawn_rates(per_scene, scene_draws(len(per_scene), n_boot, seed),
                                    task, metric), level)


def difference(a: PerScene, b: PerScene, task: str = "all", metric: str = "sacc",
               level: float = LEVEL, n_boot: int = N_BOOT, seed: int = 0
               ) -> tuple[float, float, float]:
    """(a's figure - b's, low, high): the two models' counts on the same scenes, in the same
    order, drawn together."""
    if len(a) != len(b):
        raise ValueError(f"a paired difference needs the same scenes: {len(a)} against "
                         f"{len(b)}")
    draws = scene_draws(len(a), n_boot, seed)
    every = np.arange(len(a))[None]
    point = float((drawn_rates(a, every, task, metric) - drawn_rates(b, every, task, metric))[0])
    lo, hi = _percentiles(drawn_rates(a, draws, task, metric)
                          - drawn_rates(b, draws, task, metric), level)
    return point, lo, hi


def _fmt(lo: float, hi: float) -> str:
    return "      -       " if np.isnan(lo) else f"[{lo:.3f}, {hi:.3f}]"


def print_intervals(per_scene: PerScene, level: float = LEVEL) -> None:
    """The 95% interval of each task's SAcc, TAcc and EM, and of the moving objects'."""
    tasks = sorted({t for s in per_scene for t in s if t != "all"}) + ["all"]
    print(f"\n{level:.0%} intervals over the {len(per_scene)} scenes drawn again "
          f"({N_BOOT} draws)")
    print(f"{'task':<12}{'SAcc@0.5':>16}{'TAcc':>16}{'EM':>16}")
    for task in tasks:
        cols = [_fmt(*interval(per_scene, task, m, level)) for m in ("sacc", "tacc", "em")]
        print(f"{task:<12}" + "".join(f"{c:>16}" for c in cols))
    cols = [_fmt(*interval(per_scene, "all", m, level)) for m in ("sacc_moving", "tacc_moving")]
    print(f"{'moving':<12}{cols[0]:>16}{cols[1]:>16}")


def print_differences(first: tuple[str, PerScene], others: Sequence[tuple[str, PerScene]],
                      level: float = LEVEL) -> None:
    """Each of `others` (name, per-scene counts) against `first`: first's figure minus its, and
    the paired 95% interval of that difference."""
    name0, ref = first
    metrics = {"sacc": "SAcc@0.5", "tacc": "TAcc", "sacc_moving": "moving SAcc",
               "tacc_moving": "moving TAcc"}
    print(f"\n{name0} minus each, {level:.0%} paired interval over the same scenes drawn again")
    print(f"{'model':<40}" + "".join(f"{h:>24}" for h in metrics.values()))
    for name, rows in others:
        cells = []
        for m in metrics:
            d, lo, hi = difference(ref, rows, "all", m, level)
            cells.append("-" if np.isnan(d) else f"{d:+.3f} {_fmt(lo, hi)}")
        print(f"{name:<40}" + "".join(f"{c:>24}" for c in cells))
