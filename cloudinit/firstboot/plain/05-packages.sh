#!/bin/bash
# A plain node (topology `image: plain`): Debian without its role's packages. They are
# installed here, before every other phase, from the lab's repository and nowhere else, the
# way the role image's build installed them: its debconf answers first, no daemon started by
# the install, then the same units left disabled for the later phases to start in order.
# A node that has them all (a role image, or a re-run after a reboot) changes nothing.
set -eu -o pipefail
# shellcheck source-path=SCRIPTDIR/.. source=lib.sh
. "${STACKSEED_LIB:-/usr/local/lib/stackseed/lib.sh}"

plain=$STACKSEED_ROOT/usr/local/lib/stackseed/plain
apt_etc=$STACKSEED_ROOT/etc/apt
ours=$apt_etc/sources.list.d/stackseed-lab.sources
moved=$STACKSEED_ROOT/var/lib/stackseed/apt-sources-off
policy=$STACKSEED_ROOT/usr/sbin/policy-rc.d
policy_mark="stackseed 05-packages"
# How long the repository may take to answer: the lab host starts serving it before the nodes
# boot; a site's web server should be there already.
REPO_TIMEOUT=${STACKSEED_REPO_TIMEOUT:-900}

[ -r "$plain/packages" ] || fail "no package list at $plain/packages: the seed is not a plain node's"
[ -r "$ours" ] || fail "no apt source at $ours: the seed is not a plain node's"
mapfile -t wanted < <(grep -Ev '^[[:space:]]*(#|$)' "$plain/packages")
[ "${#wanted[@]}" -gt 0 ] || fail "the package list $plain/packages is empty"
repo=$(sed -n 's/^URIs:[[:space:]]*//p' "$ours" | head -n 1)

missing() {
    local package
    for package in "${wanted[@]}"; do
        [ "$(dpkg-query -W -f='${db:Status-Status}' "$package" 2>/dev/null)" = installed ] ||
            printf '%s\n' "$package"
    done
}

mapfile -t absent < <(missing)
if [ "${#absent[@]}" -eq 0 ]; then
    log "all ${#wanted[@]} packages of the role are installed: nothing to install"
    exit 0
fi
log "${#absent[@]} of the role's ${#wanted[@]} packages are missing; installing from $repo"

# The lab's repository is this node's only apt source: nothing is fetched from outside the
# lab, and nothing newer than what the role image was built with is picked from elsewhere.
# Debian's own sources are kept aside, not deleted (docs/bare-metal.md says how to restore them).
for source in "$apt_etc/sources.list" "$apt_etc"/sources.list.d/*.list \
    "$apt_etc"/sources.list.d/*.sources; do
    if [ ! -e "$source" ] || [ "$source" = "$ours" ]; then
        continue
    fi
    mkdir -p "$moved"
    mv -f "$source" "$moved/"
    log "apt source ${source#"$STACKSEED_ROOT"} moved to ${moved#"$STACKSEED_ROOT"}/"
done

# Installed daemons must not start with the packages' defaults: as in the image build, every
# start a package asks for is refused until the phases configure and start each one.
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# %s: no daemon starts while the role packages install.\nexit 101\n' \
        "$policy_mark" >"$policy"
    chmod 0755 "$policy"
fi
release_policy() {
    if grep -qs "$policy_mark" "$policy"; then
        rm -f "$policy"
    fi
}
trap release_policy EXIT

export DEBIAN_FRONTEND=noninteractive
dpkg_options=(-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
# An install cut short by a reboot leaves packages unpacked but not configured.
dpkg --force-confdef --force-confold --configure -a

# The role elements' own hooks, as the image build ran them: their stackseed-disable-services
# on PATH, and a systemctl that changes unit links without reloading systemd each time.
STACKSEED_SYSTEMCTL=$(command -v systemctl || echo /usr/bin/systemctl)
export STACKSEED_SYSTEMCTL
run_hooks() {
    local hook
    for hook in "$plain/$1"/*; do
        [ -f "$hook" ] || continue
        log "running ${hook##*/} ($1 the install, as the image build does)"
        PATH="$plain/bin:$PATH" bash "$hook"
    done
}
run_hooks before

update_log=$STACKSEED_ROOT/var/log/stackseed/apt-update.log
mkdir -p "${update_log%/*}"
update_index() {
    apt-get -q update --error-on=any >"$update_log" 2>&1
}
log "waiting for the repository at $repo (up to ${REPO_TIMEOUT}s)"
start=$(date +%s)
delay=2
until update_index; do
    if [ $(($(date +%s) - start)) -ge "$REPO_TIMEOUT" ]; then
        tail -n 5 "$update_log" >&2 || true
        fail "apt-get update from $repo still failed after ${REPO_TIMEOUT}s (is the lab host serving it? 'lab up' starts it)"
    fi
    sleep "$delay"
    delay=$((delay < 30 ? delay * 2 : 30))
done
log "repository index read after $(($(date +%s) - start))s"

# apt's machine-readable status lines ("pmstatus:<package>:<percent>:<what>", "dlstatus:...")
# as one progress line per tenth: the install is the phase's half hour under TCG.
apt_headway() {
    local kind _package percent _what label step last=""
    while IFS=: read -r kind _package percent _what; do
        case "$kind" in
        dlstatus) label=downloading ;;
        pmstatus) label=installing ;;
        *) continue ;;
        esac
        step=$((${percent%%.*} / 10 * 10))
        if [ "$label $step%" != "$last" ]; then
            last="$label $step%"
            progress "$last"
        fi
    done
}

# The whole list, as the image build asks for it (what is there already stays as it is).
apt-get -q -y --no-install-recommends "${dpkg_options[@]}" -o APT::Status-Fd=3 \
    install "${wanted[@]}" 3> >(apt_headway)
wait "$!" || true # its last line out before the phase goes on

run_hooks after

# policy-rc.d refused the reloads the packages asked for too. systemd learns the new units, and
# D-Bus the new services' bus policies: without them polkitd may not own its bus name and exits,
# and libvirt, which asks polkit, then refuses nova-compute.
systemctl daemon-reload
if systemctl -q is-active dbus.service; then
    systemctl reload dbus.service
fi

mapfile -t absent < <(missing)
[ "${#absent[@]}" -eq 0 ] || fail "still missing after the install: ${absent[*]}"
# The image carries no .debs; neither does the node once they are installed.
apt-get clean
log "the role's ${#wanted[@]} packages are installed"
