"""Tracks of moving things in the world frame, with ids that persist over brief occlusions.

Input per keyframe: the patch points `xyz_world (P, 3)` and a `dynamic (P,)` mask (the
pipeline marks patches where something appeared in front of what the previous keyframe saw).
Static structure is never tracked. Dynamic points are clustered (radius graph with a KD-tree,
connected components), clusters are matched to the tracks' constant-velocity predictions with
the Hungarian method inside a distance gate, unmatched clusters start tentative tracks, and a
track is reported once it has `min_hits` matches (a single keyframe of depth noise at an edge
never becomes a track) and has travelled (see `Tracker._confirm`). A track that is not matched
coasts on its velocity for up to `max_missed_s`, so an object passing behind another keeps its id.

Positions are those of the visible patch points (a box's visible faces, not its hidden
centre), so a track's centre is biased towards the camera by up to half the object's depth.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from llava4d_ros.core.colors import describe_colour


@dataclass(frozen=True)
class Track:
    """A snapshot of one track. `center`, `size` (full extents, world axes), `velocity` (m/s)
    are (3,) in the world frame; `history` is `[(stamp_s, center (3,)), ...]`, oldest first.

    `is_dynamic` is True while the object is seen moving (matched in the latest update with a
    speed above the tracker's `min_speed_mps`); a track coasting through an occlusion or
    slowing to a stop reports False until it moves again or expires.
    """

    track_id: int
    label: str
    center: np.ndarray
    size: np.ndarray
    velocity: np.ndarray
    first_seen_s: float
    last_seen_s: float
    history: list[tuple[float, np.ndarray]]
    is_dynamic: bool
    hits: int


@dataclass(frozen=True)
class Cluster:
    """Dynamic patch points that belong together: `center (3,)`, `size (3,)`, `rgb (3,)`."""

    center: np.ndarray
    size: np.ndarray
    rgb: np.ndarray
    n_points: int


@dataclass
class _State:
    track_id: int
    center: np.ndarray
    size: np.ndarray
    velocity: np.ndarray
    rgb_sum: np.ndarray
    first_seen_s: float
    last_seen_s: float
    history: deque
    hits: int = 1
    matched_now: bool = True
    weight: float = 0.0
    confirmed: bool = False


def cluster_points(xyz: np.ndarray, rgb: np.ndarray, radius_m: float,
                   min_points: int) -> list[Cluster]:
    """Connected components of `xyz (N, 3)` linked within `radius_m`; smaller than
    `min_points` are dropped. Centre = median, size = 10..90th percentile extents when there
    are 10 points or more (min..max below), so a stray edge patch does not inflate the box."""
    if xyz.shape[0] < min_points:
        return []
    pairs = cKDTree(xyz).query_pairs(radius_m, output_type="ndarray")
    n = xyz.shape[0]
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    n_comp, comp = connected_components(graph, directed=False)
    out = []
    for c in range(n_comp):
        members = np.flatnonzero(comp == c)
        if members.size < min_points:
            continue
        pts = xyz[members]
        if members.size >= 10:
            lo, hi = np.percentile(pts, [10, 90], axis=0)
        else:
            lo, hi = pts.min(axis=0), pts.max(axis=0)
        out.append(Cluster(center=np.median(pts, axis=0), size=hi - lo,
                           rgb=rgb[members].mean(axis=0), n_points=int(members.size)))
    # deterministic order: biggest first, then by position
    out.sort(key=lambda c: (-c.n_points, *c.center.tolist()))
    return out


class Tracker:
    """Multi-object tracker on dynamic patch points (see the module docstring)."""

    def __init__(self, cluster_radius_m: float = 0.3, min_cluster_points: int = 3,
                 gate_m: float = 0.8, max_missed_s: float = 1.5, min_hits: int = 3,
                 history_len: int = 64, velocity_smoothing: float = 0.5,
                 min_speed_mps: float = 0.05, min_travel_m: float = 0.15,
                 min_straightness: float = 0.5):
        if not (cluster_radius_m > 0 and gate_m > 0 and max_missed_s >= 0):
            raise ValueError("cluster_radius_m, gate_m must be > 0 and max_missed_s >= 0")
        if min_cluster_points < 1 or min_hits < 1 or history_len < 1:
            raise ValueError("min_cluster_points, min_hits, history_len must be >= 1")
        if not 0 < velocity_smoothing <= 1:
            raise ValueError(f"velocity_smoothing must be in (0, 1], got {velocity_smoothing}")
        self.cluster_radius_m = float(cluster_radius_m)
        self.min_cluster_points = int(min_cluster_points)
        self.gate_m = float(gate_m)
        self.max_missed_s = float(max_missed_s)
        self.min_hits = int(min_hits)
        self.history_len = int(history_len)
        self.velocity_smoothing = float(velocity_smoothing)
        self.min_speed_mps = float(min_speed_mps)
        self.min_travel_m = float(min_travel_m)
        self.min_straightness = float(min_straightness)
        self._states: list[_State] = []
        self._next_id = 1
        self._last_stamp_s: float | None = None

    def reset(self) -> None:
        """Forget all tracks; ids keep counting up, so an id is never reused in a run."""
        self._states.clear()
        self._last_stamp_s = None

    @property
    def tracks(self) -> list[Track]:
        """Confirmed tracks, oldest id first (see `_confirm`)."""
        return [self._snapshot(s) for s in self._states if s.confirmed]

    @property
    def all_tracks(self) -> list[Track]:
        """Every live track, tentative ones included (for debugging and tests)."""
        return [self._snapshot(s) for s in self._states]

    def _snapshot(self, s: _State) -> Track:
        return Track(track_id=s.track_id, label=describe_colour(s.rgb_sum / max(s.weight, 1e-9)),
                     center=s.center.copy(), size=s.size.copy(), velocity=s.velocity.copy(),
                     first_seen_s=s.first_seen_s, last_seen_s=s.last_seen_s,
                     history=[(t, c.copy()) for t, c in s.history],
                     is_dynamic=bool(s.matched_now and np.linalg.norm(s.velocity)
                                     >= self.min_speed_mps),
                     hits=s.hits)

    def update(self, stamp_s: float, xyz_world: np.ndarray, dynamic: np.ndarray,
               rgb: np.ndarray) -> list[Track]:
        """One keyframe: `xyz_world (P, 3)` (NaN = invalid), `dynamic (P,)` bool, `rgb (P, 3)`.

        Returns the confirmed tracks after the update. A stamp older than the last one resets
        the tracker first (the pipeline resets on time going backwards anyway).
        """
        stamp_s = float(stamp_s)
        if self._last_stamp_s is not None and stamp_s < self._last_stamp_s:
            self.reset()
        xyz_world = np.asarray(xyz_world, dtype=np.float64)
        use = np.asarray(dynamic, bool) & np.isfinite(xyz_world).all(axis=1)
        clusters = cluster_points(xyz_world[use], np.asarray(rgb, np.float64)[use],
                                  self.cluster_radius_m, self.min_cluster_points)

        for s in self._states:
            s.matched_now = False
        assigned = self._assign(stamp_s, clusters)
        matched_clusters = set()
        for ti, ci in assigned:
            self._correct(self._states[ti], clusters[ci], stamp_s)
            matched_clusters.add(ci)
        for ci, c in enumerate(clusters):
            if ci not in matched_clusters:
                self._states.append(_State(
                    track_id=self._next_id, center=c.center.copy(), size=c.size.copy(),
                    velocity=np.zeros(3), rgb_sum=c.rgb * c.n_points, first_seen_s=stamp_s,
                    last_seen_s=stamp_s, history=deque([(stamp_s, c.center.copy())],
                                                       maxlen=self.history_len),
                    weight=float(c.n_points)))
                self._states[-1].confirmed = self._confirm(self._states[-1])
                self._next_id += 1
        # a tentative track must be seen in consecutive keyframes: noise at depth edges comes
        # and goes, a moving object does not
        self._states = [s for s in self._states
                        if stamp_s - s.last_seen_s <= self.max_missed_s
                        and (s.confirmed or s.last_seen_s == stamp_s)]
        self._last_stamp_s = stamp_s
        return self.tracks

    def _assign(self, stamp_s: float, clusters: list[Cluster]) -> list[tuple[int, int]]:
        if not self._states or not clusters:
            return []
        pred = np.stack([s.center + s.velocity * (stamp_s - s.last_seen_s)
                         for s in self._states])  # (T, 3)
        obs = np.stack([c.center for c in clusters])  # (C, 3)
        cost = np.linalg.norm(pred[:, None, :] - obs[None, :, :], axis=-1)  # (T, C)
        # confirmed tracks first: a tiny bias resolves ties in their favour
        bias = np.array([0.0 if s.confirmed else 1e-3 for s in self._states])
        big = 1e6
        rows, cols = linear_sum_assignment(np.where(cost <= self.gate_m, cost + bias[:, None],
                                                    big))
        return [(int(r), int(c)) for r, c in zip(rows, cols) if cost[r, c] <= self.gate_m]

    def _correct(self, s: _State, c: Cluster, stamp_s: float) -> None:
        dt = stamp_s - s.last_seen_s
        if dt > 0:
            measured = (c.center - s.center) / dt
            a = self.velocity_smoothing if s.hits > 1 else 1.0
            s.velocity = a * measured + (1.0 - a) * s.velocity
        s.center = c.center.copy()
        s.size = c.size.copy()
        s.rgb_sum = s.rgb_sum + c.rgb * c.n_points
        s.weight += c.n_points
        s.last_seen_s = stamp_s
        s.hits += 1
        s.matched_now = True
        s.history.append((stamp_s, c.center.copy()))
        if not s.confirmed:
            s.confirmed = self._confirm(s)

    def _confirm(self, s: _State) -> bool:
        """A track is reported after `min_hits` consecutive matches that went somewhere: net
        travel >= `min_travel_m` along a path at least `min_straightness` straight. Depth noise
        at edges makes clusters that stay put or jump back and forth; objects move along."""
        if s.hits < self.min_hits:
            return False
        pts = np.stack([c for _, c in s.history])  # (K, 3)
        net = float(np.linalg.norm(pts[-1] - pts[0]))
        path = float(np.linalg.norm(np.diff(pts, axis=0), axis=1).sum())
        return net >= self.min_travel_m and net >= self.min_straightness * path
