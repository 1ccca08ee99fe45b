#!/bin/bash
set -eu -o pipefail
# shellcheck source-path=SCRIPTDIR/.. source=lib.sh
. "${STACKSEED_LIB:-/usr/local/lib/stackseed/lib.sh}"

# The `service` project, roles, every service's user, service entry and three endpoints in the
# region (stackseed-cloud identity: one openstacksdk process, the catalog from node.json), and
# admin-openrc for root on the node.
need_secrets admin_password svc_glance svc_placement svc_nova svc_neutron svc_cinder
ctl=$(fact node.ip)

stackseed_cloud identity

write_private /root/admin-openrc root:root 0600 <<RC
export OS_PROJECT_DOMAIN_NAME=Default
export OS_USER_DOMAIN_NAME=Default
export OS_PROJECT_NAME=admin
export OS_USERNAME=admin
export OS_PASSWORD=$(secret admin_password)
export OS_AUTH_URL=http://$ctl:5000/v3
export OS_IDENTITY_API_VERSION=3
export OS_IMAGE_API_VERSION=2
export OS_REGION_NAME=$(fact region)
RC
log "wrote /root/admin-openrc (0600)"
