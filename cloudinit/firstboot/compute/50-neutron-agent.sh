#!/bin/bash
set -eu -o pipefail
# shellcheck source-path=SCRIPTDIR/.. source=lib.sh
. "${STACKSEED_LIB:-/usr/local/lib/stackseed/lib.sh}"

# The backend's L2 agent: provider NIC mapping and VXLAN over the management address.
need_secrets rabbit_password
ctl=$(fact controller.ip)
l2_agent=$(neutron_l2_agent)
neutron_common_config
neutron_l2_config
# Started only once neutron-server answers: an agent started earlier finds no RPC server and
# backs off exponentially (100-200 s between tries), so it joined minutes after the server came.
# The controller starts neutron-api and neutron-rpc-server together, so the API answering means
# the agent's first report is taken.
wait_for "neutron-server at $ctl:9696" "$PEER_TIMEOUT" probe_http "http://$ctl:9696/" 200
svc_start stackseed-privsep-neutron "$l2_agent"
