"""Voxel pooling of a window's keyframes into visual tokens with torch, on the model's device
(`Buffer4D.tokens(..., device=...)`): the same tokens as the numpy path in buffer4d.py, in the
same order, by scatter reductions (`index_add_`, `scatter_reduce_`) and `torch.unique`.

Why: on a GPU machine the numpy path was most of the time to first token (one H200 run: 263 of
355 ms for LLaVA-1.5-7B with CLIP-L features, 1,024 floats a patch); the scatter reductions over
the same ~28k patches take milliseconds on a GPU. Keyframe arrays go to the device once
(`DeviceKeyframes`) and stay there while the keyframe is in the window; only the pooled tokens
come back (2,560 x 1,024 floats, ~10 MB).

Equal to the numpy path: positions, times, motion, labels, counts and the token order bit for bit
on the CPU (sums in the same order as scipy's sparse products); on CUDA the float sums are
atomic adds in any order, so means agree to float rounding, and two tokens whose sort keys
differ only by that rounding could swap places (none did on the tested windows).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from llava4d_ros.core.buffer4d import (
    EmptyBufferError,
    Keyframe,
    VisualTokens,
    flat_patches,
)

CELL_BITS = 21  # per axis in the packed voxel key, as buffer4d._groups (+-1e6 cells)


@dataclass
class _KfOnDevice:
    """One keyframe's arrays on the device: `xyz (P, 3)` float64, `rgb (P, 3)` float32,
    `features (P, D)` float32, `motion (P,)` float32, `labels (P,)` int64 (-1 unknown),
    `flat (P,)` float32 (1: a flat patch), `centre (3,)` float64 (camera centre, world)."""

    xyz: torch.Tensor
    rgb: torch.Tensor
    features: torch.Tensor
    motion: torch.Tensor
    labels: torch.Tensor
    flat: torch.Tensor
    centre: torch.Tensor


class DeviceKeyframes:
    """Keyframe arrays copied to `device` once, kept while their keyframe is in use: a question
    then uploads only the keyframes added since the last one."""

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self._held: dict[int, tuple[Keyframe, _KfOnDevice]] = {}

    def get(self, kfs: list[Keyframe]) -> list[_KfOnDevice]:
        """The device arrays of `kfs`; those of keyframes not in `kfs` are released."""
        held = {}
        for kf in kfs:
            old = self._held.get(id(kf))
            # id() of a dropped keyframe may be reused by a new one: check it is the same
            held[id(kf)] = old if old is not None and old[0] is kf else (kf, self._upload(kf))
        self._held = held
        return [held[id(kf)][1] for kf in kfs]

    def _upload(self, kf: Keyframe) -> _KfOnDevice:
        def dev(a: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
            return torch.as_tensor(np.ascontiguousarray(a)).to(self.device, dtype)

        p = kf.xyz_world.shape[0]
        labels = kf.labels if kf.labels is not None else np.full(p, -1)
        return _KfOnDevice(xyz=dev(kf.xyz_world, torch.float64), rgb=dev(kf.rgb, torch.float32),
                           features=dev(kf.features, torch.float32),
                           motion=dev(kf.motion, torch.float32),
                           labels=dev(labels, torch.int64),
                           flat=dev(flat_patches(kf), torch.float32),
                           centre=dev(kf.cam_center_world, torch.float64))


def pool_tokens(kfs: list[Keyframe], on_device: list[_KfOnDevice], token_budget: int,
                voxel_m: float, motion_threshold_m: float, look_change: float = 0.0,
                over_budget: str = "coarsen") -> VisualTokens:
    """`Buffer4D.tokens` of the keyframes `kfs` (already chosen by time, oldest first), with
    their arrays `on_device` (`DeviceKeyframes.get`); see that docstring for the rules."""
    dev = on_device[0].xyz.device
    xyz_all = torch.cat([k.xyz for k in on_device])  # (sum P, 3)
    ok = torch.isfinite(xyz_all).all(dim=1)  # (sum P,)
    valid_rows = torch.nonzero(ok).squeeze(1)
    if valid_rows.numel() == 0:
        raise EmptyBufferError(f"no valid points in the {len(kfs)} keyframes in range")
    sizes = torch.tensor([k.xyz.shape[0] for k in on_device], device=dev)
    kf_all = torch.repeat_interleave(torch.arange(len(kfs), device=dev), sizes)
    t_kf = torch.tensor([k.stamp_s for k in kfs], dtype=torch.float64, device=dev)
    xyz = xyz_all[valid_rows]  # (N, 3)
    kf_idx = kf_all[valid_rows]
    t = t_kf[kf_idx]
    rgb = torch.cat([k.rgb for k in on_device])[valid_rows]
    motion = torch.cat([k.motion for k in on_device])[valid_rows]
    labels = torch.cat([k.labels for k in on_device])[valid_rows]
    flat = torch.cat([k.flat for k in on_device])[valid_rows]
    ray = xyz - torch.stack([k.centre for k in on_device])[kf_idx]
    view = ray / _norm(ray).clamp_min(1e-9)[:, None]

    moving = motion > motion_threshold_m
    for step in range(25 if over_budget == "coarsen" else 1):
        group, in_dyn = _groups(xyz, moving, kf_idx, voxel_m * 2.0 ** (step / 2), len(kfs),
                                rgb if look_change > 0 else None, look_change)
        n = int(group.max()) + 1
        if n <= token_budget:
            break
    counts = torch.bincount(group, minlength=n)  # (n,)
    inv_c = (1.0 / counts.to(torch.float64))[:, None]
    out_xyz = _sum(group, xyz, n) * inv_c  # (n, 3) float64
    out_rgb = (_sum(group, rgb, n).to(torch.float64) * inv_c).to(torch.float32)
    out_flat = (_sum(group, flat, n).to(torch.float64) * inv_c[:, 0]).to(torch.float32)
    vsum = _sum(group, view, n)
    out_view = vsum / _norm(vsum).clamp_min(1e-9)[:, None]
    out_t = torch.full((n,), -torch.inf, dtype=torch.float64, device=dev)
    out_t.scatter_reduce_(0, group, t, reduce="amax")
    out_t0 = torch.full((n,), torch.inf, dtype=torch.float64, device=dev)
    out_t0.scatter_reduce_(0, group, t, reduce="amin")
    out_motion = torch.zeros(n, dtype=torch.float32, device=dev)
    out_motion.scatter_reduce_(0, group, motion, reduce="amax")
    out_labels = _majority(group, labels, n)

    order = _lexsort([out_xyz[:, 2], out_xyz[:, 1], out_xyz[:, 0], out_t])
    if n > token_budget and over_budget == "drop":
        dyn = torch.zeros(n, dtype=torch.bool, device=dev)
        dyn[group[in_dyn]] = True
        best = _lexsort([-out_t, -counts, (~dyn).to(torch.int64)])
        kept = torch.zeros(n, dtype=torch.bool, device=dev)
        kept[best[:token_budget]] = True
        order = order[kept[order]]
    elif n > token_budget:
        keep = np.linspace(0, n - 1, token_budget).round().astype(np.int64)
        order = order[torch.as_tensor(keep, device=dev)]
    # features: every patch row of the window, rows without depth summed into a spare group
    # n (dropped), so the (sum P, D) array is not gathered into a second copy first
    feats_all = torch.cat([k.features for k in on_device])
    g_all = torch.full((feats_all.shape[0],), n, dtype=torch.int64, device=dev)
    g_all[valid_rows] = group
    f_sum = _sum(g_all, feats_all, n + 1)[order]
    out_feats = (f_sum.to(torch.float64) * inv_c[order]).to(torch.float32)

    def host(x: torch.Tensor) -> np.ndarray:
        return x.cpu().numpy()

    return VisualTokens(
        xyz_world=host(out_xyz[order].to(torch.float32)), t_s=host(out_t[order]),
        features=host(out_feats), rgb=host(out_rgb[order]), motion=host(out_motion[order]),
        view_dir_world=host(out_view[order].to(torch.float32)),
        labels=host(out_labels[order].to(torch.int32)),
        counts=host(counts[order].to(torch.int32)), t_first_s=host(out_t0[order]),
        flat=host(out_flat[order]))


def _norm(v: torch.Tensor) -> torch.Tensor:
    """Row norms of `v (M, 3)` summed as numpy's `linalg.norm(axis=1)` sums them (x, y, z in
    turn), so the two paths round alike."""
    sq = v * v
    return torch.sqrt(sq[:, 0] + sq[:, 1] + sq[:, 2])


def _sum(group: torch.Tensor, x: torch.Tensor, n: int) -> torch.Tensor:
    """Per-group sums `(n, ...)` of the rows of `x`, added in row order (on the CPU)."""
    return torch.zeros((n, *x.shape[1:]), dtype=x.dtype, device=x.device).index_add_(0, group,
                                                                                     x)


def _groups(xyz: torch.Tensor, moving: torch.Tensor, kf_idx: torch.Tensor, voxel_m: float,
            n_kf: int, rgb: torch.Tensor | None = None, look_change: float = 0.0
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Token index (N,) of each point: its voxel; in a dynamic voxel also its keyframe; given
    `rgb`, in a still voxel the run of keyframes its look stays within `look_change` over
    (buffer4d._groups, the same packed keys, sorted uniques and colour sums). Also whether
    each point's voxel is dynamic (N,) bool."""
    lim = 2 ** (CELL_BITS - 1)
    cells = torch.floor(xyz / voxel_m).clamp(-lim, lim - 1).to(torch.int64) + lim  # (N, 3)
    key = (cells[:, 0] << 2 * CELL_BITS) | (cells[:, 1] << CELL_BITS) | cells[:, 2]
    _, vox = torch.unique(key, sorted=True, return_inverse=True)
    dyn_vox = torch.zeros(int(vox.max()) + 1, dtype=torch.bool, device=xyz.device)
    dyn_vox[vox[moving]] = True
    pairs, pair_of = torch.unique(vox * (n_kf + 1) + kf_idx, sorted=True, return_inverse=True)
    pair_vox = pairs // (n_kf + 1)
    new = torch.ones(pairs.numel(), dtype=torch.bool, device=xyz.device)
    new[1:] = (pair_vox[1:] != pair_vox[:-1]) | dyn_vox[pair_vox[1:]]
    if rgb is not None:
        n_in = torch.bincount(pair_of, minlength=pairs.numel()).to(torch.float64)
        look = _sum(pair_of, rgb.to(torch.float64), pairs.numel()) / n_in[:, None]
        _split_by_look(new, look, look_change)
    run = torch.cumsum(new.to(torch.int64), 0) - 1
    return run[pair_of], dyn_vox[vox]


def _split_by_look(new: torch.Tensor, look: torch.Tensor, look_change: float) -> None:
    """buffer4d._split_by_look on the device: runs split where the look leaves the start's."""
    idx = torch.arange(new.numel(), device=new.device)
    while True:
        run = torch.cumsum(new.to(torch.int64), 0) - 1
        start = torch.nonzero(new).squeeze(1)
        far = _norm(look - look[start[run]]) > look_change
        if not bool(far.any()):
            return
        first = torch.full((start.numel(),), new.numel(), dtype=torch.int64, device=new.device)
        first.scatter_reduce_(0, run[far], idx[far], reduce="amin")
        new[first[first < new.numel()]] = True


def _majority(group: torch.Tensor, labels: torch.Tensor, n: int) -> torch.Tensor:
    """Most frequent known label (>= 0) per group, smallest on ties, -1 if none known."""
    out = torch.full((n,), -1, dtype=torch.int64, device=group.device)
    known = labels >= 0
    if not bool(known.any()):
        return out
    span = int(labels.max()) + 1
    pairs, cnt = torch.unique(group[known] * span + labels[known], return_counts=True)
    g, lab = pairs // span, pairs % span
    # by group, then count descending, then label ascending: the first of each group wins
    order = _lexsort([lab, -cnt, g])
    g, lab = g[order], lab[order]
    first = torch.ones_like(g, dtype=torch.bool)
    first[1:] = g[1:] != g[:-1]
    out[g[first]] = lab[first]
    return out


def _lexsort(keys: list[torch.Tensor]) -> torch.Tensor:
    """`np.lexsort(keys)`: indices sorting by the last key, ties by the one before, and so on."""
    order = torch.arange(keys[0].shape[0], device=keys[0].device)
    for k in keys:
        order = order[torch.sort(k[order], stable=True).indices]
    return order
