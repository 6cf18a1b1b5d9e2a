"""Box confidence: the raw score from the pointer, the monotone calibration fitted to it, the
table's round trip through config.json, the confidence on an answer's boxes, and the
reliability table that checks it. Tiny models, real code paths."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from test_model_decode import steered_model

from helpers.tiny_model import random_tokens, save_tiny_model
from llava4d_ros.model.checkpoint import read_config
from llava4d_ros.model.config import LLaVA4DConfig, tiny_llama
from llava4d_ros.model.decoding import SlotValue, box_raw_score, write_slots
from llava4d_ros.model.grounding import calibrated, parse_answer
from llava4d_ros.model.shipped import model_dir
from llava4d_ros.model.tokenizer import SLOT_BOX, SLOT_TIME
from llava4d_ros.training.calibration import fit_isotonic, reliability, write_confidence_table

TABLE = ((0.0, 0.125), (0.5, 0.25), (1.0, 0.5))


def test_isotonic_fit_pools_violators_by_hand():
    # 0.2 is wrong after a right 0.1: pooled to 0.5; 0.3 and 0.4 both right: one block
    table = fit_isotonic([0.1, 0.2, 0.3, 0.4], [1, 0, 1, 1])
    assert np.allclose(table, [(0.15, 0.5), (0.35, 1.0)])
    assert fit_isotonic([0.5, 0.5, 0.9], [0, 1, 1]) == ((0.5, 0.5), (0.9, 1.0))  # ties pool


def test_calibration_fit_is_monotone_and_maps_into_the_unit_interval():
    rng = np.random.default_rng(0)
    raw = rng.uniform(0, 1, 400)
    right = rng.uniform(0, 1, 400) < 0.2 + 0.6 * raw ** 2  # noisy: many local violations
    table = fit_isotonic(raw, right)
    knots = np.asarray(table)
    assert len(table) > 2
    assert np.all(np.diff(knots[:, 0]) > 0) and np.all(np.diff(knots[:, 1]) >= 0)
    grid = np.linspace(-0.5, 1.5, 201)  # beyond the knots too
    probs = np.array([calibrated(x, table) for x in grid])
    assert probs.min() >= 0.0 and probs.max() <= 1.0
    assert np.all(np.diff(probs) >= 0)
    assert probs[-1] > probs[0] + 0.3  # it follows the trend, not a constant
    assert LLaVA4DConfig(lm=tiny_llama(99), confidence_table=table).confidence_table == table


def test_without_a_table_the_raw_score_is_clipped():
    assert calibrated(0.3, None) == 0.3
    assert calibrated(-0.2, None) == 0.0 and calibrated(1.7, None) == 1.0
    assert calibrated(0.75, TABLE) == pytest.approx(0.375)
    assert calibrated(-1.0, TABLE) == 0.125 and calibrated(2.0, TABLE) == 0.5


@pytest.mark.parametrize("bad", [((0.5, 0.2), (0.4, 0.3)),  # raw not increasing
                                 ((0.1, 0.6), (0.9, 0.3)),  # probability decreasing
                                 ((0.1, 0.2), (0.9, 1.5)),  # beyond 1
                                 ()])
def test_a_table_that_is_not_a_monotone_map_is_refused(bad):
    with pytest.raises(ValueError, match="confidence_table"):
        LLaVA4DConfig(lm=tiny_llama(99), confidence_table=bad)


@pytest.mark.shipped_weights
def test_the_table_round_trips_through_config_json(tmp_path):
    path = save_tiny_model(tmp_path / "m")
    before = json.loads((path / "config.json").read_text())
    assert read_config(str(path)).confidence_table is None  # absent: raw passed through
    write_confidence_table(str(path), TABLE)
    after = json.loads((path / "config.json").read_text())
    before.pop("confidence_table")  # written as null by a model saved without one
    assert {k: v for k, v in after.items() if k != "confidence_table"} == before
    cfg = read_config(str(path))
    assert cfg.confidence_table == TABLE
    assert LLaVA4DConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert read_config(model_dir(None)).confidence_table is not None  # shipped calibrated


def test_raw_score_is_the_pointers_weight_near_the_box():
    xyz = torch.tensor([[0.0, 0.0, 0.0], [0.1, 0.0, 0.0], [0.28, 0.0, 0.0], [3.0, 0.0, 0.0]])
    box6 = torch.tensor([0.0, 0.0, 0.0, 0.4, 0.4, 0.4])  # half-size 0.2, grown: 0.3
    assert box_raw_score(torch.tensor([0.5, 0.2, 0.3, 0.0]), xyz, box6) == 1.0
    assert box_raw_score(torch.tensor([0.0, 0.0, 0.0, 1.0]), xyz, box6) == 0.0
    assert box_raw_score(torch.tensor([0.25, 0.25, 0.25, 0.25]), xyz, box6) == 0.75


def test_slot_boxes_reach_the_answer_by_where_they_were_written():
    box = SlotValue.of_box([1.004, -0.001, 0.5, 0.3, 0.3, 0.3], 0.25)
    assert box.text == "[1.00, 0.00, 0.50, 0.30, 0.30, 0.30]" and box.box6[0] == 1.0
    text, where = write_slots(f"At {SLOT_TIME}s, the red cube is at {SLOT_BOX}.",
                              [SlotValue.of_time(2.46), box])
    assert text == "At 2.5s, the red cube is at [1.00, 0.00, 0.50, 0.30, 0.30, 0.30]."
    assert list(where) == [text.index("[")]
    (got,) = parse_answer(text, where).boxes
    assert (got.label, got.t_s, got.confidence) == ("red cube", 2.5, 0.25)
    # a stray "<time>" before the box: the box's offset follows the text it moved
    text, where = write_slots(f"{SLOT_TIME} {SLOT_BOX}", [box, SlotValue.of_time(1.0)])
    assert list(where) == [text.index("[")]
    assert parse_answer(text, where).boxes[0].confidence == 0.25
    assert parse_answer(text).boxes[0].confidence == 1.0  # text alone: no score


SENTENCE = {"At": SLOT_TIME, SLOT_TIME: "s", "s": ",", ",": "the", "the": "red", "red": "cube",
            "cube": "is", "is": "at", "at": SLOT_BOX, SLOT_BOX: "."}


def test_boxes_of_an_answer_carry_the_heads_calibrated_confidence():
    # "At <time>s, the red cube is at <box>." (then the same again: a repeat, the end)
    model = steered_model(lambda w: SENTENCE.get(w, "At"))
    tokens = random_tokens(40)
    raw = model.generate("Where is the red cube?", tokens, 50.0)  # no table: the raw score
    model.cfg = replace(model.cfg, confidence_table=TABLE)
    ans = model.generate("Where is the red cube?", tokens, 50.0)
    assert ans.text == raw.text  # confidence never changes what is said
    (box,) = ans.boxes
    assert 0.0 <= raw.boxes[0].confidence <= 1.0
    assert box.confidence == pytest.approx(calibrated(raw.boxes[0].confidence, TABLE))
    assert 0.125 <= box.confidence <= 0.5  # from the table, not the text's default 1.0
    (text_box,) = parse_answer(ans.text).boxes
    assert (box.label, box.t_s, box.box6) == ("red cube", text_box.t_s, text_box.box6)


def test_reliability_table_and_ece_by_hand():
    conf = [0.1, 0.1, 0.5, 0.9, 0.9, 0.9, 0.2, 1.0]
    right = [0, 1, 1, 1, 1, 0, 1, 1]
    rows, ece = reliability(conf, right, bins=5)
    assert [r["n"] for r in rows] == [2, 1, 1, 0, 4]  # 0.2 opens the second bin, 1.0 the last
    assert rows[0]["confidence"] == pytest.approx(0.1) and rows[0]["right"] == 0.5
    assert rows[4]["confidence"] == pytest.approx(0.925) and rows[4]["right"] == 0.75
    assert np.isnan(rows[3]["right"])
    # (2 |0.1 - 0.5| + |0.2 - 1| + |0.5 - 1| + 4 |0.925 - 0.75|) / 8
    assert ece == pytest.approx((0.8 + 0.8 + 0.5 + 0.7) / 8)
    assert reliability([0.25, 0.25, 0.25, 0.25], [1, 0, 0, 0])[1] == pytest.approx(0.0)
