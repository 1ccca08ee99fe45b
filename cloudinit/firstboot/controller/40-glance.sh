#!/bin/bash
set -eu -o pipefail
# shellcheck source-path=SCRIPTDIR/.. source=lib.sh
. "${STACKSEED_LIB:-/usr/local/lib/stackseed/lib.sh}"

# Glance with the file store (install guide: glance install, 2025.1).
need_secrets db_glance svc_glance
ctl=$(fact node.ip)

ini_merge /etc/glance/glance-api.conf <<INI
[DEFAULT]
enabled_backends = fs:file
[database]
connection = $(db_url glance db_glance glance)
[paste_deploy]
flavor = keystone
[glance_store]
default_backend = fs
[fs]
filesystem_store_datadir = /var/lib/glance/images/
INI
keystone_authtoken /etc/glance/glance-api.conf glance svc_glance
conf_private glance /etc/glance/glance-api.conf
uwsgi_app /etc/glance/glance-api-uwsgi.ini
install -d -o glance -g glance -m 0750 /var/lib/glance/images

if ! db_baked glance; then
    as_user glance glance-manage db_sync
fi
svc_start glance-api
wait_for "glance-api on $ctl:9292" "$SERVICE_TIMEOUT" probe_http "http://$ctl:9292/" 200 300
