"""The training forwards of LLaVA-4D: teacher-forced losses of one window, the slot-head
losses, the language warm-up loss and stage 5's teacher-forced decode states.

Each function takes the model and its data explicitly and returns what it computed (the slot
batch of a window included): nothing is left on the model for a trainer to pick up.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from llava4d_ros.core.buffer4d import VisualTokens
from llava4d_ros.model.heads import (
    dynamic_tokens,
    first_motion_reading,
    question_mean,
    slot_context,
    soft_time,
    time_match_features,
)
from llava4d_ros.model.llava4d import LLaVA4D, apply_token_budget
from llava4d_ros.training import checkpointing


def slot_total(losses: dict[str, torch.Tensor]) -> torch.Tensor:
    """The weighted sum of the slot losses (box in metres, time in seconds)."""
    return losses["pointer"] + 5.0 * losses["box"] + 0.5 * losses["time"]


def answer_text(model: LLaVA4D, sample: dict[str, Any]) -> str:
    """What the model is trained to write for `sample`: the answer with `<box>` / `<time>`
    slots where it has slot heads, else the answer with its numbers."""
    return sample["answer_template"] if model.cfg.slot_heads else sample["answer"]


def teacher_forced(model: LLaVA4D, tokens: VisualTokens, t_ref_s: float,
                   samples: Sequence[dict[str, Any]], checkpoint: bool = False
                   ) -> tuple[Any, ...]:
    """The training forward of one window (within budget) and a batch of its samples: the
    visual prefix once, its KV cache shared by the batch of answers; `checkpoint`: the
    prefix's LM layers with gradient checkpointing (training/checkpointing.py).

    Returns (LM output over the answers, `ids (B, L)`, `labels (B, L)` (-100 outside the
    answers), the `_Text`s, prompt lengths, input embeddings `(B, L, D)`, pointer keys)."""
    dev = model.device
    with checkpointing.checkpointed_prefix(model.lm, checkpoint):
        pre_ids, pre, h_visual = model.visual_prefix(tokens, t_ref_s, hidden=True)
    prefix = pre_ids.tolist()
    cache = checkpointing.answer_cache(model.kv_cache(pre), checkpoint)
    b = len(samples)
    cache.batch_repeat_interleave(b)

    tok = model.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    texts, n_prompt = [], []
    for s in samples:
        prompt_only = model.text_after(s["question"])
        full = model.text_after(s["question"], answer_text(model, s))
        full.ids.append(model.eos_token_id)
        texts.append(full)
        n_prompt.append(len(prompt_only.ids))
    length = max(len(t.ids) for t in texts)
    ids = torch.full((b, length), pad, dtype=torch.long, device=dev)
    mask = torch.zeros((b, length), dtype=torch.long, device=dev)
    labels = torch.full((b, length), -100, dtype=torch.long, device=dev)
    for i, t in enumerate(texts):
        ids[i, :len(t.ids)] = torch.tensor(t.ids, device=dev)
        mask[i, :len(t.ids)] = 1
        labels[i, n_prompt[i]:len(t.ids)] = ids[i, n_prompt[i]:len(t.ids)]
    emb = torch.stack([model.embed(ids[i], None, texts[i]) for i in range(b)])  # (B, L, D)
    attn = torch.cat([torch.ones((b, len(prefix)), dtype=torch.long, device=dev), mask], 1)
    out = model.lm(inputs_embeds=emb, attention_mask=attn, output_hidden_states=True,
                   **{model.cache_kw: cache})
    return out, ids, labels, texts, n_prompt, emb, h_visual


def window_loss(model: LLaVA4D, tokens: VisualTokens, t_ref_s: float,
                samples: Sequence[dict[str, Any]], lm_weight: float = 1.0,
                slot_weight: float = 1.0, checkpoint: bool = False
                ) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """Losses of one window and a batch of its samples, and the window's slot batch (None
    when the slot losses are off) for extra steps of the heads alone.

    A sample: `question`, `answer_template` (with slot tokens; the target text when
    `slot_heads`), `answer` (the target text otherwise), `slots` (kind, value) and
    `targets` (per slot, the indices of the tokens the pointer should select).
    The losses: `lm` (next-token CE on answers), `pointer` (multi-positive CE + BCE),
    `box` (L1 on box6, with the pointer's and the true weights), `time` (L1, soft) and
    `total`.
    """
    tokens = apply_token_budget(tokens, model.cfg.token_budget)
    out, ids, labels, texts, n_prompt, emb, h_visual = teacher_forced(
        model, tokens, t_ref_s, samples, checkpoint)
    logits = out.logits[:, :-1]  # (B, L-1, V): position i predicts token i+1
    lm = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                         ignore_index=-100)
    losses = {"lm": lm}
    zero = lm.new_zeros(())
    losses.update(pointer=zero, box=zero, time=zero)
    batch = None
    if model.cfg.slot_heads and slot_weight > 0:
        te_q = [model.question_time(t, emb) for t in texts]
        batch = slot_batch(model, out.hidden_states[-1], ids, labels, samples, h_visual,
                           tokens, t_ref_s, (emb, n_prompt, te_q))
        batch["t_question"] = [model.question_seconds(texts[i]) for i in batch["sample"]]
        losses.update(slot_losses(model, batch))
    losses["total"] = lm_weight * lm + slot_weight * slot_total(losses)
    return losses, batch


def text_loss(model: LLaVA4D, samples: Sequence[dict[str, Any]]) -> torch.Tensor:
    """Next-token loss on the answers of `samples` with no visual tokens at all: the
    language warm-up of an LM that starts from scratch (it learns the answer forms and to
    copy names from the question; what it cannot know without seeing is learnt later)."""
    dev = model.device
    tok = model.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    bos = [] if tok.bos_token_id is None else [tok.bos_token_id]
    seqs, starts = [], []
    for s in samples:
        starts.append(len(bos) + len(model.text_after(s["question"]).ids))
        seqs.append(bos + model.text_after(s["question"], answer_text(model, s)).ids
                    + [model.eos_token_id])
    length = max(len(x) for x in seqs)
    ids = torch.full((len(seqs), length), pad, dtype=torch.long, device=dev)
    labels = torch.full_like(ids, -100)
    mask = torch.zeros_like(ids)
    for i, (x, st) in enumerate(zip(seqs, starts)):
        ids[i, :len(x)] = torch.tensor(x, device=dev)
        labels[i, st:len(x)] = ids[i, st:len(x)]
        mask[i, :len(x)] = 1
    logits = model.lm(input_ids=ids, attention_mask=mask).logits[:, :-1]  # (B, L-1, V)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                           ignore_index=-100)


def slot_batch(model: LLaVA4D, hidden: torch.Tensor, ids: torch.Tensor, labels: torch.Tensor,
               samples: Sequence[dict[str, Any]], h_visual: torch.Tensor,
               tokens: VisualTokens, t_ref_s: float,
               context: tuple[torch.Tensor, list[int], list[torch.Tensor]]) -> dict[str, Any]:
    """What the slot losses need: per slot its hidden state, question and sentence token
    embeddings, kind, target token indices and true value; per window the pointer keys and
    the tokens' model time, xyz and view direction."""
    dev, dtype = hidden.device, hidden.dtype
    emb, n_prompt, te_q = context
    batch: dict[str, Any] = {"h": [], "question": [], "sentence": [], "te": [],
                             "sample": [], "is_time": [], "targets": [], "values": [],
                             "t_sentence": [], "object": []}
    for i, s in enumerate(samples):
        is_slot = ((ids[i] == model.box_token_id) | (ids[i] == model.time_token_id)) & (
            labels[i] != -100)
        pos = torch.nonzero(is_slot).flatten().tolist()
        if len(pos) != len(s["slots"]):
            raise ValueError(f"{len(pos)} slot tokens but {len(s['slots'])} slots in "
                             f"{s['answer_template']!r}")
        periods = (ids[i] == model.period_id).nonzero().flatten().tolist()
        times_at: list[tuple[int, float]] = []  # (position, value) of time slots so far
        for p, slot, tgt in zip(pos, s["slots"], s["targets"]):
            start = max([n_prompt[i]] + [j + 1 for j in periods if j < p])
            in_sentence = [v for q, v in times_at if q >= start]
            batch["t_sentence"].append(in_sentence[-1] if in_sentence else float("nan"))
            if slot["kind"] == "time":
                times_at.append((p, float(slot["value"])))
            batch["h"].append(hidden[i, p])
            batch["question"].append(emb[i, :n_prompt[i]])
            batch["sentence"].append(emb[i, start:p + 1])
            batch["te"].append(te_q[i])
            batch["sample"].append(i)
            batch["is_time"].append(slot["kind"] == "time")
            batch["targets"].append(tgt)
            batch["values"].append(slot["value"])
            batch["object"].append(int(slot.get("object_id", -1)))
    batch["keys"] = h_visual
    batch["t"] = torch.as_tensor(np.asarray(tokens.t_s, np.float64) - t_ref_s, dtype=dtype,
                                 device=dev)
    batch["xyz"] = torch.as_tensor(np.asarray(tokens.xyz_world), dtype=dtype, device=dev)
    batch["view"] = torch.as_tensor(np.asarray(tokens.view_dir_world), dtype=dtype,
                                    device=dev)
    batch["motion"] = torch.as_tensor(np.asarray(tokens.motion), dtype=dtype, device=dev)
    batch["labels"] = torch.as_tensor(np.asarray(tokens.labels), device=dev)
    batch["dyn"] = dynamic_tokens(batch["xyz"], model.cfg.voxel_m, batch["motion"])
    return batch


def detach_slot_batch(batch: dict[str, Any]) -> dict[str, Any]:
    """The batch with every tensor detached: for extra steps of the heads alone."""
    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            out[k] = v.detach()
        elif isinstance(v, list) and v and isinstance(v[0], torch.Tensor):
            out[k] = [x.detach() for x in v]
        else:
            out[k] = v
    return out


def slot_losses(model: LLaVA4D, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Pointer, box and time losses of a slot batch.

    A slot's context is its LM hidden state and the attention-pooled input embeddings of
    the question (with the text-side TE/PE) and of its answer sentence so far: the LM's
    next-token objective does not make a slot's hidden state carry which object and when
    (the token after `<box>` is always "."), these skip connections do."""
    keys = batch["keys"]
    dev, dtype = keys.device, keys.dtype
    zero = keys.new_zeros(())
    if not batch["h"]:
        return {"pointer": zero, "box": zero, "time": zero}
    h_slot = torch.stack([slot_context(h, model.slot_pool(q), model.slot_pool(e), te)
                          for h, q, e, te in zip(batch["h"], batch["question"],
                                                 batch["sentence"], batch["te"])])
    is_time, targets, values = batch["is_time"], batch["targets"], batch["values"]
    dt_feat = None
    if model.cfg.prompt.use_time and "t_sentence" in batch:
        t_sent = torch.tensor([float("nan") if is_time[k] else batch["t_sentence"][k]
                               for k in range(len(is_time))], dtype=dtype, device=dev)
        dt_feat = time_match_features(t_sent, batch["t"], batch["dyn"], batch["motion"])
    scores = model.pointer(h_slot, torch.tensor(is_time, device=dev), keys,
                           dt_feat)  # (S, N)
    target = torch.zeros_like(scores)
    for k, tgt in enumerate(targets):
        if tgt:
            target[k, tgt] = 1.0
    has = target.sum(1) > 0
    logp = scores.log_softmax(dim=-1)
    ce = -(torch.logsumexp(logp.masked_fill(target == 0, -1e4), dim=-1))[has]
    bce = F.binary_cross_entropy_with_logits(scores[has], target[has],
                                             pos_weight=scores.new_tensor(10.0))
    pointer = (ce.mean() + bce) if bool(has.any()) else zero
    w = logp.exp()  # (S, N)
    box_rows = [k for k in range(len(values)) if not is_time[k]]
    time_rows = [k for k in range(len(values)) if is_time[k]]
    box_loss, time_loss = zero, zero
    xyz, view = batch["xyz"], batch["view"]
    if box_rows:
        rows = torch.tensor(box_rows, device=dev)
        gt = torch.tensor([values[k] for k in box_rows], dtype=dtype, device=dev)
        pred = model.box_head(h_slot[rows], w[rows], xyz, view)
        box_loss = F.smooth_l1_loss(pred, gt, beta=0.05)
        oracle_rows = [k for k in box_rows if targets[k]]
        if oracle_rows:
            r = torch.tensor(oracle_rows, device=dev)
            w_true = target[r] / target[r].sum(1, keepdim=True)
            gt_o = torch.tensor([values[k] for k in oracle_rows], dtype=dtype, device=dev)
            pred_o = model.box_head(h_slot[r], w_true, xyz, view)
            box_loss = box_loss + F.smooth_l1_loss(pred_o, gt_o, beta=0.05)
    if time_rows:
        rows = torch.tensor(time_rows, device=dev)
        gt_t = torch.tensor([values[k] for k in time_rows], dtype=dtype, device=dev)
        t_ptr = soft_time(w[rows], batch["t"])
        t_q = torch.tensor([batch["t_question"][k] for k in time_rows], dtype=dtype,
                           device=dev)
        t_first = None
        if model.cfg.prompt.use_time and "motion" in batch:
            by_object = model.cfg.first_motion_tokens == "object"
            t_first = first_motion_reading(
                w[rows], batch["t"], batch["motion"], model.cfg.first_motion_m,
                object_tokens(batch, time_rows, w[rows]) if by_object else None)
        q_mean = torch.stack([question_mean(batch["question"][k]) for k in time_rows])
        t_hat = model.time_head(h_slot[rows], t_ptr, batch["t"].max(), t_q, t_first, q_mean)
        time_loss = F.smooth_l1_loss(t_hat, gt_t, beta=0.2) + 0.2 * F.smooth_l1_loss(
            t_ptr, gt_t, beta=0.2)
    return {"pointer": pointer, "box": box_loss, "time": time_loss}


def object_tokens(batch: dict[str, Any], rows: list[int], w: torch.Tensor) -> torch.Tensor:
    """`(R, N)` 1 on the tokens labelled with the object of each slot row in `rows`: what a
    first-motion reading of `first_motion_tokens` "object" looks at in training (the true labels
    stand in for the inventory's colour weights an answer reads, as the inventory is fitted
    after the heads); the pointer's row of `w (R, N)` for a slot without an object or tokens."""
    obj = torch.tensor([batch["object"][k] for k in rows], device=w.device)  # (R,)
    mine = (batch["labels"][None, :] == obj[:, None]) & (obj[:, None] >= 0)  # (R, N)
    return torch.where(mine.any(dim=1, keepdim=True), mine.to(w.dtype), w)


def inventory_batch(model: LLaVA4D, tokens: VisualTokens, t_ref_s: float,
                    samples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """What stage 5 fits the output bias on, teacher-forced over one window: per answer
    position (predicting the next answer token or the end) the LM's hidden state `h (P, H)`,
    the logits of the bias's K words `(P, K)` (`InventoryBias.ids`) and the logsumexp of the
    rest `(P,)` (-inf when K is the vocabulary), the target's place among the K `(P,)`, and
    the decode state (`named`, `in_q`, `shape_after`, `cur`, `plural`, `t_at`, as
    `inventory.decode_features` takes them). A target outside the K words is a ValueError."""
    if model.words is None:
        raise ValueError("this model has no scene inventory (cfg.inventory is None)")
    tokens = apply_token_budget(tokens, model.cfg.token_budget)
    out, ids, labels, texts, n_prompt, _, _ = teacher_forced(model, tokens, t_ref_s, samples)
    rows: dict[str, list[Any]] = {k: [] for k in
                                  ("named", "in_q", "shape_after", "cur", "plural", "t_at")}
    pos_b, pos_j = [], []
    for i, text in enumerate(texts):
        q_named, shape_after, plural = model.words.question(text.ids[:n_prompt[i]])
        q_first = q_named.index(1) if 1 in q_named else -1
        answer = text.ids[n_prompt[i]:]
        states = [([0] * len(q_named), q_first),
                  *model.words.answer_states(answer, q_first)[:-1]]
        # the sentence's time so far (its filled `<time>` slot), as decoding tracks it
        t_vals = iter([float(sl["value"]) for sl in samples[i]["slots"]
                       if sl["kind"] == "time"])
        t_at, t_now = [], float("nan")
        for tid in answer:
            t_at.append(t_now)
            if tid == model.time_token_id:
                t_now = next(t_vals, float("nan"))
            elif tid == model.period_id:
                t_now = float("nan")
        for k, (named, cur) in enumerate(states):
            rows["t_at"].append(t_at[k])
            pos_b.append(i)
            pos_j.append(n_prompt[i] - 1 + k)
            rows["named"].append(named)
            rows["in_q"].append(q_named)
            rows["shape_after"].append(shape_after)
            rows["cur"].append(cur)
            rows["plural"].append(plural)
    b, j = torch.tensor(pos_b), torch.tensor(pos_j)
    dev = model.device
    batch = {k: torch.tensor(v, device=dev) for k, v in rows.items()}
    batch["t_at"] = batch["t_at"].to(out.logits.dtype)
    batch["h"] = out.hidden_states[-1][b, j]
    logits = out.logits[b, j]  # (P, V)
    words = model.inventory_bias.ids
    batch["logits"] = logits[:, words]
    batch["rest"] = logits.index_fill(1, words, float("-inf")).logsumexp(1)
    place = torch.full((logits.shape[1],), -1, dtype=torch.long, device=dev)
    place[words] = torch.arange(len(words), device=dev)
    target = place[ids[b, j + 1]]
    if bool((target < 0).any()):
        raise ValueError("an answer token is not among the output bias's words")
    batch["target"] = target
    return batch


def answer_token_ids(model: LLaVA4D, samples: Sequence[dict[str, Any]]) -> list[int]:
    """The sorted token ids of the answers the model is trained to write, with its end token:
    the words an output bias over a pretrained LM's vocabulary may move."""
    ids = {model.eos_token_id}
    for s in samples:  # tokenised in place, as `teacher_forced` does (a BPE merges the space)
        n_prompt = len(model.text_after(s["question"]).ids)
        ids.update(model.text_after(s["question"], answer_text(model, s)).ids[n_prompt:])
    return sorted(i for i in ids if i is not None)


def inventory_truth(rec: Any, model: LLaVA4D) -> dict[str, torch.Tensor]:
    """Stage 5's targets for one cached window, from its scene's ground truth: per token its
    object's colour index (C = background or an object of no inventory colour), and per
    inventory colour present / moving (in the window) / shape index (-1 where absent)."""
    from llava4d_ros.data.scene import make_scene

    inv = model.cfg.inventory
    n_c = len(inv.colours)
    tokens = apply_token_budget(rec.tokens, model.cfg.token_budget)
    colour_of = {}
    present, moving = torch.zeros(n_c), torch.zeros(n_c)
    shape = torch.full((n_c,), -1, dtype=torch.long)
    for o in make_scene(rec.seed).objects:
        if o.colour not in inv.colours or o.shape not in inv.shapes:
            continue
        c = inv.colours.index(o.colour)
        colour_of[o.object_id] = c
        present[c] = 1.0
        moving[c] = float(bool(o.moving_segments))
        shape[c] = inv.shapes.index(o.shape)
    token_colour = torch.tensor([colour_of.get(int(lab), n_c) for lab in tokens.labels])
    return {"token_colour": token_colour, "present": present, "moving": moving,
            "shape": shape}
