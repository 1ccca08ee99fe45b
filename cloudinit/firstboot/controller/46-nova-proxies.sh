#!/bin/bash
set -eu -o pipefail
# shellcheck source-path=SCRIPTDIR/.. source=lib.sh
. "${STACKSEED_LIB:-/usr/local/lib/stackseed/lib.sh}"

# Nova's metadata API (behind neutron's metadata agent) and noVNC proxy, configured by 42-nova.
# Only instances and consoles use them: each imports nova for a minute or more under TCG, and
# apart from 42-nova they do not hold up nova-api, which every compute and day zero wait for.
ctl=$(fact node.ip)
svc_start nova-api-metadata nova-novncproxy
wait_for "nova metadata API on $ctl:8775" "$SERVICE_TIMEOUT" probe_tcp "$ctl" 8775
