"""Fitting the object envelope: the range of token mass, 3D spread and appearance that one
object of the training scenes spans (`InventoryConfig.object_envelope`, read by
model/inventory.py), and the colours' appearance it measures distances to.

A colour's tokens in a window are pooled into one object. In the training scenes each palette
colour is one uniformly coloured primitive of 0.24-0.66 m, so its tokens' mass, spread and
look stay in a narrow range; a real room's red cabinets give more tokens, spread over metres,
that look like no rendered red. The appearance is each colour's mean and inverse covariance of
the patch features of its tokens on training objects. The envelope is the smallest range that
holds every training object's features, widened on both sides by `margin` of its width, so
that objects of unseen scenes near the edges are still kept.

    python -m llava4d_ros.training.envelope --model default --scenes 100 --write

fits both on the first 100 training scenes and stores them in the model directory (the
appearance with the weights, the envelope in config.json; every other weight is unchanged).
Stage 5 of training (training/trainer.py) fits them after the inventory.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch


def _colour_tokens(model: Any, rec: Any) -> tuple[torch.Tensor, ...]:
    """One cached window: patch features `(N, D)`, xyz `(N, 3)`, the colours' token weights
    `(C, N)`, each token's true colour index `(N,)` (C: none) and the colours present `(C,)`."""
    from llava4d_ros.training.losses import inventory_truth

    features, xyz, *_ = model.inventory_inputs(rec.tokens, rec.t_ref_s)
    _, w = model.inventory.colour_weights(features)
    truth = inventory_truth(rec, model)
    return features, xyz, w, truth["token_colour"], truth["present"].bool() & (w.sum(1) > 0)


@torch.no_grad()
def fit_appearance(model: Any, records: Sequence[Any], ridge: float = 1e-4) -> None:
    """Each colour's mean and inverse covariance (plus `ridge` on the diagonal) of the patch
    features of its tokens on the objects of `records`, into the model's inventory."""
    windows = [_colour_tokens(model, rec) for rec in records]
    n_c = model.inventory.n_colours
    dim = windows[0][0].shape[1]
    mean = torch.zeros(n_c, dim)
    precision = torch.zeros(n_c, dim, dim)  # distance 0: a colour never seen is not judged
    for c in range(n_c):
        x = torch.cat([f[(w[c] > 0) & (tc == c)] for f, _, w, tc, _ in windows]).double()
        if len(x) <= dim:
            continue  # too few tokens for a covariance
        cov = torch.cov(x.T) + ridge * torch.eye(dim, dtype=x.dtype)
        mean[c], precision[c] = x.mean(0).float(), torch.linalg.inv(cov).float()
    model.inventory.set_appearance(mean.to(model.device), precision.to(model.device))


@torch.no_grad()
def object_envelope(model: Any, records: Sequence[Any], margin: float = 0.5
                    ) -> tuple[tuple[float, float], ...] | None:
    """(low, high) per `inventory.ENVELOPE_FEATURES` over the objects of `records` (cached
    training windows): every colour the scene holds and the token classifier finds; None
    when it finds fewer than two (then no colour is rejected). Needs `fit_appearance`."""
    rows = []
    for rec in records:
        features, xyz, w, _, present = _colour_tokens(model, rec)
        rows.append(model.inventory.envelope_features(features, xyz, w)[present])
    f = torch.cat(rows)
    if len(f) < 2:
        return None
    lo, hi = f.amin(0), f.amax(0)
    pad = margin * (hi - lo)
    return tuple((round(float(a), 4), round(float(b), 4)) for a, b in zip(lo - pad, hi + pad))


def fit_object_envelope(model: Any, records: Sequence[Any], margin: float = 0.5
                        ) -> tuple[tuple[float, float], ...] | None:
    """`fit_appearance`, then `object_envelope` into the model's config (None: too few
    objects found, the model keeps no envelope)."""
    fit_appearance(model, records)
    env = object_envelope(model, records, margin)
    model.cfg = replace(model.cfg, inventory=replace(model.cfg.inventory, object_envelope=env))
    return env


def main(argv: list[str] | None = None) -> None:
    from llava4d_ros.model.inventory import ENVELOPE_FEATURES
    from llava4d_ros.model.llava4d import LLaVA4D
    from llava4d_ros.model.shipped import model_dir
    from llava4d_ros.training.scene_cache import load_split

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="model directory or shipped name")
    ap.add_argument("--scenes", type=int, default=100, help="training scenes to fit on")
    ap.add_argument("--margin", type=float, default=0.5)
    ap.add_argument("--cache", default="runs/cache")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--write", action="store_true", help="store it in the model's config.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = LLaVA4D.from_pretrained(args.model)
    if model.cfg.inventory is None:
        ap.error("this model has no scene inventory")
    records = load_split("train", args.scenes, args.cache, model.cfg)
    env = fit_object_envelope(model, records, args.margin)
    if env is None:
        raise SystemExit("the token classifier finds no object of these scenes: no envelope")
    print(json.dumps({"object_envelope": dict(zip(ENVELOPE_FEATURES, env)),
                      "scenes": len(records), "margin": args.margin}))
    if args.write:
        model.save_pretrained(model_dir(args.model))
        print(f"written to {model_dir(args.model)}")


if __name__ == "__main__":
    main()
