"""What a question asks, read from its key words, and the same question in the task template.

The default's LM is 0.9 M parameters trained on the task templates only ("Where is the red cube
at 2.5s?"): it answers a template far better than the same question in other words, and so
does SmolLM2 fine-tuned on the task's questions (docs/RESULTS.md). So for a model with the task's
vocabulary (`LLaVA4D.reads_templates_best`) the question is read here first: its kind (where,
when it started, which way, how many, which move, is it moving, describe), the object it names
and the time it asks about, and the model is asked the template question with those. A question
this cannot read, or one that is a template already, goes on as written (in the training
notation, `answers/normalise.py`).

The reading is by key words, in this order; the first that applies wins:
1. "how many" / "count" / "number of": of one shape when a shape word is there ("how many
   balls"), of moving objects when motion is named, else of all objects (no template counts
   one colour, or the moving objects of one shape: those go on as written);
2. a yes/no question about motion (`scene_answers.is_yes_no_motion`), or a bare "motion now?":
   is that object / anything moving; "is the red cube stationary / still / at rest?" is asked as
   "Is the red cube still now?" (no template asks it: `scene_answers` answers it);
3. an object and "start" / "begin" (or "when" with motion): when it started moving;
4. an object and "heading" / "direction" / "which way" / "going" / "moving to": which way it
   moves;
5. "describe" / "summary" / "look like" / "tell me about", or "in the scene" / "what (objects)
   do you see" / "list the objects" without motion: describe the scene at the time named, or
   now;
6. motion and no object ("what is moving", "list the moving things"): which objects move (with
   a time, "what is moving at 3 s?", no template asks it: "Which objects are moving at 3.0s?",
   which `scene_answers` answers from the inventory);
7. an object ("where ...", "find ...", "show me ...", "red box at 3 s?"): where it is.
Before these: a question no template asks and `scene_answers` answers as written (what colour
the ball is; how fast, how far apart, when something stopped: `scene_answers.unsupported`), and
"has the red cube stopped?", asked as "Is the red cube still now?".
The time is the question's own ("at 2.5s", "3 seconds ago", "now"; no time: now). Objects
and times are read as `abstention.named_object` and `scene_answers.asked_time` read them, so a
mug stays a mug (and is declined) and a time outside the window is still refused.

    >>> canonical_question("Could you tell me where the red box is at t=2.5?")
    'Where is the red cube at 2.5s?'
    >>> canonical_question("count the balls")
    'How many spheres are there?'
    >>> canonical_question("what time is it")
    'What time is it'
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from llava4d_ros.answers.abstention import NamedObject, named_object
from llava4d_ros.answers.normalise import normalise_question
from llava4d_ros.answers.scene_answers import (
    COLOUR,
    COLOUR_ASKED,
    COUNT,
    MOTION,
    WHEN,
    AskedTime,
    asked_time,
    is_yes_no_motion,
    is_yes_no_still,
    shape_asked,
    unsupported,
)
from llava4d_ros.data.instructions import is_template_question
from llava4d_ros.data.vocabulary import PLURAL

KINDS: tuple[str, ...] = ("count_all", "count_moving", "count_shape", "moving_any",
                          "moving_obj", "still_obj", "when_start", "heading", "caption",
                          "which_move", "ground")

_START = re.compile(r"\b(start|starts|started|starting|begin|begins|began|beginning|onset)\b")
_NEGATED = re.compile(r"\b(not|never|no longer)\b")
_HEADING = re.compile(r"\b(heading|headed|direction|which way|going|toward|towards|moving to|"
                      r"travelling to|traveling to)\b")
_DESCRIBE = re.compile(r"\b(describe|description|summary|summarise|summarize|overview|look like|"
                       r"looks like|tell me about)\b")
_SCENE = re.compile(r"\b(in the scene|in the room|what (objects |things )?(do|can) you see|"
                    r"what is there|what objects are there|(list|name) (all )?(the )?(objects|"
                    r"things))\b")
_WH = re.compile(r"\b(what|which|where|when|how|who|list|count|number)\b")
_GENERIC = re.compile(r"\b(objects|object|anything|something|everything|all)\b")


@dataclass(frozen=True)
class Intent:
    """A question's `kind` (`KINDS`), its object (None for a question about the scene), the time
    it asks about, and for `count_shape` the shape."""

    kind: str
    obj: NamedObject | None
    when: AskedTime
    shape: str | None = None

    def object_words(self) -> str:
        """'red cube', 'mug', 'red mug', 'cube'."""
        o = self.obj
        return " ".join(w for w in (o.colour, o.shape or o.unknown) if w) if o else ""

    def time_words(self) -> str:
        """'at 2.5s', '3 seconds ago', 'now'; with no time named, '' ("did it move?" asks about
        the whole window)."""
        if self.when.kind == "at":
            return f"at {self.when.seconds:.1f}s"
        if self.when.kind == "ago":
            n = self.when.seconds
            n_text = str(int(n)) if float(n).is_integer() else f"{n:.1f}"
            return f"{n_text} second{'' if n == 1 else 's'} ago"
        return "now" if self.when.kind == "now" else ""

    def template(self) -> str:
        """The question in the task templates' words."""
        obj = self.object_words()
        when = self.time_words() or "now"  # where something is, with no time: now
        if self.kind == "count_all":
            return "How many objects are there?"
        if self.kind == "count_moving":
            return "How many objects are moving?"
        if self.kind == "count_shape":
            return f"How many {PLURAL[self.shape]} are there?"
        if self.kind == "still_obj":  # no template: the inventory answers
            return f"Is the {obj} still {self.time_words()}?"
        if self.kind in ("moving_any", "moving_obj"):
            about = "anything" if self.kind == "moving_any" else f"the {obj}"
            return " ".join(("Is", about, "moving", self.time_words())).rstrip() + "?"
        if self.kind == "when_start":
            return f"When did the {obj} start moving?"
        if self.kind == "which_move":  # with a time: no template, the inventory answers
            at = self.time_words()
            return f"Which objects are moving {at}?" if at else "Which objects move?"
        if self.kind == "heading":
            return f"Where is the {obj} heading {'now' if when.endswith('ago') else when}?"
        if self.kind == "caption":  # no time, or now: the LM describes the newest moment
            at = f" {when}" if self.when.kind == "at" else ""
            return f"Describe the scene{at}."
        verb = "was" if self.when.kind == "ago" else "is"
        return f"Where {verb} the {obj} {when}?"


def read_intent(question: str) -> Intent | None:
    """What `question` asks (see the module docstring), or None when its key words say
    nothing this reads."""
    q = normalise_question(question).lower()
    obj = named_object(q)
    if obj is not None and obj.colour is None and obj.shape is None and obj.unknown is None:
        obj = None
    when = asked_time(q)
    motion = MOTION.search(q) is not None
    if unsupported(q) is not None or COLOUR_ASKED.search(q):
        return None  # no template asks these: `scene_answers` answers them as written
    if is_yes_no_still(q):
        # being still is a state: with no time named it is asked about now; "is everything
        # still?" has no template either
        if obj is None:
            return None
        return Intent("still_obj", obj, AskedTime("now") if when.kind == "window" else when)
    if COUNT.search(q):
        if COLOUR.search(q):
            return None  # "how many red cubes": the templates count by shape only
        shape = shape_asked(q)
        if shape is not None:  # "how many balls are moving": no template counts those
            return None if motion else Intent("count_shape", None, when, shape)
        return Intent("count_moving" if motion else "count_all", None, when)
    if is_yes_no_motion(q) or (motion and obj is None and not _WH.search(q)
                               and not _GENERIC.search(q) and "in motion" not in q):
        return Intent("moving_obj" if obj is not None else "moving_any", obj, when)
    if obj is not None and (_START.search(q) or (WHEN.search(q) and motion)):
        return Intent("when_start", obj, when)
    if obj is not None and _HEADING.search(q):
        return Intent("heading", obj, when)
    if (_DESCRIBE.search(q) and (obj is None or "describe" in q)) or (
            _SCENE.search(q) and obj is None and not motion):
        return Intent("caption", None, when)
    if motion and obj is None:  # "which objects are not moving": no template asks that
        return None if _NEGATED.search(q) else Intent("which_move", None, when)
    if obj is not None:
        return Intent("ground", obj, when)
    return None


def canonical_question(question: str) -> str:
    """`question` as the task template that asks the same (see the module docstring), or in
    the training notation when no template does."""
    normalised = normalise_question(question)
    if is_template_question(normalised):
        return normalised  # one the LM was trained on, as it is
    intent = read_intent(normalised)
    text = intent.template() if intent is not None else None
    return text if text is not None else normalised
