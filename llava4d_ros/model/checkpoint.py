"""Model directories on disk: local files, safetensors only, nothing fetched.

This module knows files, not the model: `LLaVA4D` (its loaders in model/loading.py) assembles
itself from what these functions read, so the dependency runs one way (loading -> checkpoint).

Our format (`LLaVA4D.save_pretrained` / `LLaVA4D.load`, model/loading.py):
    config.json          LLaVA4DConfig.to_dict() (the LM's transformers config inside, and
                         where the LM came from: `lm_source`)
    model.safetensors    the whole state dict (LM, 4D parts, projector, heads, compressor, CLIP /
                         SigLIP tower if any; EfficientNet-Lite0 weights stay in their package);
                         with `lm_weights: "delta"` the LM's part is only its changes to the
                         base LM `lm_source` names (model/lm_delta.py)
    tokenizer.json (+ tokenizer_config.json, chat_template.jinja, special_tokens_map.json)

A LLaVA-1.5 checkpoint in Hugging Face layout (`is_llava_hf`, `read_llava_hf`):
`LlavaForConditionalGeneration` weights (vision tower CLIP, multi_modal_projector, language
model) + its tokenizer.
"""

from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass
from typing import Any

import torch

from llava4d_ros.model.config import LLaVA4DConfig, LMSource, VisionConfig

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")


class CheckpointError(RuntimeError):
    """A model directory cannot be loaded; the message names the path and what is wrong."""

    def __init__(self, path: str, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


def check_dir(path: str, need: tuple[str, ...]) -> None:
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


def read_config(path: str) -> LLaVA4DConfig:
    """The `LLaVA4DConfig` of one of our model directories (checked first)."""
    check_dir(path, ("config.json", "model.safetensors"))
    with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
        try:
            return LLaVA4DConfig.from_dict(json.load(f))
        except (ValueError, TypeError) as exc:
            raise CheckpointError(path, f"bad config.json: {exc}") from exc


def build_lm(lm_cfg: dict[str, Any], init: bool = True) -> torch.nn.Module:
    """A causal LM from a transformers config dict: random weights, or with `init=False`
    uninitialised ones for a caller that loads every weight next (random init of a 135M LM
    takes seconds of the load time)."""
    from contextlib import nullcontext

    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # transformers 4
        from transformers.modeling_utils import no_init_weights

    d = dict(lm_cfg)
    model_type = d.pop("model_type")
    config = AutoConfig.for_model(model_type, **d)
    with nullcontext() if init else no_init_weights():
        lm = AutoModelForCausalLM.from_config(config)
    if not init:
        lm.tie_weights()  # part of the init that no_init_weights skips
    return lm


def build_vision_tower(vision: VisionConfig) -> torch.nn.Module | None:
    """A random CLIP / SigLIP tower of the config's shape (kind "clip"), else None."""
    if vision.kind != "clip":
        return None
    from transformers import AutoConfig, AutoModel

    d = dict(vision.clip_config or {})
    model_type = d.pop("model_type", "clip_vision_model")
    return AutoModel.from_config(AutoConfig.for_model(model_type, **d))


def load_tokenizer(path: str) -> Any:
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if os.path.isfile(os.path.join(path, "tokenizer_config.json")):
        return AutoTokenizer.from_pretrained(path, local_files_only=True)
    return PreTrainedTokenizerFast(tokenizer_file=os.path.join(path, "tokenizer.json"))


def load_state(model: torch.nn.Module, cfg: LLaVA4DConfig, path: str,
               fresh: tuple[str, ...] = ()) -> None:
    """Load `path`/model.safetensors into `model`; parameters under the prefixes in `fresh`
    keep their current values. Any missing, unexpected or misshapen tensor is an error."""
    from safetensors.torch import load_file

    state = load_file(os.path.join(path, "model.safetensors"))
    own = model.state_dict()
    if cfg.lm_weights == "delta":
        state = _with_base_lm(state, cfg, own, path)
    if cfg.lm.get("tie_word_embeddings"):
        state.setdefault("lm.lm_head.weight", state.get("lm.model.embed_tokens.weight"))
    if fresh:
        state = {k: v for k, v in state.items() if not k.startswith(fresh)}
        state.update({k: v for k, v in own.items() if k.startswith(fresh)})
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    bad = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
           for k in own if k in state and state[k] is not None and state[k].shape != own[k].shape]
    if missing or unexpected or bad:
        raise CheckpointError(path, f"weights do not fit the config: missing {missing[:5]}, "
                                    f"unexpected {unexpected[:5]}, shape mismatch {bad[:5]}")
    model.load_state_dict(state)


def _base_lm(cfg: LLaVA4DConfig, path: str) -> dict[str, torch.Tensor]:
    """The base LM state of a delta checkpoint, checked against its fingerprint."""
    from llava4d_ros.model import backbones, lm_delta

    try:
        base = lm_delta.read_base(backbones.base_lm_dir(cfg.lm_source))
    except (FileNotFoundError, ValueError) as exc:
        raise CheckpointError(path, str(exc)) from exc
    want, got = cfg.lm_source.fingerprint, lm_delta.fingerprint(base)
    if want and want != got:
        raise CheckpointError(path, f"the base LM {cfg.lm_source.name!r} found has fingerprint "
                                    f"{got}, the checkpoint was trained on {want}")
    return base


def _with_base_lm(state: dict[str, torch.Tensor], cfg: LLaVA4DConfig,
                  own: dict[str, torch.Tensor], path: str) -> dict[str, torch.Tensor]:
    """A delta checkpoint's state with the LM's tensors rebuilt from its base."""
    from llava4d_ros.model import lm_delta

    delta = {k: v for k, v in state.items() if k.startswith(lm_delta.PREFIX)}
    rest = {k: v for k, v in state.items() if not k.startswith(lm_delta.PREFIX)}
    shapes = {k[3:]: v.shape for k, v in own.items() if k.startswith("lm.")}
    if cfg.lm.get("tie_word_embeddings"):
        shapes.pop("lm_head.weight", None)
    try:
        lm = lm_delta.decode(delta, _base_lm(cfg, path), shapes)
    except (KeyError, ValueError) as exc:
        raise CheckpointError(path, f"cannot rebuild the LM from its base: {exc}") from exc
    return {**rest, **{"lm." + k: v for k, v in lm.items()}}


def write_dir(path: str, cfg: LLaVA4DConfig, state: dict[str, torch.Tensor],
              tokenizer: Any) -> None:
    """Write our format: config.json, model.safetensors, the tokenizer's files; with
    `cfg.lm_weights == "delta"` only the LM's changes to its base (model/lm_delta.py)."""
    from safetensors.torch import save_file

    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w", encoding="utf-8") as f:
        json.dump(cfg.to_dict(), f, indent=1, sort_keys=True)
    state = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    if cfg.lm.get("tie_word_embeddings") and "lm.lm_head.weight" in state:
        del state["lm.lm_head.weight"]  # tied to the input embeddings; safetensors refuses aliases
    if cfg.lm_weights == "delta":
        from llava4d_ros.model import lm_delta

        lm, rest = lm_delta.split_state(state)
        state = {**rest, **lm_delta.encode(lm, _base_lm(cfg, path))}
    save_file(state, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
    tokenizer.save_pretrained(path)


@dataclass
class LlavaParts:
    """What a LLaVA-1.5 HF checkpoint gives `LLaVA4D.from_llava_hf`: config fields, the LM, the
    tokenizer, the CLIP tower and the projector's two linear layers."""

    fields: dict[str, Any]
    lm: torch.nn.Module
    tokenizer: Any
    tower: torch.nn.Module
    projector: torch.nn.Module


def is_llava_hf(path: str) -> bool:
    """Whether `path` is a LLaVA-1.5 checkpoint in HF layout (config.json says `model_type:
    llava`) rather than one of ours."""
    cfg_path = os.path.join(path, "config.json")
    if not os.path.isfile(cfg_path):
        return False
    with open(cfg_path, encoding="utf-8") as f:
        try:
            cfg = json.load(f)
        except ValueError:  # not JSON: `read_config` says so
            return False
    return isinstance(cfg, dict) and cfg.get("model_type") == "llava"


def read_llava_hf(path: str, dtype: torch.dtype = torch.float32) -> LlavaParts:
    """Read a LLaVA-1.5 checkpoint in HF layout: CLIP features at the configured layer, the
    checkpoint's projector and LM; errors name what does not fit."""
    from transformers import (
        AutoModelForCausalLM,
        CLIPVisionModel,
        LlavaConfig,
        LlavaForConditionalGeneration,
    )

    path = str(path)
    check_dir(path, ("config.json",))
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
    proj = llava.model.multi_modal_projector
    if proj.linear_1.in_features != vcfg.hidden_size or proj.linear_2.out_features != (
            text_cfg.hidden_size):
        raise CheckpointError(path, "multi_modal_projector shapes do not fit the towers")
    lm = AutoModelForCausalLM.from_config(text_cfg).to(dtype)
    lm.model.load_state_dict(llava.model.language_model.state_dict())
    lm.lm_head.load_state_dict(llava.lm_head.state_dict())
    tokenizer = load_tokenizer(path)
    name = os.path.basename(os.path.normpath(path))
    fields = {
        "lm": text_cfg.to_dict(),
        "vision": VisionConfig(kind="clip", feature_dim=vcfg.hidden_size, clip_layer=layer,
                               clip_config=vcfg.to_dict(), source=os.path.abspath(path)),
        "template": "USER: {image}\n{question} ASSISTANT:",
        "image_token": tokenizer.convert_ids_to_tokens(llava_cfg.image_token_id),
        "slot_heads": False,
        "patch_grid": (vcfg.image_size // vcfg.patch_size,) * 2,
        "fusion_heads": 8 if vcfg.hidden_size % 8 == 0 else 1,
        "model_id": f"llava-1.5+4d:{name}",
        "lm_source": LMSource(kind="hf", path=os.path.abspath(path), name=name),
    }
    return LlavaParts(fields, lm, tokenizer, tower, proj)
