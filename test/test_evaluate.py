"""evaluate's scoring: which objects move is a set; counts and times as before."""

from __future__ import annotations

from llava4d_ros.data.instructions import samples_for_scene
from llava4d_ros.data.scene import make_scene
from llava4d_ros.evaluate import categorical, score
from llava4d_ros.model.grounding import parse_answer
from llava4d_ros.model.llava4d import ModelAnswer


def answer(text: str) -> ModelAnswer:
    parsed = parse_answer(text)
    return ModelAnswer(text=text, boxes=parsed.boxes, times=parsed.times)


def which_move_sample(want: str) -> dict:
    return {"task": "which_move", "slots": [], "answer": "", "categorical": want}


def test_which_move_is_scored_as_a_set():
    sample = which_move_sample("red cube and blue sphere")
    for text in ("The red cube and the blue sphere move.",
                 "The blue sphere and the red cube move.",
                 "The blue sphere, the red cube and the blue sphere move."):
        assert score(sample, answer(text))["em_hits"] == 1, text
    for text in ("The red cube moves.", "The red cube, the blue sphere and the pink cube move.",
                 "No object moves."):
        assert score(sample, answer(text))["em_hits"] == 0, text


def test_which_move_none():
    sample = which_move_sample("none")
    assert score(sample, answer("No object moves."))["em_hits"] == 1
    assert score(sample, answer("The red cube moves."))["em_hits"] == 0
    assert categorical("which_move", "The pink sphere moves.") == "pink sphere"


def test_reference_answers_score_full_marks():
    """Every generated reference answer, scored against itself, hits every slot and EM."""
    for seed in (3, 8):
        for s in samples_for_scene(make_scene(seed)):
            d = s.to_dict()
            sc = score(d, answer(s.answer))
            assert sc["box_hits"] == sc["box_n"], s.answer
            assert sc["time_hits"] == sc["time_n"], s.answer
            assert sc["em_hits"] == sc["em_n"], (s.answer, s.categorical)
