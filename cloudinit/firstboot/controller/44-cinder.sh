#!/bin/bash
set -eu -o pipefail
# shellcheck source-path=SCRIPTDIR/.. source=lib.sh
. "${STACKSEED_LIB:-/usr/local/lib/stackseed/lib.sh}"

# Cinder API and scheduler on the controller; volumes live on the block node.
need_secrets db_cinder rabbit_password svc_cinder
ctl=$(fact node.ip)

ini_merge /etc/cinder/cinder.conf <<INI
[DEFAULT]
transport_url = $(transport_url)
rpc_response_timeout = $RPC_TIMEOUT
auth_strategy = keystone
my_ip = $ctl
glance_api_servers = http://$ctl:9292
[database]
connection = $(db_url cinder db_cinder cinder)
[oslo_concurrency]
lock_path = /var/lib/cinder/tmp
INI
keystone_authtoken /etc/cinder/cinder.conf cinder svc_cinder
service_user_block /etc/cinder/cinder.conf service_user cinder svc_cinder
ini_set /etc/cinder/cinder.conf service_user send_service_user_token true
conf_private cinder /etc/cinder/cinder.conf
uwsgi_app /etc/cinder/cinder-api-uwsgi.ini
uwsgi_rpc_heartbeat native /etc/cinder/cinder-api-uwsgi.ini
install -d -o cinder -g cinder -m 0750 /var/lib/cinder/tmp

if ! db_baked cinder; then
    as_user cinder cinder-manage db sync
fi
svc_start cinder-api cinder-scheduler
wait_for "cinder-api on $ctl:8776" "$SERVICE_TIMEOUT" probe_http "http://$ctl:8776/" 200 300
