"""What the object map says about one object, and what happened to it: the records every
consumer reads (~/tracks, ~/detections, markers, the answer policy, the memory on disk).

Frames and units: `center` is in the world frame [m]; `size` are the full extents of an upright
box along its own axes [m] (x, y along the ground, z against gravity); `world_from_box (3, 3)` is
the rotation of those axes in the world (identity in a REP 103 z-up map). Stamps are the
robot's clock [s] (sensor stamps: wall or sim time, as the node runs).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Event kinds, in the order an object's life may show them.
EVENT_KINDS = ("appeared", "started_moving", "stopped", "left_view", "disappeared")


@dataclass(frozen=True)
class MapObject:
    """A snapshot of one object of the map.

    `category` is an everyday noun ("mug", "chair") or "object" below the fitted confidence;
    `hypotheses` are (category, score) pairs, best first. `colour` is the measured colour in
    plain words ("white", "dark red"). `shape` is what the geometry reads ("cube", "sphere",
    "cylinder") or "" when unsure. `support` names the surface below it ("floor", "table",
    "counter", "shelf") or "" when nothing is below. `history` holds stamped centres, oldest
    first (moving objects: every update; static ones: when they change)."""

    object_id: int
    center: np.ndarray  # (3,) world [m]
    size: np.ndarray  # (3,) [m], along the box axes
    world_from_box: np.ndarray  # (3, 3)
    category: str
    category_confidence: float
    colour: str
    shape: str
    support: str
    first_seen_s: float
    last_seen_s: float
    is_dynamic: bool
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(3))  # (3,) world [m/s]
    hypotheses: tuple[tuple[str, float], ...] = ()
    history: tuple[tuple[float, np.ndarray], ...] = ()
    n_views: int = 1
    in_view: bool = True  # seen in the latest update
    last_moving_s: float = float("nan")  # when it was last seen moving (NaN: never)

    @property
    def noun(self) -> str:
        """Its category, else the shape the geometry reads, else "object"."""
        return self.category if self.category != "object" or not self.shape else self.shape

    @property
    def label(self) -> str:
        """What answers and markers call it: "white mug", "red cube", "brown object"."""
        return f"{self.colour} {self.noun}".strip() if self.colour else self.noun

    @property
    def box6(self) -> tuple[float, ...]:
        """`(cx, cy, cz, sx, sy, sz)`: centre in the world, extents along the box axes [m]."""
        return (*(float(v) for v in self.center), *(float(v) for v in self.size))


@dataclass(frozen=True)
class ObjectEvent:
    """Something that happened to an object at `stamp_s`: `kind` one of EVENT_KINDS;
    `center (3,)` where, in the world frame [m]."""

    stamp_s: float
    object_id: int
    kind: str
    center: np.ndarray

    def __post_init__(self) -> None:
        if self.kind not in EVENT_KINDS:
            raise ValueError(f"event kind must be one of {EVENT_KINDS}, got {self.kind!r}")
