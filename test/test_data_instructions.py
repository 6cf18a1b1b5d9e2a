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


# ------------------------------------------------------------ phrasings and honest answers

from llava4d_ros.data.instructions import (  # noqa: E402
    _FAMILIES,
    ALL_TASKS,
    FAMILY_SPLIT,
    HONEST_TASKS,
    PHRASINGS,
)
from llava4d_ros.data.vocabulary import (  # noqa: E402
    COLOURS,
    SHAPES,
    UNKNOWN_NOUNS_HELDOUT,
    UNKNOWN_NOUNS_TRAIN,
    parse_number,
)

_KINDS = set(_FAMILIES["plain"])


def test_phrasing_families_are_split_and_cover_every_question_kind():
    assert set(FAMILY_SPLIT) == set(_FAMILIES)
    assert set(FAMILY_SPLIT.values()) == {"train", "heldout"}
    for family, kinds in _FAMILIES.items():
        assert set(kinds) == _KINDS, family
    train = {t for f, k in _FAMILIES.items() if FAMILY_SPLIT[f] == "train" for t in
             sum(k.values(), ())}
    held = {t for f, k in _FAMILIES.items() if FAMILY_SPLIT[f] == "heldout" for t in
            sum(k.values(), ())}
    assert not train & held  # no wording on both sides
    assert not set(UNKNOWN_NOUNS_TRAIN) & set(UNKNOWN_NOUNS_HELDOUT)


@pytest.mark.parametrize("phrasing", ["train", "heldout"])
def test_questions_come_from_their_side_of_the_family_split(scenes, phrasing):
    samples = [s for sc in scenes for s in samples_for_scene(sc, phrasing=phrasing, honest=True)]
    families = {s.phrasing for s in samples}
    assert families == {f for f, side in FAMILY_SPLIT.items() if side == phrasing}
    nouns = UNKNOWN_NOUNS_TRAIN if phrasing == "train" else UNKNOWN_NOUNS_HELDOUT
    for s in samples:
        if s.task == "unknown":
            assert s.answer[len("I do not see a "):].strip("n .") in nouns, s.answer


def test_phrasings_vary_like_people_do(scenes):
    text = " ".join(s.question for sc in scenes for ph in ("train", "heldout")
                    for s in samples_for_scene(sc, phrasing=ph, honest=True))
    low = text.lower()
    for word in ("box", "block", "ball", "can", "tube", "things", "items", "ago", "sec",
                 "seconds", "t=", "right now", "currently", "tell me", "show me", "find the",
                 "where's"):
        assert word in low, word
    assert any(w in low.split() for w in ("two", "three", "four", "five")), "number words"
    assert text != low and any(q.isupper() for q in text.split("?"))  # case varies


def test_phrasing_changes_questions_not_answers(scenes):
    for sc in scenes[:4]:
        base = samples_for_scene(sc, honest=True)
        for ph in ("train", "heldout"):
            other = samples_for_scene(sc, phrasing=ph, honest=True)
            # the same answers (the unknown thing's noun is from the phrasing's side)
            assert ([s.answer for s in base if s.task != "unknown"]
                    == [s.answer for s in other if s.task != "unknown"])
            assert [s.question for s in base] != [s.question for s in other]
    # the template samples are those of the shipped model's data, honest or not
    plain = samples_for_scene(scenes[0])
    assert samples_for_scene(scenes[0], honest=True)[:len(plain)] == plain


@pytest.mark.parametrize("split", ["train", "val", "test"])
@pytest.mark.parametrize("phrasing", PHRASINGS)
def test_negatives_are_present_in_every_split(split, phrasing):
    samples = [s for seed in seeds_for_split(split, 3)
               for s in samples_for_scene(make_scene(seed), phrasing=phrasing, honest=True)]
    tasks = {s.task for s in samples}
    assert set(ALL_TASKS) == tasks
    cats = {s.categorical for s in samples}
    assert {"absent", "no", "window", "none"} <= cats


def _numbers(question: str) -> list[float]:
    words = re.findall(r"\d+(?:\.\d+)?|[a-z]+", question.lower())
    return [float(w) if w[0].isdigit() else parse_number(w) for w in words
            if w[0].isdigit() or parse_number(w) is not None]


def test_honest_answers_follow_the_scene_truth(scenes):
    for sc in scenes:
        t_end = round(float(sc.frame_times_s[-1]), 1)
        held = {o.label for o in sc.objects}
        for s in samples_for_scene(sc, phrasing="train", honest=True, tasks=HONEST_TASKS):
            if s.task == "absent":
                label = s.answer.removeprefix("I do not see ").split(" ", 1)[1].rstrip(".")
                colour, shape = label.split()
                assert colour in COLOURS and shape in SHAPES and label not in held
            elif s.task == "unknown":
                noun = s.answer.rstrip(".").split()[-1]
                assert noun not in COLOURS and noun not in SHAPES
                assert noun in s.question.lower()
            elif s.task == "is_moving":
                t = s.window_end_s if not _numbers(s.question) else _numbers(s.question)[0]
                movers = {o.object_id for o in sc.objects if o.is_moving_at(t)}
                if s.answer.startswith("Yes"):
                    assert s.categorical == "yes" and set(s.object_ids) <= movers
                    assert set(s.object_ids)
                else:
                    assert s.categorical == "no" and not set(s.object_ids) & movers
                    if "nothing" in s.answer:
                        assert not movers
            elif s.task == "out_of_window":
                assert s.answer == f"I only see from 0.0s to {t_end:.1f}s."
                n = max(_numbers(s.question))
                assert n > t_end  # after the end, or that many seconds ago: before the start


def test_counts_reach_the_most_objects_the_generator_makes():
    crowded = make_scene(3, n_objects=8)
    counts = [s for s in samples_for_scene(crowded, tasks=["count"]) if "moving" not in s.question
              and s.categorical == "8"]
    assert counts and counts[0].answer == "There are 8 objects."
    assert {len(make_scene(seed, max_objects=8).objects) for seed in range(40)} >= {7, 8}


def test_extended_vocabulary_covers_phrasings_and_honest_answers(scenes):
    vocab = set(vocabulary(extended=True))
    assert set(vocabulary()) <= vocab
    for sc in scenes:
        for ph in PHRASINGS:
            for s in samples_for_scene(sc, phrasing=ph, honest=True):
                if s.task == "unknown":
                    continue  # the unknown thing's noun need not be a token
                missing = set(tokenize(s.question + " " + s.answer)) - vocab
                assert not missing, (s.question, s.answer, missing)
