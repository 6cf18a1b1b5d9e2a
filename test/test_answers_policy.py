"""The answer policy: what "N seconds ago" counts back from; whose heading word it gives."""

from __future__ import annotations

import re

import pytest

from llava4d_ros.answers.policy import answer_questions

pytestmark = pytest.mark.shipped_weights


def _stated_time(text: str) -> float:
    m = re.match(r"At (\d+(?:\.\d+)?)\s*s", text)
    assert m, text
    return float(m.group(1))


def test_seconds_ago_count_back_from_the_newest_frame_not_the_newest_token():
    """A frame that made no keyframe adds no token: the newest token can be older than the
    newest frame, and "3 seconds ago" is 3 s before the frame the caller says is now."""
    from llava4d_ros.data.instructions import seeds_for_split
    from llava4d_ros.data.scene import make_scene
    from llava4d_ros.model.llava4d import LLaVA4D
    from llava4d_ros.model.vision import ColourStatsEncoder
    from llava4d_ros.training.dataset import build_scene

    model = LLaVA4D.from_pretrained()
    seed = seeds_for_split("test", 1)[0]
    rec = build_scene(seed, ColourStatsEncoder(), model.spec.ingest_config())
    there = make_scene(seed).objects[0]
    q = f"Where was the {there.label} 3 seconds ago?"
    newest_token = float(rec.tokens.t_s.max()) - rec.t_ref_s
    (by_token,) = answer_questions(model, [q], rec.tokens, rec.t_ref_s)
    (by_frame,) = answer_questions(model, [q], rec.tokens, rec.t_ref_s,
                                   t_end_s=rec.t_ref_s + newest_token + 0.4)
    assert abs(_stated_time(by_token.text) - (newest_token - 3)) < 0.051, by_token.text
    assert abs(_stated_time(by_frame.text) - (newest_token + 0.4 - 3)) < 0.051, by_frame.text
    assert len(by_frame.boxes) == 1 and by_frame.boxes[0].t_s is not None
    assert abs(by_frame.boxes[0].t_s - (newest_token + 0.4 - 3)) < 0.051


def test_the_inventorys_heading_word_is_used_only_where_the_model_asks_for_it(monkeypatch):
    """The shipped default's own heading words were measured better on validation than the
    inventory's (issue 31): its config turns the rule off; a model whose config keeps it on
    (`InventoryConfig.heading_words`, the default for older models) still gets it."""
    from dataclasses import replace

    from llava4d_ros.answers import policy
    from llava4d_ros.data.instructions import seeds_for_split
    from llava4d_ros.data.scene import make_scene
    from llava4d_ros.model.llava4d import LLaVA4D
    from llava4d_ros.model.vision import ColourStatsEncoder
    from llava4d_ros.training.dataset import build_scene

    def marked(intent, answer, facts):
        return replace(answer, text="MARK " + answer.text)

    monkeypatch.setattr(policy, "inventory_heading", marked)
    model = LLaVA4D.from_pretrained()
    assert model.cfg.inventory.heading_words is False
    seed = seeds_for_split("test", 1)[0]
    rec = build_scene(seed, ColourStatsEncoder(), model.spec.ingest_config())
    q = f"Where is the {make_scene(seed).objects[0].label} heading now?"
    (own,) = answer_questions(model, [q], rec.tokens, rec.t_ref_s)
    assert own.source == "network" and not own.text.startswith("MARK"), own.text
    model.cfg = replace(model.cfg, inventory=replace(model.cfg.inventory, heading_words=True))
    (ruled,) = answer_questions(model, [q], rec.tokens, rec.t_ref_s)
    assert ruled.text == "MARK " + own.text
