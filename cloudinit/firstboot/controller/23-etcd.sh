#!/bin/bash
set -eu -o pipefail
# shellcheck source-path=SCRIPTDIR/.. source=lib.sh
. "${STACKSEED_LIB:-/usr/local/lib/stackseed/lib.sh}"

# etcd, a one-member cluster on the management network (install guide, environment section).
# Only when the topology enables it (lab.enable: [etcd]): none of the lab's services uses it.
ip_addr=$(fact node.ip)
name=$(fact node.name)

cat >/etc/default/etcd <<ETCD
# Written by stackseed first boot: a one-member cluster on the management network.
ETCD_NAME="$name"
ETCD_DATA_DIR="/var/lib/etcd"
ETCD_INITIAL_CLUSTER_STATE="new"
ETCD_INITIAL_CLUSTER_TOKEN="etcd-cluster-01"
ETCD_INITIAL_CLUSTER="$name=http://$ip_addr:2380"
ETCD_INITIAL_ADVERTISE_PEER_URLS="http://$ip_addr:2380"
ETCD_ADVERTISE_CLIENT_URLS="http://$ip_addr:2379"
ETCD_LISTEN_PEER_URLS="http://0.0.0.0:2380"
ETCD_LISTEN_CLIENT_URLS="http://$ip_addr:2379"
ETCD
chmod 0644 /etc/default/etcd
svc_start etcd
wait_for "etcd health on $ip_addr:2379" 120 probe_http "http://$ip_addr:2379/health" 200
