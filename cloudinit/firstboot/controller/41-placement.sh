#!/bin/bash
set -eu -o pipefail
# shellcheck source-path=SCRIPTDIR/.. source=lib.sh
. "${STACKSEED_LIB:-/usr/local/lib/stackseed/lib.sh}"

# Placement API (uwsgi, port 8778 on Debian).
need_secrets db_placement svc_placement
ctl=$(fact node.ip)

ini_merge /etc/placement/placement.conf <<INI
[placement_database]
connection = $(db_url placement db_placement placement)
[api]
auth_strategy = keystone
INI
keystone_authtoken /etc/placement/placement.conf placement svc_placement
conf_private placement /etc/placement/placement.conf
uwsgi_app /etc/placement/placement-api-uwsgi.ini

if ! db_baked placement; then
    as_user placement placement-manage db sync
fi
svc_start placement-api
wait_for "placement on $ctl:8778" "$SERVICE_TIMEOUT" probe_http "http://$ctl:8778/" 200
