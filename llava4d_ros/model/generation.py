"""One answer through the LM's own `generate`: greedy, ended by decoding.py's rules, with the
slot filler and the inventory bias plugged in, streamed and cancellable (streaming.py), on the
KV cache of the visual prefix or a static copy of it (fast_decode.py); the text parsed into
the answer's boxes and times (`ModelAnswer`).

It reads the LM and its tokenizer, never the LLaVA4D around them: `LLaVA4D.generate_batch`
embeds the question and builds the plug-ins, `greedy_answer` runs the decode loop.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList

from llava4d_ros.model import fast_decode
from llava4d_ros.model.decoding import (
    Guide,
    InventoryBiasProcessor,
    NameEveryObject,
    RepeatedSentence,
    SlotFiller,
    SlotTokens,
    answer_ids,
    write_slots,
)
from llava4d_ros.model.grounding import GroundedBox, parse_answer
from llava4d_ros.model.streaming import AnswerStreamer, Cancelled, said_so_far
from llava4d_ros.model.tokenizer import render_text


@dataclass(frozen=True)
class ModelAnswer:
    """`text`, the boxes it names (`t_s` model seconds since the window start; a slot box's
    numbers and confidence straight from the heads, its label and time from its sentence), the
    times it mentions, the parser's warnings, and how many tokens were generated."""

    text: str
    boxes: tuple[GroundedBox, ...]
    num_tokens: int = 0
    times: tuple[float, ...] = ()
    warnings: tuple[str, ...] = field(default=())

    @property
    def objects(self) -> tuple[GroundedBox, ...]:
        return self.boxes


@dataclass(frozen=True)
class LMHandle:
    """What decoding needs of the LM: the module, its tokenizer, the ids decoding watches for,
    the end and pad ids, the name of `forward`'s cache argument and the decode mode."""

    lm: nn.Module
    tokenizer: Any
    ids: SlotTokens
    eos_id: int | None
    pad_id: int
    cache_kw: str  # "cache" (transformers >= 5) or "past_key_values"
    decode_mode: str = "eager"


def greedy_answer(h: LMHandle, n_prefix: int, q_emb: torch.Tensor, cache: Any,
                  max_new_tokens: int, filler: SlotFiller | None, guide: Guide | None,
                  must_name: Sequence[int] = (), *,
                  on_text: Callable[[str], None] | None = None,
                  cancel: threading.Event | None = None) -> ModelAnswer:
    """Greedy answer to the question embedded in `q_emb (Lq, D)` after the `n_prefix` tokens
    of the visual prefix in `cache`, by the LM's own `generate`: it ends at the end token,
    at a sentence said twice (dropped) or after `max_new_tokens` (cut back to the last full
    sentence). Slots are filled from the LM's hidden states at their positions, which a
    forward hook keeps for the length of this one call (`generate` gives no logits
    processor the hidden state of the position just run). With a `guide`, the inventory's
    bias is added to the logits before each choice. The answer does not end before it has
    named every colour in `must_name` (inventory indices; with a `guide`).

    `on_text(text)`: the rendered answer so far at each sentence end and every few tokens
    (`streaming.AnswerStreamer`), `<box>` / `<time>` slots as their values (a slot is
    filled once the next token has run, as the end of the answer would fill it). `cancel`:
    once set, generation stops before the next decode step and the answer is what was said
    until then, the sentence being said included (empty if set before it starts).
    `decode_mode` "static" / "compile" decodes on a static copy of `cache` (`fast_decode`),
    which leaves `cache` as it was. The text's boxes and times: `grounding.parse_answer`."""
    if cancel is not None and cancel.is_set():
        return ModelAnswer(text="", boxes=())
    lm, ids, dev = h.lm, h.ids, q_emb.device
    hidden = filler is not None or guide is not None
    # the whole prompt's embeddings: `generate` runs only the part the cache lacks
    embeds = torch.cat([q_emb.new_zeros(n_prefix, q_emb.shape[1]), q_emb])[None]  # (1, L, D)
    gen_cache = cache
    if h.decode_mode != "eager":
        # one more position than the answer: a slot at its end runs its token (hidden_at)
        gen_cache = fast_decode.static_copy(
            cache, lm.config, fast_decode.cache_length(embeds.shape[1] + max_new_tokens + 1))
    config = GenerationConfig(
        max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
        eos_token_id=h.eos_id, pad_token_id=h.pad_id,
        # greedy as trained, whatever the LM's own generation_config says
        repetition_penalty=1.0, no_repeat_ngram_size=0, min_new_tokens=0,
        output_hidden_states=hidden, return_dict_in_generate=True,
        **fast_decode.generation_options(h.decode_mode))
    processors = LogitsProcessorList()
    # per LM forward in this call, its last hidden state (H,): seen[0] the prompt's last
    # position, seen[k + 1] answer token k. Cloned: a compiled step (CUDA graphs) reuses
    # its output memory at the next step.
    seen: list[torch.Tensor] = []

    @torch.compiler.disable  # eager even in a compiled step: the clone must outlive it
    def keep_hidden(_module: nn.Module, _args: Any, out: Any) -> None:
        seen.append(out.hidden_states[-1][0, -1].clone())

    hook = lm.register_forward_hook(keep_hidden) if hidden else None
    if guide is not None:
        processors.append(InventoryBiasProcessor(guide, filler, seen))
        if must_name:
            processors.append(NameEveryObject(guide, must_name, h.eos_id))
    stopping = StoppingCriteriaList([RepeatedSentence(ids.period)])
    if cancel is not None:
        stopping.append(Cancelled(cancel))

    def hidden_of(generated: list[int]) -> Callable[[int], torch.Tensor]:
        def hidden_at(j: int) -> torch.Tensor:
            if j + 1 < len(seen):
                return seen[j + 1]
            # generate stops without running its last token: run it for the slot's state
            lm(input_ids=torch.tensor([[generated[j]]], device=dev), use_cache=True,
               output_hidden_states=True, **{h.cache_kw: gen_cache})
            return seen[-1]
        return hidden_at

    def with_slots(generated: list[int]) -> str:
        return render_text(h.tokenizer, generated, (ids.box, ids.time))

    def render(generated: list[int]) -> str:
        if filler is None:
            return h.tokenizer.decode(generated, skip_special_tokens=True).strip()
        # the slots whose token has run (all but a newest one) are filled now, cached by
        # position in `filler`: the end of the answer reuses the values
        done = generated[:len(seen) - 1]
        values = filler.fill(done, hidden_of(done)) if done else []
        return write_slots(with_slots(generated), values)[0]

    streamer = None
    if on_text is not None:
        streamer = AnswerStreamer(render, on_text, ids.period, h.eos_id, (ids.box, ids.time))
    try:
        out = lm.generate(
            inputs_embeds=embeds,
            attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long, device=dev),
            generation_config=config, logits_processor=processors,
            stopping_criteria=stopping, streamer=streamer, **{h.cache_kw: gen_cache})
        out_ids = out.sequences[0].tolist()
        if cancel is not None and cancel.is_set():
            generated = said_so_far(out_ids, ids.period, h.eos_id)
        else:
            generated, _ = answer_ids(out_ids, ids.period, h.eos_id)
        slot_boxes = None
        if filler is None:
            text = h.tokenizer.decode(generated, skip_special_tokens=True).strip()
        else:
            text, slot_boxes = write_slots(with_slots(generated),
                                           filler.fill(generated, hidden_of(generated)))
    finally:
        if hook is not None:
            hook.remove()
    if streamer is not None:
        streamer.send(text)
    parsed = parse_answer(text, slot_boxes)
    return ModelAnswer(text=text, boxes=parsed.boxes, num_tokens=len(generated),
                       times=parsed.times, warnings=parsed.warnings)
