#!/bin/bash
set -eu -o pipefail
# shellcheck source-path=SCRIPTDIR/.. source=lib.sh
. "${STACKSEED_LIB:-/usr/local/lib/stackseed/lib.sh}"

# RabbitMQ with the `openstack` user. The password never reaches an argv: rabbitmqctl 4.0's
# add_user does not return when the password comes on stdin without a terminal, so the user
# goes in as a definitions file holding only a salted hash (0600, removed right after).
need_secrets rabbit_password

# Erlang's schedulers spin while idle; under TCG that spin costs a third of a vCPU that the
# OpenStack services starting next need.
line_once /etc/rabbitmq/rabbitmq-env.conf \
    'SERVER_ADDITIONAL_ERL_ARGS="+sbwt none +sbwtdcpu none +sbwtdio none"'
svc_start rabbitmq-server
wait_for "rabbitmq node up" "$SERVICE_TIMEOUT" rabbitmqctl -q await_startup

defs=$(mktemp /var/lib/rabbitmq/stackseed-defs.XXXXXX.json)
trap 'rm -f "$defs"' EXIT
python3 - "$defs" <<'PY'
import base64, hashlib, json, os, sys
password = json.load(open(os.environ["STACKSEED_SECRETS_JSON"]))["rabbit_password"]
salt = os.urandom(4)
digest = base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()
definitions = {
    "users": [{"name": "openstack", "password_hash": digest, "tags": [],
               "hashing_algorithm": "rabbit_password_hashing_sha256"}],
    "permissions": [{"user": "openstack", "vhost": "/",
                     "configure": ".*", "write": ".*", "read": ".*"}],
}
with open(sys.argv[1], "w") as f:
    json.dump(definitions, f)
PY
chown rabbitmq:rabbitmq "$defs"
chmod 0600 "$defs"
rabbitmqctl -q import_definitions "$defs"
wait_for "rabbitmq login as openstack" 120 probe_rabbit
log "rabbitmq user openstack ready"
