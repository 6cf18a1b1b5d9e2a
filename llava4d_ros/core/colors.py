"""Named colours shared by the synthetic scenes, the tracker's labels and the model's answers.

One palette for the whole project, so the word a track is labelled with, the word the data
generator writes into a question and the word the model answers with are the same word.
"""

from __future__ import annotations

import numpy as np

#: name -> sRGB (0..255). Chosen to be far apart in RGB so nearest-colour naming is stable
#: under the shading the synthetic renderer applies (a factor in 0.6..1.0).
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 180, 40),
    "blue": (30, 60, 220),
    "yellow": (235, 215, 30),
    "orange": (245, 130, 20),
    "purple": (140, 40, 180),
    "cyan": (30, 200, 210),
    "pink": (245, 120, 190),
}

_NAMES = tuple(PALETTE)
_RGB = np.array([PALETTE[n] for n in _NAMES], dtype=np.float32)  # (C, 3)


def colour_name(rgb: np.ndarray) -> str:
    """Name of the palette colour nearest to `rgb` (3,) in 0..255, after brightness normalisation.

    Shading scales a colour, so both sides are compared as chromaticity (rgb / sum) plus a small
    weight on brightness; gray and dark inputs still get the nearest name.
    """
    rgb = np.asarray(rgb, dtype=np.float32).reshape(3)
    chroma = rgb / max(float(rgb.sum()), 1e-6)
    pal_chroma = _RGB / _RGB.sum(axis=1, keepdims=True)
    d = np.linalg.norm(pal_chroma - chroma, axis=1)
    return _NAMES[int(np.argmin(d))]
