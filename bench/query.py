"""Query latency of the shipped default on this machine: visual tokens in, grounded answer out.

    python bench/query.py [--model DIR] [--threads N] [--repeats 5]

A 10 s synthetic scene is ingested through `core.pipeline.Ingestor` with the model's encoder;
then, per repeat, one grounded question is answered end to end (Buffer4D.tokens -> encode ->
prefix -> greedy decode with slot filling -> parse). Prints the stages and, last,
`query_latency_ms=<median end-to-end ms>`.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import torch

from llava4d_ros.core.pipeline import IngestConfig, Ingestor
from llava4d_ros.data.scene import frames, make_scene
from llava4d_ros.model.llava4d import LLaVA4D


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    model = LLaVA4D.from_pretrained(args.model)
    print(f"load: {1e3 * (time.perf_counter() - t0):.0f} ms ({model.model_id})")
    scene = make_scene(args.seed, duration_s=10.0)
    ing = Ingestor(IngestConfig(patch_grid=model.cfg.patch_grid), model.patch_encoder)
    for f in frames(scene):
        ing.ingest(f.stamp_s, f.rgb, f.depth_m, scene.cam, f.world_from_cam)
    obj = scene.objects[0]
    question = f"Where is the {obj.label} at 2.5s?"
    cfg = model.cfg

    tokens = ing.buffer.tokens(cfg.token_budget, cfg.voxel_m)
    t_ref = float(ing.buffer.time_range()[0])
    print(f"window: {len(ing.buffer)} keyframes over 10 s -> {len(tokens)} visual tokens")
    with torch.no_grad():
        t1 = time.perf_counter()
        visual = model.encode(tokens, t_ref)
        t2 = time.perf_counter()
        ids = torch.tensor(model.input_ids(question, visual.shape[0]))
        out = model.lm(inputs_embeds=model.embed(ids, visual, None)[None], use_cache=True)
        first = int(out.logits[0, -1].argmax())
        t3 = time.perf_counter()
    print(f"encode (prompt + fusion + projector): {1e3 * (t2 - t1):.1f} ms")
    print(f"ms to first token (encode + prefill of {ids.shape[0]} tokens): "
          f"{1e3 * (t3 - t1):.1f} ms (first token id {first})")

    e2e, ttft, rates = [], [], []
    for _ in range(args.repeats):
        s = time.perf_counter()
        tokens = ing.buffer.tokens(cfg.token_budget, cfg.voxel_m)
        model.generate(question, tokens, t_ref, max_new_tokens=1)
        first = time.perf_counter() - s
        s = time.perf_counter()
        tokens = ing.buffer.tokens(cfg.token_budget, cfg.voxel_m)
        answer = model.generate(question, tokens, t_ref)
        e = time.perf_counter() - s
        e2e.append(1e3 * e)
        ttft.append(1e3 * first)
        rates.append((answer.num_tokens - 1) / max(e - first, 1e-6))
    print(f"Q: {question}\nA: {answer.text}")
    print(f"end-to-end ms to first token (buffer tokens -> first answer token): "
          f"{statistics.median(ttft):.0f} ms")
    print(f"generated {answer.num_tokens} tokens (slots count as one); decode "
          f"~{statistics.median(rates):.0f} tokens/s (slot filling included)")
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory: {peak_mib:.0f} MiB; threads {args.threads}")
    print(f"end-to-end per question: median {statistics.median(e2e):.0f} ms, "
          f"min {min(e2e):.0f} ms over {args.repeats}")
    print(f"query_latency_ms={statistics.median(e2e):.0f}")


if __name__ == "__main__":
    main()
