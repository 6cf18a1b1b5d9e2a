"""LoRA on LLaVA-4D's language model through `peft`: the LM's weights stay frozen, low-rank
adapters on its attention projections train instead (a 7B LM then fits fine-tuning on one
GPU). The 4D parts, projector and heads train in full as the stage says.

A model directory in our format always holds plain (merged) weights, so every loader reads it;
the adapter alone can be saved and loaded with peft's own files for a run that wants it.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from typing import Any

import torch

# the attention projections of Llama-family LMs (the shipped default's and LLaVA-1.5's Vicuna)
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


def has_lora(model: Any) -> bool:
    from peft import PeftModel

    return isinstance(model.lm, PeftModel)


def add_lora(model: Any, rank: int, alpha: float | None = None,
             targets: Sequence[str] = LORA_TARGETS) -> None:
    """Wrap `model.lm` in place with LoRA adapters of `rank` (alpha defaults to 2 * rank).
    The adapters start as a no-op (peft zero-initialises B): answers are unchanged."""
    from peft import LoraConfig, get_peft_model

    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    if has_lora(model):
        raise ValueError("the LM already has LoRA adapters")
    cfg = LoraConfig(r=rank, lora_alpha=2 * rank if alpha is None else alpha,
                     target_modules=list(targets), lora_dropout=0.0, bias="none")
    dev = model.device
    with warnings.catch_warnings():  # peft reads a property transformers 5 deprecated
        warnings.filterwarnings("ignore", ".*is_gradient_checkpointing", FutureWarning)
        model.lm = get_peft_model(model.lm, cfg).to(dev)


def lora_trainable(model: Any, params: Sequence[torch.nn.Parameter]
                   ) -> list[torch.nn.Parameter]:
    """`params` (what a stage trains) with the LM's own weights frozen and its adapters
    trainable instead; the same list when the model has no adapters."""
    if not has_lora(model):
        return list(params)
    lm_ids = {id(p) for p in model.lm.parameters()}
    trains_lm = any(id(p) in lm_ids for p in params)
    out = [p for p in params if id(p) not in lm_ids]
    for name, p in model.lm.named_parameters():
        adapter = trains_lm and "lora_" in name
        p.requires_grad_(adapter)
        if adapter:
            out.append(p)
    return out


def merged_copy(model: Any) -> Any:
    """A copy of `model` with the adapters folded into the LM's weights (W + B A * alpha / r):
    a plain model for `save_pretrained` and every loader. The original keeps training."""
    if not has_lora(model):
        return model
    lm = model.lm
    model.lm = None  # deep-copy the rest without the adapter wrapper, then the merged LM
    try:
        out = copy.deepcopy(model)
    finally:
        model.lm = lm
    out.lm = copy.deepcopy(lm).merge_and_unload()
    return out


def save_adapter(model: Any, path: str) -> None:
    """peft's adapter files (adapter_config.json, adapter_model.safetensors) into `path`."""
    if not has_lora(model):
        raise ValueError("the LM has no LoRA adapters to save")
    model.lm.save_pretrained(path, safe_serialization=True)


def load_adapter(model: Any, path: str, trainable: bool = False) -> None:
    """Wrap `model.lm` with the adapter saved in `path` (local files only)."""
    from peft import PeftModel

    if has_lora(model):
        raise ValueError("the LM already has LoRA adapters")
    dev = model.device
    model.lm = PeftModel.from_pretrained(model.lm, path, is_trainable=trainable,
                                         local_files_only=True).to(dev)
