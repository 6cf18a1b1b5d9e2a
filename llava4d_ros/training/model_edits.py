"""What training changes on a model between stages, in place: the 4D encoding of an ablation,
tokens split by look change, a fresh time head (stage 4) and a fresh scene inventory with its
output bias (stage 5). Inference never calls these; model/ knows nothing of them.
"""

from __future__ import annotations

from dataclasses import replace

from llava4d_ros.model.config import InventoryConfig
from llava4d_ros.model.heads import TimeHead, new_time_head
from llava4d_ros.model.inventory import WordSets, build_inventory
from llava4d_ros.model.llava4d import LLaVA4D


def set_encoding(model: LLaVA4D, encoding: str) -> None:
    """Switch the ablation mode (full, none, xyz, time) in place."""
    model.cfg = model.cfg.with_encoding(encoding)
    model.prompt.cfg = model.cfg.prompt


def set_span_tokens(model: LLaVA4D, look_change: float, over_budget: str = "coarsen") -> None:
    """Train on tokens split where a still voxel's look changes by more than `look_change`
    (> 0) and read each token's span in the time encoding, or (0) on one token per still
    voxel stamped with its last observation; `over_budget`: what pooling does with more
    tokens than the budget (`Buffer4D.tokens`); in place, for a model about to be trained."""
    model.cfg = replace(model.cfg, look_change=float(look_change), over_budget=over_budget,
                        prompt=replace(model.cfg.prompt, time_span=look_change > 0))
    model.prompt.cfg = model.cfg.prompt


def fresh_time_head(model: LLaVA4D) -> TimeHead:
    """A freshly initialised time head of the kind `model.cfg.time_head` says, on the model's
    device."""
    return new_time_head(model.cfg).to(model.device)


def add_inventory(model: LLaVA4D, inv: InventoryConfig) -> None:
    """Give a model without one a fresh scene inventory and output bias (stage 5). The bias
    starts at zero: answers are unchanged until it is fitted. Its `bias_ids`, if any, gain the
    inventory's words that no answer says (digits 7-9)."""
    if inv.bias_ids is not None:
        words = WordSets(inv, model.written_id).ids()
        inv = replace(inv, bias_ids=tuple(sorted({*inv.bias_ids, *words})))
    model.cfg = replace(model.cfg, inventory=inv)
    vocab = int(model.lm.get_input_embeddings().weight.shape[0])
    model.words, model.inventory, model.inventory_bias = build_inventory(
        inv, model.cfg.vision.feature_dim, model.cfg.lm_hidden, vocab, model.written_id)
    model.inventory.to(model.device)
    model.inventory_bias.to(model.device)
