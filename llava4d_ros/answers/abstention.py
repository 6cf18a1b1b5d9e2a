"""Abstention: "I do not see a mug." instead of an invented box.

Before the LM answers, the object a question names is checked against what the model knows:
- a noun that names no object the model knows ("mug", "kettle") -> it cannot be in the window
  for this model, whatever the tokens hold;
- a palette colour whose presence the scene inventory (model/inventory.py) puts below
  `min_present`, or a shape the inventory gives that colour with probability below
  `min_shape` -> the window does not support it.
Either way the answer is "I do not see ..." with no box. Questions that name no object, or an
object the window supports, go to the LM unchanged.

The words come from the task vocabulary (data/vocabulary.py): colours, shapes and their
synonyms, the words for "objects". Nouns of the scene itself ("the scene", "the room") are not
objects. Which unknown nouns tests use is not looked at: any noun outside the known words counts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from llava4d_ros.data.vocabulary import COLOURS, OBJECT_WORDS, canonical_shape

#: Nouns after "the"/"a" that name the scene, a time or a place, not an object.
SCENE_NOUNS = frozenset({
    "scene", "room", "window", "view", "world", "camera", "map", "frame", "image", "picture",
    "moment", "time", "start", "end", "beginning", "past", "present", "last", "first", "same",
    "one", "ones", "other", "others", "rest", "way", "direction", "robot", "floor", "table",
    "x", "y", "z", "axis", "origin", "left", "right", "front", "back", "top", "bottom",
    "second", "seconds", "sec", "secs", "s", "number", "count", "total", "most", "position",
    "location", "place", "motion", "movement", "speed", "heading", "description", "summary",
    "overview", "list", "look", "status", "update", "report",
})
_GENERIC = frozenset({*OBJECT_WORDS, "object", "thing", "item", "anything", "something"})
#: Words that open a question or a request rather than name an object ("Where is ...",
#: "Could you ..."); a question that opens with anything else may open with its object
#: ("Red cube at 3 s?", "Cup location now?").
OPENERS = frozenset({
    "where", "what", "when", "which", "who", "whose", "why", "how", "is", "are", "was", "were",
    "did", "does", "do", "has", "have", "had", "can", "could", "would", "will", "should", "may",
    "might", "shall", "tell", "show", "find", "give", "describe", "count", "list", "name", "say",
    "locate", "point", "report", "explain", "please", "kindly", "i", "we", "you", "it", "there",
    "any", "anything", "something", "nothing", "everything", "in", "at", "on", "from", "since",
    "during", "after", "before", "between", "hey", "hi", "hello", "ok", "okay", "so", "now",
    "then", "and", "also", "yes", "no", "robot", "let", "lets",
})
#: Words after a question's first word that make it no object ("Summary of the scene").
_NOT_AFTER_OBJECT = frozenset({"of", "for", "about", "me", "us", "the", "a", "an", "all", "every",
                               "each", "to", "with"})
#: Words after a determiner that start no noun phrase ("any of the objects", "a lot").
_FUNCTION_WORDS = frozenset({"of", "in", "on", "at", "to", "for", "with", "from", "by", "that",
                             "this", "these", "those", "lot", "bit", "few", "little", "more"})
#: Words after an unknown noun that end its phrase though no other rule knows them: verbs,
#: adverbs and adjectives of where or whether ("Where did the mug go?", "Is the mug visible?").
#: Words ending in -ing or -ed end it too ("the mug moving", "the mug located").
_AFTER_NOUN = frozenset({
    "go", "goes", "went", "gone", "move", "moves", "stop", "stops", "sit", "sits", "stand",
    "stands", "lie", "lies", "be", "been", "end", "ends", "come", "comes", "look", "looks",
    "appear", "appears", "seem", "seems", "still", "there", "here", "visible", "present",
    "around", "nearby", "anywhere", "somewhere", "right", "just", "ever", "again", "too",
    "and", "or", "but", "than", "as", "s", "begin", "begins", "began", "turn", "turns",
    "head", "heads", "currently", "presently", "yet", "later", "earlier", "ago", "today",
    "stationary", "static", "motionless", "idle",
})


@dataclass(frozen=True)
class NamedObject:
    """The object a question asks about: `colour` / `shape` (canonical words, None when not
    named) or an `unknown` noun; `determiner` as asked ("the", "a", "any")."""

    determiner: str
    colour: str | None = None
    shape: str | None = None
    unknown: str | None = None

    def phrase(self) -> str:
        """'a green sphere', 'an orange cube', 'a mug', 'any mugs'."""
        words = " ".join(w for w in (self.colour, self.shape or self.unknown) if w)
        if self.determiner == "any":
            return f"any {words}"
        return f"{'an' if words[:1] in 'aeiou' else 'a'} {words}"


_DETERMINERS = frozenset({"the", "a", "an", "any"})
_WORD = re.compile(r"[a-z]+")


def _kind(word: str | None) -> str:
    """'colour', 'shape', 'generic' (objects, things), 'scene' (scene, room, time...), 'none'
    or 'other' (a word the model has no object for)."""
    if word is None:
        return "none"
    if word in COLOURS:
        return "colour"
    if canonical_shape(word) is not None:
        return "shape"
    if word in _GENERIC:
        return "generic"
    return "scene" if word in SCENE_NOUNS else "other"


def _continues_noun(word: str) -> bool:
    """Whether `word`, after a noun the model does not know, is more of the same name ("coffee
    mug", "toy car"), not the rest of the question."""
    return (_kind(word) == "other" and word not in OPENERS and word not in _FUNCTION_WORDS
            and word not in _NOT_AFTER_OBJECT and word not in _AFTER_NOUN
            and word not in _DETERMINERS and not word.endswith(("ing", "ed")))


def _unknown_name(words: list[str], i: int, max_words: int = 3) -> str:
    """The name of a thing the model does not know that starts at `words[i]`: it and the
    words after it that continue it, up to `max_words` ("coffee mug")."""
    name = [words[i]]
    for word in words[i + 1:i + max_words]:
        if not _continues_noun(word):
            break
        name.append(word)
    return " ".join(name)


def _object_at(det: str, words: list[str], i: int) -> NamedObject | None:
    """The object phrase that starts at `words[i]` (after its determiner), or None when the
    words there name none (a colour alone, "the objects", "the scene")."""
    def at(j: int) -> str | None:
        return words[j] if j < len(words) else None

    if _kind(at(i)) == "other" and _kind(at(i + 1)) == "colour":
        i += 1  # an adjective before the colour: "the big red cube"
    w1, w2 = at(i), at(i + 1)
    k1, k2 = _kind(w1), _kind(w2)
    if k1 == "colour":
        if k2 == "shape":
            return NamedObject(det, w1, canonical_shape(w2))
        if k2 == "other":
            return NamedObject(det, w1, unknown=_unknown_name(words, i + 1))
        return None  # a colour alone, or "the red one"
    if k1 == "shape":
        return NamedObject(det, shape=canonical_shape(w1))
    if k1 in ("generic", "scene"):
        return None
    if k2 == "shape":  # an adjective first: "the moving block"
        return NamedObject(det, shape=canonical_shape(w2))
    if k2 == "generic":  # "the moving object"
        return None
    return NamedObject(det, unknown=_unknown_name(words, i))


def named_object(question: str) -> NamedObject | None:
    """The first object phrase of `question` ("the red cube", "a mug", "the moving block", "the
    big red ball", "the coffee mug"), or None when it names none (counts over "the objects",
    "the scene", a colour alone). A phrase starts after a determiner or as the question's first
    word ("Red cube at 3 s?", "Cup location now?")."""
    words = _WORD.findall(question.lower())
    for i, word in enumerate(words):
        if word in _DETERMINERS:
            continue
        if i > 0 and words[i - 1] in _DETERMINERS:
            det = words[i - 1]
            if word in _FUNCTION_WORDS:
                continue
        elif i == 0 or (i == 1 and words[0] in _DETERMINERS):
            nxt = words[i + 1] if i + 1 < len(words) else None
            if word in OPENERS or nxt in _NOT_AFTER_OBJECT:
                continue
            det = "a"
        else:
            continue
        obj = _object_at(det, words, i)
        if obj is not None:
            return obj
    return None


def abstain_text(question: str, present_p: dict[str, float] | None = None,
                 shape_p: dict[str, dict[str, float]] | None = None, min_present: float = 0.5,
                 min_shape: float = 0.1) -> str | None:
    """"I do not see <the object>." when the question names an object the model does not know,
    or (given the inventory's `present_p[colour]` and `shape_p[colour][shape]` probabilities)
    one the window does not support; None to let the model answer. The thresholds were chosen
    on 20 validation scenes: `min_shape` 0.1 declined 234/240 absent/unknown questions against
    228/240 at 0.05, with the same 12/1113 answerable ones declined."""
    obj = named_object(question)
    if obj is None:
        return None
    if obj.unknown is not None:
        return f"I do not see {obj.phrase()}."
    if obj.colour is None or present_p is None:
        return None
    # a colour or shape the inventory has no entry for is one the model cannot see
    if present_p.get(obj.colour, 0.0) < min_present:
        return f"I do not see {obj.phrase()}."
    if obj.shape is not None and shape_p is not None and (
            shape_p.get(obj.colour, {}).get(obj.shape, 0.0) < min_shape):
        return f"I do not see {obj.phrase()}."
    return None
