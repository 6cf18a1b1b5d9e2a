"""The node caps glibc's malloc arenas (llava4d_ros/ros/malloc_arenas.py) unless the user chose."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

CALL = "from llava4d_ros.ros.malloc_arenas import limit_arenas; print(limit_arenas())"


def run(env_extra: dict[str, str]) -> str:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"} | env_extra
    out = subprocess.run([sys.executable, "-c", CALL], env=env, capture_output=True, text=True,
                         check=True)
    return out.stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_arenas_are_capped_unless_malloc_arena_max_is_set():
    assert run({}) == "True"
    assert run({"MALLOC_ARENA_MAX": "4"}) == "False"  # the user's setting stands


def test_the_node_caps_them_before_rclpy_starts():
    import inspect

    from llava4d_ros.ros import node

    src = inspect.getsource(node.main)
    assert src.index("limit_arenas()") < src.index("rclpy.init(")
