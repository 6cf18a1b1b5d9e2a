"""Fitting the object envelope: the range of token mass and 3D spread one object of the
training scenes spans (`InventoryConfig.object_envelope`, read by model/inventory.py).

A colour's tokens in a window are pooled into one object. In the training scenes each palette
colour is one primitive of 0.24-0.66 m, so its tokens' mass and spread stay in a narrow range;
a real room's red cabinets give far more tokens spread over metres. The envelope is the
smallest range that holds every training object's (log mass, spread), widened on both sides
by `margin` of its width, so that objects of unseen scenes near the edges are still kept.

    python -m llava4d_ros.training.envelope --model default --scenes 100 --write

fits it on the first 100 training scenes and stores it in the model directory's config.json
(the weights are untouched). Stage 5 of `llava4d_ros.train` fits it after the inventory.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch


def object_envelope(model: Any, records: Sequence[Any], margin: float = 0.1
                    ) -> tuple[tuple[float, float], ...] | None:
    """(low, high) per `inventory.ENVELOPE_FEATURES` over the objects of `records` (cached
    training windows): every colour the scene holds and the token classifier finds; None
    when it finds none (then no colour is rejected)."""
    from llava4d_ros.model.inventory import envelope_features
    from llava4d_ros.train import inventory_truth

    rows = []
    with torch.no_grad():
        for rec in records:
            features, xyz, _, _ = model.inventory_inputs(rec.tokens, rec.t_ref_s)
            _, w = model.inventory.colour_weights(features)
            present = inventory_truth(rec, model)["present"].bool() & (w.sum(1) > 0)
            rows.append(envelope_features(w, xyz)[present])
    f = torch.cat(rows)
    if len(f) < 2:
        return None
    lo, hi = f.amin(0), f.amax(0)
    pad = margin * (hi - lo)
    return tuple((round(float(a), 4), round(float(b), 4)) for a, b in zip(lo - pad, hi + pad))


def set_object_envelope(model: Any, envelope: Sequence[tuple[float, float]] | None) -> None:
    """The model reads `envelope` from now on (and saves it with its config)."""
    model.cfg = replace(model.cfg, inventory=replace(
        model.cfg.inventory, object_envelope=None if envelope is None else tuple(envelope)))


def write_object_envelope(path: str, envelope: Sequence[tuple[float, float]]) -> None:
    """Store `envelope` in `path`/config.json, every other field as it was."""
    from llava4d_ros.model.config import LLaVA4DConfig

    cfg_path = Path(path) / "config.json"
    d = json.loads(cfg_path.read_text(encoding="utf-8"))
    if d.get("inventory") is None:
        raise ValueError(f"{path} has no scene inventory to bound")
    d["inventory"]["object_envelope"] = [list(e) for e in envelope]
    LLaVA4DConfig.from_dict(d)  # refuse to write a config the loader would refuse
    cfg_path.write_text(json.dumps(d, indent=1, sort_keys=True), encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    from llava4d_ros.model.inventory import ENVELOPE_FEATURES
    from llava4d_ros.model.llava4d import LLaVA4D
    from llava4d_ros.model.shipped import model_dir
    from llava4d_ros.train import load_split

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="model directory or shipped name")
    ap.add_argument("--scenes", type=int, default=100, help="training scenes to fit on")
    ap.add_argument("--margin", type=float, default=0.1)
    ap.add_argument("--cache", default="runs/cache")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--write", action="store_true", help="store it in the model's config.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = LLaVA4D.from_pretrained(args.model)
    if model.cfg.inventory is None:
        ap.error("this model has no scene inventory")
    records = load_split("train", args.scenes, args.cache, model.cfg)
    env = object_envelope(model, records, args.margin)
    if env is None:
        raise SystemExit("the token classifier finds no object of these scenes: no envelope")
    print(json.dumps({"object_envelope": dict(zip(ENVELOPE_FEATURES, env)),
                      "scenes": len(records), "margin": args.margin}))
    if args.write:
        write_object_envelope(model_dir(args.model), env)
        print(f"written to {Path(model_dir(args.model)) / 'config.json'}")


if __name__ == "__main__":
    main()
