"""The synthetic task's closed vocabulary as the scene inventory's words: model/ knows no
dataset, so the words a model's inventory reads come from here when it is trained."""

from __future__ import annotations

from typing import Any

from llava4d_ros.data.vocabulary import COLOURS, PLURALS, SHAPES
from llava4d_ros.model.config import InventoryConfig


def task_inventory(**fields: Any) -> InventoryConfig:
    """An `InventoryConfig` of the synthetic palette's colours and shapes; `fields` override
    any of its fields."""
    return InventoryConfig(**{"colours": COLOURS, "shapes": SHAPES, "plurals": PLURALS,
                              **fields})
