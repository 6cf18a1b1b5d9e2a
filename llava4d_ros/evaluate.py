"""Evaluate a LLaVA-4D model on held-out synthetic 4D instruction data, or the object map.

    python -m llava4d_ros.evaluate [--model DIR] [--split test] [--ablations DIR ...]
    python -m llava4d_ros.evaluate --policy none      # the network alone, no rule decides
    python -m llava4d_ros.evaluate --ghosts           # also: tokens stamped where nothing was
    python -m llava4d_ros.evaluate --objects --split val   # the object map (training/objects_eval)
    python -m llava4d_ros.evaluate --calibrate --split val [--write]   # fit box confidence
    python -m llava4d_ros.evaluate --reliability                      # check it

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
- Reliability of box confidence: each box of an answer is right when it is the box of a
  reference `<box>` slot (the SAcc matching) with IoU >= 0.5; per confidence bin, how many,
  the mean confidence and the fraction right, and the expected calibration error (ECE).
  `--calibrate` fits `LLaVA4DConfig.confidence_table` to the raw scores (isotonic regression).
The last line is `sacc=<..> tacc=<..>` of `--model` (default: the shipped default).
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llava4d_ros.answers.policy import answer_questions
from llava4d_ros.data.vocabulary import COLOURS, SHAPE_SYNONYMS, SHAPES
from llava4d_ros.model.grounding import GroundedBox, calibrated, parse_answer
from llava4d_ros.model.llava4d import MAX_NEW_TOKENS, LLaVA4D, ModelAnswer
from llava4d_ros.model.shipped import model_dir

_LABEL_RE = re.compile(rf"\b({'|'.join(COLOURS)})\s+({'|'.join(SHAPES)})\b")
# a palette object in any words: "red cube", "pink ball", "blue cans"
_ANY_LABEL_RE = re.compile(
    rf"\b({'|'.join(COLOURS)})\s+"
    rf"({'|'.join(w for forms in SHAPE_SYNONYMS.values() for pair in forms for w in pair)})\b")
_ABSTAIN_RE = re.compile(r"\b(do not|don't|cannot|can't) see\b|\bonly see from\b")
#: Questions a user of a real room asks (issue 12); none has a palette object for an answer.
KITCHEN_QUESTIONS = (
    "What objects are in the scene?", "Describe the scene.", "Is anything moving?",
    "Is anything moving right now?", "Which objects move?", "What is moving?",
    "Where is the kettle?", "Where is the mug?", "How many objects are there?",
    "Where is the red cube now?",
)


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
        m = re.search(r"\b(\d+)\b", low)
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
        m = re.search(r"(-?\d+(?:\.\d+)?)\s*s\b", low)
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
                   rules: bool = True) -> dict[str, dict[str, float]]:
    """Per-task and overall counts/rates over `records` (cached scenes with samples), each
    question answered as the node answers it (`answers.policy`; `rules=False`: by the network
    alone); `outcomes` collects the (confidence, right) of every box answered
    (`box_outcomes`)."""
    from tqdm import tqdm

    from llava4d_ros.data.scene import make_scene

    sums: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    shown = 0
    for rec in tqdm(records, desc=model.model_id, disable=not progress):
        answers = answer_questions(model, [s["question"] for s in rec.samples], rec.tokens,
                                   rec.t_ref_s, rules=rules)
        moving = frozenset(o.object_id for o in make_scene(rec.seed).objects if o.is_dynamic)
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


def _fmt(v: float) -> str:
    return "  -  " if np.isnan(v) else f"{v:.3f}"


def print_table(table: dict[str, dict[str, float]]) -> None:
    print(f"{'task':<12}{'n':>5}{'boxes':>7}{'SAcc@0.5':>10}{'times':>7}{'TAcc':>8}{'EM':>8}")
    for task in sorted(table, key=lambda t: (t == "all", t)):
        r = table[task]
        print(f"{task:<12}{r['n']:>5}{r['box_n']:>7}{_fmt(r['sacc']):>10}{r['time_n']:>7}"
              f"{_fmt(r['tacc']):>8}{_fmt(r['em']):>8}")
    r = table["all"]
    for state in ("moving", "static"):
        print(f"{state + ' objects':<17}{r[f'box_n_{state}']:>7}{_fmt(r[f'sacc_{state}']):>10}"
              f"{r[f'time_n_{state}']:>7}{_fmt(r[f'tacc_{state}']):>8}")


def fit_isotonic(raw: Sequence[float], right: Sequence[bool]) -> tuple[tuple[float, float], ...]:
    """The (raw, probability) knots of the non-decreasing fit of P(right | raw) by least
    squares (isotonic regression, pool-adjacent-violators): one knot per pooled block, at its
    mean raw score, valued at its fraction right. `grounding.calibrated` interpolates between
    the knots, so the map is monotone and piecewise linear. Equal raw scores pool first, so
    the knots' raw scores increase strictly."""
    x = np.asarray(raw, np.float64)
    y = np.asarray(right, np.float64)
    if x.size == 0:
        raise ValueError("no boxes to fit a confidence table to")
    _, inv = np.unique(x, return_inverse=True)
    blocks: list[list[float]] = []  # [sum raw, sum right, count]: fractions non-decreasing
    for bx, by, bn in zip(np.bincount(inv, x), np.bincount(inv, y), np.bincount(inv)):
        blocks.append([bx, by, bn])
        while len(blocks) > 1 and blocks[-2][1] / blocks[-2][2] >= blocks[-1][1] / blocks[-1][2]:
            last = blocks.pop()
            blocks[-1] = [a + b for a, b in zip(blocks[-1], last)]
    return tuple((float(sx / c), float(sy / c)) for sx, sy, c in blocks)


def reliability(confidence: Sequence[float], right: Sequence[bool], bins: int = 5
                ) -> tuple[list[dict[str, float]], float]:
    """Rows per confidence bin (equal widths over [0, 1], the last one closed): lo, hi, n,
    mean confidence, fraction right; and the expected calibration error, the n-weighted mean
    of |mean confidence - fraction right| over the bins."""
    c = np.asarray(confidence, np.float64)
    y = np.asarray(right, np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, c, side="right") - 1, 0, bins - 1)
    rows, ece = [], 0.0
    for b in range(bins):
        sel = which == b
        n = int(sel.sum())
        mean_c = float(c[sel].mean()) if n else float("nan")
        frac = float(y[sel].mean()) if n else float("nan")
        rows.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "n": n,
                     "confidence": mean_c, "right": frac})
        if n:
            ece += n / len(c) * abs(mean_c - frac)
    return rows, ece


def print_reliability(title: str, confidence: Sequence[float], right: Sequence[bool]) -> None:
    rows, ece = reliability(confidence, right)
    n, hits = len(right), int(sum(right))
    print(f"{title}: {n} boxes, {hits} right")
    print(f"{'confidence':<12}{'n':>6}{'mean conf':>11}{'right':>8}")
    for r in rows:
        print(f"{r['lo']:.1f}-{r['hi']:.1f}{'':<5}{r['n']:>6}{_fmt(r['confidence']):>11}"
              f"{_fmt(r['right']):>8}")
    print(f"ECE {ece:.3f}")


def raw_outcomes(model: LLaVA4D, records: list[Any], examples: int = 0, rules: bool = True
                 ) -> tuple[dict[str, dict[str, float]], list[tuple[float, bool]]]:
    """The evaluation table and each box's (raw score, right): the model runs without its
    confidence table (then a box's confidence is its raw score) and gets the table back after.
    The model's confidence is `calibrated(raw, table)`, so this one pass gives both."""
    table = model.cfg.confidence_table
    model.cfg = replace(model.cfg, confidence_table=None)
    outcomes: list[tuple[float, bool]] = []
    try:
        result = evaluate_model(model, records, examples=examples, outcomes=outcomes,
                                rules=rules)
    finally:
        model.cfg = replace(model.cfg, confidence_table=table)
    return result, outcomes


def write_confidence_table(path: str, table: Sequence[tuple[float, float]]) -> None:
    """Store `table` as `confidence_table` in `path`/config.json, every other field as it
    was (the weights are untouched)."""
    from llava4d_ros.model.config import LLaVA4DConfig

    cfg_path = Path(path) / "config.json"
    d = json.loads(cfg_path.read_text(encoding="utf-8"))
    d["confidence_table"] = [[round(r, 6), round(p, 6)] for r, p in table]
    LLaVA4DConfig.from_dict(d)  # refuse to write a config the loader would refuse
    cfg_path.write_text(json.dumps(d, indent=1, sort_keys=True), encoding="utf-8")


def _acc(c: dict[str, int]) -> float:
    """One accuracy over a question set: hits over boxes, times and short answers together."""
    n = c["box_n"] + c["time_n"] + c["em_n"]
    return (c["box_hits"] + c["time_hits"] + c["em_hits"]) / n if n else float("nan")


def kitchen_window(model: LLaVA4D, root: str, frames: int = 300) -> tuple[Any, float, Any]:
    """The first `frames` frames of a 7-Scenes folder through the node's path (`Engine`, with
    the folder's gravity for the object map): (visual tokens, window start stamp, the object
    map's `MapScene` at the end)."""
    from llava4d_ros.answers.map_answers import MapScene
    from llava4d_ros.config import NodeConfig
    from llava4d_ros.data.rgbd_folder import RGBDFolder
    from llava4d_ros.engine import Engine

    folder = RGBDFolder(root, stop=frames)
    cam = folder.camera_info.pinhole()
    gravity = tuple(np.loadtxt(Path(root) / "gravity-direction.txt"))
    engine = Engine(NodeConfig(gravity=gravity), model)
    for frame in folder:
        engine.ingest_frame(round(frame.stamp_s * 1e9), frame.rgb, frame.depth_m, cam,
                            frame.world_from_cam)
    tokens = engine.ingestor.tokens()
    t_ref, t_end = float(np.min(tokens.t_s)), float(np.max(tokens.t_s))
    return tokens, t_ref, MapScene(engine.objects(), t_end, t_ref, engine.camera_at)


def honesty(model: LLaVA4D, records: list[Any], crowded: list[Any] = (),
            kitchen: tuple[Any, float, Any] | None = None, max_new_tokens: int = MAX_NEW_TOKENS,
            progress: bool = True) -> dict[str, Any]:
    """The issue-12 figures of a model (`print_honesty` prints them):

    - `phrasing[p]`: the template tasks' counts with questions in phrasing p ("template", the
      training families, the held-out families), the same scenes and answers;
    - `honest[task][p]`: n / hits of the honest questions (absent and unknown objects: the
      answer declines; is_moving: yes/no right; out_of_window: names the window);
    - `false_abstention`: answerable questions (template tasks, all phrasings) answered with a
      refusal; `repetition`: answers that repeat a sentence or run to `max_new_tokens`;
    - `crowded`: count questions in scenes with more objects than the default generator makes;
    - `kitchen`: (question, answer) on a real room (`kitchen_window`: its tokens and object
      map); an answer naming a palette object invents.
    """
    from tqdm import tqdm

    from llava4d_ros.data.instructions import PHRASINGS, TASKS, samples_for_scene
    from llava4d_ros.data.scene import make_scene

    phrasing = {p: defaultdict(int) for p in PHRASINGS}
    honest: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    false_abst, rep = [0, 0], {"n": 0, "repeat": 0, "max_tokens": 0}

    def ask(questions: list[str], tokens: Any, t_ref_s: float, scene: Any = None) -> list[Any]:
        answers = answer_questions(model, questions, tokens, t_ref_s, max_new_tokens,
                                   scene=scene)
        for a in answers:
            rep["n"] += 1
            rep["repeat"] += repeats_a_sentence(a.text)
            rep["max_tokens"] += a.num_tokens >= max_new_tokens
        return answers

    for rec in tqdm(records, desc="honesty", disable=not progress):
        scene = make_scene(rec.seed)
        for p in PHRASINGS:
            samples = [s.to_dict() for s in samples_for_scene(scene, phrasing=p, honest=True)]
            for s, a in zip(samples, ask([s["question"] for s in samples], rec.tokens,
                                         rec.t_ref_s)):
                sc = score(s, a)
                if s["task"] in TASKS:
                    phrasing[p]["n"] += 1
                    for k, v in sc.items():
                        phrasing[p][k] += v
                    false_abst[0] += 1
                    false_abst[1] += abstains(a.text)
                else:
                    honest[s["task"]][p][0] += 1
                    honest[s["task"]][p][1] += sc["em_hits"]
    counts = [0, 0]
    for rec in crowded:
        samples = [s for s in rec.samples if s["task"] == "count"
                   and s["categorical"] in ("7", "8")]
        for s, a in zip(samples, ask([s["question"] for s in samples], rec.tokens, rec.t_ref_s)):
            counts[0] += 1
            counts[1] += score(s, a)["em_hits"]
    kitchen_qa = []
    if kitchen is not None:
        answers = ask(list(KITCHEN_QUESTIONS), *kitchen)
        kitchen_qa = [(q, a.text) for q, a in zip(KITCHEN_QUESTIONS, answers)]
    return {"phrasing": phrasing, "honest": honest, "false_abstention": false_abst,
            "repetition": rep, "crowded": counts, "kitchen": kitchen_qa}


def print_honesty(r: dict[str, Any]) -> None:
    def rate(n: int, hits: int) -> str:
        return f"{hits / n:.3f} ({hits}/{n})" if n else "  -  "

    print("template tasks by question phrasing (same scenes, same answers)")
    print(f"{'phrasing':<10}{'n':>6}{'SAcc@0.5':>10}{'TAcc':>8}{'EM':>8}{'acc':>8}")
    for p, c in r["phrasing"].items():
        sacc = c["box_hits"] / c["box_n"] if c["box_n"] else float("nan")
        tacc = c["time_hits"] / c["time_n"] if c["time_n"] else float("nan")
        em = c["em_hits"] / c["em_n"] if c["em_n"] else float("nan")
        print(f"{p:<10}{c['n']:>6}{_fmt(sacc):>10}{_fmt(tacc):>8}{_fmt(em):>8}"
              f"{_fmt(_acc(c)):>8}")
    ratio = _acc(r["phrasing"]["heldout"]) / _acc(r["phrasing"]["template"])
    print(f"held-out / template accuracy: {ratio:.3f} (target >= 0.9)")
    print("honest questions (hits: declines for absent/unknown, right yes/no, names the window)")
    for task, by in r["honest"].items():
        print(f"  {task:<14}" + "  ".join(f"{p} {rate(*by[p])}" for p in by))
    declines = [by for t in ("absent", "unknown") for by in r["honest"][t].values()]
    n_abs, h_abs = sum(d[0] for d in declines), sum(d[1] for d in declines)
    print(f"abstention on unknown and absent objects: {rate(n_abs, h_abs)} (target >= 0.95)")
    fa = r["false_abstention"]
    print(f"false abstention on answerable questions: {rate(*fa)} (target <= 0.05)")
    rep = r["repetition"]
    print(f"repetition: {rate(rep['n'], rep['repeat'])} repeat a sentence, "
          f"{rate(rep['n'], rep['max_tokens'])} run to max_new_tokens")
    if r["crowded"][0]:
        print(f"count in scenes with 7-8 objects: {rate(*r['crowded'])}")
    if r["kitchen"]:
        invented = sum(names_palette_object(a) for _, a in r["kitchen"])
        print(f"real kitchen: {invented} of {len(r['kitchen'])} answers name a palette object "
              f"as there (invented; target 0)")
        for q, a in r["kitchen"]:
            print(f"  Q: {q}\n  A: {a}")


def main(argv: list[str] | None = None) -> None:
    from llava4d_ros.training.scene_cache import load_split

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="model directory (default: shipped default)")
    ap.add_argument("--split", default="test", choices=("train", "val", "test"))
    ap.add_argument("--scenes", type=int, default=40, help="scenes of the split to use")
    ap.add_argument("--ablations", nargs="*", default=[],
                    help="model directories trained with --ablation; prints the paper's table")
    ap.add_argument("--cache", default="runs/cache")
    ap.add_argument("--cache-workers", type=int, default=1,
                    help="processes that build missing cached scenes (a scene is ~2.5 s of "
                         "one core)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--examples", type=int, default=0, help="print this many Q/A pairs")
    ap.add_argument("--honesty", action="store_true",
                    help="also: held-out phrasings, abstention, repetition, the real kitchen")
    ap.add_argument("--honesty-scenes", type=int, default=0,
                    help="--honesty: only the first N scenes of --scenes (0: all); a model "
                         "on a 135M LM answers ~80 questions a scene there")
    ap.add_argument("--crowded", type=int, default=10,
                    help="--honesty: scenes with 7-8 objects for counting")
    ap.add_argument("--kitchen", default=str(Path(__file__).resolve().parents[2] / "shared" /
                                             "data" / "7scenes-redkitchen"),
                    help="--honesty: a 7-Scenes folder (frames 0-299); '' to skip")
    ap.add_argument("--policy", default="rules", choices=("rules", "none"),
                    help="rules: answered as the node answers (map, rules, network); none: "
                         "every question by the network alone, as written")
    ap.add_argument("--objects", action="store_true",
                    help="the object map instead: --object-scenes synthetic scenes of --split "
                         "and the kitchen (--kitchen, frames 0-299) against its hand labels")
    ap.add_argument("--object-scenes", type=int, default=20)
    ap.add_argument("--kitchen-labels", default=str(Path(__file__).resolve().parents[1] /
                                                    "test" / "data" / "kitchen_objects.yaml"))
    ap.add_argument("--ghosts", action="store_true",
                    help="also: the share of tokens of moving objects that lie away from the "
                         "object at their own stamp (training/ghosts.py), on --split")
    ap.add_argument("--reliability", action="store_true",
                    help="also: the reliability table of box confidence, raw and calibrated")
    ap.add_argument("--calibrate", action="store_true",
                    help="fit the box confidence table on this split (use val) and print it")
    ap.add_argument("--write", action="store_true",
                    help="--calibrate: store the table in the model directory's config.json")
    args = ap.parse_args(argv)
    if args.write and not args.calibrate:
        ap.error("--write stores what --calibrate fits")
    torch.set_num_threads(args.threads)
    if args.objects:
        run_objects(args)
        return

    model = LLaVA4D.from_pretrained(args.model)
    records = load_split(args.split, args.scenes, args.cache, model.cfg,
                         workers=args.cache_workers)
    if args.ghosts:
        from llava4d_ros.training.ghosts import ghost_fraction

        g = ghost_fraction(records)
        print(f"ghosts: {g['ghosts']} of {g['moving_tokens']} tokens of moving objects, "
              f"{len(records)} scenes of {args.split}, look_change {model.cfg.look_change:g}")
        print(f"ghost_fraction={g['ghost_fraction']:.3f}")
    if args.honesty:
        run_honesty(model, records, args)
    outcomes: list[tuple[float, bool]] = []
    rules = args.policy == "rules"
    if args.reliability or args.calibrate:
        main_table, outcomes = raw_outcomes(model, records, examples=args.examples, rules=rules)
    else:
        main_table = evaluate_model(model, records, examples=args.examples, rules=rules)
    print(f"model {model.model_id} ({args.model or 'default'}), split {args.split}, "
          f"{len(records)} scenes, policy {args.policy}")
    print_table(main_table)
    if outcomes:
        report_confidence(model, outcomes, args)
    if args.ablations:
        rows = [(model.cfg.prompt.encoding, args.model or "default", main_table["all"])]
        for path in args.ablations:
            m = LLaVA4D.from_pretrained(path)
            t = evaluate_model(m, load_split(args.split, args.scenes, args.cache, m.cfg,
                                             workers=args.cache_workers), rules=rules)
            rows.append((m.cfg.prompt.encoding, path, t["all"]))
        print("\nablation (same training, same data)")
        print(f"{'4D encoding':<14}{'SAcc@0.5':>10}{'TAcc':>8}{'EM':>8}  model")
        for enc, path, r in rows:
            print(f"{enc:<14}{_fmt(r['sacc']):>10}{_fmt(r['tacc']):>8}{_fmt(r['em']):>8}  {path}")
    r = main_table["all"]
    print(f"sacc={r['sacc']:.3f} tacc={r['tacc']:.3f}")


def report_confidence(model: LLaVA4D, outcomes: list[tuple[float, bool]],
                      args: argparse.Namespace) -> None:
    """The reliability of box confidence on the split evaluated: raw, and through the model's
    table (or, with --calibrate, the table fitted here; --write stores it)."""
    raw = [c for c, _ in outcomes]
    right = [r for _, r in outcomes]
    print()
    print_reliability(f"raw box score, split {args.split}", raw, right)
    table = model.cfg.confidence_table
    if args.calibrate:
        table = fit_isotonic(raw, right)
        print(f"\nconfidence_table fitted on split {args.split} ({len(table)} knots, raw -> "
              f"P(right)):")
        print(json.dumps([[round(r, 4), round(p, 4)] for r, p in table]))
        if args.write:
            write_confidence_table(model_dir(args.model), table)
            print(f"written to {Path(model_dir(args.model)) / 'config.json'}")
    if table:
        print()
        print_reliability(f"calibrated box confidence, split {args.split}",
                          [calibrated(c, table) for c in raw], right)


def run_honesty(model: LLaVA4D, records: list[Any], args: argparse.Namespace) -> None:
    from llava4d_ros.data.instructions import seeds_for_split
    from llava4d_ros.training.dataset import build_scene
    from llava4d_ros.training.scene_cache import ingest_config

    crowded = [build_scene(seed, model.patch_encoder, ingest_config(model.cfg),
                           {"n_objects": 7 + seed % 2})
               for seed in seeds_for_split(args.split, args.crowded)]
    kitchen = None
    if args.kitchen and Path(args.kitchen, "associations.txt").exists():
        kitchen = kitchen_window(model, args.kitchen)
    records = records[:args.honesty_scenes or None]
    report = honesty(model, records, crowded, kitchen)
    print(f"honesty: model {model.model_id} ({args.model or 'default'}), split {args.split}, "
          f"{len(records)} scenes + {len(crowded)} with 7-8 objects"
          + (f", kitchen {args.kitchen} frames 0-299" if kitchen else ", no kitchen"))
    print_honesty(report)
    print()


def run_objects(args: argparse.Namespace) -> None:
    from llava4d_ros.data.instructions import seeds_for_split
    from llava4d_ros.training import objects_eval

    seeds = seeds_for_split(args.split, args.object_scenes)
    objects_eval.print_synthetic(objects_eval.synthetic(seeds))
    if args.kitchen and Path(args.kitchen, "associations.txt").exists():
        objects_eval.print_kitchen(objects_eval.kitchen(args.kitchen, args.kitchen_labels))
    else:
        print(f"kitchen: no 7-Scenes folder at {args.kitchen!r}")


if __name__ == "__main__":
    main()
