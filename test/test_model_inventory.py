"""The scene inventory and the output bias (model/inventory.py) on tiny inputs, through the
real model's decode path."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest
import torch

from helpers.tiny_model import random_tokens
from llava4d_ros.core.buffer4d import VisualTokens
from llava4d_ros.data.instructions import vocabulary
from llava4d_ros.model.config import InventoryConfig, LLaVA4DConfig, tiny_llama
from llava4d_ros.model.inventory import (
    Inventory,
    count_distribution,
    decode_features,
    object_feature_dim,
    object_features,
    path_extent,
)
from llava4d_ros.model.llava4d import build_model
from llava4d_ros.model.tokenizer import build_tokenizer
from llava4d_ros.training.losses import inventory_batch, window_loss
from llava4d_ros.training.model_edits import add_inventory
from llava4d_ros.training.task import task_inventory


def make_tokens(n: int, seed: int = 0) -> VisualTokens:
    return random_tokens(n, seed=seed, t0_s=10.0)


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer(vocabulary())


def tiny(tok, inventory: InventoryConfig | None) -> torch.nn.Module:
    cfg = LLaVA4DConfig(lm=tiny_llama(len(tok), hidden=32, layers=2, heads=4), pointer_dim=16,
                        box_hidden=16, token_budget=60, inventory=inventory)
    torch.manual_seed(0)
    return build_model(cfg, tok).eval()


def test_count_distribution_matches_enumeration():
    p = torch.tensor([0.9, 0.2, 0.5, 0.7, 0.05], dtype=torch.float64)
    exact = torch.zeros(6, dtype=torch.float64)
    for bits in itertools.product((0, 1), repeat=5):
        b = torch.tensor(bits, dtype=torch.float64)
        exact[int(b.sum())] += torch.prod(torch.where(b > 0, p, 1 - p))
    assert torch.allclose(count_distribution(p, 5), exact)
    capped = count_distribution(p, 2)  # 0, 1, >= 2
    assert torch.allclose(capped, torch.stack([exact[0], exact[1], exact[2:].sum()]))
    batch = count_distribution(torch.stack([p, 1 - p]), 5)
    assert batch.shape == (2, 6) and torch.allclose(batch[1], exact.flip(0))


def test_object_features_motion_only_with_time():
    n = 20
    t = torch.linspace(0.0, 4.0, n)
    xyz = torch.stack([0.5 * t, torch.zeros(n), torch.full((n,), 0.2)], dim=1)  # +x, 0.5 m/s
    motion = torch.full((n,), 0.3)
    feats = torch.rand(n, 18)
    w = torch.stack([torch.ones(n), torch.zeros(n)])  # colour 0 has every token, colour 1 none
    f_time = object_features(w, xyz, t, motion, feats, use_time=True)
    f_none = object_features(w, xyz, t, motion, feats, use_time=False)
    assert f_time.shape == f_none.shape == (2, object_feature_dim(18)) == (2, 9 + 2 * 18 + 7)
    vel = f_time[0, -6:-3]
    assert vel[0] == pytest.approx(0.5, rel=0.01) and abs(float(vel[1])) < 1e-3
    assert torch.all(f_none[:, -7:] == 0)
    assert torch.equal(f_none[:, :6], f_time[:, :6])  # mass, mean z, xyz spread, top
    assert torch.equal(f_none[:, 9:-7], f_time[:, 9:-7])  # appearance
    # the snapshot: with time, the newest tokens only (x spread ~0.2 m, not the 2 m path)
    assert float(f_time[0, 6]) < 0.3 < float(f_none[0, 6])
    assert f_time[0, 5] == pytest.approx(0.2, abs=1e-3)  # the top: every token at 0.2 m
    assert f_time[1, 0] == 0 and f_time[1, 5] == 0  # no mass, no top for a colour with none


def test_object_features_without_space_read_no_position():
    torch.manual_seed(0)
    n = 30
    t = torch.linspace(0.0, 3.0, n)
    xyz = torch.rand(n, 3) + torch.stack([0.4 * t, torch.zeros(n), torch.zeros(n)], dim=1)
    motion, feats = torch.rand(n), torch.rand(n, 18)
    w = torch.rand(2, n)
    full = object_features(w, xyz, t, motion, feats, use_time=True)
    blind = object_features(w, xyz, t, motion, feats, use_time=True, use_space=False)
    moved = object_features(w, xyz * 3.0 + 1.0, t, motion, feats, use_time=True,
                            use_space=False)
    assert torch.equal(blind, moved)  # nothing of the positions gets through
    spatial = list(range(1, 9)) + [-6, -5, -4]  # mean z, spreads, shape cues; velocity
    assert torch.all(blind[:, spatial] == 0) and torch.all(full[:, spatial] != 0)
    kept = [0, *range(9, full.shape[1] - 6), -3, -2, -1]  # mass, appearance, s_t, motion
    assert torch.equal(blind[:, kept], full[:, kept])


def test_path_extent_sees_a_mover_by_where_its_tokens_were_seen_when():
    """Colour 0 is seen at x = 0, 0.5, 1 m in seconds 0, 1, 2 (and its motion reading could be
    zero); colour 1 stays at one place the whole time; colour 2's second place holds too little
    token weight to count at the larger mass."""
    t = torch.tensor([0.2, 0.4, 1.2, 1.4, 2.2, 2.4])
    xy = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.5, 0.0], [0.5, 0.0], [1.0, 0.0], [1.0, 0.0]])
    w = torch.tensor([[2.0] * 6, [2.0] * 6, [4.0, 4.0, 3.0, 0.0, 0.0, 0.0]])
    moved = xy.clone()
    moved[:, 0] = 3.0  # colour 1's tokens all at one place
    ext = path_extent(w, xy, t)
    assert ext.shape == (3, 2)
    assert torch.allclose(ext[0], torch.tensor([1.0, 0.0]))  # bins of weight 4 < 6
    assert torch.allclose(path_extent(w[1:2], moved, t), torch.zeros(1, 2))
    assert torch.allclose(ext[2], torch.tensor([0.5, 0.0]))
    # stamps past the window or NaN fall into the end bins; nothing fails on them
    odd = path_extent(w[:1], xy, torch.tensor([0.2, 0.4, 1.2, 1.4, 1e9, float("nan")]))
    assert torch.isfinite(odd).all()
    assert torch.equal(path_extent(w[:, :0], xy[:0], t[:0]), torch.zeros(3, 2))


def test_object_features_read_the_path_only_with_time_and_space():
    torch.manual_seed(0)
    n = 30
    t = torch.linspace(0.0, 3.0, n)
    xyz = torch.stack([0.4 * t, torch.zeros(n), torch.zeros(n)], dim=1)
    motion, feats, w = torch.zeros(n), torch.rand(n, 18), torch.full((1, n), 1.0)
    full = object_features(w, xyz, t, motion, feats, use_time=True, path=True)
    assert full.shape == (1, object_feature_dim(18, path=True)) == (1, 9 + 2 * 18 + 7 + 2)
    assert torch.equal(full[:, :-2], object_features(w, xyz, t, motion, feats, use_time=True))
    assert full[0, -2] > 0.8  # 1.2 m of path over three seconds, none of it in `motion`
    for use_time, use_space in ((True, False), (False, True), (False, False)):
        blind = object_features(w, xyz, t, motion, feats, use_time, use_space, path=True)
        assert torch.all(blind[:, -2:] == 0)


def saved_and_loaded(model: torch.nn.Module, tokens: VisualTokens, tmp_path) -> torch.nn.Module:
    """`model` saved to `tmp_path` and loaded again; its inventory reads `tokens` as before."""
    from llava4d_ros.model.llava4d import LLaVA4D

    before = model.scene_inventory(tokens, 10.0).probs()
    model.save_pretrained(str(tmp_path))
    loaded = LLaVA4D.from_pretrained(str(tmp_path))
    for a, b in zip(before, loaded.scene_inventory(tokens, 10.0).probs()):
        assert torch.allclose(a, b)
    return loaded


def test_a_model_with_path_features_saves_and_loads_them(tok, tmp_path):

    model = tiny(tok, None)
    add_inventory(model, task_inventory(path_extent=True))
    model.eval()  # the fresh inventory's dropout
    assert model.inventory.mu.shape == (object_feature_dim(model.cfg.vision.feature_dim, True),)
    loaded = saved_and_loaded(model, make_tokens(40), tmp_path)
    assert loaded.cfg.inventory.path_extent and loaded.inventory.path


def test_object_features_read_flat_sides_only_with_space():
    n = 20
    z = torch.cat([torch.full((10,), 0.40), torch.linspace(0.0, 0.2, 10)])  # top, then sides
    xyz = torch.stack([torch.zeros(n), torch.zeros(n), z], dim=1)
    t, motion, feats, w = torch.zeros(n), torch.zeros(n), torch.rand(n, 18), torch.ones(1, n)
    flat_top = torch.cat([torch.ones(10), torch.zeros(10)])  # a cylinder: only its top flat
    plain = object_features(w, xyz, t, motion, feats, use_time=True)
    got = object_features(w, xyz, t, motion, feats, use_time=True, flat=flat_top)
    assert got.shape == (1, object_feature_dim(18, flat=True)) == (1, plain.shape[1] + 2)
    assert torch.equal(got[:, :-2], plain)
    assert torch.allclose(got[0, -2:], torch.tensor([0.5, 0.0]))  # all tokens; the sides
    flat_all = object_features(w, xyz, t, motion, feats, use_time=True, flat=torch.ones(n))
    assert torch.allclose(flat_all[0, -2:], torch.tensor([1.0, 1.0]))  # a cube
    for use_time in (True, False):  # read from the depth's 3D points: none without space
        blind = object_features(w, xyz, t, motion, feats, use_time, False, flat=torch.ones(n))
        assert torch.all(blind[:, -2:] == 0)


def test_a_model_with_flatness_reads_the_tokens_flat_share_and_saves_it(tok, tmp_path):

    model = tiny(tok, None)
    add_inventory(model, task_inventory(path_extent=True, flatness=True))
    model.eval()
    dim = object_feature_dim(model.cfg.vision.feature_dim, True, True)
    assert model.inventory.mu.shape == (dim,)
    with torch.no_grad():  # every token of the first colour, so that colour has features
        model.inventory.token_colour[-1].bias[0] = 20.0
    tokens = make_tokens(40)
    flat = replace(tokens, flat=torch.ones(len(tokens)).numpy())
    assert not torch.allclose(model.scene_inventory(tokens, 10.0).shape,
                              model.scene_inventory(flat, 10.0).shape)
    loaded = saved_and_loaded(model, flat, tmp_path)
    assert loaded.cfg.inventory.flatness and loaded.inventory.flat
    # a model trained before reads no flatness: the tokens' share changes nothing
    old = tiny(tok, None)
    add_inventory(old, task_inventory(path_extent=True))
    old.eval()
    with torch.no_grad():
        old.inventory.token_colour[-1].bias[0] = 20.0
    assert torch.equal(old.scene_inventory(tokens, 10.0).shape,
                       old.scene_inventory(flat, 10.0).shape)


def test_inventory_reads_positions_unless_the_encoding_has_no_3d():
    cfg = LLaVA4DConfig(lm=tiny_llama(10), inventory=task_inventory())
    follows = replace(cfg, inventory=task_inventory(space_follows_encoding=True))
    assert cfg.with_encoding("time").inventory_reads == (True, True)  # trained before
    assert follows.with_encoding("time").inventory_reads == (True, False)
    assert follows.with_encoding("none").inventory_reads == (False, False)
    assert follows.with_encoding("xyz").inventory_reads == (False, True)
    assert follows.inventory_reads == (True, True)
    assert LLaVA4DConfig.from_dict(follows.to_dict()) == follows


def test_inventory_config_validation(tok):
    with pytest.raises(ValueError, match="plurals"):
        task_inventory(plurals=("cubes",))
    with pytest.raises(ValueError, match="distinct"):
        task_inventory(colours=("red", "red"))
    with pytest.raises(ValueError, match="' teal' is not one token"):
        tiny(tok, task_inventory(colours=("teal",)))
    for inv in (task_inventory(), task_inventory(bias_ids=[5, 9, 2])):
        cfg = LLaVA4DConfig(lm=tiny_llama(10), inventory=inv)
        assert LLaVA4DConfig.from_dict(cfg.to_dict()) == cfg  # round trip through a dict


def sees_every_colour(model: torch.nn.Module) -> None:
    """An unfitted inventory's presence is random; this one finds every colour, so questions
    reach the LM rather than being declined for an empty window (answers/scene_answers.py)."""
    with torch.no_grad():
        model.inventory.present.bias.fill_(10.0)


def test_zero_bias_leaves_answers_unchanged_and_fitted_bias_steers(tok):
    plain, guided = tiny(tok, None), tiny(tok, None)
    add_inventory(guided, task_inventory())
    sees_every_colour(guided)
    tokens = make_tokens(50)
    qs = ["Which objects move?", "Describe the scene at 2.5s.",
          "When did the red cube start moving?"]  # questions the inventory leaves to the LM
    a0 = plain.generate_batch(qs, tokens, max_new_tokens=12)
    a1 = guided.generate_batch(qs, tokens, max_new_tokens=12)
    assert [a.text for a in a0] == [a.text for a in a1]
    # a bias toward "seven" digits: every answer's first token becomes "7"
    seven = tok.convert_tokens_to_ids("7")
    with torch.no_grad():
        guided.inventory_bias.glob[-1].bias[seven] = 1e3
    a2 = guided.generate_batch(qs, tokens, max_new_tokens=3)
    assert all(a.text.startswith("7") for a in a2)
    assert not guided.lm._forward_hooks  # the bias's hidden-state hook lives for one call
    with pytest.raises(ValueError, match="no scene inventory"):
        plain.scene_inventory(tokens, 10.0)


def test_the_bias_steers_a_model_without_slot_heads(tok):
    cfg = LLaVA4DConfig(lm=tiny_llama(len(tok), hidden=32, layers=2, heads=4),
                        token_budget=60, inventory=task_inventory(), slot_heads=False)
    torch.manual_seed(0)
    model = build_model(cfg, tok).eval()
    sees_every_colour(model)
    tokens = make_tokens(50)
    before = model.generate("Which objects move?", tokens, max_new_tokens=3).text
    with torch.no_grad():
        model.inventory_bias.glob[-1].bias[tok.convert_tokens_to_ids("7")] = 1e3
    after = model.generate("Which objects move?", tokens, max_new_tokens=3).text
    assert not before.startswith("7") and after.startswith("7")


def test_decode_features_follow_the_state(tok):
    model = tiny(tok, task_inventory())
    words = model.words
    q = tok("How many cubes are there?", add_special_tokens=False)["input_ids"]
    named, shape_after, plural = words.question(q)
    assert named == [0] * 8 and plural == 0  # "cubes"
    q2 = tok("When did the blue sphere start moving?", add_special_tokens=False)["input_ids"]
    named2, shape_after2, _ = words.question(q2)
    assert named2[2] == 1 and shape_after2[2] == 1  # blue -> sphere
    ans = tok("The red cube and the cyan sphere", add_special_tokens=False)["input_ids"]
    states = words.answer_states(ans, q_first=2)
    assert states[0] == ([0] * 8, 2)  # "The": nothing named yet, current = the question's
    assert states[-1][0] == [1, 0, 0, 0, 0, 0, 1, 0] and states[-1][1] == 6  # red, cyan

    c = 8
    present = torch.full((c,), -12.0)
    present[[0, 2]] = 12.0  # red and blue are there
    moving = torch.full((c,), -12.0)
    moving[0] = 12.0  # red moves
    shape = torch.full((c, 3), -6.0)
    shape[:, 1] = 6.0  # everything looks like a sphere
    inv = Inventory(present, moving, shape)
    feats = decode_features(
        inv, named=torch.tensor([[0] * c, [1] + [0] * 7]), in_q=torch.zeros(2, c),
        q_shape_after=torch.full((2, c), -1), cur=torch.tensor([-1, 0]),
        plural=torch.tensor([-1, 0]))
    assert feats["colour"].shape == (2, c, 4) and feats["glob"].shape == (2, 11)
    assert torch.all(feats["direction"] == 0) and torch.all(feats["glob"][:, 9:] == 0)
    # nothing named: two present (P(>=2) ~ 1), one moving (P(=1) ~ 1)
    assert feats["glob"][0, 2] > 0.99 and feats["glob"][0, 4] > 0.99
    # red named: one present left, no mover left; red is the current object and moves
    assert feats["glob"][1, 1] > 0.99 and feats["glob"][1, 3] > 0.99
    assert feats["glob"][1, 7] > 0.99 and feats["glob"][1, 8] == 1
    digit = feats["digit"]  # (B, 10, 4): log P(count = d) of present, moving, plural shape
    assert int(digit[0, :, 0].argmax()) == 2 and int(digit[0, :, 1].argmax()) == 1
    assert int(digit[1, :, 2].argmax()) == 0  # cubes: none (all look like spheres)
    assert feats["shape"][1, :, 0].argmax() == 1 and feats["shape"][0, :, 1].sum() == 0


def test_inventory_batch_matches_the_lm_loss(tok):
    model = tiny(tok, task_inventory())
    tokens = make_tokens(50)
    samples = [
        {"question": "Which objects move?", "task": "which_move", "slots": [], "targets": [],
         "answer_template": "The red cube and the blue sphere move.", "answer": ""},
        {"question": "How many objects are there?", "task": "count", "slots": [],
         "targets": [], "answer_template": "There are 3 objects.", "answer": ""},
    ]
    with torch.no_grad():
        batch = inventory_batch(model, tokens, 10.0, samples)
        lm = window_loss(model, tokens, 10.0, samples, slot_weight=0.0)[0]["lm"]
    n = sum(len(tok(" " + s["answer_template"], add_special_tokens=False)["input_ids"]) + 1
            for s in samples)  # answers and their end tokens
    assert batch["h"].shape == (n, 32) and batch["target"].shape == (n,)
    ce = torch.nn.functional.cross_entropy(batch["logits"], batch["target"])
    assert float(ce) == pytest.approx(float(lm), rel=1e-5)
    red = tok.convert_tokens_to_ids("red")
    k = int((batch["target"] == red).nonzero()[0])
    assert batch["named"][k].sum() == 0 and batch["named"][k + 1][0] == 1


def test_velocity_at_a_time_reads_the_right_segment():
    """An object going +x until 4 s, then -y: its velocity at 2 s and at 6 s, and what the
    direction words are told."""
    t = torch.arange(0.0, 8.0, 0.2)
    x = torch.where(t < 4, 0.4 * t, torch.full_like(t, 1.6))
    y = torch.where(t < 4, torch.zeros_like(t), -0.4 * (t - 4))
    xyz = torch.stack([x, y, torch.full_like(t, 0.2)], dim=1)
    n, c = len(t), 8
    weights = torch.zeros(c, n)
    weights[3] = 1.0  # colour 3 owns every token
    inv = Inventory(present=torch.zeros(c), moving=torch.zeros(c), shape=torch.zeros(c, 3),
                    weights=weights, xyz=xyz, t=t)
    cur = torch.tensor([3, 3, 3, -1])
    t_at = torch.tensor([1.0, 6.5, float("nan"), 1.0])
    v = inv.velocity(cur, t_at)
    assert v[0, 0] > 0.2 and abs(float(v[0, 1])) < 0.05  # +x (shrunk by the variance floor)
    assert v[1, 1] < -0.2 and abs(float(v[1, 0])) < 0.05  # -y
    assert torch.all(v[2:] == 0)  # no sentence time, no current object
    feats = decode_features(inv, torch.zeros(4, c), torch.zeros(4, c),
                            torch.full((4, c), -1), cur, torch.full((4,), -1), t_at)
    d = feats["direction"][..., 0]  # (B, 4) for "+", "-", "x", "y"
    assert d[0, 0] > 0.9 and d[0, 2] > 0.9  # "+" and "x"
    assert d[1, 1] > 0.9 and d[1, 3] > 0.9  # "-" and "y"
    assert feats["glob"][0, 9] > 0.2 and feats["glob"][0, 10] == 1 and feats["glob"][2, 10] == 0
    # without token times (the none / xyz encodings) there is no velocity
    assert torch.all(Inventory(inv.present, inv.moving, inv.shape).velocity(cur, t_at) == 0)


def test_box_slot_points_among_the_named_objects_tokens(tok):
    from llava4d_ros.model.decoding import Guide
    from llava4d_ros.model.llava4d import apply_token_budget

    model = tiny(tok, task_inventory())
    tokens = apply_token_budget(make_tokens(50), model.cfg.token_budget)
    xyz = tokens.xyz_world.copy()
    xyz[:5] = [10.0, 10.0, 0.2]  # the named object's tokens, far from the rest
    tokens = VisualTokens(**{**tokens.__dict__, "xyz_world": xyz})
    weights = torch.zeros(8, len(tokens))
    weights[2, :5] = 1.0  # blue: tokens 0..4; red: no tokens
    inv = Inventory(torch.zeros(8), torch.zeros(8), torch.zeros(8, 3), weights=weights)
    q = tok("Where is the blue sphere now?", add_special_tokens=False)["input_ids"]
    guide = Guide(model.words, model.inventory_bias, inv, q)
    assert torch.equal(guide.current_weights([]), weights[2])
    red = tok.convert_tokens_to_ids("red")
    assert guide.current_weights([red]) is None  # red is named but has no tokens
    with torch.no_grad():
        visual, extra = model._encode(tokens, 10.0)
        h_visual = model._keys(torch.zeros(len(tokens), 32), extra)
        ctx = torch.randn(3 * 32 + model.cfg.prompt.temporal_dim)
        tt = model.token_tensors(tokens, 10.0)
        box = model.slot_reader.fill(model.box_token_id, ctx, h_visual, tt, float("nan"),
                                     colour_w=weights[2])
        free = model.slot_reader.fill(model.box_token_id, ctx, h_visual, tt, float("nan"))
    assert abs(box.box6[0] - 10.0) < 1.0 and abs(box.box6[1] - 10.0) < 1.0
    assert abs(free.box6[0] - 10.0) > 3.0  # unmasked: all tokens
