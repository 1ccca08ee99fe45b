#!/bin/bash
set -eu -o pipefail
# shellcheck source-path=SCRIPTDIR/.. source=lib.sh
. "${STACKSEED_LIB:-/usr/local/lib/stackseed/lib.sh}"

# RabbitMQ with the `openstack` user (password on rabbitmqctl's stdin, never its argv).
need_secrets rabbit_password

svc_start rabbitmq-server
wait_for "rabbitmq node up" 300 rabbitmqctl -q await_startup

if rabbitmqctl -q list_users | awk '{print $1}' | grep -qx openstack; then
    secret rabbit_password | rabbitmqctl -q change_password openstack
else
    secret rabbit_password | rabbitmqctl -q add_user openstack
fi
rabbitmqctl -q set_permissions -p / openstack '.*' '.*' '.*'
log "rabbitmq user openstack ready"
