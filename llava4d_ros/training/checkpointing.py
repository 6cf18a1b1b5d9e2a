"""Gradient checkpointing of the visual prefix, the long part of a training window (2,560
visual tokens against a few dozen per answer): its layers keep no activations in the forward
and recompute them in the backward (transformers' own per-layer checkpointing, non-reentrant).

transformers drops the KV cache inside checkpointed layers, and a window's answers read the
prefix's cache. So the prefix runs with checkpointing that keeps the cache its layers write
(`checkpointed_prefix`); its keys and values then move to a fresh cache for the answers, and
the prefix's own cache is emptied (`answer_cache`): each layer's recompute in the backward
starts from an empty cache, as its forward did, and writes the same keys and values again.
The answers run without checkpointing (they read and extend the cache).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from torch import nn


def _layers(lm: nn.Module) -> list[nn.Module]:
    from transformers.modeling_layers import GradientCheckpointingLayer

    layers = [m for m in lm.modules() if isinstance(m, GradientCheckpointingLayer)]
    if not layers:
        raise ValueError(f"{type(lm).__name__} has no layers transformers can checkpoint")
    return layers


def prepare(lm: nn.Module) -> None:
    """Give the LM's layers transformers' checkpoint function (non-reentrant: the prefix's
    input embeddings need no grad hook, DDP and peft work with it), all of them off until
    `checkpointed_prefix` turns them on."""
    base = lm.get_base_model() if hasattr(lm, "get_base_model") else lm  # under peft
    kwargs = {"use_reentrant": False}
    if hasattr(base, "activation_checkpointing_enable"):  # transformers >= 5.2x's name
        base.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    for m in base.modules():  # the decoder too: its flag would turn the cache off
        if hasattr(m, "gradient_checkpointing"):
            m.gradient_checkpointing = False


@contextlib.contextmanager
def checkpointed_prefix(lm: nn.Module, enabled: bool) -> Iterator[None]:
    """Inside: the LM's layers checkpoint and keep the KV cache they write (`prepare` first)."""
    if not enabled:
        yield
        return
    layers = _layers(lm)
    for layer in layers:
        layer.gradient_checkpointing = True
        layer._can_checkpoint_with_cache = True
    try:
        yield
    finally:
        for layer in layers:
            layer.gradient_checkpointing = False
            layer._can_checkpoint_with_cache = False


def answer_cache(cache: Any, enabled: bool) -> Any:
    """The cache the answers extend: with checkpointing, a fresh `DynamicCache` holding the
    prefix's keys and values, the prefix's own cache emptied for the recompute; else `cache`."""
    if not enabled:
        return cache
    from transformers import DynamicCache

    fresh = DynamicCache()
    for i, layer in enumerate(cache.layers):
        fresh.update(layer.keys, layer.values, i)
        layer.reset()
    return fresh
