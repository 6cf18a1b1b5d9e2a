"""How a LLaVA-4D comes to be: from disk (`load`, the one way in: our format, a shipped model
or a LLaVA-1.5 checkpoint in Hugging Face layout), fresh from a config (`from_config`), or on
a pretrained LM (`from_lm`); and back to disk (`save_pretrained`).

`PreTrained` is `LLaVA4D`'s base class, as `PreTrainedModel` is in transformers: these
constructors build `cls(cfg, lm, tokenizer, vision_tower)` from what model/checkpoint.py and
model/backbones.py read, so this module never imports model/llava4d.py.
"""

from __future__ import annotations

from typing import Any, TypeVar

import torch
from torch import nn

from llava4d_ros.model import backbones, checkpoint
from llava4d_ros.model.config import CompressorConfig, LLaVA4DConfig, VisionConfig
from llava4d_ros.model.shipped import model_dir

M = TypeVar("M", bound="PreTrained")


class PreTrained(nn.Module):
    """Loading and saving of a model built as `cls(cfg, lm, tokenizer, vision_tower=None)`."""

    @classmethod
    def from_config(cls: type[M], cfg: LLaVA4DConfig, tokenizer: Any,
                    init_lm: bool = True) -> M:
        """A fresh model (random LM, random CLIP/SigLIP tower of a "clip" config);
        `init_lm=False` leaves the LM's weights uninitialised, for a caller that loads them."""
        return cls(cfg, checkpoint.build_lm(cfg.lm, init=init_lm), tokenizer,
                   vision_tower=checkpoint.build_vision_tower(cfg.vision))

    @classmethod
    def load(cls: type[M], path: str | None = None, device: str = "cpu",
             dtype: torch.dtype = torch.float32, fresh: tuple[str, ...] = ()) -> M:
        """A model from disk, by what its directory holds: our format (config.json +
        model.safetensors + tokenizer files; `None`: the shipped default in
        llava4d_ros/model/default/, a name in `shipped.SHIPPED`: that model) or a LLaVA-1.5
        checkpoint in Hugging Face layout (`from_llava_hf`). Parameters of our format under the
        prefixes in `fresh` keep their initial values (training re-initialises them; shapes
        there may differ)."""
        path = model_dir(path)
        if checkpoint.is_llava_hf(path):
            return cls.from_llava_hf(path, device=device, dtype=dtype)
        cfg = checkpoint.read_config(path)
        # every LM weight is loaded next (a missing one is an error), so none is initialised
        fresh_lm = any(p.startswith("lm") or "lm.".startswith(p) for p in fresh)
        model = cls.from_config(cfg, checkpoint.load_tokenizer(path), init_lm=fresh_lm)
        checkpoint.load_state(model, cfg, path, fresh)
        return model.to(device=device, dtype=dtype).eval()

    from_pretrained = load

    @classmethod
    def from_lm(cls: type[M], lm_path: str, vision: VisionConfig | str | None = None,
                compressor: CompressorConfig | None = None, device: str = "cpu",
                dtype: torch.dtype = torch.float32, **overrides: Any) -> M:
        """A LLaVA-4D on a pretrained causal LM with fresh 4D parts, projector and heads
        (`backbones.lm_parts` says what the arguments may be). No scene inventory yet: stage 5
        adds one (`training.model_edits.add_inventory`)."""
        cfg, lm, tokenizer, tower = backbones.lm_parts(lm_path, vision, compressor, dtype,
                                                       **overrides)
        if tower is None:  # a "clip" VisionConfig without weights: a random tower
            tower = checkpoint.build_vision_tower(cfg.vision)
        return cls(cfg, lm, tokenizer, vision_tower=tower).to(device=device, dtype=dtype).eval()

    @classmethod
    def from_llava_hf(cls: type[M], path: str, device: str = "cpu",
                      dtype: torch.dtype = torch.float32, **overrides: Any) -> M:
        """A LLaVA-1.5 checkpoint in Hugging Face layout -> LLaVA4D with CLIP features at the
        configured layer, the checkpoint's projector and LM, and the 4D parts at their no-op
        initial values. `overrides`: LLaVA4DConfig fields (e.g. token_budget, patch_grid)."""
        parts = checkpoint.read_llava_hf(path, dtype)
        cfg = LLaVA4DConfig(**{**parts.fields, **overrides})
        model = cls(cfg, parts.lm, parts.tokenizer, vision_tower=parts.tower)
        model.projector.linear_1.load_state_dict(parts.projector.linear_1.state_dict())
        model.projector.linear_2.load_state_dict(parts.projector.linear_2.state_dict())
        return model.to(device=device, dtype=dtype).eval()

    def save_pretrained(self, path: str) -> None:
        """Our format (model/checkpoint.py), which `load` reads back."""
        checkpoint.write_dir(path, self.cfg, self.state_dict(), self.tokenizer)
