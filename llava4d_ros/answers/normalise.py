"""Question text normalisation: the same question in the notation the model was trained on.

People write a time, a number, a shape or "now" in many ways that mean one thing ("t=2.5",
"2.5 sec", "at two seconds", "right now", "the red box", "WHERE IS..."). The default's LM reads a
closed word vocabulary and saw one notation; the question's times also reach the model as
numbers (its text-side time encoding reads "2.5s" / "3 seconds"), so a notation it does not
parse loses the time. Normalising the notation before the model is cheaper and more
dependable than hoping a 0.9 M-parameter LM generalises to it. Sentence structure ("Could you
tell me where ...") is left alone: that is the LM's to read.

What changes (nothing else; a question already in the training notation is unchanged):
- case: lower case, the first letter capitalised;
- contractions are spelled out ("where's" -> "where is", "didn't" -> "did not");
- times, as `core.notation.training_times` writes them: number words before a time unit
  become digits ("three seconds" -> "3 seconds"); "t=2.5", "t = 2.5", "time 2.5" -> "2.5s";
  "2.5 s", "2.5 sec", "2.5 seconds" -> "2.5s" ("3 sec ago", "3 s ago" -> "3 seconds ago", and
  "1 second ago" as written); "right now", "currently", "at the moment", "at present" ->
  "now"; "at the start" / "at the beginning" (of the window) -> "at 0s";
- shape synonyms -> the shape ("box", "block" -> "cube"; "ball" -> "sphere"; "can", "tube" ->
  "cylinder"; plurals too; "can" only after a colour word or an article, as it is also the
  verb); "things", "items" -> "objects".
"""

from __future__ import annotations

import re

from llava4d_ros.core.notation import training_times
from llava4d_ros.data.vocabulary import COLOURS, PLURAL, SHAPE_SYNONYMS

_OBJECTS = re.compile(r"\b(things|items)\b")
_CONTRACTIONS = {"can't": "cannot", "won't": "will not", "n't": " not", "'s": " is",
                 "'re": " are", "'m": " am", "'ll": " will", "'ve": " have", "'d": " would"}
_CONTRACTION = re.compile(r"\b(can't|won't)|(?<=[a-z])(n't|'s|'re|'m|'ll|'ve|'d)\b")


def _synonyms() -> tuple[re.Pattern[str], re.Pattern[str], dict[str, str]]:
    """(any synonym but "can", "can" after a colour or an article, synonym -> shape word)."""
    words = {}
    for shape, forms in SHAPE_SYNONYMS.items():
        for singular, plural in forms[1:]:  # the first pair is the shape's own word
            words[singular], words[plural] = shape, PLURAL[shape]
    anywhere = re.compile(r"\b(" + "|".join(sorted(set(words) - {"can"}, key=len,
                                                       reverse=True)) + r")\b")
    # "can" is also the verb ("Can you see ..."): only after a colour or an article
    after = re.compile(r"\b(" + "|".join(("the", "a", "an", "any", *COLOURS)) + r")\s+can\b")
    return anywhere, after, words


_SYNONYM, _CAN, _SYNONYM_OF = _synonyms()


def normalise_question(question: str) -> str:
    """`question` in the training notation (see the module docstring)."""
    q = " ".join(question.strip().lower().replace("\u2019", "'").split())
    q = _CONTRACTION.sub(lambda m: _CONTRACTIONS[m.group(0)], q)
    q = training_times(q)
    q = _SYNONYM.sub(lambda m: _SYNONYM_OF[m.group(1)], q)
    q = _CAN.sub(lambda m: f"{m.group(1)} cylinder", q)
    q = _OBJECTS.sub("objects", q)
    return q[:1].upper() + q[1:]
