#!/bin/bash
set -eu -o pipefail
# shellcheck source-path=SCRIPTDIR/.. source=lib.sh
. "${STACKSEED_LIB:-/usr/local/lib/stackseed/lib.sh}"

# The iSCSI initiator for volumes. Every clone of the image would share the baked initiator
# name, and targets tell initiators apart by it: make a new one, once per node.
marker=/etc/iscsi/.stackseed-initiator
if [ ! -e "$marker" ]; then
    printf 'InitiatorName=%s\n' "$(iscsi-iname)" >/etc/iscsi/initiatorname.iscsi
    chmod 0600 /etc/iscsi/initiatorname.iscsi
    touch "$marker"
fi
svc_start iscsid
