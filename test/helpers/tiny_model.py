"""A tiny, untrained LLaVA-4D saved in our format: real code paths, nothing learned. For tests
of plumbing (node lifecycle, refusals, concurrency) where the answer's content does not matter."""

from __future__ import annotations

from pathlib import Path

import torch

from llava4d_ros.data.instructions import vocabulary
from llava4d_ros.model.checkpoint import build_model, save_llava4d
from llava4d_ros.model.config import LLaVA4DConfig, tiny_llama
from llava4d_ros.model.tokenizer import build_tokenizer


def save_tiny_model(path: Path) -> Path:
    tok = build_tokenizer(vocabulary())
    cfg = LLaVA4DConfig(lm=tiny_llama(len(tok), hidden=32, layers=2, heads=4), pointer_dim=16,
                        box_hidden=16, token_budget=256, model_id="tiny-untrained-test")
    torch.manual_seed(0)
    save_llava4d(build_model(cfg, tok).eval(), str(path))
    return path
