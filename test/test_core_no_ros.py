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
    bad = [f"{f.relative_to(PKG.parent)}:{line}: {name}"
           for f in sorted((PKG / "model").rglob("*.py")) for line, name in _imports(f)
           if name.startswith(("llava4d_ros.data", "llava4d_ros.training",
                               "llava4d_ros.answers"))]
    assert not bad, "\n".join(bad)


def test_checker_catches_ros_imports(tmp_path):
    src = tmp_path / "x.py"
    src.write_text("import numpy\ndef f():\n    from sensor_msgs.msg import Image\n"
                   "    import rclpy.node\n    __import__('tf2_ros')\n")
    names = [n for _, n in _imports(src) if _forbidden(n)]
    assert {"sensor_msgs.msg", "rclpy.node", "tf2_ros"} <= set(names)
    assert not _forbidden("numpy") and not _forbidden("scipy.spatial")
