"""Plain colour words for a measured colour: what a person would call it, from any palette.

`colour_word(rgb)` names hue families (red, orange, yellow, green, cyan, blue, purple, pink) and
the achromatic and earthy terms (white, gray, black, brown, beige). It knows no dataset: a
synthetic red cube measures red because it is red, a wooden chair measures brown.
"""

from __future__ import annotations

import numpy as np

#: Hue families by upper bound [deg]; red wraps around 0.
_HUES = ((15.0, "red"), (40.0, "orange"), (70.0, "yellow"), (165.0, "green"),
         (200.0, "cyan"), (255.0, "blue"), (290.0, "purple"), (340.0, "pink"),
         (360.0, "red"))
COLOUR_WORDS = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink",
                "white", "gray", "black", "brown", "beige")


def hsv(rgb: np.ndarray) -> tuple[float, float, float]:
    """`rgb (3,)` 0..255 -> hue [deg], saturation 0..1, value 0..1."""
    r, g, b = (float(v) / 255.0 for v in np.asarray(rgb, np.float64).reshape(3))
    hi, lo = max(r, g, b), min(r, g, b)
    sat = (hi - lo) / hi if hi > 0 else 0.0
    hue = float(np.degrees(np.arctan2(np.sqrt(3) * (g - b), 2 * r - g - b))) % 360
    return hue, sat, hi


def colour_word(rgb: np.ndarray) -> str:
    """The plain word for `rgb (3,)` in 0..255 (mean colour of an object's pixels).

    Dark is black, unsaturated is white or gray, orange-red hues of middling saturation are
    brown (dark) or beige (light); everything else is its hue family. Shading changes value,
    not hue, so a shaded red cube stays red.

    >>> [colour_word(c) for c in ([220, 30, 30], [200, 200, 195], [120, 85, 60], [30, 60, 220])]
    ['red', 'white', 'brown', 'blue']
    """
    hue, sat, val = hsv(rgb)
    if val < 0.16:
        return "black"
    if sat < 0.16:
        return "white" if val > 0.72 else ("gray" if val > 0.25 else "black")
    if (hue < 50 or hue >= 345) and sat < 0.7:
        if val < 0.7:
            return "brown"
        if hue >= 12 and sat < 0.45:
            return "beige"
    if sat < 0.25:
        return "white" if val > 0.72 else "gray"
    return next(name for bound, name in _HUES if hue < bound)
