"""Training recipes by name (`python -m llava4d_ros.train --config <name>`).

A preset is the whole recipe of a model: its size, the data it reads and the steps of each
stage. The command's flags override single fields (`Preset.override`); how each preset came to
be is in docs/TRAINING.md (and docs/RESULTS.md, the SmolLM2 section, for `smollm2`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

STAGES = (1, 2, 3, 4, 5)
PHRASINGS = ("template", "train", "heldout")


@dataclass(frozen=True)
class Preset:
    hidden: int  # a new LM's size (0 for a pretrained LM, which brings its own)
    layers: int
    heads: int
    steps: tuple[int, int, int]  # window steps of stages 1, 2, 3
    lr: float
    train_scenes: int
    test_scenes: int
    text_warmup: int  # stage 1's text-only steps: a new LM learns the answer forms first
    inventory_scenes: int  # stage 5: cheap per scene, and its shape classifier wants objects
    refine_steps: int = 6000  # stage 4's head steps
    refine_scenes: int = 0  # stage 4's training scenes (0: train_scenes); a pass each, no steps
    bias_steps: int = 3000  # stage 5's output-bias steps
    # a pretrained LM (`lm`: a directory, a .gguf, or "smollm2" for the one setup converts):
    # the LM stays frozen but for LoRA adapters and the rows of the tokens we add
    lm: str | None = None
    lora_rank: int = 0
    compressor: str = "none"
    samples_per_window: int = 0  # 0: all of a window's questions in each step
    phrasing: str = "template"  # the instruction data's wording (data/instructions.py)
    honest: bool = False  # with the questions whose answer is "no" / "I do not see it"
    head_steps: int = 8  # extra steps of the slot heads alone per window step (stages 2, 3)
    stages: tuple[int, ...] = STAGES

    def __post_init__(self) -> None:
        if not self.stages or any(s not in STAGES for s in self.stages):
            raise ValueError(f"stages must be among {STAGES}, got {self.stages}")
        if self.phrasing not in PHRASINGS:
            raise ValueError(f"phrasing must be one of {PHRASINGS}, got {self.phrasing!r}")
        if len(self.steps) != 3:
            raise ValueError(f"steps: three counts (stages 1-3), got {self.steps}")

    def override(self, **fields: Any) -> Preset:
        """This recipe with the given fields changed; a field given as None keeps the preset's
        value (the command's flags: unset is None), and so do a scene count of 0, an empty
        `lm` and empty `stages` (as the command always read them)."""
        keep_if_empty = ("train_scenes", "refine_scenes", "inventory_scenes", "lm", "stages")
        changed = {k: v for k, v in fields.items()
                   if v is not None and not (k in keep_if_empty and not v)}
        if "steps" in changed:
            changed["steps"] = tuple(changed["steps"])
        if "stages" in changed:
            changed["stages"] = tuple(changed["stages"])
        return replace(self, **changed)


PRESETS = {
    # the shipped default's recipe
    "small": Preset(hidden=128, layers=3, heads=4, steps=(150, 250, 450), lr=1e-3,
                    train_scenes=320, test_scenes=40, text_warmup=300, inventory_scenes=640),
    # the default's recipe on data in the training-side phrasing families plus the honest
    # questions, with the vocabulary of both; 240 scenes (the SmolLM2 run's scene cache)
    "small-honest": Preset(hidden=128, layers=3, heads=4, steps=(150, 250, 450), lr=1e-3,
                           train_scenes=240, test_scenes=40, text_warmup=300,
                           inventory_scenes=240, phrasing="train", honest=True),
    # LLaVA-4D on SmolLM2-135M-Instruct with LoRA: a window step costs seconds on the CPU, so
    # fewer LM steps, 12 questions a window and two extra head steps; stage 4 reads more
    # scenes than stages 1-3 (a forward pass each) because its heads were the gap
    "smollm2": Preset(hidden=0, layers=0, heads=0, steps=(80, 80, 420), lr=6e-4,
                      train_scenes=240, test_scenes=40, text_warmup=0, inventory_scenes=240,
                      refine_steps=6000, refine_scenes=480, lm="smollm2", lora_rank=8,
                      compressor="resampler", samples_per_window=12, phrasing="train",
                      honest=True, head_steps=2),
    # plumbing tests: every stage in seconds
    "tiny": Preset(hidden=32, layers=2, heads=4, steps=(2, 2, 2), lr=1e-3, train_scenes=2,
                   test_scenes=1, text_warmup=2, inventory_scenes=2, refine_steps=20,
                   bias_steps=20),
}


def sample_kwargs(preset: Preset) -> dict[str, Any]:
    """`samples_for_scene` options of a preset's data (empty: the template tasks)."""
    kw: dict[str, Any] = {}
    if preset.phrasing != "template":
        kw["phrasing"] = preset.phrasing
    if preset.honest:
        kw["honest"] = True
    return kw
