"""Model parts on tiny inputs: encoders, prompt, fusion, heads, tokenizer, budget, errors."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from helpers.tiny_model import random_tokens
from llava4d_ros.core.buffer4d import VisualTokens
from llava4d_ros.core.notation import find_text_coordinates
from llava4d_ros.model.config import LLaVA4DConfig, PromptConfig, VisionConfig, tiny_llama
from llava4d_ros.model.fusion import SpatioTemporalFusion, temporal_features
from llava4d_ros.model.heads import (
    BoxHead,
    PointerHead,
    TimeHead,
    decode_time,
    dynamic_tokens,
    first_motion_reading,
    first_motion_time,
    time_match_features,
)
from llava4d_ros.model.llava4d import VisualTokenMismatchError, apply_token_budget, build_model
from llava4d_ros.model.prompt import SpatioTemporalPrompt
from llava4d_ros.model.tokenizer import build_tokenizer, detokenize
from llava4d_ros.model.vision import ColourStatsEncoder
from llava4d_ros.training.losses import window_loss

WORDS = ["where", "is", "the", "red", "cube", "at", "s", ".", "now", "blue", "sphere", "was"]


def make_tokens(n: int, d: int = 18, seed: int = 0) -> VisualTokens:
    return random_tokens(n, d, seed, t0_s=50.0)


@pytest.fixture(scope="module")
def tiny_model():
    tok = build_tokenizer(WORDS)
    cfg = LLaVA4DConfig(lm=tiny_llama(len(tok), hidden=32, layers=2, heads=4), pointer_dim=16,
                        box_hidden=16, token_budget=40)
    torch.manual_seed(0)
    return build_model(cfg, tok).eval()


def test_colour_stats_encoder_separates_colours():
    enc = ColourStatsEncoder()
    img = np.zeros((20, 40, 3), np.uint8)
    img[:, :20] = (220, 30, 30)  # red left half
    img[:, 20:] = (30, 60, 220)  # blue right half
    f = enc(img, (2, 4))
    assert f.shape == (8, enc.feature_dim) and f.dtype == np.float32
    assert np.allclose(f[0], f[4]) and not np.allclose(f[0], f[3])
    assert f[0, 0] > f[0, 2] and f[3, 2] > f[3, 0]  # mean rgb
    assert np.allclose(f[:, 3:6], 0, atol=1e-3)  # uniform patches: no std
    with pytest.raises(ValueError):
        enc(img.astype(np.float32), (2, 4))


def test_config_validation():
    with pytest.raises(ValueError, match="encoding"):
        PromptConfig(encoding="4d")
    with pytest.raises(ValueError, match="model_type"):
        LLaVA4DConfig(lm={})
    with pytest.raises(ValueError, match="clip_config"):
        VisionConfig(kind="clip")
    cfg = LLaVA4DConfig(lm=tiny_llama(50))
    assert LLaVA4DConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown"):
        LLaVA4DConfig.from_dict({**cfg.to_dict(), "bogus": 1})


@pytest.mark.parametrize("encoding", ["full", "none", "xyz", "time"])
def test_ablation_zeroes_the_right_parts(encoding):
    torch.manual_seed(0)
    prompt = SpatioTemporalPrompt(PromptConfig(encoding=encoding))
    xyz, t, beta = torch.randn(7, 3), torch.rand(7) * 8, torch.rand(7)
    p = prompt(xyz, t, beta)
    ds = prompt.cfg.spatial_dim
    assert p.shape == (7, prompt.cfg.dim)
    assert bool(p[:, :ds].abs().sum() > 0) == (encoding in ("full", "xyz"))
    assert bool(p[:, ds:].abs().sum() > 0) == (encoding in ("full", "time"))
    prompt.zeroed = True
    assert torch.count_nonzero(prompt(xyz, t, beta)) == 0


def test_time_span_prompt_reads_both_ends_of_a_token_span():
    torch.manual_seed(0)
    span = SpatioTemporalPrompt(PromptConfig(time_span=True))
    last = SpatioTemporalPrompt(PromptConfig())
    last.load_state_dict(span.state_dict())
    xyz, t, beta = torch.randn(5, 3), torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]), torch.zeros(5)
    # a token seen once (first == last) gets the plain encoding
    assert torch.allclose(span(xyz, t, beta, t.clone()), last(xyz, t, beta))
    # one seen over [0, t] differs from one seen only at t, and by the TE part alone
    ds = span.cfg.spatial_dim
    longer = span(xyz, t, beta, torch.zeros(5))
    assert torch.equal(longer[:, :ds], last(xyz, t, beta)[:, :ds])
    assert not torch.allclose(longer[:, ds:], last(xyz, t, beta)[:, ds:])
    with pytest.raises(ValueError, match="t_first_s"):
        span(xyz, t, beta)


def test_motion_weight_in_unit_interval():
    prompt = SpatioTemporalPrompt(PromptConfig())
    m = prompt.motion_weight(torch.tensor([0.0, 0.05, 0.5, 10.0]))
    assert float(m.max()) == pytest.approx(1.0) and float(m[-1]) == pytest.approx(1.0)
    assert bool((m > 0).all()) and float(m[0]) < 1e-3
    assert torch.allclose(prompt.motion_weight(torch.zeros(5)), torch.ones(5))


def test_fusion_is_exact_noop_at_init_and_not_after():
    torch.manual_seed(0)
    fusion = SpatioTemporalFusion(18, 64, 2, 16)
    f_s, f_t, p = torch.randn(9, 18), torch.randn(9, 18), torch.randn(9, 64)
    assert torch.equal(fusion(f_s, f_t, p), f_s)
    with torch.no_grad():
        fusion.out_proj.weight.normal_()
    assert not torch.allclose(fusion(f_s, f_t, p), f_s)


def test_temporal_features_difference_within_voxel():
    f = torch.tensor([[1.0], [5.0], [2.0], [7.0]])
    xyz = torch.tensor([[0.05, 0.05, 0.05], [1.0, 1.0, 1.0], [0.1, 0.1, 0.1], [0.02, 0.0, 0.0]])
    t = torch.tensor([0.0, 0.5, 1.0, 2.0])
    ft = temporal_features(f, xyz, t, voxel_m=0.2)
    assert ft.flatten().tolist() == [0.0, 0.0, 1.0, 5.0]


def test_text_coordinates_found():
    times, coords = find_text_coordinates(
        "Where is it at 2.5s, 2 seconds ago, near [1.0, -2, 0.5]?")
    assert [t.value for t in times] == [(2.5,), (2.0,)]
    assert coords[0].value == (1.0, -2.0, 0.5)


def test_text_side_embedding_zero_init_and_active(tiny_model):
    text = tiny_model.text_after("where is the red cube at 2.5s")
    assert text.times and text.times[0][1] == 2.5
    ids = torch.tensor(text.ids)
    base = tiny_model.lm.get_input_embeddings()(ids)
    assert torch.equal(tiny_model.embed(ids, None, text), base)
    with torch.no_grad():
        tiny_model.text_coords.w_t.fill_(1.0)
    try:
        changed = tiny_model.embed(ids, None, text)
        rows = (changed - base).abs().sum(1) > 0
        assert rows.tolist() == [i in text.times[0][0] for i in range(len(ids))]
    finally:
        with torch.no_grad():
            tiny_model.text_coords.w_t.zero_()


def test_encode_shapes_budget_and_mismatch(tiny_model):
    tokens = make_tokens(100)
    vis = tiny_model.encode(tokens, t_ref_s=50.0)
    assert vis.shape == (40, 32)  # token_budget = 40
    kept = apply_token_budget(tokens, 40)
    assert len(kept) == 40 and kept.t_s[0] == tokens.t_s[0] and kept.t_s[-1] == tokens.t_s[-1]
    assert apply_token_budget(kept, 40) is kept
    ids = torch.tensor(tiny_model.prefix_ids(39))
    with pytest.raises(VisualTokenMismatchError, match="40 visual embeddings but 39"):
        tiny_model.embed(ids, vis)
    with pytest.raises(ValueError, match="features"):
        tiny_model.encode(make_tokens(5, d=7), 50.0)


def test_generate_and_loss_run(tiny_model):
    tokens = make_tokens(30)
    ans = tiny_model.generate("where is the red cube now", tokens, max_new_tokens=5)
    assert ans.num_tokens <= 5 and isinstance(ans.text, str)
    sample = {"question": "where is the red cube at 1.0s", "task": "grounding",
              "answer_template": "at <time> s the red cube is at <box> .", "answer": "",
              "slots": [{"kind": "time", "value": 1.0}, {"kind": "box",
                                                         "value": [0, 0, 0.2, 0.3, 0.3, 0.3]}],
              "targets": [[3, 4], [5]]}
    losses, batch = window_loss(tiny_model, tokens, 50.0, [sample, sample])
    assert set(losses) == {"lm", "pointer", "box", "time", "total"}
    assert batch["is_time"] == [True, False, True, False]  # the slots of both samples, in order
    assert not hasattr(tiny_model, "last_slot_batch")  # handed back, not left on the model
    assert all(torch.isfinite(v) for v in losses.values())
    losses["total"].backward()
    assert tiny_model.pointer.k.weight.grad is not None
    tiny_model.zero_grad()
    # a window where nothing moves has no first motion: the time loss stays finite
    still = replace(tokens, motion=np.zeros(len(tokens), np.float32))
    assert all(torch.isfinite(v) for v in window_loss(tiny_model, still, 50.0, [sample])[0]
               .values())


def test_pointer_and_box_heads_decode():
    torch.manual_seed(0)
    ptr = PointerHead(8, 8, 8)
    with torch.no_grad():
        ptr.q_box.weight.copy_(torch.eye(8))
        ptr.q_box.bias.zero_()
        ptr.k.weight.copy_(torch.eye(8) * 20)
        ptr.k.bias.zero_()
    h_vis = torch.zeros(5, 8)
    h_vis[2, 0] = 1.0
    h_vis[4, 1] = 1.0
    h_slot = torch.zeros(1, 8)
    h_slot[0, 1] = 1.0
    scores = ptr(h_slot, torch.tensor([False]), h_vis)
    assert int(scores.argmax()) == 4
    t = torch.arange(5.0)
    assert float(decode_time(scores, t)[0]) == 4.0
    # zero-init output layer: centre = xy of the top (tilted toward high z, tau 0.05) and the
    # weighted mean height, size 0.4; the far, high tokens 0-2 (weight 0) take no part
    box = BoxHead(8, 16, "pooled")
    xyz = torch.tensor([[3.0, 0, 2.5], [0, 3.0, 2.5], [0, 0, 2.8], [1.0, 2.0, 0.5],
                        [1.2, 2.0, 0.3]])
    w = torch.tensor([[0, 0, 0, 0.5, 0.5]])
    out = box(h_slot, w, xyz, torch.nn.functional.normalize(torch.ones(5, 3), dim=-1))
    e4 = math.exp(4.0)
    torch.testing.assert_close(out[0, :3], torch.tensor([(1.0 * e4 + 1.2) / (e4 + 1), 2.0, 0.4]))
    torch.testing.assert_close(out[0, 3:], torch.full((3,), 0.4))


def test_tokens_box_head_reads_only_the_pointed_tokens_in_any_order():
    torch.manual_seed(0)
    head = BoxHead(8, 16, "tokens")
    for p in head.mlp[-1].parameters():  # past the zero init, so the token encoding counts
        torch.nn.init.normal_(p, std=0.5)
    g = torch.Generator().manual_seed(1)
    xyz = torch.rand(30, 3, generator=g) * 3.0
    view = torch.nn.functional.normalize(torch.randn(30, 3, generator=g), dim=-1)
    scores = torch.full((2, 30), float("-inf"))
    scores[0, 3:9] = torch.randn(6, generator=g)
    scores[1, 10:14] = torch.randn(4, generator=g)
    w = scores.softmax(dim=-1)  # exactly 0 off the pointed tokens
    h = torch.randn(2, 8, generator=g)
    box = head(h, w, xyz, view)
    assert box.shape == (2, 6) and torch.isfinite(box).all()
    assert ((box[:, 3:] > 0.24) & (box[:, 3:] < 0.66)).all()
    # a token nobody points at, moved 5 m away (a far wall), changes no box
    far = xyz.clone()
    far[20] += 5.0
    torch.testing.assert_close(head(h, w, far, view), box)
    # the tokens' order in the window does not matter
    perm = torch.randperm(30, generator=g)
    torch.testing.assert_close(head(h, w[:, perm], xyz[perm], view[perm]), box)


def test_box_head_kind_is_checked():
    with pytest.raises(ValueError, match="box head kind"):
        BoxHead(8, 16, "mean")
    with pytest.raises(ValueError, match="box_head"):
        LLaVA4DConfig(lm=tiny_llama(20), box_head="mean")


def test_time_readings():
    # first motion: the earliest moving token among those the pointer weighs
    w = torch.tensor([[0.0, 0.3, 0.3, 0.4, 0.0], [0.0, 1.0, 0.0, 0.0, 0.0]])
    t = torch.tensor([0.5, 1.0, 2.0, 3.0, 0.1])
    motion = torch.tensor([0.5, 0.0, 0.2, 0.3, 0.9])
    first = first_motion_time(w, t, motion)
    assert float(first[0]) == 2.0 and math.isnan(float(first[1]))
    # the named object's tokens where one of them moves, else the pointer's
    obj = torch.tensor([[0.0, 0.0, 0.0, 0.0, 1.0], [0.0, 1.0, 0.0, 0.0, 0.0]])
    read = first_motion_reading(w[[0, 0]], t, motion, 0.05, obj)
    assert torch.allclose(read, torch.tensor([0.1, 2.0]))  # row 1's object never moves
    assert torch.allclose(first_motion_reading(w, t, motion, 0.05), first, equal_nan=True)
    # time head: a candidate that is not there (NaN) gets no weight
    head = TimeHead(4, 8)
    ctx = torch.zeros(2, 4)
    out = head(ctx, torch.tensor([1.0, 1.0]), torch.tensor(7.0),
               torch.tensor([float("nan"), float("nan")]), first)
    assert torch.isfinite(out).all()
    with torch.no_grad():
        head.mlp[-1].bias.copy_(torch.tensor([-50.0, 0, 0, 0, 50]))
    out = head(ctx, torch.tensor([1.0, 1.0]), torch.tensor(7.0),
               torch.tensor([float("nan"), float("nan")]), first).detach()
    lag = float(head.lag.detach())
    assert abs(float(out[0]) - (2.0 - lag)) < 1e-4  # the first motion, minus the lag
    assert abs(float(out[1]) - 7.0) < 1e-4  # none: the newest token's time is what is left


@pytest.mark.parametrize("reads", ["pointer", "object"])
def test_first_motion_reads_the_named_objects_tokens_when_configured(reads):
    """A `<time>` slot's first-motion reading: with "object" the earliest token of the named
    object (the inventory's colour weights) moving above `first_motion_m`, whatever the pointer
    weighs; with "pointer" those weights are not read."""
    from llava4d_ros.data.instructions import vocabulary

    tok = build_tokenizer(vocabulary())
    cfg = LLaVA4DConfig(lm=tiny_llama(len(tok), hidden=32, layers=2, heads=4), pointer_dim=16,
                        box_hidden=16, token_budget=64, first_motion_tokens=reads,
                        first_motion_m=0.01)
    torch.manual_seed(0)
    model = build_model(cfg, tok).eval()
    n = 40
    tokens = random_tokens(n)
    motion = np.zeros(n, np.float32)
    mine = np.arange(10, 20)  # the named object's tokens
    motion[mine[3:]] = 0.02  # moves from its 4th token on: above 0.01 m, under the old 0.05 m
    motion[2:5] = 0.3  # another object moved earlier
    tokens = replace(tokens, motion=motion)
    colour_w = torch.zeros(n)
    colour_w[mine] = 1.0
    t_ref = 50.0
    _, _, keys = model.visual_prefix(tokens, t_ref, hidden=True)
    tt = model.token_tensors(tokens, t_ref)
    with torch.no_grad():  # the gate takes the first-motion reading alone
        model.time_head.mlp[-1].weight.zero_()
        model.time_head.mlp[-1].bias.copy_(torch.tensor([-50.0, -50, -50, -50, 50]))
        ctx = torch.zeros(model.time_head.mlp[0].in_features - cfg.lm_hidden)
        got = model.slot_reader.fill(model.time_token_id, ctx, keys, tt, float("nan"),
                                     colour_w=colour_w, q_mean=torch.zeros(cfg.lm_hidden))
        lag = float(model.time_head.lag)
        still_w = torch.zeros(n)
        still_w[30:36] = 1.0  # an object none of whose tokens moves
        still = model.slot_reader.fill(model.time_token_id, ctx, keys, tt, float("nan"),
                                       colour_w=still_w, q_mean=torch.zeros(cfg.lm_hidden))
    start = float(tokens.t_s[mine[3]] - t_ref)
    other = float(tokens.t_s[2] - t_ref)  # the untrained pointer weighs every token
    if reads == "object":
        assert got.t_s == pytest.approx(start - lag, abs=0.051)  # written to 0.1 s
    else:
        assert got.t_s == pytest.approx(other - lag, abs=0.051)
    # no token of the named object moves: the pointer's reading, not none
    assert still.t_s == pytest.approx(other - lag, abs=0.051)


def test_question_time_head_tells_at_from_ago_where_the_context_cannot():
    """Two slots with the same context, one asked "at 3s" and one "3 seconds ago": only a gate
    that reads the question's mean embedding can give each its own reading."""
    torch.manual_seed(0)
    ctx = torch.zeros(2, 4)
    q_mean = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # "at 3s", "3 seconds ago"
    t_end, t_q, t_ptr = torch.tensor(7.0), torch.tensor([3.0, 3.0]), torch.tensor([5.0, 5.0])
    truth = torch.tensor([3.0, 4.0])  # copied; counted back from the newest token
    errors = {}
    for name, head in (("context", TimeHead(4, 16)), ("question", TimeHead(4, 16, 3))):
        opt = torch.optim.Adam(head.parameters(), lr=0.05)
        for _ in range(200):
            loss = (head(ctx, t_ptr, t_end, t_q, None, q_mean) - truth).abs().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            errors[name] = float((head(ctx, t_ptr, t_end, t_q, None, q_mean) - truth).abs().max())
    assert errors["question"] < 0.05 and errors["context"] > 0.4
    with pytest.raises(ValueError, match="q_mean"):
        TimeHead(4, 16, 3)(ctx, t_ptr, t_end, t_q)


def test_time_head_kind_is_checked_and_built_from_the_config():
    with pytest.raises(ValueError, match="time_head"):
        LLaVA4DConfig(lm=tiny_llama(20), time_head="mean")
    from llava4d_ros.data.instructions import vocabulary

    tok = build_tokenizer(vocabulary())
    for kind, question_dim in (("context", 0), ("question", 32)):
        cfg = LLaVA4DConfig(lm=tiny_llama(len(tok), hidden=32, layers=1, heads=2),
                            time_head=kind)
        assert build_model(cfg, tok).time_head.question_dim == question_dim


def test_pointer_keys_leave_out_the_spatial_pe_when_the_config_says_so():
    from llava4d_ros.data.instructions import vocabulary

    tok = build_tokenizer(vocabulary())
    cfg = LLaVA4DConfig(lm=tiny_llama(len(tok), hidden=32, layers=1, heads=2))
    assert not cfg.pointer_space  # off for a new model
    # a saved config without the key predates it: that model had the PE in its keys
    saved = cfg.to_dict()
    assert LLaVA4DConfig.from_dict(saved) == cfg
    del saved["pointer_space"]
    assert LLaVA4DConfig.from_dict(saved).pointer_space
    model = build_model(cfg, tok).eval()
    h_visual = torch.randn(40, 32, generator=torch.Generator().manual_seed(0))
    keys = {}
    for space in (True, False):
        model.cfg = replace(cfg, pointer_space=space)
        with torch.no_grad():
            _, extra = model._encode(random_tokens(40, cfg.vision.feature_dim, seed=3), 50.0)
            keys[space] = model._keys(h_visual, extra)
    lo = 32 + cfg.vision.feature_dim
    hi = lo + cfg.prompt.spatial_dim
    assert keys[True].shape == keys[False].shape  # same width: checkpoints load either way
    assert keys[True][:, lo:hi].abs().sum() > 0
    assert torch.all(keys[False][:, lo:hi] == 0)
    # each part is normalised on its own, so the other parts are the same numbers
    assert torch.allclose(keys[True][:, :lo], keys[False][:, :lo])
    assert torch.allclose(keys[True][:, hi:], keys[False][:, hi:])


def test_time_match_features():
    xyz = torch.tensor([[0.05, 0.05, 0.05], [0.1, 0.1, 0.1], [1.0, 1.0, 1.0]])
    dyn = dynamic_tokens(xyz, 0.2)
    assert dyn.tolist() == [1.0, 1.0, 0.0]  # tokens 0 and 1 share a voxel
    t = torch.tensor([1.0, 2.0, 5.0])
    feat = time_match_features(torch.tensor([1.5, float("nan")]), t, dyn,
                               torch.tensor([0.0, 0.3, 2.0]))
    assert feat.shape == (2, 3, 7)
    torch.testing.assert_close(feat[0, :, 0], torch.tensor([0.5, 0.5, 2.0]))  # |dt|, to 2 s
    torch.testing.assert_close(feat[0, :, 1], torch.tensor([3.0, 3.0, 3.0]))  # fine, clipped
    torch.testing.assert_close(feat[0, :, 3], torch.tensor([0.5, 0.5, 0.0]))  # dynamic only
    torch.testing.assert_close(feat[0, :, 6], torch.tensor([0.0, 0.3, 1.0]))  # motion, clipped
    assert float(feat[1].abs().sum()) == 0.0  # no time in the sentence: no term
    ptr = PointerHead(8, 8, 8)  # the time term starts as a no-op
    h, keys = torch.randn(2, 8), torch.randn(3, 8)
    torch.testing.assert_close(ptr(h, torch.tensor([False, True]), keys, feat),
                               ptr(h, torch.tensor([False, True]), keys))


def test_tokenizer_round_trip():
    from llava4d_ros.data.instructions import vocabulary

    tok = build_tokenizer(vocabulary())
    text = "At 2.5s, the red cube is at [1.20, -0.40, 0.25, 0.30, 0.30, 0.30], heading toward -x."
    toks = tok.convert_ids_to_tokens(tok(text, add_special_tokens=False)["input_ids"])
    assert "<unk>" not in toks and detokenize(toks) == text
    assert detokenize(["At", "<time>", "s", ",", "it", "is", "at", "<box>", "."]) == \
        "At <time>s, it is at <box>."


def test_colour_stats_of_a_large_image_match_its_small_version():
    """Large cells are read on a strided grid (speed at 640x480); the statistics must not move:
    the model was trained on 320x240 features."""
    from llava4d_ros.data.scene import make_scene, render

    small = render(make_scene(3), 2.0).rgb  # (240, 320, 3)
    big = np.repeat(np.repeat(small, 2, axis=0), 2, axis=1)  # (480, 640, 3)
    enc = ColourStatsEncoder()
    np.testing.assert_allclose(enc(big, (24, 32)), enc(small, (24, 32)), atol=2e-3)


def test_model_package_does_not_import_training():
    """The model is what inference loads; the trainer depends on it, never the other way."""
    import ast
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "llava4d_ros" / "model"
    bad = []
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            bad += [f"{path.name}: {n}" for n in names if n.startswith("llava4d_ros.training")]
    assert folder.is_dir() and not bad, bad


def test_token_tensors_are_in_model_time_with_the_stamps_precision():
    """Every part reads the tokens through `token_tensors`: model time is taken in float64
    before the cast, so ROS stamps (~1.7e9 s) keep their milliseconds in float32."""
    from llava4d_ros.model.tokens import token_tensors

    t0 = 1.7e9 + 0.123
    tokens = random_tokens(20, t0_s=t0)
    tt = token_tensors(tokens, t0, torch.float32, torch.device("cpu"))
    assert tt.t.dtype == torch.float32 and tt.xyz.shape == (20, 3) and tt.view.shape == (20, 3)
    np.testing.assert_allclose(tt.t.numpy(), tokens.t_s - t0, atol=1e-5)
    assert torch.equal(tt.t_first, tt.t)  # one observation each: the span is a point
    assert torch.equal(tt.features, torch.as_tensor(tokens.features, dtype=torch.float32))
