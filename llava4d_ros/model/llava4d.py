"""LLaVA-4D: 4D visual tokens + a question in, text with 4D coordinates (and its boxes) out.

    VisualTokens (N) --budget--> f_s, f_t --fusion(p_4D)--> f_st --projector--> (N, D_lm)
        --compressor (optional)--> (M, D_lm)                                         `encode`
    prompt ids (template.py); the M placeholders' embeddings := the visual ones, TE/PE
        added on the question's times and coordinates                                 `embed`
    --any HF causal LM (`forward`), greedy (generation.py, decoding.py)--> answer tokens
                                                                               `generate_batch`
    <box>/<time> slot tokens --pointer + box / time heads (heads.py)--> numbers in the text,
        each box's numbers and confidence straight to its GroundedBox           `slot_reader`
    text --grounding.parse_answer--> boxes (label and time from the sentence)

The visual side (`encode`) is separate from the language side (`forward`), as in transformers'
LLaVA. Loading and saving: model/loading.py (`LLaVA4D.load`). Training reads
the model through `visual_prefix`, `text_after`, `embed` and the heads (training/losses.py) and
changes it between stages in training/model_edits.py.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from llava4d_ros.core.buffer4d import VisualTokens
from llava4d_ros.model import template
from llava4d_ros.model.compressor import build_compressor
from llava4d_ros.model.config import LLaVA4DConfig
from llava4d_ros.model.decoding import Guide, SlotTokens
from llava4d_ros.model.fusion import SpatioTemporalFusion, temporal_features
from llava4d_ros.model.generation import LMHandle, ModelAnswer, greedy_answer
from llava4d_ros.model.heads import (
    AttentionPool,
    BoxHead,
    PointerHead,
    SlotReader,
    new_time_head,
    pointer_keys,
)
from llava4d_ros.model.inventory import Inventory, WordSets, build_inventory
from llava4d_ros.model.loading import PreTrained
from llava4d_ros.model.projector import Projector
from llava4d_ros.model.prompt import SpatioTemporalPrompt, TextCoordinateEmbedding
from llava4d_ros.model.spec import ModelSpec
from llava4d_ros.model.template import QuestionText
from llava4d_ros.model.tokenizer import SLOT_BOX, SLOT_TIME
from llava4d_ros.model.tokens import TokenTensors, apply_token_budget, token_tensors
from llava4d_ros.model.vision import build_encoder

#: Longest answer by default [tokens]: a description says one sentence of ~13 word tokens
#: (~15 BPE tokens) per object, so 8 objects need ~120 (docs/RESULTS.md). Answers end at the end
#: token or a repeated sentence long before this. The node's `max_new_tokens` 0 takes it.
MAX_NEW_TOKENS = 160


class VisualTokenMismatchError(ValueError):
    """The number of visual embeddings differs from the number of image placeholder tokens."""


class LLaVA4D(PreTrained):
    #: how answers decode (`fast_decode.DECODE_MODES`); set by `runtime.load_model`
    decode_mode: str = "eager"

    def __init__(self, cfg: LLaVA4DConfig, lm: nn.Module, tokenizer: Any,
                 vision_tower: nn.Module | None = None):
        super().__init__()
        self.cfg, self.lm, self.tokenizer = cfg, lm, tokenizer
        d_v, d_lm, dt = cfg.vision.feature_dim, cfg.lm_hidden, cfg.prompt.temporal_dim
        self.prompt = SpatioTemporalPrompt(cfg.prompt)
        self.fusion = SpatioTemporalFusion(d_v, cfg.prompt.dim, cfg.fusion_heads,
                                           cfg.gate_hidden)
        self.projector = Projector(d_v, d_lm)
        self.text_coords = TextCoordinateEmbedding(self.prompt, d_lm)
        if cfg.slot_heads:  # a slot's context (3 H + dt,) against the tokens' keys (heads.py)
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

    # ------------------------------------------------------------------ plumbing

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
    def reads_templates_best(self) -> bool:
        """Whether questions are read by `answers/intent.py` and asked as the task's templates:
        for an LM trained from scratch on the task or with its scene inventory (docs/RESULTS.md,
        held-out phrasings); an open-vocabulary LM without one reads questions as written."""
        return self.cfg.lm_source.kind == "scratch" or self.words is not None

    def kv_cache(self, out: Any) -> Any:
        """The KV cache of an LM output: `cache` (transformers >= 5: `past_key_values` warns)."""
        return out.cache if self.cache_kw == "cache" else out.past_key_values

    @property
    def lm_handle(self) -> LMHandle:
        """What decoding needs of the LM (generation.py)."""
        pad = next((int(t) for t in (self.tokenizer.pad_token_id, self.eos_token_id)
                    if t is not None), 0)  # one answer at a time: padding is never read
        return LMHandle(self.lm, self.tokenizer,
                        SlotTokens(self.period_id, self.box_token_id, self.time_token_id),
                        self.eos_token_id, pad, self.cache_kw, self.decode_mode)

    @property
    def patch_encoder(self) -> Any:
        """The `PatchEncoder` whose features this model was trained on; give it to the
        `Ingestor` so the buffer holds the right features."""
        if hasattr(self._encoder, "device"):  # a network (CLIP, EfficientNet): on our device
            self._encoder.device = self.device
        return self._encoder

    model_id = property(lambda self: self.cfg.model_id)
    #: the longest answer by default [tokens]
    max_new_tokens = property(lambda self: MAX_NEW_TOKENS)
    #: the ingest settings this model's weights were trained with
    spec = property(lambda self: ModelSpec.of(self.cfg))
    device = property(lambda self: next(self.parameters()).device)
    eos_token_id = property(lambda self: self.tokenizer.eos_token_id)

    # ------------------------------------------------------------------ visual side

    def token_tensors(self, tokens: VisualTokens, t_ref_s: float) -> TokenTensors:
        """`apply_token_budget(tokens)` as tensors in the model's dtype, on its device; model
        time is seconds since the window start `t_ref_s` (absolute stamp seconds)."""
        tokens = apply_token_budget(tokens, self.cfg.token_budget)
        return token_tensors(tokens, t_ref_s, self.projector.linear_1.weight.dtype, self.device)

    def encode(self, tokens: VisualTokens, t_ref_s: float) -> torch.Tensor:
        """The visual embeddings the LM reads, `(M, D_lm)` (M = N of `apply_token_budget(tokens)`
        without a compressor); `t_ref_s` is the window start (absolute stamp seconds)."""
        visual = self._encode(tokens, t_ref_s)[0]
        return visual if self.compressor is None else self.compressor(visual)

    def _encode(self, tokens: VisualTokens, t_ref_s: float
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(embeddings `(N, D_lm)`, pointer key extras `[f_st, p_4D, TE(age)]` `(N, D+P+dt)`)."""
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

    def visual_prefix(self, tokens: VisualTokens, t_ref_s: float, hidden: bool
                      ) -> tuple[torch.Tensor, Any, torch.Tensor | None]:
        """The LM's forward over the prompt up to and with the image (`tokens` within budget):
        (prefix ids `(L,)`, the LM output with its KV cache, pointer keys `(N, H + D + P + dt)`
        when `hidden`). A key's H part is the token's LM hidden state; with a compressor its
        projected embedding stands in: the heads still address all N window tokens."""
        visual, extra = self._encode(tokens, t_ref_s)  # (N, D_lm), (N, D + P + dt)
        lm_in = visual if self.compressor is None else self.compressor(visual)  # (M, D_lm)
        pre_ids = torch.tensor(self.prefix_ids(lm_in.shape[0]), device=self.device)
        out = self(pre_ids, lm_in, use_cache=True, output_hidden_states=hidden)
        keys = None
        if hidden:
            h = (out.hidden_states[-1][0, pre_ids == self.image_token_id]
                 if self.compressor is None else visual)  # (N, H)
            keys = self._keys(h, extra)
        return pre_ids, out, keys

    def _keys(self, h_visual: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:
        p = self.cfg.prompt
        return pointer_keys(h_visual, extra, self.cfg.vision.feature_dim, p.spatial_dim,
                            p.temporal_dim, self.cfg.pointer_space)

    def inventory_inputs(self, tokens: VisualTokens, t_ref_s: float
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                    torch.Tensor]:
        """What `SceneInventory` reads from `apply_token_budget(tokens)`: features `(N, D)`,
        xyz `(N, 3)`, model time `(N,)` (seconds since `t_ref_s`), motion `(N,)` and the share
        of flat patches `(N,)`."""
        tt = self.token_tensors(tokens, t_ref_s)
        return tt.features, tt.xyz, tt.t, tt.motion, tt.flat

    def scene_inventory(self, tokens: VisualTokens, t_ref_s: float) -> Inventory:
        """What the window holds per inventory colour (present, moving, shape logits), from
        `apply_token_budget(tokens)`; needs `cfg.inventory`."""
        if self.cfg.inventory is None:
            raise ValueError("this model has no scene inventory (cfg.inventory is None)")
        use_time, use_space = self.cfg.inventory_reads
        features, xyz, t, motion, flat = self.inventory_inputs(tokens, t_ref_s)
        return self.inventory(features, xyz, t, motion, use_time,
                              self.cfg.inventory.object_envelope, use_space, flat)

    # ------------------------------------------------------------------ language side

    def prefix_ids(self, n_visual: int) -> list[int]:
        """BOS + the template's text before the image + `n_visual` image placeholders."""
        return template.prefix_ids(self.tokenizer, self.cfg.template, self.cfg.add_bos,
                                   self.image_token_id, n_visual)

    def text_after(self, question: str, answer: str | None = None) -> QuestionText:
        """The template after the image with `question` (and, for training, `answer`)."""
        return template.text_after(self.tokenizer, self.cfg.template, question, answer)

    def input_ids(self, question: str, n_visual: int) -> list[int]:
        return self.prefix_ids(n_visual) + self.text_after(question).ids

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

    def forward(self, input_ids: torch.Tensor, visual: torch.Tensor | None,
                text: QuestionText | None = None, text_offset: int = 0, **lm_kwargs: Any) -> Any:
        """`input_ids (L,)` (`embed`) through the LM, a batch of one: `.logits (1, L, V)`, and
        with `output_hidden_states=True` the states the slot heads read (`slot_reader`)."""
        return self.lm(inputs_embeds=self.embed(input_ids, visual, text, text_offset)[None],
                       **lm_kwargs)

    def logits(self, question: str, tokens: VisualTokens, t_ref_s: float) -> torch.Tensor:
        """Logits `(L, V)` of the whole prompt (for checks against a reference model)."""
        visual = self.encode(tokens, t_ref_s)  # (M, D_lm)
        prefix = self.prefix_ids(visual.shape[0])
        text = self.text_after(question)
        return self(torch.tensor(prefix + text.ids, device=self.device), visual, text,
                    len(prefix)).logits[0]

    # ------------------------------------------------------------------ slot heads

    @property
    def slot_reader(self) -> SlotReader:
        """The slot heads with the settings they read: what a slot becomes (heads.py)."""
        return SlotReader(self.pointer, self.box_head, self.time_head, self.slot_pool, self.cfg,
                          self.time_token_id)

    def embed_answer(self, ids: Sequence[int]) -> torch.Tensor:
        """Answer token ids -> their LM input embeddings `(L, H)`."""
        return self.lm.get_input_embeddings()(
            torch.tensor(ids, dtype=torch.long, device=self.device))

    # ------------------------------------------------------------------ answers

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
        already. `on_text`, `cancel`: passed to each answer (`generation.greedy_answer`), one
        after the other."""
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
        inv = inventory
        if inv is None and self.words is not None:
            inv = self.scene_inventory(tokens, t_ref_s)
        slots = self.cfg.slot_heads
        pre_ids, out, keys = self.visual_prefix(tokens, t_ref_s, hidden=slots)
        tt = self.token_tensors(tokens, t_ref_s) if slots else None
        cache, handle = self.kv_cache(out), self.lm_handle
        answers = []
        for question, asked, names in zip(questions, asked_times, must_name):
            extra = cache.get_seq_length() - len(pre_ids)
            if extra > 0:
                cache.crop(-extra)  # back to the visual prefix
            text = self.text_after(question)
            q_emb = self.embed(torch.tensor(text.ids, device=self.device), None, text)  # (Lq, D)
            guide = None if inv is None else Guide(self.words, self.inventory_bias, inv,
                                                   text.ids)
            filler = None
            if tt is not None:
                filler = self.slot_reader.filler(
                    handle.ids, self.embed_answer, q_emb, self.question_time(text, q_emb),
                    text.first_time_s, keys, tt, guide, asked)
            answers.append(greedy_answer(handle, len(pre_ids), q_emb, cache, max_new_tokens,
                                         filler, guide, tuple(names) if guide else (),
                                         on_text=on_text, cancel=cancel))
        return answers

    def answer(self, question: str, tokens: VisualTokens, t_ref_s: float,
               max_new_tokens: int = MAX_NEW_TOKENS, *, asked_time_s: float = float("nan"),
               must_name: Sequence[int] = (),
               on_text: Callable[[str], None] | None = None,
               cancel: threading.Event | None = None) -> ModelAnswer:
        """The network's answer (`generate`), as the answer policy asks for it. `on_text` gets
        the text so far while the LM generates, and its last call is the answer's whole text,
        also where the text changed after generation (slots written); `cancel` stops
        generation (`generation.greedy_answer`)."""
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


def build_model(cfg: LLaVA4DConfig, tokenizer: Any) -> LLaVA4D:
    """A fresh LLaVA4D from a config (`LLaVA4D.from_config`)."""
    return LLaVA4D.from_config(cfg, tokenizer)


def load_llava4d(path: str | None = None, device: str = "cpu",
                 dtype: torch.dtype = torch.float32, fresh: tuple[str, ...] = ()) -> LLaVA4D:
    """`LLaVA4D.load` (model/loading.py); `path=None` is the shipped default."""
    return LLaVA4D.load(path, device=device, dtype=dtype, fresh=fresh)


def save_llava4d(model: LLaVA4D, path: str) -> None:
    model.save_pretrained(path)


