"""Query latency: visual tokens in, grounded answer out. Prints figures; asserts nothing.

    python bench/query.py [--model DIR] [--threads N] [--repeats 5]      # the shipped default
    python bench/query.py --config tiny|smollm2-135m|llava-3b|llava-1.5-7b [--device auto]
    python bench/query.py --memory-table [--tokens 2560]                  # computed, no weights
    python bench/query.py --stream [--model DIR] [--repeats 5]            # ~/ask, real node

Default (no --config): a 10 s synthetic scene is ingested through `core.pipeline.Ingestor`
with the model's encoder; then, per repeat, one grounded question is answered end to end
(Buffer4D.tokens -> encode -> prefix -> greedy decode with slot filling -> parse). Prints the
stages and, last, `query_latency_ms=<median end-to-end ms>`.

--config: a LLaVA-4D of that size is built from its configuration with random weights (nothing
is downloaded; `bench_config` below): a CLIP vision tower (ViT-L/14 at 336 px; a 2-layer one of
the same input for `tiny`) and a Llama-family LM, through `LLaVA4D.from_config`, in bf16 on
CUDA (fp32 on the CPU) with SDPA attention and the KV cache. A 10 s scene is ingested with the
CLIP encoder (vision ms per keyframe), the voxel size is chosen so the window fills the token
budget (2,560 visual tokens), and one grounded question is timed: ms to first token (buffer
tokens -> 4D prompt, fusion, projector -> prefill -> first token), then decode tokens/s of the
LM with its KV cache. Voxel pooling runs where the node runs it (`--pool device`: torch on
CUDA, numpy on the CPU; `--pool numpy` the CPU path everywhere). Then, per `--decode-modes`
(eager, static, compile: the node's `decode_mode`, model/fast_decode.py; static and compile are
refused on the CPU), the LM's own `generate` on the visual prefix, as an answer decodes it,
forced to `--decode-tokens` tokens: ms to its first token and decode tokens/s, one line each.
Last lines `key=value`; on CUDA also `gpu_ttft_ms=<n>`.

--stream: the node itself (in this process, real rclpy and DDS on loopback) with a 10 s scene
fed to its engine, and goals sent to `~/ask` by an action client: ms from sending a goal to its
first feedback (a grounded question and a description), and for a description cancelled at its
first feedback, ms from the cancel request to its acceptance and to the cancelled result.
"""

from __future__ import annotations

import argparse
import inspect
import resource
import statistics
import threading
import time
from typing import Any

import numpy as np
import torch

from llava4d_ros.core.pipeline import Ingestor
from llava4d_ros.data.scene import frames, make_scene
from llava4d_ros.model.config import LLaVA4DConfig, VisionConfig
from llava4d_ros.model.llava4d import LLaVA4D, apply_token_budget

CONFIGS = ("tiny", "smollm2-135m", "llava-3b", "llava-1.5-7b")
GiB = 2.0**30


def clip_vision(tiny: bool = False) -> dict[str, Any]:
    """CLIP ViT-L/14 at 336 px (LLaVA-1.5's tower: openai/clip-vit-large-patch14-336), or a
    2-layer, 64-wide tower of the same input size and patch grid (24 x 24) for `tiny`."""
    from transformers import CLIPVisionConfig

    size = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4) if tiny else dict(
        hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16)
    cfg = CLIPVisionConfig(image_size=336, patch_size=14, projection_dim=768,
                           hidden_act="quick_gelu", layer_norm_eps=1e-5, **size).to_dict()
    cfg["attn_implementation"] = "sdpa"
    return cfg


def llama(hidden: int, layers: int, heads: int, kv_heads: int, intermediate: int, vocab: int,
          tie: bool, rope_theta: float) -> dict[str, Any]:
    return {"model_type": "llama", "vocab_size": vocab, "hidden_size": hidden,
            "intermediate_size": intermediate, "num_hidden_layers": layers,
            "num_attention_heads": heads, "num_key_value_heads": kv_heads,
            "max_position_embeddings": 8192, "rms_norm_eps": 1e-5, "rope_theta": rope_theta,
            "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
            "tie_word_embeddings": tie, "attn_implementation": "sdpa"}


def lm_config(name: str, vocab_size: int) -> dict[str, Any]:
    """The LM of each size, as its published config.json has it (random weights here).
    tiny: 2 layers of 64, our vocabulary. smollm2-135m: SmolLM2-135M (the LM the project can
    load offline). llava-3b: Llama-3.2-3B (its 128k vocabulary; rope scaling left out, it does
    not change the cost). llava-1.5-7b: Vicuna-7B v1.5 = Llama-2-7B (LLaVA-1.5-7B's LM)."""
    if name == "tiny":
        return llama(64, 2, 4, 4, 192, vocab_size, True, 1e4)
    if name == "smollm2-135m":
        return llama(576, 30, 9, 3, 1536, 49152, True, 1e5)
    if name == "llava-3b":
        return llama(3072, 28, 24, 8, 8192, 128256, True, 5e5)
    if name == "llava-1.5-7b":
        return llama(4096, 32, 32, 32, 11008, 32000, False, 1e4)
    raise ValueError(f"unknown config {name!r}; one of {CONFIGS}")


def bench_config(name: str, vocab_size: int, voxel_m: float = 0.2) -> LLaVA4DConfig:
    """A LLaVA-4D of LLaVA-1.5's layout (CLIP at its native 24 x 24 grid, second-to-last
    layer, no slot heads, as `from_llava_hf` builds it) around the LM of `name`."""
    clip = clip_vision(tiny=name == "tiny")
    d_v = clip["hidden_size"]
    return LLaVA4DConfig(
        lm=lm_config(name, vocab_size),
        vision=VisionConfig(kind="clip", feature_dim=d_v, clip_layer=-2, clip_config=clip),
        slot_heads=False, patch_grid=(24, 24), fusion_heads=8 if d_v % 8 == 0 else 1,
        token_budget=2560, voxel_m=voxel_m, model_id=f"bench-{name}-random")


def _tokenizer() -> Any:
    from llava4d_ros.data.instructions import vocabulary
    from llava4d_ros.model.tokenizer import build_tokenizer

    return build_tokenizer(vocabulary())


def count_parameters(cfg: LLaVA4DConfig, tokenizer: Any) -> dict[str, int]:
    """Parameters of the LM, the vision tower and the rest (4D prompt, fusion, projector),
    counted on the meta device (no memory). The tower is allocated empty on the CPU (its
    pages never touched): the CLIP encoder moves it there when the model is built."""
    from llava4d_ros.model import checkpoint

    with torch.device("meta"):
        tower = checkpoint.build_vision_tower(cfg.vision)
    tower = tower.to_empty(device="cpu")
    with torch.device("meta"):
        model = LLaVA4D(cfg, checkpoint.build_lm(cfg.lm), tokenizer, vision_tower=tower)
    n_lm = sum(p.numel() for p in model.lm.parameters())
    n_vis = sum(p.numel() for p in model.vision_tower.parameters())
    n_all = sum(p.numel() for p in model.parameters())
    return {"lm": n_lm, "vision": n_vis, "rest": n_all - n_lm - n_vis}


def memory_table(n_tokens: int, answer_tokens: int = 96, prompt_tokens: int = 40) -> list[str]:
    """Markdown rows: GiB of weights (LM at bf16 / int8 / int4, the tower and 4D parts at bf16)
    + KV cache (bf16) for `n_tokens` visual tokens + prompt + answer + prefill activations,
    and which Jetson fits it (2 GiB left to the OS, ROS and the node)."""
    tok = _tokenizer()
    seq = n_tokens + prompt_tokens + answer_tokens
    boards = (("Orin Nano 8 GB", 8), ("Orin NX 16 GB", 16), ("AGX Orin 32 GB", 32),
              ("AGX Orin 64 GB", 64))
    rows = ["| config | LM params | vision + 4D params | LM weights GiB | KV cache GiB | "
            "activations GiB | total GiB | fits (2 GiB kept for the OS, ROS, the node) |",
            "|---|---|---|---|---|---|---|---|"]
    for name in CONFIGS[1:]:
        cfg = bench_config(name, len(tok))
        n = count_parameters(cfg, tok)
        lm = cfg.lm
        head_dim = lm["hidden_size"] // lm["num_attention_heads"]
        kv = 2 * lm["num_hidden_layers"] * lm["num_key_value_heads"] * head_dim * seq * 2
        # prefill peak beyond weights and cache: the logits of every prompt position (bf16),
        # one layer's MLP (gate, up, product) and a few hidden-state copies; SDPA's fused
        # kernels keep attention O(seq), not seq^2
        act = seq * (lm["vocab_size"] + 3 * lm["intermediate_size"] + 4 * lm["hidden_size"]) * 2
        other = (n["vision"] + n["rest"]) * 2
        for prec, bytes_per in (("bf16", 2.0), ("int8", 1.0), ("int4", 0.5 * 1.03)):
            # int4: 4-bit weights + a bf16 scale per group of 64 (~3 %)
            w = n["lm"] * bytes_per
            total = w + other + kv + act
            fits = [b for b, gib in boards if total / GiB <= gib - 2]
            rows.append(f"| {name} {prec} | {n['lm'] / 1e9:.2f} B | "
                        f"{(n['vision'] + n['rest']) / 1e6:.0f} M | {w / GiB:.2f} | "
                        f"{kv / GiB:.2f} | {act / GiB:.2f} | {total / GiB:.2f} | "
                        f"{', '.join(fits) if fits else 'none'} |")
    return rows


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class TimedEncoder:
    """The model's `PatchEncoder`, timing each call (ms, synchronised on CUDA)."""

    def __init__(self, encoder: Any, device: torch.device):
        self.encoder, self.device = encoder, device
        self.feature_dim = encoder.feature_dim
        self.ms: list[float] = []

    def __call__(self, rgb: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
        _sync(self.device)
        t0 = time.perf_counter()
        out = self.encoder(rgb, grid)
        _sync(self.device)
        self.ms.append(1e3 * (time.perf_counter() - t0))
        return out


def _kv_cache(out: Any, cache_kw: str) -> Any:
    """The KV cache of an LM output: `cache` on transformers >= 5 (where reading
    `past_key_values` warns), `past_key_values` before."""
    return out.cache if cache_kw == "cache" else out.past_key_values


def fill_budget(ing: Ingestor, budget: int) -> tuple[Any, float]:
    """`budget` tokens of the window: pooled at the largest voxel (of 0.2, 0.1, 0.05 m) that
    gives at least that many, then thinned to `budget` by the model's rule
    (`apply_token_budget`; the buffer itself would coarsen the voxels to stay within it)."""
    for voxel in (0.2, 0.1, 0.05):
        tokens = ing.buffer.tokens(10**9, voxel)
        if len(tokens) >= budget:
            break
    return apply_token_budget(tokens, budget), voxel


def time_decode_modes(model: LLaVA4D, tokens: Any, t_ref: float, question: str,
                      modes: list[str], n_tokens: int, repeats: int) -> list[str]:
    """Per decode mode, the LM's `generate` after the visual prefix (the question's prefill
    and `n_tokens` forced tokens, as `generation.greedy_answer` runs it): `key=value` lines
    with the ms of the question's prefill to its first token (the visual prefix is in the
    cache already) and decode tokens/s (medians; two warm-up runs, which compile)."""
    from transformers import GenerationConfig

    from llava4d_ros.model import fast_decode

    device = model.device
    with torch.no_grad():
        pre_ids, out, _ = model.visual_prefix(tokens, t_ref, hidden=False)
        cache = model.kv_cache(out)
        text = model.text_after(question)
        q_emb = model.embed(torch.tensor(text.ids, device=device), None, text)  # (Lq, D)
    embeds = torch.cat([q_emb.new_zeros(len(pre_ids), q_emb.shape[1]), q_emb])[None]
    mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=device)
    lines = []
    for mode in modes:
        try:
            fast_decode.check_decode_mode(mode, device, model.lm)
        except ValueError as exc:
            lines.append(f"decode_mode={mode} refused: {exc}")
            continue

        def run(n: int) -> float:
            with torch.no_grad():
                extra = cache.get_seq_length() - len(pre_ids)
                if extra > 0:
                    cache.crop(-extra)  # back to the visual prefix
                gen = cache if mode == "eager" else fast_decode.static_copy(
                    cache, model.lm.config, fast_decode.cache_length(embeds.shape[1] + n + 1))
                cfg = GenerationConfig(max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                       num_beams=1, pad_token_id=0,
                                       **fast_decode.generation_options(mode))
                _sync(device)
                t0 = time.perf_counter()
                model.lm.generate(inputs_embeds=embeds, attention_mask=mask,
                                  generation_config=cfg, **{model.cache_kw: gen})
                _sync(device)
                return time.perf_counter() - t0

        for _ in range(2):
            run(n_tokens)
        first = [run(1) for _ in range(repeats)]
        full = [run(n_tokens) for _ in range(repeats)]
        rate = (n_tokens - 1) / max(statistics.median(full) - statistics.median(first), 1e-9)
        lines.append(f"decode_mode={mode} "
                     f"question_first_token_ms={1e3 * statistics.median(first):.1f} "
                     f"decode_tok_s={rate:.1f}")
    return lines


def run_config(args: argparse.Namespace) -> None:
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if args.device == "auto" else args.device))
    dtype = {"auto": torch.bfloat16 if device.type == "cuda" else torch.float32,
             "bfloat16": torch.bfloat16, "float16": torch.float16,
             "float32": torch.float32}[args.dtype]
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    tok = _tokenizer()
    cfg = bench_config(args.config, len(tok))
    n = count_parameters(cfg, tok)
    print(f"config {args.config}: LM {n['lm'] / 1e6:.1f} M, vision {n['vision'] / 1e6:.1f} M, "
          f"4D + projector {n['rest'] / 1e6:.1f} M parameters (random weights)")
    if device.type == "cuda":
        print(f"device: {torch.cuda.get_device_name(device)}, {dtype}")
    t0 = time.perf_counter()
    torch.manual_seed(0)
    with torch.device(device):  # weights are created (and initialised) on the device
        model = LLaVA4D.from_config(cfg, tok)
    model = model.to(device=device, dtype=dtype).eval()
    if args.quantization != "none":  # the node's path (runtime.load_model), refused on a CPU
        from llava4d_ros.model.runtime import quantization_backend, quantize_lm

        backend = quantization_backend(args.quantization, str(device))
        quantize_lm(model.lm, args.quantization, backend)
        print(f"LM quantized to {args.quantization} with {backend}")
    _sync(device)
    print(f"build: {time.perf_counter() - t0:.1f} s; attention "
          f"{model.lm.config._attn_implementation}, vision "
          f"{model.vision_tower.config._attn_implementation}")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    scene = make_scene(args.seed, duration_s=10.0)
    encoder = TimedEncoder(model.patch_encoder, device)
    ing = Ingestor(model.spec.ingest_config(), encoder)  # as the node ingests for it
    for f in frames(scene):
        ing.ingest(f.stamp_s, f.rgb, f.depth_m, scene.cam, f.world_from_cam)
    vision_ms = statistics.median(encoder.ms[1:] or encoder.ms)  # the first call warms up
    tokens, voxel = fill_budget(ing, cfg.token_budget)
    t_ref = float(ing.buffer.time_range()[0])
    pool_on = None  # numpy on the CPU
    if args.pool == "device" and device.type == "cuda":
        pool_on = str(device)  # where the node pools for a CUDA model (engine.pool_device)
    print(f"window: {len(ing.buffer)} keyframes over 10 s -> {len(tokens)} visual tokens at "
          f"{voxel} m voxels (budget {cfg.token_budget})")
    print(f"vision encoder: median {vision_ms:.1f} ms per keyframe over {len(encoder.ms)}")

    question = f"Where is the {scene.objects[0].label} at 2.5s?"
    ttft, decode_rates, pool_ms = [], [], []
    cache_kw = "cache" if "cache" in inspect.signature(model.lm.forward).parameters else (
        "past_key_values")
    for _ in range(args.repeats + 1):  # the first run warms up kernels and caches
        with torch.no_grad():
            _sync(device)
            t1 = time.perf_counter()
            tokens = apply_token_budget(ing.buffer.tokens(10**9, voxel, device=pool_on),
                                        cfg.token_budget)
            pool_ms.append(1e3 * (time.perf_counter() - t1))
            visual = model.encode(tokens, t_ref)  # (N, D_lm)
            ids = torch.tensor(model.input_ids(question, visual.shape[0]), device=device)
            out = model.lm(inputs_embeds=model.embed(ids, visual, None)[None], use_cache=True)
            nxt = out.logits[0, -1].argmax()
            int(nxt)  # waits for the device
            t2 = time.perf_counter()
            ttft.append(1e3 * (t2 - t1))
            cache = _kv_cache(out, cache_kw)
            emb = model.lm.get_input_embeddings()
            _sync(device)
            t3 = time.perf_counter()
            for _ in range(args.decode_tokens):
                out = model.lm(inputs_embeds=emb(nxt.view(1, 1)), use_cache=True,
                               **{cache_kw: cache})
                cache = _kv_cache(out, cache_kw)
                nxt = out.logits[0, -1].argmax()
            int(nxt)
            decode_rates.append(args.decode_tokens / (time.perf_counter() - t3))
    ttft, decode_rates, pool_ms = ttft[1:], decode_rates[1:], pool_ms[1:]
    with torch.no_grad():
        answer = model.generate(question, tokens, t_ref, max_new_tokens=16)
    print(f"prompt: {ids.shape[0]} tokens ({visual.shape[0]} visual); cache "
          f"{type(cache).__name__}")
    print(f"ms to first token (buffer tokens -> 4D prompt, fusion, projector -> prefill -> "
          f"first token): median {statistics.median(ttft):.1f}, min {min(ttft):.1f} over "
          f"{len(ttft)}; of which voxel pooling ({pool_on or 'numpy, CPU'}: Buffer4D.tokens) "
          f"median {statistics.median(pool_ms):.1f}")
    print(f"decode: median {statistics.median(decode_rates):.1f} tokens/s over "
          f"{args.decode_tokens} tokens with the KV cache")
    print(f"generate() end to end: {answer.num_tokens} tokens (random weights: text is noise)")
    for line in time_decode_modes(model, tokens, t_ref, question, args.decode_modes,
                                  args.decode_tokens, args.repeats):
        print(f"config={args.config} device={device.type} {line}")
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
        print(f"peak GPU memory (after build): {peak:.0f} MiB")
        mem = f"peak_gpu_mib={peak:.0f}"
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak resident memory: {peak:.0f} MiB; threads {args.threads}")
        mem = f"peak_rss_mib={peak:.0f}"
    print(f"config={args.config} device={device.type} dtype={str(dtype).split('.')[-1]} "
          f"quantization={args.quantization} "
          f"vision_ms_per_keyframe={vision_ms:.1f} pool={pool_on or 'numpy'} "
          f"pool_ms={statistics.median(pool_ms):.1f} ttft_ms={statistics.median(ttft):.0f} "
          f"decode_tok_s={statistics.median(decode_rates):.1f} {mem}")
    if device.type == "cuda":
        print(f"gpu_ttft_ms={statistics.median(ttft):.0f}")


def run_default(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    model = LLaVA4D.from_pretrained(args.model)
    print(f"load: {1e3 * (time.perf_counter() - t0):.0f} ms ({model.model_id})")
    scene = make_scene(args.seed, duration_s=10.0)
    ing = Ingestor(model.spec.ingest_config(), model.patch_encoder)
    for f in frames(scene):
        ing.ingest(f.stamp_s, f.rgb, f.depth_m, scene.cam, f.world_from_cam)
    obj = scene.objects[0]
    question = f"Where is the {obj.label} at 2.5s?"
    tokens = ing.tokens()
    t_ref = float(ing.buffer.time_range()[0])
    print(f"window: {len(ing.buffer)} keyframes -> {len(tokens)} visual tokens")
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
        tokens = ing.tokens()
        model.generate(question, tokens, t_ref, max_new_tokens=1)
        first = time.perf_counter() - s
        s = time.perf_counter()
        tokens = ing.tokens()
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


def run_stream(args: argparse.Namespace) -> None:
    """`~/ask` of the node in this process: first feedback and cancel, see the docstring."""
    from llava4d_ros.demo import keep_dds_local

    keep_dds_local()
    import rclpy
    from rclpy.action import ActionClient
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter
    from rclpy.signals import SignalHandlerOptions

    from llava4d_ros.action import Ask
    from llava4d_ros.core.geometry import quat_from_matrix
    from llava4d_ros.data.bagtools import LINK_FROM_OPTICAL, world_from_link
    from llava4d_ros.ros.node import Llava4dNode, executor_threads

    # no rclpy signal handlers: they only shut the context down, and a SIGTERM then left the
    # process waiting on a goal that could never be answered
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    params = {"device": "cpu", "cpu_threads": args.threads, "autostart": False}
    if args.model:
        params["model_path"] = args.model
    node = Llava4dNode(parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
    peer = rclpy.create_node("llava4d_bench_stream")
    client = ActionClient(peer, Ask, "/llava4d/ask")
    executor = MultiThreadedExecutor(num_threads=executor_threads(node) + 2)
    executor.add_node(node)
    executor.add_node(peer)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        t0 = time.perf_counter()
        ok = TransitionCallbackReturn.SUCCESS
        if node.trigger_configure() != ok or node.trigger_activate() != ok:
            raise SystemExit("bench/query.py --stream: the node did not activate (log above)")
        print(f"node active in {time.perf_counter() - t0:.1f} s "
              f"({node.engine.model.model_id}, cpu_threads {args.threads})")
        # the scene straight into the node's engine (TF, then images): the goals are the bench
        engine, optical = node.engine, "camera_color_optical_frame"
        engine.add_transform("camera_link", optical, 0, LINK_FROM_OPTICAL[:3, 3],
                             quat_from_matrix(LINK_FROM_OPTICAL), True)
        scene = make_scene(args.seed, duration_s=10.0)
        for f in frames(scene):
            t_ns = int(round((1.7e9 + f.stamp_s) * 1e9))
            w = world_from_link(f.world_from_cam)
            engine.add_transform("map", "camera_link", t_ns, w[:3, 3], quat_from_matrix(w),
                                 False)
            engine.add_image("info", t_ns, scene.cam)
            engine.add_image("depth", t_ns, f.depth_m)
            engine.add_image("rgb", t_ns, (optical, f.rgb))
        print(f"window: {engine.stats.keyframes} keyframes of a 10 s scene")
        if not client.wait_for_server(timeout_sec=30):
            raise SystemExit("bench/query.py --stream: ~/ask never appeared")
        obj = scene.objects[0]
        questions = (f"Where is the {obj.label} at 2.5s?", "Describe the scene.")

        def send(question: str, on_first=None) -> dict[str, float]:
            """Send a goal; ms of the first feedback, the result, and (with `on_first`,
            called at the first feedback with the goal handle) what it measures."""
            got: dict[str, float] = {"feedback": 0}
            done = threading.Event()
            t_send = time.perf_counter()

            def feedback(_msg) -> None:
                got["feedback"] += 1
                if "first_ms" not in got:
                    got["first_ms"] = 1e3 * (time.perf_counter() - t_send)
                    if on_first is not None:
                        on_first(handle_box[0], got)

            handle_box: list = []
            future = client.send_goal_async(Ask.Goal(question=question),
                                            feedback_callback=feedback)
            deadline = time.perf_counter() + 30
            while not future.done():
                if time.perf_counter() > deadline or not spinner.is_alive():
                    raise SystemExit(f"bench/query.py --stream: {question!r} never accepted "
                                     f"(executor {'running' if spinner.is_alive() else 'dead'})")
                time.sleep(0.001)
            handle_box.append(future.result())
            result = handle_box[0].get_result_async()
            result.add_done_callback(lambda _f: done.set())
            if not done.wait(120):
                raise SystemExit(f"bench/query.py --stream: no result for {question!r}")
            got["result_ms"] = 1e3 * (time.perf_counter() - t_send)
            got["done_at"] = time.perf_counter()
            got["text"] = result.result().result.answer.text
            got["cancelled"] = result.result().result.cancelled
            return got

        def cancel_now(handle, got: dict) -> None:
            got["cancel_at"] = time.perf_counter()
            acked = handle.cancel_goal_async()
            acked.add_done_callback(lambda _f: got.__setitem__(
                "ack_ms", 1e3 * (time.perf_counter() - got["cancel_at"])))

        for question in questions:
            send(question)  # warm-up
            runs = [send(question) for _ in range(args.repeats)]
            print(f"Q: {question}\nA: {runs[-1]['text']}")
            print(f"  first feedback median {statistics.median(r['first_ms'] for r in runs):.0f}"
                  f" ms, whole answer {statistics.median(r['result_ms'] for r in runs):.0f} ms, "
                  f"{statistics.median(r['feedback'] for r in runs):.0f} feedback messages")
        first = [send(q)["first_ms"] for q in questions for _ in range(args.repeats)]
        cancels = [send(questions[1], cancel_now) for _ in range(args.repeats)]
        ack = [c["ack_ms"] for c in cancels]
        stopped = [1e3 * (c["done_at"] - c["cancel_at"]) for c in cancels]
        print(f"cancelled at the first feedback: {sum(c['cancelled'] for c in cancels)} of "
              f"{len(cancels)} marked cancelled; said until then: {cancels[-1]['text']!r}")
        print(f"stream_first_feedback_ms={statistics.median(first):.0f} "
              f"(max {max(first):.0f}) stream_cancel_ack_ms={statistics.median(ack):.0f} "
              f"(max {max(ack):.0f}) stream_cancel_result_ms={statistics.median(stopped):.0f} "
              f"(max {max(stopped):.0f}) threads={args.threads}")
    finally:
        executor.shutdown()
        node.destroy_node()
        peer.destroy_node()
        rclpy.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="model directory (default: the shipped one)")
    ap.add_argument("--config", default=None, choices=CONFIGS,
                    help="a random-weight LLaVA-4D of this size instead of --model")
    ap.add_argument("--memory-table", action="store_true",
                    help="print the computed memory table of the real-size configs and exit")
    ap.add_argument("--device", default="auto", help="--config: auto, cpu, cuda, cuda:N")
    ap.add_argument("--dtype", default="auto",
                    choices=("auto", "bfloat16", "float16", "float32"),
                    help="--config: auto = bfloat16 on CUDA, float32 on the CPU")
    ap.add_argument("--quantization", default="none", choices=("none", "int8", "int4"),
                    help="--config: the LM's weights, as the node's quantization parameter")
    ap.add_argument("--decode-tokens", type=int, default=32)
    ap.add_argument("--decode-modes", nargs="+", default=["eager"],
                    choices=("eager", "static", "compile"),
                    help="--config: decode modes to time (the node's decode_mode)")
    ap.add_argument("--pool", default="device", choices=("device", "numpy"),
                    help="--config: voxel pooling where the node runs it, or numpy")
    ap.add_argument("--stream", action="store_true",
                    help="time ~/ask of the node: first feedback and cancel")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args()
    if args.memory_table:
        print("\n".join(memory_table(2560)))
    elif args.stream:
        run_stream(args)
    elif args.config:
        run_config(args)
    else:
        run_default(args)


if __name__ == "__main__":
    main()
