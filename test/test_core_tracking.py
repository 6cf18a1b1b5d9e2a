"""Tracker on hand-made clusters, and the whole ingest path on synthetic scenes with exact
ground truth (llava4d_ros.data.scene): a moving object gets one track that follows it, static
objects get none."""

from __future__ import annotations

import numpy as np
import pytest

from llava4d_ros.core.colors import BASIC_COLOURS, PALETTE, UNCLEAR, describe_colour
from llava4d_ros.core.pipeline import IngestConfig, Ingestor
from llava4d_ros.core.tracking import Tracker, cluster_points


def _blob(center, n=12, spread=0.05, seed=0):
    rng = np.random.default_rng(seed)
    return np.asarray(center, float) + rng.uniform(-spread, spread, (n, 3))


def _frame(blobs, n_static=50, seed=0):
    """Patch arrays (P, 3) with `blobs` [(center, palette name or rgb)] dynamic and a static
    floor."""
    rng = np.random.default_rng(seed)
    floor = np.c_[rng.uniform(-3, 3, (n_static, 2)), np.zeros(n_static)]
    xyz = [floor] + [_blob(c, seed=seed + i) for i, (c, _) in enumerate(blobs)]
    rgb = [np.full((n_static, 3), 120.0)] + [
        np.tile(PALETTE[c] if isinstance(c, str) else c, (12, 1)) for _, c in blobs]
    dyn = [np.zeros(n_static, bool)] + [np.ones(12, bool) for _ in blobs]
    xyz.append(np.full((3, 3), np.nan))  # invalid patches never count
    rgb.append(np.zeros((3, 3)))
    dyn.append(np.ones(3, bool))
    return np.concatenate(xyz), np.concatenate(dyn), np.concatenate(rgb).astype(np.float32)


def test_track_labels_say_what_is_measured():
    """A gray, a brown, a muted olive and a red thing moving: gray, brown, "object", red."""
    colours = {"gray": (110, 112, 115), "brown": (128, 104, 84), UNCLEAR: (150, 170, 120),
               "red": PALETTE["red"]}
    tr = Tracker(min_hits=2, gate_m=0.5)
    for k in range(6):
        blobs = [([-2 + 0.3 * k, 1.5 * i - 2, 0.3], rgb) for i, rgb in enumerate(colours.values())]
        tracks = tr.update(0.5 * k, *_frame(blobs, seed=k))
    assert sorted(t.label for t in tracks) == sorted(colours)


@pytest.mark.parametrize("name", list(PALETTE))
def test_shaded_palette_colours_keep_their_names(name):
    # the renderer shades by 0.6..1.0 and patches at an edge mix in some background gray
    for shade in (0.6, 0.8, 1.0):
        for gray_share in (0.0, 0.2):
            rgb = (1 - gray_share) * shade * np.array(PALETTE[name]) + gray_share * 120.0
            assert describe_colour(rgb) == name, (shade, gray_share)


def test_gray_levels_and_unclear_colours_get_no_palette_name():
    for level in range(0, 256, 15):
        assert describe_colour([level, level, level]) in ("black", "gray", "white")
    assert describe_colour([128, 104, 84]) == "brown"  # the synthetic cabinet
    assert describe_colour([120, 200, 60]) == UNCLEAR  # lime: between yellow and green
    assert describe_colour([200, 180, 150]) == UNCLEAR  # beige: too dull to name
    rng = np.random.default_rng(0)
    assert {describe_colour(c) for c in rng.uniform(0, 255, (500, 3))} <= {*BASIC_COLOURS,
                                                                         UNCLEAR}


def test_cluster_points_separates_and_drops_small():
    xyz = np.concatenate([_blob([0, 0, 0]), _blob([2, 0, 0]), [[5.0, 5.0, 5.0]]])
    clusters = cluster_points(xyz, np.zeros_like(xyz), radius_m=0.3, min_points=3)
    assert len(clusters) == 2
    np.testing.assert_allclose(sorted(c.center[0] for c in clusters), [0, 2], atol=0.05)
    assert all(np.all(c.size <= 0.1) and np.all(c.size > 0.02) for c in clusters)


def test_two_crossing_objects_keep_ids_labels_and_velocity():
    tr = Tracker(min_hits=3, gate_m=0.5, max_missed_s=1.0)
    for k in range(12):
        t = 0.5 * k
        a = [-2 + 0.4 * t, 0.2, 0.3]  # red moves +x
        b = [2 - 0.4 * t, -0.2, 0.3]  # blue moves -x; they pass each other 0.4 m apart
        tracks = tr.update(t, *_frame([(a, "red"), (b, "blue")], seed=k))
        if k < 2:
            assert tracks == []  # tentative until 3 hits
    assert len(tracks) == 2
    by_label = {t.label: t for t in tracks}
    assert set(by_label) == {"red", "blue"}
    np.testing.assert_allclose(by_label["red"].velocity, [0.4, 0, 0], atol=0.06)
    np.testing.assert_allclose(by_label["blue"].velocity, [-0.4, 0, 0], atol=0.06)
    np.testing.assert_allclose(by_label["red"].center, [-2 + 0.4 * 5.5, 0.2, 0.3], atol=0.05)
    for track in tracks:
        xs = np.array([c[0] for _, c in track.history])
        assert len(track.history) == 12 and track.hits == 12
        assert np.all(np.diff(xs) * np.sign(track.velocity[0]) > 0)  # never swapped
        assert track.first_seen_s == 0.0 and track.last_seen_s == 5.5 and track.is_dynamic


def test_jittering_cluster_is_never_confirmed():
    tr = Tracker(min_hits=3, min_travel_m=0.15)
    rng = np.random.default_rng(3)
    for k in range(10):  # depth-edge noise: a dynamic blob that stays put, jittering
        center = np.array([1.0, 1.0, 0.5]) + rng.uniform(-0.05, 0.05, 3)
        assert tr.update(0.5 * k, *_frame([(center, "red")], seed=k)) == []
    assert len(tr.all_tracks) == 1 and tr.all_tracks[0].hits == 10


def test_brief_occlusion_keeps_id_long_one_does_not():
    tr = Tracker(min_hits=2, gate_m=0.5, max_missed_s=1.0, history_len=5)

    def pos(t):
        return [0.5 * t, 0, 0.3]

    for t in (0.0, 0.5, 1.0):
        tr.update(t, *_frame([(pos(t), "green")]))
    (before,) = tr.tracks
    tr.update(1.5, *_frame([]))  # hidden for one keyframe: coasts
    (coasting,) = tr.tracks
    assert coasting.track_id == before.track_id and not coasting.is_dynamic
    (after,) = tr.update(2.0, *_frame([(pos(2.0), "green")]))
    assert after.track_id == before.track_id and len(after.history) == 4
    for t in (2.5, 3.0, 3.5, 4.0):  # hidden for 2 s > max_missed_s: the track ends
        tr.update(t, *_frame([]))
    assert tr.tracks == []
    for t in (4.5, 5.0):
        tr.update(t, *_frame([(pos(t), "green")]))
    (new,) = tr.tracks
    assert new.track_id != before.track_id
    for t in np.arange(5.5, 9.0, 0.5):
        tr.update(t, *_frame([(pos(t), "green")]))
    assert len(tr.tracks[0].history) == 5  # bounded


def test_static_points_never_make_tracks():
    tr = Tracker(min_hits=1, min_travel_m=0.0)
    for k in range(5):
        xyz, dyn, rgb = _frame([([1, 1, 0.3], "red")], seed=k)
        assert tr.update(0.5 * k, xyz, np.zeros_like(dyn), rgb) == []


def test_time_backwards_resets_tracker():
    tr = Tracker(min_hits=1, min_travel_m=0.0)
    tr.update(5.0, *_frame([([0, 0, 0.3], "red")]))
    assert len(tr.tracks) == 1
    assert tr.update(1.0, *_frame([])) == []


# ------------------------------------------------------------------ whole path, exact scenes

scene_mod = pytest.importorskip("llava4d_ros.data.scene")


def _run_scene(seed: int, camera_motion: str):
    scene = scene_mod.make_scene(seed, n_objects=4, n_moving=1, camera_motion=camera_motion)
    ing = Ingestor(IngestConfig())
    observed: dict[int, list[tuple[float, np.ndarray, str]]] = {}
    for frame in scene_mod.frames(scene):
        result = ing.ingest(frame.stamp_s, frame.rgb, frame.depth_m, scene.cam,
                            frame.world_from_cam)
        assert result.status != "dropped", result
        for tr in ing.tracker.tracks:
            if tr.last_seen_s == frame.stamp_s:  # a fresh measurement, not a coasting one
                observed.setdefault(tr.track_id, []).append((tr.last_seen_s, tr.center,
                                                             tr.label))
    return scene, observed


# Seeds 0..9 x static/moving camera pass in 17 of 20 cases with the defaults; the misses are
# moving-camera scenes where the mover stays too small in view to be confirmed (no false track).
@pytest.mark.parametrize(("seed", "camera_motion"),
                         [(0, "static"), (1, "static"), (3, "moving"), (5, "moving")])
def test_moving_object_gets_one_track_that_follows_it(seed, camera_motion):
    scene, observed = _run_scene(seed, camera_motion)
    (mover,) = [o for o in scene.objects if o.is_dynamic]
    assert observed, f"no track for the {mover.label}"
    for track_id, obs in observed.items():
        times = np.array([t for t, _, _ in obs])
        centers = np.stack([c for _, c, _ in obs])
        errors = np.linalg.norm(centers[:, :2] - mover.centers_at(times)[:, :2], axis=1)
        # every track is the mover: positions of its visible surface, so within ~half its
        # size of the true centre; the colour word is the object's
        assert np.median(errors) < 0.25 and errors.max() < 0.4, (track_id, errors)
        assert obs[-1][2] == mover.colour
        for static in (o for o in scene.objects if not o.is_dynamic):
            d = np.linalg.norm(centers[:, :2] - static.centers_at(times)[:, :2], axis=1)
            assert np.median(d) > 0.3, f"track {track_id} sits on the static {static.label}"
    assert len(observed) == 1, f"one object, {len(observed)} track ids"
