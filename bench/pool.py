"""Voxel pooling cost: `Buffer4D.tokens` over a full window, by feature width and where it
runs: numpy on the CPU, or torch (core/pool_torch.py) on the CPU or a CUDA device.

    python bench/pool.py [--dims 18 1024] [--keyframes 49] [--patches 576] [--repeats 7]
                         [--devices numpy cpu cuda] [--threads 1] [--model DIR]

The buffer holds `--keyframes` keyframes of `--patches` patches (24 x 24: CLIP-L at 336 px)
drawn around 4,000 fixed surface points of a 4 x 4 x 2 m room (so voxels are revisited, as in
a real window), each point with a colour of its own (so a still voxel keeps its look), 5% of
patches moving (a new colour each time), 10% without depth. Feature width 18 is the
colour-stats encoder, 1024 CLIP ViT-L/14. Prints the median ms of the node's call with the
pooling settings of `--model` (default: the shipped default; its token budget, voxel, look
change and over-budget rule: `pool_budget_ms`), of the same with the settings before the look
split (look change 0, a coarser voxel over the budget: `pool_look0_coarsen_ms`), and of
`tokens(10**9, 0.1)` (every voxel, as bench/query.py's `fill_budget` asks for before
thinning). On a torch device the keyframes are copied there once (as the node keeps them
between questions: the warm-up call), so the figure is the pooling and the copy of the tokens
back; CUDA figures are synchronised. Default devices: numpy, cpu, and cuda when torch sees one.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from llava4d_ros.core.buffer4d import Buffer4D, Keyframe
from llava4d_ros.model.checkpoint import CheckpointError, read_config
from llava4d_ros.model.shipped import model_dir
from llava4d_ros.model.spec import ModelSpec


def filled_buffer(n_kf: int, n_patch: int, dim: int, seed: int = 0) -> Buffer4D:
    rng = np.random.default_rng(seed)
    surface = np.random.default_rng(1).uniform([0, 0, 0], [4, 4, 2], (4000, 3))
    looks = np.random.default_rng(2).uniform(0, 255, (4000, 3))
    buf = Buffer4D(window_s=60.0, max_bytes=2**34)
    for i in range(n_kf):
        idx = rng.integers(0, len(surface), n_patch)
        xyz = surface[idx] + rng.normal(0, 0.01, (n_patch, 3))
        xyz[rng.random(n_patch) < 0.1] = np.nan
        moving = rng.random(n_patch) < 0.05
        rgb = np.clip(looks[idx] + rng.normal(0, 3, (n_patch, 3)), 0, 255)
        rgb[moving] = rng.uniform(0, 255, (int(moving.sum()), 3))
        pose = np.eye(4)
        pose[0, 3] = 0.01 * i
        buf.add(Keyframe(stamp_s=0.2 * i, world_from_cam=pose, xyz_world=xyz.astype(np.float32),
                         rgb=rgb.astype(np.float32),
                         features=rng.standard_normal((n_patch, dim)).astype(np.float32),
                         depth_m=np.ones(n_patch, np.float32),
                         motion=np.where(moving, 0.2, 0.0).astype(np.float32),
                         labels=rng.integers(-1, 5, n_patch).astype(np.int32)))
    return buf


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(1e3 * (time.perf_counter() - t0))
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dims", type=int, nargs="+", default=[18, 1024])
    ap.add_argument("--keyframes", type=int, default=49)
    ap.add_argument("--patches", type=int, default=576)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--devices", nargs="+", default=None,
                    help="numpy and/or torch devices (default: numpy cpu [cuda])")
    ap.add_argument("--threads", type=int, default=1, help="torch threads on the CPU")
    ap.add_argument("--model", default=None,
                    help="model directory whose pooling settings to use (default: shipped)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    try:
        spec = ModelSpec.of(read_config(model_dir(args.model)))
    except (CheckpointError, ValueError) as exc:
        ap.error(f"--model: {exc}")
    print(f"pooling of {model_dir(args.model)}: budget {spec.token_budget}, voxel "
          f"{spec.voxel_m:g} m, look_change {spec.look_change:g}, over_budget "
          f"{spec.over_budget}")
    devices = args.devices or ["numpy", "cpu", *(["cuda"] if torch.cuda.is_available() else [])]
    for dim in args.dims:
        buf = filled_buffer(args.keyframes, args.patches, dim)
        for where in devices:
            device = None if where == "numpy" else where

            def pool(budget: int, voxel_m: float, look_change: float = 0.0,
                     over_budget: str = "coarsen") -> None:
                buf.tokens(budget, voxel_m, device=device, look_change=look_change,
                           over_budget=over_budget)
                if device is not None and torch.device(device).type == "cuda":
                    torch.cuda.synchronize()

            node = median_ms(lambda: pool(spec.token_budget, spec.voxel_m, spec.look_change,
                                          spec.over_budget), args.repeats)
            before = median_ms(lambda: pool(spec.token_budget, spec.voxel_m), args.repeats)
            every = median_ms(lambda: pool(10**9, 0.1), args.repeats)
            n_node = len(buf.tokens(spec.token_budget, spec.voxel_m, look_change=spec.look_change,
                                    over_budget=spec.over_budget))
            n_before = len(buf.tokens(spec.token_budget, spec.voxel_m))
            print(f"dim={dim} keyframes={args.keyframes} patches={args.patches} pool={where} "
                  f"pool_budget_ms={node:.1f} ({n_node} tokens) pool_look0_coarsen_ms="
                  f"{before:.1f} ({n_before} tokens) pool_all_0.1m_ms={every:.1f}")

if __name__ == "__main__":
    main()
