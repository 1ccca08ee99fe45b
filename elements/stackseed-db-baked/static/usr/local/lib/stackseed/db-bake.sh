# shellcheck shell=bash
# shellcheck disable=SC2034 # the constants are read by the scripts that source this
# stackseed-db-baked: MariaDB inside the image build, for the services' schema migrations.
# Sourced by post-install.d/70-stackseed-db-bake (and by the tests, which move every path into
# a scratch directory through the STACKSEED_BAKE_* variables).
#
# The server listens on its unix socket only (no port on the build host) and the services reach
# it as their own system users through unix_socket authentication: no password exists at build
# time, so none can end up in the image.

set -eu -o pipefail

BAKE_DATADIR=${STACKSEED_BAKE_DATADIR:-/var/lib/mysql}
BAKE_SOCKET=${STACKSEED_BAKE_SOCKET:-/run/mysqld/mysqld.sock}
BAKE_PIDFILE=${STACKSEED_BAKE_PIDFILE:-$(dirname "$BAKE_SOCKET")/stackseed-bake.pid}
# The system user mariadbd runs as (it owns the data directory).
BAKE_MYSQLD_USER=${STACKSEED_BAKE_MYSQLD_USER:-mysql}
# Work files (the services' build-time configuration, the server's log); removed at the end.
BAKE_WORK=${STACKSEED_BAKE_WORK:-/tmp/stackseed-db-bake}
# Option files: the image's own (/etc/mysql) unless a test says --no-defaults.
BAKE_DEFAULTS=${STACKSEED_BAKE_DEFAULTS:-}
BAKE_START_TIMEOUT=${STACKSEED_BAKE_START_TIMEOUT:-120}
BAKE_STOP_TIMEOUT=${STACKSEED_BAKE_STOP_TIMEOUT:-600}

# The server options of first boot's 99-openstack.cnf (cloudinit/firstboot/controller/20-mariadb.sh)
# that decide how a schema is made, so a baked schema is the one first boot would have made
# (tests/test_db_baked.py checks the two agree). No bind-address: no network at build.
BAKE_SERVER_OPTIONS=(
    --default-storage-engine=innodb
    --innodb-file-per-table=on
    --collation-server=utf8_general_ci
    --character-set-server=utf8
)

# nova's cell mappings as templates: each nova process fills {scheme}, {username}, {password},
# {hostname}, {port}, {path} and {query} from its own [database] connection and transport_url,
# so nova_api stores no password, and one image serves any address. The same three strings are
# in cloudinit/firstboot/lib.sh (tests/test_db_baked.py checks they are equal).
NOVA_CELL0_DB='{scheme}://{username}:{password}@{hostname}/{path}_cell0?{query}'
NOVA_CELL1_DB='{scheme}://{username}:{password}@{hostname}/{path}?{query}'
NOVA_CELL1_MQ='{scheme}://{username}:{password}@{hostname}:{port}/{path}'
# What the build-time nova.conf names as its queue: only parsed (create_cell checks that the
# template fills into a valid URL), never connected to.
BAKE_TRANSPORT_URL='rabbit://stackseed-bake@localhost:5672/'

# bake_server_log: the server's last words, for a failure message.
bake_server_log() {
    tail -n 30 "$BAKE_WORK/mariadbd.out" "$BAKE_WORK/mariadbd.log" >&2 2>/dev/null || true
}

bake_log() {
    printf 'stackseed-db-baked: %s\n' "$*"
}

bake_fail() {
    printf 'stackseed-db-baked: ERROR: %s\n' "$*" >&2
    exit 1
}

# bake_sql: SQL on stdin, as MariaDB's root over the socket (unix_socket: the caller is root).
bake_sql() {
    mariadb --protocol=socket --socket="$BAKE_SOCKET" -u root -N -B
}

bake_pid() {
    local pid
    pid=$(cat "$BAKE_PIDFILE" 2>/dev/null) || return 1
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && printf '%s\n' "$pid"
}

bake_db_start() {
    local waited=0
    [ -d "$BAKE_DATADIR/mysql" ] ||
        bake_fail "$BAKE_DATADIR has no system tables (mariadb-server's postinst makes them)"
    if bake_pid >/dev/null; then
        bake_fail "a MariaDB started by an earlier bake still runs (pid $(bake_pid))"
    fi
    rm -rf "$BAKE_WORK"
    # The server's own log goes here too, written as its user.
    install -d -o "$BAKE_MYSQLD_USER" -m 0755 "$BAKE_WORK"
    install -d -o "$BAKE_MYSQLD_USER" -m 0755 "$(dirname "$BAKE_SOCKET")"
    # Native AIO (io_uring, libaio) may be refused inside a build container; the files it
    # writes are the same either way. loose-: a server that dropped the option only warns.
    # shellcheck disable=SC2086 # BAKE_DEFAULTS is empty or one option
    mariadbd $BAKE_DEFAULTS --user="$BAKE_MYSQLD_USER" --datadir="$BAKE_DATADIR" \
        --socket="$BAKE_SOCKET" --pid-file="$BAKE_PIDFILE" --skip-networking \
        --log-error="$BAKE_WORK/mariadbd.log" --loose-innodb-use-native-aio=off --skip-log-bin \
        "${BAKE_SERVER_OPTIONS[@]}" </dev/null >"$BAKE_WORK/mariadbd.out" 2>&1 &
    until bake_sql <<<'SELECT 1;' >/dev/null 2>&1; do
        if ! kill -0 "$!" 2>/dev/null; then
            bake_server_log
            bake_fail "mariadbd exited at start (log above)"
        fi
        if [ "$waited" -ge "$BAKE_START_TIMEOUT" ]; then
            bake_server_log
            bake_fail "mariadbd did not answer on $BAKE_SOCKET within ${BAKE_START_TIMEOUT}s"
        fi
        sleep 1
        waited=$((waited + 1))
    done
    bake_log "MariaDB up on $BAKE_SOCKET (no network) after ${waited}s"
}

# bake_db_stop: a slow, clean shutdown (purge and change-buffer merge done now, not at the
# first boot under TCG), then the build's leftovers go: its log, its configuration, the
# buffer pool's page list. Fails unless the server says it shut down completely.
bake_db_stop() {
    local pid waited=0
    pid=$(bake_pid) || { rm -rf "$BAKE_WORK"; return 0; }
    bake_sql <<<'SET GLOBAL innodb_fast_shutdown = 0; SHUTDOWN;' >/dev/null 2>&1 ||
        kill -TERM "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do
        if [ "$waited" -ge "$BAKE_STOP_TIMEOUT" ]; then
            kill -KILL "$pid" 2>/dev/null || true
            bake_fail "mariadbd (pid $pid) did not stop within ${BAKE_STOP_TIMEOUT}s: killed"
        fi
        sleep 1
        waited=$((waited + 1))
    done
    if ! grep -q 'Shutdown complete' "$BAKE_WORK/mariadbd.log" 2>/dev/null; then
        bake_server_log
        bake_fail "mariadbd stopped without 'Shutdown complete' (log above)"
    fi
    rm -f "$BAKE_DATADIR/ib_buffer_pool" "$BAKE_PIDFILE"
    rm -rf "$BAKE_WORK"
    bake_log "MariaDB stopped cleanly after ${waited}s"
}

# bake_db_abort: the EXIT trap of a bake that failed: the server must not outlive the build
# step (diskimage-builder could not unmount the chroot), whatever state it is in.
bake_db_abort() {
    local pid
    if pid=$(bake_pid); then
        bake_server_log
        bake_sql <<<'SHUTDOWN;' >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 60); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 1
        done
        kill -KILL "$pid" 2>/dev/null || true
    fi
}

# bake_account <user> <database...>: the databases, and the account <user> that reaches them
# as the system user of the same name, with no password (unix_socket).
bake_account() {
    local user=$1 db
    shift
    {
        printf "CREATE USER IF NOT EXISTS '%s'@'localhost' IDENTIFIED VIA unix_socket;\n" "$user"
        for db in "$@"; do
            printf "CREATE DATABASE IF NOT EXISTS \`%s\`;\n" "$db"
            printf "GRANT ALL PRIVILEGES ON \`%s\`.* TO '%s'@'localhost';\n" "$db" "$user"
        done
    } | bake_sql
}

# bake_drop_accounts <user...>: the image keeps the schemas, not the build's accounts; first
# boot makes each account with its lab's password (20-mariadb's db_account).
bake_drop_accounts() {
    local user
    for user in "$@"; do
        printf "DROP USER IF EXISTS '%s'@'localhost';\n" "$user"
    done | bake_sql
}

# bake_url <user> <database>: SQLAlchemy's URL through the socket, with no password.
bake_url() {
    printf 'mysql+pymysql://%s@localhost/%s?unix_socket=%s' "$1" "$2" "$BAKE_SOCKET"
}

# bake_conf <name>: writes stdin to the build-time configuration <name>.conf (readable by the
# service's user; it holds no secret) and prints its path.
bake_conf() {
    local file="$BAKE_WORK/$1.conf"
    cat >"$file"
    chmod 0644 "$file"
    printf '%s\n' "$file"
}

# bake_as <user> <command...>: a service's own management command, as that service, timed.
bake_as() {
    local user=$1 started=$SECONDS
    shift
    bake_log "$user: $*"
    runuser -u "$user" -- "$@"
    bake_log "$user: done in $((SECONDS - started))s"
}
