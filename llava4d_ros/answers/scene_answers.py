"""Answers read off the scene inventory instead of the LM, where the honest answer is decided by
what the window holds and the default's LM was never taught to give it.

The question is read in the training notation (`answers/normalise.py`: "t=2.5" is "2.5s",
"currently" is "now", "the red box" is "the red cube"). In this order, before the LM sees it:
1. an object the window does not support: "I do not see a mug." (`abstention.abstain_text`);
2. a time outside the window ("at 30 s", "20 seconds ago" in an 8 s window): "I only see from
   0.0s to 7.9s.", the window in model seconds;
3. a window with no object the model knows (no colour present, e.g. a real kitchen whose red
   fronts the object envelope rejects): a question about motion gets "No, nothing is moving." or
   "No object moves.", one about an object declines, any other "I do not recognise any known
   objects.";
4. "how many objects (are moving)": the colours the inventory finds present (and moving in the
   window); "how many cubes": the colours present whose likeliest shape is a cube. On 60
   validation scenes' shape counts the inventory was right for 0.73 (the default's LM 0.52)
   and 0.80 (the SmolLM2 model's LM 0.25): the LMs' counts were off by one object where the
   inventory's shape was right;
5. a yes/no question about motion ("Is anything moving now?", "Is the red cube moving at 3 s?",
   "Did the blue ball move?"): yes or no from the inventory: an object moves at time T when its
   speed there (`Inventory.velocity`, from its tokens near T) is at least `min_speed_mps` and
   the inventory says it moves in the window; with no time named, the latter alone. "Is the
   red cube still / stationary?" and "Is everything still?" the same, the other way round
   ("Yes, the red cube is still.", "No, the blue sphere is moving."), about now when no time
   is named;
6. which objects move at a time the question names ("Which objects are moving at 3.0s?",
   "What is moving now?"): the colours present that move at T, as in 5. The LM's template has
   no time ("Which objects move?" is about the whole window): on 30 validation scenes at 9
   times each its answer was the set moving at T for 0.18 of them, the inventory's for 0.70
   (27 of 30 at the window's end, the LM 0).
7. what colour an object of a shape is ("What colour is the ball?"): the colours present whose
   likeliest shape it is ("The sphere is yellow.", "I do not see a cube."); "what colours do
   you see": the colours present.
A question none of the model's answers can say gets what it can say instead (`unsupported`,
right after 1): how fast something moves, how far apart things are, when something stopped.
Without this the nearest template answered them: "When did the pink cylinder stop moving?"
got "The pink cylinder started moving at 2.5s." ("Has it stopped?" is asked as "is it still
now", `intent.read_intent`.)
Anything else (and every question for a model without an inventory) goes to the LM. Which way
an object heads (`SceneFacts.heading`, `with_heading`) is the inventory's word in the LM's
answer: the LM says where the object is and when, then the direction is the inventory's (on 60
validation scenes' 180 heading questions right for 0.78 against the default's LM 0.77, and 0.81
against the SmolLM2 model's 0.69, measured by speed alone; with the "moves in the window" gate
of `moves_at`, shipped, heading EM on 30 val scenes went 0.756 -> 0.778 and 0.667 -> 0.722).

Why not the LM: the default's 0.9 M-parameter LM was trained on the task templates only; it
answered every yes/no question with "The red cylinder moves.", every time outside the window
with a box, never counted past 6 (its training scenes hold 3-6 objects), and on a real room
named palette objects in 9 of 10 answers (docs/RESULTS.md).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from llava4d_ros.answers.abstention import abstain_text, named_object
from llava4d_ros.answers.normalise import normalise_question
from llava4d_ros.core.notation import TRAINED_AGO, TRAINED_AT, TRAINED_NOW
from llava4d_ros.data.instructions import heading_word
from llava4d_ros.data.vocabulary import COLOURS, PLURAL, PLURALS, SHAPES, canonical_shape

#: An object moves at T when its speed there is at least this. The speed is read from its
#: tokens within `SIGMA_S` of T, or `NOW_SIGMA_S` at the window's end: there the weighting is
#: one-sided, and with 0.5 s a motion that ended a second ago still counted. Chosen on 30
#: validation scenes' objects at 9 times each, against the truth: "is anything moving at T"
#: right for 0.83 of (scene, T) and 0.93 at the window's end (one sigma of 0.5 s: 0.80 and
#: 0.67; 0.20 m/s: 0.76 and 0.90).
MIN_SPEED_MPS = 0.15
SIGMA_S = 0.5
NOW_SIGMA_S = 0.25
#: An object these answers name unasked gets its shape word only when the inventory gives
#: that shape at least this probability, else "the orange object" (a window holds one object
#: per palette colour, so the colour alone says which). On 60 validation scenes' 275 objects
#: the likeliest shape was right for 0.873; for the 0.83 of them at >= 0.8, 0.930 (the
#: default's LM, naming them in its captions, 0.884: it differs only where this is unsure).
SHAPE_SURE = 0.8
#: A time this far outside the window still counts as inside (rounding, a late keyframe).
#: Through the node or replay, `engine._check_times` refuses a digit time ("at 30s") more
#: than 1 s past the window before the model runs; this answers the rest (the generated
#: out-of-window questions ask 1 s or more past its end, which that 1 s slack lets through,
#: "t=30" / "thirty seconds", and the model used without the engine, as `evaluate` does).
WINDOW_SLACK_S = 0.5

MOTION = re.compile(r"\b(move|moves|moved|moving|motion|movement|movements)\b")
# wh-words, and the words of "when did it start moving", which ask for a time, not yes or no
_WH = re.compile(r"\b(which|what|what's|whats|where|when|how|who|list|count|number|start|"
                 r"starts|started|begin|begins|began)\b")
AUX_FIRST = re.compile(r"^\W*(is|are|was|were|does|do|did|has|have|can|could|will|would)\b")
_YES_NO_CUE = re.compile(r"\b(if|whether|anything|something|any)\b")
_WHICH = re.compile(r"^\W*(which|what)\b")
_SOME = re.compile(r"\b(anything|something|any)\b")  # "is anything still?": one will do
# "still" as the adjective ("is the red cube still?", "... still at 3s?"), not the adverb of
# "still moving" / "still there"
STILL = re.compile(r"\b(stationary|static|at rest|motionless|still(?=\s*(?:$|[?.!,]|now\b|"
                   r"at\b|\d)))")
COUNT = re.compile(r"\b(how many|count|number of)\b")
_SHAPE_WORDS = frozenset({*SHAPES, *PLURALS})
COLOUR = re.compile(r"\b(" + "|".join(COLOURS) + r")\b")
# what no answer of the model says: a speed, a distance, when something stopped
_SPEED = re.compile(r"\b(how fast|how quickly|how slowly|speed|speeds|velocity|velocities)\b")
_DISTANCE = re.compile(r"\b(how far|distance|distances|closest|nearest|farthest|furthest|"
                       r"apart)\b")
STOPPED = re.compile(r"\b(stop|stops|stopped|stopping|halt|halts|halted|come to rest|"
                     r"came to rest)\b")
WHEN = re.compile(r"\b(when|what time)\b")
# "what colour is ...", "which color ...", "the colour of ..."
COLOUR_ASKED = re.compile(r"\b(what|which) colou?rs?\b|\bcolou?rs? of\b")
# "heading toward +x" / "not moving", as the heading answers write them (data/instructions.py)
_HEADING_WORDS = re.compile(r"heading toward [+-][xy]|not moving")


@dataclass(frozen=True)
class AskedTime:
    """When a question asks about: `kind` "now", "at" (`seconds` since the window start),
    "ago" (`seconds` before now) or "window" (no time named: the whole window)."""

    kind: str
    seconds: float = 0.0

    def model_time(self, t_end_s: float) -> float | None:
        """Model seconds asked about, given the newest token's; None for the whole window."""
        if self.kind == "now":
            return t_end_s
        if self.kind == "at":
            return self.seconds
        if self.kind == "ago":
            return t_end_s - self.seconds
        return None


def asked_time(question: str) -> AskedTime:
    """The time `question` names: "at 2.5s", "at t=2.5", "at three seconds" (kind "at"); "3 s
    ago", "three seconds ago" ("ago"); "now", "right now", "currently" ("now"); else "window".
    Any notation `normalise_question` knows."""
    q = normalise_question(question).lower()  # "at 2.5s", "3 seconds ago", "now"
    m = TRAINED_AGO.search(q)
    if m is not None:
        return AskedTime("ago", float(m.group(1)))
    m = TRAINED_AT.search(q)
    if m is not None:
        return AskedTime("at", float(m.group(1)))
    return AskedTime("now") if TRAINED_NOW.search(q) else AskedTime("window")


def is_yes_no_motion(question: str) -> bool:
    """Whether `question` asks yes or no about motion: it speaks of moving, asks no wh-question
    (nor when something started), and opens with an auxiliary verb ("Is ...", "Did ..."),
    asks "if" / "whether" / about "anything", or names an object ("Red cube moving now?")."""
    q = normalise_question(question).lower()
    if not MOTION.search(q) or _WH.search(q) or STOPPED.search(q):
        return False
    return bool(AUX_FIRST.match(q) or _YES_NO_CUE.search(q) or named_object(q) is not None)


def is_yes_no_still(question: str) -> bool:
    """Whether `question` asks yes or no about being still ("Is the red cube stationary?", "Is
    the blue ball still at 3 s?", "Has the red cube stopped moving?"); "still moving" is a
    question about motion."""
    q = normalise_question(question).lower()
    still = (STILL.search(q) and not MOTION.search(q)) or STOPPED.search(q)
    return bool(still and AUX_FIRST.match(q) and not WHEN.search(q))


def count_kind(question: str) -> str | None:
    """"all" or "moving" for a question that asks how many objects there are or move ("How
    many things do you see moving?", "Number of items?"); None for any other question, a
    count of one shape included ("How many cubes are there?")."""
    q = normalise_question(question).lower()  # shapes by their own words, "can" the verb
    if not COUNT.search(q) or _SHAPE_WORDS & set(re.findall(r"[a-z]+", q)):
        return None
    return "moving" if MOTION.search(q) else "all"


def shape_asked(question: str) -> str | None:
    """The shape a question names ("balls": "sphere"), None if none; "can" is the verb there
    (`normalise_question` turns the noun, after an article or a colour, into "cylinder")."""
    for word in re.findall(r"[a-z]+", normalise_question(question).lower()):
        shape = None if word == "can" else canonical_shape(word)
        if shape is not None:
            return shape
    return None


def counted_shape(question: str) -> str | None:
    """The shape a question counts ("How many cubes are there?", "count the balls"), None for
    any other question; "how many red cubes" and "how many balls are moving" ask for more than
    a shape, and are the LM's."""
    q = normalise_question(question).lower()
    if not COUNT.search(q) or MOTION.search(q) or COLOUR.search(q):
        return None
    return shape_asked(q)


@dataclass(frozen=True)
class SceneFacts:
    """What the inventory says about one window, by name: `present[colour]`,
    `shape[colour][shape]` and `moving[colour]` (moves at some time in the window)
    probabilities; `t_end_s` the newest token's model time; `velocity(colour, t, sigma)` the
    colour's world xy velocity (m/s) at model time t from its tokens within about sigma
    seconds."""

    present: dict[str, float]
    shape: dict[str, dict[str, float]]
    moving: dict[str, float]
    t_end_s: float
    velocity: Callable[[str, float, float], tuple[float, float]]
    min_present: float = 0.5

    def seen(self) -> list[str]:
        """The colours the window holds, in inventory order."""
        return [c for c, p in self.present.items() if p >= self.min_present]

    def label(self, colour: str, shape: str | None = None) -> str:
        """'red cube': `shape` as asked, else the inventory's likeliest for the colour if it
        is at least `SHAPE_SURE` likely, else 'red object'."""
        if shape is None:
            best = self.likeliest_shape(colour)
            sure = best is not None and self.shape[colour][best] >= SHAPE_SURE
            shape = best if sure else "object"
        return f"{colour} {shape}"

    def likeliest_shape(self, colour: str) -> str | None:
        """The colour's most probable shape, None if the inventory gives it none."""
        probs = self.shape.get(colour, {})
        return max(probs, key=probs.get) if probs else None

    def _velocity_at(self, colour: str, t_s: float) -> tuple[float, float]:
        sigma = NOW_SIGMA_S if t_s >= self.t_end_s - NOW_SIGMA_S else SIGMA_S
        return self.velocity(colour, t_s, sigma)

    def moves_at(self, colour: str, t_s: float | None) -> bool:
        if self.moving.get(colour, 0.0) < 0.5:
            return False
        if t_s is None:
            return True
        return sum(v * v for v in self._velocity_at(colour, t_s)) ** 0.5 >= MIN_SPEED_MPS

    def heading(self, colour: str, t_s: float) -> str | None:
        """"+x" / "-x" / "+y" / "-y" where the colour heads at model time `t_s`, "none" if it
        is not moving then (`moves_at`), None if it moves along neither axis clearly (the
        rule of the training answers, `instructions.heading_word`)."""
        if not self.moves_at(colour, t_s):
            return "none"
        return heading_word(self._velocity_at(colour, t_s))


def unsupported(question: str) -> str | None:
    """What the model can say instead, for a question none of its answers can say: how fast
    something moves, how far apart things are, when something stopped moving; None for any
    other question."""
    q = normalise_question(question).lower()
    if _SPEED.search(q):
        return ("I can say whether an object is moving at a time and which way it heads, "
                "not how fast.")
    if _DISTANCE.search(q):
        return "I can say where each object is, not how far apart things are."
    if STOPPED.search(q) and WHEN.search(q):
        return ("I can say when an object started moving and whether it is moving at a time, "
                "not when it stopped.")
    return None


def _colour_answer(question: str, facts: SceneFacts) -> str | None:
    """"The sphere is yellow." for "What colour is the ball?" (the colours present whose
    likeliest shape it is), the colours present for "what colours do you see"; None for a
    colour question about something else ("the moving one"), which is the LM's."""
    obj = named_object(question)
    if obj is None or (obj.colour is None and obj.shape is None):
        if WHEN.search(question.lower()) or MOTION.search(question.lower()):
            return None
        colours = facts.seen()
        if len(colours) == 1:
            return f"I see one {colours[0]} object."
        return f"I see {', '.join(colours[:-1])} and {colours[-1]} objects."
    if obj.colour is not None:  # present: abstention would have declined it otherwise
        return f"The {facts.label(obj.colour, obj.shape)} is {obj.colour}."
    colours = [c for c in facts.seen() if facts.likeliest_shape(c) == obj.shape]
    if not colours:
        return f"I do not see {obj.phrase()}."
    if len(colours) == 1:
        return f"The {obj.shape} is {colours[0]}."
    labels = [f"{c} {obj.shape}" for c in colours]
    return f"There are {len(colours)} {PLURAL[obj.shape]}: {_joined(labels)}."


def asks_movers_at_a_time(question: str) -> bool:
    """Whether `question` asks which objects move at a time it names ("Which objects are moving
    at 3.0s?", "What is moving now?"): which / what, motion, no one object, no count."""
    q = normalise_question(question).lower()
    return bool(_WHICH.match(q) and MOTION.search(q) and not COUNT.search(q)
                and named_object(q) is None and asked_time(q).kind != "window")


def _joined(labels: list[str]) -> str:
    """'the red cube', 'the red cube and the blue sphere', 'the a, the b and the c'."""
    if len(labels) == 1:
        return f"the {labels[0]}"
    return f"the {', the '.join(labels[:-1])} and the {labels[-1]}"


def _listed(labels: list[str], state: str) -> str:
    """'the red cube is moving', 'the red cube and the blue sphere are still'."""
    return f"{_joined(labels)} {'is' if len(labels) == 1 else 'are'} {state}"


def _movers_answer(facts: SceneFacts, t_s: float) -> str:
    movers = [facts.label(c) for c in facts.seen() if facts.moves_at(c, t_s)]
    if not movers:
        return f"At {t_s:.1f}s, nothing is moving."
    return f"At {t_s:.1f}s, {_listed(movers, 'moving')}."


def window_text(t_end_s: float) -> str:
    return f"I only see from 0.0s to {t_end_s:.1f}s."


def _motion_answer(question: str, facts: SceneFacts, t_s: float | None,
                   still: bool = False) -> str | None:
    obj = named_object(question)
    if obj is not None:
        if obj.colour is None or obj.unknown is not None:
            return None  # "is the cube moving?" with two cubes: the LM's to answer
        label = facts.label(obj.colour, obj.shape)
        moves = facts.moves_at(obj.colour, t_s)
        if still:
            return f"No, the {label} is moving." if moves else f"Yes, the {label} is still."
        if moves:
            return f"Yes, the {label} is moving."
        return f"No, the {label} is not moving."
    movers = [facts.label(c) for c in facts.seen() if facts.moves_at(c, t_s)]
    if still and _SOME.search(question.lower()):  # "is anything still?"
        still_ones = [facts.label(c) for c in facts.seen() if not facts.moves_at(c, t_s)]
        if still_ones:
            return f"Yes, {_listed(still_ones, 'still')}."
        return f"No, {_listed(movers, 'moving')}."
    if still:  # "is everything still?"
        if not movers:
            return "Yes, nothing is moving."
        return f"No, {_listed(movers, 'moving')}."
    if not movers:
        return "No, nothing is moving."
    return f"Yes, {_listed(movers, 'moving')}."


def with_heading(answer: str, heading: str) -> str:
    """`answer` ("At 7.9s, the red cube is at [...], heading toward +x.") with its direction
    words replaced by `heading`'s ("+y": "heading toward +y"; "none": "not moving"); an answer
    without them is returned as it is."""
    words = "not moving" if heading == "none" else f"heading toward {heading}"
    return _HEADING_WORDS.sub(words, answer)


def scene_answer(question: str, facts: SceneFacts) -> str | None:
    """The answer to `question` the inventory decides (see the module docstring), or None to
    let the LM answer."""
    question = normalise_question(question)
    declined = abstain_text(question, facts.present, facts.shape, facts.min_present)
    if declined is not None:
        return declined
    cannot = unsupported(question)
    if cannot is not None:
        return cannot
    when = asked_time(question)
    t_s = when.model_time(facts.t_end_s)
    if t_s is not None and not -WINDOW_SLACK_S <= t_s <= facts.t_end_s + WINDOW_SLACK_S:
        return window_text(facts.t_end_s)
    yes_no = is_yes_no_motion(question)
    if not facts.seen():
        obj = named_object(question)
        if obj is not None:
            return f"I do not see {obj.phrase()}."
        if yes_no:
            return "No, nothing is moving."
        if is_yes_no_still(question) and not _SOME.search(question.lower()):
            return "Yes, nothing is moving."
        if MOTION.search(question.lower()):
            return "No object moves."
        return "I do not recognise any known objects."
    if yes_no:
        return _motion_answer(question, facts, t_s)
    if is_yes_no_still(question):  # being still is a state: with no time named, now
        return _motion_answer(question, facts, facts.t_end_s if t_s is None else t_s,
                              still=True)
    if t_s is not None and asks_movers_at_a_time(question):
        return _movers_answer(facts, t_s)
    if COLOUR_ASKED.search(question.lower()):
        return _colour_answer(question, facts)
    shape = counted_shape(question)
    if shape is not None:
        n = sum(facts.likeliest_shape(c) == shape for c in facts.seen())
        return f"There is 1 {shape}." if n == 1 else f"There are {n} {PLURAL[shape]}."
    kind = count_kind(question)
    if kind is None:
        return None
    n = sum(kind == "all" or facts.moves_at(c, None) for c in facts.seen())
    if kind == "moving":
        return f"{n} object{' is' if n == 1 else 's are'} moving."
    return f"There {'is' if n == 1 else 'are'} {n} object{'' if n == 1 else 's'}."
