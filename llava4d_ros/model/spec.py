"""`ModelSpec`: the settings a model's weights were trained with, which ingestion must follow.

The engine builds its ingest settings (patch grid, voxel size, token budget, window) from a
model's spec rather than keeping copies of its own; `LLaVA4D.spec` makes one from the config.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from llava4d_ros.core.pipeline import IngestConfig
from llava4d_ros.model.config import LLaVA4DConfig


@dataclass(frozen=True)
class ModelSpec:
    """`patch_grid` (rows, cols) of patches per keyframe, `voxel_m` the pooling voxel edge,
    `token_budget` the most visual tokens per query, `window_s` the window length the model was
    trained on, `feature_dim` the width of the patch encoder's features, `look_change` the look
    change that splits a still voxel's token (0: never), `over_budget` what pooling does with
    more tokens than the budget ("coarsen" the voxel or "drop" the least-seen)."""

    patch_grid: tuple[int, int]
    voxel_m: float
    token_budget: int
    window_s: float
    feature_dim: int
    look_change: float = 0.0
    over_budget: str = "coarsen"

    def __post_init__(self) -> None:
        grid = tuple(int(g) for g in self.patch_grid)
        if len(grid) != 2 or min(grid) < 1:
            raise ValueError(f"patch_grid must be two positive ints, got {self.patch_grid}")
        object.__setattr__(self, "patch_grid", grid)
        if not (self.voxel_m > 0 and self.window_s > 0):
            raise ValueError(f"voxel_m and window_s must be > 0, got {self.voxel_m}, "
                             f"{self.window_s}")
        if self.token_budget < 1 or self.feature_dim < 1:
            raise ValueError(f"token_budget and feature_dim must be >= 1, got "
                             f"{self.token_budget}, {self.feature_dim}")

    @classmethod
    def of(cls, cfg: LLaVA4DConfig) -> ModelSpec:
        """The spec a model of `cfg` was trained with."""
        return cls(patch_grid=cfg.patch_grid, voxel_m=cfg.voxel_m, token_budget=cfg.token_budget,
                   window_s=cfg.window_s, feature_dim=cfg.vision.feature_dim,
                   look_change=cfg.look_change, over_budget=cfg.over_budget)

    def ingest_config(self, **node: Any) -> IngestConfig:
        """The ingest settings for this model: patch grid, voxel, token budget, window, look
        change and over-budget rule from the spec; the rest (keyframe policy, buffer cap) from
        `node`, IngestConfig fields."""
        return IngestConfig(**{"patch_grid": self.patch_grid, "voxel_m": self.voxel_m,
                               "token_budget": self.token_budget, "window_s": self.window_s,
                               "look_change": self.look_change,
                               "over_budget": self.over_budget, **node})

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["patch_grid"] = list(self.patch_grid)
        return d
