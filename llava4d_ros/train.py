"""Train LLaVA-4D in the paper's three stages (and our two) on synthetic 4D instruction data.

    python -m llava4d_ros.train --out runs/default [--config small] [--stages 1,2,3,4,5]
                                [--resume] [--ablation full|none|xyz|time] [--device cpu|cuda]
    python -m llava4d_ros.train --out runs/smollm2 --config smollm2    (on SmolLM2, LoRA)
    torchrun --standalone --nproc_per_node N -m llava4d_ros.train ...   (data-parallel)

This command only reads its flags into a `TrainConfig` and runs `training.trainer.train`: the
recipes are in training/presets.py, the stages in training/stages.py (what each stage trains),
the scene cache in training/scene_cache.py, checkpoints and resume in training/trainer.py.
A flag left unset takes the preset's value.
"""

from __future__ import annotations

import argparse
import os

from llava4d_ros.core.buffer4d import OVER_BUDGET
from llava4d_ros.model.config import (
    BOX_HEADS,
    DEFAULT_BOX_HEAD,
    DEFAULT_TIME_HEAD,
    FIRST_MOTION_TOKENS,
    TIME_HEADS,
)
from llava4d_ros.training.presets import PRESETS
from llava4d_ros.training.stages import STAGE4_ONLY
from llava4d_ros.training.trainer import ABLATIONS, TrainConfig, train


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="run directory (checkpoints, log)")
    ap.add_argument("--config", default="small", choices=sorted(PRESETS))
    ap.add_argument("--lm", default=None,
                    help="a pretrained LM to build on: a transformers directory, a .gguf file, "
                         "or smollm2 (the one setup converts; the smollm2 preset's default)")
    ap.add_argument("--samples-per-window", type=int, default=None,
                    help="questions of a window per step, drawn at random (0: all; default: "
                         "the preset's)")
    ap.add_argument("--stages", default=None,
                    help="(default: the preset's, 1-5) "
                         "1 content alignment, 2 coordinate alignment, 3 instruction tuning, "
                         "4 slot-head refinement on the frozen model, 5 scene inventory and "
                         "output bias on the frozen model")
    ap.add_argument("--refine-steps", type=int, default=None,
                    help="stage 4's head steps (default: the preset's, 6000 for small)")
    ap.add_argument("--refine-scenes", type=int, default=None,
                    help="training scenes for stage 4 (default: the preset's, 480 for smollm2; "
                         "else --train-scenes)")
    ap.add_argument("--box-head", default=DEFAULT_BOX_HEAD, choices=BOX_HEADS,
                    help="the box head stage 4 builds: pooled statistics of the pointed tokens, "
                         "or those and an encoding of the tokens themselves (default)")
    ap.add_argument("--time-head", default=DEFAULT_TIME_HEAD, choices=TIME_HEADS,
                    help="the time head stage 4 builds: its gate reads the slot's context, or "
                         "that and the plain mean of the question's embeddings (default)")
    ap.add_argument("--pointer-space", default=None, choices=("on", "off"),
                    help="whether the pointer's keys include the tokens' spatial PE, in every "
                         "requested stage (default: the model's setting; off for a new model)")
    ap.add_argument("--first-motion", default=None, choices=FIRST_MOTION_TOKENS,
                    help="which tokens a <time> slot's first-motion reading looks at: those the "
                         "pointer picks or those of the object the sentence names (default: "
                         "the model's setting; pointer for a new model); stage 4 fits the "
                         "time head to it")
    ap.add_argument("--first-motion-m", type=float, default=None,
                    help="the depth change (m) above which that reading counts a token as "
                         "moving (default: the model's setting; 0.05 for a new model)")
    ap.add_argument("--stage4-only", default="", choices=STAGE4_ONLY,
                    help="stage 4 re-initialises and fits this head alone: gives a finished "
                         "model (--stages 4 --init <final>) a new box or time head, the rest "
                         "unchanged")
    ap.add_argument("--bias-steps", type=int, default=None,
                    help="stage 5's output-bias steps (default: the preset's, 3000 for small)")
    ap.add_argument("--inventory-scenes", type=int, default=None,
                    help="training scenes for stage 5 (default: the preset's, 640 for small)")
    ap.add_argument("--resume", action="store_true", help="continue from <out>/last")
    ap.add_argument("--init", default=None,
                    help="start the first requested stage from this model directory (e.g. "
                         "--stages 4 --init runs/full/stage3)")
    ap.add_argument("--ablation", default="full", choices=ABLATIONS)
    ap.add_argument("--look-change", type=float, default=None,
                    help="a new model's tokens: a still voxel's token splits where its mean "
                         "colour changes by more than this (RGB 0..255; the shipped default "
                         "has 30) and the time encoding reads each token's span; 0 or unset: "
                         "one token per still voxel")
    ap.add_argument("--over-budget", default=None, choices=OVER_BUDGET,
                    help="a new model's tokens over the budget: grow the voxel (coarsen, the "
                         "default) or drop the least-seen tokens (the shipped default's), "
                         "which keeps the look split's ghosts away (docs/MODEL.md)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=max(1, min(4, os.cpu_count() or 1)))
    ap.add_argument("--steps", type=int, nargs=3, default=None, help="steps of stages 1 2 3")
    ap.add_argument("--train-scenes", type=int, default=None)
    ap.add_argument("--cache", default="runs/cache", help="scene cache root")
    ap.add_argument("--cache-workers", type=int, default=1,
                    help="processes that build missing cached scenes (a scene is ~2.5 s of "
                         "one core)")
    ap.add_argument("--save-every", type=int, default=100)
    ap.add_argument("--text-warmup", type=int, default=None,
                    help="text-only LM steps at the start of stage 1 (default: preset)")
    ap.add_argument("--head-steps", type=int, default=None,
                    help="extra steps of the slot heads alone per window (stages 2, 3; "
                         "default: the preset's, 8 for small)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--windows-per-step", type=int, default=None,
                    help="scene windows per optimiser step, over all processes (default: one "
                         "per process); one process with N equals N processes with one")
    ap.add_argument("--lora-rank", type=int, default=None,
                    help="train LoRA adapters of this rank on the LM instead of its weights "
                         "(peft; default: the preset's, 8 for smollm2, 0 = none); checkpoints "
                         "hold the merged weights")
    ap.add_argument("--bf16", action="store_true", help="bfloat16 autocast for the forwards")
    ap.add_argument("--grad-checkpointing", action="store_true",
                    help="recompute the visual prefix's LM layers in the backward instead of "
                         "keeping their activations (training/checkpointing.py)")
    return ap


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The run the flags ask for: the preset `--config` with the flags given (unset: None,
    the preset's value) and the run's own settings."""
    stages = tuple(int(s) for s in args.stages.split(",")) if args.stages else None
    return TrainConfig.from_preset(
        args.config,
        # the recipe (training/presets.py)
        lm=args.lm, samples_per_window=args.samples_per_window, stages=stages,
        refine_steps=args.refine_steps, refine_scenes=args.refine_scenes,
        bias_steps=args.bias_steps, inventory_scenes=args.inventory_scenes, steps=args.steps,
        train_scenes=args.train_scenes, text_warmup=args.text_warmup,
        head_steps=args.head_steps, lora_rank=args.lora_rank,
        # the run
        out=args.out, ablation=args.ablation, resume=args.resume, init=args.init,
        look_change=args.look_change, over_budget=args.over_budget,
        pointer_space=None if args.pointer_space is None else args.pointer_space == "on",
        first_motion_tokens=args.first_motion, first_motion_m=args.first_motion_m,
        box_head=args.box_head, time_head=args.time_head,
        stage4_only=args.stage4_only, device=args.device, threads=args.threads,
        cache=args.cache, cache_workers=args.cache_workers, save_every=args.save_every,
        seed=args.seed, windows_per_step=args.windows_per_step or 0, bf16=args.bf16,
        grad_checkpointing=args.grad_checkpointing)


def main(argv: list[str] | None = None) -> None:
    ap = parser()
    args = ap.parse_args(argv)
    try:
        cfg = config_from_args(args)
    except ValueError as e:  # flags that do not go together: a usage error, not a traceback
        ap.error(str(e))
    final = train(cfg)
    if int(os.environ.get("RANK", "0")) == 0:
        print(final)


if __name__ == "__main__":
    main()
