"""A pretrained LM's weights in a model directory as what training changed, not all of them.

LLaVA-4D on SmolLM2-135M trains LoRA adapters on the LM's attention projections and the
embedding rows of the three tokens it adds; the other 135 M parameters stay as pretrained. A
directory with `lm_weights: "delta"` in its config.json keeps only those changes (a few MB, so a
trained model fits in git) and loads the rest from the base LM that `lm_source` names (for
SmolLM2: the copy `scripts/setup.sh` converts into the environment; `backbones.base_lm_dir`).

The LM tensors of such a directory's model.safetensors, all under `lm_delta.<key>.`:
    u (out, r), v (r, in)   the tensor is base + u @ v (a merged LoRA update has rank <= r)
    rows (k,), values (k, in)   those rows replaced; rows past the base's end are added tokens
    full                    the whole tensor (a change that is neither)
A key with none of these equals the base. `lm_source.fingerprint` (a hash of a few base tensors)
makes a different base LM a load error rather than a model that quietly answers worse.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import torch

PREFIX = "lm_delta."
_FINGERPRINT_KEYS = ("model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight")


def read_base(path: str) -> dict[str, torch.Tensor]:
    """The base LM's state dict (keys as the causal LM names them, tied head included)."""
    from safetensors.torch import load_file

    state = load_file(os.path.join(path, "model.safetensors"))
    if "lm_head.weight" not in state and "model.embed_tokens.weight" in state:
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    return state


def fingerprint(base: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for key in _FINGERPRINT_KEYS:
        if key in base:
            t = base[key]
            h.update(key.encode())
            h.update(t[:64].to(torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _low_rank(diff: torch.Tensor, max_rank: int, atol: float
              ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """`(u, v)` of the least rank (a power of two up to `max_rank`) with u @ v == diff within
    `atol`; None if there is none. A merged LoRA update is rank r plus float32 rounding."""
    u, s, vh = torch.linalg.svd(diff.to(torch.float64), full_matrices=False)
    k = 1
    while k <= min(max_rank, s.numel()):
        uk = (u[:, :k] * s[:k]).to(torch.float32).contiguous()
        vk = vh[:k].to(torch.float32).contiguous()
        if float((uk @ vk - diff).abs().max()) <= atol:
            return uk, vk
        k *= 2
    return None


def encode(lm_state: dict[str, torch.Tensor], base: dict[str, torch.Tensor],
           max_rank: int = 32, atol: float = 1e-5) -> dict[str, torch.Tensor]:
    """The `lm_delta.*` tensors that turn `base` into `lm_state` (keys without `lm.`)."""
    out: dict[str, torch.Tensor] = {}
    for key, w in lm_state.items():
        w = w.detach().to("cpu", torch.float32)
        b = base.get(key)
        if b is None or b.dim() != w.dim() or b.shape[1:] != w.shape[1:] or (
                b.shape[0] > w.shape[0]):
            out[f"{PREFIX}{key}.full"] = w.contiguous()
            continue
        b = b.to(torch.float32)
        if b.shape == w.shape and torch.equal(b, w):
            continue
        if w.dim() == 2:
            padded = torch.zeros_like(w)
            padded[:b.shape[0]] = b
            changed = torch.nonzero((padded != w).any(1)).flatten()
            if b.shape[0] < w.shape[0] or len(changed) <= w.shape[0] // 10:
                out[f"{PREFIX}{key}.rows"] = changed.to(torch.int64)
                out[f"{PREFIX}{key}.values"] = w[changed].contiguous()
                continue
            uv = _low_rank(w - b, max_rank, atol)
            if uv is not None:
                out[f"{PREFIX}{key}.u"], out[f"{PREFIX}{key}.v"] = uv
                continue
        out[f"{PREFIX}{key}.full"] = w.contiguous()
    return out


def decode(delta: dict[str, torch.Tensor], base: dict[str, torch.Tensor],
           shapes: dict[str, torch.Size]) -> dict[str, torch.Tensor]:
    """The LM state (keys of `shapes`, without `lm.`) from `base` and the `lm_delta.*` tensors."""
    out = {}
    for key, shape in shapes.items():
        p = f"{PREFIX}{key}."
        if p + "full" in delta:
            out[key] = delta[p + "full"]
            continue
        if key not in base:
            raise KeyError(f"{key}: not in the base LM and not in the checkpoint")
        b = base[key].to(torch.float32)
        if p + "rows" in delta:
            w = torch.zeros(shape, dtype=torch.float32)
            w[:b.shape[0]] = b
            w[delta[p + "rows"]] = delta[p + "values"]
        elif p + "u" in delta:
            w = b + delta[p + "u"] @ delta[p + "v"]
        else:
            w = b
        if tuple(w.shape) != tuple(shape):
            raise ValueError(f"{key}: base LM has {tuple(w.shape)}, the model {tuple(shape)}")
        out[key] = w
    return out


def split_state(state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """`(lm tensors without the "lm." prefix, the rest)` of a LLaVA4D state dict."""
    lm = {k[3:]: v for k, v in state.items() if k.startswith("lm.")}
    rest = {k: v for k, v in state.items() if not k.startswith("lm.")}
    return lm, rest
