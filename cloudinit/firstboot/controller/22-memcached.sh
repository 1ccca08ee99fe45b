#!/bin/bash
set -eu -o pipefail
# shellcheck source-path=SCRIPTDIR/.. source=lib.sh
. "${STACKSEED_LIB:-/usr/local/lib/stackseed/lib.sh}"

# memcached bound to the management address (install guide, environment section): keystone's
# token cache and Horizon's sessions.
ip_addr=$(fact node.ip)

# One -l line only: a conf with several (e.g. 127.0.0.1 and ::1) rewritten to the same address
# would make memcached bind it twice and fail to start.
sed -i -E '/^-l[[:space:]]/d' /etc/memcached.conf
echo "-l $ip_addr" >>/etc/memcached.conf
svc_start memcached
