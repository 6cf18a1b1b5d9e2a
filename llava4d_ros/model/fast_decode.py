"""Faster decoding at batch 1 on CUDA: a static KV cache, and on top of it the LM's decode step
compiled by `torch.compile` with CUDA graphs, as transformers' `generate` does it for a cache
of fixed size (`StaticCache`).

At batch 1 a 7B LM's decode step is launch-bound (20 tokens/s on an H200 with the dynamic
cache, docs/PERFORMANCE.md): hundreds of small kernels a token. A static cache gives every
step the same shapes, so `generate` can capture the step once as a CUDA graph and replay it.

Modes (`LLaVA4D.decode_mode`, the node's `decode_mode` parameter):
- "eager": the dynamic cache, no compilation (the default; what the CPU runs);
- "static": a `StaticCache` sized for the answer, no compilation;
- "compile": a `StaticCache` and the decode step compiled (mode "reduce-overhead": CUDA graphs).

The visual prefix is computed once per window into a dynamic cache (its length varies with the
window); an answer in a static mode decodes on a static copy of it, so the prefix stays as it was
for the next question.
"""

from __future__ import annotations

from typing import Any

import torch

DECODE_MODES = ("eager", "static", "compile")
#: A static cache's length is rounded up to a multiple of this [positions]: a compiled step
#: is specialised to the cache's shape, and the prompt's length varies from question to
#: question (window tokens, question words), so every length would compile anew
CACHE_BUCKET = 256


def cache_length(needed: int) -> int:
    """Positions of the static cache for `needed` (prompt + answer), rounded up to
    `CACHE_BUCKET`."""
    return -(-int(needed) // CACHE_BUCKET) * CACHE_BUCKET


def check_decode_mode(mode: str, device: torch.device | str, lm: Any = None) -> None:
    """Raise ValueError naming the reason where `mode` cannot run: an unknown name, a CPU (the
    gain is CUDA's: transformers compiles the decode step only on accelerators, and on the CPU a
    static cache only adds attention over its empty slots), or an `lm` (when given) whose
    transformers class does not declare that it compiles with a static cache
    (`_can_compile_fullgraph`)."""
    if mode not in DECODE_MODES:
        raise ValueError(f"decode_mode must be one of {DECODE_MODES}, got {mode!r}")
    if mode == "eager":
        return
    dev = torch.device(device)
    if dev.type != "cuda":
        raise ValueError(f"decode_mode {mode!r} needs a CUDA device: the static KV cache and "
                         f"CUDA graphs speed up launch-bound GPU decoding, and the model would "
                         f"run on {str(dev)!r}; use decode_mode eager on the CPU")
    if lm is not None and not getattr(type(lm), "_can_compile_fullgraph", False):
        raise ValueError(f"decode_mode {mode!r} is not supported by this LM "
                         f"({type(lm).__name__}): transformers does not declare it compilable "
                         f"with a static cache; use decode_mode eager")


def static_copy(cache: Any, lm_config: Any, max_cache_len: int) -> Any:
    """A `StaticCache` of `max_cache_len` positions holding what the dynamic `cache` holds (its
    first `cache.get_seq_length()` positions); `cache` itself is not changed."""
    from transformers import StaticCache

    static = StaticCache(config=lm_config, max_cache_len=max_cache_len)
    for layer, src in zip(static.layers, cache.layers):
        layer.update(src.keys, src.values)  # (1, H_kv, L, d) into positions 0 .. L-1
    return static


def generation_options(mode: str) -> dict[str, Any]:
    """`GenerationConfig` fields for `mode`: compilation off except in "compile", where
    `generate` compiles the decode step as it does for any static cache (transformers' default
    `CompileConfig`: mode "reduce-overhead", CUDA graphs)."""
    if mode == "eager":
        return {}
    if mode == "static":
        return {"disable_compile": True}
    from transformers import CompileConfig

    return {"disable_compile": False, "compile_config": CompileConfig()}
