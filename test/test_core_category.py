"""Object categories from EfficientNet-Lite0 (core/category.py): the input scaling the weights
expect, nouns gathered from ImageNet classes, crops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from llava4d_ros.core.category import (
    INPUT_PX,
    LITE_MEAN,
    LITE_STD,
    NOUNS,
    crop_square,
    load_efficientnet_lite0,
    noun_matrix,
)

KITCHEN = Path(__file__).resolve().parents[2] / "shared" / "data" / "7scenes-redkitchen"
Image = pytest.importorskip("PIL.Image")
torch = pytest.importorskip("torch")


def test_nouns_gather_distinct_imagenet_classes():
    names, m = noun_matrix()
    assert m.shape == (1000, len(NOUNS)) and names == tuple(NOUNS)
    assert (m.sum(axis=1) <= 1).all()  # no class counts for two nouns
    assert m[504, names.index("mug")] == 1  # coffee mug
    assert m[559, names.index("chair")] == 1  # folding chair
    assert "table" not in names  # a table top is structure, never an object


def test_crop_is_a_square_of_the_input_size_clipped_to_the_image():
    rgb = np.zeros((480, 640, 3), np.uint8)
    rgb[100:200, 300:340] = 255
    crop = crop_square(rgb, (300, 100, 340, 200))
    assert crop.shape == (INPUT_PX, INPUT_PX, 3)
    assert crop[INPUT_PX // 2, INPUT_PX // 2].tolist() == [255, 255, 255]
    assert crop_square(rgb, (600, 440, 639, 479)).shape == (INPUT_PX, INPUT_PX, 3)


@pytest.mark.skipif(not (KITCHEN / "rgb").exists(), reason="7-Scenes kitchen not present")
def test_the_weights_expect_inputs_scaled_to_plus_minus_one():
    """The stem's batch norm was fitted on the inputs the weights were trained with. On real
    photos (kitchen frames 0-299), [-1, 1] scaling gives stem outputs whose variance matches
    the running variance; ImageNet mean/std misses it several times over."""
    net = load_efficientnet_lite0()
    bn = net._bn0
    ok = bn.running_var > 1e-3
    frames = sorted((KITCHEN / "rgb").glob("*.jpg"))[:300:40]
    imagenet = (np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225]))

    def log_var_ratio(mean, std) -> float:
        outs = []
        for f in frames:
            x = np.asarray(Image.open(f).convert("RGB").resize((224, 224)), np.float32) / 255
            t = torch.tensor((x - mean) / std, dtype=torch.float32).permute(2, 0, 1)[None]
            with torch.no_grad():
                outs.append(net._conv_stem(t))
        y = torch.cat(outs)
        var = y.var(dim=(0, 2, 3))
        return float((var[ok] / bn.running_var[ok]).log().abs().mean())

    lite = log_var_ratio(np.array(LITE_MEAN), np.array(LITE_STD))
    assert lite < 0.5 < 2 * lite < log_var_ratio(*imagenet)
