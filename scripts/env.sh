# Source this file to run the node, the tests or the tools in the no-ROS environment.
#   source scripts/env.sh
# It activates the virtual environment made by scripts/setup.sh and keeps DDS on this machine:
# discovery limited to localhost and a Fast DDS profile with loopback-only transports.
_llava4d_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LLAVA4D_VENV=${LLAVA4D_VENV:-$_llava4d_root/.venv}
if [ ! -x "$LLAVA4D_VENV/bin/python" ]; then
  echo "env.sh: no environment at $LLAVA4D_VENV; run scripts/setup.sh first" >&2
  return 1 2>/dev/null || exit 1
fi
# shellcheck disable=SC1091
source "$LLAVA4D_VENV/bin/activate"
# The venv root is the ament prefix of the ROS wheels (ament_index_python needs it).
export AMENT_PREFIX_PATH="$LLAVA4D_VENV"
export RMW_IMPLEMENTATION=rmw_fastrtps_cpp
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export FASTDDS_DEFAULT_PROFILES_FILE="$_llava4d_root/config/fastdds_localhost.xml"
# A domain of its own per shell unless the caller chose one, so parallel runs do not meet.
export ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-$(( 11 + $$ % 80 ))}
unset _llava4d_root
