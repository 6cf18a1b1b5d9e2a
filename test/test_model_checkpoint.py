"""Loading: our format round trip, a tiny LLaVA-1.5 in HF layout, and clear errors."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from llava4d_ros.answers.policy import answer_questions
from llava4d_ros.core.buffer4d import VisualTokens
from llava4d_ros.model.checkpoint import CheckpointError
from llava4d_ros.model.config import LLaVA4DConfig, tiny_llama
from llava4d_ros.model.llava4d import LLaVA4D, build_model, load_llava4d
from llava4d_ros.model.tokenizer import build_tokenizer

WORDS = ["where", "is", "the", "red", "cube", "at", "s", ".", "it", "a", "b", "c", "d", "e"]


def _tokens(features: np.ndarray, seed: int = 0) -> VisualTokens:
    rng = np.random.default_rng(seed)
    n = features.shape[0]
    view = rng.normal(size=(n, 3)).astype(np.float32)
    return VisualTokens(
        xyz_world=rng.uniform(-2, 2, (n, 3)).astype(np.float32),
        t_s=np.sort(rng.uniform(100.0, 108.0, n)), features=features.astype(np.float32),
        rgb=rng.uniform(0, 255, (n, 3)).astype(np.float32),
        motion=rng.uniform(0, 0.5, n).astype(np.float32),
        view_dir_world=view / np.linalg.norm(view, axis=1, keepdims=True),
        labels=np.full(n, -1, np.int32), counts=np.ones(n, np.int32))


@pytest.fixture(scope="module")
def tiny_llava_dir(tmp_path_factory):
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
    )

    path = str(tmp_path_factory.mktemp("tiny_llava"))
    tok = build_tokenizer(WORDS)
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=4, image_size=30, patch_size=6)
    text = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                       num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                       pad_token_id=tok.pad_token_id)
    cfg = LlavaConfig(vision_config=vision, text_config=text,
                      image_token_id=tok.convert_tokens_to_ids("<image>"),
                      vision_feature_layer=-2, vision_feature_select_strategy="default",
                      projector_hidden_act="gelu")
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(cfg).eval()
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    return path, model


def test_llava_hf_equivalence_at_init(tiny_llava_dir):
    path, ref = tiny_llava_dir
    ours = LLaVA4D.from_llava_hf(path)
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    enc = ours.patch_encoder
    grid = enc.native_grid
    tokens = _tokens(enc(rgb, grid))
    question = "where is the red cube at 2.5 s ."
    ids = torch.tensor([ours.input_ids(question, len(tokens))])
    with torch.no_grad():
        ref_logits = ref(input_ids=ids, pixel_values=enc.pixel_values(rgb)).logits[0]
        our_logits = ours.logits(question, tokens, t_ref_s=100.0)
    assert our_logits.shape == ref_logits.shape
    torch.testing.assert_close(our_logits, ref_logits, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        ref_ids = ref.generate(input_ids=ids, pixel_values=enc.pixel_values(rgb),
                               max_new_tokens=6, do_sample=False)[0, ids.shape[1]:]
    answer = ours.generate(question, tokens, t_ref_s=100.0, max_new_tokens=6)
    want = ours.tokenizer.decode(
        [i for i in ref_ids.tolist() if i != ours.eos_token_id], skip_special_tokens=True)
    assert answer.text == want.strip()
    # once the 4D fusion is trained (out-projection non-zero) the answer depends on p_4D
    with torch.no_grad():
        ours.fusion.out_proj.weight.normal_()
        changed = ours.logits(question, tokens, t_ref_s=100.0)
    assert not torch.allclose(changed, ref_logits, atol=1e-4)

    # `load` tells the layout by the directory: the same model as `from_llava_hf`
    loaded = LLaVA4D.load(path)
    with torch.no_grad():
        torch.testing.assert_close(loaded.logits(question, tokens, t_ref_s=100.0), ref_logits,
                                   atol=1e-5, rtol=1e-5)


def _small_cfg(vocab: int) -> LLaVA4DConfig:
    return LLaVA4DConfig(lm=tiny_llama(vocab, hidden=32, layers=2, heads=4), pointer_dim=16,
                         box_hidden=16)


def test_our_format_round_trip(tmp_path):
    tok = build_tokenizer(WORDS)
    torch.manual_seed(0)
    model = build_model(_small_cfg(len(tok)), tok).eval()
    with torch.no_grad():
        model.fusion.out_proj.weight.normal_()
    model.save_pretrained(str(tmp_path))
    again = load_llava4d(str(tmp_path))
    tokens = _tokens(np.random.default_rng(2).uniform(0, 1, (12, 18)))
    with torch.no_grad():
        a = model.logits("where is the red cube", tokens, 100.0)
        b = again.logits("where is the red cube", tokens, 100.0)
    torch.testing.assert_close(a, b)


def test_missing_dir_and_files(tmp_path):
    with pytest.raises(CheckpointError, match="no such model directory"):
        load_llava4d(str(tmp_path / "nope"))
    with pytest.raises(CheckpointError, match="missing config.json"):
        load_llava4d(str(tmp_path))
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="tokenizer"):
        load_llava4d(str(tmp_path))


def test_bin_only_weights_refused(tmp_path):
    tok = build_tokenizer(WORDS)
    tok.save_pretrained(str(tmp_path))
    (tmp_path / "config.json").write_text("{}")
    torch.save({"w": torch.zeros(1)}, str(tmp_path / "pytorch_model.bin"))
    with pytest.raises(CheckpointError, match="pickle"):
        LLaVA4D.from_llava_hf(str(tmp_path))
    with pytest.raises(CheckpointError, match="missing model.safetensors"):
        load_llava4d(str(tmp_path))


def test_mismatched_shapes(tmp_path):
    tok = build_tokenizer(WORDS)
    model = build_model(_small_cfg(len(tok)), tok)
    model.save_pretrained(str(tmp_path))
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["pointer_dim"] = 8
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="shape mismatch") as err:
        load_llava4d(str(tmp_path))
    assert str(tmp_path) in str(err.value)
    assert os.path.isfile(tmp_path / "model.safetensors")


@pytest.mark.shipped_weights
def test_shipped_default_loads_and_answers():
    model = LLaVA4D.from_pretrained()
    assert model.cfg.slot_heads and model.cfg.prompt.encoding == "full"
    enc = model.patch_encoder
    rgb = np.zeros((240, 320, 3), np.uint8)
    assert enc(rgb, model.cfg.patch_grid).shape == (24 * 32, enc.feature_dim)
    tokens = _tokens(np.random.default_rng(3).uniform(0, 1, (60, enc.feature_dim)))
    ans = model.answer("Where is the red cube at 2.5s?", tokens, t_ref_s=100.0,
                       max_new_tokens=60)
    assert isinstance(ans.text, str) and ans.num_tokens <= 60
    for box in ans.boxes:
        assert len(box.box6) == 6 and min(box.box6[3:]) > 0


# Answers of the shipped default: our format, the word-level tokenizer, the decode path and the
# inventory's own answers (answers/scene_answers.py) must keep giving exactly these. Scene 40 is
# the first test scene (pink cube and yellow cylinder move; red cube, purple and blue cylinders
# stand); the noise window holds no object of any kind the model knows. Changed on purpose:
# abstention (absent colours), and the object envelope, after which the noise window, which
# used to get a green cube with a box, gets none; rephrased questions, read as their templates;
# the `tokens` box head (true box: [0.154, -0.92, 0.155, 0.31, 0.31, 0.31]; before it
# [0.14, -0.90, 0.18, 0.32, 0.32, 0.32]); the default retrained on look-change tokens (issue
# 31, docs/RESULTS.md), then on look-30 tokens dropped over the budget (round 2: the red cube's
# box is back within 2 cm, and the pink cube is named among the movers; the yellow cylinder is
# still taken for a cube); then its time head reading the named object's first motion (round
# 4): the pink cube (true start 1.7s) is a miss it was not before (1.9s): no token the
# inventory takes for pink reports motion here, so the pointer's first motion is read instead;
# then stage 5 again with the path extent and a converged presence head (round 5): the same;
# then the tokens' flat patches in its inventory (round 6): the yellow cylinder is one at last,
# among the movers and out of the cubes counted (2, as the scene holds).
_DEFAULT_ANSWERS = [
    ("scene40", "Where is the red cube at 2.5s?",
     "At 2.5s, the red cube is at [0.16, -0.94, 0.17, 0.32, 0.32, 0.32]."),
    ("scene40", "Which objects move?", "The yellow cylinder and the pink cube move."),
    ("scene40", "When did the pink cube start moving?",
     "The pink cube started moving at 2.3s."),
    ("scene40", "When did the red cube start moving?", "The red cube did not move."),
    ("scene40", "When did the blue sphere start moving?", "I do not see a blue sphere."),
    ("scene40", "How many cubes are there?", "There are 2 cubes."),
    ("scene40", "How many objects are there?", "There are 5 objects."),
    ("scene40", "Is anything moving now?", "No, nothing is moving."),
    ("scene40", "Where is the green cube at 2.5s?", "I do not see a green cube."),
    # the same questions in other words (answers/intent.py) get the same answers
    ("scene40", "Could you tell me where the red box is at t=2.5?",
     "At 2.5s, the red cube is at [0.16, -0.94, 0.17, 0.32, 0.32, 0.32]."),
    ("scene40", "Tell me which things are moving.",
     "The yellow cylinder and the pink cube move."),
    ("scene40", "pink block start time?", "The pink cube started moving at 2.3s."),
    ("scene40", "count the boxes", "There are 2 cubes."),
    ("noise", "Where is the green cube at 2.5s?", "I do not see a green cube."),
    ("noise", "Which objects move?", "No object moves."),
    ("noise", "How many objects are there?", "I do not recognise any known objects."),
]


@pytest.mark.shipped_weights
def test_shipped_default_answers_exactly_as_before():
    from helpers.tiny_model import random_tokens
    from llava4d_ros.model.vision import ColourStatsEncoder
    from llava4d_ros.training.dataset import build_scene

    model = LLaVA4D.from_pretrained()
    scene = build_scene(40, ColourStatsEncoder(), model.spec.ingest_config())
    windows = {"scene40": (scene.tokens, scene.t_ref_s),
               "noise": (random_tokens(300, 18, seed=0, t0_s=100.0), 100.0)}
    got = [(w, q, answer_questions(model, [q], *windows[w], max_new_tokens=60)[0].text)
           for w, q, _ in _DEFAULT_ANSWERS]
    assert got == _DEFAULT_ANSWERS
    assert model.cfg.lm_source.kind == "scratch" and model.cfg.compressor.kind == "none"
    assert model.compressor is None
    # loaded without a random init first; the output layer is still the tied embedding
    assert model.lm.get_output_embeddings().weight is model.lm.get_input_embeddings().weight


def test_shipped_models_by_name(tmp_path):
    from llava4d_ros.model.runtime import load_model
    from llava4d_ros.model.shipped import DEFAULT_DIR, SHIPPED, model_dir

    assert model_dir(None) == model_dir("") == model_dir("default") == DEFAULT_DIR
    assert model_dir(str(tmp_path)) == str(tmp_path)  # a path stays a path
    assert load_model("default", device="cpu").model_id == load_model(None).model_id
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(str(tmp_path / "smollm2"))  # a path named like a shipped model is a path
    assert set(SHIPPED) == {"default", "smollm2"}
