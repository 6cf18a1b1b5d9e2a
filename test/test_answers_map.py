"""Answers the object map decides (answers/map_reading.py, answers/map_answers.py), on a
hand-made map of a kitchen: what is there, how many, where, the nearest, moving, colour, the
camera's past, and declines that name what is there."""

from __future__ import annotations

import numpy as np
import pytest

from llava4d_ros.answers.map_answers import MapScene, answer, count_text, inventory
from llava4d_ros.answers.map_reading import read
from llava4d_ros.core.objects import MapObject


def obj(oid: int, category: str, colour: str, center, support: str = "table",
        dynamic: bool = False, shape: str = "", history=()) -> MapObject:
    return MapObject(object_id=oid, center=np.array(center, float), size=np.full(3, 0.1),
                     world_from_box=np.eye(3), category=category,
                     category_confidence=0.6 if category != "object" else 0.1,
                     colour=colour, shape=shape, support=support, first_seen_s=100.0,
                     last_seen_s=130.0, is_dynamic=dynamic, history=tuple(history))


ROOM = [obj(1, "mug", "white", [1.0, 0.0, 0.8]), obj(2, "mug", "red", [1.5, 0.2, 0.8]),
        obj(3, "chair", "brown", [0.5, 1.0, 0.45], support="floor"),
        obj(4, "chair", "brown", [2.5, 1.0, 0.45], support="floor"),
        obj(5, "box", "beige", [1.2, -0.4, 0.85]),
        obj(6, "object", "red", [3.0, 0.0, 0.2], support="floor", shape="cube")]


def camera(stamp_s: float):
    """The camera moved along +x at 0.1 m/s from x = 0 at t = 100 s, 1.2 m up."""
    pose = np.eye(4)
    pose[:3, 3] = [0.1 * (min(max(stamp_s, 100.0), 130.0) - 100.0), 0.0, 1.2]
    return min(max(stamp_s, 100.0), 130.0), pose


SCENE = MapScene(ROOM, now_s=130.0, window_start_s=100.0, camera_at=camera)


def ask(question: str, scene: MapScene = SCENE):
    return answer(read(question), scene)


def test_counts_by_category_support_and_colour():
    assert ask("How many chairs are there?").text == "I see two chairs."
    assert ask("How many objects are on the table?").text == "I see three objects on the table."
    assert ask("How many red mugs do you see?").text == "I see a red mug."
    assert ask("How many bottles are there?").text == "I see no bottles."
    assert {o.object_id for o in ask("how many cups are there").objects} == {1, 2}


def test_lists_what_is_there_with_ids_and_boxes():
    a = ask("What is on the table?")
    assert a.text.startswith("I see two mugs and a box on the table: ")
    assert {o.object_id for o in a.objects} == {1, 2, 5}
    assert "(object 5)" in a.text and "[1.20, -0.40, 0.85]" in a.text
    assert {o.object_id for o in ask("What objects do you see?").objects} == set(range(1, 7))
    for q in ("What objects are in the scene?", "Describe the room."):
        assert {o.object_id for o in ask(q).objects} == set(range(1, 7)), q


def test_declines_what_is_not_there_naming_what_is():
    a = ask("Where is the kettle?")
    assert a.text == ("I see no kettle; I see two mugs, two chairs, a box and a red cube.")
    assert ask("Is there a laptop?").text.startswith("I see no laptop; I see two mugs")
    # a noun no category knows: declined the same way, never a made-up box
    assert ask("Where is the fire extinguisher?").text.startswith("I see no fire")


def test_where_and_nearest():
    a = ask("Where is the box?")
    assert a.text == "The beige box (object 5) is on the table at [1.20, -0.40, 0.85]."
    assert [o.object_id for o in ask("Where are the mugs?").objects] == [1, 2]
    # the camera is at x = 3.0 at t = 130 s: the red cube on the floor is nearest
    near = ask("What is the nearest object?")
    assert near.text == ("The nearest object is the red cube (object 6), on the floor at "
                         "[3.00, 0.00, 0.20], 1.0 m from the camera.")
    assert ask("Where is the closest mug?").objects[0].object_id == 2


def test_colour_and_a_shape_word_for_an_unnamed_object():
    assert ask("What colour is the box?").text == "The box (object 5) is beige."
    assert ask("Where is the red cube?").objects[0].object_id == 6


def test_moving_now_and_in_the_window():
    assert ask("Is anything moving?").text == "No, nothing is moving now."
    assert ask("anything moving?").text == "No, nothing moved in the last 30 s."
    assert ask("What is moving?").text == "Nothing is moving now."  # no yes/no to answer
    moving = MapScene(ROOM[:5] + [obj(6, "object", "red", [3.0, 0.0, 0.2], "floor", True,
                                      "cube")], 130.0, 100.0, camera)
    assert ask("Is anything moving?", moving).text == (
        "Yes, the red cube (object 6) is moving now.")
    assert ask("Which objects are moving?", moving).text == (
        "The red cube (object 6) is moving now.")
    assert ask("How many objects are moving?", moving).text == "An object is moving now."
    assert ask("Is the white mug moving?", moving).text.startswith("No, the white mug")


def test_camera_history():
    assert ask("Where was the camera 10 seconds ago?").text == (
        "10 s ago the camera was at [2.00, 0.00, 1.20], 1.00 m from where it is now.")
    assert ask("Where are you?").text == "The camera is at [3.00, 0.00, 1.20]."


def test_where_a_while_ago_from_the_history():
    moved = obj(7, "chair", "brown", [2.0, 2.0, 0.45], "floor",
                history=[(100.0, np.array([1.0, 2.0, 0.45])), (120.0, np.array([2.0, 2.0,
                                                                                     0.45]))])
    scene = MapScene([moved], 130.0, 100.0, camera)
    a = ask("Where was the chair 20 seconds ago?", scene)
    assert a.text == "20 s ago the brown chair (object 7) was at [1.00, 2.00, 0.45]."
    # before the window: not the map's to say (the memory answers it)
    assert ask("Where was the chair 10 minutes ago?", scene) is None


def test_questions_the_map_leaves_to_the_network():
    for q in ("Where is the red cube at 2.5s?", "When did the red cube start moving?",
              "Describe each object at 2.5s.", "Which way is the pink cube heading?"):
        assert ask(q) is None, q


@pytest.mark.parametrize("question, kind, noun, colour, support", [
    ("How many chairs are there?", "count", "chair", None, None),
    ("what's on the counter?", "list", None, None, "counter"),
    ("Where's my coffee cup?", "where", "coffee cup", None, None),
    ("Is there a kettle in the room?", "presence", "kettle", None, None),
    # the space seen says where to look, not what to find: "I see no scene" was the answer
    ("What objects are in the scene?", "list", None, None, None),
    ("What is in this room?", "list", None, None, None),
    ("How many chairs are in the kitchen?", "count", "chair", None, None),
    ("Is there a picture on the wall?", "presence", "picture", None, None),
    ("Describe the room.", "list", None, None, None),
    ("Describe the scene at 2.5s.", None, "scene", None, None),
    ("Describe each object at 2.5s.", None, None, None, None),
    ("Where is the nearest white mug?", "nearest", "mug", "white", None),
    ("What color is the ball?", "colour", "ball", None, None),
    ("Where was the camera 2 seconds ago?", "camera", None, None, None),
])
def test_reading(question, kind, noun, colour, support):
    a = read(question)
    assert (a.kind, a.noun, a.colour, a.support) == (kind, noun, colour, support)


@pytest.mark.parametrize("question, ago_s, at_s, clock", [
    ("Where was the mug fifteen minutes ago?", 900.0, None, None),
    ("where was the mug twelve seconds back", 12.0, None, None),
    ("where is the red cube at 3.25 seconds?", None, 3.25, None),
    ("where was the mug 1.50 hours ago", 5400.0, None, None),
    ("where was the mug at 9.30?", None, None, (9, 30, 0)),
])
def test_when_a_question_about_the_map_asks(question, ago_s, at_s, clock):
    """"fifteen minutes ago" was read as now (the map's number words stopped at ten), and
    "at 3.25 seconds" or "1.50 hours ago" as the time of day 03:25 or 01:50."""
    a = read(question)
    assert (a.ago_s, a.at_s, a.clock) == (ago_s, at_s, clock)


def test_number_words_and_inventory():
    assert count_text(1, "box") == "a box" and count_text(3, "box") == "three boxes"
    assert count_text(12, "mug") == "12 mugs" and count_text(1, "object") == "an object"
    assert inventory(ROOM) == "two mugs, two chairs, a box and a red cube"


def test_an_unsure_category_is_offered_as_a_guess_never_as_fact():
    """The classifier's best guess for an object it is unsure of is offered, flagged, when the
    question names that category and nothing is sure: never counted as one."""
    unsure = MapObject(object_id=9, center=np.array([0.5, 0.5, 0.8]), size=np.full(3, 0.1),
                       world_from_box=np.eye(3), category="object", category_confidence=0.2,
                       colour="white", shape="cylinder", support="table", first_seen_s=100.0,
                       last_seen_s=130.0, is_dynamic=False,
                       hypotheses=(("bottle", 0.2), ("mug", 0.1)))
    scene = MapScene([unsure, ROOM[2]], 130.0, 100.0, camera)
    a = ask("Where is the bottle?", scene)
    assert a.text.startswith("I am not sure I see any bottles: the white cylinder (object 9)")
    assert "(bottle 0.20)" in a.text and [o.object_id for o in a.objects] == [9]
    assert ask("Where is the mug?", scene).text.startswith("I see no mug;")  # not its best
    assert ask("How many chairs are there?", scene).text == "I see a chair."
