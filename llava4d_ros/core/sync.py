"""Approximate-time matching of rgb, depth and camera_info by header stamp, without ROS.

The wheels-only ROS environment has no message_filters, and the offline replay has no ROS at
all, so matching is done here on plain integers (`stamp_ns`). A frame is emitted when one message
of each stream lies within `slop_s` of the others (max stamp - min stamp <= slop); each stream
is assumed to arrive in stamp order (true for a driver and for a bag), which is what lets a
waiting message be declared partnerless as soon as a newer message of another stream passed it.

Drop reasons (`drops`, reason -> count), each message counted once:
- `queue_overflow`: a stream's queue held more than `queue_size` unmatched messages;
- `no_partner`: another stream moved past this message's stamp + slop without a partner, or a
  match at a later stamp made it unmatchable;
- `out_of_order`: a stamp not newer than the last one of its stream, or not newer than the last
  emitted match.

Example:
    >>> sync = ApproximateTimeSync(slop_s=0.01, queue_size=5)
    >>> sync.add("rgb", 100, "c"), sync.add("info", 101, "k")
    ([], [])
    >>> [m.stamp_ns for m in sync.add("depth", 102, "d")]
    [102]
"""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass
from typing import Any

KINDS: tuple[str, ...] = ("rgb", "depth", "info")


@dataclass(frozen=True)
class Matched:
    """One synchronised frame. `stamp_ns` is the depth image's stamp: the depth is what gets
    back-projected, so its stamp is the one TF must be looked up at."""

    stamp_ns: int
    rgb: Any
    depth: Any
    info: Any


class ApproximateTimeSync:
    """Bounded per-stream queues matched by stamp within `slop_s` seconds."""

    def __init__(self, slop_s: float, queue_size: int = 10):
        if not slop_s >= 0:
            raise ValueError(f"slop_s must be >= 0, got {slop_s}")
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        self.slop_ns = round(slop_s * 1e9)
        self.queue_size = int(queue_size)
        self.drops: Counter[str] = Counter()
        self._queues: dict[str, list[tuple[int, Any]]] = {k: [] for k in KINDS}
        self._newest: dict[str, int | None] = {k: None for k in KINDS}
        self._last_match_ns: int | None = None

    def clear(self) -> None:
        """Forget queued messages and stamps (after a reset); drop counts are kept."""
        for k in KINDS:
            self._queues[k].clear()
            self._newest[k] = None
        self._last_match_ns = None

    def pending(self) -> dict[str, int]:
        """Number of queued messages per stream."""
        return {k: len(q) for k, q in self._queues.items()}

    def add(self, kind: str, stamp_ns: int, item: Any) -> list[Matched]:
        """Queue one message; returns the frames it completed (zero or one, oldest first)."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        stamp_ns = int(stamp_ns)
        newest = self._newest[kind]
        if (newest is not None and stamp_ns <= newest) or (
                self._last_match_ns is not None and stamp_ns <= self._last_match_ns):
            self.drops["out_of_order"] += 1
            return []
        self._newest[kind] = stamp_ns
        queue = self._queues[kind]
        queue.append((stamp_ns, item))
        if len(queue) > self.queue_size:
            queue.pop(0)
            self.drops["queue_overflow"] += 1

        out: list[Matched] = []
        match = self._match(kind, stamp_ns)
        if match is not None:
            out.append(match)
        self._prune_partnerless()
        return out

    def _nearest(self, kind: str, stamp_ns: int) -> int | None:
        """Index of the queued message of `kind` nearest `stamp_ns`, None if the queue is empty."""
        queue = self._queues[kind]
        if not queue:
            return None
        i = bisect.bisect_left(queue, stamp_ns, key=lambda e: e[0])
        best = [j for j in (i - 1, i) if 0 <= j < len(queue)]
        return min(best, key=lambda j: abs(queue[j][0] - stamp_ns))

    def _match(self, kind: str, stamp_ns: int) -> Matched | None:
        picks: dict[str, int] = {}
        for k in KINDS:
            if k == kind:
                picks[k] = len(self._queues[k]) - 1
                continue
            j = self._nearest(k, stamp_ns)
            if j is None or abs(self._queues[k][j][0] - stamp_ns) > self.slop_ns:
                return None
            picks[k] = j
        stamps = [self._queues[k][j][0] for k, j in picks.items()]
        if max(stamps) - min(stamps) > self.slop_ns:
            return None
        items = {k: self._queues[k][j] for k, j in picks.items()}
        for k, j in picks.items():  # everything older than the match can never be emitted now
            self.drops["no_partner"] += j
            del self._queues[k][: j + 1]
        depth_stamp = items["depth"][0]
        self._last_match_ns = max(stamps)
        return Matched(stamp_ns=depth_stamp, rgb=items["rgb"][1], depth=items["depth"][1],
                       info=items["info"][1])

    def _prune_partnerless(self) -> None:
        """Drop messages that a newer message of another stream has passed by more than slop
        while that stream has nothing queued within slop of them."""
        for k in KINDS:
            queue = self._queues[k]
            keep = []
            for stamp, item in queue:
                hopeless = False
                for k2 in KINDS:
                    newest = self._newest[k2]
                    if k2 == k or newest is None or newest <= stamp + self.slop_ns:
                        continue
                    j = self._nearest(k2, stamp)
                    if j is None or abs(self._queues[k2][j][0] - stamp) > self.slop_ns:
                        hopeless = True
                        break
                if hopeless:
                    self.drops["no_partner"] += 1
                else:
                    keep.append((stamp, item))
            queue[:] = keep
