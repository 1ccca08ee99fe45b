#!/bin/bash
set -eu -o pipefail
# shellcheck source-path=SCRIPTDIR/.. source=lib.sh
. "${STACKSEED_LIB:-/usr/local/lib/stackseed/lib.sh}"

# Nova's metadata API (behind neutron's metadata agent) and noVNC proxy, configured by 42-nova.
# Only instances and consoles use them: each imports nova for a minute or more under TCG, and
# apart from 42-nova they do not hold up nova-api, which every compute and day zero wait for.
ctl=$(fact node.ip)
svc_start nova-api-metadata nova-novncproxy
# HTTP, not the port: uwsgi's master binds it before its worker has imported nova (the port
# answered 20 s into the phase, the API minutes later).
wait_for "nova metadata API on $ctl:8775" "$SERVICE_TIMEOUT" probe_http "http://$ctl:8775/" 200
