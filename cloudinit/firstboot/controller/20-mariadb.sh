#!/bin/bash
set -eu -o pipefail
# shellcheck source-path=SCRIPTDIR/.. source=lib.sh
. "${STACKSEED_LIB:-/usr/local/lib/stackseed/lib.sh}"

# MariaDB on the management address with the install guide's 99-openstack.cnf, then one
# database and account per service (passwords go to mysql on stdin). The controller image
# carries the databases already migrated (elements/stackseed-db-baked) and no account: here each
# account gets its lab's password; the options below that shape a schema are the bake's too.
need_secrets db_keystone db_glance db_placement db_nova db_neutron db_cinder

# snapshot isolation: MariaDB 11.6.2 and later (trixie's 11.8) turn it on, and under OpenStack's
# REPEATABLE READ a write to a row another transaction changed since this one's snapshot then
# fails with error 1020 ("Record has changed since last read") where it used to wait for the
# lock. nova does not retry that (launchpad bug 2116186): a server delete ended in ERROR after a
# restart of the controller. Off, as before 11.6.2; "loose-" lets an older server skip it.
cat >/etc/mysql/mariadb.conf.d/99-openstack.cnf <<CNF
[mysqld]
bind-address = $(fact node.ip)
default-storage-engine = innodb
innodb_file_per_table = on
max_connections = 4096
collation-server = utf8_general_ci
character-set-server = utf8
loose-innodb_snapshot_isolation = off
CNF
chmod 0644 /etc/mysql/mariadb.conf.d/99-openstack.cnf

svc_start mariadb
wait_for "mariadb on its unix socket" 120 mysqladmin --protocol=socket -u root ping

db_account keystone keystone db_keystone
db_account glance glance db_glance
db_account placement placement db_placement
db_account nova_api nova db_nova
db_account nova nova db_nova
db_account nova_cell0 nova db_nova
db_account neutron neutron db_neutron
db_account cinder cinder db_cinder
mysql_root <<<'FLUSH PRIVILEGES;'
log "databases ready: keystone glance placement nova_api nova nova_cell0 neutron cinder"
