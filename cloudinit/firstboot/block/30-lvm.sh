#!/bin/bash
set -eu -o pipefail
# shellcheck source-path=SCRIPTDIR/.. source=lib.sh
. "${STACKSEED_LIB:-/usr/local/lib/stackseed/lib.sh}"

# The cinder-volumes volume group on the disk the topology gave this node, found by its serial
# (/dev/disk/by-id/virtio-<serial>), never by guessing /dev/sdb or /dev/vdb.
serials=$(python3 - "$STACKSEED_NODE_JSON" <<'PY'
import json, sys
for disk in json.load(open(sys.argv[1]))["node"]["disks"]:
    if disk["purpose"] == "cinder-volumes":
        print(disk["serial"])
PY
)
[ -n "$serials" ] || fail "node.json lists no disk with purpose cinder-volumes"

devices=()
filter='filter = ['
for serial in $serials; do
    link=/dev/disk/by-id/virtio-$serial
    wait_for "disk with serial $serial ($link)" 120 test -b "$link"
    devices+=("$(readlink -f "$link")")
    filter+=" \"a|^$link\$|\","
done
filter+=' "r|.*|" ]'

# Only our disks are scanned (install guide: the LVM filter), so guest volumes inside cinder's
# LVs are never picked up by the node's own LVM.
sed -i '/# stackseed-filter$/d' /etc/lvm/lvm.conf
awk -v line="	$filter # stackseed-filter" \
    '{ print } /^devices \{/ && !added { print line; added = 1 }' /etc/lvm/lvm.conf >/etc/lvm/lvm.conf.new
cat /etc/lvm/lvm.conf.new >/etc/lvm/lvm.conf # keeps the file's mode
rm -f /etc/lvm/lvm.conf.new
lvmconfig devices/filter

if vgs cinder-volumes >/dev/null 2>&1; then
    log "volume group cinder-volumes exists"
else
    for dev in "${devices[@]}"; do
        pvs "$dev" >/dev/null 2>&1 || pvcreate -y "$dev"
    done
    vgcreate cinder-volumes "${devices[@]}"
fi
vgs cinder-volumes
