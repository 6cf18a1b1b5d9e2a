"""Loading and saving: local directories, safetensors only, nothing fetched.

Our format (`save_llava4d` / `load_llava4d`):
    config.json          LLaVA4DConfig.to_dict() (the LM's transformers config inside)
    model.safetensors    the whole state dict (LM, 4D parts, projector, heads, CLIP tower if any)
    tokenizer.json (+ tokenizer_config.json, special_tokens_map.json)

A LLaVA-1.5 checkpoint in Hugging Face layout (`load_llava_hf`): `LlavaForConditionalGeneration`
weights (vision tower CLIP, multi_modal_projector, language model) + its tokenizer; the 4D parts
start at their no-op initial values.
"""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path
from typing import Any

import torch

from llava4d_ros.model.config import LLaVA4DConfig, VisionConfig

DEFAULT_DIR = str(Path(__file__).resolve().parent / "default")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")


class CheckpointError(RuntimeError):
    """A model directory cannot be loaded; the message names the path and what is wrong."""

    def __init__(self, path: str, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


def _check_dir(path: str, need: tuple[str, ...]) -> None:
    if not os.path.isdir(path):
        raise CheckpointError(path, "no such model directory")
    for name in need:
        if not os.path.isfile(os.path.join(path, name)):
            raise CheckpointError(path, f"missing {name}")
    if not any(os.path.isfile(os.path.join(path, f)) for f in _TOKENIZER_FILES):
        raise CheckpointError(path, f"missing tokenizer files (one of {_TOKENIZER_FILES})")
    if not glob.glob(os.path.join(path, "*.safetensors")):
        bins = glob.glob(os.path.join(path, "*.bin")) + glob.glob(os.path.join(path, "*.pt"))
        if bins:
            raise CheckpointError(path, "only pickle weights (.bin/.pt) found; convert them to "
                                        "safetensors, pickles are not loaded")
        raise CheckpointError(path, "missing weights (*.safetensors)")


def _build_lm(lm_cfg: dict[str, Any]) -> torch.nn.Module:
    from transformers import AutoConfig, AutoModelForCausalLM

    d = dict(lm_cfg)
    model_type = d.pop("model_type")
    config = AutoConfig.for_model(model_type, **d)
    return AutoModelForCausalLM.from_config(config)


def _load_tokenizer(path: str) -> Any:
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if os.path.isfile(os.path.join(path, "tokenizer_config.json")):
        return AutoTokenizer.from_pretrained(path, local_files_only=True)
    return PreTrainedTokenizerFast(tokenizer_file=os.path.join(path, "tokenizer.json"))


def build_model(cfg: LLaVA4DConfig, tokenizer: Any) -> Any:
    """A fresh LLaVA4D (random LM) from a config; the vision tower of a clip config is random."""
    from llava4d_ros.model.llava4d import LLaVA4D

    tower = None
    if cfg.vision.kind == "clip":
        from transformers import CLIPVisionConfig, CLIPVisionModel

        tower = CLIPVisionModel(CLIPVisionConfig(**cfg.vision.clip_config))
    return LLaVA4D(cfg, _build_lm(cfg.lm), tokenizer, vision_tower=tower)


def save_llava4d(model: Any, path: str) -> None:
    from safetensors.torch import save_file

    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w", encoding="utf-8") as f:
        json.dump(model.cfg.to_dict(), f, indent=1, sort_keys=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if model.cfg.lm.get("tie_word_embeddings") and "lm.lm_head.weight" in state:
        del state["lm.lm_head.weight"]  # tied to the input embeddings; safetensors refuses aliases
    save_file(state, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
    model.tokenizer.save_pretrained(path)


def load_llava4d(path: str | None = None, device: str = "cpu",
                 dtype: torch.dtype = torch.float32, fresh: tuple[str, ...] = ()) -> Any:
    """Our format; `path=None` is the shipped default. Parameters under the prefixes in `fresh`
    keep their initial values (training re-initialises them; shapes there may differ)."""
    from safetensors.torch import load_file

    path = DEFAULT_DIR if path is None else str(path)
    _check_dir(path, ("config.json", "model.safetensors"))
    with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
        try:
            cfg = LLaVA4DConfig.from_dict(json.load(f))
        except (ValueError, TypeError) as exc:
            raise CheckpointError(path, f"bad config.json: {exc}") from exc
    model = build_model(cfg, _load_tokenizer(path))
    state = load_file(os.path.join(path, "model.safetensors"))
    own = model.state_dict()
    if cfg.lm.get("tie_word_embeddings"):
        state.setdefault("lm.lm_head.weight", state.get("lm.model.embed_tokens.weight"))
    state = {k: v for k, v in state.items() if not k.startswith(fresh)} if fresh else state
    if fresh:
        state.update({k: v for k, v in own.items() if k.startswith(fresh)})
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    bad = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
           for k in own if k in state and state[k] is not None and state[k].shape != own[k].shape]
    if missing or unexpected or bad:
        raise CheckpointError(path, f"weights do not fit the config: missing {missing[:5]}, "
                                    f"unexpected {unexpected[:5]}, shape mismatch {bad[:5]}")
    model.load_state_dict(state)
    return model.to(device=device, dtype=dtype).eval()


def load_llava_hf(path: str, device: str = "cpu", dtype: torch.dtype = torch.float32,
                  **overrides: Any) -> Any:
    """LLaVA-1.5 in HF layout -> LLaVA4D with CLIP features at the configured layer, the
    checkpoint's projector and LM, and the 4D parts at their no-op initial values.

    `overrides`: LLaVA4DConfig fields (e.g. token_budget, patch_grid)."""
    from transformers import (
        AutoModelForCausalLM,
        CLIPVisionModel,
        LlavaConfig,
        LlavaForConditionalGeneration,
    )

    from llava4d_ros.model.llava4d import LLaVA4D

    path = str(path)
    _check_dir(path, ("config.json",))
    try:
        llava_cfg = LlavaConfig.from_pretrained(path, local_files_only=True)
    except Exception as exc:  # any parse failure means: not a LLaVA checkpoint
        raise CheckpointError(path, f"config.json is not a LLaVA config: {exc}") from exc
    try:
        llava = LlavaForConditionalGeneration.from_pretrained(
            path, use_safetensors=True, local_files_only=True, dtype=dtype)
    except (OSError, RuntimeError, ValueError) as exc:
        raise CheckpointError(path, f"cannot load the LLaVA weights: {exc}") from exc
    if llava_cfg.vision_feature_select_strategy != "default":
        raise CheckpointError(path, "only vision_feature_select_strategy='default' (patch "
                                    "tokens without CLS) is supported")
    layer = llava_cfg.vision_feature_layer
    if not isinstance(layer, int):
        raise CheckpointError(path, f"vision_feature_layer must be one int, got {layer}")
    vcfg = llava_cfg.vision_config
    tower = llava.model.vision_tower
    if not isinstance(tower, CLIPVisionModel):
        raise CheckpointError(path, f"vision tower is {type(tower).__name__}, not CLIP")
    text_cfg = llava_cfg.text_config
    lm = AutoModelForCausalLM.from_config(text_cfg).to(dtype)
    lm.model.load_state_dict(llava.model.language_model.state_dict())
    lm.lm_head.load_state_dict(llava.lm_head.state_dict())
    tokenizer = _load_tokenizer(path)
    image_token = tokenizer.convert_ids_to_tokens(llava_cfg.image_token_id)
    fields = {
        "lm": text_cfg.to_dict(),
        "vision": VisionConfig(kind="clip", feature_dim=vcfg.hidden_size, clip_layer=layer,
                               clip_config=vcfg.to_dict()),
        "template": "USER: {image}\n{question} ASSISTANT:",
        "image_token": image_token,
        "slot_heads": False,
        "patch_grid": (vcfg.image_size // vcfg.patch_size,) * 2,
        "fusion_heads": 8 if vcfg.hidden_size % 8 == 0 else 1,
        "model_id": f"llava-1.5+4d:{os.path.basename(os.path.normpath(path))}",
    }
    fields.update(overrides)
    cfg = LLaVA4DConfig(**fields)
    model = LLaVA4D(cfg, lm, tokenizer, vision_tower=tower)
    proj = llava.model.multi_modal_projector
    if proj.linear_1.in_features != vcfg.hidden_size or proj.linear_2.out_features != (
            text_cfg.hidden_size):
        raise CheckpointError(path, "multi_modal_projector shapes do not fit the towers")
    model.projector.linear_1.load_state_dict(proj.linear_1.state_dict())
    model.projector.linear_2.load_state_dict(proj.linear_2.state_dict())
    return model.to(device=device, dtype=dtype).eval()
