"""evaluate: which objects move is scored as a set; the honesty figures (refusals, repetition,
invented objects) are recognised and counted; the real kitchen (7-Scenes frames 0-299)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from llava4d_ros.answers.map_answers import count_text
from llava4d_ros.answers.policy import answer_questions
from llava4d_ros.core.pipeline import IngestConfig
from llava4d_ros.data.instructions import (
    ALL_TASKS,
    HONEST_TASKS,
    PHRASINGS,
    samples_for_scene,
    vocabulary,
)
from llava4d_ros.data.scene import make_scene
from llava4d_ros.model.config import LLaVA4DConfig, tiny_llama
from llava4d_ros.model.grounding import parse_answer
from llava4d_ros.model.llava4d import LLaVA4D, ModelAnswer, build_model
from llava4d_ros.model.tokenizer import build_tokenizer
from llava4d_ros.training.dataset import build_scene
from llava4d_ros.training.honesty import KITCHEN_QUESTIONS, honesty, kitchen_window
from llava4d_ros.training.metrics import (
    abstains,
    categorical,
    names_palette_object,
    repeats_a_sentence,
    score,
)


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


def test_honest_answers_are_recognised():
    assert abstains("I do not see a mug.") and abstains("I don't see a green sphere.")
    assert abstains("I only see from 0.0s to 7.9s.")
    assert not abstains("At 2.0s, the red cube is at [0.00, 0.00, 0.15, 0.30, 0.30, 0.30].")
    assert categorical("absent", "I do not see a mug.") == "absent"
    assert categorical("unknown", "The red cube moves.") == ""
    assert categorical("is_moving", "No, nothing is moving.") == "no"
    assert categorical("is_moving", "Yes, the red cube is moving.") == "yes"
    assert categorical("is_moving", "The red cube moves.") == ""
    assert categorical("out_of_window", "I only see from 0.0s to 7.9s.") == "window"


@pytest.mark.parametrize("answer, start", [
    ("The red cube started moving at 2.5s.", "2.5"),
    ("The red cube started moving at 2.5 sec.", "2.5"),
    ("It started at 3 seconds.", "3.0"),
    ("At .5s the red cube started moving.", "0.5"),
    ("The red cube did not move.", "none"),
])
def test_when_an_object_started_is_read_as_the_answer_parser_reads_a_time(answer, start):
    """"2.5 sec" was not read and ".5s" was read as 5.0: the metric read times with its own
    pattern instead of the one answers are parsed with (core/notation.py)."""
    assert categorical("when_start", answer) == start


def test_repetition_and_invented_objects_are_detected():
    assert repeats_a_sentence("The red cube moves. The red cube moves.")
    assert not repeats_a_sentence("The red cube moves. The blue cube moves.")
    assert names_palette_object("At 3.0s, the pink cylinder is at [0, 0, 0, 1, 1, 1].")
    assert names_palette_object("the Red BALL is still")
    assert not names_palette_object("I do not see a kettle. Nothing is moving.")
    assert not names_palette_object("A gray object is on the counter.")
    # declining the object a question names invents nothing; naming one after it does
    assert not names_palette_object("I do not see a red cube.")
    assert names_palette_object("I do not see a red cube. The pink cylinder moves.")


@pytest.mark.shipped_weights
def test_honesty_report_counts_every_question():
    """A tiny untrained model on one synthetic scene: every figure is counted."""
    tok = build_tokenizer(vocabulary())
    cfg = LLaVA4DConfig(lm=tiny_llama(len(tok), hidden=32, layers=2, heads=4), pointer_dim=16,
                        box_hidden=16, token_budget=128)
    torch.manual_seed(0)
    model = build_model(cfg, tok).eval()
    rec = build_scene(3, model.patch_encoder, IngestConfig(token_budget=128))
    r = honesty(model, [rec], max_new_tokens=4, progress=False)
    assert set(r["phrasing"]) == set(PHRASINGS)
    n = {p: c["n"] for p, c in r["phrasing"].items()}
    assert len(set(n.values())) == 1 and n["template"] > 10
    assert set(r["honest"]) == set(HONEST_TASKS) and set(ALL_TASKS) > set(HONEST_TASKS)
    assert r["false_abstention"][0] == 3 * n["template"]
    assert r["repetition"]["n"] == sum(n.values()) + sum(
        by[p][0] for by in r["honest"].values() for p in by)


@pytest.mark.parametrize("rules", [True, False])
def test_honesty_asks_with_the_policy_it_is_given(monkeypatch, rules):
    """`evaluate --honesty --policy none` ran the honesty questions with the rules all the
    same: the network-alone figures were the policy's."""
    import llava4d_ros.training.honesty as honesty_mod
    from llava4d_ros.answers.policy import PolicyAnswer

    asked = []

    def fake_answers(model, questions, tokens, t_ref_s, max_new_tokens, **kw):
        asked.append(kw["rules"])
        return [PolicyAnswer(text="I do not see it.") for _ in questions]

    monkeypatch.setattr(honesty_mod, "answer_questions", fake_answers)
    rec = SimpleNamespace(seed=3, tokens=None, t_ref_s=0.0)
    r = honesty(None, [rec], progress=False, rules=rules)
    assert asked and set(asked) == {rules}
    assert r["false_abstention"][0] > 0


# ------------------------------------------------------------------ the real kitchen

KITCHEN = Path(__file__).resolve().parents[2] / "shared" / "data" / "7scenes-redkitchen"


@pytest.fixture(scope="module")
def kitchen():
    if not (KITCHEN / "associations.txt").exists():
        pytest.skip(f"7-Scenes RedKitchen data not found at {KITCHEN}")
    torch.set_num_threads(1)
    model = LLaVA4D.from_pretrained(None)
    tokens, t_ref, scene = kitchen_window(model, str(KITCHEN), frames=300)
    return model, tokens, t_ref, scene


def test_kitchen_answers_stand_on_the_object_map(kitchen):
    """Frames 0-299 of a real kitchen through the node's path: the object map holds its
    objects, so questions about them are answered from it, every object an answer names is a
    map object (no invented one), nothing moves, and an absent kettle is declined naming what
    is there."""
    model, tokens, t_ref, scene = kitchen
    answers = dict(zip(KITCHEN_QUESTIONS, answer_questions(model, list(KITCHEN_QUESTIONS),
                                                           tokens, t_ref, scene=scene)))
    ids = {o.object_id for o in scene.objects}
    assert len(ids) >= 5
    for q, a in answers.items():
        assert {o.object_id for o in a.objects} <= ids, q
        assert not names_palette_object(a.text) or a.objects, (q, a.text)
    listed = answers["What objects are in the scene?"]
    assert listed.source == "map" and len(listed.objects) == len(ids)
    assert answers["Is anything moving right now?"].text == "No, nothing is moving now."
    kettle = answers["Where is the kettle?"].text
    assert kettle.startswith("I see no kettle; I see ") and kettle.endswith(".")
    assert answers["How many objects are there?"].text == (
        f"I see {count_text(len(ids), 'object')}.")



def test_ablation_table_shows_moving_objects_apart(capsys):
    from llava4d_ros.training.metrics import print_ablation

    row = {"sacc": 0.8, "tacc": 0.9, "em": 0.7, "sacc_moving": 0.65, "tacc_moving": float("nan")}
    print_ablation([("full", "runs/full", row), ("time", "runs/time", {**row, "sacc": 0.5})])
    lines = capsys.readouterr().out.strip().splitlines()
    assert "moving SAcc" in lines[1] and "moving TAcc" in lines[1]
    assert lines[2].split() == ["full", "0.800", "0.900", "0.700", "0.650", "-", "runs/full"]
    assert lines[3].split()[:2] == ["time", "0.500"]


def scene(hits: int, n: int, task: str = "grounding") -> dict:
    counts = {"box_hits": hits, "box_n": n}
    return {task: counts, "all": dict(counts)}


def test_an_interval_over_scenes_that_agree_is_a_point():
    from llava4d_ros.training.intervals import interval

    assert interval([scene(3, 4)] * 10, "all", "sacc") == (0.75, 0.75)
    lo, hi = interval([scene(3, 4)] * 10, "all", "tacc")  # no time slots anywhere
    assert np.isnan(lo) and np.isnan(hi)


def test_an_interval_holds_the_figure_and_narrows_with_more_scenes():
    from llava4d_ros.training.intervals import interval

    def width(n_scenes: int) -> float:
        rows = [scene(k % 2 * 4, 4) for k in range(n_scenes)]  # half the scenes right
        lo, hi = interval(rows, "grounding", "sacc")
        assert lo < 0.5 < hi
        return hi - lo

    assert width(160) < 0.6 * width(20)


def test_a_paired_difference_sees_a_small_lead_that_the_scenes_share():
    """Scenes from all right to all wrong, and a model one box better in each: unpaired, the
    two intervals overlap; paired, the lead's interval stays above zero."""
    from llava4d_ros.training.intervals import difference, interval

    a = [scene(k % 11, 10) if k % 11 < 10 else scene(10, 10) for k in range(40)]
    b = [scene(max(s["all"]["box_hits"] - 1, 0), 10) for s in a]
    d, lo, hi = difference(a, b, "all", "sacc")
    assert d > 0 and 0 < lo <= d <= hi
    assert interval(b, "all", "sacc")[1] > interval(a, "all", "sacc")[0]  # overlap unpaired
    assert difference(a, a, "all", "sacc") == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="same scenes"):
        difference(a, a[:-1])


def test_the_interval_tables_print_a_row_per_task_and_per_model(capsys):
    from llava4d_ros.training.intervals import print_differences, print_intervals

    rows = [scene(k % 3, 2) for k in range(9)]
    print_intervals(rows)
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].startswith("95% intervals over the 9 scenes")
    assert [line.split()[0] for line in out[2:]] == ["grounding", "all", "moving"]
    lo, hi = (float(v.strip("[],")) for v in out[3].split()[1:3])
    assert lo < 0.5 < hi and out[3].split()[3] == "-"  # half right; no time slots
    print_differences(("full", rows), [("runs/time", rows)])
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].startswith("full minus each")
    assert out[2].split()[:4] == ["runs/time", "+0.000", "[0.000,", "0.000]"]
