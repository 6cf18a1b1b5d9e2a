"""What the evaluation counts: the metrics of one answer and the per-task table of a model.

Metrics, from the answer's boxes and times (for a model with slot heads the heads' numbers at
the precision the text writes them, else `grounding.parse_answer` of the text, the path any
checkpoint's output takes):
- SAcc@0.5: for each `<box>` slot of the reference, the answer's box with the same label
  (a caption may list objects in any order; unlabelled boxes go by position): 3D axis-aligned
  IoU >= 0.5 with the true box at the asked time (a missing box is a miss).
- TAcc: the k-th time written in the answer (outside boxes) against the k-th `<time>` slot:
  within 0.5 s.
- EM: exact match of the categorical answer (count, heading, when_start); which_move as a set
  (the objects named, in any order, each once).
Box and time slots are also counted apart by whether their object moves in the scene
(`sacc_moving`, `sacc_static`, `tacc_moving`, `tacc_static`).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from llava4d_ros.answers.policy import answer_questions
from llava4d_ros.core.notation import ANSWER_TIME, WHOLE_NUMBER
from llava4d_ros.data.vocabulary import COLOURS, SHAPE_SYNONYMS, SHAPES
from llava4d_ros.model.grounding import GroundedBox, parse_answer
from llava4d_ros.model.llava4d import LLaVA4D, ModelAnswer

_LABEL_RE = re.compile(rf"\b({'|'.join(COLOURS)})\s+({'|'.join(SHAPES)})\b")
# a palette object in any words: "red cube", "pink ball", "blue cans"
_ANY_LABEL_RE = re.compile(
    rf"\b({'|'.join(COLOURS)})\s+"
    rf"({'|'.join(w for forms in SHAPE_SYNONYMS.values() for pair in forms for w in pair)})\b")
_ABSTAIN_RE = re.compile(r"\b(do not|don't|cannot|can't) see\b|\bonly see from\b")


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """3D IoU of two axis-aligned `box6 = [cx, cy, cz, sx, sy, sz]`."""
    a_, b_ = np.asarray(a, np.float64), np.asarray(b, np.float64)
    lo = np.maximum(a_[:3] - a_[3:] / 2, b_[:3] - b_[3:] / 2)
    hi = np.minimum(a_[:3] + a_[3:] / 2, b_[:3] + b_[3:] / 2)
    inter = float(np.prod(np.clip(hi - lo, 0.0, None)))
    union = float(np.prod(a_[3:]) + np.prod(b_[3:])) - inter
    return inter / union if union > 0 else 0.0


def categorical(task: str, text: str) -> str | None:
    """The short answer a text gives, in the form of `InstructionSample.categorical`."""
    low = text.lower()
    if task == "count":
        m = WHOLE_NUMBER.search(low)
        return m.group(1) if m else ""
    if task == "which_move":
        if "no object" in low:
            return "none"
        return _as_set(" and ".join(f"{c} {s}" for c, s in _LABEL_RE.findall(low)))
    if task == "heading":
        m = re.search(r"heading toward ([+-][xy])", low)
        return m.group(1) if m else ("none" if "not moving" in low else "")
    if task == "when_start":
        if "did not move" in low:
            return "none"
        m = ANSWER_TIME.search(low)
        return f"{float(m.group(1)):.1f}" if m else ""
    if task in ("absent", "unknown"):
        return "absent" if abstains(text) else ""
    if task == "is_moving":
        m = re.match(r"\s*(yes|no)\b", low)
        return m.group(1) if m else ""
    if task == "out_of_window":
        return "window" if "only see from" in low else ""
    return None


def abstains(text: str) -> bool:
    """Whether an answer declines: "I do not see a mug.", "I only see from 0.0s to 7.9s."."""
    return _ABSTAIN_RE.search(text.lower()) is not None


def repeats_a_sentence(text: str) -> bool:
    sentences = [x.strip() for x in re.split(r"(?<=\.)\s+", text.strip()) if x.strip()]
    return len(set(sentences)) < len(sentences)


def names_palette_object(text: str) -> bool:
    """Whether `text` names a palette object as there: some sentence names one in any words
    ("pink cylinder", "red ball") and does not decline it ("I do not see a red cube." repeats
    the question's object; it invents nothing)."""
    sentences = re.split(r"(?<=\.)\s+", text.strip())
    return any(_ANY_LABEL_RE.search(s.lower()) is not None and not abstains(s)
               for s in sentences)


def _as_set(labels: str) -> str:
    """A "red cube and blue sphere" list in sorted order, without repeats: which objects move
    is a set, so the order an answer names them in does not count."""
    return " and ".join(sorted(set(labels.split(" and ")))) if labels else ""


def _match_boxes(sample: dict[str, Any], answer: ModelAnswer) -> list[GroundedBox | None]:
    """The answer's box for each `<box>` slot: the first unused one with the slot's label (a
    caption may list the objects in any order), else the next unused one by position."""
    labels = [b.label for b in parse_answer(sample["answer"]).boxes]
    n_slots = sum(1 for s in sample["slots"] if s["kind"] == "box")
    labels += [""] * (n_slots - len(labels))
    free = list(range(len(answer.boxes)))
    out: list[GroundedBox | None] = []
    for k in range(n_slots):
        same = [i for i in free if labels[k] and answer.boxes[i].label == labels[k]]
        unnamed = [i for i in free if not labels[k] or not answer.boxes[i].label]
        pick = (same or unnamed or [None])[0]
        if pick is not None:
            free.remove(pick)
        out.append(None if pick is None else answer.boxes[pick])
    return out


def box_outcomes(sample: dict[str, Any], answer: ModelAnswer) -> list[tuple[float, bool]]:
    """(confidence, right) of each box of `answer`: right when SAcc matched it to a `<box>`
    slot of the reference with IoU >= 0.5; a box matched to no slot names nothing the
    reference does, so it is wrong."""
    truth = {id(got): slot["value"]
             for slot, got in zip([s for s in sample["slots"] if s["kind"] == "box"],
                                  _match_boxes(sample, answer)) if got is not None}
    return [(b.confidence, id(b) in truth and box_iou(b.box6, truth[id(b)]) >= 0.5)
            for b in answer.boxes]


def score(sample: dict[str, Any], answer: ModelAnswer,
          moving_ids: frozenset[int] = frozenset()) -> dict[str, int]:
    """Hit counts of one answer against its sample's slots; the `*_moving` / `*_static` counts
    split the box and time slots by whether their object is in `moving_ids` (slots of no
    object, id -1, are in neither)."""
    boxes = [s for s in sample["slots"] if s["kind"] == "box"]
    times = [s for s in sample["slots"] if s["kind"] == "time"]
    matched = _match_boxes(sample, answer)
    box_ok = [got is not None and box_iou(got.box6, slot["value"]) >= 0.5
              for slot, got in zip(boxes, matched)]
    time_ok = [k < len(answer.times) and abs(answer.times[k] - float(slot["value"])) <= 0.5
               for k, slot in enumerate(times)]
    out = {"box_n": len(boxes), "box_hits": sum(box_ok), "time_n": len(times),
           "time_hits": sum(time_ok), "em_n": 0, "em_hits": 0}
    for kind, slots, ok in (("box", boxes, box_ok), ("time", times, time_ok)):
        for state in ("moving", "static"):
            mine = [o for slot, o in zip(slots, ok) if int(slot.get("object_id", -1)) >= 0
                    and (int(slot["object_id"]) in moving_ids) == (state == "moving")]
            out[f"{kind}_n_{state}"], out[f"{kind}_hits_{state}"] = len(mine), sum(mine)
    want = sample.get("categorical")
    if want is not None and sample["task"] != "caption":
        got = categorical(sample["task"], answer.text)
        if sample["task"] == "which_move" and want != "none":
            want = _as_set(want)
        out["em_n"], out["em_hits"] = 1, int(got == want)
    return out


def evaluate_model(model: LLaVA4D, records: list[Any], progress: bool = True,
                   examples: int = 0, outcomes: list[tuple[float, bool]] | None = None,
                   rules: bool = True,
                   per_scene: list[dict[str, dict[str, int]]] | None = None
                   ) -> dict[str, dict[str, float]]:
    """Per-task and overall counts/rates over `records` (cached scenes with samples), each
    question answered as the node answers it (`answers.policy`; `rules=False`: by the network
    alone); `outcomes` collects the (confidence, right) of every box answered
    (`box_outcomes`); `per_scene` each record's counts per task, in order (`intervals.py`)."""
    from tqdm import tqdm

    from llava4d_ros.data.scene import make_scene

    sums: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    shown = 0
    for rec in tqdm(records, desc=model.model_id, disable=not progress):
        scene = make_scene(rec.seed)
        # "now" is the scene's last frame, as the samples count it (the newest token can be
        # a keyframe interval older)
        answers = answer_questions(model, [s["question"] for s in rec.samples], rec.tokens,
                                   rec.t_ref_s, rules=rules,
                                   t_end_s=float(scene.frame_times_s[-1]))
        moving = frozenset(o.object_id for o in scene.objects if o.is_dynamic)
        mine: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for s, a in zip(rec.samples, answers):
            if shown < examples:
                print(f"Q: {s['question']}\n  A: {a.text}\n  ref: {s['answer']}")
                shown += 1
            sc = score(s, a, moving)
            if outcomes is not None:
                outcomes.extend(box_outcomes(s, a))
            for key in (s["task"], "all"):
                sums[key]["n"] += 1
                for k, v in sc.items():
                    sums[key][k] += v
                    mine[key][k] += v
        if per_scene is not None:
            per_scene.append({task: dict(c) for task, c in mine.items()})
    table = {}
    for task, c in sums.items():
        table[task] = {
            "n": c["n"],
            "sacc": c["box_hits"] / c["box_n"] if c["box_n"] else float("nan"),
            "tacc": c["time_hits"] / c["time_n"] if c["time_n"] else float("nan"),
            "em": c["em_hits"] / c["em_n"] if c["em_n"] else float("nan"),
            "box_n": c["box_n"], "time_n": c["time_n"], "em_n": c["em_n"],
            "box_hits": c["box_hits"], "time_hits": c["time_hits"], "em_hits": c["em_hits"],
        }
        for state in ("moving", "static"):
            for kind, metric in (("box", "sacc"), ("time", "tacc")):
                n, hits = c[f"{kind}_n_{state}"], c[f"{kind}_hits_{state}"]
                table[task][f"{metric}_{state}"] = hits / n if n else float("nan")
                table[task][f"{kind}_n_{state}"] = n
    return table


def fmt(v: float) -> str:
    return "  -  " if np.isnan(v) else f"{v:.3f}"


def print_table(table: dict[str, dict[str, float]]) -> None:
    print(f"{'task':<12}{'n':>5}{'boxes':>7}{'SAcc@0.5':>10}{'times':>7}{'TAcc':>8}{'EM':>8}")
    for task in sorted(table, key=lambda t: (t == "all", t)):
        r = table[task]
        print(f"{task:<12}{r['n']:>5}{r['box_n']:>7}{fmt(r['sacc']):>10}{r['time_n']:>7}"
              f"{fmt(r['tacc']):>8}{fmt(r['em']):>8}")
    r = table["all"]
    for state in ("moving", "static"):
        print(f"{state + ' objects':<17}{r[f'box_n_{state}']:>7}{fmt(r[f'sacc_{state}']):>10}"
              f"{r[f'time_n_{state}']:>7}{fmt(r[f'tacc_{state}']):>8}")


def accuracy(c: dict[str, int]) -> float:
    """One accuracy over a question set: hits over boxes, times and short answers together."""
    n = c["box_n"] + c["time_n"] + c["em_n"]
    return (c["box_hits"] + c["time_hits"] + c["em_hits"]) / n if n else float("nan")


def print_ablation(rows: Sequence[tuple[str, str, dict[str, float]]]) -> None:
    """The paper's ablation table: (4D encoding, model, its "all" row) per model."""
    print("\nablation (same training, same data; moving: boxes and times of moving objects)")
    print(f"{'4D encoding':<14}{'SAcc@0.5':>10}{'TAcc':>8}{'EM':>8}{'moving SAcc':>13}"
          f"{'moving TAcc':>13}  model")
    for enc, path, r in rows:
        print(f"{enc:<14}{fmt(r['sacc']):>10}{fmt(r['tacc']):>8}{fmt(r['em']):>8}"
              f"{fmt(r['sacc_moving']):>13}{fmt(r['tacc_moving']):>13}  {path}")
