#!/bin/bash
set -eu -o pipefail
# shellcheck source-path=SCRIPTDIR/.. source=lib.sh
. "${STACKSEED_LIB:-/usr/local/lib/stackseed/lib.sh}"

# The `service` project, roles, every service's user, service entry and three endpoints in the
# region (one openstacksdk process), and admin-openrc for root on the node. 2025.1 guide: nova
# and cinder also hold the `service` role (service tokens).
need_secrets admin_password svc_glance svc_placement svc_nova svc_neutron svc_cinder
ctl=$(fact node.ip)

os_py <<'PY'
ensure_project("service", "Service Project")
for role in ("admin", "member", "reader", "service"):
    ensure_role(role)
# builder/data/catalog.yaml, by official service type, with the legacy types beside them.
for entry in facts["catalog"]:
    url = f"http://{CTL}:{entry['port']}{entry['path']}"
    for role in ("admin", *entry.get("roles", [])):
        ensure_user(entry["user"], secret(entry["secret"]), role=role)
    for service in (entry, *entry.get("legacy", [])):
        ensure_service(service["name"], service["type"], entry["description"], url)
say("identity catalog complete")
PY

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
