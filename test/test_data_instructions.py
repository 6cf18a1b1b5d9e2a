"""4D instruction samples: every answer is the scene's ground truth, in a closed vocabulary."""

from __future__ import annotations

import re

import numpy as np
import pytest

from llava4d_ros.data.instructions import (
    SPLITS,
    TASKS,
    InstructionSample,
    format_box,
    format_time,
    heading_word,
    iter_samples,
    render_answer,
    samples_for_scene,
    seeds_for_split,
    split_of,
    tokenize,
    vocabulary,
)
from llava4d_ros.data.scene import make_scene

_BOX_RE = re.compile(r"\[([^\]]+)\]")
_TIME_RE = re.compile(r"(?:At|at) (-?\d+\.\d)s")


def _boxes(text: str) -> list[list[float]]:
    return [[float(v) for v in m.split(",")] for m in _BOX_RE.findall(text)]


def _times(text: str) -> list[float]:
    return [float(m) for m in _TIME_RE.findall(text)]


@pytest.fixture(scope="module")
def scenes():
    return [make_scene(seed) for seed in range(12)]


def test_every_task_appears_and_samples_are_well_formed(scenes):
    samples = [s for sc in scenes for s in samples_for_scene(sc)]
    assert {s.task for s in samples} == set(TASKS)
    for s in samples:
        assert s.answer == render_answer(s.answer_template, s.slots)
        assert s.question and s.answer[0].isupper() or s.answer[0].isdigit()
        assert s.split == split_of(s.scene_seed)
        assert isinstance(s.to_dict()["slots"], list)


def test_grounded_answers_are_the_boxes_at_the_asked_times(scenes):
    for scene in scenes:
        for window_start in (0.0, 2.0):
            for s in samples_for_scene(scene, window_start_s=window_start, window_end_s=7.0):
                if s.task not in ("grounding", "heading", "caption"):
                    continue
                boxes, times = _boxes(s.answer), _times(s.answer)
                box_slots = [sl for sl in s.slots if sl["kind"] == "box"]
                assert len(boxes) == len(box_slots) == len(times)
                for box, t_model, slot in zip(boxes, times, box_slots, strict=True):
                    assert slot["t_s"] == t_model
                    truth = scene.object_by_id(slot["object_id"]).box_at(window_start + t_model)
                    np.testing.assert_allclose(slot["value"], truth, atol=1e-6)
                    np.testing.assert_allclose(box, truth, atol=0.005 + 1e-9)
                    assert 0.0 <= t_model <= 7.0 - window_start + 1e-9


def test_ago_and_now_are_relative_to_the_window_end():
    scene = make_scene(4)
    samples = samples_for_scene(scene, window_start_s=1.0, window_end_s=6.0, n_grounding=8)
    ago = [s for s in samples if " ago" in s.question]
    now = [s for s in samples if s.task == "grounding" and s.question.endswith(("now?", "now."))]
    assert ago and now
    for s in ago:
        n = int(re.search(r" (\d+) seconds? ago", s.question).group(1))
        assert s.slots[0]["t_s"] == pytest.approx(5.0 - n)
    for s in now:
        assert s.slots[0]["t_s"] == pytest.approx(5.0)


def test_when_start_is_the_first_waypoint_with_motion(scenes):
    for scene in scenes:
        for s in samples_for_scene(scene, window_start_s=0.5, tasks=["when_start"]):
            obj = scene.object_by_id(s.object_ids[0])
            if obj.start_moving_s is None:
                assert s.categorical == "none" and "did not move" in s.answer
            else:
                assert s.categorical == format_time(obj.start_moving_s - 0.5)
                assert _times(s.answer) == [round(obj.start_moving_s - 0.5, 1)]


def test_which_move_and_counts_match_the_scene(scenes):
    for scene in scenes:
        movers = [o for o in scene.objects if o.is_dynamic]
        by_task = {}
        for s in samples_for_scene(scene, tasks=["which_move", "count"]):
            by_task.setdefault(s.task, []).append(s)
        (which,) = by_task["which_move"]
        assert which.categorical == " and ".join(o.label for o in movers)
        for o in scene.objects:
            assert (o.label in which.answer) == o.is_dynamic
        n_all, n_moving, n_shape = by_task["count"]
        assert n_all.categorical == str(len(scene.objects))
        assert n_moving.categorical == str(len(movers))
        shape = next(sh for sh in ("cube", "sphere", "cylinder") if sh in n_shape.question)
        assert n_shape.categorical == str(sum(o.shape == shape for o in scene.objects))


def test_heading_words_follow_the_velocity(scenes):
    n_moving = 0
    for scene in scenes:
        for s in samples_for_scene(scene, tasks=["heading"], n_heading=4):
            obj = scene.object_by_id(s.object_ids[0])
            v = obj.velocity_at(s.slots[0]["t_s"])
            if s.categorical == "none":
                assert not np.any(v) and "not moving" in s.answer
                continue
            n_moving += 1
            axis = "xy".index(s.categorical[1])
            assert np.sign(v[axis]) == (1 if s.categorical[0] == "+" else -1)
            assert abs(v[axis]) >= 1.5 * abs(v[1 - axis])
            assert f"toward {s.categorical}." in s.answer
    assert n_moving >= 10


def test_heading_word_is_none_when_ambiguous():
    assert heading_word([0.5, 0.1, 0.0]) == "+x"
    assert heading_word([0.0, -0.3, 0.0]) == "-y"
    assert heading_word([0.3, 0.3, 0.0]) is None
    assert heading_word([0.0, 0.0, 0.0]) is None


def test_samples_are_deterministic():
    a = [s.to_dict() for s in samples_for_scene(make_scene(8))]
    b = [s.to_dict() for s in samples_for_scene(make_scene(8))]
    assert a == b


def test_splits_are_deterministic_disjoint_and_roughly_80_10_10():
    seeds = range(2000)
    split = {seed: split_of(seed) for seed in seeds}
    assert split == {seed: split_of(seed) for seed in seeds}
    counts = {name: sum(v == name for v in split.values()) for name in SPLITS}
    assert 0.75 < counts["train"] / 2000 < 0.85
    assert 0.07 < counts["val"] / 2000 < 0.13 and 0.07 < counts["test"] / 2000 < 0.13
    sets = [set(seeds_for_split(name, 50)) for name in SPLITS]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert all(split_of(s) == name for name, ss in zip(SPLITS, sets, strict=True) for s in ss)


def test_vocabulary_covers_every_generated_token():
    vocab = set(vocabulary())
    assert {"<box>", "<time>", ".", "-", "+", "[", "]", ","} <= vocab
    assert {str(d) for d in range(10)} <= vocab
    for s in iter_samples(range(40), window_start_s=0.0):
        for text in (s.question, s.answer, s.answer_template):
            missing = set(tokenize(text)) - vocab
            assert not missing, (text, missing)


def test_formatting_and_tokenizing_numbers():
    assert format_box([1.2, -0.404, 0.25, 0.3, 0.3, 0.3]) == (
        "[1.20, -0.40, 0.25, 0.30, 0.30, 0.30]"
    )
    assert format_box([-0.001, 0, 0, 1, 1, 1]).startswith("[0.00,")  # no "-0.00"
    assert format_time(2.5) == "2.5" and format_time(-0.04) == "0.0"
    assert tokenize("At 12.5s, [-0.10]") == [
        "At", "1", "2", ".", "5", "s", ",", "[", "-", "0", ".", "1", "0", "]",
    ]  # fmt: skip


def test_render_answer_checks_slot_kinds():
    slots = [{"kind": "box", "object_id": 0, "t_s": 1.0, "value": [0, 0, 0, 1, 1, 1]}]
    with pytest.raises(ValueError):
        render_answer("At <time>s.", slots)
    with pytest.raises(ValueError):
        InstructionSample(0, "grounding", "q", "At <time>s, <box>.", tuple(slots), "a")
