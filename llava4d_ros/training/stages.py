"""The training stages as functions of a model and its cached windows (training/trainer.py runs
them in order, with checkpoints and resume).

1. content alignment, p_4D zeroed: fusion + projector (+ the LM when it starts from scratch);
   a new LM first takes `text_warmup` text-only steps.
2. spatiotemporal coordinate alignment on the grounded tasks: the 4D encoding, fusion and the
   slot heads; the LM and projector frozen.
3. 4D instruction tuning: everything but the vision encoder.
   (`stage_setup` says what trains in 1-3; `window_step` is one step of them.)
4. (ours) slot-head refinement on the frozen model's slot features: `refine_heads`.
5. (ours) scene inventory and output bias, the rest frozen: `fit_inventory`, i.e.
   `fit_token_colours`, `fit_objects`, then `fit_output_bias` on `collect_bias_batches`.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import replace
from typing import Any

import torch
from torch.nn import functional as F

from llava4d_ros.model.config import DEFAULT_BOX_HEAD, DEFAULT_TIME_HEAD
from llava4d_ros.training import distributed as ddp
from llava4d_ros.training import losses as train_losses
from llava4d_ros.training import model_edits
from llava4d_ros.training.dataset import SceneRecord

GROUNDED_TASKS = ("grounding", "when_start", "heading", "caption")
HEADS = ("pointer.", "box_head.", "time_head.", "slot_pool.")
# stage 4 re-initialises the box and time heads; the pointer's time-match term is newer than
# the checkpoints of stages 1-3 trained before it (zero-init, so fresh is a no-op start)
FRESH_FOR_STAGE4 = ("box_head.", "time_head.", "pointer.dt.")


def append_log(path: str | None, row: dict[str, Any]) -> None:
    """One row of `<out>/train_log.jsonl` (None: this process does not log)."""
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")


def rounded(losses: dict[str, Any]) -> dict[str, float]:
    """Loss values (tensors, possibly with grad, or floats) as floats to 4 places, for logs."""
    return {k: round(v.item() if torch.is_tensor(v) else float(v), 4)
            for k, v in losses.items()}


def lr_at(step: int, total: int, base: float, warmup: int = 20) -> float:
    """Linear warm-up over `warmup` steps, then cosine decay to zero at `total`."""
    if step < warmup:
        return base * (step + 1) / warmup
    return base * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


# what stage 4 may fit alone on a finished model, every other part keeping its numbers
STAGE4_ONLY = ("box", "time")


def fresh_for(stage: int, only: str = "") -> tuple[str, ...]:
    """The parameters a checkpoint loaded to start `stage` does not give (built fresh);
    `only`: stage 4 fits that head alone (one of STAGE4_ONLY; "" for every head)."""
    if stage != 4:
        return ()
    return (f"{only}_head.",) if only else FRESH_FOR_STAGE4


# --- stages 1-3 ---------------------------------------------------------------------------

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


def samples_for_stage(rec: SceneRecord, stage: int) -> list[dict[str, Any]]:
    """Stage 2 reads the grounded tasks' questions that have slots; the others all."""
    if stage == 2:
        return [s for s in rec.samples if s["task"] in GROUNDED_TASKS and s["slots"]]
    return rec.samples


def text_warmup(model: Any, records: list[SceneRecord], steps: int, lr: float,
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
            g["lr"] = lr_at(step, steps, lr)
        batch = rng.sample(pool, min(64, len(pool)))
        loss = forward("text", batch[info.rank::info.world_size])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % 50 == 0 or step == steps - 1:
            append_log(log_path, {"stage": 0, "step": step, "lm": round(loss.item(), 4)})


def _amp(device: Any, enabled: bool) -> Any:
    """bfloat16 autocast for the forwards (`--bf16`); the weights and optimiser stay fp32."""
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16,
                          enabled=enabled)


def window_step(model: Any, replica: Any, opt: torch.optim.Optimizer,
                params: list[torch.nn.Parameter], work: list[tuple[SceneRecord, list]],
                stage: int, info: ddp.DistInfo, head_steps: int, bf16: bool = False,
                checkpoint: bool = False) -> dict[str, float] | None:
    """One optimiser step on this process's windows `work` (record, samples) of the global
    batch, then `head_steps` steps of the slot heads alone on their detached slot batches.
    Each window's loss is scaled by world_size / (windows in the global batch) so DDP's
    average is the mean over the global batch. Returns the global mean of each loss, None when
    no window of the global batch had samples (the step is skipped, as one process did).
    `checkpoint`: recompute the visual prefix's LM layers in the backward."""
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
            with _amp(model.device, bf16):
                if item is None:
                    loss = replica("idle")
                else:
                    rec, samples = item
                    losses, batch = replica("window", rec.tokens, rec.t_ref_s, samples,
                                            lm_weight=1.0,
                                            slot_weight=0.0 if stage == 1 else 1.0,
                                            checkpoint=checkpoint)
                    if stage > 1 and batch is not None:
                        slot_batches.append(train_losses.detach_slot_batch(batch))
                    loss = losses["total"] * scale
                    for k, v in rounded(losses).items():
                        sums[k] = sums.get(k, 0.0) + v
            loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    # The heads are cheap next to the LM pass that feeds them: a few more steps of the heads
    # alone on this step's (detached) slot batches.
    n_heads = int(ddp.sum_over_ranks([len(slot_batches)], info)[0])
    for _ in range(head_steps if n_heads else 0):
        opt.zero_grad(set_to_none=True)
        for i, batch in enumerate(slot_batches or [None]):
            with ddp.accumulate(replica, i, max(1, len(slot_batches))):
                with _amp(model.device, bf16):
                    loss = (replica("idle") if batch is None
                            else replica("heads", batch) * (info.world_size / n_heads))
                loss.backward()
        opt.step()
    keys = sorted(sums) if work else ["box", "lm", "pointer", "time", "total"]
    totals = ddp.sum_over_ranks([sums.get(k, 0.0) for k in keys], info)
    return {k: round(v / n_global, 4) for k, v in zip(keys, totals)}


# --- stage 4 ------------------------------------------------------------------------------

def refine_heads(model: Any, records: list[SceneRecord], steps: int, lr: float,
                 rng: random.Random, log_path: str | None, box_head: str = DEFAULT_BOX_HEAD,
                 only: str = "", time_head: str = DEFAULT_TIME_HEAD) -> None:
    """Stage 4: the box and time heads, re-initialised, fitted with the pointer and the pooling
    on the frozen model's slot batches of every training window (one forward pass each; a head
    step then costs milliseconds instead of a whole LM pass). `box_head`, `time_head`: the
    kinds of the new heads; `only` "box" or "time": re-initialise and fit that head alone,
    every other part as it is (a finished model's pointer, other head and inventory keep
    their numbers)."""
    batches = collect_slot_batches(model, records)
    fit_heads(model, batches, steps, lr, rng, log_path, box_head, only, time_head)


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
              only: str = "", time_head: str = DEFAULT_TIME_HEAD) -> None:
    """Stage 4's fit on `batches`: a fresh box head of kind `box_head` and a fresh time head
    of kind `time_head`, with the pointer and the pooling; `only` "box" or "time": that head
    alone, fresh, and nothing else fitted."""
    from tqdm import tqdm

    from llava4d_ros.model.heads import BoxHead

    if only not in ("", *STAGE4_ONLY):
        raise ValueError(f"only must be one of {STAGE4_ONLY} or '', got {only!r}")
    if only != "time":
        ctx_dim = model.box_head.h_proj.in_features
        model.cfg = replace(model.cfg, box_head=box_head)
        model.box_head = BoxHead(ctx_dim, model.cfg.box_hidden, box_head).to(model.device)
    if only != "box":
        model.cfg = replace(model.cfg, time_head=time_head)
        model.time_head = model_edits.fresh_time_head(model)
    for p in model.parameters():
        p.requires_grad_(False)
    params = [p for n, p in model.named_parameters()
              if n.startswith((f"{only}_head.",) if only else HEADS)]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    for step in tqdm(range(steps), desc="stage 4 (heads)"):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, lr)
        losses = train_losses.slot_losses(model, batches[rng.randrange(len(batches))])
        opt.zero_grad(set_to_none=True)
        train_losses.slot_total(losses).backward()
        opt.step()
        if step % 100 == 0 or step == steps - 1:
            append_log(log_path, {"stage": 4, "step": step, **rounded(losses)})


# --- stage 5 ------------------------------------------------------------------------------

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


def _train_only(params: list[torch.nn.Parameter]) -> list[torch.nn.Parameter]:
    for p in params:
        p.requires_grad_(True)
    return params


def _freeze(params: list[torch.nn.Parameter]) -> None:
    for p in params:
        p.requires_grad_(False)


def fit_token_colours(model: Any, windows: list[tuple], truth: list[dict[str, Any]],
                      lr: float, rng: random.Random, steps: int = 600) -> float:
    """Stage 5, part 1: the inventory's per-token colour classifier on the tokens' true colours
    (batches of 4096 tokens from all windows). Returns the last loss."""
    inv, dev = model.inventory, model.device
    feats = torch.cat([w[0] for w in windows])
    target = torch.cat([tr["token_colour"] for tr in truth]).to(dev)
    params = _train_only(list(inv.token_colour.parameters()))
    opt = torch.optim.AdamW(params, lr=3 * lr, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(rng.randrange(2**31))
    for _ in range(steps):
        idx = torch.randint(len(feats), (4096,), generator=gen).to(dev)
        loss = F.cross_entropy(inv.token_colour(feats[idx]), target[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    _freeze(params)
    return loss.item()


def fit_objects(model: Any, windows: list[tuple], truth: list[dict[str, Any]], lr: float,
                steps: int = 500) -> float:
    """Stage 5, part 2: per colour, whether an object of it is there, moves, and its shape,
    from the tokens pooled by the fitted token colours (features standardised over the
    windows' colours that have tokens). Returns the last loss."""
    from llava4d_ros.model.inventory import inventory_loss

    inv, dev = model.inventory, model.device
    use_time, use_space = model.cfg.inventory_reads
    with torch.no_grad():
        pooled = [inv.pooled(f, xyz, t, mo, use_time, use_space=use_space, flat=flat)
                  for f, xyz, t, mo, flat in windows]
        obj_f = torch.stack([p[0] for p in pooled])  # (W, C, F)
        has = obj_f[..., 0] > 0  # some token of that colour
        rows = obj_f[has]
        inv.mu.copy_(rows.mean(0))
        inv.sd.copy_(rows.std(0).clamp_min(1e-3))
    params = _train_only(list(inv.object.parameters()) + list(inv.present.parameters()))
    opt = torch.optim.AdamW(params, lr=3 * lr, weight_decay=1e-2)
    inv.train()
    pres_in = torch.stack([p[1] for p in pooled])  # (W, C, 2)
    want = {k: torch.stack([tr[k] for tr in truth]).to(dev)
            for k in ("present", "moving", "shape")}
    for _ in range(steps):
        loss = inventory_loss(inv.from_pooled(obj_f, pres_in), **want)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    fit_presence(inv.present, pres_in.reshape(-1, 2), want["present"].reshape(-1))
    inv.eval()
    _freeze(params)
    return inventory_loss(inv.from_pooled(obj_f, pres_in), **want).item()


def fit_presence(head: torch.nn.Linear, pres_in: torch.Tensor, present: torch.Tensor,
                 l2: float = 1e-2) -> None:
    """The presence head (a logistic regression of `pres_in (M, 2)`: a colour's top token
    probability and log token mass) fitted to convergence on `present (M,)` 0/1, with an L2 on
    its weights (present and absent colours separate almost perfectly, and unpenalised weights
    would grow without end). Why not the joint AdamW steps alone: 500 of them from the head's
    random start left it wherever the start was; one stage-5 fit read all 368 absent colours of
    val 60-159 as present (bias +0.08, weights 0.47 / 0.25; the shipped default's -1.80,
    0.90 / 1.24). The loss is convex, so LBFGS lands on one answer from any start."""
    opt = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=200,
                            line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        loss = (F.binary_cross_entropy_with_logits(head(pres_in)[:, 0], present)
                + l2 * head.weight.pow(2).sum())
        loss.backward()
        return loss

    opt.step(closure)


def collect_bias_batches(model: Any, records: list[SceneRecord], windows: list[tuple],
                         progress: bool = True) -> list[dict[str, Any]]:
    """Stage 5, part 3's data: the frozen LM's teacher-forced answers of every window (all its
    questions), with the fitted inventory's readings as the bias's features."""
    from tqdm import tqdm

    from llava4d_ros.model.inventory import decode_features

    use_time, use_space = model.cfg.inventory_reads
    batches = []
    with torch.no_grad():
        for rec, w in tqdm(list(zip(records, windows)), desc="stage 5 (LM states)",
                           disable=not progress):
            b = train_losses.inventory_batch(model, rec.tokens, rec.t_ref_s, rec.samples)
            f, xyz, t, mo, flat = w
            inv = model.inventory(f, xyz, t, mo, use_time, use_space=use_space, flat=flat)
            b["feats"] = decode_features(inv, b["named"], b["in_q"], b["shape_after"],
                                         b["cur"], b["plural"], b["t_at"])
            batches.append(b)
    return batches


def fit_output_bias(model: Any, batches: list[dict[str, Any]], steps: int, lr: float,
                    rng: random.Random, log_path: str | None, progress: bool = True) -> None:
    """Stage 5, part 3: the output bias on `batches` (`collect_bias_batches`), the LM frozen;
    logs the loss beside the LM's own every 200 steps."""
    from tqdm import tqdm

    params = _train_only(list(model.inventory_bias.parameters()))
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    for step in tqdm(range(steps), desc="stage 5 (output bias)", disable=not progress):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, lr)
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
            append_log(log_path, {"stage": 5, "part": "bias", "step": step,
                                  "loss": round(loss.item(), 4),
                                  "lm_only": round(base.item(), 4)})
    _freeze(params)


def fit_inventory(model: Any, records: list[SceneRecord], steps: int, lr: float,
                  rng: random.Random, log_path: str | None, progress: bool = True) -> None:
    """Stage 5 (the rest of the model frozen): the scene inventory on the windows' ground truth
    (token colours, then per colour presence, motion and shape), then the output bias on the
    frozen LM's teacher-forced answers of every window (all its questions), with the fitted
    inventory's readings. A pretrained LM's bias moves only the tokens of the training
    answers (`InventoryConfig.bias_ids`)."""
    from llava4d_ros.training.task import task_inventory

    if model.cfg.inventory is None:
        bias_ids = None
        if model.cfg.lm_source.kind != "scratch":
            bias_ids = train_losses.answer_token_ids(
                model, [s for rec in records for s in rec.samples])
        model_edits.add_inventory(model, task_inventory(bias_ids=bias_ids,
                                                        space_follows_encoding=True,
                                                        path_extent=True, flatness=True))
    model.eval()
    _freeze(list(model.parameters()))
    truth = [train_losses.inventory_truth(r, model) for r in records]
    windows = [model.inventory_inputs(rec.tokens, rec.t_ref_s) for rec in records]
    loss = fit_token_colours(model, windows, truth, lr, rng)
    append_log(log_path, {"stage": 5, "part": "token_colour", "loss": round(loss, 4)})
    loss = fit_objects(model, windows, truth, lr)
    append_log(log_path, {"stage": 5, "part": "objects", "loss": round(loss, 4)})
    batches = collect_bias_batches(model, records, windows, progress)
    fit_output_bias(model, batches, steps, lr, rng, log_path, progress)
