"""Data-parallel training: two torchrun processes (gloo, one window each per step) of
`python -m llava4d_ros.train` take the same steps as one process (`training.trainer.train`)
that accumulates the same global batch of two windows."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch
from safetensors.torch import load_file

from llava4d_ros.training.trainer import TrainConfig, train

STEPS = ["--stages", "1,2,3", "--steps", "2", "2", "2", "--text-warmup", "0",
         "--head-steps", "2", "--threads", "1"]


def losses(run: str) -> dict[tuple[int, int], dict[str, float]]:
    with open(os.path.join(run, "train_log.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return {(r.pop("stage"), r.pop("step")): {k: v for k, v in r.items() if k != "s"}
            for r in rows}


def weights(run: str) -> dict[str, torch.Tensor]:
    return load_file(os.path.join(run, "final", "model.safetensors"))


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def test_two_processes_match_one_on_the_same_global_batch(tmp_path):
    cache = str(tmp_path / "cache")
    one, one_w1, two = (str(tmp_path / n) for n in ("one", "one_w1", "two"))
    common = ["--config", "tiny", "--cache", cache, *STEPS]
    # one process through the package, two through the command: the flags mean the same
    recipe = {"stages": (1, 2, 3), "steps": (2, 2, 2), "text_warmup": 0, "head_steps": 2}
    for out, per_step in ((one, 2), (one_w1, 1)):
        train(TrainConfig.from_preset("tiny", out=out, cache=cache, threads=1,
                                      windows_per_step=per_step, **recipe))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
         "2", "-m", "llava4d_ros.train", "--out", two, *common],
        env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "world_size=2" in proc.stdout

    l1, l2 = losses(one), losses(two)
    assert l1.keys() == l2.keys() and len(l1) == 6  # 3 stages x 2 steps, none skipped
    for key in l1:
        for name, v in l1[key].items():
            assert abs(v - l2[key][name]) <= 2e-4 + 1e-4 * abs(v), (key, name)

    w1, w2, w_small = weights(one), weights(two), weights(one_w1)
    same = max_diff(w1, w2)
    # one window per step instead of two is a different run: its weights differ by far more
    # than the two ways of taking the same steps
    other = max_diff(w1, w_small)
    assert same < 1e-5 and other > 100 * same, (same, other)
