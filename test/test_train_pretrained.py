"""Training LLaVA-4D on a pretrained LM (`train --lm`) and the checkpoints that keep only the
LM's changes (model/lm_delta.py): a tiny random Llama saved as an HF directory stands in for
SmolLM2."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file

from helpers.tiny_lm import save_lm
from llava4d_ros.model import lm_delta
from llava4d_ros.model.checkpoint import CheckpointError
from llava4d_ros.model.llava4d import LLaVA4D
from llava4d_ros.training.trainer import TrainConfig, train


def test_delta_encoding_round_trip_and_kinds():
    g = torch.Generator().manual_seed(0)
    base = {"emb": torch.randn(50, 8, generator=g), "q": torch.randn(16, 8, generator=g),
            "mlp": torch.randn(16, 8, generator=g), "norm": torch.ones(8),
            "odd": torch.randn(16, 8, generator=g)}
    low = torch.randn(16, 2, generator=g) @ torch.randn(2, 8, generator=g)
    emb = torch.cat([base["emb"], torch.randn(3, 8, generator=g)])  # three tokens added
    emb[7] += 1.0
    state = {"emb": emb, "q": base["q"] + low, "mlp": base["mlp"].clone(), "norm": base["norm"],
             "odd": base["odd"] + torch.randn(16, 8, generator=g)}  # full rank: kept whole
    delta = lm_delta.encode(state, base, max_rank=4)
    assert sorted(delta) == sorted([
        "lm_delta.emb.rows", "lm_delta.emb.values", "lm_delta.q.u", "lm_delta.q.v",
        "lm_delta.odd.full"])
    assert delta["lm_delta.emb.rows"].tolist() == [7, 50, 51, 52]
    assert delta["lm_delta.q.u"].shape == (16, 2)
    back = lm_delta.decode(delta, base, {k: v.shape for k, v in state.items()})
    for k, v in state.items():
        assert torch.allclose(back[k], v, atol=1e-5), k


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny-preset run on a tiny random Llama with LoRA: (run dir, LM dir, cache)."""
    root = tmp_path_factory.mktemp("pretrained_run")
    lm = save_lm(root / "lm")
    out, cache = str(root / "run"), str(root / "cache")
    train(TrainConfig.from_preset("tiny", out=out, cache=cache, threads=1, lm=lm, lora_rank=2,
                                  samples_per_window=3, stages=(1, 2, 3, 5)))
    return out, lm, cache


def test_pretrained_lm_run_keeps_the_base_and_saves_only_changes(trained):
    out, lm, _ = trained
    with open(os.path.join(out, "train_log.jsonl")) as f:
        stages = [json.loads(line)["stage"] for line in f]
    # no text warm-up for a pretrained LM; stage 5 logs its parts
    assert stages[:6] == [1, 1, 2, 2, 3, 3] and set(stages[6:]) == {5}
    final = os.path.join(out, "final")
    with open(os.path.join(final, "config.json")) as f:
        cfg = json.load(f)
    # the output bias moves the answers' tokens and the inventory's words, not the vocabulary
    bias_ids = cfg["inventory"]["bias_ids"]
    assert 20 < len(bias_ids) < cfg["lm"]["vocab_size"] // 2
    assert cfg["lm_weights"] == "delta" and cfg["lm_source"]["path"] == os.path.abspath(lm)
    stored = load_file(os.path.join(final, "model.safetensors"))
    assert not any(k.startswith("lm.") for k in stored)  # the base's weights are not copied
    ranks = {v.shape[1] for k, v in stored.items() if k.endswith(".u")}
    assert ranks and max(ranks) <= 2  # merged LoRA updates, at most the adapters' rank
    assert all("self_attn" in k for k in stored if k.endswith(".u"))
    assert stored["inventory_bias.glob.2.bias"].shape == (len(bias_ids),)
    assert float(stored["inventory_bias.glob.2.bias"].abs().sum()) > 0  # fitted
    model = LLaVA4D.from_pretrained(final)
    base = lm_delta.read_base(lm)
    own = {k[3:]: v for k, v in model.state_dict().items() if k.startswith("lm.")}
    assert torch.equal(own["model.layers.0.mlp.up_proj.weight"],
                       base["model.layers.0.mlp.up_proj.weight"])
    emb, emb0 = own["model.embed_tokens.weight"], base["model.embed_tokens.weight"]
    assert torch.equal(emb[:emb0.shape[0]], emb0)  # the LM's own vocabulary untouched
    assert emb.shape[0] == emb0.shape[0] + 3  # <image>, <box>, <time>
    assert not torch.allclose(own["model.layers.0.self_attn.q_proj.weight"],
                              base["model.layers.0.self_attn.q_proj.weight"])


def test_stage4_on_a_pretrained_lm_refits_the_heads_and_keeps_the_lm(trained, tmp_path):
    """Stage 4 alone on a finished delta checkpoint (how the shipped SmolLM2 model got its
    heads): the LM and its changes stay as they were, the heads are new, the save is a delta."""
    out, lm, cache = trained
    out4 = str(tmp_path / "run4")
    train(TrainConfig.from_preset("tiny", out=out4, cache=cache, threads=1, stages=(4,),
                                  init=os.path.join(out, "final"), refine_steps=3))
    before = LLaVA4D.from_pretrained(os.path.join(out, "final")).state_dict()
    model4 = LLaVA4D.from_pretrained(os.path.join(out4, "final"))
    after = model4.state_dict()
    assert model4.cfg.lm_weights == "delta" and model4.cfg.time_head == "question"
    lm_keys = [k for k in before if k.startswith("lm.")]
    # the LM's changes are stored again as factors: equal up to float rounding (~1e-9)
    assert lm_keys and all(torch.allclose(before[k], after[k], atol=1e-6, rtol=0)
                           for k in lm_keys)
    heads = [k for k in before if k.startswith(("box_head.", "time_head."))]
    assert heads and any(not torch.equal(before[k], after[k]) for k in heads)


def test_delta_checkpoint_needs_its_own_base(trained, tmp_path):
    out, lm, _ = trained
    final = os.path.join(out, "final")
    moved = shutil.copytree(final, tmp_path / "model")
    cfg_path = os.path.join(moved, "config.json")
    with open(cfg_path) as f:
        cfg = json.load(f)
    cfg["lm_source"]["path"] = str(tmp_path / "gone")
    with open(cfg_path, "w") as f:
        json.dump(cfg, f)
    with pytest.raises(CheckpointError, match="is not at"):
        LLaVA4D.from_pretrained(str(moved))
    other = save_lm(tmp_path / "other")  # same shapes, other weights
    torch.manual_seed(5)
    from transformers import AutoModelForCausalLM
    lm2 = AutoModelForCausalLM.from_pretrained(other)
    for p in lm2.parameters():
        p.data.normal_()
    lm2.save_pretrained(other, safe_serialization=True)
    cfg["lm_source"]["path"] = other
    with open(cfg_path, "w") as f:
        json.dump(cfg, f)
    with pytest.raises(CheckpointError, match="fingerprint"):
        LLaVA4D.from_pretrained(str(moved))
