#!/bin/bash
set -eu -o pipefail
# shellcheck source-path=SCRIPTDIR/.. source=lib.sh
. "${STACKSEED_LIB:-/usr/local/lib/stackseed/lib.sh}"

# Nodes boot in any order: wait (bounded) until the controller's RabbitMQ takes our login and
# keystone answers, naming whichever never came.
need_secrets rabbit_password
wait_rabbit "$PEER_TIMEOUT"
wait_keystone "$PEER_TIMEOUT"
need_secrets db_cinder
wait_for "mariadb login as cinder at $(fact controller.ip):3306" "$PEER_TIMEOUT" probe_mysql cinder db_cinder cinder
