"""An answer while it is generated (issue 32): the text so far through `on_text`, slots shown
as their values, cancel within a decode step, and the static-cache decode giving the eager
answer. Tiny real models whose LM is steered by a forward hook (as test_model_decode.py)."""

from __future__ import annotations

import threading

import pytest
import torch
from test_model_decode import steered_model

from helpers.tiny_model import random_tokens
from llava4d_ros.model.llava4d import ModelAnswer
from llava4d_ros.model.tokenizer import SLOT_BOX, SLOT_TIME

# "the red cube is at <box> . the blue cube is at <box> ." and so on: `n_sentences` colours,
# then the first again (a sentence said twice: the end)
COLOURS = ["red", "blue", "green", "yellow", "cyan", "purple"]


def talker(n_sentences: int):
    """The steered model; `model.reset_talk()` starts its sentences over (before each answer)."""
    said = {}
    follow = {**dict.fromkeys(COLOURS, "cube"), "cube": "is", "is": "at", "at": SLOT_BOX,
              SLOT_BOX: "."}
    model = steered_model(lambda w: next(said["it"]) if w == "the" else follow.get(w, "the"))

    def reset_talk() -> None:
        said["it"] = iter(COLOURS[:n_sentences] * 3)

    model.reset_talk = reset_talk
    reset_talk()
    return model


def test_the_stream_grows_to_the_answer_with_slots_as_values():
    model = talker(4)
    tokens = random_tokens(40)
    plain = model.answer("Where is the red cube?", tokens, 50.0, max_new_tokens=80)
    model.reset_talk()
    texts: list[str] = []
    streamed = model.answer("Where is the red cube?", tokens, 50.0, max_new_tokens=80,
                            on_text=texts.append)
    assert plain.text.count("[") == 4, plain.text  # four sentences, each with its box
    assert streamed.text == plain.text and streamed.boxes == plain.boxes
    assert len(texts) >= 4 and texts[-1] == plain.text
    assert all(SLOT_BOX not in t and SLOT_TIME not in t for t in texts), texts
    # each text the one before it, said further: a filled slot keeps its value. The last
    # (the answer) drops the start of the sentence said again that ended it
    growing = texts[:-1]
    assert all(b.startswith(a) and b != a for a, b in zip(growing, growing[1:])), texts
    assert growing[-1].startswith(plain.text) and growing[-1] != plain.text


def test_a_cancel_stops_generation_within_a_step_and_keeps_the_sentence_being_said():
    model = talker(6)
    cancel = threading.Event()
    texts: list[str] = []
    forwards: list[bool] = []
    model.lm.register_forward_hook(lambda *_: forwards.append(cancel.is_set()))

    def on_text(text: str) -> None:
        texts.append(text)
        if len(texts) == 3:
            cancel.set()

    ans = model.answer("Where is the red cube?", random_tokens(40), 50.0, max_new_tokens=120,
                       on_text=on_text, cancel=cancel)
    assert sum(forwards) <= 1, forwards  # at most a slot's own forward after the cancel
    assert ans.text == texts[-1] and ans.text.startswith(texts[2])
    full = talker(6).answer("Where is the red cube?", random_tokens(40), 50.0,
                            max_new_tokens=120)
    assert full.text.startswith(ans.text) and len(ans.text) < len(full.text)
    assert not ans.text.endswith(".")  # cut mid-sentence, and that sentence is kept
    assert len(ans.boxes) == ans.text.count("[")


def test_a_cancel_before_the_answer_starts_generates_nothing():
    model = talker(2)
    cancel = threading.Event()
    cancel.set()
    texts: list[str] = []
    ans = model.answer("Where is the red cube?", random_tokens(40), 50.0, on_text=texts.append,
                       cancel=cancel)
    assert ans.text == "" and ans.num_tokens == 0 and texts == []


def test_an_answer_without_generated_tokens_is_sent_once_whole(monkeypatch):
    """What the scene inventory (or any rule) decides has no tokens to stream: `answer`
    still sends its whole text once."""
    model = talker(1)
    decided = ModelAnswer(text="There are 3 objects.", boxes=())
    monkeypatch.setattr(model, "generate", lambda *a, **k: decided)
    texts: list[str] = []
    assert model.answer("How many objects are there?", random_tokens(40), 50.0,
                        on_text=texts.append) is decided
    assert texts == ["There are 3 objects."]


def test_the_static_cache_decodes_the_eager_answer():
    model = talker(3)
    tokens = random_tokens(40)
    eager = model.answer("Where is the red cube?", tokens, 50.0, max_new_tokens=60)
    model.reset_talk()
    model.decode_mode = "static"
    texts: list[str] = []
    static = model.answer("Where is the red cube?", tokens, 50.0, max_new_tokens=60,
                          on_text=texts.append)
    assert static.text == eager.text and texts[-1] == eager.text
    assert len(static.boxes) == len(eager.boxes) == 3
    for got, want in zip(static.boxes, eager.boxes):
        assert got.box6 == pytest.approx(want.box6, abs=0.011)  # 1 cm: the text's rounding
    model.reset_talk()
    again = model.answer("Where is the red cube?", tokens, 50.0, max_new_tokens=60)
    assert again.text == eager.text  # the visual prefix's cache was left as it was


def test_fast_decode_modes_are_refused_on_the_cpu_and_for_lms_that_cannot_compile():
    from llava4d_ros.model.fast_decode import check_decode_mode

    lm = talker(1).lm
    check_decode_mode("eager", "cpu", lm)
    for mode in ("static", "compile"):
        with pytest.raises(ValueError, match="needs a CUDA device"):
            check_decode_mode(mode, "cpu", lm)
    check_decode_mode("compile", "cuda", lm)  # a Llama: transformers compiles it

    class Plain(torch.nn.Module):
        _can_compile_fullgraph = False

    with pytest.raises(ValueError, match="not supported by this LM"):
        check_decode_mode("compile", "cuda", Plain())
    with pytest.raises(ValueError, match="must be one of"):
        check_decode_mode("fast", "cuda", lm)


def test_static_caches_come_in_few_lengths():
    """A compiled step is specialised to its cache's shape: prompts of every length share a
    few cache lengths."""
    from llava4d_ros.model.fast_decode import CACHE_BUCKET, cache_length

    assert {cache_length(n) for n in range(1, CACHE_BUCKET + 1)} == {CACHE_BUCKET}
    assert cache_length(CACHE_BUCKET + 1) == 2 * CACHE_BUCKET


def test_the_node_settings_refuse_fast_decoding_on_the_cpu_before_loading():
    from llava4d_ros.config import NodeConfig
    from llava4d_ros.model.runtime import load_model

    assert NodeConfig().decode_mode == "eager"
    with pytest.raises(ValueError, match="decode_mode must be"):
        NodeConfig(decode_mode="fast")
    for mode in ("static", "compile"):
        with pytest.raises(ValueError, match=f"decode_mode '{mode}' needs a CUDA device"):
            load_model("/no/such/model", "cpu", decode_mode=mode)  # refused before loading
    assert load_model(None, "cpu").decode_mode == "eager"
