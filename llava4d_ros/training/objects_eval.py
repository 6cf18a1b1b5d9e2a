"""How good the object map is (`python -m llava4d_ros.evaluate --objects`).

Synthetic scenes (exact truth): objects found (a map object's centre within `FOUND_M` of the
object's, one map object per object), phantoms (map objects near no object, clutter box or the
cabinet: those are real things, counted apart as furniture), id switches (map ids an object
took over the scene, less one), and whether moving/still is right where an object is matched.

The real kitchen (7-Scenes RedKitchen, frames 0-299 only; hand labels in
test/data/kitchen_objects.yaml): labelled objects found within `KITCHEN_FOUND_M` (one map
object per label), the ids each label took over the sequence, category right, map objects
near no label (unlabelled things the labels skip, or phantoms), and moving objects in a
static room (must be none).

Both go through `Engine.ingest_frame`: the node's keyframes, object map and categories.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from llava4d_ros.config import NodeConfig
from llava4d_ros.core.objects import MapObject
from llava4d_ros.engine import Engine

FOUND_M = 0.2
KITCHEN_FOUND_M = 0.3
NS = 1_000_000_000


def match(centres_a: np.ndarray, centres_b: np.ndarray, within_m: float) -> list[tuple[int, int]]:
    """One-to-one pairs (i, j) of `centres_a (A, 3)` and `centres_b (B, 3)` within
    `within_m`, nearest overall first (Hungarian on distance)."""
    if len(centres_a) == 0 or len(centres_b) == 0:
        return []
    d = np.linalg.norm(centres_a[:, None, :] - centres_b[None, :, :], axis=-1)
    rows, cols = linear_sum_assignment(np.where(d <= within_m, d, 1e6))
    return [(int(r), int(c)) for r, c in zip(rows, cols) if d[r, c] <= within_m]


@dataclass
class SceneResult:
    objects: int = 0  # palette objects seen at least once
    found: int = 0
    phantoms: int = 0
    furniture: int = 0
    switches: int = 0
    motion_n: int = 0
    motion_right: int = 0
    ms: list[float] = field(default_factory=list)


def synthetic_scene(seed: int, engine_cfg: NodeConfig | None = None) -> SceneResult:
    """Run one synthetic scene through the engine and score its object map."""
    from llava4d_ros.data.scene import frames, make_scene, visible_object_ids

    scene = make_scene(seed)
    engine = Engine(engine_cfg or NodeConfig())
    res = SceneResult()
    seen: set[int] = set()
    ids: dict[int, set[int]] = defaultdict(set)
    by_id = {o.object_id: o for o in scene.objects}
    for frame in frames(scene):
        out = engine.ingest_frame(round(frame.stamp_s * NS), frame.rgb, frame.depth_m,
                                  scene.cam, frame.world_from_cam)
        if out.status not in ("keyframe", "reset"):
            continue
        res.ms.append(engine.ingestor.timings_ms.get("object_map", float("nan")))
        seen |= {i for i in visible_object_ids(frame) if i >= 0}
        objs = engine.objects()
        gt = [by_id[i] for i in sorted(seen)]
        centres = np.array([o.center_at(frame.stamp_s) for o in gt]).reshape(-1, 3)
        for gi, mi in match(centres, _centres(objs), FOUND_M):
            ids[gt[gi].object_id].add(objs[mi].object_id)
            res.motion_n += 1
            res.motion_right += int(objs[mi].is_dynamic == gt[gi].is_moving_at(frame.stamp_s))
    t_end = frame.stamp_s
    objs = engine.objects()
    gt = [by_id[i] for i in sorted(seen)]
    pairs = match(np.array([o.center_at(t_end) for o in gt]).reshape(-1, 3), _centres(objs),
                  FOUND_M)
    res.objects, res.found = len(gt), len(pairs)
    matched = {mi for _, mi in pairs}
    furniture = [np.array([(c.bounds[i] + c.bounds[i + 3]) / 2 for i in range(3)])
                 for c in scene.clutter]
    cabinet = np.array([2.6, -0.2, 0.375])
    for k, o in enumerate(objs):
        if k in matched:
            continue
        near_furniture = (any(np.linalg.norm((o.center - c)[:2]) < 0.4 for c in furniture)
                          or np.all(np.abs((o.center - cabinet)[:2]) < (0.55, 1.1)))
        if near_furniture:
            res.furniture += 1
        else:
            res.phantoms += 1
    res.switches = sum(max(len(v) - 1, 0) for v in ids.values())
    return res


def _centres(objs: Sequence[MapObject]) -> np.ndarray:
    return np.array([o.center for o in objs]).reshape(-1, 3)


def synthetic(seeds: Sequence[int], progress: bool = True) -> dict[str, Any]:
    """Summed `SceneResult`s over `seeds` and the rates the issue targets."""
    from tqdm import tqdm

    total = SceneResult()
    per_scene = []
    for seed in tqdm(seeds, desc="objects", disable=not progress):
        r = synthetic_scene(seed)
        per_scene.append((seed, r))
        for name in ("objects", "found", "phantoms", "furniture", "switches", "motion_n",
                     "motion_right"):
            setattr(total, name, getattr(total, name) + getattr(r, name))
        total.ms += r.ms
    n = max(len(seeds), 1)
    return {"scenes": len(seeds), "objects": total.objects, "found": total.found,
            "recall": total.found / max(total.objects, 1),
            "phantoms_per_scene": total.phantoms / n,
            "furniture_per_scene": total.furniture / n,
            "switches_per_scene": total.switches / n,
            "motion_right": total.motion_right / max(total.motion_n, 1),
            "object_map_ms_median": float(np.nanmedian(total.ms)) if total.ms else float("nan"),
            "per_scene": per_scene}


def kitchen(root: str, labels_path: str, frames: int = 300,
            progress: bool = True) -> dict[str, Any]:
    """The object map over frames 0..`frames`-1 of the kitchen, scored against the labels."""
    import yaml
    from tqdm import tqdm

    from llava4d_ros.data.rgbd_folder import RGBDFolder

    labels = yaml.safe_load(Path(labels_path).read_text(encoding="utf-8"))["objects"]
    gravity = tuple(np.loadtxt(Path(root) / "gravity-direction.txt"))
    engine = Engine(NodeConfig(gravity=gravity))
    folder = RGBDFolder(root, stop=frames)
    cam = folder.camera_info.pinhole()
    centres = np.array([lb["center_world"] for lb in labels])
    ids: dict[str, set[int]] = defaultdict(set)
    dynamic_ids: set[int] = set()
    ms = []
    for frame in tqdm(folder, desc="kitchen", disable=not progress, total=frames):
        out = engine.ingest_frame(round(frame.stamp_s * NS), frame.rgb, frame.depth_m, cam,
                                  frame.world_from_cam)
        if out.status not in ("keyframe", "reset"):
            continue
        ms.append(engine.ingestor.timings_ms.get("object_map", float("nan")))
        objs = engine.objects()
        dynamic_ids |= {o.object_id for o in objs if o.is_dynamic}
        for li, mi in match(centres, _centres(objs), KITCHEN_FOUND_M):
            ids[labels[li]["id"]].add(objs[mi].object_id)
    objs = engine.objects()
    pairs = dict(match(centres, _centres(objs), KITCHEN_FOUND_M))
    rows = []
    for li, lb in enumerate(labels):
        mi = pairs.get(li)
        o = objs[mi] if mi is not None else None
        rows.append({"id": lb["id"], "category": lb["category"], "found": o is not None,
                     "object_id": o.object_id if o else -1, "label": o.label if o else "",
                     "map_category": o.category if o else "",
                     "hypotheses": [(k, round(v, 3)) for k, v in o.hypotheses[:3]] if o else [],
                     "distance_m": float(np.linalg.norm(o.center - centres[li])) if o else
                     float("nan"), "ids": sorted(ids[lb["id"]])})
    matched = set(pairs.values())
    return {"labels": len(labels), "found": len(pairs),
            "one_id": sum(len(r["ids"]) == 1 for r in rows if r["found"]),
            "category_right": sum(r["found"] and r["map_category"] == r["category"]
                                  for r in rows),
            "map_objects": len(objs),
            "unlabelled": [(o.object_id, o.label, o.support) for k, o in enumerate(objs)
                           if k not in matched],
            "dynamic_objects": len(dynamic_ids), "rows": rows,
            "object_map_ms_median": float(np.nanmedian(ms)) if ms else float("nan"),
            "category_error": engine.category_error}


def print_synthetic(r: dict[str, Any]) -> None:
    print(f"synthetic scenes: {r['scenes']}  objects {r['objects']}  found {r['found']} "
          f"(recall {r['recall']:.3f}, within {FOUND_M} m)  phantoms/scene "
          f"{r['phantoms_per_scene']:.2f}  furniture/scene {r['furniture_per_scene']:.2f}  "
          f"id switches/scene {r['switches_per_scene']:.2f}  moving/still right "
          f"{r['motion_right']:.3f}  object_map_ms median {r['object_map_ms_median']:.1f}")


def print_kitchen(r: dict[str, Any]) -> None:
    print(f"kitchen labels {r['labels']}: found {r['found']} (within {KITCHEN_FOUND_M} m, one "
          f"map object each), one id over the sequence {r['one_id']}, category right "
          f"{r['category_right']}, map objects {r['map_objects']}, near no label "
          f"{len(r['unlabelled'])}, moving objects {r['dynamic_objects']}, object_map_ms "
          f"median {r['object_map_ms_median']:.1f}")
    for row in r["rows"]:
        state = (f"object {row['object_id']} {row['label']!r} at {row['distance_m']:.2f} m, "
                 f"ids {row['ids']}, categories {row['hypotheses']}" if row["found"]
                 else f"not found (ids {row['ids']})")
        print(f"  {row['id']:<20} {row['category']:<16} {state}")
    if r["category_error"]:
        print(f"  ({r['category_error']})")
