"""4D instruction data for training and evaluation: scene -> frames -> Ingestor -> tokens.

One scene becomes one cached `.npz`: the `VisualTokens` of its whole window (built by the very
`core.pipeline.Ingestor` the node runs, with the model's vision encoder and the renderer's
per-pixel instance ids as labels) plus its `InstructionSample`s and, per answer slot, the indices
of the visual tokens a pointer should select:

- a `<box>` slot (object o at model time T): tokens labelled o whose time t has the object where
  it is at T (centre within 5 cm), so a static object's tokens all count whatever their stamp,
  a moving one's only near T;
- a `<time>` slot (object o, value T): tokens labelled o stamped nearest T (within 0.3 s), else
  all tokens stamped nearest T (a static object's tokens carry their latest stamp, not T);
- except the `<time>` slot of a when_start answer: the tokens labelled o that report motion
  (above 0.05 m); the time head reads the earliest of the pointed ones (`when_start_targets`,
  applied on load too, so older caches get it).

Settings (documented in docs/MODEL.md): the node's 24x32 patch grid on the renderer's 320x240
frames (10 px patches), voxel 0.2 m, budget 2560, windows = whole 8 s scenes.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from llava4d_ros.core.buffer4d import VisualTokens
from llava4d_ros.core.pipeline import IngestConfig, Ingestor, PatchEncoder

TOKEN_FIELDS = ("xyz_world", "t_s", "features", "rgb", "motion", "view_dir_world", "labels",
                "counts", "t_first_s", "flat")
_SAME_PLACE_M = 0.05
_NEAR_TIME_S = 0.3


@dataclass(frozen=True)
class SceneRecord:
    """One cached scene: tokens, window start (scene seconds) and samples with slot targets.

    `samples[k]` is `InstructionSample.to_dict()` plus `targets`: one int list per slot.
    """

    seed: int
    tokens: VisualTokens
    t_ref_s: float
    samples: list[dict[str, Any]]


def slot_targets(tokens: VisualTokens, scene: Any, t_ref_s: float,
                 slot: dict[str, Any]) -> list[int]:
    """Indices of the tokens a slot's pointer should select (see the module docstring)."""
    oid = int(slot["object_id"])
    t_abs = t_ref_s + float(slot["t_s"])
    mine = np.flatnonzero(tokens.labels == oid) if oid >= 0 else np.zeros(0, np.intp)
    if slot["kind"] == "box":
        if mine.size == 0:
            return []
        obj = scene.object_by_id(oid)
        at_t = obj.center_at(t_abs)
        centres = obj.centers_at(tokens.t_s[mine])  # (n, 3)
        dist = np.linalg.norm(centres - at_t, axis=1)
        ok = dist < max(_SAME_PLACE_M, float(dist.min()) + 0.02)
        if float(dist.min()) > 0.3:
            return []
        return [int(i) for i in mine[ok]]
    if mine.size:
        dt = np.abs(tokens.t_s[mine] - t_abs)
        if float(dt.min()) <= _NEAR_TIME_S:
            return [int(i) for i in mine[dt <= dt.min() + 0.01]]
    dt = np.abs(tokens.t_s - t_abs)
    return [int(i) for i in np.flatnonzero(dt <= dt.min() + 0.01)]


_START_MOTION_M = 0.05


def when_start_targets(tokens: VisualTokens, samples: list[dict[str, Any]]) -> None:
    """In place: the `<time>` slot of each when_start sample targets its object's moving tokens
    (all its tokens if none moves, the stored targets if it has none)."""
    for s in samples:
        if s["task"] != "when_start" or not s["slots"]:
            continue
        oid = int(s["slots"][0]["object_id"])
        mine = tokens.labels == oid
        moving = mine & (np.asarray(tokens.motion) > _START_MOTION_M)
        pick = moving if moving.any() else mine
        if pick.any():
            s["targets"] = [[int(i) for i in np.flatnonzero(pick)]]


def build_scene(seed: int, encoder: PatchEncoder, ingest_cfg: IngestConfig,
                scene_kwargs: dict[str, Any] | None = None,
                sample_kwargs: dict[str, Any] | None = None) -> SceneRecord:
    """Render scene `make_scene(seed, **scene_kwargs)`, ingest every frame, pool tokens, attach
    `samples_for_scene(scene, **sample_kwargs)` (e.g. `phrasing="train", honest=True`) and
    their slot targets."""
    from llava4d_ros.data.instructions import samples_for_scene
    from llava4d_ros.data.scene import frames, make_scene

    scene = make_scene(seed, **(scene_kwargs or {}))
    ingestor = Ingestor(ingest_cfg, encoder)
    for frame in frames(scene):
        ingestor.ingest(frame.stamp_s, frame.rgb, frame.depth_m, scene.cam,
                        frame.world_from_cam, labels=frame.instance)
    tokens = ingestor.tokens()
    t_ref = 0.0  # samples_for_scene's window starts at scene time 0
    samples = []
    for s in samples_for_scene(scene, **(sample_kwargs or {})):
        d = s.to_dict()
        d["targets"] = [slot_targets(tokens, scene, t_ref, slot) for slot in s.slots]
        samples.append(d)
    when_start_targets(tokens, samples)
    return SceneRecord(seed=seed, tokens=tokens, t_ref_s=t_ref, samples=samples)


def save_record(rec: SceneRecord, path: str) -> None:
    arrays = {name: getattr(rec.tokens, name) for name in TOKEN_FIELDS}
    tmp = path + ".tmp.npz"
    np.savez_compressed(tmp, **arrays, seed=rec.seed, t_ref_s=rec.t_ref_s,
                        samples=np.array(json.dumps(rec.samples)))
    os.replace(tmp, path)


def load_record(path: str) -> SceneRecord:
    with np.load(path) as z:
        tokens = VisualTokens(**{name: z[name] for name in TOKEN_FIELDS if name in z.files})
        samples = json.loads(str(z["samples"]))
        when_start_targets(tokens, samples)
        return SceneRecord(seed=int(z["seed"]), tokens=tokens, t_ref_s=float(z["t_ref_s"]),
                           samples=samples)


def _build_and_save(job: tuple) -> None:
    seed, path, encoder, ingest_cfg, scene_kwargs, sample_kwargs = job
    save_record(build_scene(seed, encoder, ingest_cfg, scene_kwargs, sample_kwargs), path)


def _build_and_save_in_worker(job: tuple) -> None:
    import torch

    torch.set_num_threads(1)  # one core per worker: the pool is the parallelism
    _build_and_save(job)


def cache_scenes(seeds: list[int], cache_dir: str, encoder: PatchEncoder,
                 ingest_cfg: IngestConfig, progress: bool = True,
                 scene_kwargs: dict[str, Any] | None = None,
                 sample_kwargs: dict[str, Any] | None = None, workers: int = 1) -> list[str]:
    """Build (or reuse) the cached `.npz` of every seed; returns their paths in seed order.
    Records made with `scene_kwargs` / `sample_kwargs` (see `build_scene`) go to a
    subdirectory named by them, so each variant has a cache of its own. `workers` > 1 builds
    the missing scenes in that many processes (a scene is ~2.5 s of one core; each record is
    the same whichever process builds it)."""
    from tqdm import tqdm

    if scene_kwargs or sample_kwargs:
        words = [f"{k}-{v}" for kw in (scene_kwargs or {}, sample_kwargs or {})
                 for k, v in sorted(kw.items())]
        variant = "".join(c if c.isalnum() or c in "-=" else "_" for c in "_".join(words))
        cache_dir = os.path.join(cache_dir, "variant_" + variant)
    os.makedirs(cache_dir, exist_ok=True)
    paths = [os.path.join(cache_dir, f"scene_{s:06d}.npz") for s in seeds]
    jobs = [(s, p, encoder, ingest_cfg, scene_kwargs, sample_kwargs)
            for s, p in zip(seeds, paths) if not os.path.exists(p)]
    bar = tqdm(total=len(jobs), desc=f"scenes -> {cache_dir}", disable=not progress)
    if workers > 1 and len(jobs) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawn, not fork: the parent may already hold torch's thread pools
        with ProcessPoolExecutor(min(workers, len(jobs)),
                                 mp_context=multiprocessing.get_context("spawn")) as pool:
            for _ in pool.map(_build_and_save_in_worker, jobs):
                bar.update()
    else:
        for job in jobs:
            _build_and_save(job)
            bar.update()
    bar.close()
    return paths
