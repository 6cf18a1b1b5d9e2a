"""runtime.load_model: the node's way to load a model (format by directory, device, threads)."""

from __future__ import annotations

import pytest
import torch

from helpers.tiny_model import save_tiny_model
from llava4d_ros.runtime import load_model


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
