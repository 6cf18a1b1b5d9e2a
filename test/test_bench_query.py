"""bench/query.py's real-size configs: the architectures are the published ones (parameter
counts on the meta device), the memory table follows from them, and the tiny config builds
and answers on the CPU through the same path the GPU bench takes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from helpers.tiny_model import random_tokens

BENCH = Path(__file__).resolve().parents[1] / "bench" / "query.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_query", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name, lm_billions, vision_millions", [
    ("llava-1.5-7b", 6.738, 303.5),  # Llama-2-7B / Vicuna-7B; CLIP ViT-L/14-336
    ("llava-3b", 3.213, 303.5),  # Llama-3.2-3B (tied embeddings)
    ("smollm2-135m", 0.1345, 303.5),
])
def test_real_size_configs_have_the_published_sizes(bench, name, lm_billions, vision_millions):
    tok = bench._tokenizer()
    n = bench.count_parameters(bench.bench_config(name, len(tok)), tok)
    assert n["lm"] / 1e9 == pytest.approx(lm_billions, rel=2e-3)
    assert n["vision"] / 1e6 == pytest.approx(vision_millions, rel=2e-3)
    assert 0 < n["rest"] < 0.01 * n["lm"] + 5e6  # 4D prompt, fusion, projector: small


def test_memory_table_orders_precisions_and_boards(bench):
    rows = bench.memory_table(2560)[2:]
    total = {r.split("|")[1].strip(): float(r.split("|")[7]) for r in rows}
    assert total["llava-1.5-7b bf16"] > total["llava-1.5-7b int8"] > total["llava-1.5-7b int4"]
    assert 12 < total["llava-1.5-7b bf16"] < 16  # 6.74 B x 2 bytes + cache + the rest
    fits = {r.split("|")[1].strip(): r.split("|")[8] for r in rows}
    assert "Orin Nano" not in fits["llava-1.5-7b bf16"] and "AGX Orin 32" in fits[
        "llava-1.5-7b bf16"]
    assert "Orin Nano" in fits["llava-1.5-7b int4"]


def test_tiny_config_answers_at_the_full_token_budget(bench):
    tok = bench._tokenizer()
    cfg = bench.bench_config("tiny", len(tok))
    torch.manual_seed(0)
    model = bench.LLaVA4D.from_config(cfg, tok).eval()
    tokens = random_tokens(3000, d=cfg.vision.feature_dim)
    visual = model.encode(tokens, 50.0)
    assert visual.shape == (cfg.token_budget, cfg.lm_hidden)  # the budget keeps 2,560
    answer = model.generate("Where is the red cube at 2.5s?", tokens, 50.0, max_new_tokens=4)
    assert 1 <= answer.num_tokens <= 4
    rgb = torch.randint(0, 256, (240, 320, 3), dtype=torch.uint8).numpy()
    feats = model.patch_encoder(rgb, cfg.patch_grid)  # CLIP at 336 px, native 24 x 24 grid
    assert feats.shape == (24 * 24, cfg.vision.feature_dim)


def test_decode_modes_are_timed_on_the_answers_path_and_refused_on_the_cpu(bench):
    """bench/gpu.sh's decode tokens/s per mode, here on the CPU: eager is timed; static and
    compile are refused with the reason, as the node refuses them."""
    tok = bench._tokenizer()
    cfg = bench.bench_config("tiny", len(tok))
    torch.manual_seed(0)
    model = bench.LLaVA4D.from_config(cfg, tok).eval()
    lines = bench.time_decode_modes(model, random_tokens(300, d=cfg.vision.feature_dim), 50.0,
                                    "Where is the red cube at 2.5s?",
                                    ["eager", "static", "compile"], 4, 1)
    eager, static, compiled = lines
    assert eager.startswith("decode_mode=eager question_first_token_ms=")
    assert float(eager.split("decode_tok_s=")[1]) > 0
    assert "refused" in static and "needs a CUDA device" in static and "refused" in compiled
