"""The shipped LLaVA-4D on SmolLM2-135M-Instruct (`model_path:=smollm2`): its checkpoint holds
only the LM's changes, rebuilt on the SmolLM2 that scripts/setup.sh converts into the venv.
Skipped where that conversion is absent (setup does it, so CI runs these)."""

from __future__ import annotations

import pytest

from llava4d_ros.answers.policy import answer_questions
from llava4d_ros.model import backbones, lm_delta

pytestmark = [pytest.mark.shipped_weights, pytest.mark.skipif(
    not backbones.converted(backbones.default_lm_dir()),
    reason="SmolLM2 is not converted into this environment (scripts/setup.sh does it)")]


@pytest.fixture(scope="module")
def smollm2_and_window():
    from llava4d_ros.data.instructions import seeds_for_split
    from llava4d_ros.model.runtime import load_model
    from llava4d_ros.training.dataset import build_scene
    from llava4d_ros.training.scene_cache import ingest_config

    model = load_model("smollm2", device="cpu", cpu_threads=1)
    rec = build_scene(seeds_for_split("test", 1)[0], model.patch_encoder,
                      ingest_config(model.cfg))
    return model, rec


def test_delta_checkpoint_rebuilds_on_the_converted_base(smollm2_and_window):
    model, _ = smollm2_and_window
    cfg = model.cfg
    assert cfg.lm_weights == "delta" and cfg.lm_source.name == backbones.SMOLLM2_NAME
    base = lm_delta.read_base(backbones.default_lm_dir())
    assert cfg.lm_source.fingerprint == lm_delta.fingerprint(base)
    own = model.lm.state_dict()
    mlp = "model.layers.7.mlp.down_proj.weight"
    assert (own[mlp] == base[mlp]).all()  # untouched by LoRA: the base's own tensor
    q = "model.layers.7.self_attn.q_proj.weight"
    assert not (own[q] == base[q]).all()  # the merged adapter
    assert cfg.confidence_table  # fitted on the val split


def test_answers_in_its_own_words(smollm2_and_window):
    """Test-split scene 40 (pink cube and yellow cylinder move; red cube, purple and blue
    cylinders stand): a thing it was never told about is declined; a grounded answer carries a
    box with a calibrated confidence; its scene inventory counts the five objects, sees the red
    cube stand and no green sphere. The exact text pins the delta load and the decode path
    (answers measured at the commit that shipped the model)."""
    model, rec = smollm2_and_window
    questions = ["Where is the mug?", "Where is the pink cube at 2.5s?",
                 "How many objects are there?", "Is the red cube moving?",
                 "Where is the green sphere?"]
    mug, pink, count, red, green = answer_questions(model, questions, rec.tokens, rec.t_ref_s)
    assert model.cfg.inventory is not None
    assert count.text == "There are 5 objects."
    assert red.text == "No, the red cube is not moving."
    assert green.text == "I do not see a green sphere." and not green.boxes
    assert mug.text == "I do not see a mug." and not mug.boxes
    assert pink.text == "At 2.5s, the pink cube is at [1.17, -0.85, 0.16, 0.32, 0.32, 0.32]."
    (box,) = pink.boxes
    assert box.label == "pink cube" and box.t_s == 2.5
    top = max(p for _, p in model.cfg.confidence_table)  # 0.91: the val boxes' best bin
    assert 0.0 < box.confidence <= top < 0.95  # through the table, not the raw ~1.0


def test_reads_other_words_as_the_template(smollm2_and_window):
    """Fine-tuned on the task's questions, it answers the templates best, so a question in
    words it never trained on (the held-out polite and terse families) is read as its template
    first and gets the template's answer."""
    model, rec = smollm2_and_window
    pairs = [("Could you tell me where the pink box is at t=2.5?",
              "Where is the pink cube at 2.5s?"),
             ("pink block start time?", "When did the pink cube start moving?"),
             ("could you count the boxes for me?", "How many cubes are there?")]
    asked = answer_questions(model, [q for pair in pairs for q in pair], rec.tokens,
                             rec.t_ref_s)
    for (other, template), a, b in zip(pairs, asked[::2], asked[1::2]):
        assert a.text == b.text, (other, template)
    assert asked[1].text.startswith("At 2.5s, the pink cube is at [")
    assert asked[3].text.startswith("The pink cube started moving at ")


def test_model_info_counts_the_base_lm():
    from llava4d_ros.model.info import model_info

    info = model_info("smollm2")
    assert info["pretrained"] and info["lm"]["name"] == backbones.SMOLLM2_NAME
    assert info["lm_params"] == 134_515_008 + 3 * 576  # SmolLM2-135M + <image>, <box>, <time>


def test_describes_every_object_it_sees(smollm2_and_window):
    """Val scene 9 holds five objects; the LM alone ended its description after four. A
    description does not end while an object the inventory sees is unnamed."""
    from llava4d_ros.training.dataset import build_scene
    from llava4d_ros.training.scene_cache import ingest_config

    model, _ = smollm2_and_window
    rec = build_scene(9, model.patch_encoder, ingest_config(model.cfg))
    truth = {s["answer"] for s in rec.samples if s["task"] == "caption"}
    assert truth and all(t.count("<box>") == 0 and t.count(" is at ") == 5 for t in truth)
    (ans,) = answer_questions(model, ["Describe each object at 2.5s."], rec.tokens,
                              rec.t_ref_s)
    assert len(ans.boxes) == 5 and len({b.label for b in ans.boxes}) == 5, ans.text
