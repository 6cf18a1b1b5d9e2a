"""Grounded answers as text, and back: "At 2.5s, the red cube is at [x, y, z, sx, sy, sz]."

Boxes are axis-aligned in the world frame, centre and full extents in metres (ARCHITECTURE.md);
times are model seconds since the window start. `parse_answer` never raises on model output: a
malformed box (wrong count of numbers, NaN, negative or zero sizes, absurd magnitudes) is left
out and reported in `warnings`, because one bad sentence must not lose the rest of an answer.

A model with slot heads hands its boxes' numbers and confidences to `parse_answer` by where it
wrote them (`slot_boxes`), so those come from the heads and only the label and time from the
sentence; `calibrated` maps a box's raw score to the probability that it is right.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from llava4d_ros.core.notation import ANSWER_AT, ANSWER_TIME

MAX_ABS_COORD_M = 1000.0  # beyond this a "coordinate" is a hallucination, not a place
MAX_SIZE_M = 100.0
MAX_ABS_TIME_S = 1e6

_BOX_RE = re.compile(r"\[([^\[\]]*)\]")
_LABEL_RE = re.compile(r"^(?:the\s+)?(.*?)\s+(?:is|was|are|were)\b.*$", re.IGNORECASE)
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")


@dataclass(frozen=True)
class GroundedBox:
    """One box an answer names: `t_s` model seconds (None when the sentence has no time),
    `box6 = (cx, cy, cz, sx, sy, sz)` world metres, `confidence` the probability that it is
    right (3D IoU >= 0.5 with the truth) from the slot heads; 1.0 for a box that was only text
    (a model that writes its own digits gives no score)."""

    label: str
    t_s: float | None
    box6: tuple[float, float, float, float, float, float]
    confidence: float = 1.0


@dataclass(frozen=True)
class ParsedAnswer:
    boxes: tuple[GroundedBox, ...]
    times: tuple[float, ...]  # every "<number>s" outside a box, in order
    warnings: tuple[str, ...] = field(default=())


def _to_float(s: str) -> float | None:
    try:
        return float(s)
    except ValueError:
        return None


def check_box(numbers: list[str]) -> tuple[tuple[float, ...] | None, str]:
    """(box6, "") for six valid numbers, else (None, why)."""
    if len(numbers) != 6:
        return None, f"a box needs 6 numbers, got {len(numbers)}"
    vals = [_to_float(n.strip()) for n in numbers]
    if any(v is None for v in vals):
        return None, f"not a number in {numbers}"
    if not all(math.isfinite(v) for v in vals):
        return None, f"non-finite number in {vals}"
    if any(abs(v) > MAX_ABS_COORD_M for v in vals[:3]):
        return None, f"centre {vals[:3]} beyond {MAX_ABS_COORD_M} m"
    if any(v <= 0 for v in vals[3:]):
        return None, f"sizes {vals[3:]} must be positive"
    if any(v > MAX_SIZE_M for v in vals[3:]):
        return None, f"sizes {vals[3:]} beyond {MAX_SIZE_M} m"
    return tuple(vals), ""


def _sentences(text: str) -> list[tuple[int, str]]:
    """(offset in `text`, sentence): split at sentence ends, but not at the decimal points
    inside numbers."""
    out, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        out.append((start, text[start:m.end()]))
        start = m.end()
    if text[start:].strip():
        out.append((start, text[start:]))
    return out


def parse_answer(text: str, slot_boxes: Mapping[int, tuple[Sequence[float], float]] | None = None
                 ) -> ParsedAnswer:
    """Boxes (with the label and time of their sentence) and times mentioned in `text`.

    `slot_boxes`: the boxes the slot heads wrote into `text`, by the offset of their "[":
    (box6, confidence). Their numbers are taken as given rather than read back from the
    digits; any other box in the text is read and checked."""
    slot_boxes = slot_boxes or {}
    boxes: list[GroundedBox] = []
    times: list[float] = []
    warnings: list[str] = []
    for offset, sentence in _sentences(text):
        at = ANSWER_AT.search(sentence)
        t_s = _to_float(at.group(1)) if at else None
        label = ""
        if at:
            lm = _LABEL_RE.match(at.group(2))
            label = lm.group(1).strip() if lm else ""
        if t_s is not None and not (math.isfinite(t_s) and abs(t_s) <= MAX_ABS_TIME_S):
            warnings.append(f"bad time {at.group(1)!r} in {sentence.strip()!r}")
            t_s = None
        without_boxes = _BOX_RE.sub(" ", sentence)
        for m in ANSWER_TIME.finditer(without_boxes):
            v = _to_float(m.group(1))
            if v is not None and math.isfinite(v) and abs(v) <= MAX_ABS_TIME_S:
                times.append(v)
            else:
                warnings.append(f"bad time {m.group(1)!r}")
        for m in _BOX_RE.finditer(sentence):
            slot = slot_boxes.get(offset + m.start())
            if slot is not None:
                box6 = tuple(float(v) for v in slot[0])
                boxes.append(GroundedBox(label, t_s, box6, float(slot[1])))  # type: ignore[arg-type]
                continue
            box, why = check_box(m.group(1).split(","))
            if box is None:
                warnings.append(f"refused box [{m.group(1)}]: {why}")
                continue
            boxes.append(GroundedBox(label=label, t_s=t_s, box6=box))  # type: ignore[arg-type]
    return ParsedAnswer(tuple(boxes), tuple(times), tuple(warnings))


def calibrated(raw: float, table: Sequence[tuple[float, float]] | None) -> float:
    """The probability that a box is right for its raw score: linear between the (raw,
    probability) knots of `table` (`LLaVA4DConfig.confidence_table`), flat beyond its ends;
    without a table the raw score itself, clipped to [0, 1]."""
    if not table:
        return min(max(float(raw), 0.0), 1.0)
    knots = np.asarray(table, np.float64)  # (K, 2)
    return float(np.interp(float(raw), knots[:, 0], knots[:, 1]))


def format_grounded(label: str, t_s: float, box6: tuple[float, ...]) -> str:
    """The sentence a grounded box is written as (the parser's inverse)."""
    nums = ", ".join(f"{round(float(v), 2) + 0.0:.2f}" for v in box6)
    return f"At {round(float(t_s), 1) + 0.0:.1f}s, the {label} is at [{nums}]."
