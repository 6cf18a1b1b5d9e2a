"""Synthetic 4D scenes with exact ground truth: a room, coloured primitives, a moving camera.

The stand-in for the 4D part of Chat4D. Every quantity the model or the tracker is asked about
(where an object is at time t, when it started moving, where it is heading) is known exactly,
because the renderer ray-casts the same analytic primitives the questions are generated from.

Frames and units (ARCHITECTURE.md): world frame z up (x forward, y left); the room spans
`x in [-Lx/2, Lx/2]`, `y in [-Ly/2, Ly/2]`, `z in [0, Lz]`. The camera is in the optical
convention (x right, y down, z forward); `world_from_cam` (4, 4) maps camera points to the world.
`depth_m` is the z-depth along the optical axis (what a depth camera reports), not the ray length.

Object motion is piecewise linear between waypoints `(t_s, (x, y, z))`; two consecutive waypoints
at the same position are a pause. Before the first waypoint an object sits at the first position,
after the last one at the last position. Objects rest on the floor (`z = size_z / 2`).

Example:
    >>> scene = make_scene(7)
    >>> frame = render(scene, 2.5)
    >>> frame.rgb.shape, frame.depth_m.dtype, frame.instance.dtype
    ((240, 320, 3), dtype('float32'), dtype('int16'))
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from llava4d_ros.core.geometry import PinholeCamera
from llava4d_ros.data.palette import PALETTE
from llava4d_ros.data.vocabulary import SHAPES

#: Shading factor range applied to object colours (ambient + Lambert); palette.py relies on it.
AMBIENT = 0.6
_LIGHT_DIR_WORLD = np.array([0.3, 0.5, 1.0]) / np.linalg.norm([0.3, 0.5, 1.0])

# Static background furniture: a low cabinet against the far wall, (x0, y0, z0, x1, y1, z1).
# It is background (instance -1), low-saturation brown so it never reads as a palette colour.
_CABINET_BOUNDS = (2.25, -1.1, 0.0, 2.95, 0.7, 0.75)
_CABINET_RGB = (128.0, 104.0, 84.0)

# Clutter (`make_scene(n_clutter=...)`): static boxes that are no palette object, so a model
# learns that not every thing in view is one: gray, white, black, brown, beige (instance -1).
_CLUTTER_RGB = ((128.0, 128.0, 128.0), (225.0, 225.0, 220.0), (45.0, 45.0, 45.0),
                (120.0, 85.0, 60.0), (200.0, 185.0, 160.0))

# Where objects may be (x0, x1, y0, y1): clear of the cabinet and in view of the default cameras.
_OBJECT_AREA = (-0.9, 1.7, -1.5, 1.5)
_MIN_GAP_M = 0.1  # clearance between footprints' bounding circles at every time


def _as_vec3(v: Sequence[float], name: str) -> tuple[float, float, float]:
    a = np.asarray(v, dtype=np.float64).reshape(-1)
    if a.shape != (3,) or not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be 3 finite numbers, got {v!r}")
    return (float(a[0]), float(a[1]), float(a[2]))


@dataclass(frozen=True)
class ObjectSpec:
    """One primitive and its trajectory.

    `size_xyz` are the full extents of its world axis-aligned box: a cube (s, s, s), a sphere of
    diameter d (d, d, d), an upright cylinder of diameter d and height h (d, d, h); so `box_at`
    is exact for every shape.
    """

    object_id: int
    colour: str
    shape: str
    size_xyz: tuple[float, float, float]
    waypoints: tuple[tuple[float, tuple[float, float, float]], ...]

    def __post_init__(self) -> None:
        if self.object_id < 0 or self.object_id > np.iinfo(np.int16).max:
            raise ValueError(f"object_id must fit int16 and be >= 0, got {self.object_id}")
        if self.colour not in PALETTE:
            raise ValueError(f"colour {self.colour!r} is not in the palette {sorted(PALETTE)}")
        if self.shape not in SHAPES:
            raise ValueError(f"shape {self.shape!r} is not one of {SHAPES}")
        size = _as_vec3(self.size_xyz, "size_xyz")
        if min(size) <= 0:
            raise ValueError(f"size_xyz must be positive, got {size}")
        if self.shape in ("cube", "sphere") and not (size[0] == size[1] == size[2]):
            raise ValueError(f"a {self.shape} has equal extents, got {size}")
        if self.shape == "cylinder" and size[0] != size[1]:
            raise ValueError(f"a cylinder has equal x/y extents, got {size}")
        if not self.waypoints:
            raise ValueError("an object needs at least one waypoint")
        wps = tuple((float(t), _as_vec3(p, "waypoint")) for t, p in self.waypoints)
        times = [t for t, _ in wps]
        if any(b <= a for a, b in itertools.pairwise(times)):
            raise ValueError(f"waypoint times must increase strictly, got {times}")
        object.__setattr__(self, "size_xyz", size)
        object.__setattr__(self, "waypoints", wps)

    @property
    def label(self) -> str:
        """The words the instructions and the tracker use for it, e.g. "red cube"."""
        return f"{self.colour} {self.shape}"

    @functools.cached_property
    def _times(self) -> np.ndarray:
        return np.array([t for t, _ in self.waypoints])  # (K,)

    @functools.cached_property
    def _points(self) -> np.ndarray:
        return np.array([p for _, p in self.waypoints])  # (K, 3)

    def _segment(self, t_s: float) -> int | None:
        """Index i of the segment [t_i, t_{i+1}) holding t_s, None outside the waypoints."""
        times = self._times
        if t_s < times[0] or t_s >= times[-1]:
            return None
        return int(np.searchsorted(times, t_s, side="right") - 1)

    def center_at(self, t_s: float) -> np.ndarray:
        """Box centre (3,) in the world frame at scene time `t_s` (clamped outside waypoints)."""
        return self.centers_at(np.array([t_s]))[0]

    def centers_at(self, times_s: np.ndarray) -> np.ndarray:
        """Box centres (T, 3) at scene times `times_s` (T,)."""
        times_s = np.asarray(times_s, dtype=np.float64).reshape(-1)
        times, pts = self._times, self._points
        return np.stack([np.interp(times_s, times, pts[:, k]) for k in range(3)], axis=-1)

    def velocity_at(self, t_s: float) -> np.ndarray:
        """Velocity (3,) m/s at `t_s` (that of the segment starting at or before `t_s`)."""
        i = self._segment(t_s)
        if i is None:
            return np.zeros(3)
        return (self._points[i + 1] - self._points[i]) / (self._times[i + 1] - self._times[i])

    def box_at(self, t_s: float) -> list[float]:
        """`box6 = [cx, cy, cz, sx, sy, sz]` in the world frame at `t_s`, metres."""
        return [float(v) for v in self.center_at(t_s)] + list(self.size_xyz)

    def is_moving_at(self, t_s: float) -> bool:
        """True when `t_s` lies in a segment whose end differs from its start."""
        return bool(np.any(self.velocity_at(t_s) != 0.0))

    @property
    def moving_segments(self) -> list[tuple[float, float]]:
        """(t_start, t_end) of each segment with motion, in time order."""
        pts, times = self._points, self._times
        return [
            (float(times[i]), float(times[i + 1]))
            for i in range(len(times) - 1)
            if np.any(pts[i + 1] != pts[i])
        ]

    @property
    def is_dynamic(self) -> bool:
        return bool(self.moving_segments)

    @property
    def start_moving_s(self) -> float | None:
        """Scene time the object first starts moving; None for a static object."""
        segs = self.moving_segments
        return segs[0][0] if segs else None

    @property
    def stop_moving_s(self) -> float | None:
        """Scene time the object last stops moving; None for a static object."""
        segs = self.moving_segments
        return segs[-1][1] if segs else None


@dataclass(frozen=True)
class ClutterSpec:
    """A static box that is not a palette object: background for the questions and the labels
    (instance -1). `bounds` (x0, y0, z0, x1, y1, z1) world metres, `rgb` its albedo (0..255)."""

    bounds: tuple[float, float, float, float, float, float]
    rgb: tuple[float, float, float]

    def __post_init__(self) -> None:
        b = tuple(float(v) for v in self.bounds)
        if len(b) != 6 or not all(hi > lo for lo, hi in zip(b[:3], b[3:])):
            raise ValueError(f"bounds must be (x0, y0, z0, x1, y1, z1) with x1 > x0 ..., got {b}")
        object.__setattr__(self, "bounds", b)
        object.__setattr__(self, "rgb", _as_vec3(self.rgb, "rgb"))


@dataclass(frozen=True)
class CameraWaypoint:
    """The camera at `t_s` sits at `eye_world` (3,) and looks at `target_world` (3,)."""

    t_s: float
    eye_world: tuple[float, float, float]
    target_world: tuple[float, float, float]

    def __post_init__(self) -> None:
        eye = _as_vec3(self.eye_world, "eye_world")
        target = _as_vec3(self.target_world, "target_world")
        if np.allclose(eye, target):
            raise ValueError("eye and target coincide")
        object.__setattr__(self, "t_s", float(self.t_s))
        object.__setattr__(self, "eye_world", eye)
        object.__setattr__(self, "target_world", target)


def look_at(eye_world: np.ndarray, target_world: np.ndarray) -> np.ndarray:
    """`world_from_cam` (4, 4) of an optical camera at `eye_world` looking at `target_world`.

    Camera z is the viewing direction, x = z cross world-up (right), y = z cross x (down), so
    the image is upright (no roll). Looking straight down uses world +x as the image "up".
    """
    eye = np.asarray(eye_world, dtype=np.float64)
    z = np.asarray(target_world, dtype=np.float64) - eye
    z /= np.linalg.norm(z)
    up = np.array([0.0, 0.0, 1.0])
    if abs(float(z @ up)) > 0.999:
        up = np.array([1.0, 0.0, 0.0])
    x = np.cross(z, up)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    world_from_cam = np.eye(4)
    world_from_cam[:3, :3] = np.stack([x, y, z], axis=1)
    world_from_cam[:3, 3] = eye
    return world_from_cam


def default_camera(width: int = 320, height: int = 240) -> PinholeCamera:
    """About 67 deg horizontal field of view at any resolution, square pixels, centred."""
    f = 0.75 * width
    return PinholeCamera(
        fx=f, fy=f, cx=(width - 1) / 2.0, cy=(height - 1) / 2.0, width=width, height=height
    )


@dataclass(frozen=True)
class SceneSpec:
    """A whole scene: what is in it, how it moves, how it is seen.

    `room_size` (Lx, Ly, Lz) metres, centred on the origin in x/y, floor at z = 0.
    `camera_waypoints` are interpolated with a Catmull-Rom spline (smooth, passes through each);
    one waypoint is a static camera. Frames are at `k / fps` for `k < round(duration_s * fps)`.
    """

    seed: int
    objects: tuple[ObjectSpec, ...]
    room_size: tuple[float, float, float]
    camera_waypoints: tuple[CameraWaypoint, ...]
    cam: PinholeCamera
    fps: float = 10.0
    duration_s: float = 8.0
    clutter: tuple[ClutterSpec, ...] = ()
    _by_id: dict[int, ObjectSpec] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        objects = tuple(self.objects)
        ids = [o.object_id for o in objects]
        if len(set(ids)) != len(ids):
            raise ValueError(f"object ids must be unique, got {ids}")
        colours = [o.colour for o in objects]
        if len(set(colours)) != len(colours):
            raise ValueError(f"colours must be unique in a scene, got {colours}")
        room = _as_vec3(self.room_size, "room_size")
        if min(room) <= 0:
            raise ValueError(f"room_size must be positive, got {room}")
        cams = tuple(self.camera_waypoints)
        if not cams:
            raise ValueError("the camera needs at least one waypoint")
        if any(b.t_s <= a.t_s for a, b in itertools.pairwise(cams)):
            raise ValueError("camera waypoint times must increase strictly")
        if self.fps <= 0 or self.duration_s <= 0:
            raise ValueError(f"fps and duration_s must be positive: {self.fps}, {self.duration_s}")
        object.__setattr__(self, "objects", objects)
        object.__setattr__(self, "room_size", room)
        object.__setattr__(self, "camera_waypoints", cams)
        object.__setattr__(self, "clutter", tuple(self.clutter))
        object.__setattr__(self, "_by_id", {o.object_id: o for o in objects})

    def object_by_id(self, object_id: int) -> ObjectSpec:
        return self._by_id[object_id]

    @property
    def frame_times_s(self) -> np.ndarray:
        """(T,) scene times of the frames `frames()` renders."""
        n = max(1, round(self.duration_s * self.fps))
        return np.arange(n) / self.fps

    def world_from_cam_at(self, t_s: float) -> np.ndarray:
        """Camera pose (4, 4) at scene time `t_s` (clamped to the waypoints' time span)."""
        eye, target = _camera_spline(self.camera_waypoints, t_s)
        return look_at(eye, target)

    def boxes_at(self, t_s: float) -> dict[int, list[float]]:
        """Ground truth: object_id -> box6 at `t_s`."""
        return {o.object_id: o.box_at(t_s) for o in self.objects}


def _catmull_rom(p0, p1, p2, p3, u: float) -> np.ndarray:
    u2, u3 = u * u, u * u * u
    return 0.5 * (
        2 * p1
        + (p2 - p0) * u
        + (2 * p0 - 5 * p1 + 4 * p2 - p3) * u2
        + (3 * p1 - p0 - 3 * p2 + p3) * u3
    )


def _camera_spline(wps: tuple[CameraWaypoint, ...], t_s: float) -> tuple[np.ndarray, np.ndarray]:
    eyes = np.array([w.eye_world for w in wps])
    targets = np.array([w.target_world for w in wps])
    times = np.array([w.t_s for w in wps])
    if len(wps) == 1 or t_s <= times[0]:
        return eyes[0], targets[0]
    if t_s >= times[-1]:
        return eyes[-1], targets[-1]
    i = int(np.searchsorted(times, t_s, side="right") - 1)
    u = (t_s - times[i]) / (times[i + 1] - times[i])
    idx = [max(i - 1, 0), i, i + 1, min(i + 2, len(wps) - 1)]
    return _catmull_rom(*eyes[idx], u), _catmull_rom(*targets[idx], u)


# ----------------------------------------------------------------------------- scene sampling


def _sample_object_size(rng: np.random.Generator, shape: str) -> tuple[float, float, float]:
    if shape == "cylinder":
        d = round(float(rng.uniform(0.26, 0.4)), 2)
        return (d, d, round(float(rng.uniform(0.35, 0.55)), 2))
    s = round(float(rng.uniform(0.3, 0.48)), 2)
    return (s, s, s)


def _footprint_radius(size_xyz: Sequence[float]) -> float:
    return 0.5 * float(np.hypot(size_xyz[0], size_xyz[1]))


def _sample_trajectory(
    rng: np.random.Generator, start_xy: np.ndarray, radius: float, duration_s: float
) -> list[tuple[float, tuple[float, float]]]:
    """Waypoints (t_s, (x, y)) of a move-pause-turn-move path, times on a 0.1 s grid."""
    x0, x1, y0, y1 = _OBJECT_AREA
    lo = np.array([x0 + radius, y0 + radius])
    hi = np.array([x1 - radius, y1 - radius])
    t = round(float(rng.uniform(min(0.5, 0.1 * duration_s), 0.45 * duration_s)), 1)
    pos = start_xy.copy()
    wps: list[tuple[float, tuple[float, float]]] = [(t, (float(pos[0]), float(pos[1])))]
    for leg in range(int(rng.integers(1, 4))):
        if leg > 0:  # a pause before turning
            t = round(t + float(rng.uniform(0.4, 1.2)), 1)
            if t > duration_s - 0.6:
                break
            wps.append((t, (float(pos[0]), float(pos[1]))))
        for _ in range(20):  # a heading and length that stay inside the area
            heading = float(rng.uniform(0, 2 * np.pi))
            speed = float(rng.uniform(0.3, 0.6))
            dt = round(
                float(rng.uniform(min(1.0, 0.3 * duration_s), min(2.5, 0.5 * duration_s))), 1
            )
            end = pos + speed * dt * np.array([np.cos(heading), np.sin(heading)])
            if np.all(end >= lo) and np.all(end <= hi):
                break
        else:
            break
        if t + dt > duration_s - 0.1:
            break
        t = round(t + dt, 1)
        pos = np.round(end, 3)
        wps.append((t, (float(pos[0]), float(pos[1]))))
    return wps


def _paths_clear(a: ObjectSpec, b: ObjectSpec, times: np.ndarray) -> bool:
    gap = _footprint_radius(a.size_xyz) + _footprint_radius(b.size_xyz) + _MIN_GAP_M
    dist = np.linalg.norm(a.centers_at(times)[:, :2] - b.centers_at(times)[:, :2], axis=1)
    return bool(np.all(dist >= gap))


def _sample_camera(
    rng: np.random.Generator, duration_s: float, moving: bool
) -> tuple[CameraWaypoint, ...]:
    """An arc on the -x side of the room at radius ~2.7 m around the object area, looking in."""
    centre = np.array([0.4, 0.0])
    radius = float(rng.uniform(2.5, 2.9))
    target = np.array([0.4 + rng.uniform(-0.2, 0.2), rng.uniform(-0.2, 0.2), 0.2])
    if not moving:
        ang = np.pi + float(rng.uniform(-0.4, 0.4))
        eye = np.array([*(centre + radius * np.array([np.cos(ang), np.sin(ang)])), 1.9])
        return (CameraWaypoint(0.0, tuple(eye), tuple(target)),)
    sweep = float(rng.uniform(0.5, 0.7)) * float(rng.choice([-1.0, 1.0]))
    n = 4
    wps = []
    for k in range(n):
        ang = np.pi - sweep + 2 * sweep * k / (n - 1) + float(rng.uniform(-0.05, 0.05))
        eye = np.array(
            [*(centre + radius * np.array([np.cos(ang), np.sin(ang)])), rng.uniform(1.7, 2.1)]
        )
        tgt = target + np.array([0.0, 0.0, rng.uniform(-0.1, 0.1)])
        wps.append(CameraWaypoint(duration_s * k / (n - 1), tuple(eye), tuple(tgt)))
    return tuple(wps)


def _place_objects(
    rng: np.random.Generator,
    colours: list[str],
    shapes: list[str],
    moving_ids: set[int],
    duration_s: float,
) -> list[ObjectSpec] | None:
    """Objects with clear paths (checked every 50 ms), or None when one cannot be placed."""
    check_times = np.arange(0.0, duration_s + 0.05, 0.05)
    x0, x1, y0, y1 = _OBJECT_AREA
    objects: list[ObjectSpec] = []
    # Movers first: their paths are the hard constraint, static objects fill the gaps.
    order = sorted(range(len(colours)), key=lambda i: (i not in moving_ids, i))
    for oid in order:
        size = _sample_object_size(rng, shapes[oid])
        r = _footprint_radius(size)
        z = size[2] / 2.0
        for _ in range(100):
            start = np.round([rng.uniform(x0 + r, x1 - r), rng.uniform(y0 + r, y1 - r)], 3)
            if oid in moving_ids:
                wps_xy = _sample_trajectory(rng, start, r, duration_s)
                if len(wps_xy) < 2:
                    continue
            else:
                wps_xy = [(0.0, (float(start[0]), float(start[1])))]
            cand = ObjectSpec(
                object_id=oid,
                colour=colours[oid],
                shape=shapes[oid],
                size_xyz=size,
                waypoints=tuple((t, (x, y, z)) for t, (x, y) in wps_xy),
            )
            if all(_paths_clear(cand, o, check_times) for o in objects):
                objects.append(cand)
                break
        else:
            return None
    return sorted(objects, key=lambda o: o.object_id)


def _place_clutter(seed: int, n: int, objects: Sequence[ObjectSpec],
                   duration_s: float) -> tuple[ClutterSpec, ...]:
    """`n` static boxes on the floor of the object area, clear of every object at all times
    and of each other (best effort: a box that finds no room in 100 draws is left out)."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xC1077E]))
    times = np.arange(0.0, duration_s + 0.05, 0.05)
    paths = [(o.centers_at(times)[:, :2], _footprint_radius(o.size_xyz)) for o in objects]
    x0, x1, y0, y1 = _OBJECT_AREA
    placed: list[tuple[np.ndarray, float]] = []
    out: list[ClutterSpec] = []
    for _ in range(n):
        for _ in range(100):
            sx, sy = rng.uniform(0.15, 0.5, 2)
            sz = float(rng.uniform(0.1, 0.6))
            r = 0.5 * float(np.hypot(sx, sy))
            c = np.array([rng.uniform(x0 + r, x1 - r), rng.uniform(y0 + r, y1 - r)])
            if all(np.min(np.linalg.norm(p - c, axis=1)) >= r + pr + _MIN_GAP_M
                   for p, pr in paths + [(q[None], qr) for q, qr in placed]):
                placed.append((c, r))
                rgb = _CLUTTER_RGB[int(rng.integers(len(_CLUTTER_RGB)))]
                out.append(ClutterSpec((c[0] - sx / 2, c[1] - sy / 2, 0.0, c[0] + sx / 2,
                                        c[1] + sy / 2, sz), rgb))
                break
    return tuple(out)


def make_scene(
    seed: int,
    *,
    n_objects: int | None = None,
    max_objects: int = 6,
    n_moving: int | None = None,
    n_clutter: int = 0,
    camera_motion: str = "moving",
    width: int = 320,
    height: int = 240,
    fps: float = 10.0,
    duration_s: float = 8.0,
    room_size: tuple[float, float, float] = (6.0, 5.0, 2.8),
) -> SceneSpec:
    """A random scene, the same for the same arguments.

    `n_objects` defaults to 3..`max_objects` (6 keeps the scenes of every seed as they were; up
    to 8, the palette's size, for scenes that ask counting further), `n_moving` to
    1..min(3, n_objects); colours are drawn without replacement from the palette.
    `camera_motion` is "moving" (a smooth arc) or "static". `n_clutter` static boxes that are
    no palette object (gray, white, black, brown, beige) stand clear of every object's path;
    they draw from an rng of their own, so the objects and camera are those of `n_clutter=0`.
    """
    if camera_motion not in ("moving", "static"):
        raise ValueError(f"camera_motion must be 'moving' or 'static', got {camera_motion!r}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x4D5CE]))
    if not 3 <= max_objects <= len(PALETTE):
        raise ValueError(f"max_objects must be in 3..{len(PALETTE)}, got {max_objects}")
    if n_objects is None:
        n_objects = int(rng.integers(3, max_objects + 1))
    if not 1 <= n_objects <= len(PALETTE):
        raise ValueError(f"n_objects must be in 1..{len(PALETTE)}, got {n_objects}")
    if n_moving is None:
        n_moving = int(rng.integers(1, min(3, n_objects) + 1))
    if not 0 <= n_moving <= n_objects:
        raise ValueError(f"n_moving must be in 0..n_objects, got {n_moving}")

    colours = [str(c) for c in rng.permutation(list(PALETTE))[:n_objects]]
    shapes = [str(rng.choice(SHAPES)) for _ in range(n_objects)]
    moving_ids = {int(i) for i in rng.permutation(n_objects)[:n_moving]}

    for _ in range(50):  # a crowded draw can paint itself into a corner: redraw everything
        objects = _place_objects(rng, colours, shapes, moving_ids, duration_s)
        if objects is not None:
            break
    else:
        raise RuntimeError(f"seed {seed}: could not place {n_objects} objects without collisions")

    return SceneSpec(
        seed=int(seed),
        objects=tuple(objects),
        clutter=_place_clutter(seed, n_clutter, objects, duration_s),
        room_size=room_size,
        camera_waypoints=_sample_camera(rng, duration_s, camera_motion == "moving"),
        cam=default_camera(width, height),
        fps=fps,
        duration_s=duration_s,
    )


# ----------------------------------------------------------------------------- rendering


@dataclass(frozen=True)
class RenderedFrame:
    """One rendered view. `rgb` (H, W, 3) uint8, `depth_m` (H, W) float32 z-depth (all valid:
    the room is closed), `instance` (H, W) int16 object_id or -1, `world_from_cam` (4, 4)."""

    stamp_s: float
    rgb: np.ndarray
    depth_m: np.ndarray
    instance: np.ndarray
    world_from_cam: np.ndarray

    def __post_init__(self) -> None:
        h, w = self.depth_m.shape
        if self.rgb.shape != (h, w, 3) or self.rgb.dtype != np.uint8:
            raise ValueError(f"rgb must be ({h}, {w}, 3) uint8, got {self.rgb.shape}")
        if self.instance.shape != (h, w) or self.instance.dtype != np.int16:
            raise ValueError(f"instance must be ({h}, {w}) int16, got {self.instance.shape}")
        if self.world_from_cam.shape != (4, 4):
            raise ValueError(f"world_from_cam must be (4, 4), got {self.world_from_cam.shape}")


@functools.lru_cache(maxsize=8)
def _rays_cam(fx: float, fy: float, cx: float, cy: float, width: int, height: int) -> np.ndarray:
    """(H, W, 3) ray directions with unit z, so a hit at ray parameter t has z-depth t."""
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    rays = np.stack([(u - cx) / fx, (v - cy) / fy, np.ones_like(u)], axis=-1)
    rays.setflags(write=False)
    return rays


def _pixel_rect(
    cam: PinholeCamera, cam_from_world: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> tuple[slice, slice] | None:
    """Image rows/cols that can see the world AABB [lo, hi]; None when it is out of view.

    Conservative: the bounding rectangle of the projected corners, one pixel of margin; the whole
    image when a corner is behind the camera.
    """
    corners = (
        np.array(np.meshgrid(*zip(lo, hi, strict=True), indexing="ij")).reshape(3, -1).T
    )  # (8, 3)
    p_cam = corners @ cam_from_world[:3, :3].T + cam_from_world[:3, 3]
    w, h = int(cam.width), int(cam.height)
    if np.all(p_cam[:, 2] <= 0):
        return None
    if np.any(p_cam[:, 2] <= 1e-3):
        return slice(0, h), slice(0, w)
    u = cam.fx * p_cam[:, 0] / p_cam[:, 2] + cam.cx
    v = cam.fy * p_cam[:, 1] / p_cam[:, 2] + cam.cy
    u0, u1 = max(int(np.floor(u.min())) - 1, 0), min(int(np.ceil(u.max())) + 2, w)
    v0, v1 = max(int(np.floor(v.min())) - 1, 0), min(int(np.ceil(v.max())) + 2, h)
    if u0 >= u1 or v0 >= v1:
        return None
    return slice(v0, v1), slice(u0, u1)


def _hit_box_outside(o, d, lo, hi):
    """Entry t (N,) (inf on miss) and entry axis (N,) of rays (N, 3) from outside an AABB."""
    with np.errstate(divide="ignore", invalid="ignore"):
        inv_d = 1.0 / d
        t_lo = (lo - o) * inv_d  # (N, 3)
        t_hi = (hi - o) * inv_d
    t_near = np.fmin(t_lo, t_hi)
    t_far = np.fmax(t_lo, t_hi)
    axis = t_near.argmax(axis=1)
    t_enter = t_near.max(axis=1)
    t_exit = t_far.min(axis=1)
    hit = (t_exit >= t_enter) & (t_enter > 1e-6)
    return np.where(hit, t_enter, np.inf), axis


def _hit_sphere(o, d, c, r):
    oc = o - c
    a = np.einsum("ij,ij->i", d, d)
    b = d @ oc
    disc = b * b - a * (oc @ oc - r * r)
    with np.errstate(invalid="ignore"):
        t = (-b - np.sqrt(disc)) / a
    return np.where((disc >= 0) & (t > 1e-6), t, np.inf)


def _hit_cylinder(o, d, c, r, h):
    """Upright cylinder, axis through c's xy, z in [c_z - h/2, c_z + h/2]. Returns t, is_side."""
    ox, oy = o[0] - c[0], o[1] - c[1]
    dx, dy, dz = d[:, 0], d[:, 1], d[:, 2]
    a = dx * dx + dy * dy
    b = ox * dx + oy * dy
    disc = b * b - a * (ox * ox + oy * oy - r * r)
    z0, z1 = c[2] - h / 2, c[2] + h / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        t_side = (-b - np.sqrt(disc)) / a
        z_side = o[2] + t_side * dz
        ok = (disc >= 0) & (t_side > 1e-6) & (z_side >= z0) & (z_side <= z1)
        t_side = np.where(ok, t_side, np.inf)
        t_caps = np.full(len(d), np.inf)
        for zc in (z0, z1):
            tc = (zc - o[2]) / dz
            px, py = ox + tc * dx, oy + tc * dy
            ok = (tc > 1e-6) & (px * px + py * py <= r * r)
            t_caps = np.where(ok & (tc < t_caps), tc, t_caps)
    is_side = t_side <= t_caps
    return np.minimum(t_side, t_caps), is_side


def _lambert(normal_world: np.ndarray) -> np.ndarray:
    """Shading factor in [AMBIENT, 1] for unit normals (..., 3)."""
    return AMBIENT + (1.0 - AMBIENT) * np.clip(normal_world @ _LIGHT_DIR_WORLD, 0.0, 1.0)


def _room_albedo(p: np.ndarray, axis: np.ndarray, d_z: np.ndarray, lz: float) -> np.ndarray:
    """Colours (N, 3) of room surface points p (N, 3) hit across `axis` (N,).

    Floor: brown-gray checker, 0.5 m tiles. Walls: beige-gray with a vertical gradient and faint
    0.4 m panels. Ceiling: light gray. All low saturation, never near a palette colour.
    """
    albedo = np.empty((len(p), 3))
    floor = (axis == 2) & (d_z < 0)
    ceiling = (axis == 2) & (d_z >= 0)
    wall = axis != 2
    pf = p[floor]
    tile = (np.floor(pf[:, 0] / 0.5) + np.floor(pf[:, 1] / 0.5)) % 2
    albedo[floor] = np.where(
        tile[:, None] > 0, np.array([150.0, 140.0, 126.0]), np.array([112.0, 102.0, 92.0])
    )
    albedo[ceiling] = (205.0, 203.0, 198.0)
    pw = p[wall]
    g = np.clip(pw[:, 2] / lz, 0, 1)[:, None]
    along = np.where(axis[wall] == 0, pw[:, 1], pw[:, 0])
    base = (1 - g) * np.array([150.0, 146.0, 138.0]) + g * np.array([196.0, 192.0, 184.0])
    albedo[wall] = base - (np.floor(along / 0.4) % 2)[:, None] * 10.0
    return albedo


def render(scene: SceneSpec, t_s: float) -> RenderedFrame:
    """Ray-cast the scene at scene time `t_s` from the camera pose at that time.

    Pixel (u, v) looks along `[(u - cx) / fx, (v - cy) / fy, 1]` in the camera frame, the ray
    that `backproject` inverts, so depth and back-projection agree exactly.
    """
    cam = scene.cam
    h, w = int(cam.height), int(cam.width)
    world_from_cam = scene.world_from_cam_at(t_s)
    cam_from_world = np.linalg.inv(world_from_cam)
    rays_cam = _rays_cam(float(cam.fx), float(cam.fy), float(cam.cx), float(cam.cy), w, h)
    o = world_from_cam[:3, 3]
    d = rays_cam @ world_from_cam[:3, :3].T  # (H, W, 3) world directions; t is the z-depth

    # Room interior: every ray leaves the closed room box somewhere.
    lx, ly, lz = scene.room_size
    lo = np.array([-lx / 2, -ly / 2, 0.0])
    hi = np.array([lx / 2, ly / 2, lz])
    with np.errstate(divide="ignore", invalid="ignore"):
        t_axes = np.where(d > 0, (hi - o) / d, (lo - o) / d)  # (H, W, 3)
    t_axes = np.where(np.isfinite(t_axes) & (t_axes > 0), t_axes, np.inf)
    room_axis = t_axes.argmin(axis=2)
    depth = np.take_along_axis(t_axes, room_axis[..., None], axis=2)[..., 0]  # (H, W)
    flat_d = d.reshape(-1, 3)
    flat_axis = room_axis.reshape(-1)
    p = o + depth.reshape(-1, 1) * flat_d
    albedo = _room_albedo(p, flat_axis, flat_d[:, 2], lz).reshape(h, w, 3)
    normal = np.zeros((h * w, 3))
    rows = np.arange(h * w)
    normal[rows, flat_axis] = -np.sign(flat_d[rows, flat_axis])
    shade = _lambert(normal).reshape(h, w)
    instance = np.full((h, w), -1, dtype=np.int16)

    # (kind, lo, hi, object or None for background, albedo)
    boxes: list[tuple[str, np.ndarray, np.ndarray, ObjectSpec | None, Sequence[float]]] = []
    cab = np.asarray(_CABINET_BOUNDS)
    boxes.append(("cabinet", cab[:3], cab[3:], None, _CABINET_RGB))
    for clutter in scene.clutter:
        b = np.asarray(clutter.bounds)
        boxes.append(("cabinet", b[:3], b[3:], None, clutter.rgb))
    for obj in scene.objects:
        c = obj.center_at(t_s)
        half = np.asarray(obj.size_xyz) / 2
        boxes.append((obj.shape, c - half, c + half, obj, PALETTE[obj.colour]))

    for kind, b_lo, b_hi, obj, rgb_albedo in boxes:
        rect = _pixel_rect(cam, cam_from_world, b_lo, b_hi)
        if rect is None:
            continue
        sub_d = d[rect].reshape(-1, 3)
        c = (b_lo + b_hi) / 2
        if kind in ("cabinet", "cube"):
            t_hit, axis = _hit_box_outside(o, sub_d, b_lo, b_hi)
        elif kind == "sphere":
            t_hit = _hit_sphere(o, sub_d, c, (b_hi[0] - b_lo[0]) / 2)
        else:
            t_hit, is_side = _hit_cylinder(o, sub_d, c, (b_hi[0] - b_lo[0]) / 2, b_hi[2] - b_lo[2])
        sub_depth = depth[rect].reshape(-1)
        closer = t_hit < sub_depth
        if not np.any(closer):
            continue
        idx = np.nonzero(closer)[0]
        p_hit = o + t_hit[idx, None] * sub_d[idx]
        n = np.zeros((len(idx), 3))
        if kind in ("cabinet", "cube"):
            n[np.arange(len(idx)), axis[idx]] = -np.sign(sub_d[idx, axis[idx]])
        elif kind == "sphere":
            n = (p_hit - c) / ((b_hi[0] - b_lo[0]) / 2)
        else:
            side = is_side[idx]
            n[side, :2] = (p_hit[side, :2] - c[:2]) / ((b_hi[0] - b_lo[0]) / 2)
            n[~side, 2] = np.sign(p_hit[~side, 2] - c[2])
        sub_depth[idx] = t_hit[idx]
        sub_shade = shade[rect].reshape(-1)
        sub_shade[idx] = _lambert(n)
        sub_albedo = albedo[rect].reshape(-1, 3)
        sub_albedo[idx] = rgb_albedo
        sub_instance = instance[rect].reshape(-1)
        sub_instance[idx] = -1 if obj is None else obj.object_id
        depth[rect] = sub_depth.reshape(depth[rect].shape)
        shade[rect] = sub_shade.reshape(shade[rect].shape)
        albedo[rect] = sub_albedo.reshape(albedo[rect].shape)
        instance[rect] = sub_instance.reshape(instance[rect].shape)

    rgb = np.clip(albedo * shade[..., None] + 0.5, 0, 255).astype(np.uint8)
    return RenderedFrame(
        stamp_s=float(t_s),
        rgb=rgb,
        depth_m=depth.astype(np.float32),
        instance=instance,
        world_from_cam=world_from_cam,
    )


def frames(scene: SceneSpec) -> Iterator[RenderedFrame]:
    """Render every frame of the scene in time order (see `SceneSpec.frame_times_s`)."""
    for t_s in scene.frame_times_s:
        yield render(scene, float(t_s))


# ----------------------------------------------------------------------------- ground truth


def gt_boxes(scene: SceneSpec, t_s: float) -> dict[int, list[float]]:
    """object_id -> box6 at scene time `t_s` (the same as `scene.boxes_at`)."""
    return scene.boxes_at(t_s)


def gt_track(obj: ObjectSpec, times_s: Sequence[float]) -> np.ndarray:
    """Centres (T, 3) of `obj` at `times_s` (T,), world frame."""
    return obj.centers_at(np.asarray(times_s, dtype=np.float64))


def visible_object_ids(frame: RenderedFrame, min_pixels: int = 20) -> list[int]:
    """Ids of objects with at least `min_pixels` pixels in `frame.instance`, ascending."""
    ids, counts = np.unique(frame.instance[frame.instance >= 0], return_counts=True)
    return [int(i) for i, n in zip(ids, counts, strict=True) if n >= min_pixels]


def scene_to_dict(scene: SceneSpec) -> dict:
    """JSON-serialisable description of a scene; `scene_from_dict` rebuilds it exactly."""
    cam = scene.cam
    return {
        "seed": scene.seed,
        "room_size": list(scene.room_size),
        "fps": scene.fps,
        "duration_s": scene.duration_s,
        "cam": {k: getattr(cam, k) for k in ("fx", "fy", "cx", "cy", "width", "height")},
        "camera_waypoints": [
            {"t_s": w.t_s, "eye_world": list(w.eye_world), "target_world": list(w.target_world)}
            for w in scene.camera_waypoints
        ],
        "objects": [
            {
                "object_id": o.object_id,
                "colour": o.colour,
                "shape": o.shape,
                "size_xyz": list(o.size_xyz),
                "waypoints": [[t, list(p)] for t, p in o.waypoints],
                "start_moving_s": o.start_moving_s,
            }
            for o in scene.objects
        ],
        "clutter": [{"bounds": list(c.bounds), "rgb": list(c.rgb)} for c in scene.clutter],
    }


def scene_from_dict(d: dict) -> SceneSpec:
    """Inverse of `scene_to_dict`."""
    return SceneSpec(
        seed=int(d["seed"]),
        objects=tuple(
            ObjectSpec(
                object_id=int(o["object_id"]),
                colour=o["colour"],
                shape=o["shape"],
                size_xyz=tuple(o["size_xyz"]),
                waypoints=tuple((float(t), tuple(p)) for t, p in o["waypoints"]),
            )
            for o in d["objects"]
        ),
        room_size=tuple(d["room_size"]),
        camera_waypoints=tuple(
            CameraWaypoint(w["t_s"], tuple(w["eye_world"]), tuple(w["target_world"]))
            for w in d["camera_waypoints"]
        ),
        cam=PinholeCamera(**d["cam"]),
        fps=float(d["fps"]),
        duration_s=float(d["duration_s"]),
        clutter=tuple(ClutterSpec(tuple(c["bounds"]), tuple(c["rgb"]))
                      for c in d.get("clutter", ())),
    )
