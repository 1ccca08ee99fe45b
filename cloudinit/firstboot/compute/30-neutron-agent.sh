#!/bin/bash
set -eu -o pipefail
# shellcheck source-path=SCRIPTDIR/.. source=lib.sh
. "${STACKSEED_LIB:-/usr/local/lib/stackseed/lib.sh}"

# The backend's L2 agent: provider NIC mapping and VXLAN over the management address.
need_secrets rabbit_password
l2_agent=$(neutron_l2_agent)
neutron_common_config
neutron_l2_config
svc_start "$l2_agent"
