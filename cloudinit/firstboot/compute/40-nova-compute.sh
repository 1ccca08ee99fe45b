#!/bin/bash
set -eu -o pipefail
# shellcheck source-path=SCRIPTDIR/.. source=lib.sh
. "${STACKSEED_LIB:-/usr/local/lib/stackseed/lib.sh}"

# nova-compute with libvirt. virt_type follows what the guest really has, as the seeds check
# with egrep -c '(vmx|svm)' /proc/cpuinfo: kvm only when the topology says nested virt works
# AND the CPU flags AND /dev/kvm agree; qemu (TCG) otherwise.
need_secrets rabbit_password svc_nova svc_placement svc_neutron
ctl=$(fact controller.ip)
my_ip=$(fact node.ip)
conf=/etc/nova/nova.conf

flags=$(grep -Ec '(vmx|svm)' /proc/cpuinfo || true)
virt_type=qemu
if [ "$(fact_or nested_virt false)" = true ] && [ "${flags:-0}" -gt 0 ] && [ -c /dev/kvm ]; then
    virt_type=kvm
fi
log "cpu vmx/svm count ${flags:-0}, nested_virt $(fact_or nested_virt false): virt_type $virt_type"

ini_merge "$conf" <<INI
[DEFAULT]
host = $(fact node.name)
my_ip = $my_ip
transport_url = $(transport_url)
rpc_response_timeout = $RPC_TIMEOUT
[api]
auth_strategy = keystone
[vnc]
enabled = true
server_listen = 0.0.0.0
server_proxyclient_address = \$my_ip
novncproxy_base_url = http://$ctl:6080/vnc_auto.html
[spice]
enabled = false
[glance]
api_servers = http://$ctl:9292
[oslo_concurrency]
lock_path = /var/lib/nova/tmp
[cinder]
os_region_name = $(fact region)
[libvirt]
virt_type = $virt_type
# A guest under TCG in TCG answers a hot-unplug in tens of seconds, past the 20 s default
# per attempt; nova then reports the detach failed and the volume stays in-use.
device_detach_timeout = 60
INI
keystone_authtoken "$conf" nova svc_nova
service_user_block "$conf" service_user nova svc_nova
ini_set "$conf" service_user send_service_user_token true
service_user_block "$conf" placement placement svc_placement
service_user_block "$conf" neutron neutron svc_neutron
nova_privsep
conf_private nova "$conf"
# Debian's nova-compute-* package sets virt_type in nova-compute.conf, read after nova.conf.
[ -e /etc/nova/nova-compute.conf ] && ini_set /etc/nova/nova-compute.conf libvirt virt_type "$virt_type"
install -d -o nova -g nova -m 0750 /var/lib/nova/tmp

svc_start libvirtd
# Its import of nova's, os-vif's and os-brick's privileged modules runs while we wait.
svc_start stackseed-privsep-nova
# nova-compute reports ready only once nova-conductor answers it over RPC. The controller starts
# nova-api after its conductor, so the API answering means the RPC peer is there.
wait_for "nova-api at $ctl:8774" "$PEER_TIMEOUT" probe_http "http://$ctl:8774/" 200 300
svc_start nova-compute
# The controller's scheduler maps this host into cell1 on its next discovery pass.
log "nova-compute started; it joins cell1 through periodic host discovery"
