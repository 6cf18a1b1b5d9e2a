"""One evaluation run (`python -m llava4d_ros.evaluate`): the table of a model on a split, and
what the run's settings add to it (ghosts, the honesty suite, box confidence, ablations), or
the object map's figures instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

KITCHEN_LABELS = str(Path(__file__).resolve().parents[2] / "test" / "data" /
                     "kitchen_objects.yaml")


@dataclass(frozen=True)
class EvalConfig:
    """What one `python -m llava4d_ros.evaluate` run does (its flags)."""

    model: str | None = None  # a directory or a shipped name; None: the default
    split: str = "test"
    scenes: int = 40
    ablations: tuple[str, ...] = ()  # models trained with other 4D encodings
    cache: str = "runs/cache"
    cache_workers: int = 1
    threads: int = 2
    examples: int = 0  # Q/A pairs to print
    honesty: bool = False
    honesty_scenes: int = 0  # 0: all of `scenes`
    crowded: int = 10
    kitchen: str = ""  # a 7-Scenes folder; "": no kitchen
    rules: bool = True  # False: every question by the network alone
    objects: bool = False  # the object map instead
    object_scenes: int = 20
    kitchen_labels: str = KITCHEN_LABELS
    ghosts: bool = False
    reliability: bool = False
    calibrate: bool = False
    write: bool = False  # store the table `calibrate` fits (`write_confidence_table`)

    def __post_init__(self) -> None:
        if self.write and not self.calibrate:
            raise ValueError("write stores what calibrate fits")


def run_objects(cfg: EvalConfig) -> None:
    from llava4d_ros.data.instructions import seeds_for_split
    from llava4d_ros.training import objects_eval
    from llava4d_ros.training.honesty import has_kitchen

    objects_eval.print_synthetic(objects_eval.synthetic(seeds_for_split(cfg.split,
                                                                        cfg.object_scenes)))
    if has_kitchen(cfg.kitchen):
        objects_eval.print_kitchen(objects_eval.kitchen(cfg.kitchen, cfg.kitchen_labels))
    else:
        print(f"kitchen: no 7-Scenes folder at {cfg.kitchen!r} (--kitchen, $LLAVA4D_KITCHEN)")


def run(cfg: EvalConfig) -> None:
    from llava4d_ros.model.llava4d import LLaVA4D
    from llava4d_ros.model.shipped import model_dir
    from llava4d_ros.training import calibration, intervals, metrics
    from llava4d_ros.training.scene_cache import load_split

    torch.set_num_threads(cfg.threads)
    if cfg.objects:
        run_objects(cfg)
        return
    name = cfg.model or "default"
    model = LLaVA4D.from_pretrained(cfg.model)
    records = load_split(cfg.split, cfg.scenes, cfg.cache, model.cfg, workers=cfg.cache_workers)
    if cfg.ghosts:
        from llava4d_ros.training.ghosts import ghost_fraction

        g = ghost_fraction(records)
        print(f"ghosts: {g['ghosts']} of {g['moving_tokens']} tokens of moving objects, "
              f"{len(records)} scenes of {cfg.split}, look_change {model.cfg.look_change:g}, "
              f"over_budget {model.cfg.over_budget}")
        print(f"ghost_fraction={g['ghost_fraction']:.3f}")
    if cfg.honesty:
        from llava4d_ros.training.honesty import run_honesty

        run_honesty(model, records[:cfg.honesty_scenes or None], cfg.split, cfg.crowded,
                    cfg.kitchen, name, rules=cfg.rules)
    outcomes: list[tuple[float, bool]] = []
    per_scene: list[dict[str, dict[str, int]]] = []
    if cfg.reliability or cfg.calibrate:
        table, outcomes = calibration.raw_outcomes(model, records, cfg.examples, cfg.rules,
                                                   per_scene)
    else:
        table = metrics.evaluate_model(model, records, examples=cfg.examples, rules=cfg.rules,
                                       per_scene=per_scene)
    print(f"model {model.model_id} ({name}), split {cfg.split}, {len(records)} scenes, "
          f"policy {'rules' if cfg.rules else 'none'}")
    metrics.print_table(table)
    intervals.print_intervals(per_scene)
    if outcomes:
        fitted = calibration.report_confidence(model, outcomes, cfg.split, fit=cfg.calibrate)
        if cfg.write and fitted is not None:
            written = calibration.write_confidence_table(model_dir(cfg.model), fitted)
            print(f"written to {written}")
    if cfg.ablations:
        rows = [(model.cfg.prompt.encoding, name, table["all"])]
        others = []
        for path in cfg.ablations:
            m = LLaVA4D.from_pretrained(path)
            theirs: list[dict[str, dict[str, int]]] = []
            t = metrics.evaluate_model(m, load_split(cfg.split, cfg.scenes, cfg.cache, m.cfg,
                                                     workers=cfg.cache_workers), rules=cfg.rules,
                                       per_scene=theirs)
            rows.append((m.cfg.prompt.encoding, path, t["all"]))
            others.append((path, theirs))
        metrics.print_ablation(rows)
        intervals.print_differences((name, per_scene), others)
    r = table["all"]
    print(f"sacc={r['sacc']:.3f} tacc={r['tacc']:.3f}")
