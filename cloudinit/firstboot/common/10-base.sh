#!/bin/bash
# Every node: the management address is up, time comes from the lab, the facts are sane.
set -eu -o pipefail
# shellcheck source-path=SCRIPTDIR/.. source=lib.sh
. "${STACKSEED_LIB:-/usr/local/lib/stackseed/lib.sh}"

ip_addr=$(fact node.ip)
log "node $(fact node.name) role $(fact node.role) at $ip_addr, release $(fact release)"
wait_for "management address $ip_addr on mgmt0" 120 has_address mgmt0 "$ip_addr"
[ "$(hostname -s)" = "$(fact node.name)" ] || hostname "$(fact node.name)"

# chrony.conf comes from the seed (the controller serves the management subnet).
svc_start chrony
