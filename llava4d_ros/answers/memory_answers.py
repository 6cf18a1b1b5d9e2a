"""Answers about the past beyond the window, from the object memory on disk (memory/): when
something was last seen, where it was at a time ("10 minutes ago", "at 14:05"), what moved or
is new since a time, how long something has stood where it is.

Stamps are the robot's clock (the sensor stamps: wall or sim time, as the node runs); a time
of day is read in the local time zone on the day of the newest stamp (the day before when that
would be in the future). A time the memory does not cover is answered with the span it covers.
Without a memory, the same questions are answered from the map's objects (the window only).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from llava4d_ros.answers.map_answers import MapAnswer, MapScene, _decline, _found, position
from llava4d_ros.answers.map_reading import Asked
from llava4d_ros.core.objects import MapObject


def clock_stamp(clock: tuple[int, int, int], now_s: float) -> float:
    """The stamp [s] of a time of day (local time) on the day of `now_s`, or the day before
    when that is later than `now_s`."""
    now = dt.datetime.fromtimestamp(now_s)
    t = now.replace(hour=clock[0], minute=clock[1], second=clock[2], microsecond=0)
    if t.timestamp() > now_s + 1.0:
        t -= dt.timedelta(days=1)
    return t.timestamp()


def clock_text(stamp_s: float) -> str:
    return dt.datetime.fromtimestamp(stamp_s).strftime("%H:%M:%S")


def ago_text(seconds: float) -> str:
    s = max(float(seconds), 0.0)
    if s < 90:
        return f"{s:.0f} s ago"
    if s < 5400:
        return f"{s / 60:.0f} min ago"
    return f"{s / 3600:.1f} h ago"


def when_text(stamp_s: float, now_s: float) -> str:
    return f"at {clock_text(stamp_s)} ({ago_text(now_s - stamp_s)})"


def duration_text(seconds: float) -> str:
    s = max(float(seconds), 0.0)
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def asked_stamp(asked: Asked, now_s: float) -> float | None:
    """The moment (or the start of the span) a question names: "10 minutes ago", "at 14:05",
    "in the last hour", "since 09:00"; None when it names none."""
    if asked.ago_s is not None:
        return now_s - asked.ago_s
    if asked.clock is not None:
        return clock_stamp(asked.clock, now_s)
    if asked.last_s is not None:
        return now_s - asked.last_s
    return None


def _as_map(o: Any) -> MapObject:
    """A stored object as a `MapObject` (what answers name and ground)."""
    return MapObject(object_id=o.object_id, center=np.asarray(o.center, float),
                     size=np.asarray(o.size, float), world_from_box=np.eye(3),
                     category=o.category, category_confidence=o.category_confidence,
                     colour=o.colour, shape=o.shape, support=o.support,
                     first_seen_s=o.first_seen_s, last_seen_s=o.last_seen_s,
                     is_dynamic=o.is_dynamic, in_view=False)


def _span_text(memory: Any, now_s: float) -> str:
    span = memory.span() if memory is not None else None
    if span is None:
        return "My memory is empty."
    return f"My memory covers {clock_text(span[0])} to {clock_text(span[1])}."


def _remembered(scene: MapScene) -> list[Any]:
    """Every object known: the memory's (latest stored state) with the map's current ones
    over them (newer)."""
    by_id: dict[int, Any] = {}
    if scene.memory is not None:
        by_id.update({o.object_id: o for o in scene.memory.objects()})
    by_id.update({o.object_id: o for o in scene.objects})
    return list(by_id.values())


def answer(asked: Asked, scene: MapScene) -> MapAnswer | None:
    """The answer to a question about the past (kinds last_seen, moved, new, how_long, and
    where at a time before the window), or None when it is not one."""
    now = scene.now_s
    memory = scene.memory
    if asked.kind == "last_seen":
        return _last_seen(asked, scene)
    if asked.kind == "how_long":
        return _how_long(asked, scene)
    if asked.kind in ("moved", "new"):
        t0 = asked_stamp(asked, now)
        if t0 is None:  # "while I was away": as far back as the memory reaches
            span = memory.span() if memory is not None else None
            t0 = span[0] if span is not None else scene.window_start_s
        return _moved(asked, scene, t0) if asked.kind == "moved" else _new(asked, scene, t0)
    if asked.kind == "where" and (asked.clock is not None or asked.ago_s is not None):
        return _where_then(asked, scene, asked_stamp(asked, now))
    return None


def _last_seen(asked: Asked, scene: MapScene) -> MapAnswer:
    known = _remembered(scene)
    found = _found(known, asked)
    if not found:
        decline = _decline(asked, [o for o in known if getattr(o, "disappeared_s", None)
                                   is None], scene)
        return MapAnswer(decline.text.replace("I see no", "I have not seen any", 1),
                         decline.objects, scene.now_s)
    found = sorted(found, key=lambda o: -o.last_seen_s)[:3]
    parts = []
    for o in found:
        on = f" on the {o.support}" if o.support else ""
        state = " (its place has since been seen empty)" if getattr(
            o, "disappeared_s", None) is not None else ""
        seen = when_text(o.last_seen_s, scene.now_s)
        parts.append(f"the {o.label} (object {o.object_id}) {seen}{on} at "
                     f"{position(o.center)}{state}")
    return MapAnswer("I last saw " + "; ".join(parts) + ".",
                     tuple(o if isinstance(o, MapObject) else _as_map(o) for o in found),
                     found[0].last_seen_s)


def _where_then(asked: Asked, scene: MapScene, t: float) -> MapAnswer | None:
    if t >= scene.window_start_s - 1.0 and asked.clock is None:
        return None  # inside the window: the map's histories answer it
    memory = scene.memory
    if memory is None:
        return MapAnswer(f"I keep no memory beyond the last "
                         f"{scene.now_s - scene.window_start_s:.0f} s (memory_path is off).",
                         (), scene.now_s)
    span = memory.span()
    if span is None or not span[0] - 1.0 <= t <= span[1] + 1.0:
        return MapAnswer(f"I do not remember {clock_text(t)}. " + _span_text(memory, scene.now_s),
                         (), t)
    found = _found(_remembered(scene), asked)
    if asked.noun is not None and not asked.known or not found:
        return _decline(asked, [_as_map(o) for o in memory.known_objects()], scene)
    parts, named = [], []
    for o in found:
        obs = memory.where_at(o.object_id, t)
        if obs is None:
            parts.append(f"the {o.label} (object {o.object_id}) was not seen yet then")
            continue
        on = f" on the {obs.support}" if obs.support else ""
        parts.append(f"the {o.label} (object {o.object_id}) was{on} at {position(obs.center)}")
        named.append(replace(_as_map(o), center=np.asarray(obs.center, float),
                             size=np.asarray(obs.size, float)))
    text = f"At {clock_text(t)} " + "; ".join(parts) + "."
    return MapAnswer(text, tuple(named), t)


def _moved(asked: Asked, scene: MapScene, t0: float) -> MapAnswer:
    now = scene.now_s
    memory = scene.memory
    since = f"since {clock_text(t0)}"
    if memory is None:
        moved = [o for o in scene.objects if np.isfinite(o.last_moving_s)
                 and o.last_moving_s >= t0 or o.is_dynamic]
        if not moved:
            return MapAnswer(f"Nothing moved {since}.", (), now)
        return MapAnswer(f"{since.capitalize()}, " + "; ".join(
            f"the {o.label} (object {o.object_id}) moved" for o in moved) + ".",
            tuple(moved), now)
    moves = memory.moved_between(t0, now)
    if not moves:
        span = memory.span()
        covered = "" if span is None or span[0] <= t0 + 1.0 else " " + _span_text(memory, now)
        return MapAnswer(f"Nothing moved {since}.{covered}", (), now)
    known = {o.object_id: o for o in _remembered(scene)}
    parts, named = [], []
    for m in moves:
        o = known.get(m.object_id)
        label = f"the {o.label}" if o is not None else "an object"
        parts.append(f"{label} (object {m.object_id}) moved from {position(m.from_center)} to "
                     f"{position(m.to_center)} {when_text(m.start_s, now)}")
        if o is not None:
            named.append(o if isinstance(o, MapObject) else _as_map(o))
    return MapAnswer(f"{since.capitalize()}, " + "; ".join(parts) + ".", tuple(named), now)


def _new(asked: Asked, scene: MapScene, t0: float) -> MapAnswer:
    now = scene.now_s
    memory = scene.memory
    objs: Sequence[Any] = (memory.new_since(t0) if memory is not None
                           else [o for o in scene.objects if o.first_seen_s >= t0])
    objs = _found(objs, asked) if asked.noun is not None else list(objs)
    since = f"since {clock_text(t0)}"
    if not objs:
        return MapAnswer(f"Nothing new {since}.", (), now)
    parts = [f"the {o.label} (object {o.object_id}), first seen "
             f"{when_text(o.first_seen_s, now)}"
             f"{' on the ' + o.support if o.support else ''}" for o in objs[:8]]
    return MapAnswer(f"New {since}: " + "; ".join(parts) + ".",
                     tuple(o if isinstance(o, MapObject) else _as_map(o) for o in objs[:8]),
                     now)


def _how_long(asked: Asked, scene: MapScene) -> MapAnswer:
    now = scene.now_s
    found = _found(_remembered(scene), asked)
    if not found:
        return _decline(asked, list(scene.objects), scene)
    parts = []
    for o in found[:3]:
        since = None
        if scene.memory is not None:
            on = scene.memory.on_support_since(o.object_id)
            since = on.since_s if on is not None else None
        if since is None:
            since = o.first_seen_s  # the window's view: since it was first seen
        where = f"on the {o.support}" if o.support else f"at {position(o.center)}"
        parts.append(f"the {o.label} (object {o.object_id}) has been {where} for "
                     f"{duration_text(now - since)} (since {clock_text(since)})")
    text = "; ".join(parts)
    return MapAnswer(text[0].upper() + text[1:] + ".",
                     tuple(o if isinstance(o, MapObject) else _as_map(o) for o in found[:3]),
                     now)
