"""Voxel pooling with torch (core/pool_torch.py, issue 32) gives the numpy path's tokens: bit
for bit and in the same order on the CPU, within float rounding on CUDA (when there is one)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from llava4d_ros.core.buffer4d import Buffer4D, EmptyBufferError, Keyframe, VisualTokens
from llava4d_ros.core.pipeline import IngestConfig, Ingestor
from llava4d_ros.data.scene import frames, make_scene

FIELDS = list(VisualTokens.__dataclass_fields__)


def random_window(seed: int, n_kf: int = 12, n_patch: int = 96, dim: int = 8) -> Buffer4D:
    """Keyframes around 300 fixed surface points (voxels are revisited), some patches without
    depth, some moving, labels on some keyframes only, and one keyframe with no depth at all."""
    rng = np.random.default_rng(seed)
    surface = rng.uniform([-1, -1, 0], [2, 2, 1.5], (300, 3))
    buf = Buffer4D(window_s=100.0, max_bytes=2**30)
    for i in range(n_kf):
        xyz = surface[rng.integers(0, 300, n_patch)] + rng.normal(0, 0.02, (n_patch, 3))
        xyz[rng.random(n_patch) < 0.15] = np.nan
        if i == 3:
            xyz[:] = np.nan
        pose = np.eye(4)
        pose[:3, 3] = rng.normal(0, 0.3, 3)
        labels = rng.integers(-1, 4, n_patch).astype(np.int32) if i % 3 else None
        buf.add(Keyframe(stamp_s=10.0 + 0.37 * i, world_from_cam=pose,
                         xyz_world=xyz.astype(np.float32),
                         rgb=rng.uniform(0, 255, (n_patch, 3)).astype(np.float32),
                         features=rng.standard_normal((n_patch, dim)).astype(np.float32),
                         depth_m=np.ones(n_patch, np.float32),
                         motion=np.where(rng.random(n_patch) < 0.1, 0.3, 0.02).astype(
                             np.float32),
                         labels=labels,
                         # flat and curved patches on some keyframes, none on the others
                         plane_rms_m=(rng.uniform(0.0, 0.002, n_patch).astype(np.float32)
                                      if i % 2 else None)))
    return buf


def assert_same(a: VisualTokens, b: VisualTokens, exact: bool = True) -> None:
    for name in FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.shape == y.shape, (name, x.dtype, y.dtype, x.shape,
                                                           y.shape)
        if exact or x.dtype.kind in "iu":
            np.testing.assert_array_equal(x, y, err_msg=name)
        else:
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("budget, voxel_m", [(10**6, 0.1), (200, 0.1), (40, 0.05), (3, 0.2)])
def test_torch_pooling_on_the_cpu_is_the_numpy_pooling_bit_for_bit(seed, budget, voxel_m):
    buf = random_window(seed)
    want = buf.tokens(budget, voxel_m)
    got = buf.tokens(budget, voxel_m, device="cpu")
    assert len(want) == min(budget, len(want)) and len(want) > 0
    assert_same(want, got)
    # a time range, and the keyframes copied earlier reused
    t0, t1 = buf.time_range()
    assert_same(buf.tokens(budget, voxel_m, t0 + 1.0, t1 - 1.0),
                buf.tokens(budget, voxel_m, t0 + 1.0, t1 - 1.0, device="cpu"))


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("look_change", [20.0, 120.0])
def test_torch_pooling_splits_still_voxels_by_look_as_numpy_does(seed, look_change):
    buf = random_window(seed)
    plain = buf.tokens(10**6, 0.1)
    want = buf.tokens(10**6, 0.1, look_change=look_change)
    assert len(want) > len(plain)  # random colours: revisited still voxels split
    assert_same(want, buf.tokens(10**6, 0.1, device="cpu", look_change=look_change))
    assert_same(buf.tokens(60, 0.1, look_change=look_change),
                buf.tokens(60, 0.1, device="cpu", look_change=look_change))
    dropped = buf.tokens(60, 0.1, look_change=look_change, over_budget="drop")
    assert len(dropped) == 60
    assert_same(dropped, buf.tokens(60, 0.1, device="cpu", look_change=look_change,
                                    over_budget="drop"))


def test_torch_pooling_of_a_synthetic_scene_is_the_numpy_pooling():
    scene = make_scene(3, n_moving=2, duration_s=4.0)
    # keyframes 0.1 s apart see a few cm of motion: a low threshold gives dynamic voxels
    ing = Ingestor(IngestConfig(motion_threshold_m=0.005))
    for f in frames(scene):
        ing.ingest(f.stamp_s, f.rgb, f.depth_m, scene.cam, f.world_from_cam, f.instance)
    buf = ing.buffer
    assert len(buf) >= 5
    for budget, voxel_m in ((2560, 0.2), (10**9, 0.1), (64, 0.2)):
        want = buf.tokens(budget, voxel_m)
        assert (want.motion > buf.motion_threshold_m).any()  # dynamic voxels are in it
        assert_same(want, buf.tokens(budget, voxel_m, device="cpu"))


def test_the_pool_device_is_the_default_and_nothing_valid_is_refused_alike():
    buf = random_window(0)
    buf.pool_on("cpu")
    assert_same(buf.tokens(100, 0.1), buf.tokens(100, 0.1, device=None))
    assert buf._on_device is not None
    buf.pool_on(None)  # another device: the copies on this one are released
    assert buf._on_device is None
    empty = Buffer4D()
    kf = random_window(1).keyframes[3]  # no valid depth
    empty.add(kf)
    for device in (None, "cpu"):
        with pytest.raises(EmptyBufferError, match="no valid points"):
            empty.tokens(10, 0.1, device=device)


def test_the_engine_pools_numpy_for_a_cpu_model():
    from llava4d_ros.engine import pool_device

    class OnDevice:
        def __init__(self, device: str):
            self.device = torch.device(device)

    assert pool_device(None) is None
    assert pool_device(OnDevice("cpu")) is None  # numpy is faster there (bench/pool.py)
    assert pool_device(OnDevice("cuda:1")) == "cuda:1"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("seed", range(2))
def test_torch_pooling_on_cuda_matches_within_float_rounding(seed):
    buf = random_window(seed, dim=64)
    for budget, voxel_m in ((10**6, 0.1), (50, 0.1)):
        assert_same(buf.tokens(budget, voxel_m), buf.tokens(budget, voxel_m, device="cuda"),
                    exact=False)
