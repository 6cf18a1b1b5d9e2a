"""Ingest throughput on one core: 640x480 RGB-D frames of the 7-Scenes RedKitchen sequence.

Prints per-stage milliseconds (decode, backproject, pool, motion, encode, buffer, track), the
end-to-end rate with every frame a keyframe (the worst case: the keyframe policy normally skips
most frames), the peak memory of a full 30 s window, and a plain full-resolution numpy
back-projection as the reference. `encode` is the model's patch encoder on every keyframe, as
the node runs it: the colour statistics of the shipped default, or `--encoder
efficientnet_lite0` (ImageNet features, 1280 per patch; `efficientnet_lite0_320`: the last
block's 320). The last line is
`ingest_fps=<frames per second end to end>`: what the node pays per keyframe.

    .venv/bin/python bench/ingest.py [--frames 200] [--data PATH] [--encoder NAME]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # one core, before numpy loads its BLAS

import argparse
import time
import tracemalloc
from pathlib import Path

import numpy as np
from PIL import Image

from llava4d_ros.core.geometry import (
    PinholeCamera,
    backproject,
    depth_to_metres,
    transform_points,
)
from llava4d_ros.core.objectmap import ObjectMap, ObjectMapConfig
from llava4d_ros.core.pipeline import IngestConfig, Ingestor

ENCODERS = ("colour_stats", "efficientnet_lite0", "efficientnet_lite0_320", "none")


def make_encoder(name: str):
    """The patch encoder a model of vision kind `name` gives the node (None: patch colours)."""
    if name == "none":
        return None
    from llava4d_ros.model.vision import ColourStatsEncoder, EfficientNetLite0Encoder

    if name == "colour_stats":
        return ColourStatsEncoder()
    return EfficientNetLite0Encoder(feature_dim=320 if name.endswith("_320") else 1280)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "7scenes-redkitchen"
CAM = PinholeCamera(fx=585.0, fy=585.0, cx=320.0, cy=240.0, width=640, height=480)


def load_poses(data: Path) -> tuple[np.ndarray, np.ndarray]:
    """`stamps_s (T,)`, `world_from_cam (T, 4, 4)` from poses_T_world_camera_4x4.txt."""
    rows = np.loadtxt(data / "poses_T_world_camera_4x4.txt", comments="#")
    return rows[:, 0], rows[:, 1:].reshape(-1, 4, 4)


def decode(data: Path, stamp_s: float) -> tuple[np.ndarray, np.ndarray]:
    index = round(stamp_s * 30)
    rgb = np.asarray(Image.open(data / "rgb" / f"{index:06d}.jpg").convert("RGB"))
    depth = np.asarray(Image.open(data / "depth" / f"{index:06d}.png")).astype(np.uint16)
    return rgb, depth


def main() -> None:
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # torch is not needed by the core
        pass
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--encoder", choices=ENCODERS, default="colour_stats",
                    help="the model's patch encoder (none: raw patch colours, no model)")
    args = ap.parse_args()
    stamps, poses = load_poses(args.data)
    n = min(args.frames, len(stamps))

    # every frame a keyframe: the policy would otherwise skip most of a 15 Hz sequence
    cfg = IngestConfig(keyframe_min_interval_s=0.0, keyframe_max_interval_s=1e-6)
    ing = Ingestor(cfg, make_encoder(args.encoder))
    gravity = np.loadtxt(args.data / "gravity-direction.txt")
    objects = ObjectMap(ObjectMapConfig(gravity=tuple(gravity)))
    stages: dict[str, list[float]] = {}
    total_ms = []
    ref_ms = []
    for i in range(n):
        t0 = time.perf_counter()
        rgb, depth = decode(args.data, stamps[i])
        depth_m = depth_to_metres(depth, "16UC1")
        t1 = time.perf_counter()
        result = ing.ingest(stamps[i], rgb, depth_m, CAM, poses[i])
        t2 = time.perf_counter()
        assert result.status in ("keyframe", "reset"), result
        objects.update(stamps[i], depth_m, rgb, CAM, poses[i])  # what the Engine runs next
        t3 = time.perf_counter()
        stages.setdefault("decode", []).append((t1 - t0) * 1e3)
        for k, v in ing.timings_ms.items():
            stages.setdefault(k, []).append(v)
        stages.setdefault("object_map", []).append((t3 - t2) * 1e3)
        total_ms.append((t3 - t0) * 1e3)
        # reference: full-resolution back-projection + world transform of every pixel
        r0 = time.perf_counter()
        p_world = transform_points(poses[i], backproject(depth_m, CAM))
        ref_ms.append((time.perf_counter() - r0) * 1e3)
        del p_world

    print(f"7-Scenes RedKitchen, {n} frames 640x480, patch grid {cfg.patch_grid}, "
          f"{cfg.samples_per_patch_side}x{cfg.samples_per_patch_side} samples per patch, "
          f"every frame a keyframe, one thread, encoder {args.encoder} "
          f"({ing.feature_dim} features per patch)")
    print(f"{'stage':<12} {'median ms':>10} {'p90 ms':>8}")
    for k, v in stages.items():
        print(f"{k:<12} {np.median(v):>10.2f} {np.percentile(v, 90):>8.2f}")
    print(f"{'end-to-end':<12} {np.median(total_ms):>10.2f} {np.percentile(total_ms, 90):>8.2f}")
    print(f"reference: full-resolution numpy back-projection + transform "
          f"{np.median(ref_ms):.2f} ms median")
    moving = sum(o.is_dynamic for o in objects.objects)
    print(f"objects at the end: {len(objects.objects)}, moving {moving} (static scene: 0 "
          f"expected); counters {dict(ing.counters)}")

    # peak memory of a 30 s window: 60 keyframes at the default 0.5 s interval, 2 per second
    tracemalloc.start()
    win = Ingestor(IngestConfig(), ing.encoder)
    for k in range(60):
        i = k % n
        rgb, depth = decode(args.data, stamps[i])
        win.ingest(k * 0.5, rgb, depth_to_metres(depth, "16UC1"), CAM, poses[i])
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    t0 = time.perf_counter()
    tokens = win.buffer.tokens(2560, 0.2)
    tok_ms = (time.perf_counter() - t0) * 1e3
    print(f"30 s window: {len(win.buffer)} keyframes, buffer {win.buffer.nbytes / 2**20:.2f} MiB, "
          f"peak traced memory {peak / 2**20:.1f} MiB; tokens(): {len(tokens)} tokens in "
          f"{tok_ms:.1f} ms")
    fps = 1e3 / float(np.mean(total_ms))
    print(f"object_map_ms={np.median(stages['object_map']):.1f}")
    print(f"ingest_fps={fps:.1f}")


if __name__ == "__main__":
    main()
