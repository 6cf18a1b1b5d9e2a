"""A time-indexed transform tree, fed from /tf and /tf_static or from a bag, without tf2_ros.

Each child frame has one parent edge, either static (valid at every time) or dynamic (a sorted
series of stamped samples, kept for `cache_s` behind the edge's newest sample). A lookup walks
both frames up to their common ancestor and composes the edges at the requested stamp,
interpolating each dynamic edge between its two neighbouring samples (slerp + lerp, as tf2).
Never "latest": data fused over time must use the transform at its own stamp.

All methods take one lock: the node feeds TF from one callback group and looks it up from
another.

Example:
    >>> tf = TransformBuffer(cache_s=10.0)
    >>> tf.set_transform("map", "base", 0, (0, 0, 0), (0, 0, 0, 1), is_static=False)
    >>> tf.set_transform("map", "base", 10**9, (2, 0, 0), (0, 0, 0, 1), is_static=False)
    >>> tf.set_transform("base", "cam", 0, (0, 0, 1), (0, 0, 0, 1), is_static=True)
    >>> tf.lookup("map", "cam", 5 * 10**8)[:3, 3].tolist()
    [1.0, 0.0, 1.0]
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from llava4d_ros.core.geometry import interpolate_pose, invert_se3, se3

NS = 1_000_000_000


def _fmt_ns(stamp_ns: int) -> str:
    return f"{stamp_ns / NS:.6f}s"


class TransformError(LookupError):
    """No transform can be given for this lookup."""


class UnknownFrameError(TransformError):
    """A frame name that no transform has mentioned."""


class DisconnectedError(TransformError):
    """Both frames are known but live in trees with no common ancestor."""


class ExtrapolationError(TransformError):
    """The stamp is outside the samples of an edge on the path.

    `is_future` says the data is newer than the edge's newest sample: waiting may help (the TF
    message may still be on its way); otherwise the stamp is older than the cache holds.
    """

    def __init__(self, message: str, *, is_future: bool, parent: str, child: str,
                 stamp_ns: int, oldest_ns: int, newest_ns: int):
        super().__init__(message)
        self.is_future = is_future
        self.parent = parent
        self.child = child
        self.stamp_ns = stamp_ns
        self.oldest_ns = oldest_ns
        self.newest_ns = newest_ns


@dataclass
class _Edge:
    parent: str
    static: np.ndarray | None = None  # parent_from_child (4, 4) when static
    stamps: list[int] = field(default_factory=list)  # sorted, dynamic only
    poses: list[np.ndarray] = field(default_factory=list)  # parent_from_child (4, 4) each

    def at(self, child: str, stamp_ns: int) -> np.ndarray:
        if self.static is not None:
            return self.static
        stamps = self.stamps
        if stamp_ns > stamps[-1] or stamp_ns < stamps[0]:
            future = stamp_ns > stamps[-1]
            what = (f"{_fmt_ns(stamp_ns - stamps[-1])} after the newest sample" if future else
                    f"{_fmt_ns(stamps[0] - stamp_ns)} before the oldest sample kept")
            raise ExtrapolationError(
                f"lookup of {self.parent} <- {child} at {_fmt_ns(stamp_ns)} would extrapolate "
                f"{what} (samples cover {_fmt_ns(stamps[0])} .. {_fmt_ns(stamps[-1])})",
                is_future=future, parent=self.parent, child=child, stamp_ns=stamp_ns,
                oldest_ns=stamps[0], newest_ns=stamps[-1])
        i = bisect.bisect_left(stamps, stamp_ns)
        if stamps[i] == stamp_ns:
            return self.poses[i]
        t0, t1 = stamps[i - 1], stamps[i]
        return interpolate_pose(self.poses[i - 1], self.poses[i], (stamp_ns - t0) / (t1 - t0))


class TransformBuffer:
    """Static and dynamic transforms by frame name; `lookup` gives `target_from_source`."""

    def __init__(self, cache_s: float = 10.0):
        if not cache_s > 0:
            raise ValueError(f"cache_s must be > 0, got {cache_s}")
        self.cache_ns = round(cache_s * NS)
        self._edges: dict[str, _Edge] = {}  # child -> edge to its parent
        self._lock = threading.RLock()

    @property
    def frames(self) -> set[str]:
        with self._lock:
            return set(self._edges) | {e.parent for e in self._edges.values()}

    def set_transform(self, parent: str, child: str, stamp_ns: int,
                      translation: Sequence[float], quat_xyzw: Sequence[float],
                      is_static: bool) -> None:
        """Add `parent_from_child` at `stamp_ns` (a geometry_msgs/TransformStamped's content).

        A child gets one parent; a transform naming a new parent or changing static/dynamic
        replaces the old edge (tf2 does the same when a tree is re-parented).
        """
        if not parent or not child or parent == child:
            raise ValueError(f"need two different non-empty frame names, got {parent!r}, "
                             f"{child!r}")
        pose = se3(translation, quat_xyzw)
        stamp_ns = int(stamp_ns)
        with self._lock:
            edge = self._edges.get(child)
            if (edge is None or edge.parent != parent
                    or (edge.static is not None) != bool(is_static)):
                edge = _Edge(parent=parent)
                self._edges[child] = edge
            if is_static:
                edge.static = pose
                return
            i = bisect.bisect_left(edge.stamps, stamp_ns)
            if i < len(edge.stamps) and edge.stamps[i] == stamp_ns:
                edge.poses[i] = pose
            else:
                edge.stamps.insert(i, stamp_ns)
                edge.poses.insert(i, pose)
            cut = bisect.bisect_left(edge.stamps, edge.stamps[-1] - self.cache_ns)
            if cut:
                del edge.stamps[:cut]
                del edge.poses[:cut]

    def clear(self) -> None:
        with self._lock:
            self._edges.clear()

    def clear_dynamic(self) -> None:
        """Forget dynamic transforms, keep static ones (a bag restarting re-sends only /tf)."""
        with self._lock:
            self._edges = {c: e for c, e in self._edges.items() if e.static is not None}

    def _chain(self, frame: str) -> list[str]:
        """`[frame, parent, grandparent, ..., root]`."""
        chain = [frame]
        while chain[-1] in self._edges:
            parent = self._edges[chain[-1]].parent
            if parent in chain:
                raise TransformError(f"transform tree has a loop through {parent!r}")
            chain.append(parent)
        return chain

    def _up(self, chain: list[str], stamp_ns: int) -> np.ndarray:
        """`chain[-1]_from_chain[0] (4, 4)` at `stamp_ns`."""
        out = np.eye(4)
        for child in chain[:-1]:
            out = self._edges[child].at(child, stamp_ns) @ out
        return out

    def lookup(self, target: str, source: str, stamp_ns: int) -> np.ndarray:
        """`target_from_source (4, 4)` at `stamp_ns`: maps points in `source` into `target`."""
        stamp_ns = int(stamp_ns)
        with self._lock:
            known = self.frames
            for name in (target, source):
                if name not in known:
                    raise UnknownFrameError(
                        f"frame {name!r} is unknown (looking up {target} <- {source} at "
                        f"{_fmt_ns(stamp_ns)}; known frames: {sorted(known)})")
            if target == source:
                return np.eye(4)
            up_source = self._chain(source)
            up_target = self._chain(target)
            common = next((f for f in up_source if f in set(up_target)), None)
            if common is None:
                raise DisconnectedError(
                    f"frames {target!r} and {source!r} are not connected (roots "
                    f"{up_target[-1]!r} and {up_source[-1]!r}) at {_fmt_ns(stamp_ns)}")
            anc_from_source = self._up(up_source[: up_source.index(common) + 1], stamp_ns)
            anc_from_target = self._up(up_target[: up_target.index(common) + 1], stamp_ns)
            return invert_se3(anc_from_target) @ anc_from_source

    def can_transform(self, target: str, source: str, stamp_ns: int) -> bool:
        try:
            self.lookup(target, source, stamp_ns)
        except TransformError:
            return False
        return True
