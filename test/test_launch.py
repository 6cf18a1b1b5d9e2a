"""The launch files parse and name only executables, files and topics that exist.

`launch`/`launch_ros` are not installable here (not on the package index), so the files are
checked statically: they are what `ros2 launch` runs on a robot.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from conftest import REPO

LAUNCH_FILES = sorted((REPO / "launch").glob("*.launch.py"))


def string_calls(tree: ast.AST, keyword: str) -> list[str]:
    return [kw.value.value for node in ast.walk(tree) if isinstance(node, ast.Call)
            for kw in node.keywords
            if kw.arg == keyword and isinstance(kw.value, ast.Constant)]


def path_joins(tree: ast.AST) -> list[list[str]]:
    """String parts of every PathJoinSubstitution([...]) list."""
    out = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and getattr(node.func, "id", "") == "PathJoinSubstitution"
                and node.args and isinstance(node.args[0], ast.List)):
            out.append([e.value for e in node.args[0].elts if isinstance(e, ast.Constant)])
    return out


def test_there_are_launch_files():
    assert {p.name for p in LAUNCH_FILES} >= {"llava4d.launch.py", "replay.launch.py"}


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_file_parses_and_defines_generate_launch_description(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    names = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert "generate_launch_description" in names


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_named_files_exist_and_are_installed(path):
    tree = ast.parse(path.read_text())
    cmake = (REPO / "CMakeLists.txt").read_text()
    for exe in string_calls(tree, "executable"):
        script = REPO / "scripts" / exe
        assert script.is_file(), f"{path.name}: executable {exe} has no scripts/{exe}"
        assert script.stat().st_mode & 0o111, f"scripts/{exe} is not executable"
        assert f"scripts/{exe}" in cmake, f"scripts/{exe} is not installed by CMakeLists.txt"
    for pkg in string_calls(tree, "package"):
        assert pkg == "llava4d_ros"
    for parts in path_joins(tree):
        rel = Path(*parts)
        assert (REPO / rel).is_file(), f"{path.name}: {rel} does not exist"
        assert re.search(rf"install\(DIRECTORY[^)]*\b{parts[0]}\b", cmake), \
            f"{parts[0]}/ is not installed"


def test_remappings_match_the_node_subscriptions():
    tree = ast.parse((REPO / "launch" / "llava4d.launch.py").read_text())
    sources = {e.elts[0].value for node in ast.walk(tree) if isinstance(node, ast.Tuple)
               and len(node.elts) == 2 and isinstance(node.elts[0], ast.Constant)
               for e in [node]}
    node_src = (REPO / "llava4d_ros" / "ros" / "node.py").read_text()
    subscribed = set(re.findall(r'create_subscription\(\s*\w+,\s*"([a-z_/]+)"', node_src))
    assert sources == subscribed - {"/tf", "/tf_static"}, (sources, subscribed)


def test_default_params_file_lists_every_parameter():
    import yaml

    from llava4d_ros.config import NodeConfig

    path = REPO / "config" / "llava4d.yaml"
    params = yaml.safe_load(path.read_text())["llava4d"]["ros__parameters"]
    assert set(params) == set(NodeConfig.descriptions())
    assert NodeConfig.from_yaml(str(path)) == NodeConfig()  # same values as the code's defaults
