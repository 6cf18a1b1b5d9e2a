"""Question normalisation (answers/normalise.py): people's notation in, the training notation out,
and a question in the training notation untouched."""

from __future__ import annotations

import pytest

from llava4d_ros.answers.normalise import normalise_question
from llava4d_ros.data.instructions import samples_for_scene, seeds_for_split
from llava4d_ros.data.scene import make_scene


@pytest.mark.parametrize("question, expected", [
    ("WHERE IS THE RED CUBE AT 2.5S?", "Where is the red cube at 2.5s?"),
    ("where is the red cube at t=2.5?", "Where is the red cube at 2.5s?"),
    ("Where is the red cube at t = 3?", "Where is the red cube at 3s?"),
    ("Position of the red cube at time 4.5?", "Position of the red cube at 4.5s?"),
    ("Where is the red cube at 2.5 sec?", "Where is the red cube at 2.5s?"),
    ("Where is the red cube at three seconds?", "Where is the red cube at 3s?"),
    ("Where was the red cube three seconds ago?", "Where was the red cube 3 seconds ago?"),
    ("Where was the red cube 2 s ago?", "Where was the red cube 2 seconds ago?"),
    ("Where was the red cube one second ago?", "Where was the red cube 1 second ago?"),
    ("Where's the blue ball right now?", "Where is the blue sphere now?"),
    ("Is the green can moving currently?", "Is the green cylinder moving now?"),
    ("How many blocks are there?", "How many cubes are there?"),
    ("Can you count the cans?", "Can you count the cylinders?"),
    ("Where is the orange can?", "Where is the orange cylinder?"),
    ("How many items are there?", "How many objects are there?"),
    ("Which things didn't move?", "Which objects did not move?"),
    ("Can you see the pink tubes?", "Can you see the pink cylinders?"),
    ("  Where   is the red box at the moment? ", "Where is the red cube now?"),
    ("Where was the red box at the beginning?", "Where was the red cube at 0s?"),
])
def test_people_notation_becomes_the_training_notation(question, expected):
    assert normalise_question(question) == expected


def test_questions_in_the_training_notation_are_unchanged():
    for seed in seeds_for_split("val", 5):
        for s in samples_for_scene(make_scene(seed), phrasing="template", honest=True):
            assert normalise_question(s.question) == s.question


@pytest.mark.parametrize("written, training", [
    ("Where is the red cube at t = 4.7s?", "Where is the red cube at 4.7s?"),
    ("where is the red cube at time 5.3 sec?", "Where is the red cube at 5.3s?"),
    ("where is the red cube at t=4.7 s", "Where is the red cube at 4.7s"),
    ("Where is the red cube at t=12?", "Where is the red cube at 12s?"),
    ("where was the red cube 2.5 s ago", "Where was the red cube 2.5 seconds ago"),
    ("At 3.25 seconds where is the blue ball", "At 3.25s where is the blue sphere"),
    ("what time is it", "What time is it"),
])
def test_a_time_keeps_its_decimals_whatever_the_notation(written, training):
    """A time after "t =" or "time" with a unit lost its decimals ("t = 4.7s" became
    "4s.7s", answered at 4 s): the number is read whole."""
    assert normalise_question(written) == training
