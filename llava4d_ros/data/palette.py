"""The synthetic scenes' palette: the colours the renderer paints objects with and the names
the data generator writes into questions and answers (`data/vocabulary.py` takes them from here).

Dataset vocabulary, not a tracker's: the object map names a measured colour with
`core/colour_words.py`, which knows no palette. `colour_name` and `describe_colour` measure
rendered colours against the palette (the scene tests use them).
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


#: What a track may be called: the palette's names, the achromatic and brown basic colour terms,
#: and "object" when the measured colour is none of them clearly.
BASIC_COLOURS: tuple[str, ...] = (*_NAMES, "brown", "gray", "white", "black")
UNCLEAR = "object"

_HUE_DEG = {n: float(np.degrees(np.arctan2(np.sqrt(3) * (g - b), 2 * r - g - b))) % 360
            for n, (r, g, b) in PALETTE.items()}
_HUE_TOL_DEG = 20.0  # palette hues are >= 25 deg apart; measured ones stay within ~5
_MIN_SAT = 0.4  # shaded and edge-mixed palette objects measure >= 0.46 (pink, the palest)


def describe_colour(rgb: np.ndarray) -> str:
    """A colour word for `rgb` (3,) in 0..255 that says what is measured: a palette name only
    for a saturated colour within 20 deg of that palette hue; black, white, gray for dark and
    unsaturated colours, brown for dull dark orange-red; otherwise "object" (unclear).

    Unlike `colour_name` (nearest palette colour, always), a gray counter is never "pink".

    >>> [describe_colour(c) for c in ([220, 30, 30], [130, 130, 128], [128, 104, 84])]
    ['red', 'gray', 'brown']
    """
    r, g, b = (float(v) / 255.0 for v in np.asarray(rgb, dtype=np.float64).reshape(3))
    hi, lo = max(r, g, b), min(r, g, b)
    sat = (hi - lo) / hi if hi > 0 else 0.0
    if hi < 0.2:
        return "black"
    if sat < 0.2:
        return "white" if hi > 0.85 else "gray"
    hue = float(np.degrees(np.arctan2(np.sqrt(3) * (g - b), 2 * r - g - b))) % 360
    if (hue <= 50 or hue >= 350) and sat < 0.6 and hi < 0.75:
        return "brown"
    if sat < _MIN_SAT:
        return UNCLEAR
    dist = {n: min(abs(hue - h), 360 - abs(hue - h)) for n, h in _HUE_DEG.items()}
    name = min(dist, key=dist.get)
    return name if dist[name] <= _HUE_TOL_DEG else UNCLEAR
