#!/usr/bin/env bash
# The test command: the whole suite in the environment made by scripts/setup.sh, with DDS kept
# on this machine (scripts/env.sh) and a ROS domain of its own. Extra arguments go to pytest.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck disable=SC1091
source "$root/scripts/env.sh" || exit 1
export LLAVA4D_REQUIRE_ROS=1  # a missing rclpy or interface fails the run instead of skipping
cd "$root"
python -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "test.sh: pytest collected no tests; that is a failure here" >&2
  exit 1
fi
exit "$rc"
