"""Time and number notation: every pattern that reads a time or a number from text, once.

Three kinds of text carry times and numbers, and each is read in its own way on purpose:
- a question as people write it ("t = 4.7s", "time 5.3 sec", "three seconds ago", "ten
  minutes ago", "at 14:05", "right now"): the node's checks (engine.py), the answer policy
  (answers/*) and `training_times`, which rewrites it in the notation the model was trained on
  ("4.7s", "3 seconds ago", "now");
- the model's own input text (model/prompt.py): `find_text_coordinates` hands every time and
  `[x, y, z]` coordinate to the text-side 4D encoding, signed (a time before the window start
  is a negative model time);
- an answer the model wrote ("At 2.5s, the red cube is at [...]"): `ANSWER_AT`,
  `ANSWER_TIME`, read leniently (`nan`, `+1.5`, any case) because the digits are the model's
  and a bad one is reported, not trusted.

A time without a unit is not a time ("x=1.5", "3D", "[1.5, 2, 0.5]"), except after "t =" or
"time", which say it is one. Pure: `re` only, so the model, the node and the tests share it.

    >>> training_times("where was it three secs ago at t = 4.7s, right now")
    'where was it 3 seconds ago at 4.7s, now'
    >>> seconds_ago("where was the mug ten minutes ago"), clock_time("since 2:05 pm")
    (600.0, (14, 5, 0))
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: "zero" .. "twenty"; a word's index is its value. The task's questions are written with
#: these (data/vocabulary.py keeps the generator's copy; a test checks they agree).
NUMBER_WORDS: tuple[str, ...] = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
    "nineteen", "twenty",
)
#: Amounts in a span of time ("a few minutes ago", "an hour ago", "the last two hours"):
#: the number words, and vague words at their usual size.
AMOUNT_WORDS: dict[str, int] = {
    "a": 1, "an": 1, **{w: n for n, w in enumerate(NUMBER_WORDS)}, "thirty": 30, "few": 3,
    "couple": 2}
#: A duration's unit -> seconds.
DURATION_UNITS: dict[str, float] = {
    "s": 1.0, "sec": 1.0, "secs": 1.0, "second": 1.0, "seconds": 1.0, "min": 60.0,
    "mins": 60.0, "minute": 60.0, "minutes": 60.0, "h": 3600.0, "hr": 3600.0, "hrs": 3600.0,
    "hour": 3600.0, "hours": 3600.0}

# pattern pieces
NUM = r"\d+(?:\.\d+)?"  # "3", "2.5": no sign, no exponent, no bare ".5"
SIGNED_NUM = r"-?" + NUM
FLOAT_TEXT = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+|nan|inf)"  # what float() reads, as a model may write it
SECONDS = r"(?:s|secs?|seconds?)"
_AMOUNT = "|".join(AMOUNT_WORDS)
_DURATION_UNIT = "|".join(sorted(DURATION_UNITS, key=len, reverse=True))

# --- questions as people write them ---------------------------------------------------------
#: "2.5s", "2.5 s", "3 sec", "3 seconds": group 1 the seconds. Not inside a word or a number
#: ("x2s", "1.2.5s"), and unsigned: the "-" of "-2s" is not read.
TIME = re.compile(r"(?<![\w.])(" + NUM + r")\s*" + SECONDS + r"\b")
#: "2.5 s ago", "3 seconds ago"
TIME_AGO = re.compile(r"(?<![\w.])(" + NUM + r")\s*" + SECONDS + r"\s+ago\b")
#: The words after a time that make it a duration before now (match at the time's end).
AGO_AFTER = re.compile(r"\s+(ago|back|before)\b")
#: "t = 4.7", "t=12", "time 5.3 sec": the number read whole (never "4" of "4.7"), its unit
#: optional since "t =" and "time" already say it is a time.
T_EQUALS = re.compile(r"\b(?:t\s*=\s*|time\s+)(" + NUM + r")(?!\d|\.\d)"
                      r"(?:\s*" + SECONDS + r"\b)?")
#: "three seconds", "two secs": a number word before a time unit (group 1).
NUMBER_WORD_TIME = re.compile(r"\b(" + "|".join(NUMBER_WORDS) + r")(?=\s+" + SECONDS + r"\b)")
#: The phrases that mean now in a question about the window.
NOW_PHRASE = re.compile(r"\b(right now|currently|at the moment|at present|at this moment)\b")
#: "at the start", "at the very beginning of the window": the window's first moment.
WINDOW_START = re.compile(r"\bat the (?:very )?(?:start|beginning)\b"
                          r"(?: of the (?:window|scene|clip))?")
#: "10 minutes ago", "an hour back", "three seconds before": group 1 the amount (digits or
#: `AMOUNT_WORDS`), group 2 the unit (`DURATION_UNITS`).
DURATION_AGO = re.compile(r"\b(" + NUM + "|" + _AMOUNT + r")\s*(" + _DURATION_UNIT +
                          r")\s+(ago|back|before)\b")
#: "in the last hour", "over the past 2 minutes": group 1 the amount (None: one), 2 the unit.
IN_THE_LAST = re.compile(r"\b(?:in|over|during|within) the (?:last|past)\s+(?:(" + NUM + "|" +
                         _AMOUNT + r")\s*)?(" + _DURATION_UNIT + r")\b")
#: A time of day: "14:05", "9.30", "14:05:30", "2:05 pm" (groups 1-4), "9 am" (groups 5-6).
#: Not a number with a unit: "3.25 seconds" and "1.50 hours" are durations.
CLOCK = re.compile(r"\b([01]?\d|2[0-3])[:.h]([0-5]\d)(?::([0-5]\d))?\s*(am|pm)?\b"
                   r"(?!\s*(?:" + _DURATION_UNIT + r")\b)|"
                   r"\b(1[0-2]|0?[1-9])\s*(am|pm)\b")
#: Now, for a question about the map: also "presently" and "still" ("is the mug still there").
NOW_OR_STILL = re.compile(r"\b(now|currently|at the moment|at present|right now|presently|"
                          r"still)\b")
#: Any number as written, for a range check: sign, decimals, ".5", exponent ("1e300");
#: group 1 the digits without sign or exponent.
ANY_NUMBER = re.compile(r"(?<![\w.])[-+]?(\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")

# --- the training notation (what `training_times` writes) ------------------------------------
TRAINED_AT = re.compile(r"(?<![\w.])(" + NUM + r")s\b")  # "at 2.5s"
TRAINED_AGO = re.compile(r"(?<![\w.])(" + NUM + r") seconds? ago\b")  # "3 seconds ago"
TRAINED_NOW = re.compile(r"\bnow\b")

# --- the model's input text -----------------------------------------------------------------
#: A time in the model's text: "2.5s", "-1 s", "2 seconds" (also "2 seconds ago": a duration
#: is a time too). Signed, and read after a letter ("t2s"): the model's own notation.
SIGNED_TIME = re.compile(r"(?<![\d.])(" + SIGNED_NUM + r")\s*" + SECONDS + r"\b")
_COORD_NUM = r"\s*(" + SIGNED_NUM + r")\s*"
#: "[x, y, z]" or "[x, y, z, ...]" (a box's sizes follow): groups 1-3 the point.
COORDINATE = re.compile(r"\[" + _COORD_NUM + "," + _COORD_NUM + "," + _COORD_NUM +
                        r"(?:,[^\]]*)?\]")

# --- answers the model wrote ----------------------------------------------------------------
#: Every time an answer names: "2.5s", "3 sec", "NaN s" (reported as bad, not dropped).
ANSWER_TIME = re.compile(r"(?<![\w.])(" + FLOAT_TEXT + r")\s*(?:s|sec|seconds?)\b",
                         re.IGNORECASE)
#: A grounded sentence's time and the rest of it: "At 2.5s, the red cube is at [...]".
ANSWER_AT = re.compile(r"\bat\s+(" + FLOAT_TEXT + r")\s*s\b\s*,?\s*(.*)$", re.IGNORECASE)
#: The first whole number of an answer ("There are 4 objects."): a count.
WHOLE_NUMBER = re.compile(r"\b(\d+)\b")


def amount(word: str) -> float:
    """The value of digits or an `AMOUNT_WORDS` word ("2.5" -> 2.5, "few" -> 3)."""
    return float(word) if word[0].isdigit() else float(AMOUNT_WORDS[word])


def training_times(question: str) -> str:
    """The times of a lower-case `question` in the training notation: "three seconds" ->
    "3 seconds"; "t=2.5", "t = 2.5 s", "time 2.5" -> "2.5s"; "2.5 sec" -> "2.5s"; "3 s ago",
    "3 sec ago" -> "3 seconds ago" ("1 second ago"); "right now", "currently" ... -> "now";
    "at the start" -> "at 0s". Everything else as it is."""
    q = NUMBER_WORD_TIME.sub(lambda m: str(NUMBER_WORDS.index(m.group(1))), question)
    q = T_EQUALS.sub(lambda m: f"{m.group(1)}s", q)
    q = TIME_AGO.sub(lambda m: f"{m.group(1)} second{'' if float(m.group(1)) == 1 else 's'}"
                               " ago", q)
    q = TIME.sub(lambda m: m.group(0) if q[m.end():].lstrip().startswith("ago")
                 else f"{m.group(1)}s", q)
    q = NOW_PHRASE.sub("now", q)
    return WINDOW_START.sub("at 0s", q)


def seconds_at(text: str) -> float | None:
    """The first time `text` names at a moment ("at 2.5 s", "3 sec"), not counting durations
    before now ("10 seconds ago"); None when it names none."""
    m = TIME.search(DURATION_AGO.sub(" ", text))
    return float(m.group(1)) if m is not None else None


def seconds_ago(text: str) -> float | None:
    """How long before now `text` asks about: "10 minutes ago" -> 600, "an hour back" ->
    3600, "3 s before" -> 3; None when it names no such span."""
    m = DURATION_AGO.search(text)
    return None if m is None else amount(m.group(1)) * DURATION_UNITS[m.group(2)]


def last_span_s(text: str) -> float | None:
    """How far back "in the last hour", "over the past 2 minutes" reaches [s]; None when
    `text` names no such span."""
    m = IN_THE_LAST.search(text)
    if m is None:
        return None
    n = m.group(1)
    return (1.0 if n is None else amount(n)) * DURATION_UNITS[m.group(2)]


def clock_time(text: str) -> tuple[int, int, int] | None:
    """(hour 0-23, minute, second) of the first time of day in `text`: "14:05", "9.30",
    "14:05:30", "2:05 pm", "9 am"; None when it names none."""
    m = CLOCK.search(text)
    if m is None:
        return None
    if m.group(5) is not None:
        h, mi, sec, ampm = int(m.group(5)), 0, 0, m.group(6)
    else:
        h, mi, sec, ampm = int(m.group(1)), int(m.group(2)), int(m.group(3) or 0), m.group(4)
    if ampm == "pm" and h < 12:
        h += 12
    if ampm == "am" and h == 12:
        h = 0
    return h, mi, sec


@dataclass(frozen=True)
class TextSpan:
    """A number in the question: character span [start, end) and its value(s)."""

    start: int
    end: int
    value: tuple[float, ...]  # (t,) for a time, (x, y, z) for a coordinate


def find_text_coordinates(text: str) -> tuple[list[TextSpan], list[TextSpan]]:
    """Times (`SIGNED_TIME`) and `[x, y, z, ...]` coordinates mentioned in `text` -> (times,
    coords); a time inside a coordinate's brackets is the coordinate's."""
    times = [TextSpan(m.start(), m.end(), (float(m.group(1)),))
             for m in SIGNED_TIME.finditer(text)]
    coords = [TextSpan(m.start(), m.end(), tuple(float(g) for g in m.groups()))
              for m in COORDINATE.finditer(text)]
    coord_ranges = [(c.start, c.end) for c in coords]
    times = [t for t in times if not any(a <= t.start < b for a, b in coord_ranges)]
    return times, coords
