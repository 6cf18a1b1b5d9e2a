"""Answers the object map decides: what is there, how many, where, the nearest, is anything
moving, what colour, where the camera was, and declines that name what is there.

Every answer that names objects carries them (`MapAnswer.objects`), so the reply grounds each
in its object id and box. Positions are world-frame metres, written `[x, y, z]`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from llava4d_ros.answers.map_reading import IRREGULAR_PLURALS, Asked
from llava4d_ros.core.objects import MapObject

#: The kinds this module answers (memory_answers.py answers last_seen, moved, new, how_long).
KINDS = ("count", "list", "where", "nearest", "moving", "colour", "camera", "presence")
_PLURAL_OF = {v: k for k, v in IRREGULAR_PLURALS.items()}
_NUMBERS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


@dataclass(frozen=True)
class MapScene:
    """What the map answers read: `objects` now (the map's, static and moving), the newest
    stamp `now_s` and window start `window_start_s` [s], `camera_at(stamp_s)` -> `(stamp_s,
    world_from_cam (4, 4))` of the nearest frame seen, or None; `memory`, the object memory
    on disk (a `memory.MemoryStore`) when there is one."""

    objects: Sequence[MapObject]
    now_s: float
    window_start_s: float
    camera_at: Callable[[float], tuple[float, np.ndarray] | None]
    memory: Any = None


@dataclass(frozen=True)
class MapAnswer:
    """`text`, the objects it names (their boxes and ids ground the reply), and the stamp
    [s] the answer is about."""

    text: str
    objects: tuple[MapObject, ...]
    stamp_s: float


def plural(noun: str, n: int) -> str:
    if n == 1:
        return noun
    if noun in _PLURAL_OF:
        return _PLURAL_OF[noun]
    if noun.endswith(("s", "x", "ch", "sh")):
        return noun + "es"
    return noun + "s"


def count_text(n: int, noun: str) -> str:
    number = _NUMBERS[n] if n < len(_NUMBERS) else str(n)
    if n == 1:
        number = "an" if noun[:1] in "aeiou" else "a"
    return f"{number} {plural(noun, n)}"


def joined(parts: Sequence[str]) -> str:
    if not parts:
        return ""
    if len(parts) == 1:
        return parts[0]
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def inventory(objects: Sequence[MapObject], limit: int = 8) -> str:
    """'2 mugs, a box and 3 chairs' (nouns by count, most first; an object without a category
    by its colour and shape: 'a red cube', 'a brown object')."""
    names = Counter(o.noun if o.category != "object" else o.label for o in objects)
    parts = [count_text(n, name) for name, n in names.most_common(limit)]
    rest = sum(n for _, n in names.most_common()[limit:])
    if rest:
        parts.append(count_text(rest, "other object"))
    return joined(parts)


def position(p: np.ndarray) -> str:
    return "[" + ", ".join(f"{float(v):.2f}" for v in p) + "]"


def _matches(o: MapObject, asked: Asked) -> bool:
    if asked.colour is not None and o.colour != asked.colour:
        return False
    if asked.support is not None and o.support != asked.support:
        return False
    if asked.noun is None:
        return True
    if asked.category is not None and o.category == asked.category:
        return True
    if asked.shape is not None and o.shape == asked.shape:
        return True
    # an object the map names by colour only ("a red object") answers to a shape word when
    # the question names its colour: the geometry was unsure of the shape, not of the thing
    return (asked.shape is not None and asked.colour is not None and not o.shape
            and o.category == "object")


def _found(objects: Sequence[MapObject], asked: Asked) -> list[MapObject]:
    """The objects `asked` names. A noun that is a category and a shape ("box") names the
    objects of that category when there are any, else those of that shape."""
    found = [o for o in objects if _matches(o, asked)]
    if asked.category is not None and any(o.category == asked.category for o in found):
        found = [o for o in found if o.category == asked.category]
    return found


#: An object the classifier is unsure of may still be named as a guess, flagged as one: its
#: best noun (fused over views) must be the one asked and have at least this score.
MAYBE_SCORE = 0.1


def _maybe(objects: Sequence[MapObject], asked: Asked) -> list[MapObject]:
    """Objects without a sure category whose best guess is the category asked."""
    if asked.category is None:
        return []
    return [o for o in objects if o.category == "object" and o.hypotheses
            and o.hypotheses[0][0] == asked.category and o.hypotheses[0][1] >= MAYBE_SCORE
            and (asked.colour is None or o.colour == asked.colour)
            and (asked.support is None or o.support == asked.support)]


def _maybe_text(asked: Asked, maybe: list[MapObject]) -> str:
    """'I am not sure I see a mug: the white cylinder (object 12) on the table at [...] may
    be one (mug 0.20).'"""
    noun = asked.category or asked.noun or "object"
    parts = [f"the {o.label} (object {o.object_id})"
             f"{' on the ' + o.support if o.support else ''} at {position(o.center)} "
             f"({noun} {o.hypotheses[0][1]:.2f})" for o in maybe]
    one = "it" if len(maybe) == 1 else "each"
    return (f"I am not sure I see any {plural(noun, 2)}: " + "; ".join(parts)
            + f" may be one (what an image classifier makes of {one}).")


def _phrase(asked: Asked) -> str:
    """The thing asked about, as the question named it: 'kettle', 'red cube', 'mug on the
    table'."""
    noun = asked.noun or "object"
    words = ([asked.colour] if asked.colour else []) + [noun]
    if asked.support:
        words += ["on the", asked.support]
    return " ".join(words)


def _where(o: MapObject) -> str:
    on = f" on the {o.support}" if o.support else ""
    return f"the {o.label} (object {o.object_id}) is{on} at {position(o.center)}"


def _camera_position(scene: MapScene) -> np.ndarray | None:
    now = scene.camera_at(scene.now_s)
    return None if now is None else now[1][:3, 3]


def _decline(asked: Asked, objects: Sequence[MapObject], scene: MapScene) -> MapAnswer:
    """'I see no kettle; I see 2 mugs and a chair.'"""
    thing = _phrase(asked)
    if asked.plural:
        thing = " ".join(thing.split()[:-1] + [plural(thing.split()[-1], 2)]) if not \
            asked.support else thing
    if not objects:
        return MapAnswer(f"I see no {thing}; I see no objects yet.", (), scene.now_s)
    return MapAnswer(f"I see no {thing}; I see {inventory(objects)}.", tuple(objects),
                     scene.now_s)


def _moving_now(o: MapObject, scene: MapScene) -> bool:
    return o.is_dynamic


def _moved_in_window(o: MapObject, scene: MapScene) -> bool:
    return o.is_dynamic or bool(np.isfinite(o.last_moving_s)
                                and o.last_moving_s >= scene.window_start_s)


def answer(asked: Asked, scene: MapScene) -> MapAnswer | None:
    """The map's answer to `asked`, or None when the map does not decide it (another kind, a
    time in the window named: the network's; or a time before the map's memory)."""
    if asked.kind is None or asked.at_s is not None or asked.kind not in KINDS:
        return None
    objects = list(scene.objects)
    if asked.kind == "camera":
        return _camera(asked, scene)
    if asked.ago_s is not None:
        return _where_ago(asked, scene) if asked.kind == "where" else None
    found = _found(objects, asked)
    if asked.moving and asked.kind in ("count", "list", "moving"):
        now = asked.now
        moved = [o for o in found if (_moving_now(o, scene) if now
                                      else _moved_in_window(o, scene))]
        return _moving(asked, found, moved, scene, now)
    if asked.noun is not None and not asked.known:
        return _decline(asked, objects, scene)
    maybe = _maybe(objects, asked) if not found else []
    if maybe and asked.kind in ("count", "where", "nearest", "presence", "colour"):
        return MapAnswer(_maybe_text(asked, maybe), tuple(maybe), scene.now_s)
    if asked.kind == "count":
        where = f" on the {asked.support}" if asked.support else ""
        noun = (f"{asked.colour} " if asked.colour else "") + (asked.noun or "object")
        return MapAnswer(f"I see {count_text(len(found), noun)}{where}."
                         if found else f"I see no {plural(noun, 2)}{where}.",
                         tuple(found), scene.now_s)
    if asked.kind == "list":
        where = f" on the {asked.support}" if asked.support else ""
        if not found:
            return MapAnswer(f"I see nothing{where}." if objects or not where else
                             "I see no objects yet.", (), scene.now_s)
        return MapAnswer(f"I see {inventory(found)}{where}: " + "; ".join(
            _where(o) for o in found) + ".", tuple(found), scene.now_s)
    if not found:
        if asked.kind == "moving" and asked.noun is None:
            return MapAnswer("No, nothing is moving.", (), scene.now_s)
        if asked.kind == "presence" and asked.noun is None:
            return MapAnswer("No, I see no objects." if not objects else
                             f"Yes, I see {inventory(objects)}.", tuple(objects), scene.now_s)
        return _decline(asked, objects, scene)
    if asked.kind == "nearest":
        cam = _camera_position(scene)
        if cam is None:
            return None
        o = min(found, key=lambda o: float(np.linalg.norm(o.center - cam)))
        d = float(np.linalg.norm(o.center - cam))
        on = f" on the {o.support}" if o.support else ""
        return MapAnswer(f"The nearest {_phrase(asked)} is the {o.label} (object "
                         f"{o.object_id}),{on} at {position(o.center)}, {d:.1f} m from the "
                         f"camera.", (o,), scene.now_s)
    if asked.kind == "where":
        text = "; ".join(_where(o) for o in found)
        return MapAnswer(text[0].upper() + text[1:] + ".", tuple(found), scene.now_s)
    if asked.kind == "colour":
        return MapAnswer(" ".join(f"The {o.noun} (object {o.object_id}) is {o.colour}."
                                  for o in found), tuple(found), scene.now_s)
    if asked.kind == "moving":
        return _moving(asked, found, [o for o in found if _moving_now(o, scene)], scene, True)

    if asked.kind == "presence":
        return MapAnswer(f"Yes, I see {inventory(found)}: " + "; ".join(
            _where(o) for o in found) + ".", tuple(found), scene.now_s)
    return None


def _moving(asked: Asked, found: list[MapObject], moved: list[MapObject], scene: MapScene,
            now: bool) -> MapAnswer:
    when = "now" if now else "in the last " + f"{scene.now_s - scene.window_start_s:.0f} s"
    verb = "is moving" if now else "moved"
    if asked.kind == "count":
        noun = asked.noun or "object"
        return MapAnswer(f"{count_text(len(moved), noun).capitalize()} "
                         f"{verb if len(moved) == 1 else verb.replace('is', 'are')} {when}.",
                         tuple(moved), scene.now_s)
    if not moved:
        if asked.noun is not None and found:
            return MapAnswer(f"No, the {found[0].label} (object {found[0].object_id}) "
                             f"{'is not moving' if now else 'did not move'} {when}.",
                             tuple(found[:1]), scene.now_s)
        if asked.noun is not None:
            return _decline(asked, list(scene.objects), scene)
        text = f"nothing {verb} {when}." if now else f"nothing moved {when}."
        text = ("No, " + text) if asked.yes_no else text[0].upper() + text[1:]
        return MapAnswer(text, (), scene.now_s)
    names = joined([f"the {o.label} (object {o.object_id})" for o in moved])
    yes = "Yes, " if asked.kind == "moving" and asked.yes_no else ""
    text = f"{yes}{names} {verb if len(moved) == 1 else verb.replace('is', 'are')} {when}."
    return MapAnswer(text[0].upper() + text[1:], tuple(moved), scene.now_s)


def _camera(asked: Asked, scene: MapScene) -> MapAnswer | None:
    ago = asked.ago_s or 0.0
    then = scene.camera_at(scene.now_s - ago)
    now = scene.camera_at(scene.now_s)
    if then is None or now is None:
        return MapAnswer("I have not seen a camera pose yet.", (), scene.now_s)
    if scene.now_s - ago < then[0] - 1.0:
        return MapAnswer(f"I only remember the camera from {scene.now_s - then[0]:.1f} s ago; "
                         f"then it was at {position(then[1][:3, 3])}.", (), then[0])
    if ago <= 0:
        return MapAnswer(f"The camera is at {position(now[1][:3, 3])}.", (), now[0])
    moved = float(np.linalg.norm(then[1][:3, 3] - now[1][:3, 3]))
    return MapAnswer(f"{ago:g} s ago the camera was at {position(then[1][:3, 3])}, "
                     f"{moved:.2f} m from where it is now.", (), then[0])


def _where_ago(asked: Asked, scene: MapScene) -> MapAnswer | None:
    """Where something was `ago_s` before now, from the objects' histories (the window);
    None when that is before the window (the memory's to answer)."""
    t = scene.now_s - float(asked.ago_s)
    if t < scene.window_start_s - 1.0:
        return None
    found = [o for o in _found(scene.objects, asked) if o.first_seen_s <= t + 0.5]
    if asked.noun is not None and not asked.known or not found:
        return _decline(asked, list(scene.objects), scene)
    parts = []
    for o in found:
        stamps = np.array([h[0] for h in o.history]) if o.history else np.array([o.last_seen_s])
        centres = [h[1] for h in o.history] if o.history else [o.center]
        before = np.flatnonzero(stamps <= t + 1e-6)
        c = centres[int(before[-1])] if before.size else centres[0]
        parts.append(f"the {o.label} (object {o.object_id}) was at {position(c)}")
    text = f"{asked.ago_s:g} s ago " + "; ".join(parts) + "."
    return MapAnswer(text, tuple(found), t)
