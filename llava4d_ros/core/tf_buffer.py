"""A time-indexed transform tree, fed from /tf and /tf_static or from a bag, without tf2_ros.

Each child frame has one parent edge, either static (valid at every time) or dynamic (a sorted
series of stamped samples, kept for `cache_s` behind the edge's newest sample). A lookup walks
both frames up to their common ancestor and composes the edges at the requested stamp,
interpolating each dynamic edge between its two neighbouring samples (slerp + lerp, as tf2).
Never "latest": data fused over time must use the transform at its own stamp.

All methods take one lock: the node feeds TF from one callback group and looks it up from
another. What the tree refuses (ValueError subclasses, each naming the edge): a transform that
would close a loop (`TransformLoopError`), a dynamic transform on an edge that /tf_static holds
(`StaticEdgeError`), a quaternion whose squared norm is off 1 by more than tf2's tolerance.
Dynamic edges whose newest sample is `cache_s` older than the newest sample of the whole tree
expire (frame and all), so a flood of short-lived frames does not stay in memory; lookups walk
parent links only (no per-lookup frame set), so they stay fast with many frames.

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
# tf2 ignores a transform whose quaternion has |x^2 + y^2 + z^2 + w^2 - 1| above this
# (QUATERNION_NORMALIZATION_TOLERANCE): a sender bug, not float rounding
QUATERNION_NORM2_TOLERANCE = 1e-2
ERROR_FRAMES_LISTED = 8  # frame names an error message lists (log lines stay short)


def _fmt_ns(stamp_ns: int) -> str:
    return f"{stamp_ns / NS:.6f}s"


class TransformLoopError(ValueError):
    """A transform that would make a frame its own ancestor."""


class StaticEdgeError(ValueError):
    """A dynamic transform for a child frame whose parent edge /tf_static holds."""


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
    # parent_from_child (4, 4) each, or its (translation (3,), quat_xyzw (4,)) until first
    # used: most samples are never looked up, and building the matrix (scipy) cost most of
    # set_transform under a flood of transforms
    poses: list[np.ndarray | tuple[np.ndarray, np.ndarray]] = field(default_factory=list)

    def pose(self, i: int) -> np.ndarray:
        p = self.poses[i]
        if isinstance(p, tuple):
            p = self.poses[i] = se3(*p)
        return p

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
            return self.pose(i)
        t0, t1 = stamps[i - 1], stamps[i]
        return interpolate_pose(self.pose(i - 1), self.pose(i), (stamp_ns - t0) / (t1 - t0))


class TransformBuffer:
    """Static and dynamic transforms by frame name; `lookup` gives `target_from_source`."""

    def __init__(self, cache_s: float = 10.0):
        if not cache_s > 0:
            raise ValueError(f"cache_s must be > 0, got {cache_s}")
        self.cache_ns = round(cache_s * NS)
        self._edges: dict[str, _Edge] = {}  # child -> edge to its parent
        self._parent_refs: dict[str, int] = {}  # frame -> number of edges naming it as parent
        self._newest_ns: int | None = None  # newest dynamic sample of the whole tree
        self._expired_upto_ns: int | None = None  # newest_ns at the last expiry sweep
        self._lock = threading.RLock()

    @property
    def frames(self) -> set[str]:
        with self._lock:
            return set(self._edges) | set(self._parent_refs)

    def __len__(self) -> int:
        """Number of edges (child frames) held."""
        with self._lock:
            return len(self._edges)

    def _known(self, frame: str) -> bool:
        return frame in self._edges or frame in self._parent_refs

    def _put_edge(self, child: str, edge: _Edge) -> None:
        self._drop_edge(child)
        self._edges[child] = edge
        self._parent_refs[edge.parent] = self._parent_refs.get(edge.parent, 0) + 1

    def _drop_edge(self, child: str) -> None:
        edge = self._edges.pop(child, None)
        if edge is None:
            return
        left = self._parent_refs[edge.parent] - 1
        if left:
            self._parent_refs[edge.parent] = left
        else:
            del self._parent_refs[edge.parent]

    def set_transform(self, parent: str, child: str, stamp_ns: int,
                      translation: Sequence[float], quat_xyzw: Sequence[float],
                      is_static: bool) -> None:
        """Add `parent_from_child` at `stamp_ns` (a geometry_msgs/TransformStamped's content).

        A child gets one parent; a transform naming a new parent replaces the old edge (tf2
        does the same when a tree is re-parented), and a static one replaces a dynamic one.
        Refused (ValueError naming the edge): a loop, a dynamic transform on a static edge, a
        quaternion far from unit norm.
        """
        if not parent or not child or parent == child:
            raise ValueError(f"need two different non-empty frame names, got {parent!r}, "
                             f"{child!r}")
        t = np.asarray(translation, dtype=np.float64).reshape(-1)
        q = np.asarray(quat_xyzw, dtype=np.float64).reshape(-1)
        if t.shape != (3,) or q.shape != (4,) or not (np.all(np.isfinite(t))
                                                      and np.all(np.isfinite(q))):
            raise ValueError(f"{parent} -> {child}: need a finite translation (3,) and "
                             f"quaternion (4,), got {_short(t.tolist())}, {_short(q.tolist())}")
        with np.errstate(over="ignore"):
            norm2 = float(q @ q)
        if not abs(norm2 - 1.0) <= QUATERNION_NORM2_TOLERANCE:
            raise ValueError(f"{parent} -> {child}: quaternion {_short(q.tolist())} has "
                             f"squared norm {norm2:.3g}, not 1 (tf2 ignores it too)")
        pose = (t, q)  # made a matrix when first looked up (_Edge.pose)
        stamp_ns = int(stamp_ns)
        with self._lock:
            edge = self._edges.get(child)
            if edge is not None and edge.static is not None and not is_static:
                raise StaticEdgeError(
                    f"dynamic transform {parent} -> {child} refused: /tf_static holds "
                    f"{edge.parent} -> {child}; a frame has one parent, publish it on one topic")
            if edge is None or edge.parent != parent:
                self._check_no_loop(parent, child)
            if (edge is None or edge.parent != parent
                    or (edge.static is not None) != bool(is_static)):
                edge = _Edge(parent=parent)
                self._put_edge(child, edge)
            if is_static:
                edge.static = se3(t, q)
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
            if self._newest_ns is None or stamp_ns > self._newest_ns:
                self._newest_ns = stamp_ns
                self._expire()

    def _check_no_loop(self, parent: str, child: str) -> None:
        """Refuse `parent -> child` when `child` is already an ancestor of `parent`."""
        frame = parent
        for _ in range(len(self._edges) + 1):
            if frame == child:
                raise TransformLoopError(
                    f"transform {parent} -> {child} refused: {child} is already an ancestor "
                    f"of {parent}, so the tree would have a loop")
            edge = self._edges.get(frame)
            if edge is None:
                return
            frame = edge.parent

    def _expire(self) -> None:
        """Drop dynamic edges with no sample within `cache_s` of the tree's newest sample.
        Swept once per tenth of the cache time (in data time), so the cost per transform
        stays small however many frames there are."""
        newest = self._newest_ns
        if (self._expired_upto_ns is not None
                and newest - self._expired_upto_ns < self.cache_ns // 10):
            return
        self._expired_upto_ns = newest
        old = [c for c, e in self._edges.items()
               if e.static is None and e.stamps and e.stamps[-1] < newest - self.cache_ns]
        for child in old:
            self._drop_edge(child)

    def clear(self) -> None:
        with self._lock:
            self._edges.clear()
            self._parent_refs.clear()
            self._newest_ns = self._expired_upto_ns = None

    def clear_dynamic(self) -> None:
        """Forget dynamic transforms, keep static ones (a bag restarting re-sends only /tf)."""
        self.drop_dynamic_outside(0, -1)

    def drop_dynamic_outside(self, lo_ns: int | None, hi_ns: int | None) -> int:
        """Forget dynamic samples stamped before `lo_ns` or after `hi_ns` (None: no bound on
        that side); edges left with no sample go. Static edges stay. Returns how many samples
        went."""
        lo = -2**63 if lo_ns is None else lo_ns
        hi = 2**63 if hi_ns is None else hi_ns
        dropped = 0
        with self._lock:
            for child, edge in list(self._edges.items()):
                if edge.static is not None:
                    continue
                keep = [i for i, t in enumerate(edge.stamps) if lo <= t <= hi]
                dropped += len(edge.stamps) - len(keep)
                if not keep:
                    self._drop_edge(child)
                    continue
                edge.stamps = [edge.stamps[i] for i in keep]
                edge.poses = [edge.poses[i] for i in keep]
            stamps = [e.stamps[-1] for e in self._edges.values() if e.static is None]
            self._newest_ns = max(stamps) if stamps else None
            self._expired_upto_ns = None
        return dropped

    def _chain(self, frame: str) -> list[str]:
        """`[frame, parent, grandparent, ..., root]`."""
        chain = [frame]
        seen = {frame}
        while chain[-1] in self._edges:
            parent = self._edges[chain[-1]].parent
            if parent in seen:  # set_transform refuses loops; kept as a guard
                raise TransformError(f"transform tree has a loop through {parent!r}")
            chain.append(parent)
            seen.add(parent)
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
            for name in (target, source):
                if not self._known(name):
                    n = len(self._edges) + len(self._parent_refs)
                    some = sorted(self._parent_refs)[:ERROR_FRAMES_LISTED]
                    raise UnknownFrameError(
                        f"frame {name!r} is unknown (looking up {target} <- {source} at "
                        f"{_fmt_ns(stamp_ns)}; {len(self._edges)} edges, parents include "
                        f"{some}{' ...' if n > len(some) else ''})")
            if target == source:
                return np.eye(4)
            up_source = self._chain(source)
            up_target = self._chain(target)
            in_target = set(up_target)
            common = next((f for f in up_source if f in in_target), None)
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


def _short(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:.3g}" for v in values) + "]"
