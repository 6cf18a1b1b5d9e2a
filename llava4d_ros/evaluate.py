"""Evaluate a LLaVA-4D model on held-out synthetic 4D instruction data, or the object map.

    python -m llava4d_ros.evaluate [--model DIR] [--split test] [--ablations DIR ...]
    python -m llava4d_ros.evaluate --policy none      # the network alone, no rule decides
    python -m llava4d_ros.evaluate --ghosts           # also: tokens stamped where nothing was
    python -m llava4d_ros.evaluate --honesty --kitchen ../shared/data/7scenes-redkitchen
    python -m llava4d_ros.evaluate --objects --split val   # the object map (training/objects_eval)
    python -m llava4d_ros.evaluate --calibrate --split val [--write]   # fit box confidence
    python -m llava4d_ros.evaluate --reliability                      # check it

This command only reads its flags and calls the package: the metrics (SAcc@0.5, TAcc, EM and
the per-task table) are in training/metrics.py, box confidence in training/calibration.py, the
honesty suite in training/honesty.py, the object map's in training/objects_eval.py. The
kitchen (`--kitchen`, default `$LLAVA4D_KITCHEN`) is a 7-Scenes folder; without one its part
is skipped. The last line is `sacc=<..> tacc=<..>` of `--model` (default: the shipped default).
"""

from __future__ import annotations

import argparse
import os

from llava4d_ros.training.evaluation import KITCHEN_LABELS, EvalConfig, run


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="model directory (default: shipped default)")
    ap.add_argument("--split", default="test", choices=("train", "val", "test"))
    ap.add_argument("--scenes", type=int, default=40, help="scenes of the split to use")
    ap.add_argument("--ablations", nargs="*", default=[],
                    help="model directories trained with --ablation; prints the paper's table")
    ap.add_argument("--cache", default="runs/cache")
    ap.add_argument("--cache-workers", type=int, default=1,
                    help="processes that build missing cached scenes (a scene is ~2.5 s of "
                         "one core)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--examples", type=int, default=0, help="print this many Q/A pairs")
    ap.add_argument("--honesty", action="store_true",
                    help="also: held-out phrasings, abstention, repetition, the real kitchen")
    ap.add_argument("--honesty-scenes", type=int, default=0,
                    help="--honesty: only the first N scenes of --scenes (0: all); a model "
                         "on a 135M LM answers ~80 questions a scene there")
    ap.add_argument("--crowded", type=int, default=10,
                    help="--honesty: scenes with 7-8 objects for counting")
    ap.add_argument("--kitchen", default=os.environ.get("LLAVA4D_KITCHEN", ""),
                    help="--honesty, --objects: a 7-Scenes folder (frames 0-299), e.g. "
                         "../shared/data/7scenes-redkitchen (default: $LLAVA4D_KITCHEN, now "
                         "%(default)r; '' skips the kitchen)")
    ap.add_argument("--policy", default="rules", choices=("rules", "none"),
                    help="rules: answered as the node answers (map, rules, network); none: "
                         "every question by the network alone, as written")
    ap.add_argument("--objects", action="store_true",
                    help="the object map instead: --object-scenes synthetic scenes of --split "
                         "and the kitchen (--kitchen, frames 0-299) against its hand labels")
    ap.add_argument("--object-scenes", type=int, default=20)
    ap.add_argument("--kitchen-labels", default=KITCHEN_LABELS)
    ap.add_argument("--ghosts", action="store_true",
                    help="also: the share of tokens of moving objects that lie away from the "
                         "object at their own stamp (training/ghosts.py), on --split")
    ap.add_argument("--reliability", action="store_true",
                    help="also: the reliability table of box confidence, raw and calibrated")
    ap.add_argument("--calibrate", action="store_true",
                    help="fit the box confidence table on this split (use val) and print it")
    ap.add_argument("--write", action="store_true",
                    help="--calibrate: store the table in the model directory's config.json")
    return ap


def main(argv: list[str] | None = None) -> None:
    ap = parser()
    args = ap.parse_args(argv)
    if args.write and not args.calibrate:
        ap.error("--write stores what --calibrate fits")
    if args.scenes < 1:
        ap.error(f"--scenes: at least one scene to evaluate, got {args.scenes}")
    settings = {k: v for k, v in vars(args).items() if k != "policy"}
    run(EvalConfig(**{**settings, "ablations": tuple(args.ablations),
                      "rules": args.policy == "rules"}))


if __name__ == "__main__":
    main()
