"""4D instruction data from synthetic scenes: our stand-in for the 4D part of Chat4D.

Each `InstructionSample` is one question about a time window of a scene, with the answer both as
final text and as a template whose `<box>` / `<time>` slots carry the exact ground truth, so the
spatial (SAcc) and temporal (TAcc) metrics compare numbers, not strings.

Conventions (the model, the parser and the metrics rely on them):
- Times in questions and answers are model time: seconds since the window start, one decimal
  (`2.5`), followed by the unit `s` ("At 2.5s, ..."). Asked times lie on a 0.1 s grid, which is the
  frame grid of the default 10 fps scenes.
- Boxes are world-frame `box6 = [cx, cy, cz, sx, sy, sz]`, written `[1.20, -0.40, 0.25, 0.30,
  0.30, 0.30]` (two decimals).
- Grounded sentences read "At <time>s, the red cube is at <box>." (see ARCHITECTURE.md).
- Directions are world-axis words: "+x", "-x", "+y", "-y" ("heading toward +x"). With REP 103
  world frames +x is forward and +y is left; we name the axis, not the body direction, because the
  camera moves. A heading is only asked about when one axis clearly dominates the velocity
  (|major| >= 1.5 |minor|); otherwise the direction would be a matter of taste.
- "Moving" for a window means: in a motion segment at some time inside the window.
- Splits are by scene seed (`split_of`): sha256 of the decimal seed, modulo 100: 0..79 train,
  80..89 val, 90..99 test. Disjoint by construction and stable across runs and machines.

The vocabulary is small and closed (`vocabulary()`); `tokenize` is the word/digit split it was
built with: words, single digits, single punctuation marks and the slot tokens.

Example:
    >>> from llava4d_ros.data.scene import make_scene
    >>> samples = samples_for_scene(make_scene(3))
    >>> samples[0].task in TASKS
    True
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from llava4d_ros.data.scene import ObjectSpec, SceneSpec
from llava4d_ros.data.vocabulary import (
    COLOURS,
    DIRECTIONS,
    OBJECT_WORDS,
    PLURAL,
    SHAPE_SYNONYMS,
    SHAPES,
    UNKNOWN_NOUNS_HELDOUT,
    UNKNOWN_NOUNS_TRAIN,
    number_word,
    object_words,
)

#: The template tasks (the shipped model's); `samples_for_scene` makes these by default.
TASKS: tuple[str, ...] = ("grounding", "when_start", "which_move", "heading", "count", "caption")
#: Questions whose honest answer is "no" or "I do not see it" (`samples_for_scene(honest=True)`):
#: a palette object the scene does not hold, a word for a thing the generator never makes, yes/no
#: motion now or at a time, a time outside the window.
HONEST_TASKS: tuple[str, ...] = ("absent", "unknown", "is_moving", "out_of_window")
ALL_TASKS: tuple[str, ...] = TASKS + HONEST_TASKS
SLOT_BOX = "<box>"
SLOT_TIME = "<time>"
SPLITS: tuple[str, ...] = ("train", "val", "test")
#: Question phrasings: the original templates, or the phrasing families of one side of the
#: family split (`FAMILY_SPLIT`): training sees "train" families only, so "heldout" measures how
#: well a model reads questions in words it never saw.
PHRASINGS: tuple[str, ...] = ("template", "train", "heldout")

_TIME_STEP_S = 0.1
_HEADING_DOMINANCE = 1.5

# Question templates; {obj} is "red cube", {t} a time like "2.5", {n} a whole number.
_Q_GROUND_AT = (
    "Where is the {obj} at {t}s?",
    "What is the position of the {obj} at {t}s?",
    "Locate the {obj} at {t}s.",
)
_Q_GROUND_AGO = (
    "Where was the {obj} {n} {seconds} ago?",
    "Locate the {obj} {n} {seconds} ago.",
)
_Q_GROUND_NOW = ("Where is the {obj} now?", "Locate the {obj} now.")
_Q_WHEN_START = (
    "When did the {obj} start moving?",
    "At what time did the {obj} begin to move?",
)
_Q_WHICH_MOVE = ("Which objects move?", "Which objects are moving?", "What is moving?")
_Q_HEADING_AT = (
    "Where is the {obj} heading at {t}s?",
    "In which direction is the {obj} moving at {t}s?",
)
_Q_HEADING_NOW = ("Where is the {obj} heading now?",)
_Q_COUNT_ALL = ("How many objects are there?", "How many objects are in the scene?")
_Q_COUNT_MOVING = ("How many objects are moving?", "How many objects move?")
_Q_COUNT_SHAPE = ("How many {shapes} are there?",)
_Q_CAPTION = ("Describe the scene at {t}s.", "Describe each object at {t}s.")
_Q_MOVING_ANY = ("Is anything moving {when}?",)  # {when}: "now" or "at 2.5s"
_Q_MOVING_OBJ = ("Is the {obj} moving {when}?",)

# Phrasing families: every family words every question kind its own way. Placeholders: {obj}
# ("red box": a colour and any word for the shape), {at} ("at 2.5 s", "at t=2.5", ...), {ago}
# ("3 seconds ago", "three s ago", ...), {now} ("now", "right now", ...), {when} ({now} or
# {at}), {objects} ("objects", "things", "items"), {shapes} ("boxes", "balls", ...).
_FAMILIES: dict[str, dict[str, tuple[str, ...]]] = {
    "plain": {
        "ground_at": ("where is the {obj} {at}?", "what is the position of the {obj} {at}?",
                      "where was the {obj} {at}?"),
        "ground_ago": ("where was the {obj} {ago}?", "what was the position of the {obj} {ago}?"),
        "ground_now": ("where is the {obj} {now}?", "where is the {obj}?"),
        "when_start": ("when did the {obj} start moving?", "when did the {obj} begin to move?"),
        "which_move": ("which {objects} are moving?", "which {objects} move?"),
        "heading_at": ("which way is the {obj} moving {at}?", "where is the {obj} going {at}?"),
        "heading_now": ("which way is the {obj} moving {now}?",),
        "count_all": ("how many {objects} are there?", "how many {objects} are in the room?"),
        "count_moving": ("how many {objects} are moving?",),
        "count_shape": ("how many {shapes} are there?",),
        "caption": ("describe the scene {at}.", "what does the scene look like {at}?"),
        "moving_any": ("is anything moving {when}?", "is any object moving {when}?"),
        "moving_obj": ("is the {obj} moving {when}?",),
    },
    "imperative": {
        "ground_at": ("tell me where the {obj} is {at}.", "show me the {obj} {at}.",
                      "find the {obj} {at}."),
        "ground_ago": ("tell me where the {obj} was {ago}.", "show me where the {obj} was {ago}."),
        "ground_now": ("find the {obj}.", "show me the {obj} {now}.",
                       "tell me where the {obj} is {now}."),
        "when_start": ("tell me when the {obj} started moving.",),
        "which_move": ("tell me which {objects} are moving.", "list the moving {objects}."),
        "heading_at": ("tell me which way the {obj} is heading {at}.",),
        "heading_now": ("tell me where the {obj} is heading {now}.",),
        "count_all": ("count the {objects}.", "tell me how many {objects} there are."),
        "count_moving": ("count the moving {objects}.", "tell me how many {objects} are moving."),
        "count_shape": ("count the {shapes}.",),
        "caption": ("describe every object {at}.", "tell me what is in the scene {at}."),
        "moving_any": ("tell me if anything is moving {when}.",),
        "moving_obj": ("tell me if the {obj} is moving {when}.",),
    },
    "casual": {
        "ground_at": ("where's the {obj} {at}?", "what's the position of the {obj} {at}?"),
        "ground_ago": ("where was the {obj} {ago}, then?", "and {ago}, where was the {obj}?"),
        "ground_now": ("where's the {obj} {now}?", "where's the {obj}?"),
        "when_start": ("when'd the {obj} start moving?", "what time did the {obj} start to move?"),
        "which_move": ("what's moving?", "what {objects} are moving?"),
        "heading_at": ("where's the {obj} heading {at}?",),
        "heading_now": ("where's the {obj} heading {now}?", "where's the {obj} going?"),
        "count_all": ("how many {objects} do you see?", "how many {objects} can you see?"),
        "count_moving": ("how many {objects} do you see moving?",),
        "count_shape": ("how many {shapes} do you see?",),
        "caption": ("what's in the scene {at}?",),
        "moving_any": ("anything moving {when}?", "is there something moving {when}?"),
        "moving_obj": ("is the {obj} moving {when} or not?",),
    },
    "polite": {
        "ground_at": ("could you tell me where the {obj} is {at}?",
                      "can you locate the {obj} {at}?"),
        "ground_ago": ("could you tell me where the {obj} was {ago}?",),
        "ground_now": ("can you find the {obj} {now}?", "could you show me where the {obj} is?"),
        "when_start": ("could you tell me when the {obj} started to move?",),
        "which_move": ("could you tell me which {objects} are moving?",),
        "heading_at": ("can you tell me which direction the {obj} is heading {at}?",),
        "heading_now": ("could you tell me which direction the {obj} is going {now}?",),
        "count_all": ("could you count the {objects} for me?",
                      "can you tell me how many {objects} there are?"),
        "count_moving": ("can you tell me how many {objects} are in motion?",),
        "count_shape": ("could you count the {shapes} for me?",),
        "caption": ("could you describe the scene {at}?",),
        "moving_any": ("can you see anything moving {when}?",),
        "moving_obj": ("could you tell me whether the {obj} is moving {when}?",),
    },
    "terse": {
        "ground_at": ("{obj} {at}?", "position of the {obj} {at}"),
        "ground_ago": ("{obj} position {ago}?",),
        "ground_now": ("{obj} location {now}?", "location of the {obj}?"),
        "when_start": ("{obj} start time?", "start of motion of the {obj}?"),
        "which_move": ("moving {objects}?", "{objects} in motion?"),
        "heading_at": ("{obj} direction {at}?",),
        "heading_now": ("{obj} direction {now}?",),
        "count_all": ("number of {objects}?", "{objects} count?"),
        "count_moving": ("number of moving {objects}?",),
        "count_shape": ("number of {shapes}?",),
        "caption": ("scene description {at}.", "summary of the scene {at}"),
        "moving_any": ("any motion {when}?", "motion {when}?"),
        "moving_obj": ("{obj} moving {when}?",),
    },
}
#: Which side of the phrasing split each family is on (no family on both).
FAMILY_SPLIT: dict[str, str] = {"plain": "train", "imperative": "train", "casual": "train",
                                "polite": "heldout", "terse": "heldout"}
_NOW_WORDS = ("now", "right now", "currently", "at the moment", "at present")

# Answer templates; `<time>` and `<box>` are slots, {Obj} is "The red cube" at a sentence start.
_A_AT = "At <time>s, the {obj} is at <box>."
_A_AGO = "At <time>s, the {obj} was at <box>."
_A_STARTED = "The {obj} started moving at <time>s."
_A_NEVER_MOVED = "The {obj} did not move."
_A_HEADING = "At <time>s, the {obj} is at <box>, heading toward {dir}."
_A_NOT_MOVING = "At <time>s, the {obj} is at <box>, not moving."
_A_CAPTION_MOVING = "At <time>s, the {obj} is at <box> and moving."
_A_CAPTION_STILL = "At <time>s, the {obj} is at <box> and still."
_A_NONE_MOVES = "No object moves."
_A_ONE_MOVES = "The {objs} moves."
_A_MANY_MOVE = "The {objs} move."
_A_COUNT_ALL = ("There is {n} object.", "There are {n} objects.")
_A_COUNT_MOVING = ("{n} object is moving.", "{n} objects are moving.")
_A_COUNT_SHAPE = ("There is {n} {shape}.", "There are {n} {shapes}.")
_A_NOT_SEEN = "I do not see {a_obj}."
_A_NOTHING_MOVES = "No, nothing is moving."
_A_SOMETHING_MOVES = ("Yes, the {objs} is moving.", "Yes, the {objs} are moving.")
_A_OBJ_MOVES = "Yes, the {obj} is moving."
_A_OBJ_STILL = "No, the {obj} is not moving."
_A_WINDOW = "I only see from <time>s to <time>s."

_TOKEN_RE = re.compile(r"<box>|<time>|[A-Za-z]+|\d|[^\sA-Za-z\d]")


def tokenize(text: str) -> list[str]:
    """Split text into vocabulary tokens: slot tokens, words, single digits, single symbols.

    >>> tokenize("At 2.5s, [-0.10]")
    ['At', '2', '.', '5', 's', ',', '[', '-', '0', '.', '1', '0', ']']
    """
    return _TOKEN_RE.findall(text)


def format_time(t_s: float) -> str:
    """Model time as written in text: one decimal, e.g. `2.5`."""
    return f"{round(float(t_s), 1) + 0.0:.1f}"  # + 0.0 turns -0.0 into 0.0


def format_box(box6: Sequence[float]) -> str:
    """`[x, y, z, sx, sy, sz]` with two decimals."""
    if len(box6) != 6:
        raise ValueError(f"a box6 has 6 numbers, got {len(box6)}")
    return "[" + ", ".join(f"{round(float(v), 2) + 0.0:.2f}" for v in box6) + "]"


def render_answer(answer_template: str, slots: Sequence[dict[str, Any]]) -> str:
    """Fill `<box>` / `<time>` slots of a template, in order, with the slots' values."""
    parts = re.split(r"(<box>|<time>)", answer_template)
    out: list[str] = []
    it = iter(slots)
    for part in parts:
        if part in (SLOT_BOX, SLOT_TIME):
            slot = next(it, None)
            if slot is None or slot["kind"] != part[1:-1]:
                raise ValueError(f"slot {slot!r} does not fit {part} in {answer_template!r}")
            out.append(
                format_box(slot["value"]) if part == SLOT_BOX else format_time(slot["value"])
            )
        else:
            out.append(part)
    if next(it, None) is not None:
        raise ValueError(f"more slots than placeholders in {answer_template!r}")
    return "".join(out)


@dataclass(frozen=True)
class InstructionSample:
    """One question/answer pair about the window [window_start_s, window_end_s] of a scene.

    `slots`: one dict per `<box>`/`<time>` in `answer_template`, in order, with keys `kind`
    ("box" | "time"), `object_id` (int, or -1 for none), `t_s` (model time, seconds since the
    window start) and `value` (box6 list for a box, model time float for a time).
    `categorical`: the short answer for exact-match metrics ("red cube and blue sphere", "3",
    "+x", "2.3", "none"; "absent" for "I do not see ...", "yes" / "no", "window"), or None for
    purely grounded answers.
    """

    scene_seed: int
    task: str
    question: str
    answer_template: str
    slots: tuple[dict[str, Any], ...]
    answer: str
    categorical: str | None = None
    window_start_s: float = 0.0
    window_end_s: float = 0.0
    object_ids: tuple[int, ...] = field(default=())
    phrasing: str = "template"  # "template" or the phrasing family the question came from

    def __post_init__(self) -> None:
        if self.task not in ALL_TASKS:
            raise ValueError(f"task {self.task!r} is not one of {ALL_TASKS}")
        if self.phrasing != "template" and self.phrasing not in FAMILY_SPLIT:
            raise ValueError(f"phrasing {self.phrasing!r} is neither 'template' nor a family")
        n_slots = self.answer_template.count(SLOT_BOX) + self.answer_template.count(SLOT_TIME)
        if n_slots != len(self.slots):
            raise ValueError(f"{n_slots} placeholders but {len(self.slots)} slots")
        for slot in self.slots:
            if slot.get("kind") not in ("box", "time") or {"object_id", "t_s", "value"} - set(
                slot
            ):
                raise ValueError(f"bad slot {slot!r}")
        if self.window_end_s < self.window_start_s:
            raise ValueError("window_end_s is before window_start_s")
        object.__setattr__(self, "slots", tuple(self.slots))

    @property
    def split(self) -> str:
        return split_of(self.scene_seed)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (lists for tuples)."""
        d = asdict(self)
        d["slots"] = [dict(s) for s in self.slots]
        d["object_ids"] = list(self.object_ids)
        return d


def split_of(seed: int) -> str:
    """ "train" | "val" | "test" for a scene seed: sha256 of its decimal string, mod 100,
    0..79 train, 80..89 val, 90..99 test."""
    bucket = int(hashlib.sha256(str(int(seed)).encode()).hexdigest(), 16) % 100
    return "train" if bucket < 80 else ("val" if bucket < 90 else "test")


def seeds_for_split(split: str, n: int, start: int = 0) -> list[int]:
    """The first `n` seeds >= `start` that fall in `split`."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    out: list[int] = []
    seed = start
    while len(out) < n:
        if split_of(seed) == split:
            out.append(seed)
        seed += 1
    return out


def heading_word(velocity: Sequence[float]) -> str | None:
    """ "+x" | "-x" | "+y" | "-y" for a world velocity (3,), None when still or ambiguous."""
    vx, vy = float(velocity[0]), float(velocity[1])
    ax, ay = abs(vx), abs(vy)
    if max(ax, ay) < 1e-9:
        return None
    if ax >= _HEADING_DOMINANCE * ay:
        return "+x" if vx > 0 else "-x"
    if ay >= _HEADING_DOMINANCE * ax:
        return "+y" if vy > 0 else "-y"
    return None


def _moves_in(obj: ObjectSpec, t0: float, t1: float) -> bool:
    return any(a < t1 and b > t0 for a, b in obj.moving_segments)


def _join_labels(objs: Sequence[ObjectSpec]) -> str:
    """ "red cube", "red cube and the blue sphere", "red cube, the blue sphere and the ..."."""
    labels = [o.label for o in objs]
    if len(labels) == 1:
        return labels[0]
    return ", the ".join(labels[:-1]) + " and the " + labels[-1]


def _with_article(words: str) -> str:
    return ("an " if words[0] in "aeiou" else "a ") + words


def _seconds(n: float, unit: str) -> str:
    """`n` seconds in one of the ways people write it ("2.5s", "3 seconds", "t=2.5")."""
    whole = float(n).is_integer()
    num = str(int(n)) if whole else format_time(n)
    if unit == "word" and whole:
        return f"{number_word(int(n))} second" + ("" if int(n) == 1 else "s")
    if unit == "t=":
        return f"t={format_time(n)}"
    if unit == "time":
        return f"time {num}"
    if unit == "sec":
        return f"{num} sec"
    if unit == "seconds":
        return f"{num} second" + ("" if n == 1 else "s")
    return f"{format_time(n)}s" if unit == "s" else f"{num} s"


class _Phraser:
    """Words one question in the phrasing the samples ask for: the template as drawn
    (`phrasing="template"`) or a family of the chosen side of the family split, with the
    fillers people vary (shape synonyms, time units, number words, "now" words, case).
    Draws from its own rng, so template samples are the same whatever the phrasing."""

    def __init__(self, phrasing: str, rng: np.random.Generator) -> None:
        if phrasing not in PHRASINGS and phrasing not in FAMILY_SPLIT:
            raise ValueError(f"phrasing must be one of {PHRASINGS} or a family in "
                             f"{sorted(FAMILY_SPLIT)}, got {phrasing!r}")
        self.phrasing, self.rng = phrasing, rng
        self.families = ([phrasing] if phrasing in FAMILY_SPLIT else
                         [f for f, side in FAMILY_SPLIT.items() if side == phrasing])
        self.family = "template"  # of the last question

    def pick(self, options: Sequence[str]) -> str:
        return options[int(self.rng.integers(len(options)))]

    def obj(self, colour: str, shape: str) -> str:
        return f"{colour} {self.pick(SHAPE_SYNONYMS[shape])[0]}"

    def at(self, t: float) -> str:
        return "at " + _seconds(t, self.pick(("s", "s", "_s", "seconds", "sec", "t=", "time",
                                              "word")))

    def ago(self, n: int) -> str:
        return _seconds(n, self.pick(("_s", "seconds", "seconds", "sec", "word"))) + " ago"

    def ask(self, kind: str, template_q: str, *, obj: tuple[str, str] | str | None = None,
            t: float | None = None, n: int | None = None, shape: str | None = None) -> str:
        """The question of `kind`; `template_q` in template phrasing. `obj`: (colour, shape), or
        a bare noun for a thing the generator never makes; `t` model time for {at}/{when} (None:
        "now"), `n` whole seconds for {ago}, `shape` for {shapes}."""
        if self.phrasing == "template":
            self.family = "template"
            return template_q
        self.family = self.pick(self.families)
        q = self.pick(_FAMILIES[self.family][kind])
        now = self.pick(_NOW_WORDS)
        desc = obj if isinstance(obj, str) else (self.obj(*obj) if obj else "")
        fill = {
            "obj": desc, "now": now, "objects": self.pick(OBJECT_WORDS),
            "at": self.at(t) if t is not None else "", "ago": self.ago(n) if n else "",
            "when": now if t is None else self.at(t),
            "shapes": self.pick(SHAPE_SYNONYMS[shape])[1] if shape else "",
        }
        q = q.format(**fill)
        case = self.rng.random()
        if case < 0.15:
            return q.lower()
        if case < 0.2:
            return q.upper()
        return q[0].upper() + q[1:]


class _Builder:
    """Collects samples for one scene window; holds the rng and the window arithmetic."""

    def __init__(self, scene: SceneSpec, t0: float, t1: float, rng: np.random.Generator,
                 phraser: _Phraser | None = None) -> None:
        self.scene, self.t0, self.t1, self.rng = scene, t0, t1, rng
        self.phraser = phraser or _Phraser("template", rng)
        self.samples: list[InstructionSample] = []

    def pick(self, options: Sequence[str]) -> str:
        return options[int(self.rng.integers(len(options)))]

    def model_time(self, t_scene: float) -> float:
        return round(t_scene - self.t0, 1)

    def random_time(self) -> float:
        """A model time on the 0.1 s grid inside the window."""
        n = int(np.floor((self.t1 - self.t0) / _TIME_STEP_S + 1e-6))
        return round(int(self.rng.integers(n + 1)) * _TIME_STEP_S, 1)

    def box_slot(self, obj: ObjectSpec, t_model: float) -> dict[str, Any]:
        box = [round(v, 6) for v in obj.box_at(self.t0 + t_model)]
        return {"kind": "box", "object_id": obj.object_id, "t_s": t_model, "value": box}

    @staticmethod
    def time_slot(obj_id: int, t_model: float) -> dict[str, Any]:
        return {"kind": "time", "object_id": obj_id, "t_s": t_model, "value": t_model}

    def add(
        self,
        task: str,
        question: str,
        template: str,
        slots: list[dict[str, Any]],
        categorical: str | None,
        object_ids: Iterable[int],
    ) -> None:
        template = template[0].upper() + template[1:]
        self.samples.append(
            InstructionSample(
                scene_seed=self.scene.seed,
                task=task,
                question=question,
                answer_template=template,
                slots=tuple(slots),
                answer=render_answer(template, slots),
                categorical=categorical,
                window_start_s=self.t0,
                window_end_s=self.t1,
                object_ids=tuple(object_ids),
                phrasing=self.phraser.family,
            )
        )

    # --------------------------------------------------------------------- tasks

    def grounding(self, obj: ObjectSpec, mode: str) -> None:
        t_end = self.model_time(self.t1)
        if mode == "ago" and t_end < 1.0:
            mode = "at"  # a window shorter than a second has no "1 second ago"
        if mode == "ago":
            n = int(self.rng.integers(1, max(1, int(np.floor(t_end))) + 1))
            t = round(t_end - n, 1)
            seconds = "second" if n == 1 else "seconds"
            q = self.pick(_Q_GROUND_AGO).format(obj=obj.label, n=n, seconds=seconds)
            q = self.phraser.ask("ground_ago", q, obj=(obj.colour, obj.shape), n=n)
            template = _A_AGO
        elif mode == "now":
            t = t_end
            q = self.pick(_Q_GROUND_NOW).format(obj=obj.label)
            q = self.phraser.ask("ground_now", q, obj=(obj.colour, obj.shape))
            template = _A_AT
        else:
            t = self.random_time()
            q = self.pick(_Q_GROUND_AT).format(obj=obj.label, t=format_time(t))
            q = self.phraser.ask("ground_at", q, obj=(obj.colour, obj.shape), t=t)
            template = _A_AT
        slots = [self.time_slot(obj.object_id, t), self.box_slot(obj, t)]
        self.add("grounding", q, template.format(obj=obj.label), slots, None, [obj.object_id])

    def when_start(self, obj: ObjectSpec) -> None:
        q = self.pick(_Q_WHEN_START).format(obj=obj.label)
        q = self.phraser.ask("when_start", q, obj=(obj.colour, obj.shape))
        start = obj.start_moving_s
        if start is None:
            self.add(
                "when_start", q, _A_NEVER_MOVED.format(obj=obj.label), [], "none", [obj.object_id]
            )
            return
        t = self.model_time(start)
        self.add(
            "when_start",
            q,
            _A_STARTED.format(obj=obj.label),
            [self.time_slot(obj.object_id, t)],
            format_time(t),
            [obj.object_id],
        )

    def which_move(self) -> None:
        movers = [o for o in self.scene.objects if _moves_in(o, self.t0, self.t1)]
        q = self.phraser.ask("which_move", self.pick(_Q_WHICH_MOVE))
        if not movers:
            self.add("which_move", q, _A_NONE_MOVES, [], "none", [])
            return
        joined = _join_labels(movers)
        template = (_A_ONE_MOVES if len(movers) == 1 else _A_MANY_MOVE).format(objs=joined)
        categorical = " and ".join(o.label for o in movers)
        self.add("which_move", q, template, [], categorical, [o.object_id for o in movers])

    def moving_time(self, obj: ObjectSpec) -> float | None:
        """A model time on the 0.1 s grid inside the window at which `obj` moves along a clear
        heading, if any."""
        grid = np.round(np.arange(0.0, self.t1 - self.t0 + 1e-6, _TIME_STEP_S), 1)
        moving = [
            float(t) for t in grid if heading_word(obj.velocity_at(self.t0 + float(t))) is not None
        ]
        return moving[int(self.rng.integers(len(moving)))] if moving else None

    def heading(self, obj: ObjectSpec, when: str) -> bool:
        """Adds a heading sample unless the direction at the chosen time is ambiguous.

        `when`: "now" (window end), "moving" (a time at which `obj` moves) or "any".
        """
        now = when == "now"
        t = self.moving_time(obj) if when == "moving" else None
        if t is None:
            t = self.model_time(self.t1) if now else self.random_time()
        v = obj.velocity_at(self.t0 + t)
        word = heading_word(v)
        moving = bool(np.any(v != 0.0))
        if moving and word is None:
            return False
        if now:
            q = self.pick(_Q_HEADING_NOW).format(obj=obj.label)
            q = self.phraser.ask("heading_now", q, obj=(obj.colour, obj.shape))
        else:
            q = self.pick(_Q_HEADING_AT).format(obj=obj.label, t=format_time(t))
            q = self.phraser.ask("heading_at", q, obj=(obj.colour, obj.shape), t=t)
        template = (_A_HEADING if moving else _A_NOT_MOVING).format(obj=obj.label, dir=word)
        slots = [self.time_slot(obj.object_id, t), self.box_slot(obj, t)]
        self.add("heading", q, template, slots, word if moving else "none", [obj.object_id])
        return True

    def count(self, kind: str) -> None:
        objs = self.scene.objects
        if kind == "all":
            n = len(objs)
            q = self.phraser.ask("count_all", self.pick(_Q_COUNT_ALL))
            a = _A_COUNT_ALL[n != 1].format(n=n)
            ids = [o.object_id for o in objs]
        elif kind == "moving":
            movers = [o for o in objs if _moves_in(o, self.t0, self.t1)]
            n = len(movers)
            q = self.phraser.ask("count_moving", self.pick(_Q_COUNT_MOVING))
            a = _A_COUNT_MOVING[n != 1].format(n=n)
            ids = [o.object_id for o in movers]
        else:
            shaped = [o for o in objs if o.shape == kind]
            n = len(shaped)
            q = self.pick(_Q_COUNT_SHAPE).format(shapes=PLURAL[kind])
            q = self.phraser.ask("count_shape", q, shape=kind)
            a = _A_COUNT_SHAPE[n != 1].format(n=n, shape=kind, shapes=PLURAL[kind])
            ids = [o.object_id for o in shaped]
        self.add("count", q, a, [], str(n), ids)

    def caption(self) -> None:
        t = self.random_time()
        q = self.phraser.ask("caption", self.pick(_Q_CAPTION).format(t=format_time(t)), t=t)
        sentences, slots = [], []
        for obj in self.scene.objects:
            moving = obj.is_moving_at(self.t0 + t)
            sentence = (_A_CAPTION_MOVING if moving else _A_CAPTION_STILL).format(obj=obj.label)
            sentences.append(sentence)
            slots += [self.time_slot(obj.object_id, t), self.box_slot(obj, t)]
        ids = [o.object_id for o in self.scene.objects]
        self.add("caption", q, " ".join(sentences), slots, None, ids)

    # --------------------------------------------------------- honest answers ("no", "not seen")

    def _about(self, kind: str, words: str, obj: tuple[str, str] | str) -> str:
        """A question of `kind` about `words` ("green sphere", "mug") in the chosen phrasing."""
        if kind == "ground_at":
            t = self.random_time()
            q = self.pick(_Q_GROUND_AT).format(obj=words, t=format_time(t))
            return self.phraser.ask(kind, q, obj=obj, t=t)
        templates = {"ground_now": _Q_GROUND_NOW, "when_start": _Q_WHEN_START,
                     "heading_now": _Q_HEADING_NOW, "moving_obj": _Q_MOVING_OBJ}[kind]
        return self.phraser.ask(kind, self.pick(templates).format(obj=words, when="now"),
                                obj=obj)

    def absent(self, kind: str) -> None:
        """About a palette object the scene does not hold: "I do not see a green sphere."."""
        held = {(o.colour, o.shape) for o in self.scene.objects}
        options = [(c, sh) for c in COLOURS for sh in SHAPES if (c, sh) not in held]
        colour, shape = options[int(self.rng.integers(len(options)))]
        label = f"{colour} {shape}"
        q = self._about(kind, label, (colour, shape))
        self.add("absent", q, _A_NOT_SEEN.format(a_obj=_with_article(label)), [], "absent", [])

    def unknown(self, kind: str, nouns: Sequence[str]) -> None:
        """About a thing the generator never makes: "Where is the mug?" "I do not see a mug."."""
        noun = self.pick(nouns)
        q = self._about(kind, noun, noun)
        self.add("unknown", q, _A_NOT_SEEN.format(a_obj=_with_article(noun)), [], "absent", [])

    def is_moving(self, about_one: bool, at_time: bool) -> None:
        """Yes/no motion of anything or of one object, now (window end) or at a time."""
        t = self.random_time() if at_time else self.model_time(self.t1)
        when = f"at {format_time(t)}s" if at_time else "now"
        movers = [o for o in self.scene.objects if o.is_moving_at(self.t0 + t)]
        if about_one:
            pool = movers if movers and self.rng.random() < 0.5 else list(self.scene.objects)
            obj = pool[int(self.rng.integers(len(pool)))]
            q = self.phraser.ask("moving_obj", self.pick(_Q_MOVING_OBJ).format(
                obj=obj.label, when=when), obj=(obj.colour, obj.shape),
                t=t if at_time else None)
            yes = obj in movers
            a = (_A_OBJ_MOVES if yes else _A_OBJ_STILL).format(obj=obj.label)
            self.add("is_moving", q, a, [], "yes" if yes else "no", [obj.object_id])
            return
        q = self.phraser.ask("moving_any", self.pick(_Q_MOVING_ANY).format(when=when),
                             t=t if at_time else None)
        if not movers:
            self.add("is_moving", q, _A_NOTHING_MOVES, [], "no", [])
            return
        a = _A_SOMETHING_MOVES[len(movers) > 1].format(objs=_join_labels(movers))
        self.add("is_moving", q, a, [], "yes", [o.object_id for o in movers])

    def out_of_window(self) -> None:
        """A time after the window's end or before its start: the answer names the window."""
        obj = self.scene.objects[int(self.rng.integers(len(self.scene.objects)))]
        t_end = self.model_time(self.t1)
        if self.rng.random() < 0.5:
            t = round(t_end + int(self.rng.integers(1, 11)) + float(self.rng.choice([0, 0.5])), 1)
            q = self.pick(_Q_GROUND_AT).format(obj=obj.label, t=format_time(t))
            q = self.phraser.ask("ground_at", q, obj=(obj.colour, obj.shape), t=t)
        else:
            n = int(np.floor(t_end)) + int(self.rng.integers(2, 11))
            q = self.pick(_Q_GROUND_AGO).format(obj=obj.label, n=n, seconds="seconds")
            q = self.phraser.ask("ground_ago", q, obj=(obj.colour, obj.shape), n=n)
        slots = [self.time_slot(-1, 0.0), self.time_slot(-1, t_end)]
        self.add("out_of_window", q, _A_WINDOW, slots, "window", [])


def samples_for_scene(
    scene: SceneSpec,
    *,
    window_start_s: float = 0.0,
    window_end_s: float | None = None,
    n_grounding: int = 6,
    n_heading: int = 3,
    n_caption: int = 1,
    tasks: Sequence[str] | None = None,
    seed: int | None = None,
    phrasing: str = "template",
    honest: bool = False,
) -> list[InstructionSample]:
    """Instruction samples for the window [window_start_s, window_end_s] (scene seconds).

    `window_end_s` defaults to the last frame time. Per window: `n_grounding` grounding samples
    (at a time, "n seconds ago", "now"), one when_start per object, one which_move, up to
    `n_heading` heading samples, the count questions (all, moving, one shape) and `n_caption`
    captions; with `honest`, also two questions about absent palette objects, two about unknown
    things, three yes/no motion questions and one about a time outside the window. `tasks`
    (default: those) selects among them. `phrasing` (`PHRASINGS` or one family) words the
    questions; answers are the same whatever the phrasing, and so are the template samples:
    the phrasing and honest questions draw from their own rng. Deterministic for (scene,
    window, `seed`, phrasing); `seed` defaults to the scene seed.
    """
    if tasks is None:
        tasks = ALL_TASKS if honest else TASKS
    unknown = set(tasks) - set(ALL_TASKS)
    if unknown:
        raise ValueError(f"unknown tasks {sorted(unknown)}; known: {ALL_TASKS}")
    t0 = float(window_start_s)
    t1 = float(scene.frame_times_s[-1]) if window_end_s is None else float(window_end_s)
    if t1 < t0:
        raise ValueError(f"window_end_s {t1} is before window_start_s {t0}")
    salt = scene.seed if seed is None else seed
    rng = np.random.default_rng(np.random.SeedSequence([int(salt), 0x1A57, round(t0 * 1000)]))
    # the honest questions and the wording draw from rngs of their own, so the template
    # samples are the same with or without them, and the answers whatever the phrasing
    side = np.random.default_rng(np.random.SeedSequence([int(salt), 0x1A58, round(t0 * 1000)]))
    words = np.random.default_rng(np.random.SeedSequence([int(salt), 0x1A59, round(t0 * 1000)]))
    b = _Builder(scene, t0, t1, rng, _Phraser(phrasing, words))
    objs = scene.objects
    if not objs:
        return []

    if "grounding" in tasks:
        for k in range(n_grounding):
            mode = ("at", "at", "ago", "now")[k % 4]
            b.grounding(objs[int(rng.integers(len(objs)))], mode)
    if "when_start" in tasks:
        for obj in objs:
            if obj.start_moving_s is None or t0 <= obj.start_moving_s <= t1:
                b.when_start(obj)
    if "which_move" in tasks:
        b.which_move()
    if "heading" in tasks:
        added, tries = 0, 0
        movers = [o for o in objs if _moves_in(o, t0, t1)] or list(objs)
        while added < n_heading and tries < 10 * n_heading:
            tries += 1
            # Mostly about movers while they move, so "none" is about a quarter of the answers.
            pool = movers if rng.random() < 0.9 else list(objs)
            when = str(rng.choice(["moving", "any", "now"], p=[0.85, 0.1, 0.05]))
            added += b.heading(pool[int(rng.integers(len(pool)))], when)
    if "count" in tasks:
        b.count("all")
        b.count("moving")
        b.count(str(rng.choice(SHAPES)))
    if "caption" in tasks:
        for _ in range(n_caption):
            b.caption()
    h = _Builder(scene, t0, t1, side, b.phraser)
    kinds = ("ground_now", "ground_at", "when_start", "heading_now", "moving_obj")
    if "absent" in tasks:
        for _ in range(2):
            h.absent(h.pick(kinds))
    if "unknown" in tasks:
        nouns = UNKNOWN_NOUNS_HELDOUT if phrasing == "heldout" or FAMILY_SPLIT.get(
            phrasing) == "heldout" else UNKNOWN_NOUNS_TRAIN
        for _ in range(2):
            h.unknown(h.pick(kinds), nouns)
    if "is_moving" in tasks:
        h.is_moving(about_one=False, at_time=False)
        h.is_moving(about_one=False, at_time=True)
        h.is_moving(about_one=True, at_time=bool(side.random() < 0.5))
    if "out_of_window" in tasks:
        h.out_of_window()
    return b.samples + h.samples


def iter_samples(
    seeds: Iterable[int], make_scene_kwargs: dict[str, Any] | None = None, **kwargs: Any
) -> Iterator[InstructionSample]:
    """Samples for `make_scene(seed, **make_scene_kwargs)` of every seed, in order."""
    from llava4d_ros.data.scene import make_scene

    for seed in seeds:
        yield from samples_for_scene(make_scene(seed, **(make_scene_kwargs or {})), **kwargs)


def is_template_question(question: str) -> bool:
    """Whether `question` is one of the question templates (the task templates and the yes/no
    motion ones) with any object, time, count or shape filled in: "Where is the red cube at
    2.5s?" is, "where's the red box?" is not."""
    return _TEMPLATE_QUESTION.fullmatch(question.strip()) is not None


def _template_question_pattern() -> re.Pattern[str]:
    fillers = {"obj": r"[a-z]+ [a-z]+", "t": r"\d+\.\d", "n": r"\d+", "seconds": r"seconds?",
               "shapes": "|".join(PLURAL.values()), "when": r"now|at \d+\.\ds"}
    alternatives = []
    for q in (*_Q_GROUND_AT, *_Q_GROUND_AGO, *_Q_GROUND_NOW, *_Q_WHEN_START, *_Q_WHICH_MOVE,
              *_Q_HEADING_AT, *_Q_HEADING_NOW, *_Q_COUNT_ALL, *_Q_COUNT_MOVING,
              *_Q_COUNT_SHAPE, *_Q_CAPTION, *_Q_MOVING_ANY, *_Q_MOVING_OBJ):
        parts = re.split(r"\{(\w+)\}", q)  # text, field, text, field, ..., text
        alternatives.append("".join(re.escape(p) if i % 2 == 0 else f"(?:{fillers[p]})"
                                    for i, p in enumerate(parts)))
    return re.compile("|".join(alternatives))


_TEMPLATE_QUESTION = _template_question_pattern()


def _template_texts() -> Iterator[str]:
    """Every template with every closed-class filler, for the vocabulary."""
    labels = [f"{c} {s}" for c in COLOURS for s in SHAPES]
    qs = (
        _Q_GROUND_AT
        + _Q_GROUND_AGO
        + _Q_GROUND_NOW
        + _Q_WHEN_START
        + _Q_WHICH_MOVE
        + _Q_HEADING_AT
        + _Q_HEADING_NOW
        + _Q_COUNT_ALL
        + _Q_COUNT_MOVING
        + _Q_COUNT_SHAPE
        + _Q_CAPTION
    )
    answers = (
        _A_AT, _A_AGO, _A_STARTED, _A_NEVER_MOVED, _A_HEADING, _A_NOT_MOVING, _A_CAPTION_MOVING,
        _A_CAPTION_STILL, _A_NONE_MOVES, _A_ONE_MOVES, _A_MANY_MOVE,
        *_A_COUNT_ALL, *_A_COUNT_MOVING, *_A_COUNT_SHAPE,
    )  # fmt: skip
    for text in qs + answers:
        for label in labels:
            for shape in SHAPES:
                yield text.format(
                    obj=label, objs=f"{label}, the {label} and the {label}", t="0.0", n=0,
                    seconds="second seconds", dir=" ".join(DIRECTIONS), shape=shape,
                    shapes=PLURAL[shape],
                )  # fmt: skip


def _extended_texts() -> Iterator[str]:
    """The honest questions and answers and every phrasing family's words, with fillers."""
    yield from (*_Q_MOVING_ANY, *_Q_MOVING_OBJ, _A_NOT_SEEN, _A_NOTHING_MOVES,
                *_A_SOMETHING_MOVES, _A_OBJ_MOVES, _A_OBJ_STILL, _A_WINDOW, "a an")
    for family in _FAMILIES.values():
        for templates in family.values():
            yield from templates
    yield from _NOW_WORDS
    yield "at second seconds sec s t = time ago"
    yield " ".join(object_words())


def vocabulary(extended: bool = False) -> list[str]:
    """Every token `tokenize` can produce from generated questions and answers, sorted.

    Covers the templates (as written, plus lower case), palette colours, shapes and plurals,
    direction words, digits 0..9, ".", "-", "+", punctuation and the slot tokens; `extended`:
    also the honest questions' and answers' words and every phrasing family's (upper and lower
    case), for a model trained on those.
    """
    vocab: set[str] = {SLOT_BOX, SLOT_TIME, *"0123456789", ".", "-", "+", ",", "[", "]"}
    for text in _template_texts():
        for tok in tokenize(text):
            vocab.update((tok, tok.lower()))
    if extended:
        for text in _extended_texts():
            for tok in tokenize(re.sub(r"\{\w+\}", " ", text)):
                vocab.update((tok, tok.lower(), tok.upper(), tok.capitalize()))
    vocab.update(COLOURS)
    vocab.update(SHAPES)
    vocab.update(PLURAL.values())
    return sorted(vocab)
