"""`colcon build` of the repository, as a robot builds it, inside the no-ROS environment."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO, require_ros


def test_colcon_build_installs_interfaces_node_launch_and_config(tmp_path):
    require_ros()
    colcon = shutil.which("colcon")
    if colcon is None:
        if os.environ.get("LLAVA4D_REQUIRE_ROS") == "1":
            pytest.fail("colcon is not installed in the environment (requirements-noros.txt)")
        pytest.skip("colcon not installed")
    cmd = [colcon, "--log-base", str(tmp_path / "log"), "build", "--base-paths", str(REPO),
           "--build-base", str(tmp_path / "build"), "--install-base", str(tmp_path / "install"),
           "--cmake-args", "-DBUILD_TESTING=OFF", f"-DPython3_EXECUTABLE={sys.executable}"]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    prefix = tmp_path / "install" / "llava4d_ros"
    share = prefix / "share" / "llava4d_ros"
    for rel in ("launch/llava4d.launch.py", "launch/replay.launch.py", "config/llava4d.yaml",
                "msg/Answer.msg", "srv/Query.srv", "action/Ask.action", "package.xml"):
        assert (share / rel).is_file(), rel
    assert os.access(prefix / "lib" / "llava4d_ros" / "llava4d_node", os.X_OK)
    site = prefix / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    # The installed package (not the checkout) provides both the node and the generated types.
    probe = ("import llava4d_ros, llava4d_ros.ros.node as n; from llava4d_ros.srv import Query; "
             "from llava4d_ros.msg import Answer; from llava4d_ros.action import Ask; "
             "print(llava4d_ros.__file__, n.__file__)")
    env = {**os.environ, "PYTHONPATH": str(site),
           "AMENT_PREFIX_PATH": f"{prefix}:{os.environ.get('AMENT_PREFIX_PATH', sys.prefix)}"}
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert all(path.startswith(str(site)) for path in out.stdout.split()), out.stdout
