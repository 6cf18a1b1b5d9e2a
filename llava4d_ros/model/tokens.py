"""The window's visual tokens as the model reads them: at most `token_budget` of them
(`apply_token_budget`), their arrays as tensors in model time (`token_tensors`).

Model time is seconds since the window start `t_ref_s` (an absolute stamp); every part of the
model (4D prompt, fusion, scene inventory, slot heads) reads the tokens through this one
conversion, so they agree on dtype, device and time origin.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from llava4d_ros.core.buffer4d import VisualTokens


def apply_token_budget(tokens: VisualTokens, budget: int) -> VisualTokens:
    """At most `budget` tokens, taken at evenly spaced positions (the buffer's rule when even its
    coarsest voxels are too many); unchanged when within budget."""
    n = len(tokens)
    if n <= budget:
        return tokens
    keep = np.linspace(0, n - 1, budget).round().astype(np.intp)
    return VisualTokens(**{k: getattr(tokens, k)[keep] for k in tokens.__dataclass_fields__})


@dataclass(frozen=True)
class TokenTensors:
    """`VisualTokens` as tensors of one dtype and device; times in model seconds."""

    xyz: torch.Tensor  # (N, 3) world metres
    t: torch.Tensor  # (N,) model seconds of the token's (last) observation
    t_first: torch.Tensor  # (N,) model seconds of the first observation in its span
    motion: torch.Tensor  # (N,) metres, the beta of the temporal encoding
    features: torch.Tensor  # (N, D) patch features
    view: torch.Tensor  # (N, 3) unit vectors camera -> point, world frame
    flat: torch.Tensor | None = None  # (N,) share of the token's patches on a plane


def token_tensors(tokens: VisualTokens, t_ref_s: float, dtype: torch.dtype,
                  device: torch.device) -> TokenTensors:
    """`tokens` as tensors; times are `t_s - t_ref_s` taken in float64 first, so stamps of
    ~1.7e9 s keep their milliseconds before the cast to `dtype`."""

    def as_t(x: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(x), dtype=dtype, device=device)

    def model_time(t_s: np.ndarray) -> torch.Tensor:
        return as_t(np.asarray(t_s, np.float64) - t_ref_s)

    return TokenTensors(xyz=as_t(tokens.xyz_world), t=model_time(tokens.t_s),
                        t_first=model_time(tokens.t_first_s), motion=as_t(tokens.motion),
                        features=as_t(tokens.features), view=as_t(tokens.view_dir_world),
                        flat=as_t(tokens.flat))
