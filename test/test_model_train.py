"""Training and evaluation plumbing on the tiny preset: stages run, checkpoints load, resume
continues, the metrics score answers as intended."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from llava4d_ros.model.grounding import GroundedBox
from llava4d_ros.model.llava4d import LLaVA4D, ModelAnswer
from llava4d_ros.training.metrics import box_iou, categorical, score
from llava4d_ros.training.task import task_inventory
from llava4d_ros.training.trainer import TrainConfig, train


def train_tiny(out: str, cache: str, **settings) -> str:
    """A run of the tiny preset, as `python -m llava4d_ros.train --config tiny` runs it."""
    return train(TrainConfig.from_preset("tiny", out=out, cache=cache, threads=1, **settings))


def test_box_iou():
    a = [0, 0, 0, 1, 1, 1]
    assert box_iou(a, a) == pytest.approx(1.0)
    assert box_iou(a, [0.5, 0, 0, 1, 1, 1]) == pytest.approx(1 / 3)
    assert box_iou(a, [3, 0, 0, 1, 1, 1]) == 0.0


def test_score_counts_hits_and_misses():
    sample = {"task": "grounding", "categorical": None,
              "answer": "At 2.5s, the red cube is at [1.00, 1.00, 0.20, 0.40, 0.40, 0.40].",
              "slots": [
        {"kind": "time", "value": 2.5}, {"kind": "box", "value": [1, 1, 0.2, 0.4, 0.4, 0.4]}]}
    good = ModelAnswer("At 2.7s, the red cube is at [1.02, 1.0, 0.2, 0.4, 0.4, 0.4].",
                       (GroundedBox("red cube", 2.7, (1.02, 1.0, 0.2, 0.4, 0.4, 0.4)),),
                       times=(2.7,))
    got = score(sample, good)
    assert {k: got[k] for k in ("box_n", "box_hits", "time_n", "time_hits", "em_n",
                                "em_hits")} == {"box_n": 1, "box_hits": 1, "time_n": 1,
                                                "time_hits": 1, "em_n": 0, "em_hits": 0}
    # slots of no object (no object_id) count in neither motion state
    assert got["box_n_moving"] == got["box_n_static"] == 0
    bad = ModelAnswer("At 3.1s, nothing.", (), times=(3.1,))
    assert score(sample, bad)["box_hits"] == 0 and score(sample, bad)["time_hits"] == 0
    # the same slots of object 4: moving when 4 is among the moving ids, else static
    of4 = {**sample, "slots": [{**s, "object_id": 4} for s in sample["slots"]]}
    moving = score(of4, good, frozenset({4}))
    assert (moving["box_n_moving"], moving["box_hits_moving"], moving["time_hits_moving"],
            moving["box_n_static"]) == (1, 1, 1, 0)
    static = score(of4, bad, frozenset({7}))
    assert (static["box_n_static"], static["box_hits_static"], static["time_n_static"],
            static["time_hits_static"], static["box_n_moving"]) == (1, 0, 1, 0, 0)
    caption = {"task": "caption", "categorical": None,
               "answer": "At 1.0s, the red cube is at [0, 0, 0.2, 0.4, 0.4, 0.4] and still. "
                         "At 1.0s, the blue sphere is at [2, 0, 0.2, 0.4, 0.4, 0.4] and still.",
               "slots": [{"kind": "time", "value": 1.0},
                         {"kind": "box", "value": [0, 0, 0.2, 0.4, 0.4, 0.4]},
                         {"kind": "time", "value": 1.0},
                         {"kind": "box", "value": [2, 0, 0.2, 0.4, 0.4, 0.4]}]}
    swapped = ModelAnswer("", (GroundedBox("blue sphere", 1.0, (2, 0, 0.2, 0.4, 0.4, 0.4)),
                               GroundedBox("red cube", 1.0, (0, 0, 0.2, 0.4, 0.4, 0.4))),
                          times=(1.0, 1.0))
    assert score(caption, swapped)["box_hits"] == 2  # matched by label, not position
    assert categorical("heading", "At 1.0s, the red cube is at [..], heading toward -y.") == "-y"
    # which_move is scored as a set: the names come back sorted, whatever the answer's order
    assert categorical("which_move", "The red cube and the blue sphere move.") == \
        "blue sphere and red cube"
    assert categorical("count", "There are 4 objects.") == "4"


def test_tiny_training_stages_and_resume(tmp_path):
    out, cache = str(tmp_path / "run"), str(tmp_path / "cache")
    train_tiny(out, cache, stages=(1,))
    assert os.path.isfile(os.path.join(out, "stage1", "model.safetensors"))
    with open(os.path.join(out, "last", "progress.json")) as f:
        assert json.load(f) == {"stage": 2, "step": 0}
    train_tiny(out, cache, stages=(1, 2, 3), resume=True)
    with open(os.path.join(out, "train_log.jsonl")) as f:
        stages = [json.loads(line)["stage"] for line in f]
    assert stages == [0, 0, 1, 1, 2, 2, 3, 3]  # text warm-up, stages; none repeated
    model = LLaVA4D.from_pretrained(os.path.join(out, "final"))
    assert not model.prompt.zeroed and model.cfg.slot_heads
    # stage 4 alone from a stage-3 model directory (how the shipped heads were refitted)
    out4 = str(tmp_path / "run4")
    train_tiny(out4, cache, stages=(4,), init=os.path.join(out, "stage3"), refine_steps=3)
    with open(os.path.join(out4, "train_log.jsonl")) as f:
        assert {json.loads(line)["stage"] for line in f} == {4}
    model4 = LLaVA4D.from_pretrained(os.path.join(out4, "final"))
    assert model4.cfg == model.cfg and model.cfg.time_head == "question"
    # stage 4 builds the time head it is asked for, and says so in the saved config
    # (and reads more scenes than stages 1-3 when asked: the third is built into the cache)
    cached = sorted(Path(cache).rglob("*.npz"))
    out4c = str(tmp_path / "run4c")
    train_tiny(out4c, cache, stages=(4,), init=os.path.join(out, "stage3"), refine_steps=3,
               time_head="context", pointer_space=True, refine_scenes=3,
               first_motion_tokens="object", first_motion_m=0.01)
    assert len(cached) == 2 and len(list(Path(cache).rglob("*.npz"))) == 3
    model4c = LLaVA4D.from_pretrained(os.path.join(out4c, "final"))
    assert not model.cfg.pointer_space
    assert model4c.cfg == replace(model.cfg, time_head="context", pointer_space=True,
                                  first_motion_tokens="object", first_motion_m=0.01)
    assert model4c.time_head.question_dim == 0 < model4.time_head.question_dim
    # stage 5 alone on a finished model: adds the inventory, leaves everything else as it was
    out5 = str(tmp_path / "run5")
    train_tiny(out5, cache, stages=(5,), init=os.path.join(out4, "final"), bias_steps=3)
    with open(os.path.join(out5, "train_log.jsonl")) as f:
        parts = [json.loads(line) for line in f]
    assert {p["stage"] for p in parts} == {5}
    assert {p["part"] for p in parts} == {"token_colour", "objects", "bias"}
    model5 = LLaVA4D.from_pretrained(os.path.join(out5, "final"))
    # the object envelope and the colours' appearance are fitted on the same windows
    env = model5.cfg.inventory.object_envelope
    assert env is not None and len(env) == 3 and all(lo < hi for lo, hi in env)
    inv = task_inventory(object_envelope=env, space_follows_encoding=True, path_extent=True,
                         flatness=True)
    assert model5.cfg.inventory == inv
    assert model5.cfg == replace(model4.cfg, inventory=inv)
    before, after = model4.state_dict(), model5.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert any(k.startswith("inventory_bias.") and v.abs().sum() > 0 for k, v in after.items()
               if k.endswith("2.weight"))  # the zero-initialised last layers were fitted
    # a new box head alone on the finished model: every other part keeps its numbers
    out6 = str(tmp_path / "run6")
    train_tiny(out6, cache, stages=(4,), init=os.path.join(out5, "final"), refine_steps=3,
               stage4_only="box", box_head="pooled")
    with pytest.raises(ValueError, match="stage4-only"):
        train_tiny(out6, cache, stages=(5,), init=os.path.join(out5, "final"),
                   stage4_only="box")
    model6 = LLaVA4D.from_pretrained(os.path.join(out6, "final"))
    assert model5.cfg.box_head == "tokens"
    assert model6.cfg == replace(model5.cfg, box_head="pooled")
    new = model6.state_dict()
    rest = [k for k in after if not k.startswith("box_head.")]
    assert rest and all(torch.equal(after[k], new[k]) for k in rest)
    assert any(k.startswith("box_head.tokens.") for k in after)
    assert not any(k.startswith("box_head.tokens.") for k in new)
    # a new time head alone, reading the named object's first motion: the rest as it was
    out7 = str(tmp_path / "run7")
    train_tiny(out7, cache, stages=(4,), init=os.path.join(out5, "final"), refine_steps=3,
               stage4_only="time", first_motion_tokens="object", first_motion_m=0.005)
    model7 = LLaVA4D.from_pretrained(os.path.join(out7, "final"))
    assert model7.cfg == replace(model5.cfg, first_motion_tokens="object", first_motion_m=0.005)
    timed = model7.state_dict()
    rest = [k for k in after if not k.startswith("time_head.")]
    assert rest and all(torch.equal(after[k], timed[k]) for k in rest)
    assert not all(torch.equal(after[k], timed[k]) for k in after if k.startswith("time_head."))


def test_a_run_on_ghost_free_tokens_keeps_its_token_settings_and_refuses_others(tmp_path):
    """`--look-change 30 --over-budget drop` (issue 31): the model's config says both, so the
    node and the cache pool its tokens alike; a resume that asks for other tokens is refused."""
    out, cache = str(tmp_path / "run"), str(tmp_path / "cache")
    train_tiny(out, cache, stages=(1,), look_change=30.0, over_budget="drop")
    model = LLaVA4D.from_pretrained(os.path.join(out, "stage1"))
    assert (model.cfg.look_change, model.cfg.over_budget) == (30.0, "drop")
    assert model.cfg.prompt.time_span
    assert model.spec.ingest_config().over_budget == "drop"
    with pytest.raises(ValueError, match="over_budget coarsen asked, drop trained"):
        train_tiny(out, cache, stages=(1, 2), over_budget="coarsen", resume=True)


def test_gradient_checkpointing_of_the_prefix_keeps_losses_and_gradients():
    """The visual prefix's layers recompute in the backward: same losses and gradients,
    fewer activations kept between forward and backward."""
    from helpers.tiny_model import random_tokens
    from llava4d_ros.data.instructions import vocabulary
    from llava4d_ros.model.config import LLaVA4DConfig, tiny_llama
    from llava4d_ros.model.llava4d import build_model
    from llava4d_ros.model.tokenizer import build_tokenizer
    from llava4d_ros.training import checkpointing
    from llava4d_ros.training.losses import window_loss

    tok = build_tokenizer(vocabulary())
    cfg = LLaVA4DConfig(lm=tiny_llama(len(tok), hidden=32, layers=3, heads=4), pointer_dim=16,
                        box_hidden=16, token_budget=200)
    sample = {"question": "where is the red cube at 1.0s", "task": "grounding",
              "answer_template": "at <time> s the red cube is at <box> .", "answer": "",
              "slots": [{"kind": "time", "value": 1.0},
                        {"kind": "box", "value": [0, 0, 0.2, 0.3, 0.3, 0.3]}],
              "targets": [[3, 4], [5]]}
    tokens = random_tokens(200)

    def run(checkpoint: bool) -> tuple[dict, dict, int]:
        torch.manual_seed(0)
        model = build_model(cfg, tok).train()
        checkpointing.prepare(model.lm)
        kept = [0]

        def pack(t):
            kept[0] += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            losses, _ = window_loss(model, tokens, 50.0, [sample, sample],
                                    checkpoint=checkpoint)
        losses["total"].backward()
        grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
        return {k: v.item() for k, v in losses.items()}, grads, kept[0]

    l0, g0, kept0 = run(False)
    l1, g1, kept1 = run(True)
    assert l0 == pytest.approx(l1, rel=1e-6)
    assert g0.keys() == g1.keys() and any(k.startswith("lm.") for k in g0)
    assert all(torch.allclose(g0[k], g1[k], atol=1e-6) for k in g0)
    assert kept1 < 0.8 * kept0, (kept0, kept1)


def test_first_motion_in_training_reads_the_slots_object_by_its_labels():
    from llava4d_ros.training.losses import object_tokens

    w = torch.full((2, 5), 0.2)
    batch = {"labels": torch.tensor([3, 3, 7, 7, 7]), "object": [-1, 7, 3, 9]}
    rows = [1, 3]  # object 7; object 9 has no token
    got = object_tokens(batch, rows, w)
    assert torch.equal(got, torch.tensor([[0.0, 0.0, 1.0, 1.0, 1.0], [0.2] * 5]))
    assert torch.equal(object_tokens(batch, [0], w[:1]), w[:1])  # a slot of no object
    assert torch.equal(w, torch.full((2, 5), 0.2))  # the pointer's weights are left as they were


def test_flags_override_the_preset_without_touching_it():
    """A flag left unset (None), a scene count of 0 or empty stages keep the preset's value,
    as the command always read them; the preset itself is never changed."""
    from llava4d_ros.training.presets import PRESETS

    cfg = TrainConfig.from_preset("smollm2", out="x", refine_steps=None, refine_scenes=0,
                                  bias_steps=7, steps=[1, 2, 3], stages=None, lora_rank=0)
    assert cfg.preset == replace(PRESETS["smollm2"], bias_steps=7, steps=(1, 2, 3),
                                 lora_rank=0)
    assert PRESETS["smollm2"].bias_steps == 3000 and PRESETS["smollm2"].refine_scenes == 480
    assert TrainConfig.from_preset("tiny", out="x", stages=(4, 5)).preset.stages == (4, 5)
    with pytest.raises(ValueError, match="stages"):
        TrainConfig.from_preset("tiny", out="x", stages=(6,))
    with pytest.raises(ValueError, match="stage4-only"):
        TrainConfig.from_preset("tiny", out="x", stages=(5,), stage4_only="box")
    with pytest.raises(ValueError, match="stage4_only"):
        TrainConfig.from_preset("tiny", out="x", stage4_only="pointer")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.out = "y"


def test_the_presence_head_is_fitted_to_the_same_answer_from_any_start():
    """Stage 5's presence head is a logistic regression on (top token probability, log token
    mass): from a start that reads everything as present it still lands where a good start
    does, and separates present colours from absent ones with a few stray tokens."""
    from llava4d_ros.training.stages import fit_presence

    gen = torch.Generator().manual_seed(0)
    n = 400
    present = (torch.rand(n, generator=gen) < 0.5).float()
    mass = torch.where(present > 0, 2.0 + 3.0 * torch.rand(n, generator=gen),
                       0.6 * torch.rand(n, generator=gen))  # log(1 + token mass)
    top = torch.where(present > 0, 0.9 + 0.1 * torch.rand(n, generator=gen),
                      0.8 * torch.rand(n, generator=gen))
    pres_in = torch.stack([top, mass], dim=1)
    heads = []
    for bias, weight in ((5.0, (-1.0, -1.0)), (-1.8, (0.9, 1.2))):
        head = torch.nn.Linear(2, 1)
        with torch.no_grad():
            head.bias.fill_(bias)
            head.weight.copy_(torch.tensor([weight]))
        fit_presence(head, pres_in, present)
        with torch.no_grad():
            assert torch.equal(head(pres_in)[:, 0] > 0, present > 0)
        heads.append(torch.cat([head.weight.detach()[0], head.bias.detach()]))
    assert torch.allclose(heads[0], heads[1], atol=1e-3)
