"""Ghost tokens (`python -m llava4d_ros.evaluate --ghosts`): visual tokens labelled with a
moving object that lie away from it at their own stamp.

A token's label is the majority instance id of its patches (the renderer's truth). A token of
an object that moves is a ghost when its position is farther than half the object's width plus
`MARGIN_M` from the object's centre at the token's stamp (horizontally): appearance of a place
the object had left, stamped with a time it was no longer there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

MARGIN_M = 0.15


def ghosts_of(rec: Any, scene: Any) -> tuple[int, int]:
    """(ghost tokens, tokens labelled with a moving object) of one cached scene record
    (`training.dataset.SceneRecord`: tokens with labels; cached scenes are stamped in scene
    time, `t_ref_s` its start) and its `SceneSpec`."""
    tokens = rec.tokens
    labels = np.asarray(tokens.labels)
    epoch = float(rec.t_ref_s)
    ghosts = total = 0
    for obj in scene.objects:
        if not obj.is_dynamic:
            continue
        mine = np.flatnonzero(labels == obj.object_id)
        if mine.size == 0:
            continue
        t_scene = np.asarray(tokens.t_s)[mine] - epoch
        centres = obj.centers_at(t_scene)  # (n, 3)
        d = np.linalg.norm((np.asarray(tokens.xyz_world)[mine] - centres)[:, :2], axis=1)
        ghosts += int((d > obj.size_xyz[0] / 2 + MARGIN_M).sum())
        total += int(mine.size)
    return ghosts, total


def ghost_fraction(records: Sequence[Any]) -> dict[str, float]:
    """Ghosts over tokens labelled with a moving object, summed over `records`."""
    from llava4d_ros.data.scene import make_scene

    g = n = 0
    for rec in records:
        a, b = ghosts_of(rec, make_scene(rec.seed))
        g += a
        n += b
    return {"ghosts": g, "moving_tokens": n, "ghost_fraction": g / n if n else float("nan")}
