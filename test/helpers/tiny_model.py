"""A tiny, untrained LLaVA-4D saved in our format: real code paths, nothing learned. For tests
of plumbing (node lifecycle, refusals, concurrency) where the answer's content does not matter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from llava4d_ros.core.buffer4d import VisualTokens
from llava4d_ros.data.instructions import vocabulary
from llava4d_ros.model.config import LLaVA4DConfig, tiny_llama
from llava4d_ros.model.llava4d import build_model, save_llava4d
from llava4d_ros.model.tokenizer import build_tokenizer


def random_tokens(n: int, d: int = 18, seed: int = 0, t0_s: float = 50.0) -> VisualTokens:
    """`n` visual tokens with random positions (+-2 m), sorted stamps over [t0_s, t0_s + 8],
    features in [0, 1) of width `d`, no labels."""
    rng = np.random.default_rng(seed)
    view = rng.normal(size=(n, 3))
    return VisualTokens(
        xyz_world=rng.uniform(-2, 2, (n, 3)).astype(np.float32),
        t_s=np.sort(rng.uniform(t0_s, t0_s + 8.0, n)), features=rng.uniform(0, 1, (n, d)),
        rgb=rng.uniform(0, 255, (n, 3)).astype(np.float32),
        motion=rng.uniform(0, 0.5, n).astype(np.float32),
        view_dir_world=(view / np.linalg.norm(view, axis=1, keepdims=True)).astype(np.float32),
        labels=np.full(n, -1, np.int32), counts=np.ones(n, np.int32))


def save_tiny_model(path: Path) -> Path:
    tok = build_tokenizer(vocabulary())
    cfg = LLaVA4DConfig(lm=tiny_llama(len(tok), hidden=32, layers=2, heads=4), pointer_dim=16,
                        box_hidden=16, token_budget=256, model_id="tiny-untrained-test")
    torch.manual_seed(0)
    save_llava4d(build_model(cfg, tok).eval(), str(path))
    return path
