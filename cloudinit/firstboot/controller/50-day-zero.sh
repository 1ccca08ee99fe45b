#!/bin/bash
set -eu -o pipefail
# shellcheck source-path=SCRIPTDIR/.. source=lib.sh
. "${STACKSEED_LIB:-/usr/local/lib/stackseed/lib.sh}"

# Day-zero content, made once (found, not duplicated, on a re-run) by stackseed-cloud in one
# openstacksdk process: flavors, the provider network and its pool, a self-service network
# routed to it, SSH and ICMP in the admin project's default security group, and the test image
# the controller image carries (kernel + initramfs built by elements/stackseed-testimage).
need_secrets admin_password
fact provider.cidr >/dev/null
STACKSEED_TESTIMAGE_DIR=${STACKSEED_TESTIMAGE_DIR:-/usr/share/stackseed/testimage} \
    stackseed_cloud day-zero
