"""`llava4d-model-info`: one JSON line about a model directory, read without building it."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from helpers.tiny_model import save_tiny_model
from llava4d_ros.model.info import main, model_info
from llava4d_ros.model.llava4d import LLaVA4D


@pytest.mark.shipped_weights
def test_default_model_info(capsys):
    assert main([]) == 0
    line = capsys.readouterr().out
    assert line.count("\n") == 1
    info = json.loads(line)
    model = LLaVA4D.from_pretrained()
    assert info["model_id"] == model.cfg.model_id
    assert info["lm_params"] == sum(p.numel() for p in model.lm.parameters())
    assert info["vocab_size"] == model.lm.get_input_embeddings().weight.shape[0]
    assert info["pretrained"] is False and info["lm"]["source"] == "scratch"
    assert info["vision"]["kind"] == "colour_stats"
    assert info["spec"] == {"patch_grid": [24, 32], "voxel_m": 0.2, "token_budget": 2560,
                            "window_s": 8.0, "feature_dim": 18, "look_change": 30.0,
                            "over_budget": "drop"}


def test_model_info_of_a_pretrained_lm(tmp_path):
    from helpers.tiny_lm import save_lm

    model = LLaVA4D.from_lm(save_lm(tmp_path / "lm"), pointer_dim=16, box_hidden=16,
                            token_budget=64, window_s=12.0)
    model.save_pretrained(str(tmp_path / "ours"))
    info = model_info(str(tmp_path / "ours"))
    assert info["pretrained"] is True
    assert info["lm"] == {"name": "lm", "type": "llama", "source": "hf",
                          "path": str(tmp_path / "lm")}
    assert info["lm_params"] == sum(p.numel() for p in model.lm.parameters())
    assert info["vocab_size"] == len(model.tokenizer)
    assert info["spec"]["window_s"] == 12.0 and info["spec"]["token_budget"] == 64


def test_model_info_errors(tmp_path, capsys):
    assert main([str(tmp_path / "nope")]) == 2
    assert "no such model directory" in capsys.readouterr().err


def test_console_script(tmp_path):
    exe = shutil.which("llava4d-model-info")
    if exe is None:
        pytest.skip("console script not installed (pip install -e .)")
    path = save_tiny_model(tmp_path / "tiny")
    out = subprocess.run([exe, str(path)], capture_output=True, text=True, check=True).stdout
    assert json.loads(out)["model_id"] == "tiny-untrained-test"
