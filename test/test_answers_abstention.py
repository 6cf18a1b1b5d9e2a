"""Abstention: questions about objects the model does not know, or the window does not hold."""

from __future__ import annotations

import pytest

from llava4d_ros.answers.abstention import NamedObject, abstain_text, named_object
from llava4d_ros.answers.policy import answer_questions
from llava4d_ros.data.vocabulary import COLOURS, SHAPES


@pytest.mark.parametrize("question, expected", [
    ("Where is the mug?", NamedObject("the", unknown="mug")),
    ("Tell me where the kettle is.", NamedObject("the", unknown="kettle")),
    ("Are there any bottles?", NamedObject("any", unknown="bottles")),
    ("Where is the green mug now?", NamedObject("the", "green", unknown="mug")),
    ("Where is the green sphere at 3s?", NamedObject("the", "green", "sphere")),
    ("Is the red block moving now?", NamedObject("the", "red", "cube")),
    ("Where's the blue ball now?", NamedObject("the", "blue", "sphere")),
    ("In which direction is the pink can heading?", NamedObject("the", "pink", "cylinder")),
    ("What is the heading of the purple box?", NamedObject("the", "purple", "cube")),
    ("Where is the moving block?", NamedObject("the", shape="cube")),
    # a name of more than one word, and the words after a name that are not part of it
    ("Where's the coffee mug?", NamedObject("the", unknown="coffee mug")),
    ("Is there a toy car on the table?", NamedObject("a", unknown="toy car")),
    ("Where is the red coffee mug now?", NamedObject("the", "red", unknown="coffee mug")),
    ("Where did the mug go?", NamedObject("the", unknown="mug")),
    ("When did the kettle begin to move?", NamedObject("the", unknown="kettle")),
    ("Is the mug visible?", NamedObject("the", unknown="mug")),
    ("Where is the mug located?", NamedObject("the", unknown="mug")),
    # adjectives before the colour, and a question that opens with its determiner
    ("Find the big red cube.", NamedObject("the", "red", "cube")),
    ("Where is the small red ball?", NamedObject("the", "red", "sphere")),
    ("The red cube at 3s?", NamedObject("the", "red", "cube")),
    ("A mug?", NamedObject("a", unknown="mug")),
])
def test_the_object_a_question_names(question, expected):
    assert named_object(question) == expected


@pytest.mark.parametrize("question", [
    "What objects are in the scene?", "Describe the scene.", "Is anything moving?",
    "How many cubes are there?", "Which objects move?", "What is the moving object?",
    "Where is the red one?", "How many things are in the room?",
])
def test_questions_about_no_one_object_name_none(question):
    assert named_object(question) is None
    assert abstain_text(question) is None


def _probs(present: dict[str, float], shape: dict[str, str]):
    """Inventory probabilities: `present` per colour (others 0.01), each colour's likely shape
    (0.9, the other two 0.05)."""
    return ({c: present.get(c, 0.01) for c in COLOURS},
            {c: {sh: 0.9 if sh == shape.get(c, "cube") else 0.05 for sh in SHAPES}
             for c in COLOURS})


def test_an_unknown_noun_is_declined_whatever_the_window_holds():
    present, shape = _probs({"red": 0.99}, {"red": "cube"})
    assert abstain_text("Where is the mug?", present, shape) == "I do not see a mug."
    assert abstain_text("Where is the orange kettle?") == "I do not see an orange kettle."
    assert abstain_text("Where's the coffee mug?") == "I do not see a coffee mug."


def test_absent_colours_and_shapes_are_declined_from_the_inventory():
    present, shape = _probs({"red": 0.99, "green": 0.3}, {"red": "cube"})
    ask = "Where is the {} at 2s?"
    assert abstain_text(ask.format("red cube"), present, shape) is None
    assert abstain_text(ask.format("red block"), present, shape) is None
    assert abstain_text(ask.format("green cube"), present, shape) == "I do not see a green cube."
    assert abstain_text(ask.format("red ball"), present, shape) == "I do not see a red sphere."
    # the thresholds decide: a shape at 0.05 passes below 0.05, not at the default 0.1
    assert abstain_text(ask.format("red ball"), present, shape, min_shape=0.04) is None
    # without an inventory only unknown nouns are declined
    assert abstain_text(ask.format("green cube")) is None
    # a colour the inventory does not list is one the model cannot see
    assert abstain_text(ask.format("red cube"), {"blue": 0.9}, shape) == (
        "I do not see a red cube.")


@pytest.mark.shipped_weights
def test_the_shipped_default_declines_what_it_cannot_see_and_answers_the_rest():
    from helpers.tiny_model import random_tokens
    from llava4d_ros.data.instructions import seeds_for_split
    from llava4d_ros.data.scene import make_scene
    from llava4d_ros.model.llava4d import LLaVA4D
    from llava4d_ros.model.vision import ColourStatsEncoder
    from llava4d_ros.training.dataset import build_scene

    model = LLaVA4D.from_pretrained()
    seed = seeds_for_split("test", 1)[0]
    rec = build_scene(seed, ColourStatsEncoder(), model.spec.ingest_config())
    there = make_scene(seed).objects[0]
    answers = answer_questions(model, ["Where is the mug?", f"Where is the {there.label} now?",
                                       f"When did the {there.label} stop moving?"],
                               rec.tokens, rec.t_ref_s, max_new_tokens=40)
    assert answers[0].text == "I do not see a mug." and answers[0].boxes == ()
    assert answers[1].text.startswith("At ") and len(answers[1].boxes) == 1
    # not the start time the nearest template would give: what it can say instead
    assert "not when it stopped" in answers[2].text and answers[2].times == ()
    # noise has no compact patch of any colour: nothing there to give a box for
    noise = random_tokens(300, 18, seed=0, t0_s=100.0)
    (answer,) = answer_questions(model, ["Where is the green cube now?"], noise, 100.0)
    assert answer.text == "I do not see a green cube." and answer.boxes == ()


def test_a_model_without_inventory_is_not_gated_by_the_closed_vocabulary(tmp_path):
    from helpers.tiny_model import random_tokens, save_tiny_model
    from llava4d_ros.model.llava4d import LLaVA4D

    model = LLaVA4D.from_pretrained(str(save_tiny_model(tmp_path / "tiny")))
    assert model.cfg.inventory is None
    answer = model.generate("Where is the mug?", random_tokens(64, 18, seed=1), max_new_tokens=4)
    assert answer.text != "I do not see a mug."
