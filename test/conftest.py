"""Test-wide setup: DDS stays on this machine and each run gets a domain of its own.

These are forced here, not only in scripts/test.sh, so that a bare `pytest` cannot send
discovery traffic off the machine.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(REPO / "config" / "fastdds_localhost.xml")
os.environ["RMW_IMPLEMENTATION"] = "rmw_fastrtps_cpp"
os.environ.setdefault("ROS_DOMAIN_ID", str(11 + os.getpid() % 80))
os.environ.setdefault("AMENT_PREFIX_PATH", sys.prefix)


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
