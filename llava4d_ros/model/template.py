"""The text around the image: the prompt template (`LLaVA4DConfig.template`, e.g.
"{image}{question} ASSISTANT:" or the LM's chat template) as token ids.

    prefix_ids:  [BOS] + the template's text before {image} + M image placeholders
    text_after:  the template's text after {image}, the question in it (and, for training, the
                 answer), with the positions of the times and coordinates the question names

The LM reads `prefix_ids + text_after(...).ids`; the visual embeddings replace the
placeholders and the named times/coordinates get TE/PE (`LLaVA4D.embed`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llava4d_ros.core.notation import find_text_coordinates


@dataclass
class QuestionText:
    """The text after the image placeholders, tokenised, with the question's coordinates."""

    ids: list[int]
    times: list[tuple[list[int], float]]  # (positions in ids, value [s])
    coords: list[tuple[list[int], tuple[float, float, float]]]  # (positions, xyz [m])

    @property
    def first_time_s(self) -> float:
        """The first time the question names [model s], NaN if none."""
        return float(self.times[0][1]) if self.times else float("nan")


def split_template(template: str, question: str) -> tuple[str, str]:
    """(text before {image}, text after it with the question in place)."""
    before, after = template.split("{image}")
    return before, after.replace("{question}", question)


def prefix_ids(tokenizer: Any, template: str, add_bos: bool, image_token_id: int,
               n_visual: int) -> list[int]:
    """BOS (if `add_bos`) + the template's text before the image + `n_visual` image
    placeholders."""
    before, _ = split_template(template, "")
    bos = tokenizer.bos_token_id
    ids = [bos] if add_bos and bos is not None else []
    if before:
        ids += tokenizer(before, add_special_tokens=False)["input_ids"]
    return ids + [image_token_id] * n_visual


def text_after(tokenizer: Any, template: str, question: str,
               answer: str | None = None) -> QuestionText:
    """Token ids of the template after the image (with the question) and, for training, the
    answer; positions of the question's times and coordinates."""
    _, after = split_template(template, question)
    enc = tokenizer(after, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    offsets = enc["offset_mapping"]
    times, coords = find_text_coordinates(after)

    def positions(a: int, b: int) -> list[int]:
        return [i for i, (s, e) in enumerate(offsets) if s < b and e > a]

    t_out = [(positions(s.start, s.end), s.value[0]) for s in times]
    c_out = [(positions(s.start, s.end), s.value[:3]) for s in coords]
    if answer is not None:
        # after "ASSISTANT:" a space; a chat template's turn ends its line already
        sep = "" if after.endswith((" ", "\n")) else " "
        ids += tokenizer(sep + answer, add_special_tokens=False)["input_ids"]
    return QuestionText(ids, [x for x in t_out if x[0]], [x for x in c_out if x[0]])
