"""The models shipped inside the package, by the name a user may give instead of a path (no
torch here: the node resolves `model_path` when it configures, before torch is imported)."""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent
DEFAULT_DIR = str(_HERE / "default")
#: name -> directory: the embedded default, and LLaVA-4D on SmolLM2-135M-Instruct (its LM
#: weights come from the copy scripts/setup.sh converts into the environment)
SHIPPED = {"default": DEFAULT_DIR, "smollm2": str(_HERE / "smollm2")}


def model_dir(path: str | None) -> str:
    """The directory of a model: a path as given, the name of a shipped model (`SHIPPED`),
    or the embedded default for None / ""."""
    if not path:
        return DEFAULT_DIR
    return SHIPPED.get(str(path), str(path))
