"""Reading what a question asks (answers/intent.py): a question in other words becomes the task
template that asks the same; templates, and questions it cannot read, go on unchanged."""

from __future__ import annotations

import pytest

from llava4d_ros.answers.abstention import named_object
from llava4d_ros.answers.intent import canonical_question, read_intent
from llava4d_ros.data.instructions import (
    is_template_question,
    samples_for_scene,
    seeds_for_split,
)
from llava4d_ros.data.scene import make_scene


# Wordings written for this test, in none of the data's phrasing families.
@pytest.mark.parametrize("question, expected", [
    ("Hey, where did the blue block end up?", "Where is the blue cube now?"),
    ("Give me the location of the green ball 2 seconds ago",
     "Where was the green sphere 2 seconds ago?"),
    ("Where exactly is the yellow tube at 4.5 sec", "Where is the yellow cylinder at 4.5s?"),
    ("Please locate the red cylinder at time 3", "Where is the red cylinder at 3.0s?"),
    ("Red ball position now?", "Where is the red sphere now?"),
    ("At what moment did the purple cube begin moving?",
     "When did the purple cube start moving?"),
    ("When does the orange sphere start to move?", "When did the orange sphere start moving?"),
    ("Which direction is the cyan ball travelling now?", "Where is the cyan sphere heading now?"),
    ("What's the heading of the red box at 2 s?", "Where is the red cube heading at 2.0s?"),
    ("How many blocks are in the room?", "How many cubes are there?"),
    ("What is the total number of things here?", "How many objects are there?"),
    ("How many things are in motion right now?", "How many objects are moving?"),
    ("Are any of the objects moving at 3 seconds?", "Is anything moving at 3.0s?"),
    ("Any movement at six seconds?", "Is anything moving at 6.0s?"),
    ("Which things are moving around?", "Which objects move?"),
    ("Name the objects that move.", "Which objects move?"),
    ("Summarise the scene at 1.5 s", "Describe the scene at 1.5s."),
    ("What do you see at 2 seconds?", "Describe the scene at 2.0s."),
    ("Give me a description of the room at 2.0 seconds", "Describe the scene at 2.0s."),
    ("Where is the red cube moving to?", "Where is the red cube heading now?"),
    ("Since when has the yellow cube been moving?", "When did the yellow cube start moving?"),
    ("What was the position of the cyan cube at the start?", "Where is the cyan cube at 0.0s?"),
])
def test_other_words_become_the_template_that_asks_the_same(question, expected):
    assert canonical_question(question) == expected
    assert is_template_question(expected)


@pytest.mark.parametrize("question, expected", [
    # an unknown thing stays itself, so it is declined downstream, never swapped for a palette one
    ("Is there a mug on the table?", "Where is the mug now?"),
    ("Is the kettle moving right now?", "Is the kettle moving now?"),
    # no time named: the whole window, as the inventory reads it (no template lacks a time)
    ("Did the blue sphere move?", "Is the blue sphere moving?"),
    # no template asks these: the inventory answers them (answers/scene_answers.py)
    ("Is the red box at rest right now?", "Is the red cube still now?"),
    ("Is the green box still?", "Is the green cube still now?"),
    ("Is the blue ball still at 2 s?", "Is the blue sphere still at 2.0s?"),
    ("Is the mug stationary?", "Is the mug still now?"),
    ("What is moving at 3 s?", "Which objects are moving at 3.0s?"),
    ("What is moving right now?", "Which objects are moving now?"),
    # "still moving" is about motion, "still there" about where
    ("Is the green cube still moving?", "Is the green cube moving?"),
    ("Is the cube still there?", "Where is the cube now?"),
    # a time outside any window stays, so it is refused downstream
    ("Could you find the red box at t=30?", "Where is the red cube at 30.0s?"),
    # no template counts one colour, none describes with no time: left in the training notation
    ("How many red blocks are there?", "How many red cubes are there?"),
    ("How many balls are moving?", "How many spheres are moving?"),
    ("Which items are not moving?", "Which objects are not moving?"),
    ("Describe the scene.", "Describe the scene."),
    ("What objects do you see?", "Describe the scene."),
    ("List the objects.", "Describe the scene."),
    ("List the moving objects.", "Which objects move?"),
    # "has it stopped?" is a question about being still, now or at the time named
    ("Has the red box stopped moving?", "Is the red cube still now?"),
    ("Did the blue ball stop at 3 s?", "Is the blue sphere still at 3.0s?"),
    # what no template asks stays as written for the inventory's answer (or its refusal),
    # never the nearest template: "stop" is not "start", "how fast" is not "where"
    ("When did the pink cylinder stop moving?", "When did the pink cylinder stop moving?"),
    ("How fast is the orange can moving?", "How fast is the orange cylinder moving?"),
    ("How far is the red cube from the blue ball?",
     "How far is the red cube from the blue sphere?"),
    ("What colour is the ball?", "What colour is the sphere?"),
    ("what time is it", "What time is it"),
    ("Where is the red one?", "Where is the red one?"),
])
def test_what_it_cannot_map_keeps_its_meaning(question, expected):
    assert canonical_question(question) == expected


def test_a_template_question_goes_on_as_written():
    for seed in seeds_for_split("val", 4):
        for s in samples_for_scene(make_scene(seed), honest=True):
            if s.task == "unknown":  # "Locate the mug now.": a one-word object fills no template
                assert named_object(canonical_question(s.question)) == named_object(s.question)
                continue
            assert is_template_question(s.question), s.question
            assert canonical_question(s.question) == s.question
    assert not is_template_question("Where's the red box?")
    assert not is_template_question("Where is the red cube at 2.5s? Now!")


def test_training_side_phrasings_read_as_their_templates():
    """The data's training-side families word the same questions as the templates (same rng
    for the content): each must read as the template it stands for."""
    n = 0
    for seed in seeds_for_split("val", 6):
        scene = make_scene(seed)
        template = samples_for_scene(scene, honest=True)
        phrased = samples_for_scene(scene, phrasing="train", honest=True)
        for t, p in zip(template, phrased, strict=True):
            if t.task == "unknown":  # the two sides use different unknown nouns
                continue
            asked, meant = read_intent(p.question), read_intent(t.question)
            assert meant is not None and asked is not None, (p.question, t.question)
            assert asked.template() == meant.template(), (p.question, t.question)
            n += 1
    assert n > 140


def test_intent_fields():
    intent = read_intent("tell me where the green can was three seconds ago")
    assert intent is not None and intent.kind == "ground"
    assert intent.object_words() == "green cylinder"
    assert (intent.when.kind, intent.when.seconds) == ("ago", 3.0)
    assert read_intent("count the balls").shape == "sphere"
    assert read_intent("Is it raining?") is None


def test_function_words_after_a_determiner_name_no_object():
    assert named_object("are any of the objects moving") is None
    assert named_object("is a lot of it red") is None
    assert named_object("where is a mug").unknown == "mug"
