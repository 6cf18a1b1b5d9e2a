"""Answers the scene inventory decides (answers/scene_answers.py) and the object envelope that
keeps a real room's coloured surfaces from being read as palette objects (model/inventory.py)."""

from __future__ import annotations

import pytest
import torch

from llava4d_ros.answers.scene_answers import (
    MIN_SPEED_MPS,
    AskedTime,
    SceneFacts,
    asked_time,
    count_kind,
    is_yes_no_motion,
    scene_answer,
    unsupported,
)
from llava4d_ros.data.vocabulary import COLOURS, SHAPES
from llava4d_ros.model.config import LLaVA4DConfig, tiny_llama
from llava4d_ros.model.inventory import SceneInventory, envelope_features, fits_envelope
from llava4d_ros.training.task import task_inventory


@pytest.mark.parametrize("question, expected", [
    ("Where is the red cube at 2.5s?", AskedTime("at", 2.5)),
    ("where is the red block at 2.5 seconds?", AskedTime("at", 2.5)),
    ("Red ball at t=3.5?", AskedTime("at", 3.5)),
    ("Position of the cyan can at time 4?", AskedTime("at", 4.0)),
    ("Where was the red cube at three seconds?", AskedTime("at", 3.0)),
    ("Where was the red cube 3 s ago?", AskedTime("ago", 3.0)),
    ("WHERE WAS THE RED CUBE TWO SECONDS AGO?", AskedTime("ago", 2.0)),
    ("Is anything moving right now?", AskedTime("now")),
    ("What is currently moving?", AskedTime("now")),
    ("Which ones are moving?", AskedTime("window")),
    ("Where is the mug?", AskedTime("window")),
])
def test_the_time_a_question_asks_about(question, expected):
    assert asked_time(question) == expected


def test_asked_times_in_model_seconds():
    assert AskedTime("at", 2.5).model_time(7.9) == 2.5
    assert AskedTime("ago", 3.0).model_time(7.9) == pytest.approx(4.9)
    assert AskedTime("now").model_time(7.9) == 7.9
    assert AskedTime("window").model_time(7.9) is None


@pytest.mark.parametrize("question", [
    "Is anything moving now?", "Is the red cube moving at 3 s?", "Did the blue ball move?",
    "Tell me if anything is moving.", "Could you tell me whether the red box is moving?",
    "Can you see anything moving right now?", "Red box moving now?", "Anything moving?",
    "Are any objects moving at t=2?",
])
def test_yes_no_questions_about_motion(question):
    assert is_yes_no_motion(question)


@pytest.mark.parametrize("question", [
    "Which objects move?", "What's moving?", "When did the red cube start moving?",
    "How many objects are moving?", "Start of motion of the red block?",
    "Where is the red cube now?", "Describe the scene.", "Is the red cube still there?",
    "List the moving things.", "moving objects?", "Has the red cube stopped moving?",
])
def test_questions_that_are_not_yes_no_about_motion(question):
    assert not is_yes_no_motion(question)


def facts(present: dict[str, str], moving: dict[str, float] | None = None,
          speed_mps: dict[str, float] | None = None, t_end_s: float = 7.9) -> SceneFacts:
    """A window holding `present` {colour: shape}; `moving` P(moves in the window) and a
    constant speed per colour along +x (0 where not given)."""
    moving, speed_mps = moving or {}, speed_mps or {}
    return SceneFacts(
        present={c: 0.95 if c in present else 0.25 for c in COLOURS},
        shape={c: {s: 0.9 if present.get(c) == s else 0.05 for s in SHAPES} for c in COLOURS},
        moving={c: moving.get(c, 0.0) for c in COLOURS}, t_end_s=t_end_s,
        velocity=lambda colour, t_s, sigma_s: (speed_mps.get(colour, 0.0), 0.0))


def test_an_empty_window_recognises_nothing_and_sees_nothing_move():
    empty = facts({})
    assert scene_answer("What objects are in the scene?", empty) == (
        "I do not recognise any known objects.")
    assert scene_answer("How many objects are there?", empty) == (
        "I do not recognise any known objects.")
    assert scene_answer("Is anything moving right now?", empty) == "No, nothing is moving."
    assert scene_answer("Which objects move?", empty) == "No object moves."
    assert scene_answer("Where is the red cube now?", empty) == "I do not see a red cube."
    assert scene_answer("Where is the cube?", empty) == "I do not see a cube."
    assert scene_answer("Where is the kettle?", empty) == "I do not see a kettle."


def test_yes_no_motion_from_the_inventory():
    scene = facts({"red": "cube", "blue": "sphere", "cyan": "cylinder"},
                  moving={"red": 0.9, "blue": 0.9},
                  speed_mps={"red": MIN_SPEED_MPS + 0.1, "blue": MIN_SPEED_MPS - 0.05})
    assert scene_answer("Is anything moving now?", scene) == "Yes, the red cube is moving."
    assert scene_answer("Is the blue ball moving at 3s?", scene) == (
        "No, the blue sphere is not moving.")
    assert scene_answer("Is the red box moving 2 seconds ago?", scene) == (
        "Yes, the red cube is moving.")
    # no time named: whether it moves at all in the window
    assert scene_answer("Did the blue ball move?", scene) == "Yes, the blue sphere is moving."
    assert scene_answer("Did the cyan can move?", scene) == "No, the cyan cylinder is not moving."
    fast = facts({"red": "cube", "blue": "sphere"}, moving={"red": 0.9, "blue": 0.9},
                 speed_mps={"red": 1.0, "blue": 1.0})
    assert scene_answer("Anything moving at 1 s?", fast) == (
        "Yes, the red cube and the blue sphere are moving.")
    # the inventory's "never moves" overrides a noisy speed
    still = facts({"red": "cube"}, moving={"red": 0.1}, speed_mps={"red": 1.0})
    assert scene_answer("Is anything moving now?", still) == "No, nothing is moving."


def test_being_still_is_the_other_way_round():
    scene = facts({"red": "cube", "blue": "sphere"}, moving={"red": 0.9, "blue": 0.9},
                  speed_mps={"red": MIN_SPEED_MPS + 0.1})
    assert scene_answer("Is the blue ball still now?", scene) == "Yes, the blue sphere is still."
    # no time named: now (it moved earlier in the window, not at its end)
    assert scene_answer("Is the blue ball stationary?", scene) == "Yes, the blue sphere is still."
    assert scene_answer("Is everything still?", scene) == "No, the red cube is moving."
    assert scene_answer("Are all the objects stationary at 2 s?", facts({"red": "cube"})) == (
        "Yes, nothing is moving.")
    assert scene_answer("Is everything still?", facts({})) == "Yes, nothing is moving."
    # "anything": one still object will do
    assert scene_answer("Is anything still now?", scene) == "Yes, the blue sphere is still."
    assert scene_answer("Is anything still?", facts({"red": "cube"}, moving={"red": 0.9},
                                                    speed_mps={"red": 1.0})) == (
        "No, the red cube is moving.")
    assert scene_answer("Is anything still?", facts({})) == (
        "I do not recognise any known objects.")
    assert scene_answer("Is the red box stationary at 3s?", scene) == (
        "No, the red cube is moving.")
    # "still moving" asks about motion; "still there" is no yes/no about motion at all
    assert scene_answer("Is the red cube still moving now?", scene) == (
        "Yes, the red cube is moving.")
    assert scene_answer("Is the red cube still there?", scene) is None


def test_which_objects_move_at_a_named_time_from_the_inventory():
    scene = facts({"red": "cube", "blue": "sphere", "cyan": "cylinder"},
                  moving={"red": 0.9, "blue": 0.9},
                  speed_mps={"red": MIN_SPEED_MPS + 0.1, "blue": 1.0})
    assert scene_answer("Which objects are moving at 3.0s?", scene) == (
        "At 3.0s, the red cube and the blue sphere are moving.")
    assert scene_answer("What is moving now?", scene) == (
        "At 7.9s, the red cube and the blue sphere are moving.")
    one = facts({"red": "cube"}, moving={"red": 0.9}, speed_mps={"red": 1.0})
    assert scene_answer("Which objects are moving 2 seconds ago?", one) == (
        "At 5.9s, the red cube is moving.")
    none = facts({"red": "cube"}, moving={"red": 0.9})
    assert scene_answer("What is moving at 1 s?", none) == "At 1.0s, nothing is moving."
    # no time named: the whole window, the LM's template
    assert scene_answer("Which objects move?", scene) is None


def test_an_object_named_unasked_gets_its_shape_only_when_the_inventory_is_sure():
    from llava4d_ros.answers.scene_answers import SHAPE_SURE

    def scene(p_cylinder: float) -> SceneFacts:
        rest = (1.0 - p_cylinder) / 2
        return SceneFacts(present={"orange": 0.9, "red": 0.9},
                          shape={"orange": {"cube": rest, "sphere": rest,
                                            "cylinder": p_cylinder},
                                 "red": {"cube": 0.9, "sphere": 0.05, "cylinder": 0.05}},
                          moving={"orange": 0.9, "red": 0.9}, t_end_s=7.9,
                          velocity=lambda c, t_s, sigma_s: (1.0, 0.0))

    assert scene_answer("What is moving at 3s?", scene(SHAPE_SURE + 0.05)) == (
        "At 3.0s, the orange cylinder and the red cube are moving.")
    assert scene_answer("What is moving at 3s?", scene(SHAPE_SURE - 0.05)) == (
        "At 3.0s, the orange object and the red cube are moving.")
    # a shape the question names is the one the answer says
    assert scene_answer("Is the orange cylinder moving at 3s?", scene(0.4)) == (
        "Yes, the orange cylinder is moving.")


def test_motion_at_the_window_end_is_read_over_a_shorter_span():
    """At the window's end the speed is read from the last NOW_SIGMA_S: a motion that ended
    before it (fast over SIGMA_S, still over NOW_SIGMA_S) is no motion now."""
    from llava4d_ros.answers.scene_answers import NOW_SIGMA_S, SIGMA_S

    scene = SceneFacts(present={"red": 0.9}, shape={"red": {"cube": 0.9}}, moving={"red": 0.9},
                       t_end_s=7.9, velocity=lambda c, t_s, sigma_s: (
                           (1.0, 0.0) if sigma_s == SIGMA_S else (0.0, 0.0)))
    assert NOW_SIGMA_S < SIGMA_S
    assert scene_answer("Is the red cube moving now?", scene) == "No, the red cube is not moving."
    assert scene_answer("Is the red cube moving at 7.8s?", scene) == (
        "No, the red cube is not moving.")
    assert scene_answer("Is the red cube moving at 5s?", scene) == "Yes, the red cube is moving."


@pytest.mark.parametrize("question, kind", [
    ("How many objects are there?", "all"), ("Count the things.", "all"),
    ("Number of items?", "all"), ("How many objects do you see moving?", "moving"),
    ("Can you tell me how many objects are in motion?", "moving"),
    ("How many cubes are there?", None), ("Number of balls?", None),
    ("Where is the red cube?", None), ("Is anything moving?", None),
])
def test_count_questions(question, kind):
    assert count_kind(question) == kind


def test_counts_come_from_the_inventory_past_what_the_lm_saw():
    eight = dict(zip(COLOURS, ("cube", "sphere", "cylinder") * 3))
    assert len(eight) == 8
    scene = facts(eight, moving={"red": 0.9, "blue": 0.9})
    assert scene_answer("How many objects are there?", scene) == "There are 8 objects."
    assert scene_answer("How many objects are moving?", scene) == "2 objects are moving."
    one = facts({"red": "cube"}, moving={"red": 0.9})
    assert scene_answer("How many things are there?", one) == "There is 1 object."
    assert scene_answer("How many objects move?", one) == "1 object is moving."
    assert scene_answer("How many objects move?", facts({"red": "cube"})) == (
        "0 objects are moving.")


def test_counts_of_a_shape_are_the_colours_whose_likeliest_shape_it_is():
    eight = dict(zip(COLOURS, ("cube", "sphere", "cylinder") * 3))  # 3 cubes, 3 spheres, 2 cans
    scene = facts(eight, moving={"red": 0.9})
    assert scene_answer("How many cubes are there?", scene) == "There are 3 cubes."
    assert scene_answer("count the cans", scene) == "There are 2 cylinders."
    assert scene_answer("Number of balls?", scene) == "There are 3 spheres."
    one = facts({"red": "cube", "blue": "sphere"})
    assert scene_answer("How many cubes are there?", one) == "There is 1 cube."
    assert scene_answer("How many cylinders do you see?", one) == "There are 0 cylinders."
    # more than a shape is asked: the LM's
    assert scene_answer("How many red cubes are there?", one) is None
    assert scene_answer("How many balls are moving?", one) is None


def test_times_outside_the_window_name_the_window():
    scene = facts({"red": "cube"}, t_end_s=7.9)
    assert scene_answer("Where is the red cube at 12s?", scene) == (
        "I only see from 0.0s to 7.9s.")
    assert scene_answer("Where was the red cube twenty seconds ago?", scene) == (
        "I only see from 0.0s to 7.9s.")
    assert scene_answer("Where is the red cube at 8.2s?", scene) is None  # within the slack
    assert scene_answer("Where was the red cube 3 s ago?", scene) is None


def test_answerable_questions_go_to_the_lm():
    scene = facts({"red": "cube", "blue": "sphere"}, moving={"red": 0.9})
    for q in ("Where is the red cube at 2.5s?", "Which objects move?", "Describe the scene.",
              "Where is the red cube heading now?", "When did the red cube start moving?"):
        assert scene_answer(q, scene) is None, q
    assert scene_answer("Where is the green cube?", scene) == "I do not see a green cube."


def test_the_envelope_drops_a_colour_spread_over_metres_or_unlike_its_objects():
    gen = torch.Generator().manual_seed(0)
    obj = torch.rand(40, 3, generator=gen) * 0.4  # a 0.4 m object
    wall = torch.rand(40, 3, generator=gen) * torch.tensor([5.0, 0.3, 2.5])  # a 5 m front
    xyz = torch.cat([obj, obj, wall])
    feats = torch.zeros(120, 2)
    feats[40:80, 0] = 3.0  # the second colour's tokens look unlike its training objects
    feats[0, 0] = 3.0  # one odd patch of the first: its best patch still looks right
    w = torch.zeros(4, 120)
    w[0, :40], w[1, 40:80], w[2, 80:] = 0.9, 0.9, 0.9  # colour 3 has no tokens
    mean, precision = torch.zeros(4, 2), torch.eye(2).repeat(4, 1, 1)
    f = envelope_features(w, xyz, feats, mean, precision)
    assert 0.15 < float(f[0, 1]) < 0.3 and float(f[2, 1]) > 1.0 and float(f[3, 1]) == 0.0
    assert f[0, 0] == pytest.approx(torch.log1p(torch.tensor(36.0)))
    assert f[:, 2].tolist() == pytest.approx([0.0, 9.0, 0.0, 0.0])
    env = ((1.0, 5.0), (0.02, 0.85), (0.0, 5.0))
    assert fits_envelope(f, w, env).tolist() == [True, False, False, True]
    # the same tokens, translated and rotated: the spread is the same in any world frame (to
    # float32 rounding of metres 3 m off: 1.3e-5 on some CPUs)
    rot = torch.tensor([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
    assert torch.allclose(envelope_features(w, xyz @ rot.T + 3.0, feats, mean, precision), f,
                          atol=1e-4)


def test_a_colour_outside_the_envelope_reads_as_absent():
    torch.manual_seed(0)
    inv = SceneInventory(feature_dim=4, n_colours=2, n_shapes=3, hidden=8,
                         appearance=True).eval()
    with torch.no_grad():  # colour 0 for a positive first feature, else background
        inv.token_colour[0].weight.zero_()
        inv.token_colour[0].bias.zero_()
        inv.token_colour[0].weight[0, 0] = 1.0
        last = inv.token_colour[2]
        last.weight.zero_()
        last.bias.copy_(torch.tensor([-9.0, -9.0, 0.0]))
        last.weight[0, 0] = 60.0
    inv.set_appearance(torch.tensor([[1.0, 0, 0, 0]]).repeat(2, 1), torch.eye(4).repeat(2, 1, 1))
    n = 50
    features = torch.zeros(n, 4)
    features[:, 0] = 1.0
    t = torch.linspace(0, 4, n)
    motion = torch.zeros(n)
    compact = torch.rand(n, 3) * 0.3
    spread = torch.rand(n, 3) * 4.0
    env = ((0.5, 5.0), (0.02, 0.85), (0.0, 1.0))
    with torch.no_grad():
        kept = inv(features, compact, t, motion, True, env)
        dropped = inv(features, spread, t, motion, True, env)
        unchecked = inv(features, spread, t, motion, True, None)
        absent = inv(torch.zeros(n, 4), spread, t, motion, True, env)
        odd = features.clone()
        odd[:, 1] = 2.0  # still classified colour 0, but 4 squared units from its look
        unlike = inv(odd, compact, t, motion, True, env)
    assert kept.weights[0].sum() > 0 and unchecked.weights[0].sum() > 0
    assert dropped.weights[0].sum() == 0 and unlike.weights[0].sum() == 0
    assert torch.allclose(dropped.present, absent.present, atol=1e-3)
    assert not torch.allclose(unchecked.present, dropped.present)
    with pytest.raises(ValueError, match="appearance"):
        SceneInventory(4, 2, 3, 8)(features, compact, t, motion, True, env)


def test_object_envelope_config_is_checked_and_round_trips():
    with pytest.raises(ValueError, match="object_envelope"):
        task_inventory(object_envelope=((1.0, 5.0), (0.0, 1.0)))
    with pytest.raises(ValueError, match="object_envelope"):
        task_inventory(object_envelope=((5.0, 1.0), (0.0, 1.0), (0.0, 9.0)))
    cfg = LLaVA4DConfig(lm=tiny_llama(50), inventory=task_inventory(
        object_envelope=[[1.2, 5.8], [0.02, 0.85], [0.0, 28.0]]))
    assert cfg.inventory.object_envelope == ((1.2, 5.8), (0.02, 0.85), (0.0, 28.0))
    again = LLaVA4DConfig.from_dict(cfg.to_dict())
    assert again.inventory.object_envelope == cfg.inventory.object_envelope


@pytest.mark.parametrize("velocity, heading", [
    ((0.4, 0.1), "+x"), ((-0.3, 0.0), "-x"), ((0.05, 0.3), "+y"),
    ((0.0, -0.5), "-y"), ((0.3, 0.3), None), ((0.05, 0.05), "none"),
])
def test_the_heading_the_inventory_reads(velocity, heading):
    """Along the axis that dominates by the training answers' rule, "none" below
    MIN_SPEED_MPS, None (no clear axis) on a diagonal."""
    scene = SceneFacts(present={"red": 0.9}, shape={"red": {"cube": 0.9}}, moving={"red": 0.9},
                       t_end_s=7.9, velocity=lambda c, t_s, sigma_s: velocity)
    assert scene.heading("red", 3.0) == heading
    still = SceneFacts(present={"red": 0.9}, shape={"red": {"cube": 0.9}}, moving={"red": 0.1},
                       t_end_s=7.9, velocity=lambda c, t_s, sigma_s: velocity)
    assert still.heading("red", 3.0) == "none"  # the inventory says it never moves


def test_the_heading_words_of_an_answer_are_replaced():
    from llava4d_ros.answers.scene_answers import with_heading

    moving = "At 7.9s, the red cube is at [0.10, 0.20, 0.15, 0.3, 0.3, 0.3], heading toward +x."
    still = "At 7.9s, the red cube is at [0.10, 0.20, 0.15, 0.3, 0.3, 0.3], not moving."
    assert with_heading(moving, "-y") == moving.replace("+x", "-y")
    assert with_heading(moving, "none") == still
    assert with_heading(still, "+y") == still.replace("not moving", "heading toward +y")
    assert with_heading("The red cube did not move.", "+x") == "The red cube did not move."


def test_a_heading_answer_gets_the_inventorys_direction_at_the_asked_time():
    from llava4d_ros.answers.intent import read_intent
    from llava4d_ros.answers.template import inventory_heading
    from llava4d_ros.model.llava4d import ModelAnswer

    # +x until 4 s, then still
    scene = SceneFacts(present={"red": 0.9}, shape={"red": {"cube": 0.9}}, moving={"red": 0.9},
                       t_end_s=7.9, velocity=lambda c, t_s, sigma_s: (
                           (0.5, 0.0) if t_s < 4.0 else (0.0, 0.0)))
    lm = ModelAnswer(text="At 3.0s, the red cube is at [0.1, 0.2, 0.1, 0.3, 0.3, 0.3], "
                          "heading toward -y.", boxes=())
    def heading(question: str) -> ModelAnswer:
        return inventory_heading(read_intent(question), lm, scene)

    assert heading("Where is the red cube heading at 3.0s?").text == lm.text.replace("-y", "+x")
    assert heading("Where is the red cube heading now?").text == (
        lm.text.replace("heading toward -y", "not moving"))
    # not a question about heading: the LM's words
    assert heading("Where is the red cube at 3.0s?") is lm


def test_what_colour_an_object_of_a_shape_is():
    scene = facts({"red": "cube", "yellow": "sphere", "blue": "cylinder", "green": "cylinder"})
    assert scene_answer("What colour is the ball?", scene) == "The sphere is yellow."
    assert scene_answer("Which color is the box?", scene) == "The cube is red."
    assert scene_answer("What colour is the cylinder?", scene) == (
        "There are 2 cylinders: the green cylinder and the blue cylinder.")
    assert scene_answer("What colour is the cube?", facts({"blue": "sphere"})) == (
        "I do not see a cube.")
    assert scene_answer("What colours do you see?", scene) == (
        "I see red, green, blue and yellow objects.")
    # named by colour: present, or declined as any absent object
    assert scene_answer("What colour is the red cube?", scene) == "The red cube is red."
    assert scene_answer("What colour is the pink cube?", scene) == "I do not see a pink cube."
    # about the moving one: no inventory answer says which is meant
    assert scene_answer("What colour is the moving object?", scene) is None
    assert scene_answer("What colour is the thing that is MOVING?", scene) is None


@pytest.mark.parametrize("question, says", [
    ("How fast is the red cube moving?", "not how fast"),
    ("What is the speed of the red box at 3 s?", "not how fast"),
    ("How far is the red cube from the blue sphere?", "not how far apart"),
    ("Which object is closest to the red cube?", "not how far apart"),
    ("When did the red cube stop moving?", "not when it stopped"),
    ("At what time did the red cube come to rest?", "not when it stopped"),
])
def test_what_no_answer_can_say_gets_what_can_be_said(question, says):
    scene = facts({"red": "cube", "blue": "sphere"}, moving={"red": 0.9})
    assert says in unsupported(question)
    assert scene_answer(question, scene) == unsupported(question)
    # an object the window does not hold is declined first
    assert scene_answer(question.replace("red", "pink"), scene).startswith("I do not see")


def test_a_stopped_object_is_a_still_one():
    scene = facts({"red": "cube", "blue": "sphere"}, moving={"red": 0.9, "blue": 0.9},
                  speed_mps={"red": MIN_SPEED_MPS + 0.1})
    assert scene_answer("Has the blue ball stopped moving?", scene) == (
        "Yes, the blue sphere is still.")
    assert scene_answer("Has the red cube stopped?", scene) == "No, the red cube is moving."
    assert scene_answer("Has everything stopped moving?", scene) == (
        "No, the red cube is moving.")
    for q in ("Where is the red cube now?", "When did the red cube start moving?",
              "Which way is the red cube going?", "How many objects are there?"):
        assert unsupported(q) is None, q
