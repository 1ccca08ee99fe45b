#!/bin/bash
set -eu -o pipefail
# shellcheck source-path=SCRIPTDIR/.. source=lib.sh
. "${STACKSEED_LIB:-/usr/local/lib/stackseed/lib.sh}"

# The `service` project, roles, every service's user, service entry and three endpoints in the
# region (one openstacksdk process), and admin-openrc for root on the node.
need_secrets admin_password svc_glance svc_placement svc_nova svc_neutron svc_cinder
ctl=$(fact node.ip)

os_py <<'PY'
ensure_project("service", "Service Project")
for role in ("admin", "member", "reader", "service"):
    ensure_role(role)
ctl = CTL
catalog = [
    ("glance", "image", "OpenStack Image", f"http://{ctl}:9292", "svc_glance"),
    ("placement", "placement", "Placement API", f"http://{ctl}:8778", "svc_placement"),
    ("nova", "compute", "OpenStack Compute", f"http://{ctl}:8774/v2.1", "svc_nova"),
    ("neutron", "network", "OpenStack Networking", f"http://{ctl}:9696", "svc_neutron"),
    ("cinderv3", "volumev3", "OpenStack Block Storage", f"http://{ctl}:8776/v3/%(project_id)s", "svc_cinder"),
]
for name, type_, description, url, password in catalog:
    user = "cinder" if name == "cinderv3" else name
    ensure_user(user, secret(password))
    # 2025.1 guide: nova and cinder also hold the `service` role (service tokens).
    if user in ("nova", "cinder"):
        ensure_user(user, secret(password), role="service")
    ensure_service(name, type_, description, url)
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
