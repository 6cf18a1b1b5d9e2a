"""Load the model for the node, the replay and the demo: device, dtype and the LM's weight
quantization by name, the format by what the directory holds (ours, or a LLaVA-1.5 checkpoint
in Hugging Face layout).

Importing this module imports torch; the engine and the ROS adapter do not, until a model is
loaded.
"""

from __future__ import annotations

import importlib.util
import os

import torch
from torch import nn

from llava4d_ros.model.fast_decode import check_decode_mode
from llava4d_ros.model.llava4d import LLaVA4D
from llava4d_ros.model.shipped import model_dir

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
QUANTIZATIONS = ("none", "int8", "int4")
QUANT_BACKENDS = ("torchao", "bitsandbytes")  # tried in this order


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


def quantization_backend(quantization: str, device: str) -> str | None:
    """The library that will quantize the LM on `device` (a resolved device), None for "none".
    Raises ValueError naming the reason where it cannot: an unknown name, a CPU (the int8/int4
    kernels of torchao and bitsandbytes are CUDA kernels), or neither library installed."""
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {QUANTIZATIONS}, got {quantization!r}")
    if quantization == "none":
        return None
    if not device.startswith("cuda"):
        raise ValueError(f"quantization {quantization!r} needs a CUDA device: the int8/int4 "
                         f"weight kernels of torchao and bitsandbytes run on GPUs, and the "
                         f"model would run on {device!r}; use quantization none on the CPU")
    for name in QUANT_BACKENDS:
        if importlib.util.find_spec(name) is not None:
            return name
    raise ValueError(f"quantization {quantization!r} needs torchao or bitsandbytes, and "
                     f"neither is installed (pip install torchao, or bitsandbytes)")


def _is_lm_linear(module: nn.Module, fqn: str) -> bool:
    # the output head stays in the model's dtype: the answer's word choice is read from it
    return isinstance(module, nn.Linear) and not fqn.endswith("lm_head")


def quantize_lm(lm: nn.Module, quantization: str, backend: str) -> None:
    """The LM's linear layers (all but the output head) to int8 or int4 weights in place, on
    its CUDA device; the rest of the model keeps its dtype."""
    if backend == "torchao":
        from torchao.quantization import (
            Int4WeightOnlyConfig,
            Int8WeightOnlyConfig,
            quantize_,
        )

        config = Int8WeightOnlyConfig() if quantization == "int8" else Int4WeightOnlyConfig()
        quantize_(lm, config, filter_fn=_is_lm_linear)
        return
    import bitsandbytes as bnb

    for fqn, module in list(lm.named_modules()):
        if not _is_lm_linear(module, fqn):
            continue
        parent = lm.get_submodule(fqn.rpartition(".")[0]) if "." in fqn else lm
        w = module.weight.data.cpu()
        bias = module.bias is not None
        if quantization == "int8":
            new = bnb.nn.Linear8bitLt(module.in_features, module.out_features, bias=bias,
                                      has_fp16_weights=False)
            new.weight = bnb.nn.Int8Params(w, requires_grad=False, has_fp16_weights=False)
        else:
            new = bnb.nn.Linear4bit(module.in_features, module.out_features, bias=bias,
                                    compute_dtype=module.weight.dtype, quant_type="nf4")
            new.weight = bnb.nn.Params4bit(w, requires_grad=False, quant_type="nf4")
        if bias:
            new.bias = nn.Parameter(module.bias.data.cpu(), requires_grad=False)
        setattr(parent, fqn.rpartition(".")[2], new.to(module.weight.device))  # quantizes


def load_model(path: str | None = None, device: str = "auto",
               dtype: str = "float32", cpu_threads: int = 0,
               quantization: str = "none", decode_mode: str = "eager") -> LLaVA4D:
    """`path=None`: the embedded default. A directory whose config.json is a LLaVA config
    (`model_type: llava`) loads as LLaVA-1.5 with no-op 4D parts; otherwise our format.
    `cpu_threads` > 0 sets torch's (process-wide) intra-op threads when the model runs on
    the CPU; 0 leaves torch's default. `quantization` int8 / int4 quantizes the LM's weights
    after loading (torchao, else bitsandbytes; CUDA only), refused before anything loads.
    `decode_mode` static / compile (model/fast_decode.py): CUDA only, refused before anything
    loads on the CPU, and after loading for an LM that transformers cannot compile."""
    dev = resolve_device(device)
    backend = quantization_backend(quantization, dev)
    check_decode_mode(decode_mode, dev)
    if dev == "cpu" and cpu_threads > 0:
        torch.set_num_threads(cpu_threads)
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    if dtype == "float16" and dev == "cpu":
        raise ValueError("float16 is not supported on the CPU; use float32 or bfloat16")
    torch_dtype = DTYPES[dtype]
    if path and not os.path.isdir(model_dir(path)):
        raise FileNotFoundError(f"model directory {model_dir(path)!r} does not exist")
    model = LLaVA4D.load(path, device=dev, dtype=torch_dtype)
    if backend is not None:
        quantize_lm(model.lm, quantization, backend)
    check_decode_mode(decode_mode, dev, model.lm)
    model.decode_mode = decode_mode
    return model
