#!/bin/bash
set -eu -o pipefail
# shellcheck source-path=SCRIPTDIR/.. source=lib.sh
. "${STACKSEED_LIB:-/usr/local/lib/stackseed/lib.sh}"

# Nodes boot in any order: wait (bounded) until the controller's RabbitMQ takes our login and
# keystone answers, naming whichever never came.
need_secrets rabbit_password
wait_rabbit "$PEER_TIMEOUT"
wait_keystone "$PEER_TIMEOUT"
