"""Decoding ends cleanly: a sentence said twice stops generation (the repeat dropped), and an
answer cut by max_new_tokens ends at its last full sentence. A tiny real model whose LM's next
word is steered by a forward hook, so the loop under test is the real one."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from helpers.tiny_model import random_tokens
from llava4d_ros.data.instructions import vocabulary
from llava4d_ros.model.config import LLaVA4DConfig, tiny_llama
from llava4d_ros.model.llava4d import build_model
from llava4d_ros.model.tokenizer import build_tokenizer


def steered_model(choose: Callable[[str], str]):
    """A tiny model whose LM, after the token w, says `choose(w)`."""
    tok = build_tokenizer(vocabulary())
    cfg = LLaVA4DConfig(lm=tiny_llama(len(tok), hidden=32, layers=2, heads=4), pointer_dim=16,
                        box_hidden=16, token_budget=64)
    torch.manual_seed(0)
    model = build_model(cfg, tok).eval()
    table = model.lm.get_input_embeddings().weight.detach()  # (V, D)

    def hook(module, args, kwargs, out):
        if kwargs.get("input_ids") is not None:  # a decode step of `generate`
            last = tok.convert_ids_to_tokens(int(kwargs["input_ids"][0, -1]))
        else:  # the prompt, as embeddings: the nearest row of the table
            e_last = kwargs["inputs_embeds"][0, -1]  # (D,): the last input token's embedding
            last = tok.convert_ids_to_tokens(int(torch.cdist(e_last[None], table).argmin()))
        logits = torch.full_like(out.logits, -1e4)
        logits[0, -1, tok.convert_tokens_to_ids(choose(last))] = 1e4
        out.logits = logits
        return out

    model.lm.register_forward_hook(hook, with_kwargs=True)
    return model


LOOP = {"red": "cube", "blue": "cube", "cube": "moves", "moves": "."}


@pytest.mark.parametrize("max_new_tokens", [40, 8])
def test_a_repeated_sentence_ends_the_answer(max_new_tokens):
    # "the red cube moves ." forever; 8 tokens also cut the second sentence short
    model = steered_model(lambda w: "red" if w == "the" else LOOP.get(w, "the"))
    ans = model.generate("Which objects move?", random_tokens(40), 50.0,
                         max_new_tokens=max_new_tokens)
    assert ans.text.lower() == "the red cube moves."
    assert ans.num_tokens == 5


def test_different_sentences_are_kept_until_one_repeats():
    # "the red cube moves . the blue cube moves ." then red again: a repeat, so the end
    colours = iter(["red", "blue"] * 20)
    model = steered_model(lambda w: next(colours) if w == "the" else LOOP.get(w, "the"))
    ans = model.generate("Which objects move?", random_tokens(40), 50.0, max_new_tokens=60)
    assert ans.text.lower() == "the red cube moves. the blue cube moves."


def test_answer_ids_ends_at_the_end_token_a_repeat_or_the_last_full_sentence():
    from llava4d_ros.model.decoding import answer_ids

    period, eos = 0, 9
    assert answer_ids([1, 2, 0, 3, 0, 9], period, eos) == ([1, 2, 0, 3, 0], True)
    assert answer_ids([1, 2, 0, 3, 0, 1, 2, 0], period, eos) == ([1, 2, 0, 3, 0], True)
    assert answer_ids([1, 2, 0, 3, 4], period, eos) == ([1, 2, 0], False)  # out of tokens
    assert answer_ids([1, 2, 3], period, eos) == ([1, 2, 3], False)  # no full sentence: kept
    assert answer_ids([1, 2, 3], period, None) == ([1, 2, 3], False)


def test_a_slot_at_the_token_limit_is_filled_like_any_other():
    # "at <box> at <box> ...": with no full sentence the answer keeps its tokens, and the last
    # one (a slot that `generate` never ran) gets the same value as when more tokens follow
    from llava4d_ros.model.tokenizer import SLOT_BOX

    model = steered_model(lambda w: SLOT_BOX if w == "at" else "at")
    tokens = random_tokens(40)
    two = model.generate("Where is the red cube?", tokens, 50.0, max_new_tokens=2)
    three = model.generate("Where is the red cube?", tokens, 50.0, max_new_tokens=3)
    assert two.num_tokens == 2 and three.num_tokens == 3
    assert two.text.startswith("at [") and SLOT_BOX not in two.text + three.text
    assert three.text.startswith(two.text) and three.text.endswith(" at")


@pytest.mark.parametrize("question, t_s", [
    ("Where is the red cube at 2.5s?", 2.5), ("Where was the red cube 3 seconds ago?", 4.9),
    ("Where is the red cube heading now?", 7.9), ("Describe the scene at 3.0s.", 3.0),
    ("Describe the scene.", 7.9), ("Where is the red cube?", 7.9),  # no time named: now
    ("When did the red cube start moving?", None), ("How many objects are there?", None),
])
def test_the_time_a_where_question_asks_about(question, t_s):
    from llava4d_ros.answers.intent import read_intent
    from llava4d_ros.answers.template import asked_time_s

    got = asked_time_s(read_intent(question), t_end_s=7.9)
    assert got == pytest.approx(t_s) if t_s is not None else got != got  # NaN


def test_the_answer_states_the_asked_time_and_the_box_is_read_at_it(monkeypatch):
    """With `t_asked_s` the `<time>` slot is that time (not the time head's reading), and the
    box of the same sentence is pointed at it."""
    from llava4d_ros.model.heads import SlotReader

    model = steered_model(lambda w: ".")
    tokens = random_tokens(40)
    _, _, h_visual = model.visual_prefix(tokens, 50.0, hidden=True)
    tt = model.token_tensors(tokens, 50.0)
    text = model.text_after("Where is the red cube at 2.5s?")
    q_emb = model.embed(torch.tensor(text.ids), None, text)
    answer = [model.time_token_id, model.box_token_id]
    gen = torch.Generator().manual_seed(1)
    hidden = torch.randn(2, model.lm.config.hidden_size, generator=gen)  # (slot, H)

    def fill(t_asked_s: float):
        with torch.no_grad():  # as answers are decoded
            filler = model.slot_reader.filler(
                model.lm_handle.ids, model.embed_answer, q_emb, model.question_time(text, q_emb),
                text.first_time_s, h_visual, tt, None, t_asked_s)
            return filler.fill(answer, lambda j: hidden[j])

    box_read_at = []
    fill_slot = SlotReader.fill

    def recording(reader, token_id, *args, **kwargs):
        if token_id == model.box_token_id:
            box_read_at.append(args[4])  # t_sentence
        return fill_slot(reader, token_id, *args, **kwargs)

    monkeypatch.setattr(SlotReader, "fill", recording)
    head_time, _ = fill(float("nan"))
    asked_time, _ = fill(6.3)
    assert asked_time.t_s == 6.3 and asked_time.text == "6.3"
    assert head_time.t_s != 6.3
    assert box_read_at == [head_time.t_s, 6.3]


def test_a_description_does_not_end_before_every_seen_object_is_named():
    from llava4d_ros.model.decoding import NameEveryObject

    class Named:  # a guide whose answer has named the colours of the ids said so far
        def _state(self, generated):
            return [int(c in generated) for c in range(3)], -1

    eos = 9
    rule = NameEveryObject(Named(), must_name=(0, 2), eos_id=eos)
    scores = torch.zeros(1, 10)
    assert rule(torch.tensor([[0]]), scores)[0, eos] == float("-inf")  # colour 2 unnamed
    assert rule(torch.tensor([[0, 2]]), scores)[0, eos] == 0.0
    assert scores[0, eos] == 0.0  # the caller's scores are left as they were
