"""The answer policy: who answers a question. The only place hand-written answer rules live.

In this order, the first that decides wins:
1. the object memory on disk (`memory_answers`), for the past beyond the window: when
   something was last seen, where it was at a time, what moved or is new since, how long it has
   stood there; then the object map (`map_answers`), for what it knows: what is there, how
   many, where now, the nearest, is anything moving, what colour, where the camera was, and
   declines naming what is there ("I see no kettle; I see 2 mugs and a chair.");
2. for a model trained on the task templates with a scene inventory: the question is put as
   its template (`intent.canonical_question`) and what the inventory's readings decide is
   answered from them (`scene_answers.scene_answer`: a time outside the window, yes/no motion
   at a time, which objects move at a time, counts, the object it cannot see);
3. the network (LLaVA-4D): a box at a time, when something started moving, where it heads,
   descriptions. For a model whose config asks for it (`InventoryConfig.heading_words`; not
   the shipped default) the inventory's reading of the heading replaces the LM's word.

`rules=False` (evaluate's `--policy none`) skips 1 and 2 and the heading: every question goes
to the network as written, to show what the network alone does.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from llava4d_ros.answers import map_answers, map_reading, memory_answers
from llava4d_ros.answers.intent import canonical_question, read_intent
from llava4d_ros.answers.map_answers import MapScene
from llava4d_ros.answers.scene_answers import scene_answer
from llava4d_ros.answers.template import asked_time_s, facts_of, inventory_heading, must_name
from llava4d_ros.core.buffer4d import VisualTokens
from llava4d_ros.core.objects import MapObject

SOURCES = ("map", "rules", "network")


@dataclass(frozen=True)
class PolicyAnswer:
    """`text`; `boxes`: the network's grounded boxes (`t_s` model seconds since the window
    start, None: its end); `objects`: the map objects the answer names; `source`: who
    decided it (map, rules or network); `question`: what was asked of the network (the
    template), or the question."""

    text: str
    boxes: tuple = ()
    objects: tuple[MapObject, ...] = ()
    source: str = "network"
    question: str = ""
    num_tokens: int = 0
    times: tuple[float, ...] = ()
    warnings: tuple[str, ...] = field(default=())


class AnswerPolicy:
    """Answers questions with `model` (a `LLaVA4D`) and the object map; see the module
    docstring."""

    def __init__(self, model: Any, rules: bool = True):
        self.model = model
        self.rules = bool(rules)

    @property
    def _templates(self) -> bool:
        return self.rules and bool(getattr(self.model, "reads_templates_best", False))

    def answer(self, question: str, tokens: VisualTokens, t_ref_s: float,
               max_new_tokens: int, scene: MapScene | None = None, *,
               t_end_s: float | None = None,
               on_text: Callable[[str], None] | None = None,
               cancel: threading.Event | None = None) -> PolicyAnswer:
        """One question over the window `tokens` (`t_ref_s` its start, `t_end_s` its end [s]:
        see `answer_batch`). `on_text` gets the text so far while the network writes it, and
        the whole answer last; `cancel` stops the network."""
        return self.answer_batch([question], tokens, t_ref_s, max_new_tokens, scene,
                                 t_end_s=t_end_s, on_text=on_text, cancel=cancel)[0]

    def answer_batch(self, questions: Sequence[str], tokens: VisualTokens, t_ref_s: float,
                     max_new_tokens: int, scene: MapScene | None = None, *,
                     t_end_s: float | None = None,
                     on_text: Callable[[str], None] | None = None,
                     cancel: threading.Event | None = None) -> list[PolicyAnswer]:
        """Several questions over one window; the network's visual prefix runs once for those
        it answers. `t_end_s` [s]: "now", the newest frame, which "3 seconds ago" counts back
        from (default: the newest token's stamp; a frame that made no keyframe adds no token,
        so the newest token can be a keyframe interval older than the newest frame)."""
        out: list[PolicyAnswer | None] = [None] * len(questions)
        if self.rules and scene is not None:
            for i, q in enumerate(questions):
                asked_map = map_reading.read(q)
                ma = (memory_answers.answer(asked_map, scene)
                      or map_answers.answer(asked_map, scene))
                if ma is not None:
                    out[i] = PolicyAnswer(ma.text, objects=ma.objects, source="map", question=q)
        asked = [canonical_question(q) if self._templates else q for q in questions]
        facts = inv = None
        if self._templates and getattr(self.model, "words", None) is not None:
            inv = self.model.scene_inventory(tokens, t_ref_s)
            t_now = float(np.max(tokens.t_s)) if t_end_s is None else float(t_end_s)
            facts = facts_of(self.model, inv, t_now - t_ref_s)
            for i, q in enumerate(asked):
                if out[i] is None:
                    decided = scene_answer(q, facts)
                    if decided is not None:
                        out[i] = PolicyAnswer(decided, source="rules", question=q)
        todo = [i for i, a in enumerate(out) if a is None]
        if todo:
            intents = [read_intent(asked[i]) if facts is not None else None for i in todo]
            t_end = None if facts is None else facts.t_end_s
            times = [asked_time_s(it, t_end) if facts is not None else float("nan")
                     for it in intents]
            names = [must_name(it, facts, self.model.cfg.inventory.colours)
                     if facts is not None else () for it in intents]
            streamed = len(todo) == 1
            if streamed:  # one answer: the model streams it and relays its final text
                nets = [self.model.answer(asked[todo[0]], tokens, t_ref_s, max_new_tokens,
                                          asked_time_s=times[0], must_name=names[0],
                                          on_text=on_text, cancel=cancel)]
            else:
                nets = self.model.generate_batch([asked[i] for i in todo], tokens, t_ref_s,
                                                 max_new_tokens, asked_times=times,
                                                 must_name=names, inventory=inv,
                                                 cancel=cancel)
            inv_words = facts is not None and self.model.cfg.inventory.heading_words
            for i, it, net in zip(todo, intents, nets):
                text = net.text
                if inv_words:
                    net = inventory_heading(it, net, facts)
                out[i] = PolicyAnswer(net.text, boxes=tuple(net.boxes), source="network",
                                      question=asked[i], num_tokens=net.num_tokens,
                                      times=tuple(net.times), warnings=tuple(net.warnings))
                if streamed and on_text is not None and net.text != text:
                    on_text(net.text)
        done = [a for a in out if a is not None]
        if on_text is not None:
            for i, a in enumerate(done):
                if not (len(todo) == 1 and i == todo[0]):
                    on_text(a.text)
        return done


def answer_questions(model: Any, questions: Sequence[str], tokens: VisualTokens,
                     t_ref_s: float | None = None, max_new_tokens: int | None = None,
                     rules: bool = True, scene: MapScene | None = None,
                     t_end_s: float | None = None) -> list[PolicyAnswer]:
    """`questions` about one window answered as the node answers them (`AnswerPolicy`; no
    object map unless `scene`): `t_ref_s` defaults to the earliest token's stamp, `t_end_s`
    to the newest, `max_new_tokens` to the model's default."""
    from llava4d_ros.model.llava4d import MAX_NEW_TOKENS

    t_ref = float(np.min(tokens.t_s)) if t_ref_s is None else float(t_ref_s)
    return AnswerPolicy(model, rules).answer_batch(
        questions, tokens, t_ref, MAX_NEW_TOKENS if max_new_tokens is None else max_new_tokens,
        scene, t_end_s=t_end_s)
