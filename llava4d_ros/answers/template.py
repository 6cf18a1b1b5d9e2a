"""The rules around a model trained on the task templates with a scene inventory (both shipped
models): the question read as its template (`intent.py`), what the inventory's readings decide
(`scene_answers.py`), and the inventory's word for which way an object heads.

The inventory itself is a learned network (model/inventory.py); these rules only read its
outputs. `facts_of` turns them into `SceneFacts` by name.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from llava4d_ros.answers.intent import Intent
from llava4d_ros.answers.scene_answers import SceneFacts, with_heading


def facts_of(model: Any, inv: Any, t_end_s: float) -> SceneFacts:
    """The inventory's readings `inv` (`model.scene_inventory`) by name, for `scene_answer`;
    `t_end_s` the model time [s] of now (the newest frame)."""
    import torch  # the readings are tensors; this module is imported without a model too

    present, moving, shape = inv.probs()
    colours, shapes = model.cfg.inventory.colours, model.cfg.inventory.shapes

    def velocity(colour: str, t_s: float, sigma_s: float) -> tuple[float, float]:
        cur = torch.tensor([colours.index(colour)], device=present.device)
        v = inv.velocity(cur, torch.tensor([t_s], dtype=present.dtype,
                                           device=present.device), sigma_s)  # (1, 2)
        vx, vy = v[0].tolist()
        return vx, vy

    return SceneFacts(present=dict(zip(colours, present.tolist())),
                      shape={c: dict(zip(shapes, row)) for c, row in
                             zip(colours, shape.tolist())},
                      moving=dict(zip(colours, moving.tolist())), t_end_s=t_end_s,
                      velocity=velocity)


def asked_time_s(intent: Intent | None, t_end_s: float) -> float:
    """The model time a question about where an object is, where it heads, or what the scene
    looks like asks about (`intent`, `read_intent` of the question: "at 2.5s": 2.5, "3 seconds
    ago": `t_end_s` - 3, "now" or no time named: `t_end_s`); NaN for any other question (when
    something started is the model's to read). The answer states this time rather than the
    time head's reading of the question (docs/RESULTS.md)."""
    if intent is None or intent.kind not in ("ground", "heading", "caption"):
        return float("nan")
    t_s = intent.when.model_time(t_end_s)
    return t_end_s if t_s is None else t_s


def must_name(intent: Intent | None, facts: SceneFacts, colours: tuple[str, ...]
              ) -> tuple[int, ...]:
    """Inventory indices a description must name before it ends: every colour the inventory
    sees (a description the LM ended early left objects out)."""
    if intent is None or intent.kind != "caption":
        return ()
    return tuple(colours.index(c) for c in facts.seen())


def inventory_heading(intent: Intent | None, answer: Any, facts: SceneFacts) -> Any:
    """`answer` (a `ModelAnswer`) to a question about where an object is heading, with the
    direction the inventory reads at the asked time (`SceneFacts.heading`) in place of the
    LM's words; any other answer, or an object the inventory reads no clear direction of, as
    it is."""
    if intent is None or intent.kind != "heading" or intent.obj.colour is None:
        return answer
    t_s = intent.when.model_time(facts.t_end_s)
    heading = facts.heading(intent.obj.colour, facts.t_end_s if t_s is None else t_s)
    return answer if heading is None else replace(answer, text=with_heading(answer.text,
                                                                            heading))
