"""One training run: the requested stages in order, with checkpoints and resume.

`train(TrainConfig.from_preset("small", out="runs/x"))` is what `python -m llava4d_ros.train`
runs. Checkpoints: `<out>/stage<k>/` after each stage (a loadable model directory), `<out>/last/`
every `save_every` steps with the optimiser state and `progress.json` for `resume`,
`<out>/final/` at the end; `<out>/train_log.jsonl` holds the losses.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np
import torch

from llava4d_ros.model.config import (
    BOX_HEADS,
    DEFAULT_BOX_HEAD,
    DEFAULT_TIME_HEAD,
    TIME_HEADS,
    LLaVA4DConfig,
    tiny_llama,
)
from llava4d_ros.training import checkpointing, model_edits, new_tokens
from llava4d_ros.training import distributed as ddp
from llava4d_ros.training.dataset import SceneRecord
from llava4d_ros.training.envelope import fit_object_envelope
from llava4d_ros.training.lora import add_lora, lora_trainable, merged_copy
from llava4d_ros.training.presets import PRESETS, Preset, sample_kwargs
from llava4d_ros.training.scene_cache import load_split
from llava4d_ros.training.stages import (
    HEADS,
    STAGE4_ONLY,
    append_log,
    fit_inventory,
    fresh_for,
    inventory_words_problem,
    lr_at,
    refine_heads,
    samples_for_stage,
    stage_setup,
    text_warmup,
    window_step,
)

ABLATIONS = ("full", "none", "xyz", "time")


@dataclass(frozen=True)
class TrainConfig:
    """A run: the recipe (`preset`, flags already applied) and how to run it."""

    out: str
    preset: Preset = field(default_factory=lambda: PRESETS["small"])
    ablation: str = "full"  # the 4D encoding of a new model
    resume: bool = False  # continue from <out>/last
    init: str | None = None  # a model directory to start the first stage from
    look_change: float | None = None  # a new model's tokens (model_edits.set_span_tokens)
    over_budget: str | None = None  # and what pooling does over the budget (None: coarsen)
    pointer_space: bool | None = None  # None: the model's setting
    first_motion_tokens: str | None = None  # the time heads' first-motion reading; None: the
    first_motion_m: float | None = None  # model's setting (LLaVA4DConfig)
    box_head: str = DEFAULT_BOX_HEAD  # the heads stage 4 builds
    time_head: str = DEFAULT_TIME_HEAD
    stage4_only: str = ""  # "box" / "time": stage 4 fits that head alone (stages.STAGE4_ONLY)
    device: str = "cpu"
    threads: int = 1
    cache: str = "runs/cache"
    cache_workers: int = 1
    save_every: int = 100
    seed: int = 0
    windows_per_step: int = 0  # 0: one per process
    bf16: bool = False
    grad_checkpointing: bool = False

    def __post_init__(self) -> None:
        if self.ablation not in ABLATIONS:
            raise ValueError(f"ablation must be one of {ABLATIONS}, got {self.ablation!r}")
        if self.box_head not in BOX_HEADS or self.time_head not in TIME_HEADS:
            raise ValueError(f"box_head in {BOX_HEADS}, time_head in {TIME_HEADS}: got "
                             f"{self.box_head!r}, {self.time_head!r}")
        if self.stage4_only not in ("", *STAGE4_ONLY):
            raise ValueError(f"stage4_only must be one of {STAGE4_ONLY} or '', got "
                             f"{self.stage4_only!r}")
        if self.first_motion_m is not None and not self.first_motion_m >= 0:
            raise ValueError(f"--first-motion-m is metres of depth change, >= 0; got "
                             f"{self.first_motion_m}")
        if self.stage4_only and 4 not in self.preset.stages:
            raise ValueError(f"--stage4-only refits one head in stage 4, but the stages "
                             f"to run are {list(self.preset.stages)}")

    @classmethod
    def from_preset(cls, name: str, **settings: Any) -> TrainConfig:
        """The preset `name` with `settings`: a `Preset` field overrides the recipe
        (`Preset.override`: None keeps the preset's), any other is a `TrainConfig` field."""
        recipe = {f.name for f in fields(Preset)}
        preset = PRESETS[name].override(**{k: v for k, v in settings.items() if k in recipe})
        return cls(preset=preset, **{k: v for k, v in settings.items() if k not in recipe})


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def default_config(preset: Preset, encoding: str, vocab_size: int) -> LLaVA4DConfig:
    """A new model of the preset's size on a Llama trained from scratch."""
    return LLaVA4DConfig(
        lm=tiny_llama(vocab_size, hidden=preset.hidden, layers=preset.layers,
                      heads=preset.heads),
        model_id=f"llava4d-{encoding}-h{preset.hidden}l{preset.layers}",
    ).with_encoding(encoding)


def pretrained_model(preset: Preset, lm: str, encoding: str) -> Any:
    """LLaVA-4D on the pretrained LM at `lm` ("smollm2": the one setup converts) with fresh
    4D parts, the preset's compressor, and the 4D encoding of the ablation."""
    from llava4d_ros.model.backbones import default_lm_dir
    from llava4d_ros.model.config import CompressorConfig
    from llava4d_ros.model.llava4d import LLaVA4D

    path = default_lm_dir() if lm == "smollm2" else lm
    model = LLaVA4D.from_lm(path, compressor=CompressorConfig(kind=preset.compressor))
    if encoding != "full":
        model_edits.set_encoding(model, encoding)
    return model


def _read_progress(out: str) -> tuple[int, int] | None:
    path = os.path.join(out, "last", "progress.json")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        prog = json.load(f)
    return prog["stage"], prog["step"]


def save_last(model: Any, out: str, stage: int, step: int,
              opt: torch.optim.Optimizer | None = None) -> None:
    """`<out>/last`: the model, the stage and step to go on at and, mid-stage, the optimiser."""
    last = os.path.join(out, "last")
    model.save_pretrained(last)
    if opt is not None:
        torch.save(opt.state_dict(), os.path.join(last, "optimizer.pt"))
    with open(os.path.join(last, "progress.json"), "w", encoding="utf-8") as f:
        json.dump({"stage": stage, "step": step}, f)


def start_model(cfg: TrainConfig) -> tuple[Any, int, int, bool]:
    """The model the run starts from and where: (model, first stage, first step, resumed)."""
    from llava4d_ros.data.instructions import vocabulary
    from llava4d_ros.model.llava4d import build_model, load_llava4d
    from llava4d_ros.model.tokenizer import build_tokenizer

    preset, first = cfg.preset, cfg.preset.stages[0]
    progress = _read_progress(cfg.out) if cfg.resume else None
    if cfg.init:
        # a trained model (e.g. <run>/stage3) as the start of the requested stages; the
        # heads stage 4 re-initialises, and parts newer than the checkpoint, start fresh
        model = load_llava4d(cfg.init, fresh=fresh_for(first, cfg.stage4_only))
        print(f"starting stage {first} from {cfg.init}")
        return model, first, 0, False
    if progress is not None:
        stage, step = progress
        # stage 4 re-initialises the box and time heads: their saved shapes may be older
        model = load_llava4d(os.path.join(cfg.out, "last"),
                             fresh=fresh_for(stage, cfg.stage4_only))
        print(f"resuming at stage {stage}, step {step}")
        return model, stage, step, True
    if preset.lm:
        return pretrained_model(preset, preset.lm, cfg.ablation), first, 0, False
    tok = build_tokenizer(vocabulary(extended=bool(sample_kwargs(preset))))
    return build_model(default_config(preset, cfg.ablation, len(tok)), tok), first, 0, False


def _prepare(model: Any, cfg: TrainConfig, trained: bool, info: ddp.DistInfo) -> None:
    """Settings of the run on the model: its tokens, device, no confidence table, delta
    checkpoints on a pretrained LM, LoRA, gradient checkpointing. `trained`: loaded weights."""
    asked = {k: v for k, v in (("look_change", cfg.look_change),
                                ("over_budget", cfg.over_budget)) if v is not None}
    if trained:  # its weights were trained on its own tokens
        differ = {k: (v, getattr(model.cfg, k)) for k, v in asked.items()
                  if v != getattr(model.cfg, k)}
        if differ:
            raise ValueError("the model loaded was trained on other tokens: " + ", ".join(
                f"{k} {want} asked, {have} trained" for k, (want, have) in differ.items()))
    elif asked:
        model_edits.set_span_tokens(model, asked.get("look_change", model.cfg.look_change),
                                    asked.get("over_budget", model.cfg.over_budget))
    model.to(info.device).train()
    # training moves the heads, so a confidence calibration fitted to the old ones would lie;
    # `python -m llava4d_ros.evaluate --calibrate --write --model <final>` refits it on val
    model.cfg = replace(model.cfg, confidence_table=None)
    if cfg.pointer_space is not None:
        model.cfg = replace(model.cfg, pointer_space=cfg.pointer_space)
    reading = {k: v for k, v in (("first_motion_tokens", cfg.first_motion_tokens),
                                 ("first_motion_m", cfg.first_motion_m)) if v is not None}
    if reading:  # the time head reads it, so a model trained with another refits stage 4
        model.cfg = replace(model.cfg, **reading)
    if model.cfg.lm_source.kind == "hf":  # checkpoints keep only the LM's changes (MBs)
        model.cfg = replace(model.cfg, lm_weights="delta")


def train(cfg: TrainConfig) -> str:
    """Runs the requested stages; returns the final model directory."""
    info = ddp.setup(cfg.device)
    if info.is_main:
        print(f"world_size={info.world_size}", flush=True)
    torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    preset = cfg.preset
    stages = list(preset.stages)
    os.makedirs(cfg.out, exist_ok=True)
    log_path = os.path.join(cfg.out, "train_log.jsonl") if info.is_main else None

    model, start_stage, start_step, resumed = start_model(cfg)
    _prepare(model, cfg, bool(cfg.init) or resumed, info)
    pretrained_lm = model.cfg.lm_source.kind != "scratch"
    if 5 in stages and model.cfg.inventory is None:
        why = inventory_words_problem(model)
        if why:  # found now, not after an hour of stages 1-4
            print(f"stage 5 skipped: {why}")
            stages = [s for s in stages if s != 5]
    if preset.lora_rank:
        add_lora(model, preset.lora_rank)
    if cfg.grad_checkpointing:
        checkpointing.prepare(model.lm)

    def save(path: str) -> None:
        """Rank 0 writes a plain model directory (adapters merged)."""
        if info.is_main:
            merged_copy(model).save_pretrained(path)

    def save_resume_point(stage: int, step: int, opt: torch.optim.Optimizer | None) -> None:
        if info.is_main:
            save_last(merged_copy(model), cfg.out, stage, step, opt)

    def first_scenes(n: int) -> list[SceneRecord]:
        """The first `n` training scenes (stages 4 and 5 cost a pass a scene, not steps, so
        they may read more than stages 1-3)."""
        with ddp.main_first(info):
            return load_split("train", n, cfg.cache, model.cfg, progress=info.is_main,
                              samples=sample_kwargs(preset), workers=cfg.cache_workers)

    records = first_scenes(preset.train_scenes)
    rng = random.Random(cfg.seed)
    for stage in stages:
        if stage < start_stage:
            continue
        if stage == 4:
            n4 = preset.refine_scenes or len(records)
            refine_heads(model, records if n4 == len(records) else first_scenes(n4),
                         preset.refine_steps, preset.lr, rng, log_path, cfg.box_head,
                         cfg.stage4_only, cfg.time_head)
            ddp.broadcast_module(model, info)
            save(os.path.join(cfg.out, "stage4"))
            save_resume_point(5, 0, None)
            continue
        if stage == 5:
            n5 = preset.inventory_scenes
            records5 = records if n5 == len(records) else first_scenes(n5)
            fit_inventory(model, records5, preset.bias_steps, preset.lr, rng, log_path,
                          progress=info.is_main)
            fit_object_envelope(model, records5)
            ddp.broadcast_module(model, info)
            save(os.path.join(cfg.out, "stage5"))
            save_resume_point(6, 0, None)
            continue
        first = start_step if stage == start_stage else 0
        opt = run_window_stage(model, records, stage, first, cfg, rng, log_path, info,
                               pretrained_lm, save_resume_point)
        save(os.path.join(cfg.out, f"stage{stage}"))
        nxt = stages[stages.index(stage) + 1] if stage != stages[-1] else stage + 1
        save_resume_point(nxt, 0, opt)
    model.prompt.zeroed = False
    final = os.path.join(cfg.out, "final")
    model.eval()
    save(final)
    ddp.cleanup(info)
    return final


def run_window_stage(model: Any, records: list[SceneRecord], stage: int, first: int,
                     cfg: TrainConfig, rng: random.Random, log_path: str | None,
                     info: ddp.DistInfo, pretrained_lm: bool,
                     save_resume_point: Callable[[int, int, Any], None]
                     ) -> torch.optim.Optimizer:
    """Stage 1, 2 or 3 from step `first` (a resumed run's): window steps over `records` in
    shuffled order, `cfg.windows_per_step` windows a step over all processes;
    `save_resume_point(stage, step, optimiser)` every `cfg.save_every` steps. Returns the
    optimiser (saved with the resume point after the stage)."""
    from tqdm import tqdm

    preset = cfg.preset
    per_step = cfg.windows_per_step or info.world_size
    per_window = preset.samples_per_window
    params = lora_trainable(model, stage_setup(model, stage,
                                               train_lm_in_stage1=not pretrained_lm))
    # the slot heads start from nothing and see few examples per step: a larger step size
    head_ids = {id(p) for name, p in model.named_parameters()
                if name.startswith((*HEADS, "text_coords."))}
    groups = [{"params": [p for p in params if id(p) not in head_ids], "scale": 1.0},
              {"params": [p for p in params if id(p) in head_ids], "scale": 3.0}]
    rows_hook = None
    if pretrained_lm and stage in (1, 3):  # the LM learns to say <box> / <time>
        emb = model.lm.get_input_embeddings().weight
        rows_hook = new_tokens.train_rows(emb, new_tokens.added_token_ids(model))
        params.append(emb)
        groups.append({"params": [emb], "scale": 3.0, "weight_decay": 0.0})
    opt = torch.optim.AdamW([g for g in groups if g["params"]], lr=preset.lr,
                            weight_decay=0.01)
    opt_path = os.path.join(cfg.out, "last", "optimizer.pt")
    if first > 0 and os.path.isfile(opt_path):
        if preset.lora_rank:  # `last/` holds merged weights: the adapters start afresh
            print("resuming with fresh LoRA adapters: the saved optimiser state is not loaded")
        else:
            opt.load_state_dict(torch.load(opt_path, weights_only=True))
    total = preset.steps[stage - 1]
    replica = ddp.replicate(model, info)  # after stage_setup: DDP registers what trains
    if stage == 1 and first == 0 and preset.text_warmup > 0 and not pretrained_lm:
        text_warmup(model, records, preset.text_warmup, preset.lr * 3, rng, log_path,
                    replica, info)
    order = [i for _ in range(total * per_step // len(records) + 2) for i in
             rng.sample(range(len(records)), len(records))]
    bar = tqdm(range(first, total), desc=f"stage {stage}", initial=first, total=total,
               disable=not info.is_main)
    t0 = time.time()
    for step in bar:
        windows = ddp.local_share(order[step * per_step:(step + 1) * per_step], info)
        work = [(records[i], s) for i in windows if (s := samples_for_stage(records[i], stage))]
        if per_window:
            work = [(r, rng.sample(s, per_window) if len(s) > per_window else s)
                    for r, s in work]
        for g in opt.param_groups:
            g["lr"] = lr_at(step, total, preset.lr) * g["scale"]
        vals = window_step(model, replica, opt, params, work, stage, info, preset.head_steps,
                           cfg.bf16, cfg.grad_checkpointing)
        if vals is None:
            continue
        bar.set_postfix({k: f"{v:.3f}" for k, v in vals.items() if k != "total"})
        append_log(log_path, {"stage": stage, "step": step, **vals,
                              "s": round(time.time() - t0, 1)})
        if (step + 1) % cfg.save_every == 0 and step + 1 < total:
            save_resume_point(stage, step + 1, opt)
    if rows_hook is not None:
        rows_hook.remove()
        model.lm.get_input_embeddings().weight.requires_grad_(False)
    return opt
