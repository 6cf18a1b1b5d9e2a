"""The shipped default's accuracy on a few fixed held-out scenes, pinned: a change to the
renderer, the ingest, the samples, the model or its decoding that moves these counts fails here
(the full figure is `python -m llava4d_ros.evaluate`, docs/RESULTS.md).

The scenes are rendered and ingested fresh (no cache), so what is pinned is what a fresh clone
computes. If a change is meant to move the numbers, re-measure with evaluate, update
docs/RESULTS.md and the README, then the counts below.
"""

from __future__ import annotations

import pytest
import torch

from llava4d_ros.answers.policy import answer_questions
from llava4d_ros.data.instructions import seeds_for_split
from llava4d_ros.model.llava4d import LLaVA4D
from llava4d_ros.model.vision import ColourStatsEncoder
from llava4d_ros.training.dataset import build_scene
from llava4d_ros.training.metrics import evaluate_model

pytestmark = pytest.mark.shipped_weights

N_SCENES = 3
# (hits, out of) over the first N_SCENES test scenes, measured with abstention, the `tokens`
# box head, counts of a shape and heading words from the inventory, the default trained on
# look-change tokens dropped over the budget, its time head reading the named object's first
# motion, a stage 5 with the path extent and the presence head fitted to convergence (issue
# 31, round 5: box 33, em 23) and the tokens' flat patches (round 6).
PINNED = {"box": (34, 39), "time": (43, 45), "em": (25, 33)}
SLACK = 1  # one hit either way: float summation order may differ across CPUs and thread counts


@pytest.fixture(scope="module")
def table():
    torch.set_num_threads(1)
    model = LLaVA4D.from_pretrained(None)
    ingest = model.spec.ingest_config()  # as the node ingests for it
    records = [build_scene(seed, ColourStatsEncoder(), ingest)
               for seed in seeds_for_split("test", N_SCENES)]
    per_scene: list = []
    return evaluate_model(model, records, progress=False, per_scene=per_scene), per_scene


def test_shipped_default_accuracy_is_pinned(table):
    table = table[0]["all"]
    got = {key: (table[f"{key}_hits"], table[f"{key}_n"]) for key in PINNED}
    for key, (hits, n) in PINNED.items():
        assert got[key][1] == n, f"{key}: {got[key][1]} questions, pinned {n}"
        assert abs(got[key][0] - hits) <= SLACK, f"{key}: {got[key][0]} hits, pinned {hits}"


def test_each_scene_keeps_its_own_counts_and_they_add_up_to_the_table(table):
    """The intervals (training/intervals.py) draw scenes by these counts."""
    whole, per_scene = table
    assert len(per_scene) == N_SCENES
    for task, row in whole.items():
        for key in ("box", "time", "em"):
            assert sum(s.get(task, {}).get(f"{key}_hits", 0) for s in per_scene) == row[
                f"{key}_hits"]
            assert sum(s.get(task, {}).get(f"{key}_n", 0) for s in per_scene) == row[f"{key}_n"]
    assert len({tuple(sorted(s["all"].items())) for s in per_scene}) > 1  # scenes differ


def test_describes_all_eight_objects_within_the_default_answer_length():
    """A description says a sentence per object: in a scene of 8 (val seed 82) it takes ~101
    word tokens, so at the old limit of 96 it lost its last object. The node's default and the
    model's are one figure: the node's 0 takes the model's."""
    from llava4d_ros.config import NodeConfig
    from llava4d_ros.model.llava4d import MAX_NEW_TOKENS

    assert NodeConfig().max_new_tokens == 0
    torch.set_num_threads(1)
    model = LLaVA4D.from_pretrained(None)
    assert model.max_new_tokens == MAX_NEW_TOKENS == 160
    ingest = model.spec.ingest_config()  # as the node ingests for it
    rec = build_scene(82, ColourStatsEncoder(), ingest, {"n_objects": 8})
    question = next(s["question"] for s in rec.samples if s["task"] == "caption")
    (ans,) = answer_questions(model, [question], rec.tokens, rec.t_ref_s)
    assert len({b.label.split()[0] for b in ans.boxes}) == 8, ans.text
