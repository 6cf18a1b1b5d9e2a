"""Buffer4D: window, memory cap, reset on time going backwards, token pooling; motion."""

from __future__ import annotations

import numpy as np
import pytest

from llava4d_ros.core.buffer4d import Buffer4D, EmptyBufferError, Keyframe, MotionEstimator
from llava4d_ros.core.geometry import PinholeCamera, pool_patches, se3

P = 12


def _kf(stamp_s: float, xyz=None, motion=None, d: int = 4, labels=None) -> Keyframe:
    rng = np.random.default_rng(int(stamp_s * 1000))
    xyz = rng.uniform(0, 1, (P, 3)).astype(np.float32) if xyz is None else xyz
    n = xyz.shape[0]
    return Keyframe(stamp_s=stamp_s, world_from_cam=np.eye(4), xyz_world=xyz,
                    rgb=np.full((n, 3), 100, np.float32),
                    features=np.full((n, d), stamp_s, np.float32),
                    depth_m=np.ones(n, np.float32),
                    motion=np.zeros(n, np.float32) if motion is None else motion,
                    labels=labels)


def test_window_drops_old_keyframes():
    buf = Buffer4D(window_s=2.0, max_bytes=2**30)
    for k in range(10):
        assert buf.add(_kf(k * 0.5)) is False
    assert buf.time_range() == (2.5, 4.5)
    assert len(buf.keyframes) == 5


def test_memory_cap_drops_oldest_and_keeps_newest():
    one = _kf(0.0).nbytes
    buf = Buffer4D(window_s=100.0, max_bytes=3 * one)
    for k in range(7):
        buf.add(_kf(float(k)))
        assert buf.nbytes <= 3 * one
    assert [k.stamp_s for k in buf.keyframes] == [4.0, 5.0, 6.0]
    tiny = Buffer4D(window_s=100.0, max_bytes=1)
    tiny.add(_kf(0.0))
    tiny.add(_kf(1.0))
    assert [k.stamp_s for k in tiny.keyframes] == [1.0]


def test_time_backwards_resets():
    buf = Buffer4D(window_s=10.0, max_bytes=2**30)
    for k in range(4):
        buf.add(_kf(10.0 + k))
    assert buf.add(_kf(1.0)) is True
    assert buf.time_range() == (1.0, 1.0) and buf.nbytes == _kf(1.0).nbytes


def test_keyframe_checks_shapes():
    with pytest.raises(ValueError, match="rgb"):
        Keyframe(stamp_s=0.0, world_from_cam=np.eye(4), xyz_world=np.zeros((3, 3)),
                 rgb=np.zeros((2, 3)), features=np.zeros((3, 1)), depth_m=np.zeros(3),
                 motion=np.zeros(3))


def test_tokens_static_voxels_collapse_dynamic_keep_time():
    buf = Buffer4D(window_s=100.0, max_bytes=2**30, motion_threshold_m=0.1)
    static = np.array([[0.05, 0.05, 0.05], [0.06, 0.07, 0.08], [1.05, 0.05, 0.05]], np.float32)
    for k in range(5):
        mover = np.array([[2.05 + 0.3 * k, 0.05, 0.05]], np.float32)  # a new voxel each time
        xyz = np.concatenate([static, mover, [[np.nan] * 3]]).astype(np.float32)
        motion = np.array([0, 0, 0, 0.5, 0], np.float32)
        buf.add(_kf(float(k), xyz=xyz, motion=motion, labels=np.array([1, 1, 2, 3, 4])))
    tok = buf.tokens(token_budget=100, voxel_m=0.2)
    # 2 static voxels + 5 dynamic (voxel, keyframe) tokens
    assert len(tok) == 7
    is_static = tok.motion < 0.1
    assert is_static.sum() == 2 and np.all(tok.t_s[is_static] == 4.0)
    np.testing.assert_allclose(np.sort(tok.t_s[~is_static]), [0, 1, 2, 3, 4])
    assert np.all(tok.counts[is_static] == [10, 5]) or np.all(tok.counts[is_static] == [5, 10])
    first = np.argmin(np.abs(tok.xyz_world[:, 0] - 0.055) + 10 * ~is_static)
    np.testing.assert_allclose(tok.xyz_world[first], [0.055, 0.06, 0.065], atol=1e-6)
    assert tok.labels[first] == 1 and set(tok.labels[~is_static]) == {3}
    np.testing.assert_allclose(np.linalg.norm(tok.view_dir_world, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(tok.features[first], 2.0)  # mean of the stamps 0..4
    assert np.all(np.diff(tok.t_s) >= 0)
    # time range filter
    tok2 = buf.tokens(100, 0.2, t_start_s=3.0, t_end_s=3.5)
    assert set(tok2.t_s.tolist()) == {3.0}
    with pytest.raises(EmptyBufferError):
        buf.tokens(100, 0.2, t_start_s=50.0)
    with pytest.raises(EmptyBufferError):
        Buffer4D().tokens()


def test_a_token_carries_the_share_of_its_patches_that_lie_on_a_plane():
    buf = Buffer4D(window_s=100.0, max_bytes=2**30)
    xyz = np.array([[0.05, 0.05, 0.05], [0.07, 0.06, 0.05], [1.05, 0.05, 0.05]], np.float32)
    # per keyframe: a flat patch and a curved one in voxel A, a patch of unknown fit in B
    for k in range(2):
        kf = _kf(float(k), xyz=xyz)
        buf.add(Keyframe(**{**kf.__dict__,
                            "plane_rms_m": np.array([0.0004, 0.006, np.nan], np.float32)}))
    buf.add(_kf(2.0, xyz=xyz))  # a keyframe that does not say: its patches count as not flat
    tok = buf.tokens(token_budget=100, voxel_m=0.2)
    a, b = np.argmin(tok.xyz_world[:, 0]), np.argmax(tok.xyz_world[:, 0])
    assert tok.counts[a] == 6 and tok.flat[a] == pytest.approx(2 / 6)
    assert tok.counts[b] == 3 and tok.flat[b] == 0.0
    with pytest.raises(ValueError, match="plane_rms_m"):
        Keyframe(**{**kf.__dict__, "plane_rms_m": np.zeros(2, np.float32)})


def test_a_still_voxel_splits_where_its_look_changes_and_tokens_carry_their_span():
    """An object that sat in a voxel leaves and the floor is seen there (the look jumps):
    with `look_change` the voxel's keyframes before and after are two tokens, each stamped
    over its own span; without it one token mixes both, stamped with the floor's last time."""
    buf = Buffer4D(window_s=100.0, max_bytes=2**30, motion_threshold_m=0.1)
    xyz = np.array([[0.05, 0.05, 0.05], [1.05, 0.05, 0.05]], np.float32)
    for k in range(6):
        kf = _kf(float(k), xyz=xyz)
        kf.rgb[0] = (200, 20, 20) if k < 3 else (90, 90, 90)  # red object, then grey floor
        kf.rgb[1] = (100 + 5 * k, 100, 100)  # a slow drift (light) splits nothing
        buf.add(kf)
    mixed = buf.tokens(100, 0.2)
    assert len(mixed) == 2 and np.all(mixed.t_s == 5.0) and np.all(mixed.t_first_s == 0.0)
    split = buf.tokens(100, 0.2, look_change=40.0)
    assert len(split) == 3
    at0 = split.xyz_world[:, 0] < 0.5
    order = np.argsort(split.t_s[at0])
    np.testing.assert_array_equal(split.t_first_s[at0][order], [0.0, 3.0])
    np.testing.assert_array_equal(split.t_s[at0][order], [2.0, 5.0])
    np.testing.assert_allclose(split.rgb[at0][order], [[200, 20, 20], [90, 90, 90]])
    assert (split.t_first_s[~at0].tolist(), split.t_s[~at0].tolist()) == ([0.0], [5.0])
    with pytest.raises(ValueError, match="look_change"):
        buf.tokens(100, 0.2, look_change=-1.0)
    # an object sliding out over several keyframes: each step is small, the change from the
    # token's start is not
    slide = Buffer4D(window_s=100.0, max_bytes=2**30, motion_threshold_m=0.1)
    for k in range(6):
        kf = _kf(float(k), xyz=xyz[:1])
        kf.rgb[0] = (200 - 25 * k, 20 + 14 * k, 20 + 14 * k)  # 30 a step, 150 in all
        slide.add(kf)
    runs = slide.tokens(100, 0.2, look_change=40.0)
    assert runs.t_first_s.tolist() == [0.0, 2.0, 4.0] and runs.t_s.tolist() == [1.0, 3.0, 5.0]


def test_pooled_features_leave_out_patches_without_depth():
    buf = Buffer4D(window_s=100.0, max_bytes=2**30)
    xyz = np.array([[0.05, 0.05, 0.05], [0.06, 0.06, 0.06], [np.nan] * 3, [1.05, 0.05, 0.05]],
                   np.float32)
    for k in range(2):
        kf = _kf(float(k), xyz=xyz, d=3)
        # the patch without depth has features too (the encoder saw pixels there)
        feats = np.array([[1, 2, 3], [3, 4, 5], [6e4, 6e4, 6e4], [7, 8, 9]], np.float16)
        buf.add(Keyframe(stamp_s=kf.stamp_s, world_from_cam=kf.world_from_cam,
                         xyz_world=xyz, rgb=kf.rgb, features=feats + k, depth_m=kf.depth_m,
                         motion=kf.motion))
    tok = buf.tokens(token_budget=100, voxel_m=0.2)
    assert tok.features.dtype == np.float32 and len(tok) == 2
    for x, f in zip(tok.xyz_world[:, 0], tok.features):
        # means over both keyframes of the patches with depth in that voxel
        np.testing.assert_allclose(f, [2.5, 3.5, 4.5] if x < 0.5 else [7.5, 8.5, 9.5])
    # a budget of one grows the voxel until everything is one token: still no 6e4 in it
    (one,) = buf.tokens(token_budget=1, voxel_m=0.2).features
    np.testing.assert_allclose(one, [25 / 6, 31 / 6, 37 / 6], rtol=1e-6)


def test_tokens_respect_budget_deterministically():
    rng = np.random.default_rng(1)
    buf = Buffer4D(window_s=100.0, max_bytes=2**30)
    for k in range(6):
        xyz = rng.uniform(-5, 5, (500, 3)).astype(np.float32)
        motion = (rng.uniform(0, 1, 500) > 0.9).astype(np.float32)
        buf.add(_kf(float(k), xyz=xyz, motion=motion))
    full = buf.tokens(token_budget=10**6, voxel_m=0.2)
    for budget in (2000, 300, 20, 3):
        a = buf.tokens(budget, 0.2)
        b = buf.tokens(budget, 0.2)
        assert len(a) <= budget and len(a) < len(full)
        np.testing.assert_array_equal(a.xyz_world, b.xyz_world)
    assert buf.tokens(2000, 0.2).counts.sum() == 3000


def test_over_budget_drop_keeps_the_most_seen_tokens_at_the_fine_voxel():
    """With "drop", more tokens than the budget keep the voxel: the tokens of voxels where
    something moved and then those seen in the most patches stay, each as it was without a
    budget; "coarsen" merges voxels instead."""
    buf = Buffer4D(window_s=100.0, max_bytes=2**30, motion_threshold_m=0.1)
    still = np.array([[0.05, 0.05, 0.05], [0.06, 0.06, 0.06], [0.07, 0.05, 0.05],  # 3 a frame
                      [0.45, 0.05, 0.05], [0.46, 0.05, 0.05],  # 2 a frame
                      [0.85, 0.05, 0.05]], np.float32)  # 1 a frame
    for k in range(3):
        xyz = still.copy()
        # a far patch that moves in the last keyframe only: one token of one patch
        xyz = np.vstack([xyz, [[2.05 + k, 0.05, 0.05]]]).astype(np.float32)
        motion = np.zeros(len(xyz), np.float32)
        motion[-1] = 0.5 if k == 2 else 0.0
        buf.add(_kf(float(k), xyz=xyz, motion=motion))
    full = buf.tokens(100, 0.2, over_budget="drop")
    assert len(full) == 6  # 3 still voxels, the far patch's 3 voxels (one per keyframe)
    assert sorted(full.counts.tolist()) == [1, 1, 1, 3, 6, 9]
    kept = buf.tokens(3, 0.2, over_budget="drop")
    assert len(kept) == 3
    # the moving voxel's, then the two most seen; the same tokens as without a budget
    assert sorted(kept.counts.tolist()) == [1, 6, 9] and kept.motion.max() == 0.5
    for x, c in zip(kept.xyz_world[:, 0], kept.counts):
        want = full.counts[np.argmin(np.abs(full.xyz_world[:, 0] - x))]
        assert c == want
    assert np.all(np.diff(kept.t_s) >= 0)  # still sorted by time
    coarse = buf.tokens(3, 0.2)
    assert len(coarse) <= 3 and coarse.counts.max() > 9  # voxels merged
    with pytest.raises(ValueError, match="over_budget"):
        buf.tokens(3, 0.2, over_budget="shrink")


CAM = PinholeCamera(fx=200.0, fy=200.0, cx=79.5, cy=59.5, width=160, height=120)


def _box_frame(cam_x: float, box_x0: float, box_x1: float):
    """A camera at world (cam_x, 0, 0) looking along +z (identity rotation) at a wall at z = 3
    with a slab [box_x0, box_x1] (all y) at z = 2 in front of it: ray-cast, then pooled."""
    u = np.arange(CAM.width)[None, :].repeat(CAM.height, 0)
    x_on_slab = cam_x + (u - CAM.cx) / CAM.fx * 2.0
    depth = np.where((x_on_slab >= box_x0) & (x_on_slab < box_x1), 2.0, 3.0).astype(np.float32)
    pose = se3([cam_x, 0, 0], [0, 0, 0, 1])
    rgb = np.zeros((CAM.height, CAM.width, 3), np.uint8)
    return pool_patches(depth, rgb, CAM, pose, (12, 16)), pose


def test_motion_flags_appeared_and_revealed_with_sign():
    est = MotionEstimator(n_refs=2)
    f0, pose0 = _box_frame(0.0, -0.6, -0.2)
    assert est.signed_change(f0.xyz_world).shape == (192, 0)
    est.update(f0, CAM, pose0)
    # static scene, camera moved sideways: parallax alone is not motion
    still, _ = _box_frame(0.05, -0.6, -0.2)
    assert np.abs(est.signed_change(still.xyz_world)[:, 0]).max() < 1e-4
    # the slab jumps right: patches where it is now appeared (+1 m), where it was revealed (-1 m)
    f1, pose1 = _box_frame(0.0, 0.3, 0.7)
    change = est.signed_change(f1.xyz_world)[:, 0].reshape(12, 16)
    slab_now = (f1.depth_m.reshape(12, 16) < 2.5)
    slab_before = (f0.depth_m.reshape(12, 16) < 2.5)
    assert slab_now.any() and slab_before.any()
    np.testing.assert_allclose(change[slab_now], 1.0, atol=1e-4)
    np.testing.assert_allclose(change[slab_before & ~slab_now], -1.0, atol=1e-4)
    np.testing.assert_allclose(change[~slab_before & ~slab_now], 0.0, atol=1e-4)
    est.update(f1, CAM, pose1)
    both = est.signed_change(f1.xyz_world)  # newest reference first
    assert both.shape == (192, 2) and np.abs(both[:, 0]).max() < 1e-4
    np.testing.assert_allclose(both[:, 1].reshape(12, 16)[slab_now], 1.0, atol=1e-4)


# ------------------------------------------------------------------ Ingestor (core/pipeline.py)

def _ingest_inputs(depth_value: float = 2.0):
    rgb = np.full((CAM.height, CAM.width, 3), 90, np.uint8)
    depth = np.full((CAM.height, CAM.width), depth_value, np.float32)
    return rgb, depth


def test_ingest_config_is_validated():
    from llava4d_ros.core.pipeline import IngestConfig

    with pytest.raises(ValueError, match="keyframe_min_interval_s"):
        IngestConfig(keyframe_min_interval_s=1.0, keyframe_max_interval_s=0.5)
    with pytest.raises(ValueError, match="patch_grid"):
        IngestConfig(patch_grid=(0, 4))
    with pytest.raises(ValueError, match="voxel_m"):
        IngestConfig(voxel_m=0.0)
    assert IngestConfig(patch_grid=[6, 8]).patch_grid == (6, 8)


def test_ingest_drops_bad_frames_with_reasons():
    from llava4d_ros.core.pipeline import IngestConfig, Ingestor

    ing = Ingestor(IngestConfig(patch_grid=(12, 16)))
    rgb, depth = _ingest_inputs()
    bad_pose = np.eye(4)
    bad_pose[0, 3] = np.nan
    skew = np.eye(4)
    skew[0, 0] = 2.0
    cases = [
        (rgb[:-1], depth, np.eye(4), "shape mismatch"),
        (rgb, np.full_like(depth, np.nan), np.eye(4), "no valid depth"),
        (rgb, depth, bad_pose, "bad pose"),
        (rgb, depth, skew, "bad pose"),
    ]
    for k, (r, d, pose, code) in enumerate(cases):
        result = ing.ingest(float(k), r, d, CAM, pose)
        assert result.status == "dropped" and result.reason.startswith(code + ":"), result
    assert ing.counters == {"shape mismatch": 1, "no valid depth": 1, "bad pose": 2}
    assert len(ing.buffer) == 0


def test_keyframe_policy_time_and_camera_motion():
    from llava4d_ros.core.pipeline import IngestConfig, Ingestor

    ing = Ingestor(IngestConfig(patch_grid=(12, 16)))
    rgb, depth = _ingest_inputs()
    still = [ing.ingest(0.1 * k, rgb, depth, CAM, np.eye(4)).status for k in range(11)]
    assert [k for k, s in enumerate(still) if s == "keyframe"] == [0, 5, 10]
    assert set(ing.timings_ms) == {"backproject", "pool", "motion", "encode", "buffer"}
    ing = Ingestor(IngestConfig(patch_grid=(12, 16)))
    moving = [ing.ingest(0.05 * k, rgb, depth, CAM, se3([0.1 * k, 0, 0], [0, 0, 0, 1])).status
              for k in range(9)]  # 2 m/s: every frame moved enough, min interval 0.1 s rules
    assert [k for k, s in enumerate(moving) if s == "keyframe"] == [0, 2, 4, 6, 8]
    assert ing.counters["skipped"] == 4


def test_time_backwards_resets_and_ingests():
    from llava4d_ros.core.pipeline import IngestConfig, Ingestor

    ing = Ingestor(IngestConfig(patch_grid=(12, 16)))
    rgb, depth = _ingest_inputs()
    for k in range(4):
        ing.ingest(10.0 + k, rgb, depth, CAM, np.eye(4))
    result = ing.ingest(2.0, rgb, depth, CAM, np.eye(4))
    assert result.status == "reset"
    assert ing.buffer.time_range() == (2.0, 2.0) and ing.counters["reset"] == 1


def test_encoder_features_and_label_pooling():
    from llava4d_ros.core.pipeline import IngestConfig, Ingestor, PatchEncoder

    class Fake:
        feature_dim = 8

        def __call__(self, rgb, grid):
            return np.ones((grid[0] * grid[1], 8), np.float32)

    assert isinstance(Fake(), PatchEncoder)
    rgb, depth = _ingest_inputs()
    labels = np.full((CAM.height, CAM.width), 3)
    labels[:, :80] = 7
    ing = Ingestor(IngestConfig(patch_grid=(12, 16)), encoder=Fake())
    ing.ingest(0.0, rgb, depth, CAM, np.eye(4), labels=labels)
    kf = ing.buffer.keyframes[-1]
    assert kf.features.shape == (192, 8)
    assert (kf.labels.reshape(12, 16)[:, :8] == 7).all()
    assert (kf.labels.reshape(12, 16)[:, 8:] == 3).all()
    plain = Ingestor(IngestConfig(patch_grid=(12, 16)))
    plain.ingest(0.0, rgb, depth, CAM, np.eye(4))
    np.testing.assert_allclose(plain.buffer.keyframes[-1].features, 90 / 255, rtol=1e-6)
    assert plain.buffer.keyframes[-1].labels is None
