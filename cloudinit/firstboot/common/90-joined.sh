#!/bin/bash
set -eu -o pipefail
# shellcheck source-path=SCRIPTDIR/.. source=lib.sh
. "${STACKSEED_LIB:-/usr/local/lib/stackseed/lib.sh}"

# The node is ready only once the controller sees what it runs alive (node.json `joins`:
# agents, nova-compute and its hypervisor, cinder-volume), not merely once its phases ran.
wait_joined "$JOIN_TIMEOUT"
