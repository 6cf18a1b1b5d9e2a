#!/usr/bin/env python3
"""Re-check test/data/kitchen_objects.yaml against the 7-Scenes RedKitchen frames 0-298.

Back-projects every recorded pick (median depth in a 5x5 window, depth K, the frame's
T_world_camera pose) and compares the per-frame means with the stored ones, then measures
the floor and table-top normals to check gravity-direction.txt. Frames >= 300 are held out
and are never opened.

    python scripts/label_kitchen.py [--data DIR] [--labels FILE]
"""

import argparse
import itertools
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
FX = FY = 585.0
CX, CY = 320.0, 240.0
LAST_FRAME = 298  # frames 300.. are held out


class Kitchen:
    def __init__(self, data: Path):
        self.data = data
        rows = np.loadtxt(data / "poses_T_world_camera_4x4.txt")
        self.poses = {round(t * 30): r.reshape(4, 4) for t, r in zip(rows[:, 0], rows[:, 1:])}

    def depth(self, frame: int) -> np.ndarray:
        if frame > LAST_FRAME:
            raise ValueError(f"frame {frame} is held out (only 0..{LAST_FRAME} may be used)")
        d = np.asarray(Image.open(self.data / "depth" / f"{frame:06d}.png"), dtype=np.float64)
        d[(d == 0) | (d == 65535)] = np.nan
        return d / 1000.0

    def backproject(self, frame: int, u: int, v: int, half: int = 2) -> np.ndarray:
        z = np.nanmedian(self.depth(frame)[v - half : v + half + 1, u - half : u + half + 1])
        p = np.array([(u - CX) / FX * z, (v - CY) / FY * z, z])
        t = self.poses[frame]
        return t[:3, :3] @ p + t[:3, 3]

    def cloud(self, frame: int, step: int = 2) -> np.ndarray:
        d = self.depth(frame)[::step, ::step]
        v, u = np.mgrid[0:480:step, 0:640:step]
        p = np.stack([(u - CX) / FX * d, (v - CY) / FY * d, d], -1).reshape(-1, 3)
        p = p[~np.isnan(p).any(1)]
        t = self.poses[frame]
        return p @ t[:3, :3].T + t[:3, 3]


def check_picks(k: Kitchen, labels: dict) -> None:
    for obj in labels["objects"]:
        means = []
        for pick in obj["picks"]:
            pts = np.array([k.backproject(pick["frame"], u, v) for u, v in pick["pixels"]])
            m = np.nanmean(pts, 0)
            assert np.allclose(m, pick["world_mean"], atol=2e-3), (obj["id"], pick["frame"])
            means.append(m)
        spread = max(np.linalg.norm(a - b) for a, b in itertools.combinations(means, 2))
        dc = max(np.linalg.norm(m - obj["center_world"]) for m in means)
        print(
            f"{obj['id']:18s} frames {[p['frame'] for p in obj['picks']]!s:16s} "
            f"spread {spread:.3f} m  pick-mean to centre <= {dc:.2f} m"
        )


def plane_normal(k: Kitchen, frames, g: np.ndarray, offset: float, tol: float):
    pts = [p[np.abs(p @ g - offset) < tol] for p in map(k.cloud, frames)]
    q = np.concatenate(pts)
    n = np.linalg.svd(q - q.mean(0), full_matrices=False)[2][-1]
    return n if n @ g > 0 else -n, q.mean(0) @ g


def check_gravity(k: Kitchen) -> None:
    g = np.loadtxt(k.data / "gravity-direction.txt")
    g /= np.linalg.norm(g)
    # horizontal slabs found by RANSAC: floor at g.p ~ 1.49 m, table top at ~ 0.76 m
    for name, frames, off, tol in (
        ("floor", (0, 40, 80), 1.49, 0.04),
        ("table", (0, 200, 280), 0.76, 0.025),
    ):
        n, level = plane_normal(k, frames, g, off, tol)
        ang = np.degrees(np.arccos(min(1.0, n @ g)))
        print(f"{name}: normal {np.round(n, 4)}  {ang:.2f} deg from g  level g.p = {level:.3f} m")
    cam = k.poses[0][:3, 3] @ g
    print(f"camera 0 at g.p = {cam:.3f} m: g.p grows camera -> table -> floor, so g points down")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("/work/shared/data/7scenes-redkitchen"))
    ap.add_argument("--labels", type=Path, default=ROOT / "test/data/kitchen_objects.yaml")
    args = ap.parse_args()
    k = Kitchen(args.data)
    check_picks(k, yaml.safe_load(args.labels.read_text()))
    check_gravity(k)


if __name__ == "__main__":
    main()
