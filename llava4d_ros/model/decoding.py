"""Greedy decoding of LLaVA-4D's answers through the LM's own `generate`: what ends an answer
(`answer_ids`, `RepeatedSentence`), the `<box>` / `<time>` slot values of one answer
(`SlotFiller`, `SlotValue`, `write_slots`), a box's raw confidence score (`box_raw_score`) and
the scene inventory's output bias (`Guide`, `InventoryBiasProcessor`, `NameEveryObject`).

Each object lives for one question and takes tensors and callables, never the model:
`LLaVA4D.generate_batch` builds them and `generation.greedy_answer` runs `generate` with them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import LogitsProcessor, StoppingCriteria

from llava4d_ros.model.inventory import Inventory, InventoryBias, WordSets, decode_features
from llava4d_ros.model.tokenizer import SLOT_BOX, SLOT_TIME


@dataclass(frozen=True)
class SlotTokens:
    """The token ids decoding watches for: the sentence end ".", `<box>` and `<time>` (-1 for
    a model without slot heads)."""

    period: int
    box: int
    time: int


@dataclass(frozen=True)
class SlotValue:
    """A filled slot: the `text` written in its place and the numbers behind it, at the
    precision written (so the text and the structured answer never disagree): a `<box>`'s
    `box6` (world metres, 1 cm) and `confidence` (probability that it is right), or a
    `<time>`'s `t_s` (model seconds, 0.1 s)."""

    text: str
    box6: tuple[float, ...] | None = None
    confidence: float = 1.0
    t_s: float | None = None

    @property
    def is_box(self) -> bool:
        return self.box6 is not None

    @classmethod
    def of_box(cls, box6: Sequence[float], confidence: float) -> SlotValue:
        vals = tuple(round(float(v), 2) + 0.0 for v in box6)  # + 0.0: no "-0.00"
        return cls("[" + ", ".join(f"{v:.2f}" for v in vals) + "]", box6=vals,
                   confidence=confidence)

    @classmethod
    def of_time(cls, t_s: float) -> SlotValue:
        t = round(float(t_s), 1) + 0.0
        return cls(f"{t:.1f}", t_s=t)


def write_slots(text: str, values: Sequence[SlotValue]
                ) -> tuple[str, dict[int, tuple[tuple[float, ...], float]]]:
    """`text` (with `<box>` / `<time>` in place, `LLaVA4D.render_text`) with each slot
    replaced by its value, in order, and where each box went: {offset of its "[": (box6,
    confidence)}, for `grounding.parse_answer`."""
    boxes: dict[int, tuple[tuple[float, ...], float]] = {}
    for v in values:
        slot = SLOT_BOX if v.is_box else SLOT_TIME
        at = text.find(slot)
        if at < 0:
            continue
        text = text[:at] + v.text + text[at + len(slot):]
        shift = len(v.text) - len(slot)
        # a slot before one filled earlier (a stray literal "<box>") moves it
        boxes = {k + shift if k > at else k: b for k, b in boxes.items()}
        if v.is_box:
            boxes[at] = (v.box6, v.confidence)  # type: ignore[assignment]
    return text, boxes


BOX_SCORE_GROW = 1.5  # the box's half-sizes grown by half: the best of 1, 1.25, 1.5, 2, 3 (val)


def box_raw_score(w: torch.Tensor, xyz: torch.Tensor, box6: torch.Tensor) -> float:
    """A `<box>`'s raw confidence in [0, 1]: the pointer's weight `w (N,)` on the tokens at
    `xyz (N, 3)` that lie in the box `box6 (6,)` the box head made of them, grown by
    `BOX_SCORE_GROW`. High when the box sits where the pointer looked; low when the weight is
    spread over several objects or times (the pointer unsure which) and the box lands between
    them. The growth keeps an object's own tokens: they are voxel centres up to 0.2 m apart, so
    many lie just outside a right box (within the box itself: AUROC 0.58 on val, grown: 0.75).
    Rounded to 1e-4: most boxes score above 0.99, and finer steps there are summation noise
    that the calibration fit would read as signal."""
    half = box6[3:] * (BOX_SCORE_GROW / 2)
    near = ((xyz - box6[:3]).abs() <= half).all(dim=-1)  # (N,)
    return round(float(w[near].sum().clamp(0.0, 1.0)), 4)


class Guide:
    """One question's decode state for the inventory bias: the window's `Inventory` and what the
    question names (`words`, the inventory's word sets); `bias(h, generated)` is the `bias`
    network's output `(V,)` for the next token."""

    def __init__(self, words: WordSets, bias: InventoryBias, inv: Inventory,
                 question_ids: Sequence[int]) -> None:
        self.words, self.bias_net, self.inv = words, bias, inv
        named, shape_after, plural = words.question(question_ids)
        dev = inv.present.device
        self.in_q = torch.tensor([named], device=dev)
        self.shape_after = torch.tensor([shape_after], device=dev)
        self.plural = torch.tensor([plural], device=dev)
        self.q_first = named.index(1) if 1 in named else -1

    def _state(self, generated: Sequence[int]) -> tuple[list[int], int]:
        """(colours the answer named so far, the current colour: the last it named, else the
        question's first, or -1)."""
        if not generated:
            return [0] * self.in_q.shape[1], self.q_first
        return self.words.answer_states(generated, self.q_first)[-1]

    def current_weights(self, generated: Sequence[int]) -> torch.Tensor | None:
        """`(N,)` the inventory's token weights of the object the answer is about, None if
        there is none or it has no tokens."""
        cur = self._state(generated)[1]
        if cur < 0 or self.inv.weights is None or not bool(self.inv.weights[cur].any()):
            return None
        return self.inv.weights[cur]

    def bias(self, h: torch.Tensor, generated: Sequence[int], t_sentence: float) -> torch.Tensor:
        named, cur = self._state(generated)
        dev = h.device
        feats = decode_features(self.inv, torch.tensor([named], device=dev), self.in_q,
                                self.shape_after, torch.tensor([cur], device=dev), self.plural,
                                torch.tensor([t_sentence], dtype=h.dtype, device=dev))
        return self.bias_net.on_vocab(self.bias_net(h[None], feats))[0]


def answer_ids(ids: Sequence[int], period_id: int, eos_id: int | None
               ) -> tuple[list[int], bool]:
    """The answer in generated `ids` and whether it ended (by the end token or a sentence said
    twice) rather than ran out of tokens: the end token dropped; a repeated sentence dropped (it
    adds nothing and would loop to the token limit); out of tokens mid-sentence, cut back to the
    last full sentence."""
    ids = list(ids)
    ended = bool(ids) and eos_id is not None and ids[-1] == eos_id
    if ended:
        ids.pop()
    said: set[tuple[int, ...]] = set()
    start = 0  # where the current sentence starts
    for j, tid in enumerate(ids):
        if tid == period_id:
            done = tuple(ids[start:j + 1])
            if done in said:
                return ids[:start], True
            said.add(done)
            start = j + 1
    if not ended and 0 < start < len(ids):
        del ids[start:]
    return ids, ended


class RepeatedSentence(StoppingCriteria):
    """Stops when the sentence just finished (at `period_id`) was said before."""

    def __init__(self, period_id: int) -> None:
        self.period_id = period_id

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any
                 ) -> torch.BoolTensor:
        ids = input_ids[0].tolist()  # the generated ids (the prompt went in as embeddings)
        stop = bool(ids) and ids[-1] == self.period_id and answer_ids(
            ids, self.period_id, None)[1]
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool,
                          device=input_ids.device)


#: A slot's value from (its token id, its LM hidden state `(H,)`, its sentence's embeddings so
#: far `(L, H)`, the value of the sentence's `<time>` slot (NaN if none), the inventory's token
#: weights `(N,)` of the object the sentence names or None): `heads.SlotReader.fill` with the
#: question and the window bound.
ReadSlot = Callable[[int, torch.Tensor, torch.Tensor, float, torch.Tensor | None], SlotValue]


class SlotFiller:
    """One question's `<box>` / `<time>` values: each `read` from the LM's hidden state at the
    slot and the sentence so far (its embeddings, by `embed` of its ids, and the value of its
    `<time>` slot) and, with a `guide`, the inventory's weights of the tokens of the object the
    sentence names. Values are kept by answer position: the inventory bias asks for the times
    while decoding, the answer for every slot at the end."""

    def __init__(self, ids: SlotTokens, embed: Callable[[Sequence[int]], torch.Tensor],
                 read: ReadSlot, guide: Guide | None, t_asked_s: float = float("nan")) -> None:
        self.ids, self.embed, self.read, self.guide = ids, embed, read, guide
        # the model time a where-question asks about, NaN if none: every `<time>` of its
        # answer states it, instead of the time head's reading of the question
        self.t_asked_s = t_asked_s
        self.values: dict[int, SlotValue] = {}

    def sentence_time(self, generated: Sequence[int],
                      hidden_at: Callable[[int], torch.Tensor], boxes: bool = False) -> float:
        """The value of the current sentence's `<time>` slot (NaN if none), filling the slots
        of `generated` on the way (`<box>` ones only with `boxes`); `hidden_at(j)`: the LM's
        hidden state `(H,)` at answer position j."""
        ids = self.ids
        emb = self.embed(generated)  # (n, D)
        start, t_sentence = 0, float("nan")
        for j, tid in enumerate(generated):
            if tid == ids.period:
                start, t_sentence = j + 1, float("nan")
                continue
            is_box = tid == ids.box
            if not (is_box or tid == ids.time) or (is_box and not boxes):
                continue
            if j not in self.values and not is_box and math.isfinite(self.t_asked_s):
                self.values[j] = SlotValue.of_time(self.t_asked_s)
            if j not in self.values:
                # the named object's tokens (the inventory's colour weights): a box is pointed
                # among them; a time's pointer is not (its first-motion reading did worse so,
                # 30 val scenes), but that reading may look at them (`first_motion_tokens`)
                mask = (self.guide.current_weights(generated[:j + 1])
                        if self.guide is not None else None)
                self.values[j] = self.read(tid, hidden_at(j), emb[start:j + 1], t_sentence,
                                           mask)
            if not is_box:
                t_sentence = self.values[j].t_s
        return t_sentence

    def fill(self, generated: Sequence[int], hidden_at: Callable[[int], torch.Tensor]
             ) -> list[SlotValue]:
        """The value of every slot of `generated`, in order."""
        self.sentence_time(generated, hidden_at, boxes=True)
        return [self.values[j] for j, tid in enumerate(generated)
                if tid in (self.ids.box, self.ids.time)]


class InventoryBiasProcessor(LogitsProcessor):
    """Adds the inventory's output bias for the next token: it reads the hidden state of the
    position just run (`seen[-1]`, kept by the caller's forward hook) and the decode state of
    the answer so far, with the value of its sentence's `<time>` slot."""

    def __init__(self, guide: Guide, filler: SlotFiller | None,
                 seen: list[torch.Tensor]) -> None:
        self.guide, self.filler, self.seen = guide, filler, seen

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor
                 ) -> torch.FloatTensor:
        generated = input_ids[0].tolist()  # seen[0]: the prompt's last position, then one each
        t_sentence = (float("nan") if self.filler is None  # no slot heads: no `<time>` values
                      else self.filler.sentence_time(generated, lambda j: self.seen[j + 1]))
        return scores + self.guide.bias(self.seen[-1], generated, t_sentence)[None]


class NameEveryObject(LogitsProcessor):
    """A description of the scene does not end while an object the inventory sees is unnamed:
    the end token is masked until every colour in `must_name` (inventory indices) has been
    named. The SmolLM2 model's captions stopped one object short in 6 of 30 val scenes."""

    def __init__(self, guide: Guide, must_name: Sequence[int], eos_id: int) -> None:
        self.guide, self.must_name, self.eos_id = guide, tuple(must_name), eos_id

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor
                 ) -> torch.FloatTensor:
        named, _ = self.guide._state(input_ids[0].tolist())
        if any(not named[c] for c in self.must_name):
            scores = scores.clone()
            scores[:, self.eos_id] = float("-inf")
        return scores
