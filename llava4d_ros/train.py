"""Train LLaVA-4D in the paper's three stages on synthetic 4D instruction data.

    python -m llava4d_ros.train --out runs/default [--config small] [--stages 1,2,3,4,5]
                                [--resume] [--ablation full|none|xyz|time] [--device cpu|cuda]
    python -m llava4d_ros.train --out runs/smollm2 --config smollm2    (on SmolLM2, LoRA)
    torchrun --standalone --nproc_per_node N -m llava4d_ros.train ...   (data-parallel)

Stages (LLAVA4D.md):
1. content alignment, p_4D set to zero: fusion + projector, and the LM too when it starts from
   scratch (the shipped default: a tiny Llama has no language to keep); LM loss on all tasks.
2. spatiotemporal coordinate alignment: the 4D encoding (PE, TE, text-side w_s/w_t), fusion and
   the slot heads on the grounded tasks; the LM and projector frozen.
3. 4D instruction tuning: everything but the vision encoder, all tasks, all losses.
4. (ours) slot-head refinement: one forward pass of the frozen model over every training window
   collects the slot features; the box and time heads (re-initialised) and the pointer are then
   fitted on them for `--refine-steps` cheap steps.
5. (ours) scene inventory and output bias (model/inventory.py), the rest frozen: the inventory
   on the scenes' ground truth (which colours are there, move, what shape), then the bias on
   the LM's teacher-forced answers of every window for `--bias-steps` steps.

One step is one scene window with all its questions (its visual prefix runs once). Scenes are
rendered and ingested once through `core.pipeline.Ingestor` and cached (training/dataset.py).
Checkpoints: `<out>/stage<k>/` after each stage (a loadable model directory), `<out>/last/`
every `--save-every` steps with the optimiser state for `--resume`, `<out>/final/` at the end.

On a pretrained LM (`--lm`, or a preset's `lm`: the smollm2 preset) the LM stays frozen but for
LoRA adapters (stage 3) and the embedding rows of the tokens LLaVA-4D adds (stages 1 and 3,
training/new_tokens.py); there is no text warm-up, stage 5's output bias moves only the tokens of
the training answers, and checkpoints keep only the LM's changes to its base (model/lm_delta.py).

Scaling (training/): under torchrun every process trains on its share of `--windows-per-step`
windows per step and DDP averages the gradients (stages 4 and 5 run alike on every process and
rank 0's result is broadcast); `--lora-rank` trains LoRA adapters instead of the LM's weights
(checkpoints hold the merged weights); `--bf16` runs the forwards under bfloat16 autocast;
`--grad-checkpointing` recomputes the visual prefix's LM layers in the backward.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from llava4d_ros.core.pipeline import IngestConfig
from llava4d_ros.model.config import (
    BOX_HEADS,
    DEFAULT_BOX_HEAD,
    DEFAULT_TIME_HEAD,
    TIME_HEADS,
    LLaVA4DConfig,
    tiny_llama,
)
from llava4d_ros.model.llava4d import build_model, load_llava4d
from llava4d_ros.model.spec import ModelSpec
from llava4d_ros.model.tokenizer import build_tokenizer
from llava4d_ros.model.vision import ColourStatsEncoder
from llava4d_ros.training import checkpointing, new_tokens, stages
from llava4d_ros.training import distributed as ddp
from llava4d_ros.training import losses as train_losses
from llava4d_ros.training.dataset import SceneRecord, cache_scenes, load_record
from llava4d_ros.training.envelope import fit_object_envelope
from llava4d_ros.training.lora import add_lora, lora_trainable, merged_copy

GROUNDED_TASKS = ("grounding", "when_start", "heading", "caption")


@dataclass(frozen=True)
class Preset:
    hidden: int
    layers: int
    heads: int
    steps: tuple[int, int, int]  # per stage
    lr: float
    train_scenes: int
    test_scenes: int
    text_warmup: int
    inventory_scenes: int  # stage 5: cheap per scene, and its shape classifier wants objects
    refine_steps: int = 6000  # stage 4's head steps
    refine_scenes: int = 0  # stage 4's training scenes (0: train_scenes); a pass each, no steps
    bias_steps: int = 3000  # stage 5's output-bias steps
    # a pretrained LM (`lm`: a directory, a .gguf, or "smollm2" for the one setup converts):
    # the LM stays frozen but for LoRA adapters and the rows of the tokens we add
    lm: str | None = None
    lora_rank: int = 0
    compressor: str = "none"
    samples_per_window: int = 0  # 0: all of a window's questions in each step
    phrasing: str = "template"  # the instruction data's wording (data/instructions.py)
    honest: bool = False  # with the questions whose answer is "no" / "I do not see it"
    head_steps: int = 8  # extra steps of the slot heads alone per window step (stages 2, 3)
    stages: str = "1,2,3,4,5"


PRESETS = {
    "small": Preset(hidden=128, layers=3, heads=4, steps=(150, 250, 450), lr=1e-3,
                    train_scenes=320, test_scenes=40, text_warmup=300, inventory_scenes=640),
    # the default's recipe on data in the training-side phrasing families plus the honest
    # questions, with the vocabulary of both; 240 scenes (the SmolLM2 run's scene cache)
    "small-honest": Preset(hidden=128, layers=3, heads=4, steps=(150, 250, 450), lr=1e-3,
                           train_scenes=240, test_scenes=40, text_warmup=300,
                           inventory_scenes=240, phrasing="train", honest=True),
    # LLaVA-4D on SmolLM2-135M-Instruct: a window step of 12 questions takes 4-7 s on 2 CPU
    # threads, so fewer steps and two extra head steps; stage 4's feature pass (one forward of
    # each window, ~5 min) and its head steps (~6 min) took val SAcc 0.23 -> 0.52 (10 scenes);
    # stage 5's output bias reads every question of a window (~25 min): on 30 val scenes it
    # was ahead of 12 a window on every task (SAcc 0.708 against 0.696); stage 4 on 480 scenes
    # instead of 240 (~53 min on 1 thread) took it to 0.752 (grounding 0.739 -> 0.817)
    "smollm2": Preset(hidden=0, layers=0, heads=0, steps=(80, 80, 420), lr=6e-4,
                      train_scenes=240, test_scenes=40, text_warmup=0, inventory_scenes=240,
                      refine_steps=6000, refine_scenes=480, lm="smollm2", lora_rank=8,
                      compressor="resampler", samples_per_window=12, phrasing="train",
                      honest=True, head_steps=2),
    "tiny": Preset(hidden=32, layers=2, heads=4, steps=(2, 2, 2), lr=1e-3, train_scenes=2,
                   test_scenes=1, text_warmup=2, inventory_scenes=2, refine_steps=20,
                   bias_steps=20),
}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def ingest_config(cfg: LLaVA4DConfig) -> IngestConfig:
    """The ingest settings a model of `cfg` trains and is evaluated with (its ModelSpec's)."""
    return ModelSpec.of(cfg).ingest_config()


# The sources whose code decides what a cached scene holds (render, ingest, encode, samples):
# a change to any of them gives a new cache directory, so a stale cache is never read.
_CACHE_SOURCES = ("data/scene.py", "data/instructions.py", "data/vocabulary.py",
                  "core/geometry.py", "core/buffer4d.py", "core/pipeline.py",
                  "core/colors.py", "model/vision.py", "training/dataset.py")


def cache_dir_for(root: str, cfg: LLaVA4DConfig) -> str:
    """`root/<vision>_g<grid>_b<budget>_v<voxel>_<hash>`: the hash covers the source of every
    module that builds scene records plus the ingest and vision settings."""
    import hashlib

    package = os.path.dirname(os.path.abspath(__file__))
    h = hashlib.sha256(repr((ingest_config(cfg), cfg.vision)).encode())
    for rel in _CACHE_SOURCES:
        path = os.path.join(package, rel)
        h.update(rel.encode())
        if os.path.exists(path):
            with open(path, "rb") as f:
                h.update(f.read())
    g = cfg.patch_grid
    return os.path.join(root, f"{cfg.vision.kind}_g{g[0]}x{g[1]}_b{cfg.token_budget}_"
                              f"v{cfg.voxel_m:g}_{h.hexdigest()[:12]}")


def sample_kwargs(preset: Preset) -> dict[str, Any]:
    """`samples_for_scene` options of a preset's data (empty: the template tasks)."""
    kw: dict[str, Any] = {}
    if preset.phrasing != "template":
        kw["phrasing"] = preset.phrasing
    if preset.honest:
        kw["honest"] = True
    return kw


def load_split(split: str, n: int, cache_root: str, cfg: LLaVA4DConfig,
               progress: bool = True, samples: dict[str, Any] | None = None,
               workers: int = 1) -> list[SceneRecord]:
    """Cached records of the first `n` scene seeds of `split` (built on first use, by
    `workers` processes); `samples`: `samples_for_scene` options (e.g. `phrasing="train",
    honest=True`)."""
    from llava4d_ros.data.instructions import seeds_for_split

    if cfg.vision.kind != "colour_stats":
        raise ValueError("training data is cached with the colour-stats encoder only here")
    seeds = seeds_for_split(split, n)
    paths = cache_scenes(seeds, cache_dir_for(cache_root, cfg), ColourStatsEncoder(),
                         ingest_config(cfg), progress=progress, sample_kwargs=samples,
                         workers=workers)
    return [load_record(p) for p in paths]


def pretrained_model(preset: Preset, lm: str, encoding: str) -> Any:
    """LLaVA-4D on the pretrained LM at `lm` ("smollm2": the one setup converts) with fresh
    4D parts, the preset's compressor, and the 4D encoding of the ablation."""
    from llava4d_ros.model.backbones import default_lm_dir
    from llava4d_ros.model.config import CompressorConfig
    from llava4d_ros.model.llava4d import LLaVA4D

    path = default_lm_dir() if lm == "smollm2" else lm
    model = LLaVA4D.from_lm(path, compressor=CompressorConfig(kind=preset.compressor))
    if encoding != "full":
        stages.set_encoding(model, encoding)
    return model


def default_config(preset: Preset, encoding: str, vocab_size: int) -> LLaVA4DConfig:
    return LLaVA4DConfig(
        lm=tiny_llama(vocab_size, hidden=preset.hidden, layers=preset.layers,
                      heads=preset.heads),
        model_id=f"llava4d-{encoding}-h{preset.hidden}l{preset.layers}",
    ).with_encoding(encoding)


def stage_setup(model: Any, stage: int, train_lm_in_stage1: bool) -> list[torch.nn.Parameter]:
    """Freeze / unfreeze per stage; returns the parameters to optimise."""
    for p in model.parameters():
        p.requires_grad_(False)
    parts: list[torch.nn.Module] = []
    if stage == 1:
        parts = [model.fusion, model.projector] + ([model.lm] if train_lm_in_stage1 else [])
        if model.compressor is not None:  # aligned with the projector, as LLaVA's connector
            parts.append(model.compressor)
    elif stage == 2:
        parts = [model.prompt, model.text_coords, model.fusion]
        if model.cfg.slot_heads:
            parts += [model.pointer, model.box_head, model.time_head, model.slot_pool]
    else:
        parts = [m for name, m in model.named_children() if name != "vision_tower"]
    model.prompt.zeroed = stage == 1
    params = []
    for part in parts:
        for p in part.parameters():
            p.requires_grad_(True)
            params.append(p)
    return params


def _lr(step: int, total: int, base: float, warmup: int = 20) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    return base * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def _samples_for_stage(rec: SceneRecord, stage: int) -> list[dict[str, Any]]:
    if stage == 2:
        return [s for s in rec.samples if s["task"] in GROUNDED_TASKS and s["slots"]]
    return rec.samples


def _text_warmup(model: Any, records: list[SceneRecord], steps: int, lr: float,
                 rng: random.Random, log_path: str | None, replica: Any = None,
                 info: ddp.DistInfo | None = None) -> None:
    """Stage 1's opening for an LM trained from scratch: text-only batches of 64 questions
    and answers (no visual prefix, ~50x cheaper a step), so the LM knows the answer forms
    before it learns to read the visual tokens. Under torchrun each process takes every
    world_size-th question of the batch (`replica`: the stage's DDP-wrapped `TrainStep`)."""
    from tqdm import tqdm

    info = info or ddp.DistInfo(0, 1, str(model.device))
    forward = replica or ddp.TrainStep(model)
    pool = [s for rec in records for s in rec.samples]
    params = [p for p in model.lm.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    for step in tqdm(range(steps), desc="stage 1 (text warm-up)", disable=not info.is_main):
        for g in opt.param_groups:
            g["lr"] = _lr(step, steps, lr)
        batch = rng.sample(pool, min(64, len(pool)))
        loss = forward("text", batch[info.rank::info.world_size])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if log_path and (step % 50 == 0 or step == steps - 1):
            with open(log_path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"stage": 0, "step": step, "lm": round(loss.item(), 4)})
                        + "\n")


HEADS = ("pointer.", "box_head.", "time_head.", "slot_pool.")
# stage 4 re-initialises the box and time heads; the pointer's time-match term is newer than
# the checkpoints of stages 1-3 trained before it (zero-init, so fresh is a no-op start)
FRESH_FOR_STAGE4 = ("box_head.", "time_head.", "pointer.dt.")


def _fresh_for(stage: int, box_only: bool) -> tuple[str, ...]:
    """The parameters a checkpoint loaded to start `stage` does not give (built fresh)."""
    if stage != 4:
        return ()
    return ("box_head.",) if box_only else FRESH_FOR_STAGE4


def refine_heads(model: Any, records: list[SceneRecord], steps: int, lr: float,
                 rng: random.Random, log_path: str, box_head: str = DEFAULT_BOX_HEAD,
                 box_only: bool = False, time_head: str = DEFAULT_TIME_HEAD) -> None:
    """Stage 4: the box and time heads, re-initialised, fitted with the pointer and the pooling
    on the frozen model's slot batches of every training window (one forward pass each; a head
    step then costs milliseconds instead of a whole LM pass). `box_head`, `time_head`: the
    kinds of the new heads; `box_only`: re-initialise and fit the box head alone, every other
    part as it is (a finished model's pointer, time head and inventory keep their numbers)."""
    batches = collect_slot_batches(model, records)
    fit_heads(model, batches, steps, lr, rng, log_path, box_head, box_only, time_head)


def collect_slot_batches(model: Any, records: list[SceneRecord],
                         progress: bool = True) -> list[dict[str, Any]]:
    """Stage 4's features: the frozen model's detached slot batch of every window."""
    from tqdm import tqdm

    model.eval()
    batches = []
    for rec in tqdm(records, desc="stage 4 (slot features)", disable=not progress):
        samples = [s for s in rec.samples if s["slots"]]
        if not samples:
            continue
        with torch.no_grad():
            _, batch = train_losses.window_loss(model, rec.tokens, rec.t_ref_s, samples)
        batch = train_losses.detach_slot_batch(batch)
        batch["tasks"] = [samples[i]["task"] for i in batch["sample"]]
        batches.append(batch)
    return batches


def fit_heads(model: Any, batches: list[dict[str, Any]], steps: int, lr: float,
              rng: random.Random, log_path: str | None, box_head: str = DEFAULT_BOX_HEAD,
              box_only: bool = False, time_head: str = DEFAULT_TIME_HEAD) -> None:
    """Stage 4's fit on `batches`: a fresh box head of kind `box_head` and, unless `box_only`,
    a fresh time head of kind `time_head`, with the pointer and the pooling."""
    from tqdm import tqdm

    from llava4d_ros.model.heads import BoxHead

    ctx_dim = model.box_head.h_proj.in_features
    model.cfg = replace(model.cfg, box_head=box_head)
    model.box_head = BoxHead(ctx_dim, model.cfg.box_hidden, box_head).to(model.device)
    if not box_only:
        model.cfg = replace(model.cfg, time_head=time_head)
        model.time_head = stages.fresh_time_head(model)
    for p in model.parameters():
        p.requires_grad_(False)
    params = [p for n, p in model.named_parameters()
              if n.startswith(("box_head.",) if box_only else HEADS)]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    for step in tqdm(range(steps), desc="stage 4 (heads)"):
        for g in opt.param_groups:
            g["lr"] = _lr(step, steps, lr)
        losses = train_losses.slot_losses(model, batches[rng.randrange(len(batches))])
        opt.zero_grad(set_to_none=True)
        train_losses.slot_total(losses).backward()
        opt.step()
        if log_path and (step % 100 == 0 or step == steps - 1):
            with open(log_path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"stage": 4, "step": step,
                                    **_rounded(losses)})
                        + "\n")


def inventory_words_problem(model: Any) -> str | None:
    """Why the default scene inventory's words cannot be read from this model's tokenizer
    (a word that is not one token as an answer writes it), or None."""
    from llava4d_ros.model.inventory import WordSets
    from llava4d_ros.training.task import task_inventory

    try:
        WordSets(task_inventory(), model.written_id)
    except ValueError as e:
        return str(e)
    return None


def fit_inventory(model: Any, records: list[SceneRecord], steps: int, lr: float,
                  rng: random.Random, log_path: str | None, progress: bool = True) -> None:
    """Stage 5 (the rest of the model frozen): the scene inventory on the windows' ground truth
    (token colours, then per colour presence, motion and shape), then the output bias on the
    frozen LM's teacher-forced answers of every window (all its questions), with the fitted
    inventory's readings. A pretrained LM's bias moves only the tokens of the training
    answers (`InventoryConfig.bias_ids`)."""
    from tqdm import tqdm

    from llava4d_ros.model.inventory import decode_features, inventory_loss
    from llava4d_ros.training.task import task_inventory

    if model.cfg.inventory is None:
        bias_ids = None
        if model.cfg.lm_source.kind != "scratch":
            bias_ids = train_losses.answer_token_ids(
                model, [s for rec in records for s in rec.samples])
        stages.add_inventory(model, task_inventory(bias_ids=bias_ids))
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    inv_mod, dev = model.inventory, model.device
    use_time = model.cfg.prompt.use_time
    truth = [train_losses.inventory_truth(r, model) for r in records]
    windows = [model.inventory_inputs(rec.tokens, rec.t_ref_s) for rec in records]

    def log(row: dict[str, Any]) -> None:
        if log_path:
            with open(log_path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"stage": 5, **row}) + "\n")

    # 1. token colours
    feats = torch.cat([w[0] for w in windows])
    target = torch.cat([tr["token_colour"] for tr in truth]).to(dev)
    params = list(inv_mod.token_colour.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=3 * lr, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(rng.randrange(2**31))
    for step in range(600):
        idx = torch.randint(len(feats), (4096,), generator=gen).to(dev)
        loss = F.cross_entropy(inv_mod.token_colour(feats[idx]), target[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    log({"part": "token_colour", "loss": round(loss.item(), 4)})
    for p in params:
        p.requires_grad_(False)
    # 2. per colour: presence, motion, shape
    with torch.no_grad():
        pooled = [inv_mod.pooled(*w, use_time) for w in windows]
        obj_f = torch.stack([p[0] for p in pooled])  # (W, C, F)
        has = obj_f[..., 0] > 0  # some token of that colour
        rows = obj_f[has]
        inv_mod.mu.copy_(rows.mean(0))
        inv_mod.sd.copy_(rows.std(0).clamp_min(1e-3))
    params = list(inv_mod.object.parameters()) + list(inv_mod.present.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=3 * lr, weight_decay=1e-2)
    inv_mod.train()
    pres_in = torch.stack([p[1] for p in pooled])  # (W, C, 2)
    want = {k: torch.stack([tr[k] for tr in truth]).to(dev)
            for k in ("present", "moving", "shape")}
    for step in range(500):
        loss = inventory_loss(inv_mod.from_pooled(obj_f, pres_in), **want)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    inv_mod.eval()
    log({"part": "objects", "loss": round(loss.item(), 4)})
    for p in params:
        p.requires_grad_(False)
    # 3. the output bias on the frozen LM's answers
    batches = []
    with torch.no_grad():
        for rec, w in tqdm(list(zip(records, windows)), desc="stage 5 (LM states)",
                           disable=not progress):
            b = train_losses.inventory_batch(model, rec.tokens, rec.t_ref_s, rec.samples)
            inv = inv_mod(*w, use_time)
            b["feats"] = decode_features(inv, b["named"], b["in_q"], b["shape_after"],
                                         b["cur"], b["plural"], b["t_at"])
            batches.append(b)
    params = list(model.inventory_bias.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    for step in tqdm(range(steps), desc="stage 5 (output bias)", disable=not progress):
        for g in opt.param_groups:
            g["lr"] = _lr(step, steps, lr)
        b = batches[rng.randrange(len(batches))]
        logits = torch.cat([b["logits"] + model.inventory_bias(b["h"], b["feats"]),
                            b["rest"][:, None]], dim=1)  # the K words, then all the others
        loss = F.cross_entropy(logits, b["target"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 200 == 0 or step == steps - 1:
            base = F.cross_entropy(torch.cat([b["logits"], b["rest"][:, None]], 1),
                                   b["target"])
            log({"part": "bias", "step": step, "loss": round(loss.item(), 4),
                 "lm_only": round(base.item(), 4)})
    for p in params:
        p.requires_grad_(False)


def _save_last_model_only(model: Any, out: str, stage: int) -> None:
    last = os.path.join(out, "last")
    model.save_pretrained(last)
    with open(os.path.join(last, "progress.json"), "w", encoding="utf-8") as f:
        json.dump({"stage": stage, "step": 0}, f)


def _save_last(model: Any, opt: torch.optim.Optimizer, out: str, stage: int, step: int) -> None:
    last = os.path.join(out, "last")
    model.save_pretrained(last)
    torch.save(opt.state_dict(), os.path.join(last, "optimizer.pt"))
    with open(os.path.join(last, "progress.json"), "w", encoding="utf-8") as f:
        json.dump({"stage": stage, "step": step}, f)


def _rounded(losses: dict[str, Any]) -> dict[str, float]:
    """Loss values (tensors, possibly with grad, or floats) as floats to 4 places, for logs."""
    return {k: round(v.item() if torch.is_tensor(v) else float(v), 4)
            for k, v in losses.items()}


def _amp(device: Any, enabled: bool) -> Any:
    """bfloat16 autocast for the forwards (`--bf16`); the weights and optimiser stay fp32."""
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16,
                          enabled=enabled)


def _window_step(model: Any, replica: Any, opt: torch.optim.Optimizer,
                 params: list[torch.nn.Parameter], work: list[tuple[SceneRecord, list]],
                 stage: int, args: argparse.Namespace, info: ddp.DistInfo
                 ) -> dict[str, float] | None:
    """One optimiser step on this process's windows `work` (record, samples) of the global
    batch, then `--head-steps` steps of the slot heads alone on their detached slot batches.
    Each window's loss is scaled by world_size / (windows in the global batch) so DDP's
    average is the mean over the global batch. Returns the global mean of each loss, None when
    no window of the global batch had samples (the step is skipped, as one process did)."""
    n_global = int(ddp.sum_over_ranks([len(work)], info)[0])
    if n_global == 0:
        return None
    scale = info.world_size / n_global
    opt.zero_grad(set_to_none=True)
    sums: dict[str, float] = {}
    slot_batches = []
    items = work or [None]  # a process with nothing to learn still joins the all-reduce
    for i, item in enumerate(items):
        with ddp.accumulate(replica, i, len(items)):
            with _amp(model.device, args.bf16):
                if item is None:
                    loss = replica("idle")
                else:
                    rec, samples = item
                    losses, batch = replica("window", rec.tokens, rec.t_ref_s, samples,
                                            lm_weight=1.0,
                                            slot_weight=0.0 if stage == 1 else 1.0,
                                            checkpoint=args.grad_checkpointing)
                    if stage > 1 and batch is not None:
                        slot_batches.append(train_losses.detach_slot_batch(batch))
                    loss = losses["total"] * scale
                    for k, v in _rounded(losses).items():
                        sums[k] = sums.get(k, 0.0) + v
            loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    # The heads are cheap next to the LM pass that feeds them: a few more steps of the heads
    # alone on this step's (detached) slot batches.
    n_heads = int(ddp.sum_over_ranks([len(slot_batches)], info)[0])
    for _ in range(args.head_steps if n_heads else 0):
        opt.zero_grad(set_to_none=True)
        for i, batch in enumerate(slot_batches or [None]):
            with ddp.accumulate(replica, i, max(1, len(slot_batches))):
                with _amp(model.device, args.bf16):
                    loss = (replica("idle") if batch is None
                            else replica("heads", batch) * (info.world_size / n_heads))
                loss.backward()
        opt.step()
    keys = sorted(sums) if work else ["box", "lm", "pointer", "time", "total"]
    totals = ddp.sum_over_ranks([sums.get(k, 0.0) for k in keys], info)
    return {k: round(v / n_global, 4) for k, v in zip(keys, totals)}


def train(args: argparse.Namespace) -> str:
    """Runs the requested stages; returns the final model directory."""
    from tqdm import tqdm

    from llava4d_ros.data.instructions import vocabulary

    info = ddp.setup(args.device)
    if info.is_main:
        print(f"world_size={info.world_size}", flush=True)
    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    preset = PRESETS[args.config]
    lm_path = args.lm or preset.lm
    lora_rank = preset.lora_rank if args.lora_rank is None else args.lora_rank
    per_window = (preset.samples_per_window if args.samples_per_window is None
                  else args.samples_per_window)
    steps = tuple(args.steps) if args.steps else preset.steps
    if args.text_warmup is None:
        args.text_warmup = preset.text_warmup
    if args.refine_steps is None:
        args.refine_steps = preset.refine_steps
    if args.bias_steps is None:
        args.bias_steps = preset.bias_steps
    stages = [int(s) for s in (args.stages or preset.stages).split(",")]
    if args.stage4_box_only and 4 not in stages:
        raise ValueError(f"--stage4-box-only refits the box head in stage 4, but the stages "
                         f"to run are {stages}")
    if args.head_steps is None:
        args.head_steps = preset.head_steps
    os.makedirs(args.out, exist_ok=True)
    log_path = os.path.join(args.out, "train_log.jsonl") if info.is_main else None

    start_stage, start_step = stages[0], 0
    resumed = False
    progress_file = os.path.join(args.out, "last", "progress.json")
    if args.init:
        # a trained model (e.g. <run>/stage3) as the start of the requested stages; the
        # heads stage 4 re-initialises, and parts newer than the checkpoint, start fresh
        model = load_llava4d(args.init, fresh=_fresh_for(stages[0], args.stage4_box_only))
        print(f"starting stage {stages[0]} from {args.init}")
    elif args.resume and os.path.isfile(progress_file):
        with open(progress_file, encoding="utf-8") as f:
            prog = json.load(f)
        start_stage, start_step = prog["stage"], prog["step"]
        # stage 4 re-initialises the box and time heads: their saved shapes may be older
        model = load_llava4d(os.path.join(args.out, "last"),
                             fresh=_fresh_for(start_stage, args.stage4_box_only))
        print(f"resuming at stage {start_stage}, step {start_step}")
        resumed = True
    elif lm_path:
        model = pretrained_model(preset, lm_path, args.ablation)
    else:
        tok = build_tokenizer(vocabulary(extended=bool(sample_kwargs(preset))))
        model = build_model(default_config(preset, args.ablation, len(tok)), tok)
    if args.look_change is not None:
        if args.init or resumed:  # its weights were trained on its own tokens
            if args.look_change != model.cfg.look_change:
                raise ValueError(f"--look-change {args.look_change:g}, but the model loaded "
                                 f"was trained with {model.cfg.look_change:g}")
        else:
            stages.set_span_tokens(model, args.look_change)
    model.to(info.device).train()
    # training moves the heads, so a confidence calibration fitted to the old ones would lie;
    # `python -m llava4d_ros.evaluate --calibrate --write --model <final>` refits it on val
    model.cfg = replace(model.cfg, confidence_table=None)
    if args.pointer_space is not None:
        model.cfg = replace(model.cfg, pointer_space=args.pointer_space == "on")
    pretrained_lm = model.cfg.lm_source.kind != "scratch"
    if model.cfg.lm_source.kind == "hf":  # checkpoints keep only the LM's changes (MBs)
        model.cfg = replace(model.cfg, lm_weights="delta")
    if 5 in stages and model.cfg.inventory is None:
        why = inventory_words_problem(model)
        if why:  # found now, not after an hour of stages 1-4
            print(f"stage 5 skipped: {why}")
            stages = [s for s in stages if s != 5]
    if lora_rank:
        add_lora(model, lora_rank)
    if args.grad_checkpointing:
        checkpointing.prepare(model.lm)

    def save(path: str, opt: torch.optim.Optimizer | None = None, stage: int = 0,
             step: int = 0) -> None:
        """Rank 0 writes a plain model directory (adapters merged); with `opt`, the `last/`
        resume point."""
        if not info.is_main:
            return
        if opt is None:
            merged_copy(model).save_pretrained(path)
        else:
            _save_last(merged_copy(model), opt, args.out, stage, step)

    n_train = args.train_scenes or preset.train_scenes
    with ddp.main_first(info):
        records = load_split("train", n_train, args.cache, model.cfg, progress=info.is_main,
                             samples=sample_kwargs(preset), workers=args.cache_workers)

    def first_scenes(n: int) -> list[SceneRecord]:
        """The first `n` training scenes: stages 4 and 5 cost a pass a scene, not steps, so
        they may read more than stages 1-3."""
        if n == len(records):
            return records
        with ddp.main_first(info):
            return load_split("train", n, args.cache, model.cfg, progress=info.is_main,
                              samples=sample_kwargs(preset), workers=args.cache_workers)
    rng = random.Random(args.seed)
    per_step = args.windows_per_step or info.world_size

    for stage in stages:
        if stage < start_stage:
            continue
        if stage == 4:
            n4 = args.refine_scenes or preset.refine_scenes or len(records)
            refine_heads(model, first_scenes(n4), args.refine_steps, preset.lr, rng, log_path,
                         args.box_head, args.stage4_box_only, args.time_head)
            ddp.broadcast_module(model, info)
            save(os.path.join(args.out, "stage4"))
            if info.is_main:
                _save_last_model_only(merged_copy(model), args.out, 5)
            continue
        if stage == 5:
            records5 = first_scenes(args.inventory_scenes or preset.inventory_scenes)
            fit_inventory(model, records5, args.bias_steps, preset.lr, rng, log_path,
                          progress=info.is_main)
            fit_object_envelope(model, records5)
            ddp.broadcast_module(model, info)
            save(os.path.join(args.out, "stage5"))
            if info.is_main:
                _save_last_model_only(merged_copy(model), args.out, 6)
            continue
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
        first = start_step if stage == start_stage else 0
        opt_path = os.path.join(args.out, "last", "optimizer.pt")
        if first > 0 and os.path.isfile(opt_path):
            if lora_rank:  # `last/` holds merged weights: the adapters start afresh
                print("resuming with fresh LoRA adapters: the saved optimiser state is not "
                      "loaded")
            else:
                opt.load_state_dict(torch.load(opt_path, weights_only=True))
        total = steps[stage - 1]
        replica = ddp.replicate(model, info)  # after stage_setup: DDP registers what trains
        if stage == 1 and first == 0 and args.text_warmup > 0 and not pretrained_lm:
            _text_warmup(model, records, args.text_warmup, preset.lr * 3, rng, log_path,
                         replica, info)
        order = [i for _ in range(total * per_step // len(records) + 2) for i in
                 rng.sample(range(len(records)), len(records))]
        bar = tqdm(range(first, total), desc=f"stage {stage}", initial=first, total=total,
                   disable=not info.is_main)
        t0 = time.time()
        for step in bar:
            windows = ddp.local_share(order[step * per_step:(step + 1) * per_step], info)
            work = [(records[i], s) for i in windows if (s := _samples_for_stage(records[i],
                                                                                  stage))]
            if per_window:
                work = [(r, rng.sample(s, per_window) if len(s) > per_window else s)
                        for r, s in work]
            for g in opt.param_groups:
                g["lr"] = _lr(step, total, preset.lr) * g["scale"]
            vals = _window_step(model, replica, opt, params, work, stage, args, info)
            if vals is None:
                continue
            bar.set_postfix({k: f"{v:.3f}" for k, v in vals.items() if k != "total"})
            if log_path:
                with open(log_path, "a", encoding="utf-8") as f:
                    f.write(json.dumps({"stage": stage, "step": step, **vals,
                                        "s": round(time.time() - t0, 1)}) + "\n")
            if (step + 1) % args.save_every == 0 and step + 1 < total:
                save("", opt, stage, step + 1)
        if rows_hook is not None:
            rows_hook.remove()
            model.lm.get_input_embeddings().weight.requires_grad_(False)
        save(os.path.join(args.out, f"stage{stage}"))
        nxt = stages[stages.index(stage) + 1] if stage != stages[-1] else stage + 1
        save("", opt, nxt, 0)
    model.prompt.zeroed = False
    final = os.path.join(args.out, "final")
    model.eval()
    save(final)
    ddp.cleanup(info)
    return final


def main(argv: list[str] | None = None) -> None:
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
    ap.add_argument("--stage4-box-only", action="store_true",
                    help="stage 4 re-initialises and fits the box head alone: gives a finished "
                         "model (--stages 4 --init <final>) a new box head, the rest unchanged")
    ap.add_argument("--bias-steps", type=int, default=None,
                    help="stage 5's output-bias steps (default: the preset's, 3000 for small)")
    ap.add_argument("--inventory-scenes", type=int, default=None,
                    help="training scenes for stage 5 (default: the preset's, 640 for small)")
    ap.add_argument("--resume", action="store_true", help="continue from <out>/last")
    ap.add_argument("--init", default=None,
                    help="start the first requested stage from this model directory (e.g. "
                         "--stages 4 --init runs/full/stage3)")
    ap.add_argument("--ablation", default="full", choices=("full", "none", "xyz", "time"))
    ap.add_argument("--look-change", type=float, default=None,
                    help="a new model's tokens: a still voxel's token splits where its mean "
                         "colour changes by more than this (RGB 0..255; 40 keeps ghosts under "
                         "0.05 on val) and the time encoding reads each token's span; 0 or "
                         "unset: one token per still voxel, the shipped default's tokens")
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
    args = ap.parse_args(argv)
    final = train(args)
    if int(os.environ.get("RANK", "0")) == 0:
        print(final)


if __name__ == "__main__":
    main()
