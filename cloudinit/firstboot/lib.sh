# shellcheck shell=bash
# stackseed first-boot library: sourced by every phase script (never run on its own).
#
# Rules every phase follows, because its output ends up in a log and, on failure, on the console:
#   - never echo a secret, never `set -x`;
#   - never put a secret on a command line (other users can read /proc/*/cmdline): secrets travel
#     through stdin (ini_merge, mysql_root, rabbitmqctl), a file, or a child's environment;
#   - every step is idempotent: a re-run finds what exists and leaves it alone.
# Paths hang off STACKSEED_ROOT so the library can be exercised in a scratch root by the tests.

set -eu -o pipefail

STACKSEED_ROOT=${STACKSEED_ROOT:-}
STACKSEED_NODE_JSON=${STACKSEED_NODE_JSON:-$STACKSEED_ROOT/etc/stackseed/node.json}
STACKSEED_SECRETS_JSON=${STACKSEED_SECRETS_JSON:-$STACKSEED_ROOT/etc/stackseed/secrets.json}
STACKSEED_PHASE=${STACKSEED_PHASE:-manual}
export STACKSEED_NODE_JSON STACKSEED_SECRETS_JSON
# Asks a two-worker uwsgi app for its second worker once the node's services are all up.
STACKSEED_WORKERS=/usr/local/lib/stackseed/stackseed-workers

log() {
    printf '[%s] %s\n' "$STACKSEED_PHASE" "$*"
}

# A long phase's headway ("installing 40%"): logged like any line, and the runner repeats it on
# the console as a `status=progress` marker, which `lab up --wait` shows beside the phase.
progress() {
    printf '[%s] progress: %s\n' "$STACKSEED_PHASE" "$*"
}

# Fails the phase with one line that says what went wrong; the runner shows it on the console.
fail() {
    printf '[%s] ERROR: %s\n' "$STACKSEED_PHASE" "$*" >&2
    exit 1
}

# Reads JSON at a dotted path ("node.ip", "provider.pool.0") from a file; scalars print bare,
# lists and objects as JSON. A missing key or a null fails (non-zero) with nothing printed.
_json_get() {
    # jq, not python3: a phase reads dozens of values and python3 costs a second a start under TCG.
    jq -r --arg path "$2" '
        ($path | if . == "" then [] else split(".") end
            | map(if test("^[0-9]+$") then tonumber else . end)) as $p
        | getpath($p)
        | if . == null then error("missing")
          elif type == "object" or type == "array" then tojson
          else tostring end' "$1" 2>/dev/null
}

# fact <dotted path>: a value from /etc/stackseed/node.json (builder.plan.node_facts()).
fact() {
    _json_get "$STACKSEED_NODE_JSON" "$1" || fail "node.json has no value at '$1' ($STACKSEED_NODE_JSON)"
}

# fact_or <dotted path> <default>
fact_or() {
    _json_get "$STACKSEED_NODE_JSON" "$1" 2>/dev/null || printf '%s\n' "$2"
}

# secret <name>: only ever used inside $(...) feeding a heredoc or a child's environment.
secret() {
    local value
    value=$(_json_get "$STACKSEED_SECRETS_JSON" "$1") ||
        fail "secrets.json has no '$1' (the seed must carry it for role $(fact node.role))"
    printf '%s' "$value"
}

# wait_for <what> <timeout seconds> <command...>
# Runs the command until it succeeds, backing off 1, 2, 4 ... 15 s; on timeout fails naming <what>.
# How long a node waits for a service on another node: the controller's whole assembly under
# TCG, plus a reboot of it, plus nodes started long before it.
PEER_TIMEOUT=5400
# How long a service this phase started may take to answer: an API imports its whole project
# under TCG, and since phases run side by side (phases.yaml) another service loads beside it.
# A wait ends as soon as the service answers, so the bound costs nothing when all goes well.
# shellcheck disable=SC2034 # read by the phases that source this
SERVICE_TIMEOUT=900
# How long a node's services may take to show up alive in the controller's APIs once their
# phases ran (the controller answers by then; a starved nova-compute loads for minutes).
JOIN_TIMEOUT=${STACKSEED_JOIN_TIMEOUT:-1200}

# The units this phase started (svc_start): a wait gives up as soon as one of them has failed or
# keeps restarting, naming it, instead of spinning to its timeout (keystone's uwsgi exiting at
# once cost a phase 900 s of "waiting for keystone /v3").
STACKSEED_STARTED=()

wait_for() {
    local what=$1 timeout=$2 delay=1 start now why left
    shift 2
    start=$(date +%s)
    log "waiting for $what (up to ${timeout}s)"
    while true; do
        # A probe that reached its server may wait for the answer as long as this wait may.
        left=$((timeout - ($(date +%s) - start)))
        [ "$left" -ge 10 ] || left=10
        if STACKSEED_ANSWER_TIMEOUT=$left "$@" >/dev/null 2>&1; then
            log "$what is ready after $(($(date +%s) - start))s"
            return 0
        fi
        if why=$(unit_gave_up); then
            fail "$why while waiting for $what: see journalctl -u ${why%% *}"
        fi
        now=$(date +%s)
        if [ $((now - start)) -ge "$timeout" ]; then
            fail "timed out after ${timeout}s waiting for $what"
        fi
        if [ $((now + delay - start)) -gt "$timeout" ]; then
            delay=$((timeout - (now - start)))
            [ "$delay" -ge 1 ] || delay=1
        fi
        sleep "$delay"
        delay=$((delay * 2))
        [ "$delay" -le 15 ] || delay=15
    done
}

# unit_gave_up: prints "<unit> failed" or "<unit> restarted N times" for the first unit this
# phase started that is in either state (3 restarts: a crash loop, not one hiccup); false if none.
unit_gave_up() {
    [ "${#STACKSEED_STARTED[@]}" -gt 0 ] || return 1
    # One systemctl for them all: a block of Id=, ActiveState=, NRestarts= lines per unit, in
    # systemd's order of properties, blocks apart by an empty line.
    systemctl show --property=Id,ActiveState,NRestarts -- "${STACKSEED_STARTED[@]}" 2>/dev/null |
        awk 'BEGIN { RS = ""; FS = "\n" }
            {
                unit = ""; state = ""; n = 0
                for (i = 1; i <= NF; i++) {
                    eq = index($i, "="); key = substr($i, 1, eq - 1); value = substr($i, eq + 1)
                    if (key == "Id") { unit = value; sub(/\.service$/, "", unit) }
                    else if (key == "ActiveState") state = value
                    else if (key == "NRestarts") n = value + 0
                }
                if (state == "failed") { print unit " failed"; found = 1; exit }
                if (n >= 3) { print unit " restarted " n " times"; found = 1; exit }
            }
            END { exit !found }'
}

# --- readiness probes: each returns 0 when the dependency answers -------------------------

probe_tcp() {
    python3 - "$1" "$2" <<'PY'
import socket, sys
socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3).close()
PY
}

# probe_http <url> [status...]: the URL answers with one of the statuses (default any < 500).
probe_http() {
    # curl, not Python: under TCG a Python start costs 1-2 s per probe. A request the server
    # took is waited for (STACKSEED_ANSWER_TIMEOUT: wait_for's time left), never abandoned and
    # asked again: a loaded controller renders every abandoned page anyway (stackseed-services'
    # http_status).
    local url=$1 status wanted
    shift
    status=$(curl -s -o /dev/null --connect-timeout 10 -m "${STACKSEED_ANSWER_TIMEOUT:-240}" \
        -w '%{http_code}' "$url") || true
    if [ "$#" -eq 0 ]; then
        [ "$status" -ge 100 ] 2>/dev/null && [ "$status" -lt 500 ]
        return
    fi
    for wanted in "$@"; do
        [ "$status" = "$wanted" ] && return 0
    done
    return 1
}

# probe_rabbit: the openstack user can log in to the controller's RabbitMQ (AMQP handshake).
probe_rabbit() {
    python3 - <<'PY'
import json, os
import kombu
facts = json.load(open(os.environ["STACKSEED_NODE_JSON"]))
password = json.load(open(os.environ["STACKSEED_SECRETS_JSON"]))["rabbit_password"]
host = facts["controller"]["ip"]
with kombu.Connection(f"amqp://openstack:{password}@{host}:5672//", connect_timeout=5) as conn:
    conn.connect()
PY
}

# probe_mysql <user> <secret name> <database>: the service's account reaches its database.
probe_mysql() {
    python3 - "$1" "$2" "$3" <<'PY'
import json, os, sys
import pymysql
facts = json.load(open(os.environ["STACKSEED_NODE_JSON"]))
password = json.load(open(os.environ["STACKSEED_SECRETS_JSON"]))[sys.argv[2]]
pymysql.connect(host=facts["controller"]["ip"], user=sys.argv[1], password=password,
                database=sys.argv[3], connect_timeout=5).close()
PY
}

# The readiness a node needs from the controller, with the timeouts first boot allows.
# Nodes boot in any order, so the waits are long enough for the controller to finish.
wait_keystone() {
    wait_for "keystone /v3 at $(fact controller.ip):5000" "${1:-$PEER_TIMEOUT}" \
        probe_http "http://$(fact controller.ip):5000/v3" 200
}

# wait_joined [timeout [option...]]: until the controller's APIs show every service of node.json's `joins`
# alive (stackseed-joined polls them in one process; it names what is missing on timeout).
# Further options go to stackseed-joined as they are.
wait_joined() {
    python3 "$STACKSEED_ROOT/usr/local/lib/stackseed/stackseed-joined" --timeout "${1:-$JOIN_TIMEOUT}" \
        "${@:2}"
}

# wait_agent_alive <timeout> <join-name>: one of this node's joins (joins.yaml: e.g.
# neutron-l2-agent) alive as the controller's API lists it. Restarted only after <timeout>/2: a
# TCG controller's agent can take minutes to report for the first time.
wait_agent_alive() {
    wait_joined "$1" --restart-after "$(($1 / 2))" --only "$2"
}

wait_rabbit() {
    wait_for "rabbitmq login as openstack at $(fact controller.ip):5672" "${1:-$PEER_TIMEOUT}" probe_rabbit
}

# --- configuration files -----------------------------------------------------------------

# ini_merge <file>: merges INI text from stdin (crudini keeps comments and other keys);
# values come in on stdin, so secrets never show on a command line.
ini_merge() {
    local file=$1
    [ -e "$file" ] || fail "config file $file is missing (is the package installed in the image?)"
    crudini --merge "$file"
}

# ini_set <file> <section> <key> <value>
ini_set() {
    printf '[%s]\n%s = %s\n' "$2" "$3" "$4" | ini_merge "$1"
}

# ini_del <file> <section> <key>
ini_del() {
    crudini --del "$1" "$2" "$3"
}

# conf_private <group> <file...>: config holding secrets is root:<group> 0640, never world-readable.
conf_private() {
    local group=$1 file
    shift
    for file in "$@"; do
        chown "root:$group" "$file"
        chmod 0640 "$file"
    done
}

# write_private <file> <owner:group> <mode>: writes stdin to a file created with its final mode.
write_private() {
    local file=$1 owner=$2 mode=$3 tmp
    tmp=$(mktemp "$file.XXXXXX")
    cat >"$tmp"
    chown "$owner" "$tmp"
    chmod "$mode" "$tmp"
    mv -f "$tmp" "$file"
}

# fernet_keys <dir> <owner:group>: a key repository as keystone-manage's fernet_setup (and
# credential_setup) leaves it: key 1 (primary) and key 0 (staged), each 32 random bytes in
# URL-safe base64, readable by the owner alone. Keys already there are kept. Written here, not by
# keystone-manage: each of its runs imports keystone, half a minute of CPU under TCG in the
# phase every other one waits for.
fernet_keys() {
    local dir=$1 owner=$2 n
    install -d -o "${owner%:*}" -g "${owner#*:}" -m 0700 "$dir"
    for n in 1 0; do
        [ -s "$dir/$n" ] && continue
        # printf is a builtin: the key is on no command line.
        printf '%s' "$(head -c 32 /dev/urandom | basenc --base64url)" |
            write_private "$dir/$n" "$owner" 0600
    done
}

# line_once <file> <line>: appends the line unless it is there already.
line_once() {
    grep -qxF -- "$2" "$1" 2>/dev/null || printf '%s\n' "$2" >>"$1"
}

# --- services ----------------------------------------------------------------------------

# owned_by_table <unit>: a phase of phases.json owns the unit (its `units` or `then`): the
# later boots' walk (stackseed-services) starts it in the table's order, so it is never enabled.
owned_by_table() {
    local table=${STACKSEED_PHASES_JSON:-$STACKSEED_ROOT/usr/local/lib/stackseed/phases.json}
    [ -e "$table" ] || return 1
    jq -e --arg unit "$1" \
        '[.phases[] | (.units // []) + (.then // []) | .[]] | index($unit) != null' \
        "$table" >/dev/null 2>&1
}

# svc_start <unit...>: (re)starts units in the order given, waiting for each to be active so the
# next one finds it. Images leave services disabled; first boot starts them. A unit the phase
# table owns stays disabled: enabled, every OpenStack service started at once on a later boot
# (load 13-24 for 16 minutes on a 2-vCPU TCG controller, keystone unanswered for 15 of them,
# nova's notify units holding multi-user.target and with it cloud-final). Others (chrony,
# openvswitch-switch, libvirtd, iscsid) are enabled for systemd to start on every boot.
svc_start() {
    local unit enable=()
    # Units that notify systemd when ready (nova-compute, ...) can take minutes under TCG,
    # past systemd's 90 s start timeout; a timed-out start is killed and started again. One
    # drop-in for every service: each reload costs ~20 s here, so the node pays for one.
    # It covers stackseed-firstboot.service too, which user-data exempts with a later drop-in.
    local dropin=$STACKSEED_ROOT/etc/systemd/system/service.d/60-stackseed-timeout.conf
    if [ ! -e "$dropin" ]; then
        mkdir -p "${dropin%/*}"
        printf '[Service]\nTimeoutStartSec=900\n' >"$dropin"
        systemctl daemon-reload
    fi
    for unit in "$@"; do
        owned_by_table "$unit" || enable+=("$unit")
    done
    # Enabled for the boots after this one (a rebooted node comes back with its services). A
    # plain `systemctl enable` costs about a minute here: Debian's packages ship SysV scripts
    # too, so it runs update-rc.d, then reloads systemd, whose generators rescan every one of
    # them. The symlinks are all the next boot needs; this boot starts the units itself.
    if [ "${#enable[@]}" -gt 0 ] &&
        ! SYSTEMCTL_SKIP_SYSV=1 systemctl enable --no-reload "${enable[@]}" >/dev/null 2>&1; then
        for unit in "${enable[@]}"; do
            SYSTEMCTL_SKIP_SYSV=1 systemctl enable --no-reload "$unit" >/dev/null 2>&1 ||
                log "warning: $unit is not enabled for later boots (systemctl enable $unit)"
        done
    fi
    # One job for them all: systemd starts the units side by side, and a notify unit's start
    # lasts its whole import and connect (a minute or more under TCG), so one after another a
    # phase paid their sum. A failed job names no unit: the first one not active is the culprit.
    if ! systemctl restart "$@"; then
        for unit in "$@"; do
            systemctl is-active --quiet "$unit" ||
                fail "service $unit did not start: see journalctl -u $unit"
        done
    fi
    STACKSEED_STARTED+=("$@")
    for unit in "$@"; do
        wait_for "service $unit active" 120 systemctl is-active --quiet "$unit"
    done
}

# as_user <user> <command...>: runs a service's own management command as that service.
as_user() {
    local user=$1
    shift
    runuser -u "$user" -- "$@"
}

# mysql_root: SQL on stdin, run as MariaDB's root over the unix socket (no password involved).
mysql_root() {
    mysql --protocol=socket -u root
}

# db_account <database> <user> <secret name>: database, account and grants, idempotently.
# The password goes to mysql on stdin.
db_account() {
    local db=$1 user=$2 password
    password=$(secret "$3")
    mysql_root <<SQL
CREATE DATABASE IF NOT EXISTS \`$db\`;
CREATE USER IF NOT EXISTS '$user'@'localhost' IDENTIFIED BY '$password';
CREATE USER IF NOT EXISTS '$user'@'%' IDENTIFIED BY '$password';
ALTER USER '$user'@'localhost' IDENTIFIED BY '$password';
ALTER USER '$user'@'%' IDENTIFIED BY '$password';
GRANT ALL PRIVILEGES ON \`$db\`.* TO '$user'@'localhost';
GRANT ALL PRIVILEGES ON \`$db\`.* TO '$user'@'%';
SQL
}

# db_url <user> <secret name> <database>: the SQLAlchemy URL (for heredocs only: holds a secret).
db_url() {
    printf 'mysql+pymysql://%s:%s@%s/%s' "$1" "$(secret "$2")" "$(fact controller.ip)" "$3"
}

# --- databases the controller image carries (elements/stackseed-db-baked) --------------------

# nova's cell mappings as templates: each nova process fills {scheme}, {username}, {password},
# {hostname}, {port}, {path} and {query} from its own [database] connection and transport_url, so
# nova_api stores no password. The image's bake writes the same three (db-bake.sh; a test checks).
# shellcheck disable=SC2034 # read by 42-nova
NOVA_CELL0_DB='{scheme}://{username}:{password}@{hostname}/{path}_cell0?{query}'
# shellcheck disable=SC2034
NOVA_CELL1_DB='{scheme}://{username}:{password}@{hostname}/{path}?{query}'
# shellcheck disable=SC2034
NOVA_CELL1_MQ='{scheme}://{username}:{password}@{hostname}:{port}/{path}'

# The image's tool that knows what its databases were migrated to (and by which packages).
DB_STATE=${STACKSEED_DB_STATE:-$STACKSEED_ROOT/usr/local/lib/stackseed/stackseed-dbstate}

# db_baked <service>: succeeds when the database the image carries for <service> is already at
# the schema of the packages installed now, so its migration can be skipped; fails otherwise
# (no baked database, a package changed since the build, a version table that differs), and
# the log says which. Run after 20-mariadb (the server must answer).
db_baked() {
    local service=$1 verdict
    if [ ! -e "$DB_STATE" ]; then
        log "$service: the image carries no baked database ($DB_STATE): migrating"
        return 1
    fi
    if verdict=$(python3 "$DB_STATE" check "$service" 2>&1); then
        log "$verdict"
        return 0
    fi
    log "${verdict:-$service: stackseed-dbstate check failed: migrating}"
    return 1
}

# oslo.messaging's 60 s RPC timeout is too short under TCG: a cinder-volume on one starved vCPU
# answers attachment_update after 60-100 s, and the caller gives up on a call that succeeded.
RPC_TIMEOUT=300

# transport_url: oslo.messaging's RabbitMQ URL (for heredocs only: holds a secret).
transport_url() {
    printf 'rabbit://openstack:%s@%s:5672/' "$(secret rabbit_password)" "$(fact controller.ip)"
}

# keystone_authtoken <file> <user> <secret name>: the [keystone_authtoken] block of a service.
keystone_authtoken() {
    local ctl
    ctl=$(fact controller.ip)
    ini_merge "$1" <<INI
[keystone_authtoken]
www_authenticate_uri = http://$ctl:5000
auth_url = http://$ctl:5000
memcached_servers = $ctl:11211
auth_type = password
project_domain_name = Default
user_domain_name = Default
project_name = service
username = $2
password = $(secret "$3")
region_name = $(fact region)
INI
}

# service_user_block <file> <section> <user> <secret name> [region]: keystoneauth options of a
# client section ([placement], [neutron], [nova], [service_user] ...).
service_user_block() {
    local ctl
    ctl=$(fact controller.ip)
    ini_merge "$1" <<INI
[$2]
auth_url = http://$ctl:5000
auth_type = password
project_domain_name = Default
user_domain_name = Default
region_name = $(fact region)
project_name = service
username = $3
password = $(secret "$4")
INI
}

# --- OpenStack API calls -----------------------------------------------------------------

# stackseed_cloud token|identity|day-zero: the controller's API objects, each command in ONE
# openstacksdk process as admin (stackseed-cloud; the `openstack` CLI costs seconds per call
# under TCG). The admin password is read from secrets.json there, never passed here.
stackseed_cloud() {
    python3 -u "$STACKSEED_ROOT/usr/local/lib/stackseed/stackseed-cloud" "$@"
}

# probe_admin_token: the admin credentials can issue a token (keystone fully usable).
probe_admin_token() {
    stackseed_cloud token
}

# need_secrets <name...>: fails at once when the seed lacks one, before any file is touched
# (a failed $(secret ...) inside a heredoc would otherwise leave an empty value behind).
need_secrets() {
    local name
    for name in "$@"; do
        _json_get "$STACKSEED_SECRETS_JSON" "$name" >/dev/null ||
            fail "secrets.json has no '$name' (see cloudinit/firstboot/secrets-by-role.yaml)"
    done
}

# uwsgi_app <ini...>: Debian's uwsgi API apps made fit for a lab controller under TCG.
# - Processes: Debian starts 8-16 each, and every process imports the whole service (keystone's
#   second one cost ~55 s of CPU on first boot, and again on every later boot). One process where
#   the app serves requests on threads (`threads` above 1: keystone, placement, cinder-api, nova's
#   metadata API); two where a process serves one request at a time (nova-api, glance-api,
#   neutron-api), so one slow call does not hold the API.
# - A two-process app starts with one worker (uwsgi's manual "cheaper" mode) and gets its second
#   once the node's services are all up: each worker imports the whole service (~60 s of CPU
#   under TCG), and a boot's CPU goes to what readiness needs first. At that point
#   stackseed-workers --settle, in the background, writes "+" to each such app's master FIFO,
#   one app at a time, each once the node has a core to spare; an app started later (a
#   restart by hand) asks for its second worker itself once its first accepts. The FIFO sits in
#   the service user's home: uwsgi makes it after dropping to that user. (Trixie's glance-api
#   runs glance's own server, not this .ini; its lines matter where a package runs uwsgi.)
# - "Connection: close" on every response, as Debian's neutron-api already sends: uwsgi's
#   http-socket closes the connection after each response but answers HTTP/1.1 without saying
#   so, and a client that reuses the connection (openstacksdk after a 204) meets a closed socket:
#   `lab verify` lost its server cleanup to nova-api's "Connection reset by peer".
# - Ten seconds, not uwsgi's sixty, for a worker to finish when the app stops: a worker the
#   service's own threads keep alive waited out the whole minute before uwsgi killed it
#   (neutron-api's second worker, "NO MERCY", in every `lab stop` of the controller).
uwsgi_app() {
    local file threads n user name
    for file in "$@"; do
        [ -e "$file" ] || continue
        threads=$(uwsgi_value "$file" threads)
        n=2
        [ "${threads:-1}" -le 1 ] || n=1
        sed -i -E "s/^processes[[:space:]]*=.*/processes = $n/" "$file"
        line_once "$file" "add-header = Connection: close"
        line_once "$file" "worker-reload-mercy = 10"
        user=$(uwsgi_value "$file" uid)
        name=$(uwsgi_value "$file" name)
        if [ "$n" = 2 ] && [ -n "$user" ] && [ -n "$name" ]; then
            line_once "$file" "cheaper-algo = manual"
            line_once "$file" "cheaper = 1"
            line_once "$file" "cheaper-initial = 1"
            line_once "$file" "master-fifo = /var/lib/$user/uwsgi-$name.fifo"
            line_once "$file" "hook-accepting1-once = exec:$STACKSEED_WORKERS --if-ready $file || :"
        fi
    done
}

# uwsgi_value <ini> <key>: the key's last value in a uwsgi .ini (uwsgi reads keys repeated, and
# Debian's files repeat some), empty when it has none.
uwsgi_value() {
    sed -n -E "s/^$2[[:space:]]*=[[:space:]]*([^[:space:]]+)[[:space:]]*\$/\1/p" "$1" | tail -n 1
}

# uwsgi_rpc_heartbeat native|eventlet <ini...>: API apps that make RPC calls run under uwsgi,
# whose idle workers never run oslo.messaging's default (green) heartbeat: RabbitMQ dropped their
# connections after 60 s ("missed heartbeats from client"), and the next request's reconnect
# cost the client its HTTP connection (`lab verify` saw "Remote end closed connection without
# response" deleting its server). The fix depends on the app's threads, and is an environment
# override for these processes only, not the shared .conf the daemons read:
# - native (neutron-api, cinder-api: not monkey-patched under uwsgi): a heartbeat pthread.
# - eventlet (nova's APIs, which monkey-patch at import in 2025.1): no heartbeat at all. A
#   pthread there logs through eventlet's patched locks from a native thread, which eventlet
#   does not support: a nova-api worker hung for good after `lab stop` / `lab start` (the same
#   hang nova-operator met and fixed by turning the pthread off). Without heartbeats RabbitMQ
#   keeps an idle connection open; a broken one is found and re-made on the next send.
uwsgi_rpc_heartbeat() {
    local threads=$1 file pthread="env = OS_OSLO_MESSAGING_RABBIT__HEARTBEAT_IN_PTHREAD=true"
    local none="env = OS_OSLO_MESSAGING_RABBIT__HEARTBEAT_TIMEOUT_THRESHOLD=0"
    shift
    case "$threads" in
    native | eventlet) ;;
    *) fail "uwsgi_rpc_heartbeat: '$threads' is not native or eventlet" ;;
    esac
    for file in "$@"; do
        [ -e "$file" ] || fail "uwsgi config $file is missing (is the package installed in the image?)"
        if [ "$threads" = native ]; then
            sed -i "\|^$none\$|d" "$file"
            line_once "$file" "$pthread"
        else
            sed -i "\|^$pthread\$|d" "$file"
            line_once "$file" "$none"
        fi
    done
}

# has_address <interface> <ip>: the interface carries the address (network-config applied).
has_address() {
    ip -o -4 addr show dev "$1" 2>/dev/null | grep -qw "$2"
}

# neutron_backend: openvswitch (default) or linuxbridge, from node.json.
neutron_backend() {
    fact_or neutron_backend openvswitch
}

# neutron_l2_agent: the L2 agent unit of the backend, failing early where the release lacks it
# (neutron 2025.1 removed the Linux bridge agent; Debian 13 ships only an empty package).
neutron_l2_agent() {
    case "$(neutron_backend)" in
    openvswitch) echo neutron-openvswitch-agent ;;
    linuxbridge)
        [ -x /usr/bin/neutron-linuxbridge-agent ] ||
            fail "neutron_backend linuxbridge needs /usr/bin/neutron-linuxbridge-agent, which $(fact release) lacks (removed in neutron 2025.1): use openvswitch, or release bookworm"
        echo neutron-linuxbridge-agent
        ;;
    *) fail "unknown neutron_backend '$(neutron_backend)' in node.json" ;;
    esac
}

# Where neutron's Open vSwitch agent reaches OVSDB (its default ovsdb_connection).
OVSDB_MANAGER=ptcp:6640:127.0.0.1

# neutron_l2_config: agent config for this node (both backends): provider NIC mapping and
# VXLAN on the management (tunnel) address.
neutron_l2_config() {
    local tunnel_ip
    tunnel_ip=$(fact node.tunnel_ip)
    case "$(neutron_backend)" in
    openvswitch)
        svc_start openvswitch-switch
        # The agent's OVSDB manager, made once here: left to the agent, each of its starts that
        # raced ovsdb-server ran `create Manager` again, and the second failed with "multiple
        # rows in Manager match". set-manager replaces the whole set, so a re-run is a no-op.
        [ "$(ovs-vsctl get-manager)" = "$OVSDB_MANAGER" ] || ovs-vsctl set-manager "$OVSDB_MANAGER"
        ovs-vsctl --may-exist add-br br-provider
        if ip link show provider0 >/dev/null 2>&1; then
            ovs-vsctl --may-exist add-port br-provider provider0
            ip link set provider0 up
        fi
        ini_merge /etc/neutron/plugins/ml2/openvswitch_agent.ini <<INI
[ovs]
bridge_mappings = provider:br-provider
local_ip = $tunnel_ip
[agent]
tunnel_types = vxlan
l2_population = true
[securitygroup]
enable_security_group = true
firewall_driver = openvswitch
INI
        conf_private neutron /etc/neutron/plugins/ml2/openvswitch_agent.ini
        ;;
    linuxbridge)
        # The agent enslaves provider0 to the flat network's brq bridge; as with OVS, make sure
        # the NIC (up without an address in network-config) is up.
        if ip link show provider0 >/dev/null 2>&1; then
            ip link set provider0 up
        fi
        ini_merge /etc/neutron/plugins/ml2/linuxbridge_agent.ini <<INI
[linux_bridge]
physical_interface_mappings = provider:provider0
[vxlan]
enable_vxlan = true
local_ip = $tunnel_ip
l2_population = true
[securitygroup]
enable_security_group = true
firewall_driver = neutron.agent.linux.iptables_firewall.IptablesFirewallDriver
INI
        conf_private neutron /etc/neutron/plugins/ml2/linuxbridge_agent.ini
        modprobe br_netfilter 2>/dev/null || true
        line_once /etc/modules-load.d/stackseed.conf br_netfilter
        # Kept for later boots too: modules-load.d runs before systemd-sysctl applies this.
        printf 'net.bridge.bridge-nf-call-iptables = 1\nnet.bridge.bridge-nf-call-ip6tables = 1\n' \
            >/etc/sysctl.d/60-stackseed-bridge.conf
        sysctl -q -p /etc/sysctl.d/60-stackseed-bridge.conf || true
        ;;
    esac
}

# The agents' root commands that privsep does not cover (iptables, dnsmasq and haproxy in a
# namespace) go through one rootwrap daemon per agent instead of `sudo neutron-rootwrap`
# apiece, each of which is a Python start (the daemon exits after 10 idle minutes and is started
# again when needed). Debian's sudoers (neutron-common) allows exactly this command line.
NEUTRON_ROOTWRAP_DAEMON="sudo /usr/bin/neutron-rootwrap-daemon /etc/neutron/rootwrap.conf"

# Privsep helpers (one per oslo.privsep context a service uses, each a fresh Python that
# imports the context's functions: about a minute of a loaded TCG node's CPU apiece, on the
# way to an agent's alive or a first server) are forked by stackseed-privsep from one process
# per project that imported them once (units stackseed-privsep-<project>, started with the
# node's first units of that project). Without that service the same command runs
# privsep-helper itself. Either way through `sudo` alone, not `sudo <project>-rootwrap ...
# privsep-helper` (one Python start less apiece). oslo.privsep appends the context and a socket
# in a fresh mkdtemp to helper_command; the sudoers rule admits exactly that line for the
# project's own contexts, with its config files and nothing else (a config file of the caller's
# could name a logging config, which runs code as root). sudo >= 1.9.10 reads ^...$ arguments
# as a regular expression (trixie 1.9.16, bookworm 1.9.13).
PRIVSEP_SPAWN=/usr/local/lib/stackseed/stackseed-privsep

# Per project: the socket its unit serves, the config files its helpers read (the service's
# own, in its order), and each section=context its services use (the context's cfg_section and
# python path, from the module that defines it).
NEUTRON_PRIVSEP_SOCKET=/run/stackseed/privsep-neutron.sock
NEUTRON_PRIVSEP_CONFIGS="/etc/neutron/neutron.conf"
# neutron/privileged/__init__.py
NEUTRON_PRIVSEP_CONTEXTS="privsep=neutron.privileged.default
privsep_dhcp_release=neutron.privileged.dhcp_release_cmd
privsep_ovs_vsctl=neutron.privileged.ovs_vsctl_cmd
privsep_namespace=neutron.privileged.namespace_cmd
privsep_conntrack=neutron.privileged.conntrack_cmd
privsep_link=neutron.privileged.link_cmd"
NOVA_PRIVSEP_SOCKET=/run/stackseed/privsep-nova.sock
# What nova-compute's unit gives it (Debian: nova.conf, then nova-compute.conf).
NOVA_PRIVSEP_CONFIGS="/etc/nova/nova.conf /etc/nova/nova-compute.conf"
# nova/privsep/__init__.py, os-vif's vif_plug_*/privsep.py (plugging the server's port),
# os_brick/privileged/__init__.py (attaching a volume over iSCSI).
NOVA_PRIVSEP_CONTEXTS="nova_sys_admin=nova.privsep.sys_admin_pctxt
vif_plug_ovs_privileged=vif_plug_ovs.privsep.vif_plug
vif_plug_linux_bridge_privileged=vif_plug_linux_bridge.privsep.vif_plug
privsep_osbrick=os_brick.privileged.default"

# privsep_helper SOCKET CONFIGS: the helper_command, as the service's user runs it.
privsep_helper() {
    local file args="spawn --socket $1"
    for file in $2; do args="$args --config-file $file"; done
    echo "sudo $PRIVSEP_SPAWN $args"
}

# privsep_rule USER SOCKET CONFIGS CONTEXTS: the sudoers drop-in admitting exactly that helper
# (privsep_helper's own arguments, so the two cannot differ) with each of the contexts.
privsep_rule() {
    local user=$1 pair args contexts=""
    args=$(privsep_helper "$2" "$3")
    args=${args#"sudo $PRIVSEP_SPAWN "}
    for pair in $4; do contexts="$contexts|${pair#*=}"; done
    contexts=${contexts#|}
    echo "# Written by stackseed (lib.sh): $user's privsep helpers without $user-rootwrap."
    echo "Defaults:$user !requiretty"
    echo "$user ALL = (root) NOPASSWD: $PRIVSEP_SPAWN ^${args//./[.]}" \
        "--privsep_context (${contexts//./[.]})" \
        "--privsep_sock_path /tmp/tmp[a-z0-9_]+/privsep[.]sock\$"
}

# privsep_setup USER CONF SOCKET CONFIGS CONTEXTS: the sudoers rule (checked by visudo before
# it is in place: a broken drop-in would stop every sudo on the node) and helper_command in
# each context's section of CONF.
privsep_setup() {
    local user=$1 conf=$2 socket=$3 configs=$4 contexts=$5 tmp pair helper
    tmp=$(mktemp)
    privsep_rule "$user" "$socket" "$configs" "$contexts" >"$tmp"
    if ! visudo -cqf "$tmp" >/dev/null; then
        rm -f "$tmp"
        fail "visudo refuses the $user privsep rule (lib.sh, privsep_rule)"
    fi
    write_private "$STACKSEED_ROOT/etc/sudoers.d/stackseed-$user-privsep" 0:0 0440 <"$tmp"
    rm -f "$tmp"
    helper=$(privsep_helper "$socket" "$configs")
    for pair in $contexts; do
        printf '[%s]\nhelper_command = %s\n' "${pair%%=*}" "$helper"
    done | ini_merge "$conf"
}

neutron_privsep() {
    privsep_setup neutron /etc/neutron/neutron.conf "$NEUTRON_PRIVSEP_SOCKET" \
        "$NEUTRON_PRIVSEP_CONFIGS" "$NEUTRON_PRIVSEP_CONTEXTS"
}

nova_privsep() {
    privsep_setup nova /etc/nova/nova.conf "$NOVA_PRIVSEP_SOCKET" \
        "$NOVA_PRIVSEP_CONFIGS" "$NOVA_PRIVSEP_CONTEXTS"
}

# neutron_common_config: what every neutron process on any node reads from neutron.conf.
neutron_common_config() {
    ini_merge /etc/neutron/neutron.conf <<INI
[DEFAULT]
host = $(fact node.name)
transport_url = $(transport_url)
rpc_response_timeout = $RPC_TIMEOUT
[oslo_concurrency]
lock_path = /var/lib/neutron/tmp
[agent]
root_helper_daemon = $NEUTRON_ROOTWRAP_DAEMON
INI
    neutron_privsep
    # Debian 12's neutron marks Linux bridge experimental: neutron-server's workers exit at
    # start ("Feature 'linuxbridge' is experimental") unless it is enabled; every node gets it.
    if [ "$(neutron_backend)" = linuxbridge ]; then
        ini_set /etc/neutron/neutron.conf experimental linuxbridge true
    fi
    conf_private neutron /etc/neutron/neutron.conf
}
