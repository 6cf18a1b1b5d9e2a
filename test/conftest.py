"""Test-wide setup: DDS stays on this machine and each run gets a domain of its own.

These are forced here, not only in scripts/test.sh, so that a bare `pytest` cannot send
discovery traffic off the machine.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(REPO / "config" / "fastdds_localhost.xml")
os.environ["RMW_IMPLEMENTATION"] = "rmw_fastrtps_cpp"
os.environ.setdefault("ROS_DOMAIN_ID", str(11 + os.getpid() % 80))
os.environ.setdefault("AMENT_PREFIX_PATH", sys.prefix)
# a node started with the default memory_path keeps its memory under ROS_HOME: never the
# user's own while tests run
os.environ["ROS_HOME"] = tempfile.mkdtemp(prefix="llava4d_test_ros_home_")


def require_ros():
    """Import rclpy, or skip where ROS is absent; under scripts/test.sh and CI, absence fails."""
    try:
        import rclpy  # noqa: F401

        import llava4d_ros.msg  # noqa: F401
    except ImportError as exc:
        if os.environ.get("LLAVA4D_REQUIRE_ROS") == "1":
            raise
        pytest.skip(f"ROS 2 (rclpy + generated interfaces) not available: {exc}")


@pytest.fixture
def ros_context():
    """A fresh rclpy context per test, shut down afterwards."""
    require_ros()
    import rclpy
    from rclpy.context import Context

    ctx = Context()
    rclpy.init(context=ctx)
    yield ctx
    if ctx.ok():
        rclpy.shutdown(context=ctx)


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """A tiny untrained model saved in our format (the node tests' default model)."""
    from helpers.tiny_model import save_tiny_model

    return str(save_tiny_model(tmp_path_factory.mktemp("tiny_model")))


@pytest.fixture
def harness(ros_context, tiny_model_dir):
    """`harness(**params)` makes the node under test with a peer (helpers/node_harness.py),
    closed after the test. Nodes run the tiny untrained model unless a test asks for another
    (model_path="" is the embedded default): most node tests are about plumbing, not answers."""
    from helpers.node_harness import Harness

    made = []

    def make(**params):
        params.setdefault("model_path", tiny_model_dir)
        params.setdefault("memory_path", "")  # no memory unless a test is about it
        h = Harness(ros_context, **params)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()

