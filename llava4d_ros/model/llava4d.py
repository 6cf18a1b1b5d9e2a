"""LLaVA-4D: 4D visual tokens + a question in, text with 4D coordinates (and parsed boxes) out.

    VisualTokens (N) --budget--> features f_s, f_t --fusion(p_4D)--> f_st --projector--> (N, D_lm)
    --compressor (optional)--> (M, D_lm)
    "{image}{question} ASSISTANT:" (or the LM's chat template) with {image} = M placeholder
    tokens whose embeddings are the visual embeddings --any HF causal LM--> answer tokens
    <box>/<time> slot tokens (shipped default) --pointer + box heads--> numbers in the text,
    and each box's numbers and calibrated confidence straight to its GroundedBox
    text --grounding.parse_answer--> GroundedBox list (label and time from the sentence)

`encode` (visual side) is separate from `generate` (language side), as `get_image_features` is
from `forward` in transformers' LLaVA. The training forwards and losses live in
llava4d_ros/training/losses.py; they read the model through `visual_prefix`, `text_after`,
`embed` and the heads. What training changes between stages is in training/stages.py.

Loading and saving (`load`, `from_lm`, `from_llava_hf`, `save_pretrained`) are `PreTrained`'s,
the base class in model/loading.py; they assemble the model from what model/checkpoint.py and
model/backbones.py read, and none of these imports this file.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList

from llava4d_ros.core.buffer4d import VisualTokens
from llava4d_ros.model import fast_decode, template
from llava4d_ros.model.compressor import build_compressor
from llava4d_ros.model.config import LLaVA4DConfig
from llava4d_ros.model.decoding import (
    Guide,
    InventoryBiasProcessor,
    NameEveryObject,
    RepeatedSentence,
    SlotFiller,
    SlotValue,
    answer_ids,
    box_raw_score,
    write_slots,
)
from llava4d_ros.model.fusion import SpatioTemporalFusion, temporal_features
from llava4d_ros.model.grounding import GroundedBox, calibrated, parse_answer
from llava4d_ros.model.heads import (
    BoxHead,
    PointerHead,
    decode_time,
    dynamic_tokens,
    first_motion_time,
    new_time_head,
    time_match_features,
)
from llava4d_ros.model.inventory import Inventory, WordSets, build_inventory
from llava4d_ros.model.loading import PreTrained
from llava4d_ros.model.projector import Projector
from llava4d_ros.model.prompt import SpatioTemporalPrompt, TextCoordinateEmbedding
from llava4d_ros.model.spec import ModelSpec
from llava4d_ros.model.streaming import AnswerStreamer, Cancelled, said_so_far
from llava4d_ros.model.template import QuestionText
from llava4d_ros.model.tokenizer import SLOT_BOX, SLOT_TIME, render_text
from llava4d_ros.model.tokens import TokenTensors, apply_token_budget, token_tensors
from llava4d_ros.model.vision import build_encoder

#: Longest answer by default [tokens]: a description says one sentence of ~13 word tokens
#: (~15 BPE tokens) per object, so 8 objects need ~120 (docs/MODEL.md). Answers end at the end
#: token or a repeated sentence long before this. The node's `max_new_tokens` 0 takes it.
MAX_NEW_TOKENS = 160


def _rms(x: torch.Tensor) -> torch.Tensor:
    """Scale the last dim to unit root-mean-square (0 stays 0): the parts of a slot context or a
    pointer key come in very different scales (tiny embeddings, RMS-normed hidden states)."""
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)


def pointer_keys(h_visual: torch.Tensor, extra: torch.Tensor, feature_dim: int,
                 spatial_dim: int, temporal_dim: int, space: bool = True) -> torch.Tensor:
    """`(N, H + D + P + dt)`: the visual tokens' LM hidden states, fused features, PE, p_t and
    TE of their age (seconds before the window's newest token, for "now" / "n seconds ago").
    `space=False` zeroes the PE block (same width, so a checkpoint loads either way): a
    question names what and when, never where, so a token's place cannot tell the pointer
    which token is asked about; the box head reads the pointed tokens' xyz itself."""
    d, ds, dt = feature_dim, spatial_dim, temporal_dim
    pe = extra[:, d:d + ds]
    parts = [h_visual, extra[:, :d], pe if space else torch.zeros_like(pe),
             extra[:, d + ds:d + ds + dt], extra[:, d + ds + dt:]]
    return torch.cat([_rms(x) for x in parts], dim=-1)


def question_mean(q_emb: torch.Tensor) -> torch.Tensor:
    """`(L, H)` question embeddings -> `(H,)` their plain mean (normalised): every word counts,
    "ago" as much as the object's name (what a "question" time head's gate reads)."""
    return _rms(q_emb.mean(dim=0))


def slot_context(h_slot: torch.Tensor, bag_question: torch.Tensor, bag_sentence: torch.Tensor,
                 te_question: torch.Tensor) -> torch.Tensor:
    """`(3H + dt,)`: a slot's hidden state, pooled question and sentence embeddings, and the TE
    of the time the question names (the text-side p_t, straight to the pointer)."""
    return torch.cat([_rms(h_slot), _rms(bag_question), _rms(bag_sentence), _rms(te_question)],
                     dim=-1)


class AttentionPool(nn.Module):
    """Weighted mean of token embeddings, weights softmax(v . e_j): learns to look at the words
    that name an object or a time rather than averaging them into the template words."""

    def __init__(self, dim: int):
        super().__init__()
        self.score = nn.Linear(dim, 1)
        nn.init.zeros_(self.score.weight)  # starts as the plain mean
        nn.init.zeros_(self.score.bias)

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        """`e (L, D)` -> `(D,)`."""
        e = _rms(e)
        return (self.score(e).softmax(dim=0) * e).sum(0)


class VisualTokenMismatchError(ValueError):
    """The number of visual embeddings differs from the number of image placeholder tokens."""


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


class LLaVA4D(PreTrained):
    #: how answers decode (`fast_decode.DECODE_MODES`); set by `runtime.load_model`
    decode_mode: str = "eager"

    def __init__(self, cfg: LLaVA4DConfig, lm: nn.Module, tokenizer: Any,
                 vision_tower: nn.Module | None = None):
        super().__init__()
        self.cfg = cfg
        self.lm = lm
        self.tokenizer = tokenizer
        d_v, d_lm = cfg.vision.feature_dim, cfg.lm_hidden
        self.prompt = SpatioTemporalPrompt(cfg.prompt)
        self.fusion = SpatioTemporalFusion(d_v, cfg.prompt.dim, cfg.fusion_heads,
                                           cfg.gate_hidden)
        self.projector = Projector(d_v, d_lm)
        self.text_coords = TextCoordinateEmbedding(self.prompt, d_lm)
        if cfg.slot_heads:
            # slot context: [hidden state, mean question embedding, mean sentence embedding]
            dt = cfg.prompt.temporal_dim
            self.pointer = PointerHead(3 * d_lm + dt, d_lm + d_v + cfg.prompt.dim + dt,
                                       cfg.pointer_dim)
            self.box_head = BoxHead(3 * d_lm + dt, cfg.box_hidden, cfg.box_head)
            self.time_head = new_time_head(cfg)
            self.slot_pool = AttentionPool(d_lm)
        # the LM reads M compressed embeddings; None: all N (the shipped default)
        self.compressor = build_compressor(cfg.compressor, d_lm)
        if cfg.vision.kind == "clip":
            self.vision_tower = vision_tower
        self._encoder = build_encoder(cfg.vision, vision_tower)
        self.image_token_id = self._token_id(cfg.image_token)
        self.box_token_id = self._token_id(SLOT_BOX) if cfg.slot_heads else -1
        self.time_token_id = self._token_id(SLOT_TIME) if cfg.slot_heads else -1
        self.period_id = self._token_id(".") if cfg.slot_heads else -1
        self.words: WordSets | None = None
        if cfg.inventory is not None:
            vocab = int(lm.get_input_embeddings().weight.shape[0])
            self.words, self.inventory, self.inventory_bias = build_inventory(
                cfg.inventory, d_v, d_lm, vocab, self.written_id)
        self.cache_kw = ("cache" if "cache" in inspect.signature(lm.forward).parameters
                          else "past_key_values")

    @property
    def reads_templates_best(self) -> bool:
        """Whether questions are read by `answers/intent.py` and asked as the task's templates:
        for an LM trained from scratch on the task, and for any LM with the task's scene
        inventory (fine-tuned on the task's questions, it too answers the templates best:
        docs/MODEL.md, held-out phrasings). An open-vocabulary model without the inventory reads
        questions as written."""
        return self.cfg.lm_source.kind == "scratch" or self.words is not None

    # ------------------------------------------------------------------ plumbing

    def kv_cache(self, out: Any) -> Any:
        """The KV cache of an LM output: `cache` (transformers >= 5, where reading
        `past_key_values` logs a deprecation warning) or `past_key_values` (older)."""
        return out.cache if self.cache_kw == "cache" else out.past_key_values

    def _token_id(self, token: str) -> int:
        tid = self.tokenizer.convert_tokens_to_ids(token)
        if tid is None or tid == self.tokenizer.unk_token_id:
            raise ValueError(f"tokenizer has no {token!r} token")
        return int(tid)

    def written_id(self, text: str) -> int:
        """The one token `text` is encoded as (" red" with its space), or ValueError."""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) != 1 or ids[0] == self.tokenizer.unk_token_id:
            raise ValueError(f"{text!r} is not one token of this tokenizer ({ids}); the scene "
                             "inventory needs each of its words to be one")
        return int(ids[0])

    @property
    def model_id(self) -> str:
        return self.cfg.model_id

    @property
    def max_new_tokens(self) -> int:
        """The longest answer by default [tokens] (`MAX_NEW_TOKENS`)."""
        return MAX_NEW_TOKENS

    @property
    def patch_encoder(self) -> Any:
        """The `PatchEncoder` whose features this model was trained on; give it to the
        `Ingestor` so the buffer holds the right features."""
        if hasattr(self._encoder, "device"):  # a network (CLIP, EfficientNet): on our device
            self._encoder.device = self.device
        return self._encoder

    @property
    def spec(self) -> ModelSpec:
        """The ingest settings this model's weights were trained with."""
        return ModelSpec.of(self.cfg)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def eos_token_id(self) -> int | None:
        return self.tokenizer.eos_token_id

    @property
    def _pad_id(self) -> int:
        """What `generate` pads with (one answer at a time: never read)."""
        for tid in (self.tokenizer.pad_token_id, self.eos_token_id):
            if tid is not None:
                return int(tid)
        return 0

    # ------------------------------------------------------------------ visual side

    def encode(self, tokens: VisualTokens, t_ref_s: float) -> torch.Tensor:
        """The visual embeddings the LM reads, `(M, D_lm)` (M = N of `apply_token_budget(tokens)`
        without a compressor); `t_ref_s` is the window start (absolute stamp seconds): model
        time is seconds since it."""
        visual = self._encode(tokens, t_ref_s)[0]
        return visual if self.compressor is None else self.compressor(visual)

    def visual_prefix(self, tokens: VisualTokens, t_ref_s: float, hidden: bool
                       ) -> tuple[torch.Tensor, Any, torch.Tensor | None]:
        """The LM's forward over the prompt up to and with the image (`tokens` within budget):
        (prefix ids `(L,)`, the LM output with its KV cache, pointer keys `(N, H + D + P + dt)`
        when `hidden`). A key's H part is the token's LM hidden state; with a compressor the LM
        never sees token n by itself, so its projected embedding stands in: the heads still
        address all N window tokens."""
        visual, extra = self._encode(tokens, t_ref_s)  # (N, D_lm), (N, D + P + dt)
        lm_in = visual if self.compressor is None else self.compressor(visual)  # (M, D_lm)
        pre_ids = torch.tensor(self.prefix_ids(lm_in.shape[0]), device=self.device)
        out = self.lm(inputs_embeds=self.embed(pre_ids, lm_in)[None], use_cache=True,
                      output_hidden_states=hidden)
        keys = None
        if hidden:
            h = (out.hidden_states[-1][0, pre_ids == self.image_token_id]
                 if self.compressor is None else visual)  # (N, H)
            keys = self._keys(h, extra)
        return pre_ids, out, keys

    def token_tensors(self, tokens: VisualTokens, t_ref_s: float) -> TokenTensors:
        """`apply_token_budget(tokens)` as tensors in the model's dtype, on its device; model
        time is seconds since the window start `t_ref_s` (absolute stamp seconds)."""
        tokens = apply_token_budget(tokens, self.cfg.token_budget)
        return token_tensors(tokens, t_ref_s, self.projector.linear_1.weight.dtype, self.device)

    def _encode(self, tokens: VisualTokens, t_ref_s: float
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(embeddings `(N, D_lm)`, pointer key extras `[f_st, p_4D, TE(age)]`
        `(N, D + P + dt)`)."""
        tt = self.token_tensors(tokens, t_ref_s)
        f_s = tt.features  # (N, D)
        if f_s.ndim != 2 or f_s.shape[1] != self.cfg.vision.feature_dim:
            raise ValueError(f"token features {tuple(f_s.shape)} do not match the model's "
                             f"{self.cfg.vision.feature_dim}: were they made by "
                             f"this model's patch_encoder?")
        p4d = self.prompt(tt.xyz, tt.t, tt.motion, tt.t_first)  # (N, P)
        age = self.prompt.temporal(tt.t.max() - tt.t)  # (N, dt) time before the newest token
        f_t = temporal_features(f_s, tt.xyz, tt.t, self.cfg.voxel_m)  # (N, D)
        f_st = self.fusion(f_s, f_t, p4d)  # (N, D)
        return self.projector(f_st), torch.cat([f_st, p4d, age], dim=-1)

    def inventory_inputs(self, tokens: VisualTokens, t_ref_s: float
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """What `SceneInventory` reads from `apply_token_budget(tokens)`: features `(N, D)`,
        xyz `(N, 3)`, model time `(N,)` (seconds since `t_ref_s`) and motion `(N,)`."""
        tt = self.token_tensors(tokens, t_ref_s)
        return tt.features, tt.xyz, tt.t, tt.motion

    def scene_inventory(self, tokens: VisualTokens, t_ref_s: float) -> Inventory:
        """What the window holds per inventory colour (present, moving, shape logits), from
        `apply_token_budget(tokens)`; needs `cfg.inventory`."""
        if self.cfg.inventory is None:
            raise ValueError("this model has no scene inventory (cfg.inventory is None)")
        return self.inventory(*self.inventory_inputs(tokens, t_ref_s),
                              self.cfg.prompt.use_time, self.cfg.inventory.object_envelope)

    # ------------------------------------------------------------------ language side

    def _keys(self, h_visual: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:
        p = self.cfg.prompt
        return pointer_keys(h_visual, extra, self.cfg.vision.feature_dim, p.spatial_dim,
                            p.temporal_dim, self.cfg.pointer_space)

    def prefix_ids(self, n_visual: int) -> list[int]:
        """BOS + the template's text before the image + `n_visual` image placeholders."""
        return template.prefix_ids(self.tokenizer, self.cfg.template, self.cfg.add_bos,
                                   self.image_token_id, n_visual)

    def text_after(self, question: str, answer: str | None = None) -> QuestionText:
        """The template after the image with `question` (and, for training, `answer`)."""
        return template.text_after(self.tokenizer, self.cfg.template, question, answer)

    @staticmethod
    def question_seconds(text: QuestionText) -> float:
        """The first time the question names, NaN if none."""
        return text.first_time_s

    def question_time(self, text: QuestionText, like: torch.Tensor) -> torch.Tensor:
        """`(dt,)` mean TE of the times the question mentions (zeros if none or ablated)."""
        if not text.times:
            return like.new_zeros(self.cfg.prompt.temporal_dim)
        t = torch.tensor([v for _, v in text.times], dtype=like.dtype, device=like.device)
        return self.prompt.temporal(t).mean(0)

    def embed(self, input_ids: torch.Tensor, visual: torch.Tensor | None,
              text: QuestionText | None = None, text_offset: int = 0) -> torch.Tensor:
        """`input_ids (L,)` -> `(L, D_lm)`: image placeholders replaced by `visual (N, D_lm)`, the
        question's times/coordinates (at `text_offset` + their positions) given TE/PE."""
        emb = self.lm.get_input_embeddings()(input_ids)  # (L, D)
        is_image = input_ids == self.image_token_id
        n_img = int(is_image.sum())
        n_vis = 0 if visual is None else int(visual.shape[0])
        if n_img != n_vis:
            raise VisualTokenMismatchError(
                f"{n_vis} visual embeddings but {n_img} image placeholder tokens "
                f"({self.cfg.image_token!r}) in the input")
        if n_vis:
            emb = emb.masked_scatter(is_image[:, None], visual.to(emb.dtype))
        if text is not None and (text.times or text.coords):
            shift = [([p + text_offset for p in pos], v) for pos, v in text.times]
            shift_c = [([p + text_offset for p in pos], v) for pos, v in text.coords]
            emb = self.text_coords(emb, self.prompt, shift, shift_c)
        return emb

    def logits(self, question: str, tokens: VisualTokens, t_ref_s: float) -> torch.Tensor:
        """Logits `(L, V)` of the whole prompt (for checks against a reference model)."""
        visual = self.encode(tokens, t_ref_s)  # (M, D_lm)
        prefix = self.prefix_ids(visual.shape[0])
        text = self.text_after(question)
        ids = torch.tensor(prefix + text.ids, device=self.device)
        emb = self.embed(ids, visual, text, len(prefix))
        return self.lm(inputs_embeds=emb[None]).logits[0]

    def input_ids(self, question: str, n_visual: int) -> list[int]:
        return self.prefix_ids(n_visual) + self.text_after(question).ids

    @torch.no_grad()
    def generate(self, question: str, tokens: VisualTokens, t_ref_s: float | None = None,
                 max_new_tokens: int = MAX_NEW_TOKENS, *, asked_time_s: float = float("nan"),
                 must_name: Sequence[int] = (),
                 on_text: Callable[[str], None] | None = None,
                 cancel: threading.Event | None = None) -> ModelAnswer:
        """Greedy answer to `question` about `tokens`, as the network reads it (no rule
        rewrites or decides anything: that is the answer policy's, llava4d_ros/answers/);
        `t_ref_s` (window start, absolute seconds) defaults to the earliest token's stamp.
        `asked_time_s`, `must_name`, `on_text`, `cancel`: see `generate_batch`."""
        return self.generate_batch([question], tokens, t_ref_s, max_new_tokens,
                                   asked_times=[asked_time_s], must_name=[must_name],
                                   on_text=on_text, cancel=cancel)[0]

    @torch.no_grad()
    def generate_batch(self, questions: Sequence[str], tokens: VisualTokens,
                       t_ref_s: float | None = None, max_new_tokens: int = MAX_NEW_TOKENS, *,
                       asked_times: Sequence[float] | None = None,
                       must_name: Sequence[Sequence[int]] | None = None,
                       inventory: Inventory | None = None,
                       on_text: Callable[[str], None] | None = None,
                       cancel: threading.Event | None = None) -> list[ModelAnswer]:
        """Answers to several questions about one window: the visual prefix runs once and its
        KV cache is cropped back to it before each question.

        Per question: `asked_times[i]`, the model time [s] a box answer is stated at (NaN: the
        time head reads it); `must_name[i]`, inventory colour indices a description must name
        before it may end. `inventory`: this window's `scene_inventory`, if the caller has it
        already. `on_text`, `cancel`: passed to each answer (`_answer_from`), one after the
        other."""
        tokens = apply_token_budget(tokens, self.cfg.token_budget)
        if len(tokens) == 0:
            raise ValueError("no visual tokens")
        if t_ref_s is None:
            t_ref_s = float(np.min(tokens.t_s))
        n = len(questions)
        asked_times = [float("nan")] * n if asked_times is None else list(asked_times)
        must_name = [()] * n if must_name is None else list(must_name)
        if len(asked_times) != n or len(must_name) != n:
            raise ValueError(f"{n} questions but {len(asked_times)} asked_times and "
                             f"{len(must_name)} must_name")
        slots = self.cfg.slot_heads
        inv = inventory
        if inv is None and self.words is not None:
            inv = self.scene_inventory(tokens, t_ref_s)
        pre_ids, out, h_visual = self.visual_prefix(tokens, t_ref_s, hidden=slots)
        cache = self.kv_cache(out)
        answers = []
        for question, asked, names in zip(questions, asked_times, must_name):
            extra = cache.get_seq_length() - len(pre_ids)
            if extra > 0:
                cache.crop(-extra)  # back to the visual prefix
            text = self.text_after(question)
            q_emb = self.embed(torch.tensor(text.ids, device=self.device), None, text)  # (Lq, D)
            guide = None if inv is None else Guide(self, inv, text.ids)
            filler = None
            if slots:
                filler = SlotFiller(self, self.slot_pool(q_emb), question_mean(q_emb),
                                    self.question_time(text, q_emb),
                                    self.question_seconds(text), h_visual, tokens, t_ref_s,
                                    guide, asked)
            answers.append(self._answer_from(len(pre_ids), q_emb, cache, max_new_tokens,
                                             filler, guide, tuple(names) if guide else (),
                                             on_text=on_text, cancel=cancel))
        return answers

    def _answer_from(self, n_prefix: int, q_emb: torch.Tensor, cache: Any, max_new_tokens: int,
                     filler: SlotFiller | None, guide: Guide | None,
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
        filled once the next token has run, as the end of the answer would fill it), and the
        complete answer last. `cancel`: once set, generation stops before the next decode step
        and the answer is what was said until then, the sentence being said included.
        `decode_mode` "static" / "compile" decodes on a static copy of `cache`
        (`fast_decode`), which leaves `cache` as it was."""
        if cancel is not None and cancel.is_set():
            return ModelAnswer(text="", boxes=())
        hidden = filler is not None or guide is not None
        # the whole prompt's embeddings: `generate` runs only the part the cache lacks
        embeds = torch.cat([q_emb.new_zeros(n_prefix, q_emb.shape[1]), q_emb])[None]  # (1, L, D)
        gen_cache = cache
        if self.decode_mode != "eager":
            # one more position than the answer: a slot at its end runs its token (hidden_at)
            gen_cache = fast_decode.static_copy(
                cache, self.lm.config,
                fast_decode.cache_length(embeds.shape[1] + max_new_tokens + 1))
        config = GenerationConfig(
            max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
            eos_token_id=self.eos_token_id, pad_token_id=self._pad_id,
            # greedy as trained, whatever the LM's own generation_config says
            repetition_penalty=1.0, no_repeat_ngram_size=0, min_new_tokens=0,
            output_hidden_states=hidden, return_dict_in_generate=True,
            **fast_decode.generation_options(self.decode_mode))
        processors = LogitsProcessorList()
        # per LM forward in this call, its last hidden state (H,): seen[0] the prompt's last
        # position, seen[k + 1] answer token k. Cloned: a compiled step (CUDA graphs) reuses
        # its output memory at the next step.
        seen: list[torch.Tensor] = []

        @torch.compiler.disable  # eager even in a compiled step: the clone must outlive it
        def keep_hidden(_module: nn.Module, _args: Any, out: Any) -> None:
            seen.append(out.hidden_states[-1][0, -1].clone())

        hook = self.lm.register_forward_hook(keep_hidden) if hidden else None
        if guide is not None:
            processors.append(InventoryBiasProcessor(guide, filler, seen))
            if must_name:
                processors.append(NameEveryObject(guide, must_name, self.eos_token_id))
        stopping = StoppingCriteriaList([RepeatedSentence(self.period_id)])
        if cancel is not None:
            stopping.append(Cancelled(cancel))

        def hidden_of(ids: list[int]) -> Callable[[int], torch.Tensor]:
            def hidden_at(j: int) -> torch.Tensor:
                if j + 1 < len(seen):
                    return seen[j + 1]
                # generate stops without running its last token: run it for the slot's state
                self.lm(input_ids=torch.tensor([[ids[j]]], device=self.device), use_cache=True,
                        output_hidden_states=True, **{self.cache_kw: gen_cache})
                return seen[-1]
            return hidden_at

        def render(ids: list[int]) -> str:
            if filler is None:
                return self.tokenizer.decode(ids, skip_special_tokens=True).strip()
            # the slots whose token has run (all but a newest one) are filled now, cached by
            # position in `filler`: the end of the answer reuses the values
            done = ids[:len(seen) - 1]
            values = filler.fill(done, hidden_of(done)) if done else []
            return write_slots(self.render_text(ids), values)[0]

        streamer = None
        if on_text is not None:
            streamer = AnswerStreamer(render, on_text, self.period_id, self.eos_token_id,
                                      (self.box_token_id, self.time_token_id))
        try:
            out = self.lm.generate(
                inputs_embeds=embeds,
                attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long, device=self.device),
                generation_config=config, logits_processor=processors,
                stopping_criteria=stopping, streamer=streamer, **{self.cache_kw: gen_cache})
            ids = out.sequences[0].tolist()
            if cancel is not None and cancel.is_set():
                generated = said_so_far(ids, self.period_id, self.eos_token_id)
            else:
                generated, _ = answer_ids(ids, self.period_id, self.eos_token_id)
            slot_boxes = None
            if filler is None:
                text_out = self.tokenizer.decode(generated, skip_special_tokens=True).strip()
            else:
                text_out, slot_boxes = write_slots(self.render_text(generated),
                                                   filler.fill(generated, hidden_of(generated)))
        finally:
            if hook is not None:
                hook.remove()
        if streamer is not None:
            streamer.send(text_out)
        parsed = parse_answer(text_out, slot_boxes)
        return ModelAnswer(text=text_out, boxes=parsed.boxes, num_tokens=len(generated),
                           times=parsed.times, warnings=parsed.warnings)

    def render_text(self, ids: Sequence[int]) -> str:
        """Generated ids -> text with `<box>`/`<time>` kept in place for their values."""
        return render_text(self.tokenizer, ids, (self.box_token_id, self.time_token_id))

    def answer(self, question: str, tokens: VisualTokens, t_ref_s: float,
               max_new_tokens: int = MAX_NEW_TOKENS, *, asked_time_s: float = float("nan"),
               must_name: Sequence[int] = (),
               on_text: Callable[[str], None] | None = None,
               cancel: threading.Event | None = None) -> ModelAnswer:
        """The network's answer (`generate`), as the answer policy asks for it. `on_text` gets
        the text so far while the LM generates (`_answer_from`), and its last call is the
        answer's whole text, also where the text changed after generation (slots written);
        `cancel` stops generation (`_answer_from`)."""
        sent: list[str] = []

        def relay(text: str) -> None:
            sent.append(text)
            on_text(text)

        out = self.generate(question, tokens, t_ref_s, max_new_tokens,
                            asked_time_s=asked_time_s, must_name=must_name,
                            on_text=None if on_text is None else relay, cancel=cancel)
        if on_text is not None and out.text and sent[-1:] != [out.text]:
            on_text(out.text)
        return out

    def context_of_slot(self, h_slot: torch.Tensor, q_pool: torch.Tensor,
                        sentence_emb: torch.Tensor, q_te: torch.Tensor) -> torch.Tensor:
        """`(3H + dt,)` what the heads read for a slot: its hidden state `(H,)`, the question's
        pooled embeddings `(H,)`, its sentence so far `(L, H)` (pooled here) and the TE of the
        time the question names `(dt,)`."""
        return slot_context(h_slot, q_pool, self.slot_pool(sentence_emb), q_te)

    def fill_slot(self, token_id: int, h_slot: torch.Tensor, h_visual: torch.Tensor,
                   tokens: VisualTokens, t_ref_s: float, t_question: float,
                   t_sentence: float = float("nan"), colour_w: torch.Tensor | None = None,
                   q_mean: torch.Tensor | None = None) -> SlotValue:
        """What a `<box>` / `<time>` slot becomes (its text, and a box's numbers and confidence:
        `box_raw_score` through `cfg.confidence_table`); `t_sentence`: the value of the
        `<time>` slot earlier in the same sentence (the time a box is asked at), NaN if none;
        `colour_w (N,)`: the inventory's weights of the tokens of the object the sentence
        names; the pointer then chooses among those tokens (scores + log(w + 1e-4));
        `q_mean (H,)`: `question_mean` of the question (read by a "question" time head)."""
        is_time = token_id == self.time_token_id
        dev, dtype = h_slot.device, h_slot.dtype
        tt = token_tensors(tokens, t_ref_s, dtype, dev)
        t, xyz, motion = tt.t, tt.xyz, tt.motion  # (N,), (N, 3), (N,)
        dt_feat = None
        if self.cfg.prompt.use_time and not is_time:
            dt_feat = time_match_features(t.new_tensor([t_sentence]), t,
                                          dynamic_tokens(xyz, self.cfg.voxel_m, motion), motion)
        scores = self.pointer(h_slot[None], torch.tensor([is_time], device=dev), h_visual,
                              dt_feat)
        if colour_w is not None:
            scores = scores + torch.log(colour_w.to(dtype) + 1e-4)
        if is_time:
            t_first = (first_motion_time(scores.softmax(dim=-1), t, motion)
                       if self.cfg.prompt.use_time else None)
            t_hat = self.time_head(h_slot[None], decode_time(scores, t), t.max(),
                                   t.new_tensor([t_question]), t_first,
                                   None if q_mean is None else q_mean[None])[0]
            return SlotValue.of_time(float(t_hat))
        w = scores.softmax(dim=-1)  # (1, N)
        box = self.box_head(h_slot[None], w, xyz, tt.view)[0]  # (6,)
        raw = box_raw_score(w[0], xyz, box)
        return SlotValue.of_box(box.tolist(), calibrated(raw, self.cfg.confidence_table))


def build_model(cfg: LLaVA4DConfig, tokenizer: Any) -> LLaVA4D:
    """A fresh LLaVA4D from a config (`LLaVA4D.from_config`)."""
    return LLaVA4D.from_config(cfg, tokenizer)


def load_llava4d(path: str | None = None, device: str = "cpu",
                 dtype: torch.dtype = torch.float32, fresh: tuple[str, ...] = ()) -> LLaVA4D:
    """`LLaVA4D.load` (model/loading.py); `path=None` is the shipped default."""
    return LLaVA4D.load(path, device=device, dtype=dtype, fresh=fresh)


def save_llava4d(model: LLaVA4D, path: str) -> None:
    model.save_pretrained(path)
