"""Load the model for the node, the replay and the demo: device and dtype by name, the format
by what the directory holds (ours, or a LLaVA-1.5 checkpoint in Hugging Face layout).

Importing this module imports torch; the engine and the ROS adapter do not, until a model is
loaded.
"""

from __future__ import annotations

import json
import os

import torch

from llava4d_ros.model.llava4d import LLaVA4D

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_device(device: str) -> str:
    """auto -> cuda when available, else cpu. Asking for cuda without one is an error."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but torch sees no CUDA device "
                         "(use device:=cpu or auto)")
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}")
    return device


def load_model(path: str | None = None, device: str = "auto",
               dtype: str = "float32", cpu_threads: int = 0) -> LLaVA4D:
    """`path=None`: the embedded default. A directory whose config.json is a LLaVA config
    (`model_type: llava`) loads as LLaVA-1.5 with no-op 4D parts; otherwise our format.
    `cpu_threads` > 0 sets torch's (process-wide) intra-op threads when the model runs on
    the CPU; 0 leaves torch's default."""
    dev = resolve_device(device)
    if dev == "cpu" and cpu_threads > 0:
        torch.set_num_threads(cpu_threads)
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    if dtype == "float16" and dev == "cpu":
        raise ValueError("float16 is not supported on the CPU; use float32 or bfloat16")
    torch_dtype = DTYPES[dtype]
    if path is not None:
        if not os.path.isdir(path):
            raise FileNotFoundError(f"model directory {path!r} does not exist")
        cfg_path = os.path.join(path, "config.json")
        if os.path.isfile(cfg_path):
            with open(cfg_path, encoding="utf-8") as f:
                if json.load(f).get("model_type") == "llava":
                    return LLaVA4D.from_llava_hf(path, device=dev, dtype=torch_dtype)
    return LLaVA4D.from_pretrained(path, device=dev, dtype=torch_dtype)
