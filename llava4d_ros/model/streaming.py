"""An answer while it is generated: its text so far to a callback (`AnswerStreamer`), and a
stop between two decode steps when the caller cancels (`Cancelled`).

Both plug into the LM's own `generate` (a `BaseStreamer`, a `StoppingCriteria`);
`generation.greedy_answer` builds them for one answer. `said_so_far` is the rule for which of the
generated ids are the answer until now.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import torch
from transformers import StoppingCriteria
from transformers.generation.streamers import BaseStreamer

from llava4d_ros.model.decoding import answer_ids

#: Tokens between two texts sent mid-sentence: a sentence end sends at once. The default
#: model says ~13 word tokens a sentence at ~8 ms a token on the CPU, so a reader sees the
#: sentence grow about every 30 ms and each sentence end at once.
STREAM_EVERY_TOKENS = 4


def said_so_far(ids: Sequence[int], period_id: int, eos_id: int | None) -> list[int]:
    """The answer in generated `ids` until now: `answer_ids`' rules (the end token dropped, a
    sentence said twice dropped) except that the sentence being said is kept, not cut back: a
    stream shows it growing, and a cancelled answer returns it as it stood."""
    ids = list(ids)
    if ids and eos_id is not None and ids[-1] == eos_id:
        ids.pop()
    kept, ended = answer_ids(ids, period_id, None)
    if ended:  # a sentence said twice: the answer ends before it
        return kept
    return ids


class Cancelled(StoppingCriteria):
    """Stops generation at the next decode step once `event` is set (a cancel request): the
    check costs one `Event.is_set` a token."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any
                 ) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool,
                          device=input_ids.device)


class AnswerStreamer(BaseStreamer):
    """Sends the rendered answer so far to `on_text` at each sentence end (`period_id`) and
    every `every` tokens, never the same text twice.

    `render(ids)` turns the answer's ids so far into text (the caller fills the `<box>` /
    `<time>` slots whose values it knows). A slot token that has just been generated has no
    value yet (its hidden state comes with the next step), so a text is never sent ending in
    one: it waits for the next token. `generate` calls `put` with the prompt first (skipped),
    then with each new token; the caller sends the final text itself, once the answer is
    complete, so `end` sends nothing.
    """

    def __init__(self, render: Callable[[list[int]], str], on_text: Callable[[str], None],
                 period_id: int, eos_id: int | None, slot_ids: Sequence[int] = (),
                 every: int = STREAM_EVERY_TOKENS) -> None:
        self.render, self.on_text = render, on_text
        self.period_id, self.eos_id = period_id, eos_id
        self.slot_ids = frozenset(int(s) for s in slot_ids)
        self.every = max(1, int(every))
        self.ids: list[int] = []
        self.sent = ""  # the last text sent
        self._prompt = True
        self._since = 0  # tokens since the last text was sent

    def put(self, value: torch.Tensor) -> None:
        if self._prompt:  # generate's first call: the prompt (empty: it went in as embeddings)
            self._prompt = False
            return
        new = [int(v) for v in value.reshape(-1).tolist()]
        self.ids += new
        self._since += len(new)
        last = self.ids[-1]
        if last == self.eos_id or last in self.slot_ids:
            return  # the end: the caller sends the whole answer; a slot: its value comes next
        if last == self.period_id or self._since >= self.every:
            self.send(self.render(said_so_far(self.ids, self.period_id, self.eos_id)))

    def send(self, text: str) -> None:
        """`on_text(text)` unless it is empty or was the last text sent."""
        self._since = 0
        if text and text != self.sent:
            self.sent = text
            self.on_text(text)

    def end(self) -> None:
        pass
