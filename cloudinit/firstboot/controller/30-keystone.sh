#!/bin/bash
set -eu -o pipefail
# shellcheck source-path=SCRIPTDIR/.. source=lib.sh
. "${STACKSEED_LIB:-/usr/local/lib/stackseed/lib.sh}"

# Keystone: database (migrated at image build unless the packages changed since), Fernet and
# credential keys, bootstrap (admin, RegionOne, identity endpoints). Debian 13 serves keystone
# with uwsgi (keystone.service, port 5000), not Apache.
need_secrets db_keystone admin_password
ctl=$(fact node.ip)

ini_merge /etc/keystone/keystone.conf <<INI
[database]
connection = $(db_url keystone db_keystone keystone)
[token]
provider = fernet
[identity]
# bcrypt's default 12 rounds cost seconds per password check under TCG, and every service
# and every openstacksdk session logs in with a password: 4 (bcrypt's minimum) for a lab.
password_hash_rounds = 4
[cache]
# Token validation and role lookups from memcached: every API call of every service pays them.
enabled = true
backend = oslo_cache.memcache_pool
memcache_servers = $ctl:11211
INI
conf_private keystone /etc/keystone/keystone.conf
uwsgi_app /etc/keystone/keystone-uwsgi.ini

# keystone-manage bootstrap runs as root below and would create keystone's log as root, mode
# 0600; uwsgi, running as keystone, could then not open it and would exit at once. db_sync as
# keystone used to make the file first; with the schema baked in the image it does not run, so
# the log is made here, as keystone's, unless it exists.
log=/var/log/keystone/keystone.log
[ -e "$log" ] || install -o keystone -g adm -m 0640 /dev/null "$log"
chown keystone "$log"
if ! db_baked keystone; then
    as_user keystone keystone-manage db_sync
fi
fernet_keys /etc/keystone/fernet-keys keystone:keystone
fernet_keys /etc/keystone/credential-keys keystone:keystone

# The bootstrap (admin, roles, catalog entry: it writes the database) and keystone's start each
# import keystone, about a minute of CPU under TCG: side by side. The password reaches
# keystone-manage through its environment, not its command line.
OS_BOOTSTRAP_PASSWORD=$(secret admin_password) keystone-manage bootstrap \
    --bootstrap-admin-url "http://$ctl:5000/v3/" \
    --bootstrap-internal-url "http://$ctl:5000/v3/" \
    --bootstrap-public-url "http://$ctl:5000/v3/" \
    --bootstrap-region-id "$(fact region)" &
bootstrap=$!
svc_start keystone
wait "$bootstrap" || fail "keystone-manage bootstrap failed: see /var/log/keystone/keystone.log"
wait_for "keystone /v3 on $ctl:5000" "$SERVICE_TIMEOUT" probe_http "http://$ctl:5000/v3" 200
wait_for "an admin token from keystone" "$SERVICE_TIMEOUT" probe_admin_token
