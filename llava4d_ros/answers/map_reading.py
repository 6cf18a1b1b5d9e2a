"""What a question about the objects around the robot asks, read by its words.

The object map decides these questions (`answers/map_answers.py`): what is there (on the
table), how many, where is something now (or a while ago), which is nearest, is anything
moving now, what colour something is, where the camera was. A question is read into an
`Asked`: its kind, the thing it names (a noun, a colour, the surface it stands on) and when.
Questions of other kinds (`kind` None) go on to the rest of the answer policy.

The vocabulary is everyday English for household objects, shapes and colours. It was written
from the object map's categories (core/category.py) and common synonyms, never from the
questions any evaluation asks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from llava4d_ros.core.colour_words import COLOUR_WORDS
from llava4d_ros.core.notation import (
    AMOUNT_WORDS,
    IN_THE_LAST,
    NOW_OR_STILL,
    clock_time,
    last_span_s,
    seconds_ago,
    seconds_at,
)

#: noun -> the map's category it names; a category's own noun is included.
CATEGORY_OF: dict[str, str] = {
    "mug": "mug", "cup": "mug", "teacup": "mug", "coffee cup": "mug",
    "chair": "chair", "seat": "chair", "stool": "chair",
    "table": "table", "desk": "table",
    "bottle": "bottle", "bowl": "bowl",
    "teapot": "teapot", "kettle": "teapot", "coffeepot": "teapot", "jug": "teapot",
    "pitcher": "teapot",
    "box": "box", "crate": "box", "carton": "box",
    "tray": "tray", "plate": "plate", "dish": "plate", "vase": "vase",
    "plant": "plant pot", "flowerpot": "plant pot", "plant pot": "plant pot",
    "screen": "screen", "tv": "screen", "television": "screen", "monitor": "screen",
    "computer": "screen",
    "laptop": "laptop", "keyboard": "keyboard",
    "book": "book", "magazine": "book", "binder": "book",
    "bin": "bin", "bucket": "bin", "trash can": "bin", "wastebasket": "bin",
    "lamp": "lamp", "sofa": "sofa", "couch": "sofa", "toaster": "toaster",
    "microwave": "microwave", "fridge": "fridge", "refrigerator": "fridge",
    "bag": "bag", "backpack": "bag", "phone": "phone", "basket": "basket", "clock": "clock",
}
#: noun -> the shape it names (what the geometry reads of an object).
SHAPE_OF: dict[str, str] = {
    "cube": "cube", "block": "cube", "box": "cube",
    "sphere": "sphere", "ball": "sphere", "globe": "sphere",
    "cylinder": "cylinder", "can": "cylinder", "tube": "cylinder", "barrel": "cylinder",
}
GENERIC = frozenset({"object", "thing", "item", "anything", "something", "everything",
                     "stuff"})
SUPPORTS = {"table": "table", "desk": "table", "floor": "floor", "ground": "floor",
            "counter": "counter", "worktop": "counter", "countertop": "counter",
            "shelf": "shelf"}
_COLOUR_SYNONYMS = {"grey": "gray", "magenta": "pink", "violet": "purple", "golden": "yellow",
                    "tan": "beige", "cream": "beige", "silver": "gray"}
IRREGULAR_PLURALS = {"shelves": "shelf", "boxes": "box", "benches": "bench",
                     "couches": "couch", "dishes": "dish", "glasses": "glass",
                     "people": "person", "knives": "knife"}
#: words for the space the camera sees: "in the room" says where to look, not what to find
PLACES = frozenset({"scene", "room", "view", "area", "place", "picture", "image", "frame",
                    "space", "surroundings", "environment", "world", "here", "kitchen",
                    "office", "house"})
_PLACE_PREPOSITIONS = frozenset({"in", "around", "across", "within", "inside", "of", "near"})
_DETERMINERS = frozenset({"the", "a", "an", "any", "my", "your", "our", "this", "that",
                          "these", "those", "some"})
_WORD = re.compile(r"[a-z]+")
_ADJECTIVES = frozenset({"nearest", "closest", "other", "big", "small", "little", "large",
                         "tall", "short", "moving", "still", "last", "first", "same"})
_MOTION = re.compile(r"\b(mov(e|es|ed|ing)|motion|in motion|budg(e|es|ed|ing)|shift(s|ed|ing)?)"
                     r"\b")


@dataclass(frozen=True)
class Asked:
    """A question about the map. `kind`: count, list, where, nearest, moving, colour, camera,
    presence (or None: not a map question). `noun`: the thing named as written ("mug", "kettle";
    None: any object), `category` / `shape`: what it names in the map's words (None when
    unknown or generic), `colour`, `support` ("table"...), `plural`. `ago_s`: how long before
    now it asks about (None: now); `at_s`: a window time named ("at 2.5s", seconds since the
    window start), which the map leaves to the network."""

    kind: str | None
    noun: str | None = None
    category: str | None = None
    shape: str | None = None
    colour: str | None = None
    support: str | None = None
    plural: bool = False
    ago_s: float | None = None
    at_s: float | None = None
    moving: bool = False  # the question is about moving things ("how many are moving")
    last_s: float | None = None  # "in the last hour": how far back from now [s]
    clock: tuple[int, int, int] | None = None  # "at 14:05", "since 09:00": a time of day
    since: bool = False  # the clock time starts a span ("since 09:00") rather than a moment
    now: bool = False  # it asks about now ("now", "currently", "is ... moving")
    yes_no: bool = False  # "is anything moving?", "anything moving?"; not "what is moving?"

    @property
    def known(self) -> bool:
        """Whether the noun is one the map can have (a category, a shape or a generic word)."""
        return self.noun is None or self.category is not None or self.shape is not None


def singular(word: str) -> tuple[str, bool]:
    """(singular form, was plural) of an English noun."""
    if word in IRREGULAR_PLURALS:
        return IRREGULAR_PLURALS[word], True
    if len(word) > 3 and word.endswith("ies"):
        return word[:-3] + "y", True
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1], True
    return word, False


def _noun_at(words: list[str], i: int) -> tuple[str | None, str | None, bool, int]:
    """(colour, noun, plural, index after) of the noun phrase starting at `words[i]`: an
    optional colour (maybe after adjectives) and a one- or two-word noun."""
    colour = None
    j = i
    for k in range(i, min(i + 3, len(words))):  # "the big white mug": skip up to 2 adjectives
        w = _COLOUR_SYNONYMS.get(words[k], words[k])
        if w in COLOUR_WORDS:
            colour, j = w, k + 1
            break
    if j >= len(words):
        return colour, None, False, j
    two = " ".join(words[j:j + 2])
    if two in CATEGORY_OF:
        return colour, two, False, j + 2
    two_s, plural2 = singular(words[j + 1]) if j + 1 < len(words) else ("", False)
    if f"{words[j]} {two_s}" in CATEGORY_OF:
        return colour, f"{words[j]} {two_s}", plural2, j + 2
    noun, plural = singular(words[j])
    return colour, noun, plural, j + 1


def _thing(words: list[str]) -> tuple[str | None, str | None, bool]:
    """(colour, noun, plural) of the first thing the question names after a determiner, a
    number, "many" or a wh-word ("how many chairs", "is there a mug", "what colour is the
    cup", "which mugs")."""
    starts = {"many", "which", "what", "colour", "color", *(_DETERMINERS - {"that"}),
              *AMOUNT_WORDS}
    skip = {"is", "are", "was", "were", "do", "does", "did", "you", "see", "there", "of",
            "on", "in", "at", "colour", "color", "i", "can", "time", "objects", "things",
            "object", "thing", "items", "item", "nearest", "closest", "moving", "moved", "move",
            "moves", "changed", "new", "appeared", "happened", "has", "have"}
    for i, w in enumerate(words[:-1]):
        if w not in starts:
            continue
        if words[i + 1] in _ADJECTIVES and i + 2 < len(words):
            i += 1  # "the nearest mug", "the other chair"
        nxt = words[i + 1]
        if nxt in skip and nxt not in GENERIC and not _is_noun_start(words, i + 1):
            continue
        colour, noun, plural, _ = _noun_at(words, i + 1)
        if noun in SUPPORTS and colour is None and words[i - 1:i] in (["on"], ["under"]):
            continue  # "on the table": where, not what
        if noun in PLACES and colour is None and i > 0 and words[i - 1] in _PLACE_PREPOSITIONS:
            continue  # "in the room": where, not what
        if noun is None or noun in skip - GENERIC or noun in _DETERMINERS:
            continue
        return colour, noun, plural
    return None, None, False


def _is_noun_start(words: list[str], i: int) -> bool:
    w = words[i]
    return (_COLOUR_SYNONYMS.get(w, w) in COLOUR_WORDS or singular(w)[0] in CATEGORY_OF
            or singular(w)[0] in SHAPE_OF)


def _support(text: str) -> str | None:
    m = re.search(r"\b(on|upon|on top of|atop)\s+(the|a|that|this)\s+(\w+)", text)
    if m is None:
        return None
    return SUPPORTS.get(singular(m.group(3))[0])


def read(question: str) -> Asked:
    """Read `question` (any case, any punctuation) into an `Asked`."""
    text = question.lower().replace("’", "'")
    text = re.sub(r"\bwhere's\b", "where is", text)
    text = re.sub(r"\bwhat's\b", "what is", text)
    text = re.sub(r"\bthere's\b", "there is", text)
    words = _WORD.findall(text)
    ago = seconds_ago(text)
    at_s = seconds_at(text)
    support = _support(text)
    colour, noun, plural = _thing(words)
    if noun is not None and noun in GENERIC:
        noun = None
    if noun in SUPPORTS and support == SUPPORTS[noun]:
        noun = None  # "what is on the table": the table is where, not what
    clock = clock_time(text)
    if clock is not None:
        at_s = None  # "at 9.30" is a time of day, not seconds into the window
    base = {"noun": noun, "colour": colour, "support": support, "plural": plural, "ago_s": ago,
            "at_s": at_s, "moving": bool(_MOTION.search(text)), "last_s": last_span_s(text),
            "clock": clock, "since": bool(re.search(r"\b(since|after)\b", text)),
            "now": bool(NOW_OR_STILL.search(text)
                        or re.search(r"\b(is|are)\b.*\bmoving\b", text)),
            "yes_no": not re.match(r"\W*(what|which|who|where|when|how|list|name|tell|show|"
                                   r"describe|count)\b", text)}
    if noun is not None:
        base["category"] = CATEGORY_OF.get(noun)
        base["shape"] = SHAPE_OF.get(noun)

    def asked(kind: str | None) -> Asked:
        return Asked(kind, **base)

    camera = re.search(r"\b(camera|sensor)\b", text) or re.search(
        r"\bwhere (were|are|was) (you|we|i)\b|\bwhere am i\b|\byour (position|location)\b",
        text)
    if camera:
        return Asked("camera", ago_s=ago, at_s=at_s, clock=clock)
    if re.search(r"\bhow long\b", text) and noun is not None:
        return asked("how_long")
    if re.search(r"\b(last (see|saw|seen|spot|spotted|notice|noticed)|when did you (last )?"
                 r"(see|spot|notice)|last time you saw|have you seen|did you see)\b", text):
        return asked("last_seen")
    if re.search(r"\b(new|appeared|arrived)\b", text) and (
            re.search(r"\b(what|which|anything|something|objects?|things?)\b", text)):
        return asked("new")
    if re.search(r"\b(moved|changed|has moved|have moved)\b", text) and (
            IN_THE_LAST.search(text) or re.search(r"\b(since|while|today|away)\b", text)):
        return asked("moved")
    if re.search(r"\b(how many|number of|count)\b", text):
        return asked("count")
    if re.search(r"\b(nearest|closest)\b", text):
        return asked("nearest")
    if re.search(r"\b(what|which) colou?rs?\b|\bcolou?rs? of\b", text):
        return asked("colour")
    if _MOTION.search(text) and not re.search(r"\b(where|when|how fast|speed|heading|"
                                               r"direction|toward|towards|start|started|"
                                               r"stop|stopped)\b", text):
        return asked("moving")
    if re.search(r"\b(where|locate|location of|position of|find)\b", text):
        return asked("where")
    if re.search(r"\b(is|are) there\b|\b(do|can) you see\b|\bdo you have\b", text) and (
            noun is not None or "anything" in words or "something" in words):
        return asked("presence")
    if noun is not None and re.match(r"\W*(is|are) (the|my|a|an|your|any)\b.*\b(still|there|"
                                     r"here|on|in)\b", text):
        return asked("presence")  # "is the mug still on the table?"
    if re.search(r"\bwhat (objects?|things?|items?|else|do you see|can you see|is there|"
                 r"are there|is on|is in|lies on|stands on|sits on)\b|\blist\b|"
                 r"\bwhat do you (see|notice)\b|\bwhich (objects?|things?|items?) (are|is) "
                 r"(there|here|on|in)\b|\bwhat is (around|here)\b", text):
        return asked("list")
    if (re.search(r"\b(describe|tell me about)\b", text) and noun in PLACES
            and at_s is None and ago is None):
        # "describe the room": what it holds (the room is no thing to find); "... at 2.5s" is
        # the model's to describe
        return Asked("list", **{**base, "noun": None, "category": None, "shape": None})
    return Asked(None, **base)
