"""The two commands as a user runs them (a subprocess each: no test imports a CLI module):
every flag they had before training/ took their code is still there, the evaluation's kitchen
is asked for, never guessed outside the repository, and the package's settings match."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from llava4d_ros.training.evaluation import KITCHEN_LABELS, EvalConfig

ROOT = Path(__file__).resolve().parents[1]
TRAIN_FLAGS = """--ablation --bf16 --bias-steps --box-head --cache --cache-workers --config
--device --first-motion --first-motion-m --grad-checkpointing --head-steps --init
--inventory-scenes --lm --look-change
--lora-rank --out --over-budget
--pointer-space --refine-scenes --refine-steps --resume --samples-per-window --save-every --seed
--stage4-only --stages --steps --text-warmup --threads --time-head --train-scenes
--windows-per-step""".split()
EVALUATE_FLAGS = """--ablations --cache --cache-workers --calibrate --crowded --examples --ghosts
--honesty --honesty-scenes --kitchen --kitchen-labels --model --object-scenes --objects --policy
--reliability --scenes --split --threads --write""".split()


def command(module: str, *args: str, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, text=True,
                          capture_output=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


@pytest.mark.parametrize("module, flags", [("llava4d_ros.train", TRAIN_FLAGS),
                                           ("llava4d_ros.evaluate", EVALUATE_FLAGS)])
def test_every_flag_is_still_there(module, flags):
    proc = command(module, "--help")
    assert proc.returncode == 0, proc.stderr[-2000:]
    missing = [f for f in flags if f not in proc.stdout]
    assert not missing, missing


def test_train_flags_that_do_not_go_together_are_a_usage_error(tmp_path):
    proc = command("llava4d_ros.train", "--out", str(tmp_path / "run"), "--stages", "5",
                   "--stage4-only", "time")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "--stage4-only refits one head in stage 4" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "run").exists()
    proc = command("llava4d_ros.train", "--out", str(tmp_path / "run"), "--first-motion-m",
                   "-0.01")
    assert proc.returncode == 2 and "--first-motion-m is metres" in proc.stderr, proc.stderr
    assert not (tmp_path / "run").exists()


def test_the_kitchen_is_asked_for_not_guessed():
    assert EvalConfig().kitchen == ""  # no kitchen unless one is given
    assert Path(KITCHEN_LABELS).is_relative_to(ROOT) and Path(KITCHEN_LABELS).is_file()
    proc = command("llava4d_ros.evaluate", "--help", env={"LLAVA4D_KITCHEN": "/data/kitchen"})
    assert "/data/kitchen" in proc.stdout  # the environment's folder is the default
    with pytest.raises(ValueError, match="calibrate"):
        EvalConfig(write=True)
    proc = command("llava4d_ros.evaluate", "--write")
    assert proc.returncode == 2 and "--write stores what --calibrate fits" in proc.stderr
    proc = command("llava4d_ros.evaluate", "--scenes", "0")
    assert proc.returncode == 2 and "at least one scene" in proc.stderr
