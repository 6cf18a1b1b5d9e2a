"""The task vocabulary: every closed-class word the data, the model's inventory and evaluate share.

One place for the object words (palette colours, shapes, their plurals and the synonyms people
use for them), the words for "objects", number words and direction words, so the generator that
writes a question, the inventory that reads it and the metric that scores its answer agree.
Colour RGB values stay in `data.palette.PALETTE` (the renderer needs them without this
module); this module takes the names from there.

    >>> canonical_shape("block"), canonical_shape("balls"), canonical_shape("mug")
    ('cube', 'sphere', None)
    >>> number_word(3), parse_number("seven"), parse_number("12")
    ('three', 7, 12)
"""

from __future__ import annotations

from llava4d_ros.data.palette import PALETTE

#: Palette colour names, in `PALETTE` order (the inventory's colour order).
COLOURS: tuple[str, ...] = tuple(PALETTE)
#: Shapes of the synthetic primitives, and the plural of each (same order).
SHAPES: tuple[str, ...] = ("cube", "sphere", "cylinder")
PLURALS: tuple[str, ...] = ("cubes", "spheres", "cylinders")
PLURAL: dict[str, str] = dict(zip(SHAPES, PLURALS))
#: Words people use for a shape (singular, plural); the canonical word comes first.
SHAPE_SYNONYMS: dict[str, tuple[tuple[str, str], ...]] = {
    "cube": (("cube", "cubes"), ("box", "boxes"), ("block", "blocks")),
    "sphere": (("sphere", "spheres"), ("ball", "balls")),
    "cylinder": (("cylinder", "cylinders"), ("can", "cans"), ("tube", "tubes")),
}
#: Words for "the objects" in general (plural).
OBJECT_WORDS: tuple[str, ...] = ("objects", "things", "items")
#: World-axis direction words of heading answers ("heading toward +x").
DIRECTIONS: tuple[str, ...] = ("+x", "-x", "+y", "-y")
#: Nouns for things the generator never makes: "Where is the mug?" has the honest answer
#: "I do not see a mug." Split so that held-out questions use nouns training never saw.
UNKNOWN_NOUNS_TRAIN: tuple[str, ...] = (
    "mug", "kettle", "chair", "bottle", "laptop", "plant", "book", "lamp", "shoe", "phone",
)
UNKNOWN_NOUNS_HELDOUT: tuple[str, ...] = (
    "cup", "toaster", "keyboard", "backpack", "banana", "remote", "vase", "helmet",
)
NUMBER_WORDS: tuple[str, ...] = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
    "nineteen", "twenty",
)


def number_word(n: int) -> str:
    """English word for 0..20, else the digits."""
    return NUMBER_WORDS[n] if 0 <= n < len(NUMBER_WORDS) else str(n)


def parse_number(word: str) -> int | None:
    """An int from digits or a number word ("three" -> 3); None otherwise."""
    w = word.strip().lower()
    if w.isdigit():
        return int(w)
    return NUMBER_WORDS.index(w) if w in NUMBER_WORDS else None


def canonical_shape(word: str) -> str | None:
    """The shape a word (singular or plural, any synonym) names, None if it names none."""
    w = word.strip().lower()
    for shape, forms in SHAPE_SYNONYMS.items():
        if any(w in pair for pair in forms):
            return shape
    return None


def object_words() -> list[str]:
    """Every word of this module that a question or answer may contain, lower case."""
    words = {*COLOURS, *SHAPES, *PLURALS, *OBJECT_WORDS, *UNKNOWN_NOUNS_TRAIN,
             *UNKNOWN_NOUNS_HELDOUT, *NUMBER_WORDS}
    for forms in SHAPE_SYNONYMS.values():
        for pair in forms:
            words.update(pair)
    return sorted(words)
