"""LLaVA-4D on a pretrained LM: load time and question latency, untrained 4D parts.

    python bench/lm_backbone.py [--lm DIR_OR_GGUF] [--compressor resampler|pool|none]
                                [--queries 64] [--threads 2] [--repeats 3] [--max-new 24]

Builds `LLaVA4D.from_lm` on the SmolLM2-135M-Instruct that setup converted into the venv (or
`--lm`), with the colour-statistics encoder and a visual-token compressor, ingests a 10 s
synthetic scene through `core.pipeline.Ingestor` with the model's encoder and answers one
grounded question end to end through `LLaVA4D.answer`. The 4D parts, projector, compressor and
heads are untrained, so the answer's content means nothing: this measures the plumbing and the
cost. Prints the load time, the LM prefill length, time to first token, decode rate and, last,
`lm_query_latency_ms=<median end-to-end ms>`.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import torch

from llava4d_ros.core.pipeline import Ingestor
from llava4d_ros.data.scene import frames, make_scene
from llava4d_ros.model import backbones
from llava4d_ros.model.config import CompressorConfig
from llava4d_ros.model.llava4d import LLaVA4D


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lm", default=None, help="LM directory or .gguf (default: converted "
                                               "SmolLM2 in the venv)")
    ap.add_argument("--compressor", default="resampler", choices=("resampler", "pool", "none"))
    ap.add_argument("--queries", type=int, default=64, help="resampler: LM embeddings")
    ap.add_argument("--pool", type=int, default=16, help="pool: tokens per LM embedding")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-new", type=int, default=24)
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    lm = args.lm or backbones.default_lm_dir()

    comp = CompressorConfig(kind=args.compressor, queries=args.queries, pool=args.pool)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    model = LLaVA4D.from_lm(lm, compressor=comp)
    load_s = time.perf_counter() - t0
    print(f"load: {load_s:.1f} s ({model.model_id}, LM {model.cfg.lm_source.kind} "
          f"{model.cfg.lm_source.path}, {sum(p.numel() for p in model.lm.parameters()) / 1e6:.1f}"
          f" M LM parameters, vocab {len(model.tokenizer)})")
    scene = make_scene(args.seed, duration_s=10.0)
    ing = Ingestor(model.spec.ingest_config(), model.patch_encoder)
    for f in frames(scene):
        ing.ingest(f.stamp_s, f.rgb, f.depth_m, scene.cam, f.world_from_cam)
    tokens = ing.tokens()
    t_ref = float(ing.buffer.time_range()[0])
    question = f"Where is the {scene.objects[0].label} at 2.5s?"
    with torch.no_grad():
        m = model.encode(tokens, t_ref).shape[0]
    prefill = len(model.input_ids(question, m))
    print(f"window: {len(ing.buffer)} keyframes over 10 s -> {len(tokens)} visual tokens -> "
          f"compressor {comp.kind} -> {m} LM embeddings; prefill {prefill} tokens "
          f"(template: {model.cfg.template!r})")

    e2e, ttft, rates = [], [], []
    answer = None
    for _ in range(args.repeats):
        s = time.perf_counter()
        model.answer(question, ing.tokens(), t_ref,
                     max_new_tokens=1)
        first = time.perf_counter() - s
        s = time.perf_counter()
        answer = model.answer(question, ing.tokens(), t_ref,
                              max_new_tokens=args.max_new)
        e = time.perf_counter() - s
        e2e.append(1e3 * e)
        ttft.append(1e3 * first)
        rates.append((answer.num_tokens - 1) / max(e - first, 1e-6))
    print(f"Q: {question}\nA (untrained 4D parts): {answer.text!r}")
    print(f"time to first token: median {statistics.median(ttft):.0f} ms; generated "
          f"{answer.num_tokens} tokens at ~{statistics.median(rates):.1f} tokens/s")
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory: {peak_mib:.0f} MiB; threads {args.threads}")
    print(f"lm_query_latency_ms={statistics.median(e2e):.0f}")


if __name__ == "__main__":
    main()
