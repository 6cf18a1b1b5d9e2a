"""runtime.load_model: the node's way to load a model (format by directory, device, threads)."""

from __future__ import annotations

import pytest
import torch

from helpers.tiny_model import save_tiny_model
from llava4d_ros.model.runtime import load_model


@pytest.fixture
def torch_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_cpu_threads_sets_torch_threads_and_zero_leaves_them(tmp_path, torch_threads):
    path = str(save_tiny_model(tmp_path / "tiny"))
    torch.set_num_threads(2)
    load_model(path, "cpu", cpu_threads=0)
    assert torch.get_num_threads() == 2
    load_model(path, "cpu", cpu_threads=1)
    assert torch.get_num_threads() == 1


def test_missing_directory_and_bad_dtype_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(str(tmp_path / "nope"), "cpu")
    with pytest.raises(ValueError, match="float16 is not supported on the CPU"):
        load_model(None, "cpu", dtype="float16")


def test_quantization_is_refused_clearly_on_the_cpu_and_validated(tmp_path):
    with pytest.raises(ValueError, match="int8.*needs a CUDA device.*quantization none"):
        load_model(None, "cpu", quantization="int8")
    with pytest.raises(ValueError, match="int4.*needs a CUDA device"):
        load_model(None, "cpu", quantization="int4")
    with pytest.raises(ValueError, match="quantization must be one of"):
        load_model(None, "cpu", quantization="int3")
    # refused before any weights are read: a missing directory is not what is reported
    with pytest.raises(ValueError, match="needs a CUDA device"):
        load_model(str(tmp_path / "nope"), "cpu", quantization="int8")
    assert load_model(None, "cpu", quantization="none").model_id


def test_quantization_backend_choice(monkeypatch):
    import importlib.util

    from llava4d_ros.model import runtime

    assert runtime.quantization_backend("none", "cpu") is None
    found = {"bitsandbytes"}
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: object() if name in found else None)
    assert runtime.quantization_backend("int8", "cuda:0") == "bitsandbytes"
    found.add("torchao")
    assert runtime.quantization_backend("int4", "cuda") == "torchao"  # preferred
    found.clear()
    with pytest.raises(ValueError, match="needs torchao or bitsandbytes"):
        runtime.quantization_backend("int8", "cuda")


def test_node_config_quantization_parameter():
    from llava4d_ros.config import NodeConfig

    assert NodeConfig().quantization == "none"
    assert NodeConfig(quantization="int4").quantization == "int4"
    with pytest.raises(ValueError, match="quantization must be none, int8 or int4"):
        NodeConfig(quantization="fp8")
    assert "CUDA only" in NodeConfig.descriptions()["quantization"]
