#!/bin/bash
set -eu -o pipefail
# shellcheck source-path=SCRIPTDIR/.. source=lib.sh
. "${STACKSEED_LIB:-/usr/local/lib/stackseed/lib.sh}"

# Nova on the controller: configuration for all of it; API, conductor, scheduler; cell0 and
# cell1 (baked into the image with their databases, unless the packages changed since); the
# scheduler discovers new computes by itself, so nobody runs discover_hosts.
need_secrets db_nova rabbit_password svc_nova svc_placement svc_neutron metadata_secret
ctl=$(fact node.ip)
conf=/etc/nova/nova.conf

ini_merge "$conf" <<INI
[DEFAULT]
my_ip = $ctl
transport_url = $(transport_url)
rpc_response_timeout = $RPC_TIMEOUT
[api]
auth_strategy = keystone
[api_database]
connection = $(db_url nova db_nova nova_api)
[database]
connection = $(db_url nova db_nova nova)
[vnc]
enabled = true
server_listen = \$my_ip
server_proxyclient_address = \$my_ip
[spice]
enabled = false
[glance]
api_servers = http://$ctl:9292
[oslo_concurrency]
lock_path = /var/lib/nova/tmp
[scheduler]
discover_hosts_in_cells_interval = 30
workers = 1
[conductor]
workers = 1
[cinder]
os_region_name = $(fact region)
[neutron]
service_metadata_proxy = true
metadata_proxy_shared_secret = $(secret metadata_secret)
default_floating_pool = provider
INI
keystone_authtoken "$conf" nova svc_nova
service_user_block "$conf" service_user nova svc_nova
ini_set "$conf" service_user send_service_user_token true
service_user_block "$conf" placement placement svc_placement
service_user_block "$conf" neutron neutron svc_neutron
conf_private nova "$conf"
# nova-api already has [cinder] and [neutron] (incl. the metadata secret): the later phases
# need not restart it, and each restart re-imports nova under TCG for minutes.
uwsgi_app /etc/nova/nova-api-uwsgi.ini /etc/nova/nova-api-metadata-uwsgi.ini
uwsgi_rpc_heartbeat eventlet /etc/nova/nova-api-uwsgi.ini /etc/nova/nova-api-metadata-uwsgi.ini
# Debian starts the SPICE proxy unless told otherwise; the guide's console is noVNC.
sed -i -E 's/^#?NOVA_CONSOLE_PROXY_TYPE=.*/NOVA_CONSOLE_PROXY_TYPE=novnc/' /etc/default/nova-consoleproxy
install -d -o nova -g nova -m 0750 /var/lib/nova/tmp

if ! db_baked nova; then
    # The mappings as templates (lib.sh), as the image's bake makes them: no password stored.
    as_user nova nova-manage api_db sync
    as_user nova nova-manage cell_v2 map_cell0 --database_connection "$NOVA_CELL0_DB"
    if ! as_user nova nova-manage cell_v2 list_cells | grep -qw cell1; then
        as_user nova nova-manage cell_v2 create_cell --name=cell1 \
            --database_connection "$NOVA_CELL1_DB" --transport-url "$NOVA_CELL1_MQ"
    fi
    as_user nova nova-manage db sync
    as_user nova nova-manage cell_v2 list_cells
fi

# Computes take nova-api answering as the sign that RPC has a peer: the conductor starts with
# it. The metadata API and noVNC proxy start in 46-nova-proxies.
svc_start nova-conductor nova-scheduler nova-api
wait_for "nova-api on $ctl:8774" "$SERVICE_TIMEOUT" probe_http "http://$ctl:8774/" 200 300
