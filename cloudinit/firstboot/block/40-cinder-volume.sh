#!/bin/bash
set -eu -o pipefail
# shellcheck source-path=SCRIPTDIR/.. source=lib.sh
. "${STACKSEED_LIB:-/usr/local/lib/stackseed/lib.sh}"

# cinder-volume with the LVM driver, exporting volumes over iSCSI with the kernel's LIO target
# (the block image carries targetcli-fb and python3-rtslib-fb, not tgt).
need_secrets db_cinder rabbit_password svc_cinder
ctl=$(fact controller.ip)
conf=/etc/cinder/cinder.conf

ini_merge "$conf" <<INI
[DEFAULT]
host = $(fact node.name)
my_ip = $(fact node.ip)
transport_url = $(transport_url)
rpc_response_timeout = $RPC_TIMEOUT
auth_strategy = keystone
enabled_backends = lvm
glance_api_servers = http://$ctl:9292
# Each stats poll runs vgs and lvs through cinder-rootwrap, a Python start apiece: on one
# starved vCPU a poll took 300 s, so at the default 60 s the driver never idled and attach
# requests queued behind it. Capacity changes only when cinder itself creates or deletes.
backend_stats_polling_interval = 600
[database]
connection = $(db_url cinder db_cinder cinder)
[lvm]
volume_driver = cinder.volume.drivers.lvm.LVMVolumeDriver
volume_group = cinder-volumes
target_protocol = iscsi
target_helper = lioadm
volume_backend_name = lvm
# Lab volumes hold nothing worth wiping; zeroing 1 GiB on delete took 10+ min under TCG.
volume_clear = none
[oslo_concurrency]
lock_path = /var/lib/cinder/tmp
INI
# Debian's template spells the target options with their old names; drop them.
ini_del "$conf" lvm iscsi_protocol || true
ini_del "$conf" lvm iscsi_helper || true
keystone_authtoken "$conf" cinder svc_cinder
conf_private cinder "$conf"
install -d -o cinder -g cinder -m 0750 /var/lib/cinder/tmp
# LIO needs its modules and configfs; cinder-rtstool (through cinder's rootwrap) does the rest.
modprobe target_core_mod 2>/dev/null || true
modprobe iscsi_target_mod 2>/dev/null || true
[ -d /sys/kernel/config/target ] || mount -t configfs configfs /sys/kernel/config 2>/dev/null || true
[ -d /sys/kernel/config/target ] || fail "LIO target unavailable: /sys/kernel/config/target is missing (kernel modules target_core_mod, iscsi_target_mod)"

# cinder-volume exits when the cinder schema is not there yet; the controller starts cinder-api
# only once the schema is in place (baked into its image, or `cinder-manage db sync`), so the
# API answering means the tables exist.
wait_for "cinder-api at $ctl:8776" "$PEER_TIMEOUT" probe_http "http://$ctl:8776/" 200 300
svc_start cinder-volume
