"""Training the embedding rows of the tokens LLaVA-4D adds to a pretrained LM (the image
placeholder, `<box>`, `<time>`) while every other row stays as pretrained.

The added rows start at the mean of the old ones (`backbones.add_model_tokens`). SmolLM2 ties its
input embedding to its output layer, so a `<box>` row that never trains gives the LM no way to
say `<box>` apart from "an average word". Training the whole matrix would change the LM's
vocabulary and make a checkpoint carry all of it; a gradient mask keeps the update to the new
rows. Their optimiser group has no weight decay, so AdamW leaves the masked rows exactly as
they were (zero gradient, zero moments, zero step).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


def added_token_ids(model: Any) -> list[int]:
    """The ids of the tokens LLaVA-4D adds: the image placeholder and the two slot tokens."""
    from llava4d_ros.data.instructions import SLOT_BOX, SLOT_TIME

    return sorted({model._token_id(t) for t in (model.cfg.image_token, SLOT_BOX, SLOT_TIME)})


def train_rows(weight: torch.nn.Parameter, rows: Sequence[int]) -> Any:
    """Make `weight (V, D)` trainable in `rows` only; returns the hook handle (`.remove()` it
    when the stage ends)."""
    mask = torch.zeros(weight.shape[0], 1, dtype=weight.dtype, device=weight.device)
    mask[list(rows)] = 1.0
    weight.requires_grad_(True)
    return weight.register_hook(lambda g: g * mask.to(g.dtype))
