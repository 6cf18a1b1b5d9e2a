"""`llava4d-model-info [MODEL_DIR]`: one JSON line about a model directory (our format), read
from its config.json and the safetensors header, so nothing is built or loaded:

    {"model_id": ..., "lm": {"name", "type", "source", "path"}, "lm_params": ...,
     "vocab_size": ..., "vision": {"kind", "feature_dim", "source"}, "compressor": ...,
     "pretrained": ..., "spec": {"patch_grid", "voxel_m", "token_budget", "window_s", ...}}

`pretrained` is whether the LM came from pretrained weights (not trained from scratch here).
Without MODEL_DIR: the shipped default.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from typing import Any

from llava4d_ros.model.checkpoint import CheckpointError, read_config
from llava4d_ros.model.shipped import model_dir
from llava4d_ros.model.spec import ModelSpec


def lm_parameters(path: str, cfg: Any) -> int:
    """Parameters of the LM in `path`/model.safetensors (tensors under `lm.`), from the header
    alone; a tied output layer is stored once and counted once. A delta checkpoint counts its
    base LM (model/lm_delta.py) plus the embedding rows of the tokens it added."""
    from safetensors import safe_open

    if cfg.lm_weights == "delta":
        from llava4d_ros.model.backbones import base_lm_dir

        total, rows = 0, 0
        with safe_open(os.path.join(base_lm_dir(cfg.lm_source), "model.safetensors"),
                       framework="pt") as f:
            for name in f.keys():
                shape = f.get_slice(name).get_shape()
                total += math.prod(shape)
                if name == "model.embed_tokens.weight":
                    rows = shape[0]
        return total + (int(cfg.lm["vocab_size"]) - rows) * int(cfg.lm["hidden_size"])
    total = 0
    with safe_open(os.path.join(path, "model.safetensors"), framework="pt") as f:
        for name in f.keys():
            if name.startswith("lm."):
                total += math.prod(f.get_slice(name).get_shape())
    return total


def model_info(path: str | None = None) -> dict[str, Any]:
    path = os.path.abspath(model_dir(path))
    cfg = read_config(path)
    src = cfg.lm_source
    return {
        "model_id": cfg.model_id,
        "lm": {"name": src.name or f"{cfg.lm['model_type']} (trained here)",
               "type": cfg.lm["model_type"], "source": src.kind, "path": src.path},
        "lm_params": lm_parameters(path, cfg),
        "vocab_size": int(cfg.lm["vocab_size"]),
        "vision": {"kind": cfg.vision.kind, "feature_dim": cfg.vision.feature_dim,
                   "source": cfg.vision.source},
        "compressor": cfg.compressor.kind,
        "pretrained": src.pretrained,
        "spec": ModelSpec.of(cfg).to_dict(),
        "path": path,
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="llava4d-model-info", description=__doc__.split("\n\n")[0])
    ap.add_argument("model_dir", nargs="?", default=None,
                    help="a model directory in our format (default: the shipped model)")
    args = ap.parse_args(argv)
    try:
        info = model_info(args.model_dir)
    except CheckpointError as exc:
        print(f"llava4d-model-info: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
