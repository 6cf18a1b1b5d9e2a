"""Where cached scenes live and how a split is read (training and evaluation alike).

A scene is rendered, ingested and encoded once (training/dataset.py) and kept as an npz under
`<root>/<vision>_g<grid>_b<budget>_v<voxel>_<hash>/`. The hash covers the source of every module
that decides what a record holds and the ingest and vision settings, so a change to any of them
gives a new directory and a stale cache is never read.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from llava4d_ros.core.pipeline import IngestConfig
from llava4d_ros.model.config import LLaVA4DConfig
from llava4d_ros.model.spec import ModelSpec
from llava4d_ros.training.dataset import SceneRecord, cache_scenes, load_record

_PACKAGE = Path(__file__).resolve().parents[1]  # llava4d_ros/
# The sources whose code decides what a cached scene holds (render, ingest, encode, samples),
# relative to the package; the names are hashed too, so a move gives a new cache.
_CACHE_SOURCES = ("data/scene.py", "data/instructions.py", "data/vocabulary.py",
                  "core/geometry.py", "core/buffer4d.py", "core/pipeline.py",
                  "data/palette.py", "model/vision.py", "training/dataset.py")


def ingest_config(cfg: LLaVA4DConfig) -> IngestConfig:
    """The ingest settings a model of `cfg` trains and is evaluated with (its ModelSpec's)."""
    return ModelSpec.of(cfg).ingest_config()


def cache_dir_for(root: str, cfg: LLaVA4DConfig) -> str:
    """`root/<vision>_g<grid>_b<budget>_v<voxel>_<hash>`: the hash covers the source of every
    module that builds scene records plus the ingest and vision settings."""
    h = hashlib.sha256(repr((ingest_config(cfg), cfg.vision)).encode())
    for rel in _CACHE_SOURCES:
        path = _PACKAGE / rel
        h.update(rel.encode())
        if path.exists():
            h.update(path.read_bytes())
    g = cfg.patch_grid
    return os.path.join(root, f"{cfg.vision.kind}_g{g[0]}x{g[1]}_b{cfg.token_budget}_"
                              f"v{cfg.voxel_m:g}_{h.hexdigest()[:12]}")


def load_split(split: str, n: int, cache_root: str, cfg: LLaVA4DConfig,
               progress: bool = True, samples: dict[str, Any] | None = None,
               workers: int = 1) -> list[SceneRecord]:
    """Cached records of the first `n` scene seeds of `split` (built on first use, by
    `workers` processes); `samples`: `samples_for_scene` options (e.g. `phrasing="train",
    honest=True`)."""
    from llava4d_ros.data.instructions import seeds_for_split
    from llava4d_ros.model.vision import ColourStatsEncoder

    if cfg.vision.kind != "colour_stats":
        raise ValueError("training data is cached with the colour-stats encoder only here")
    seeds = seeds_for_split(split, n)
    paths = cache_scenes(seeds, cache_dir_for(cache_root, cfg), ColourStatsEncoder(),
                         ingest_config(cfg), progress=progress, sample_kwargs=samples,
                         workers=workers)
    return [load_record(p) for p in paths]
