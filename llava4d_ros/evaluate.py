"""Evaluate a LLaVA-4D model on held-out synthetic 4D instruction data.

    python -m llava4d_ros.evaluate [--model DIR] [--split test] [--ablations DIR ...]

Metrics, all from the answer *text* through `grounding.parse_answer` (the path any checkpoint's
output takes):
- SAcc@0.5: for each `<box>` slot of the reference, the answer's box with the same label
  (a caption may list objects in any order; unlabelled boxes go by position): 3D axis-aligned
  IoU >= 0.5 with the true box at the asked time (a missing box is a miss).
- TAcc: the k-th time written in the answer (outside boxes) against the k-th `<time>` slot:
  within 0.5 s.
- EM: exact match of the categorical answer (count, heading, when_start); which_move as a set
  (the objects named, in any order, each once).
The last line is `sacc=<..> tacc=<..>` of `--model` (default: the shipped default).
"""

from __future__ import annotations

import argparse
import re
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from llava4d_ros.model.grounding import GroundedBox, parse_answer
from llava4d_ros.model.llava4d import LLaVA4D, ModelAnswer

_LABEL_RE = re.compile(r"\b(red|green|blue|yellow|orange|purple|cyan|pink)\s+"
                       r"(cube|sphere|cylinder)\b")


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
    return None


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


def score(sample: dict[str, Any], answer: ModelAnswer) -> dict[str, int]:
    """Hit counts of one answer against its sample's slots."""
    boxes = [s for s in sample["slots"] if s["kind"] == "box"]
    times = [s for s in sample["slots"] if s["kind"] == "time"]
    matched = _match_boxes(sample, answer)
    box_hits = sum(1 for slot, got in zip(boxes, matched)
                   if got is not None and box_iou(got.box6, slot["value"]) >= 0.5)
    time_hits = sum(
        1 for k, slot in enumerate(times)
        if k < len(answer.times) and abs(answer.times[k] - float(slot["value"])) <= 0.5)
    out = {"box_n": len(boxes), "box_hits": box_hits, "time_n": len(times),
           "time_hits": time_hits, "em_n": 0, "em_hits": 0}
    want = sample.get("categorical")
    if want is not None and sample["task"] != "caption":
        got = categorical(sample["task"], answer.text)
        if sample["task"] == "which_move" and want != "none":
            want = _as_set(want)
        out["em_n"], out["em_hits"] = 1, int(got == want)
    return out


def evaluate_model(model: LLaVA4D, records: list[Any], progress: bool = True,
                   examples: int = 0) -> dict[str, dict[str, float]]:
    """Per-task and overall counts/rates over `records` (cached scenes with samples)."""
    from tqdm import tqdm

    sums: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    shown = 0
    for rec in tqdm(records, desc=model.model_id, disable=not progress):
        answers = model.generate_batch([s["question"] for s in rec.samples], rec.tokens,
                                       rec.t_ref_s)
        for s, a in zip(rec.samples, answers):
            if shown < examples:
                print(f"Q: {s['question']}\n  A: {a.text}\n  ref: {s['answer']}")
                shown += 1
            sc = score(s, a)
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
    return table


def _fmt(v: float) -> str:
    return "  -  " if np.isnan(v) else f"{v:.3f}"


def print_table(table: dict[str, dict[str, float]]) -> None:
    print(f"{'task':<12}{'n':>5}{'boxes':>7}{'SAcc@0.5':>10}{'times':>7}{'TAcc':>8}{'EM':>8}")
    for task in sorted(table, key=lambda t: (t == "all", t)):
        r = table[task]
        print(f"{task:<12}{r['n']:>5}{r['box_n']:>7}{_fmt(r['sacc']):>10}{r['time_n']:>7}"
              f"{_fmt(r['tacc']):>8}{_fmt(r['em']):>8}")


def main(argv: list[str] | None = None) -> None:
    from llava4d_ros.train import load_split

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="model directory (default: shipped default)")
    ap.add_argument("--split", default="test", choices=("train", "val", "test"))
    ap.add_argument("--scenes", type=int, default=40, help="scenes of the split to use")
    ap.add_argument("--ablations", nargs="*", default=[],
                    help="model directories trained with --ablation; prints the paper's table")
    ap.add_argument("--cache", default="runs/cache")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--examples", type=int, default=0, help="print this many Q/A pairs")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    model = LLaVA4D.from_pretrained(args.model)
    records = load_split(args.split, args.scenes, args.cache, model.cfg)
    main_table = evaluate_model(model, records, examples=args.examples)
    print(f"model {model.model_id} ({args.model or 'default'}), split {args.split}, "
          f"{len(records)} scenes")
    print_table(main_table)
    if args.ablations:
        rows = [(model.cfg.prompt.encoding, args.model or "default", main_table["all"])]
        for path in args.ablations:
            m = LLaVA4D.from_pretrained(path)
            t = evaluate_model(m, load_split(args.split, args.scenes, args.cache, m.cfg))
            rows.append((m.cfg.prompt.encoding, path, t["all"]))
        print("\nablation (same training, same data)")
        print(f"{'4D encoding':<14}{'SAcc@0.5':>10}{'TAcc':>8}{'EM':>8}  model")
        for enc, path, r in rows:
            print(f"{enc:<14}{_fmt(r['sacc']):>10}{_fmt(r['tacc']):>8}{_fmt(r['em']):>8}  {path}")
    r = main_table["all"]
    print(f"sacc={r['sacc']:.3f} tacc={r['tacc']:.3f}")


if __name__ == "__main__":
    main()
