"""The pure layers never import ROS: core, model and data must run where rclpy does not exist
(the offline replay, training, CI without ROS). Checked on the source, so an import hidden in a
function body is caught too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "llava4d_ros"
FORBIDDEN_EXACT = {"rclpy", "tf2_ros", "message_filters", "cv_bridge", "rosidl_runtime_py",
                   "launch", "launch_ros", "rosbag2_py"}


def _forbidden(module: str) -> bool:
    top = module.split(".")[0]
    return (top in FORBIDDEN_EXACT or top.endswith(("_msgs", "_srvs"))
            or module.startswith("llava4d_ros.ros")
            or module in ("llava4d_ros.msg", "llava4d_ros.srv"))


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
        elif (isinstance(node, ast.Call)
              and (getattr(node.func, "id", None) == "__import__"
                   or getattr(node.func, "attr", None) == "import_module")
              and node.args and isinstance(node.args[0], ast.Constant)):
            found.append((node.lineno, str(node.args[0].value)))
    return found


# replay.py reads bags through ros/convert.py, the one module that knows message fields: it is
# duck-typed and imports no message package unless it builds a message
@pytest.mark.parametrize("layer", ["core", "model", "data", "answers", "memory", "training",
                                   "engine.py", "evaluate.py", "train.py"])
def test_pure_layers_import_no_ros(layer):
    path = PKG / layer
    if not path.exists():
        pytest.skip(f"llava4d_ros/{layer} does not exist yet")
    files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
    bad = [f"{f.relative_to(PKG.parent)}:{line}: {name}"
           for f in files for line, name in _imports(f) if _forbidden(name)]
    assert not bad, "ROS imports in a pure layer:\n" + "\n".join(bad)


def test_model_imports_nothing_from_data_training_or_the_answer_policy():
    """model/ is the learned model: no dataset vocabulary, no training code, no answer rules."""
    bad = [f"{f.relative_to(PKG.parent)}: {name}"
           for f in sorted((PKG / "model").rglob("*.py")) for name in _package_imports(f)
           if name.startswith(("llava4d_ros.data", "llava4d_ros.training",
                               "llava4d_ros.answers"))]
    assert not bad, "\n".join(bad)


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _package_imports(path: Path, root: Path = PKG.parent) -> set[str]:
    """Every module `path` imports: at module level, in a function or under TYPE_CHECKING (a
    type-only import back is how a plug-in comes to call the model), relative ones resolved;
    `from a import b` counts as a and a.b."""
    me = _module_name(path, root)
    package = me.split(".") if path.name == "__init__.py" else me.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package[:len(package) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found |= {base} | {f"{base}.{alias.name}" for alias in node.names}
    return found


def _import_cycles(folder: Path, root: Path = PKG.parent) -> list[list[str]]:
    """The import cycles among the modules under `folder` (each as a path a -> b -> a)."""
    mods = {_module_name(f, root): f for f in sorted(folder.rglob("*.py"))}
    graph = {m: sorted(n for n in _package_imports(f, root) if n in mods and n != m)
             for m, f in mods.items()}
    cycles: list[list[str]] = []
    state: dict[str, str] = {}  # module -> "open" (on the current path) or "done"

    def visit(m: str, path: list[str]) -> None:
        state[m] = "open"
        for n in graph[m]:
            if state.get(n) == "open":
                cycles.append(path[path.index(n):] + [m, n])
            elif n not in state:
                visit(n, path + [m])
        state[m] = "done"

    for m in graph:
        if m not in state:
            visit(m, [])
    return cycles


def test_model_has_no_import_cycles():
    """Each module of model/ can be read (and imported) after the ones it imports: the wrapper
    imports its parts, never the other way (decoding takes tensors and callables, not the
    model)."""
    cycles = _import_cycles(PKG / "model")
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_cycle_checker_catches_cycles_and_forbidden_imports(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg import b\n")
    (pkg / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                              "    from .c import C\n")
    (pkg / "c.py").write_text("def f():\n    from . import a\n    import llava4d_ros.data\n")
    (pkg / "d.py").write_text("from .a import x\n")  # imports a, is not imported back
    assert _import_cycles(pkg, tmp_path) == [["pkg.a", "pkg.b", "pkg.c", "pkg.a"]]
    assert "llava4d_ros.data" in _package_imports(pkg / "c.py", tmp_path)


def test_checker_catches_ros_imports(tmp_path):
    src = tmp_path / "x.py"
    src.write_text("import numpy\ndef f():\n    from sensor_msgs.msg import Image\n"
                   "    import rclpy.node\n    __import__('tf2_ros')\n")
    names = [n for _, n in _imports(src) if _forbidden(n)]
    assert {"sensor_msgs.msg", "rclpy.node", "tf2_ros"} <= set(names)
    assert not _forbidden("numpy") and not _forbidden("scipy.spatial")
