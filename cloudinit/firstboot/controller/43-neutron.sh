#!/bin/bash
set -eu -o pipefail
# shellcheck source-path=SCRIPTDIR/.. source=lib.sh
. "${STACKSEED_LIB:-/usr/local/lib/stackseed/lib.sh}"

# Neutron server with ML2 (flat provider + VXLAN self-service), L3, DHCP and metadata agents,
# for the Open vSwitch backend (default) or Linux bridge (where the release still has it).
need_secrets db_neutron rabbit_password svc_neutron svc_nova metadata_secret
ctl=$(fact node.ip)
backend=$(neutron_backend)
l2_agent=$(neutron_l2_agent)
mech=openvswitch
[ "$backend" = linuxbridge ] && mech=linuxbridge

neutron_common_config
# neutron-rpc-server forks one process per RPC worker after importing neutron. A single RPC
# worker takes the agents' state reports too (ML2 consumes that topic in every RPC worker), so
# no dedicated reports worker: one process less to start on every boot.
ini_merge /etc/neutron/neutron.conf <<INI
[DEFAULT]
core_plugin = ml2
service_plugins = router
auth_strategy = keystone
notify_nova_on_port_status_changes = true
notify_nova_on_port_data_changes = true
rpc_workers = 1
rpc_state_report_workers = 0
[database]
connection = $(db_url neutron db_neutron neutron)
INI
keystone_authtoken /etc/neutron/neutron.conf neutron svc_neutron
service_user_block /etc/neutron/neutron.conf nova nova svc_nova
conf_private neutron /etc/neutron/neutron.conf

ini_merge /etc/neutron/plugins/ml2/ml2_conf.ini <<INI
[ml2]
type_drivers = flat,vlan,vxlan
tenant_network_types = vxlan
mechanism_drivers = $mech,l2population
extension_drivers = port_security
[ml2_type_flat]
flat_networks = provider
[ml2_type_vxlan]
vni_ranges = 1:1000
INI
neutron_l2_config

for ini in /etc/neutron/l3_agent.ini /etc/neutron/dhcp_agent.ini; do
    ini_set "$ini" DEFAULT interface_driver "$mech"
done
ini_merge /etc/neutron/dhcp_agent.ini <<INI
[DEFAULT]
dhcp_driver = neutron.agent.linux.dhcp.Dnsmasq
enable_isolated_metadata = true
INI
ini_merge /etc/neutron/metadata_agent.ini <<INI
[DEFAULT]
nova_metadata_host = $ctl
metadata_proxy_shared_secret = $(secret metadata_secret)
metadata_workers = 1
INI
conf_private neutron /etc/neutron/metadata_agent.ini /etc/neutron/l3_agent.ini /etc/neutron/dhcp_agent.ini
uwsgi_app /etc/neutron/neutron-api-uwsgi.ini
uwsgi_rpc_heartbeat native /etc/neutron/neutron-api-uwsgi.ini
install -d -o neutron -g neutron -m 0750 /var/lib/neutron/tmp

if ! db_baked neutron; then
    as_user neutron neutron-db-manage --config-file /etc/neutron/neutron.conf \
        --config-file /etc/neutron/plugins/ml2/ml2_conf.ini upgrade head
fi

# The API first, alone: its workers load neutron for minutes under TCG (~700 s on Debian 12's
# controller while the agents loaded too, past the old 300 s wait); the agents need it anyway.
svc_start neutron-api neutron-rpc-server stackseed-privsep-neutron
wait_for "neutron-server on $ctl:9696" "$SERVICE_TIMEOUT" probe_http "http://$ctl:9696/" 200
# The DHCP and L3 agents bind ports to this host, and ML2 binds a port only where a live L2 agent
# reports. A port whose binding failed stays failed: the agents read ports from their cache and
# never ask the server to bind again. Seen under TCG: the OVS agent reported for the first time
# six minutes after it started, day zero's networks came first, both DHCP ports stayed
# binding_failed, and the test server never got an address. So the L2 agent comes first.
svc_start "$l2_agent"
wait_agent_alive "$JOIN_TIMEOUT" neutron-l2-agent
svc_start neutron-dhcp-agent neutron-metadata-agent neutron-l3-agent
