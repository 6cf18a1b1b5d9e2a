"""The honesty suite (issue 12, `python -m llava4d_ros.evaluate --honesty`): does a model
read questions in other words, decline what is not there, stop repeating itself, count crowded
scenes, and invent nothing in a real room?

The real room is frames 0-299 of a 7-Scenes folder (`--kitchen`, or `$LLAVA4D_KITCHEN`; e.g.
../shared/data/7scenes-redkitchen beside the repository), ingested as the node ingests.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from llava4d_ros.answers.policy import answer_questions
from llava4d_ros.model.llava4d import MAX_NEW_TOKENS, LLaVA4D
from llava4d_ros.training.metrics import (
    abstains,
    accuracy,
    fmt,
    names_palette_object,
    repeats_a_sentence,
    score,
)

#: Questions a user of a real room asks (issue 12); none has a palette object for an answer.
KITCHEN_QUESTIONS = (
    "What objects are in the scene?", "Describe the scene.", "Is anything moving?",
    "Is anything moving right now?", "Which objects move?", "What is moving?",
    "Where is the kettle?", "Where is the mug?", "How many objects are there?",
    "Where is the red cube now?",
)


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
            progress: bool = True, rules: bool = True) -> dict[str, Any]:
    """The issue-12 figures of a model (`print_honesty` prints them), its questions answered
    as the node answers them or, with `rules` False, by the network alone:

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

    def ask(questions: list[str], tokens: Any, t_ref_s: float, scene: Any = None,
            t_end_s: float | None = None) -> list[Any]:
        answers = answer_questions(model, questions, tokens, t_ref_s, max_new_tokens,
                                   rules=rules, scene=scene, t_end_s=t_end_s)
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
                                         rec.t_ref_s, t_end_s=float(scene.frame_times_s[-1]))):
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
        print(f"{p:<10}{c['n']:>6}{fmt(sacc):>10}{fmt(tacc):>8}{fmt(em):>8}"
              f"{fmt(accuracy(c)):>8}")
    ratio = accuracy(r["phrasing"]["heldout"]) / accuracy(r["phrasing"]["template"])
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


def crowded_scenes(model: LLaVA4D, split: str, n: int) -> list[Any]:
    """`n` scenes of `split` with 7-8 objects (more than the default generator makes), built
    fresh (not cached) with the model's encoder and ingest settings."""
    from llava4d_ros.data.instructions import seeds_for_split
    from llava4d_ros.training.dataset import build_scene
    from llava4d_ros.training.scene_cache import ingest_config

    return [build_scene(seed, model.patch_encoder, ingest_config(model.cfg),
                        {"n_objects": 7 + seed % 2})
            for seed in seeds_for_split(split, n)]


def has_kitchen(root: str | None) -> bool:
    """Whether `root` is a 7-Scenes folder (empty: none asked for)."""
    return bool(root) and Path(root, "associations.txt").exists()


def run_honesty(model: LLaVA4D, records: list[Any], split: str, crowded: int,
                kitchen: str | None, name: str, rules: bool = True) -> None:
    """Builds the crowded scenes and the kitchen window, runs `honesty` and prints it."""
    crowd = crowded_scenes(model, split, crowded)
    window = kitchen_window(model, kitchen) if has_kitchen(kitchen) else None
    report = honesty(model, records, crowd, window, rules=rules)
    print(f"honesty: model {model.model_id} ({name}), split {split}, "
          f"{len(records)} scenes + {len(crowd)} with 7-8 objects"
          + (f", kitchen {kitchen} frames 0-299" if window else ", no kitchen")
          + f", policy {'rules' if rules else 'none'}")
    print_honesty(report)
    print()
