"""The notations people (and the model) write times and numbers in, read by core/notation.py:
each row is a text and the value it must be read as, or None where it must not be read."""

from __future__ import annotations

import doctest
import re
from pathlib import Path

import pytest

from llava4d_ros.core import notation
from llava4d_ros.core.notation import (
    ANSWER_AT,
    ANSWER_TIME,
    ANY_NUMBER,
    TIME,
    WHOLE_NUMBER,
    amount,
    clock_time,
    find_text_coordinates,
    last_span_s,
    seconds_ago,
    seconds_at,
    training_times,
)
from llava4d_ros.data.vocabulary import NUMBER_WORDS


def _first(pattern: re.Pattern[str], text: str) -> float | None:
    m = pattern.search(text)
    return None if m is None else float(m.group(1))


@pytest.mark.parametrize("text, seconds", [
    ("at 2.5s", 2.5), ("at 2.5 s", 2.5), ("at 3 sec", 3.0), ("at 3secs", 3.0),
    ("at 1 second", 1.0), ("at 4.75 seconds", 4.75), ("12s in", 12.0), ("(7s)", 7.0),
    ("0.5s", 0.5),
    ("at -2s", 2.0),  # unsigned: a question's time is since the window start
    ("the 3D box", None), ("x=1.5", None), ("at 2.5", None), ("3 sheep", None),
    ("x2s", None), ("1.2.5s", None), ("at 12S", None), ("1.5 m", None), ("2 secondary", None),
])
def test_a_time_in_a_question(text, seconds):
    assert _first(TIME, text) == seconds


@pytest.mark.parametrize("written, trained", [
    ("where is it at t = 4.7s?", "where is it at 4.7s?"),
    ("where is it at t=4.7 s", "where is it at 4.7s"),
    ("where is it at t=12?", "where is it at 12s?"),
    ("where is it at t = 0.25", "where is it at 0.25s"),
    ("where is it at time 5.3 sec?", "where is it at 5.3s?"),
    ("where is it at time 5 seconds", "where is it at 5s"),
    ("where is it at 2.5 sec", "where is it at 2.5s"),
    ("where is it at 2.5 secs", "where is it at 2.5s"),
    ("where is it at 2.5 seconds", "where is it at 2.5s"),
    ("where is it at 1 second", "where is it at 1s"),
    ("at 3.25 seconds where is it", "at 3.25s where is it"),
    ("where is it at three seconds", "where is it at 3s"),
    ("where is it at seventeen secs", "where is it at 17s"),
    ("where was it 2.5 s ago", "where was it 2.5 seconds ago"),
    ("where was it 3 sec ago", "where was it 3 seconds ago"),
    ("where was it 1 s ago", "where was it 1 second ago"),
    ("where was it one second ago", "where was it 1 second ago"),
    ("where was it three seconds ago", "where was it 3 seconds ago"),
    ("where is it right now", "where is it now"),
    ("where is it currently", "where is it now"),
    ("where is it at the moment", "where is it now"),
    ("where was it at the start", "where was it at 0s"),
    ("where was it at the very beginning of the window", "where was it at 0s"),
    # already the training notation, or no time: as written
    ("where is it at 2.5s", "where is it at 2.5s"),
    ("where was it 3 seconds ago", "where was it 3 seconds ago"),
    ("what time is it", "what time is it"),
    ("how many of the three cubes move", "how many of the three cubes move"),
    ("what is at x=1.5", "what is at x=1.5"),
    ("is the 3d box at [1.5, 2, 0.5]", "is the 3d box at [1.5, 2, 0.5]"),
])
def test_times_in_the_training_notation(written, trained):
    assert training_times(written) == trained


@pytest.mark.parametrize("text, seconds", [
    ("where was the mug 10 minutes ago", 600.0), ("2.5 sec ago", 2.5),
    ("three seconds ago", 3.0), ("an hour ago", 3600.0), ("two hours back", 7200.0),
    ("a few minutes ago", 180.0), ("5 mins before", 300.0), ("1.5 h ago", 5400.0),
    ("fifteen minutes ago", 900.0), ("twelve seconds back", 12.0), ("1.50 hours ago", 5400.0),
    ("at 3s", None), ("ago", None),
])
def test_a_span_before_now(text, seconds):
    assert seconds_ago(text) == seconds


@pytest.mark.parametrize("text, seconds", [
    ("what moved in the last hour", 3600.0), ("over the past 2 minutes", 120.0),
    ("during the last couple hours", 7200.0), ("within the past 30 s", 30.0),
    ("in the last few minutes", 180.0), ("at the last second", None), ("lately", None),
])
def test_a_span_up_to_now(text, seconds):
    assert last_span_s(text) == seconds


@pytest.mark.parametrize("text, seconds", [
    ("where was it at 2.5 s", 2.5), ("at 3 sec", 3.0),
    ("where was it 10 seconds ago", None),  # a span before now, not a moment of the window
    ("10 seconds ago and at 4s", 4.0), ("where is it", None),
])
def test_a_moment_in_a_question_about_the_map(text, seconds):
    assert seconds_at(text) == seconds


@pytest.mark.parametrize("text, clock", [
    ("at 14:05", (14, 5, 0)), ("at 9.30", (9, 30, 0)), ("at 14:05:30", (14, 5, 30)),
    ("at 2:05 pm", (14, 5, 0)), ("at 9 am", (9, 0, 0)), ("at 12 am", (0, 0, 0)),
    ("at 12:30 pm", (12, 30, 0)), ("at 9h30", (9, 30, 0)), ("since 09:00", (9, 0, 0)),
    ("at 2.5s", None), ("at 25:00", None), ("in 3 hours", None),
    # a number with a unit is a duration, not a time of day
    ("at 3.25 seconds", None), ("1.50 hours ago", None), ("at 12.50 s", None),
    ("at 9:30 min", None), ("at 9.30, sharp", (9, 30, 0)),
])
def test_a_time_of_day(text, clock):
    assert clock_time(text) == clock


@pytest.mark.parametrize("word, value", [
    ("3", 3.0), ("2.5", 2.5), ("a", 1.0), ("an", 1.0), ("zero", 0.0), ("three", 3.0),
    ("ten", 10.0), ("fifteen", 15.0), ("twenty", 20.0), ("thirty", 30.0), ("few", 3.0),
    ("couple", 2.0),
])
def test_an_amount(word, value):
    assert amount(word) == value


def test_the_number_words_are_the_ones_the_questions_are_written_with():
    assert notation.NUMBER_WORDS == NUMBER_WORDS
    assert [training_times(f"{w} seconds ago") for w in NUMBER_WORDS[:3]] == [
        "0 seconds ago", "1 second ago", "2 seconds ago"]


@pytest.mark.parametrize("text, times, coords", [
    ("where is it at 2.5s, 2 seconds ago, near [1.0, -2, 0.5]?", [2.5, 2.0],
     [(1.0, -2.0, 0.5)]),
    ("at -1.5 s", [-1.5], []),  # the model's own text: signed
    ("t2s", [2.0], []),
    ("what is at [1.5, -0.5, 0.2, 0.1, 0.1, 0.1] at 3 sec", [3.0], [(1.5, -0.5, 0.2)]),
    ("near [1, 2, 3, 4s]", [], [(1.0, 2.0, 3.0)]),  # inside the brackets: no time
    ("x=1.5 and the 3D box", [], []), ("[1.5, 2]", [], []),
    ("where is it at 1.2.5s", [], []),
])
def test_times_and_coordinates_in_the_models_text(text, times, coords):
    found_times, found_coords = find_text_coordinates(text)
    assert [t.value[0] for t in found_times] == times
    assert [c.value for c in found_coords] == coords


def test_a_span_covers_what_was_read():
    text = "at 2.5 sec near [1, 2, 3]"
    (t,), (c,) = find_text_coordinates(text)
    assert text[t.start:t.end] == "2.5 sec" and text[c.start:c.end] == "[1, 2, 3]"


@pytest.mark.parametrize("text, seconds", [
    ("The red cube started moving at 2.5s.", 2.5), ("at 3 sec", 3.0),
    ("At 2.5S, the red cube", 2.5), ("moved at -1.0s", -1.0), ("at +1.5s", 1.5),
    ("at .5s", 0.5), ("at 2 seconds", 2.0), ("at 2 secs", None), ("in 3D", None),
])
def test_a_time_in_an_answer(text, seconds):
    assert _first(ANSWER_TIME, text) == seconds


def test_a_bad_time_in_an_answer_is_read_to_be_reported():
    assert ANSWER_TIME.search("at nan s").group(1) == "nan"


@pytest.mark.parametrize("sentence, seconds, rest", [
    ("At 2.5s, the red cube is at [1, 2, 3, 0.1, 0.1, 0.1].", 2.5,
     "the red cube is at [1, 2, 3, 0.1, 0.1, 0.1]."),
    ("at 0.0s the blue sphere was at [0, 0, 0, 1, 1, 1]", 0.0,
     "the blue sphere was at [0, 0, 0, 1, 1, 1]"),
    ("The red cube is at [1, 2, 3, 0.1, 0.1, 0.1].", None, None),
])
def test_a_grounded_sentence(sentence, seconds, rest):
    m = ANSWER_AT.search(sentence)
    assert (None if m is None else (float(m.group(1)), m.group(2))) == (
        None if seconds is None else (seconds, rest))


@pytest.mark.parametrize("text, number", [
    ("There are 4 objects.", "4"), ("I count 12.", "12"), ("There are no objects.", None),
    ("3D", None),
])
def test_a_count_in_an_answer(text, number):
    m = WHOLE_NUMBER.search(text)
    assert (None if m is None else m.group(1)) == number


@pytest.mark.parametrize("text, numbers", [
    ("where is it at 2.5s near [1, -2, .5]", ["2.5", "1", "-2", ".5"]),
    ("1e300 and +3.", ["1e300", "+3."]), ("x2 and v1.2", []),
])
def test_any_number_as_written(text, numbers):
    assert [m.group(0) for m in ANY_NUMBER.finditer(text)] == numbers


def test_the_docstring_examples_hold():
    assert doctest.testmod(notation).failed == 0


def test_times_and_numbers_are_read_only_in_the_notation_module():
    """A time or number pattern written elsewhere drifts from this one (a time after "t ="
    lost its decimals in one copy). data/instructions.py writes the task templates, whose
    own shapes ("at 2.5s", one decimal) it matches, and is a scene-cache input."""
    pkg = Path(notation.__file__).resolve().parents[1]
    allowed = {pkg / "core" / "notation.py", pkg / "data" / "instructions.py"}
    marks = (r"\d+(?:\.\d", r"seconds?", r"secs?", r"(?:s|sec", r"\d+)\b", r"\s*s\b")
    found = [f"{f.relative_to(pkg.parent)}: {mark}" for f in sorted(pkg.rglob("*.py"))
             if f not in allowed for mark in marks if mark in f.read_text(encoding="utf-8")]
    assert not found, "\n".join(found)
